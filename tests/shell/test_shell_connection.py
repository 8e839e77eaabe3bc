"""sidecar.shell.connection on its own: SocketRunner against the simulator over ws:// and wss://.

No Redis, no engine: what the runner posts (open/frame/closed/failed) is what the engine sees,
so a broken shell (wrong close reason, lost frames, a send racing a read on the SSL object)
fails here in `make unit`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import orjson
import pytest
from pmsim import Simulator
from pmsim.tls import SelfSigned, make_self_signed

from devkit.net import free_port
from devkit.wait import wait_for
from sidecar.shell.connection import SocketRunner
from sidecar.shell.inbox import ConnectFailed, FrameReceived, InboxMessage, SocketClosed, SocketOpened


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def trust(cert: SelfSigned, monkeypatch: pytest.MonkeyPatch) -> SelfSigned:
    """websocket-client loads this CA bundle instead of the system store (as the sidecar would)."""
    monkeypatch.setenv("WEBSOCKET_CLIENT_CA_BUNDLE", str(cert.cert))
    return cert


@pytest.fixture(params=["ws", "wss"])
def sim(
    request: pytest.FixtureRequest, cert: SelfSigned, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Simulator]:
    if request.param == "wss":
        monkeypatch.setenv("WEBSOCKET_CLIENT_CA_BUNDLE", str(cert.cert))
    with Simulator(seed=3, tls=cert.server_context() if request.param == "wss" else None) as s:
        yield s


M = TypeVar("M")


def is_closed(e: InboxMessage) -> bool:
    return isinstance(e, SocketClosed)


def is_failed(e: InboxMessage) -> bool:
    return isinstance(e, ConnectFailed)


class Events:
    """Collects what a runner posts, in order, from its threads."""

    def __init__(self) -> None:
        self.q: queue.SimpleQueue[InboxMessage] = queue.SimpleQueue()
        self.seen: list[InboxMessage] = []

    def post(self, event: InboxMessage) -> None:
        self.q.put(event)

    def _drain(self) -> None:
        while True:
            try:
                self.seen.append(self.q.get_nowait())
            except queue.Empty:
                return

    def wait(
        self, pred: Callable[[InboxMessage], bool], timeout: float = 10.0, what: str = ""
    ) -> InboxMessage:
        def find() -> InboxMessage | None:
            self._drain()
            return next((e for e in self.seen if pred(e)), None)

        return wait_for(find, timeout=timeout, what=what)

    def kinds(self, kind: type[M]) -> list[M]:
        self._drain()
        return [e for e in self.seen if isinstance(e, kind)]

    def frames(self) -> list[FrameReceived]:
        return self.kinds(FrameReceived)

    def texts(self) -> list[str]:
        return [bytes(e.data).decode() for e in self.frames()]


def start(url: str, conn_id: int = 1) -> tuple[SocketRunner, Events]:
    events = Events()
    runner = SocketRunner(conn_id, url, events.post)
    runner.start()
    events.wait(lambda e: isinstance(e, SocketOpened | ConnectFailed), what="open")
    assert events.kinds(SocketOpened) == [SocketOpened(conn_id)], events.seen
    return runner, events


def test_frames_arrive_in_order_with_receive_times(sim: Simulator) -> None:
    market = sim.add_market()
    token = sim.markets()[market][0]
    runner, events = start(sim.ws_url)
    before = time.monotonic()
    runner.send(orjson.dumps({"type": "market", "assets_ids": [token]}).decode())
    for _ in range(5):
        runner.send("PING")
    wait_for(lambda: len(events.frames()) >= 6, what="snapshot and five PONGs")
    frames = events.frames()
    assert [f.conn_id for f in frames] == [1] * 6
    first = orjson.loads(frames[0].data)
    assert isinstance(first, list)
    assert first[0]["asset_id"] == token
    assert first[0]["event_type"] == "book"
    assert events.texts()[1:] == ["PONG"] * 5
    stamps = [f.recv_at for f in frames]
    assert stamps == sorted(stamps)
    assert before <= stamps[0] <= time.monotonic()
    runner.close()
    events.wait(is_closed, what="closed")
    assert events.kinds(SocketClosed) == [SocketClosed(1, "local")]
    assert sim.violations == []


def test_server_close_code_is_reported(sim: Simulator) -> None:
    _, events = start(sim.ws_url)
    conn = wait_for(lambda: sim.connections(), what="server-side connection")[-1]
    sim.close(conn.id, 1011, "bye")
    assert events.wait(is_closed, what="closed") == SocketClosed(1, "close_1011")


def test_server_drop_is_eof(sim: Simulator) -> None:
    _, events = start(sim.ws_url)
    conn = wait_for(lambda: sim.connections(), what="server-side connection")[-1]
    sim.drop(conn.id)
    assert events.wait(is_closed, what="closed") == SocketClosed(1, "eof")


def test_local_close_wakes_an_idle_reader_at_once(sim: Simulator) -> None:
    runner, events = start(sim.ws_url)
    wait_for(lambda: sim.connections(), what="server-side connection")
    t0 = time.monotonic()
    runner.close()
    events.wait(is_closed, timeout=2.0, what="closed")
    assert time.monotonic() - t0 < 0.5  # the close frame is bounded to 0.2 s, then the socket shut
    assert events.kinds(SocketClosed) == [SocketClosed(1, "local")]
    wait_for(lambda: not sim.connections()[-1].open, what="server to see the close")


class DeafServer:
    """Completes the WebSocket handshake, then never reads again: our sends fill the buffers."""

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._tls = tls
        self.port = self._listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'wss' if self._tls else 'ws'}://127.0.0.1:{self.port}/ws/market"

    def _accept(self) -> None:
        raw, _ = self._listener.accept()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn = self._tls.wrap_socket(raw, server_side=True) if self._tls else raw
        self.conns.append(conn)
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self._listener.close()


@pytest.mark.timeout(15)  # the bug this catches is a hang
@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_local_close_is_bounded_when_the_server_reads_nothing(trust: SelfSigned, scheme: str) -> None:
    """The sender blocks on a full send buffer: close() must still return and report at once."""
    server = DeafServer(trust.server_context() if scheme == "wss" else None)
    try:
        runner, events = start(server.url)
        for _ in range(2000):
            runner.send("x" * 4000)
        ws = runner._ws
        assert ws is not None
        last = [-1]

        def sender_stuck() -> bool:
            """The outbox stopped draining between two polls while a send holds the lock."""
            size, prev = runner._outbox.qsize(), last[0]
            last[0] = size
            return size == prev and size > 0 and ws.lock.locked()

        wait_for(sender_stuck, timeout=10.0, interval=0.2, what="the sender to block on a full buffer")
        t0 = time.monotonic()
        runner.close()
        assert time.monotonic() - t0 < 0.5
        events.wait(is_closed, timeout=1.0, what="closed")
        assert events.kinds(SocketClosed) == [SocketClosed(1, "local")]
    finally:
        server.close()


def test_handshake_refused_and_rejected() -> None:
    events = Events()
    SocketRunner(7, f"ws://127.0.0.1:{free_port()}/ws/market", events.post).start()
    assert events.wait(is_failed, what="refused") == ConnectFailed(7, "refused", None)
    with Simulator() as sim:
        sim.reject_handshakes(429, 1)
        events = Events()
        SocketRunner(8, sim.ws_url, events.post).start()
        assert events.wait(is_failed, what="429") == ConnectFailed(8, "http_429", 429)


def test_untrusted_certificate_fails_the_handshake(cert: SelfSigned, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBSOCKET_CLIENT_CA_BUNDLE", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", os.devnull)  # no system CA may vouch for it either
    with Simulator(tls=cert.server_context()) as sim:
        assert sim.ws_url.startswith("wss://")
        events = Events()
        SocketRunner(9, sim.ws_url, events.post).start()
        failed = events.wait(lambda e: isinstance(e, ConnectFailed | SocketOpened), what="handshake result")
        assert failed == ConnectFailed(9, "tls_verify", None)
        assert sim.connections() == []


class OverlapProbe:
    """Wraps a socket's recv_into/send and records whether two threads were ever inside at once."""

    def __init__(self, sock: socket.socket) -> None:
        self._lock = threading.Lock()
        self.inside = 0
        self.max_inside = 0
        self.calls = 0
        for name in ("recv_into", "send"):
            setattr(sock, name, self._wrap(getattr(sock, name)))

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            with self._lock:
                self.inside += 1
                self.calls += 1
                self.max_inside = max(self.max_inside, self.inside)
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self.inside -= 1

        return call


def test_reads_and_writes_never_overlap_on_the_ssl_object(trust: SelfSigned) -> None:
    """OpenSSL forbids concurrent SSL_read/SSL_write on one SSL object: the reader thread and the
    sender thread must take turns (today's code read with a blocking recv while sending: overlap 2).
    """
    with Simulator(tls=trust.server_context()) as sim:
        market = sim.add_market()
        tokens = sim.markets()[market]
        runner, events = start(sim.ws_url)
        ws = runner._ws
        assert ws is not None and isinstance(ws.sock, ssl.SSLSocket)
        probe = OverlapProbe(ws.sock)
        runner.send(orjson.dumps({"type": "market", "assets_ids": tokens}).decode())
        sim.start_activity(400.0, tokens)
        n = 400
        for i in range(n):
            runner.send("PING")
            if i % 20 == 0:
                time.sleep(0.002)  # let the reader park inside a read between bursts
        wait_for(lambda: events.texts().count("PONG") == n, what=f"{n} PONGs")
        assert probe.calls > n
        assert probe.max_inside == 1
        assert events.kinds(SocketClosed) == []
        assert sim.violations == []
        runner.close()
