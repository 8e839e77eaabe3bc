"""sidecar.shell.rest on its own, against a local HTTP stub: the request it makes, what it posts back,
the process-wide budget (SIDECAR_REST_MAX_RPS) and the pause after a throttling answer."""

from __future__ import annotations

import itertools
import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from devkit.net import free_port
from sidecar.shell import http
from sidecar.shell.inbox import RestAnswer
from sidecar.shell.rest import RestClient
from tests.shell.http_stub import Posted, StubServer


class Stub(StubServer):
    """POST /books: records (arrival time, body) and answers with the next scripted reply."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, str, Any]] = []
        self.replies: queue.SimpleQueue[tuple[int, bytes]] = queue.SimpleQueue()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.requests.append((time.monotonic(), self.path, json.loads(body)))
                try:
                    status, payload = stub.replies.get_nowait()
                except queue.Empty:
                    status, payload = 200, b"[]"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"


@pytest.fixture
def stub() -> Iterator[Stub]:
    s = Stub()
    yield s
    s.close()


@pytest.fixture
def client(stub: Stub) -> Iterator[tuple[RestClient, Posted]]:
    posted = Posted()
    c = RestClient(stub.url, 5.0, posted.post)
    c.start()
    yield c, posted
    c.stop()


def test_posts_the_books_for_the_requested_tokens(stub: Stub, client: tuple[RestClient, Posted]) -> None:
    c, posted = client
    books = [{"asset_id": "11", "bids": [], "asks": []}]
    stub.replies.put((200, json.dumps(books).encode()))
    c.fetch(42, ["11", "22"])
    assert posted.answer() == RestAnswer(42, books)
    assert [(path, body) for _, path, body in stub.requests] == [
        ("/books", [{"token_id": "11"}, {"token_id": "22"}])
    ]
    assert c.errors == 0


@pytest.mark.parametrize(
    ("status", "payload"),
    [(200, b'{"error": "not a list"}'), (200, b"not json"), (404, b"[]"), (500, b"[]")],
)
def test_unusable_answers_post_none_and_count(
    stub: Stub, client: tuple[RestClient, Posted], status: int, payload: bytes
) -> None:
    c, posted = client
    stub.replies.put((status, payload))
    c.fetch(1, ["11"])
    assert posted.answer() == RestAnswer(1, None)
    assert c.errors == 1


def test_unreachable_server_posts_none_and_counts() -> None:
    posted = Posted()
    c = RestClient(f"http://127.0.0.1:{free_port()}", 5.0, posted.post)
    c.start()
    try:
        c.fetch(3, ["11"])
        assert posted.answer() == RestAnswer(3, None)
        assert c.errors == 1
    finally:
        c.stop()


def test_requests_never_exceed_the_budget(stub: Stub) -> None:
    """SIDECAR_REST_MAX_RPS=5: twelve queued fetches leave at least 0.2 s apart, about 2.2 s."""
    posted = Posted()
    c = RestClient(stub.url, 5.0, posted.post)
    c.start()
    try:
        for i in range(12):
            c.fetch(i, [str(i)])
        got = [posted.answer().request_id for _ in range(12)]
    finally:
        c.stop()
    assert got == list(range(12))  # in order, one answer each
    times = [t for t, _, _ in stub.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.2 - 0.01, gaps  # the stub's clock stamp may lag the send a little
    assert times[-1] - times[0] >= 11 * 0.2 - 0.02
    assert times[-1] - times[0] < 11 * 0.2 + 1.0  # and not much slower than the budget allows


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_answer_pauses_the_next_request(
    stub: Stub, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    monkeypatch.setattr(http, "THROTTLED_PAUSE_S", 1.0)
    posted = Posted()
    c = RestClient(stub.url, 100.0, posted.post)
    c.start()
    try:
        stub.replies.put((status, b"[]"))
        c.fetch(1, ["11"])
        c.fetch(2, ["11"])
        assert posted.answer() == RestAnswer(1, None)
        assert posted.answer() == RestAnswer(2, [])
    finally:
        c.stop()
    (t1, _, _), (t2, _, _) = stub.requests
    assert t2 - t1 >= 1.0 - 0.01


def test_a_non_positive_budget_is_refused() -> None:
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="max_rps"):
            RestClient("http://127.0.0.1:1", bad, lambda e: None)


def test_a_cut_answer_costs_one_request_not_the_rest_thread() -> None:
    """IncompleteRead / BadStatusLine are not OSErrors: they must not kill the REST thread."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n[1,",  # cut short: IncompleteRead
        b"garbage\r\n\r\n",  # BadStatusLine
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]",
    ]

    def serve() -> None:
        for answer in answers:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    posted = Posted()
    c = RestClient(f"http://127.0.0.1:{listener.getsockname()[1]}", 50.0, posted.post)
    c.start()
    try:
        for request_id in (1, 2):
            c.fetch(request_id, ["11"])
            assert posted.answer() == RestAnswer(request_id, None)
        c.fetch(3, ["11"])
        assert posted.answer() == RestAnswer(3, [])
        assert c.errors == 2
    finally:
        c.stop()
        server.join(5)
        listener.close()
