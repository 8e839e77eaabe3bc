"""The simulator's REST side: GET /book and POST /books (the sidecar's resync and quiet-market
check) and GET /markets/{condition_id} (a market's state: open, closed, its winner).

A stdlib threaded HTTP server; the book data comes from the simulator through thread-safe hooks,
so the HTTP threads never touch the event loop's state directly.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

MAX_BOOKS_PER_REQUEST = 500


class RestHooks:
    """What the HTTP threads need from the simulator; each call must be thread-safe."""

    def __init__(
        self,
        begin: Callable[[], int | None],
        summaries: Callable[[list[str]], list[dict[str, Any] | None]],
        delay: Callable[[], float] = lambda: 0.0,
        end: Callable[[], None] = lambda: None,
        market: Callable[[str], dict[str, Any] | None] = lambda condition_id: None,
        retry_after: Callable[[], int] = lambda: 0,
    ) -> None:
        self.begin = begin  # counts the request; returns a status to fail it with, or None
        self.summaries = summaries  # one summary (or None for unknown) per token id
        self.delay = delay  # seconds to hold an answer after its books were read (in flight)
        self.end = end  # the request is answered (or failed): no longer in flight
        self.market = market  # the CLOB market object of a condition id, or None for an unknown one
        self.retry_after = retry_after  # Retry-After seconds on a 429/503 (0: no header)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], hooks: RestHooks) -> None:
        self.hooks = hooks
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up before its answer is written (a sidecar stopping) is no error."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with Content-Length so clients can keep connections alive, as against the real API."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.sockets_lock:
            self.server.open_sockets.add(self.connection)

    def finish(self) -> None:
        with self.server.sockets_lock:
            self.server.open_sockets.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging: tests and benchmarks make thousands of requests."""

    def _reply(self, status: int, payload: Any) -> None:
        body = orjson.dumps(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        retry_after = self.server.hooks.retry_after()
        if status in (429, 503) and retry_after > 0:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self) -> None:
        self._handle("GET", b"")

    def do_POST(self) -> None:
        self._handle("POST", self._read_body())

    def _handle(self, method: str, body: bytes) -> None:
        try:
            self._answer(method, body)
        finally:
            self.server.hooks.end()

    def _hold(self) -> None:
        """The books are read: keep the answer in flight as long as the simulator says."""
        delay = self.server.hooks.delay()
        if delay > 0:
            time.sleep(delay)

    def _answer(self, method: str, body: bytes) -> None:
        fail = self.server.hooks.begin()
        if fail is not None:
            self._reply(fail, {"error": f"simulated failure ({fail})"})
            return
        url = urlsplit(self.path)
        if url.path == "/book" and method == "GET":
            token = parse_qs(url.query).get("token_id", [""])[0]
            if not token:
                self._reply(400, {"error": "Invalid payload: token_id is required"})
                return
            summary = self.server.hooks.summaries([token])[0]
            self._hold()
            if summary is None:
                self._reply(404, {"error": "No orderbook exists for the requested token id"})
            else:
                self._reply(200, summary)
        elif url.path == "/books" and method == "POST":
            self._books(body)
        elif url.path.startswith("/markets/") and method == "GET":
            market = self.server.hooks.market(url.path.removeprefix("/markets/"))
            self._hold()
            if market is None:
                self._reply(404, {"error": "market not found"})
            else:
                self._reply(200, market)
        else:
            self._reply(404, {"error": "not found"})

    def _books(self, body: bytes) -> None:
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            self._reply(400, {"error": "Invalid payload: body must be a JSON list"})
            return
        if not isinstance(req, list) or not all(
            isinstance(item, dict) and isinstance(item.get("token_id"), str) for item in req
        ):
            self._reply(400, {"error": 'Invalid payload: expected [{"token_id": ...}, ...]'})
            return
        if len(req) > MAX_BOOKS_PER_REQUEST:
            self._reply(400, {"error": f"Invalid payload: at most {MAX_BOOKS_PER_REQUEST} token ids"})
            return
        summaries = self.server.hooks.summaries([item["token_id"] for item in req])
        self._hold()
        self._reply(200, [s for s in summaries if s is not None])


class RestServer:
    """Owns the HTTP server and its accept thread."""

    def __init__(self, host: str, port: int, hooks: RestHooks) -> None:
        self._server = _Server((host, port), hooks)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="sim-rest", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, then cut kept-alive connections so their threads end too."""
        self._server.shutdown()
        self._server.server_close()
        with self._server.sockets_lock:
            socks = list(self._server.open_sockets)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)
