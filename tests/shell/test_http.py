"""sidecar.shell.http and the REST worker's market polls, against a local HTTP/1.1 stub on real
sockets: kept-alive connections, Retry-After (seconds, HTTP date, capped) holding the one shared
budget, book confirmations before market polls, timeouts, TLS verification, and what a poll posts.
Times are the stub's receive stamps, never sleeps."""

from __future__ import annotations

import email.utils
import itertools
import json
import queue
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sidecar.shell import http
from sidecar.shell.http import Budget, HttpClient, RequestFailed, retry_after_s
from sidecar.shell.inbox import MarketAnswer, RestAnswer
from sidecar.shell.rest import RestClient
from tests.shell.http_stub import Posted, StubServer


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"[]"
    headers: dict[str, str] = field(default_factory=dict)


class Stub(StubServer):
    """HTTP/1.1 with keep-alive: counts accepted connections, stamps every request on arrival and
    answers each with the next scripted reply (default: 200 ``[]`` for /books, a market object
    for /markets/{id})."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[float, str, str]] = []  # (arrived, method, path)
        self.accepts = 0
        self.replies: queue.SimpleQueue[Reply] = queue.SimpleQueue()
        self.seen = threading.Condition()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                arrived = time.monotonic()
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    reply = stub.replies.get_nowait()
                except queue.Empty:
                    body = b"[]"
                    if self.path.startswith("/markets/"):
                        market = self.path.removeprefix("/markets/")
                        body = json.dumps({"condition_id": market, "closed": False}).encode()
                    reply = Reply(200, body)
                with stub.seen:
                    stub.requests.append((arrived, self.command, self.path))
                    stub.seen.notify_all()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def get_request(self) -> tuple[socket.socket, Any]:
                conn, addr = super().get_request()
                stub.accepts += 1
                if tls is not None:
                    conn = tls.wrap_socket(conn, server_side=True)
                return conn, addr

        self.serve(Server(("127.0.0.1", 0), Handler))
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        with self.seen:
            assert self.seen.wait_for(lambda: len(self.requests) >= count, timeout), self.requests

    def times(self) -> list[float]:
        return [t for t, _, _ in self.requests]


@pytest.fixture
def stub() -> Iterator[Stub]:
    s = Stub()
    yield s
    s.close()


@pytest.fixture
def worker(stub: Stub) -> Iterator[tuple[RestClient, Posted]]:
    """A REST worker at 100 requests/s (not yet started: tests queue first when order matters)."""
    posted = Posted()
    c = RestClient(stub.url, 100.0, posted.post)
    yield c, posted
    c.stop()


# ---- the HTTP client ------------------------------------------------------------------------------


def test_many_requests_share_one_kept_alive_connection(stub: Stub) -> None:
    client = HttpClient(stub.url, Budget(1000.0))
    try:
        for i in range(10):
            answer = client.request("GET", f"/markets/0x{i}")
            assert answer.status == 200
            client.request("POST", "/books", b"[]")
    finally:
        client.close()
    assert len(stub.requests) == 20
    assert stub.accepts == 1


def retry_after_date(seconds: float) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


@pytest.mark.parametrize(
    ("status", "header", "at_least", "at_most"),
    [
        (429, "1", 1.0, 1.5),
        (503, "1", 1.0, 1.5),
        # An HTTP date has whole seconds: "2 s from now" is between 1 and 2 s away.
        (503, None, 1.0, 2.5),
    ],
)
def test_retry_after_delays_the_next_request_of_either_kind(
    stub: Stub,
    worker: tuple[RestClient, Posted],
    status: int,
    header: str | None,
    at_least: float,
    at_most: float,
) -> None:
    """A throttled book fetch holds the shared budget: the market poll queued behind it waits."""
    c, posted = worker
    value = header if header is not None else retry_after_date(2.0)
    stub.replies.put(Reply(status, b"{}", {"Retry-After": value}))
    c.fetch(1, ["11"])
    c.fetch_markets(2, ["0xa"])
    c.start()
    assert posted.get() == RestAnswer(1, None)
    assert posted.get() == MarketAnswer(2, {"0xa": {"condition_id": "0xa", "closed": False}})
    (t1, _, p1), (t2, _, p2) = stub.requests
    assert (p1, p2) == ("/books", "/markets/0xa")
    assert at_least - 0.01 <= t2 - t1 < at_most, t2 - t1
    assert stub.accepts == 1  # a throttling answer does not cost the connection


def test_retry_after_is_capped(
    stub: Stub, worker: tuple[RestClient, Posted], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "RETRY_AFTER_CAP_S", 0.5)
    c, posted = worker
    stub.replies.put(Reply(429, b"{}", {"Retry-After": "3600"}))
    c.fetch(1, ["11"])
    c.fetch(2, ["11"])
    c.start()
    assert posted.get() == RestAnswer(1, None)
    assert posted.get() == RestAnswer(2, [])
    t1, t2 = stub.times()
    assert 0.5 - 0.01 <= t2 - t1 < 1.0


def test_retry_after_values() -> None:
    now = 1_700_000_000.0
    assert retry_after_s("7", now) == 7.0
    assert retry_after_s(" 7 ", now) == 7.0
    assert retry_after_s("3600", now, cap=60.0) == 60.0
    assert retry_after_s(email.utils.formatdate(now + 30, usegmt=True), now) == 30.0
    assert retry_after_s(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0  # in the past
    assert retry_after_s("soon", now) is None
    assert retry_after_s("-5", now) is None
    assert retry_after_s(None, now) is None


def test_waiting_never_blocks_the_caller(stub: Stub, worker: tuple[RestClient, Posted]) -> None:
    """The loop only queues: while the worker is held by a Retry-After, queueing returns at once."""
    c, posted = worker
    stub.replies.put(Reply(429, b"{}", {"Retry-After": "1"}))
    c.start()
    c.fetch(1, ["11"])
    assert posted.get() == RestAnswer(1, None)
    started = time.monotonic()
    c.fetch(2, ["11"])
    c.fetch_markets(3, ["0xa"])
    assert time.monotonic() - started < 0.05
    assert posted.get() == RestAnswer(2, [])
    assert isinstance(posted.get(), MarketAnswer)


def test_books_and_markets_share_one_budget(stub: Stub) -> None:
    """SIDECAR_REST_MAX_RPS=10 across both kinds: 16 requests, never two within 0.1 s."""
    posted = Posted()
    c = RestClient(stub.url, 10.0, posted.post)
    for i in range(4):
        c.fetch(i, [str(i)])
        c.fetch_markets(100 + i, [f"0x{i}a", f"0x{i}b", f"0x{i}c"])
    c.start()
    try:
        answers = [posted.get() for _ in range(8)]
    finally:
        c.stop()
    assert sorted(type(a).__name__ for a in answers) == ["MarketAnswer"] * 4 + ["RestAnswer"] * 4
    times = stub.times()
    assert len(times) == 16
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.1 - 0.01, gaps
    assert times[-1] - times[0] < 15 * 0.1 + 1.0


def test_book_confirmations_go_before_market_polls(stub: Stub, worker: tuple[RestClient, Posted]) -> None:
    c, posted = worker
    c.fetch_markets(1, ["0xa", "0xb"])
    c.fetch(2, ["11"])
    c.start()
    assert posted.get() == RestAnswer(2, [])
    assert isinstance(posted.get(), MarketAnswer)
    assert [path for _, _, path in stub.requests] == ["/books", "/markets/0xa", "/markets/0xb"]


def test_a_book_confirmation_overtakes_a_poll_under_way(stub: Stub) -> None:
    """Between the GETs of a long poll: a book fetch queued mid-poll leaves before the poll ends."""
    posted = Posted()
    c = RestClient(stub.url, 20.0, posted.post)
    markets = [f"0x{i}" for i in range(10)]
    c.fetch_markets(1, markets)
    c.start()
    try:
        stub.wait_for(2)
        c.fetch(2, ["11"])
        assert posted.get() == RestAnswer(2, [])
        answer = posted.get()
        assert isinstance(answer, MarketAnswer) and answer.markets is not None
        assert list(answer.markets) == markets
    finally:
        c.stop()
    paths = [path for _, _, path in stub.requests]
    assert paths.index("/books") < len(paths) - 1


def test_a_poll_answers_each_market_and_404_as_none(stub: Stub, worker: tuple[RestClient, Posted]) -> None:
    c, posted = worker
    known = {"condition_id": "0xa", "closed": True, "tokens": [{"token_id": "1", "winner": True}]}
    stub.replies.put(Reply(200, json.dumps(known).encode()))
    stub.replies.put(Reply(404, b'{"error": "market not found"}'))
    c.fetch_markets(5, ["0xa", "0xb"])
    c.start()
    assert posted.get() == MarketAnswer(5, {"0xa": known, "0xb": None})
    assert [(m, p) for _, m, p in stub.requests] == [("GET", "/markets/0xa"), ("GET", "/markets/0xb")]
    assert c.errors == 0


@pytest.mark.parametrize(
    "reply",
    [Reply(500, b"{}"), Reply(200, b"not json"), Reply(200, b"[1, 2]"), Reply(403, b"{}")],
)
def test_one_failed_market_fails_the_whole_poll(
    stub: Stub, worker: tuple[RestClient, Posted], reply: Reply
) -> None:
    """The answer is None as a whole and the rest of the poll is not asked (the engine retries)."""
    c, posted = worker
    stub.replies.put(Reply(200, b"[]"))  # the book fetch goes first
    stub.replies.put(Reply(200, b'{"condition_id": "0xa"}'))
    stub.replies.put(reply)
    c.fetch_markets(6, ["0xa", "0xb", "0xc"])
    c.fetch(7, ["11"])
    c.start()
    assert posted.get() == RestAnswer(7, [])
    assert posted.get() == MarketAnswer(6, None)
    assert [p for _, _, p in stub.requests] == ["/books", "/markets/0xa", "/markets/0xb"]
    assert c.errors == 1
    c.fetch_markets(8, ["0xd"])  # and the worker goes on
    assert posted.get() == MarketAnswer(8, {"0xd": {"condition_id": "0xd", "closed": False}})


def test_a_silent_server_times_out_and_the_worker_lives_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first connection gets no answer at all: read timeout, one failed request; the next
    request (a new connection) is answered."""
    monkeypatch.setattr(http, "READ_TIMEOUT_S", 0.5)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    silent: list[socket.socket] = []

    def serve() -> None:
        conn, _ = listener.accept()
        silent.append(conn)  # read, never answer
        conn.recv(65536)
        conn2, _ = listener.accept()
        with conn2:
            conn2.recv(65536)
            conn2.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\n{"condition_id":1}')

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    posted = Posted()
    c = RestClient(f"http://127.0.0.1:{listener.getsockname()[1]}", 50.0, posted.post)
    c.start()
    try:
        started = time.monotonic()
        c.fetch_markets(1, ["0xa"])
        assert posted.get() == MarketAnswer(1, None)
        assert 0.5 - 0.05 <= time.monotonic() - started < 3.0
        c.fetch_markets(2, ["0xb"])
        assert posted.get() == MarketAnswer(2, {"0xb": {"condition_id": 1}})
        assert c.errors == 1
    finally:
        c.stop()
        server.join(5)
        for conn in silent:
            conn.close()
        listener.close()


def test_tls_is_verified_against_the_trust_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A self-signed server is refused until its certificate is trusted (SSL_CERT_FILE)."""
    from pmsim.tls import make_self_signed

    cert = make_self_signed(tmp_path)
    s = Stub(tls=cert.server_context())
    try:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        untrusting = HttpClient(s.url, Budget(100.0))
        with pytest.raises(RequestFailed, match="SSL"):
            untrusting.request("GET", "/markets/0xa")
        untrusting.close()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert.cert))
        trusting = HttpClient(s.url, Budget(100.0))
        assert trusting.request("GET", "/markets/0xa").status == 200
        trusting.close()
    finally:
        s.close()


def test_credentials_in_the_url_never_reach_a_failure_message() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens: connection refused
    client = HttpClient(f"http://user:s3cret@127.0.0.1:{port}", Budget(100.0))
    with pytest.raises(RequestFailed) as failed:
        client.request("GET", "/markets/0xa")
    assert "s3cret" not in str(failed.value)
