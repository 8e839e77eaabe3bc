"""One WebSocket to the market channel: a reader thread and a sender thread, nothing clever.

The reader hands every frame (as raw bytes, with its receive time) to the runtime's inbox and
reports open/failed/closed (``sidecar.shell.inbox``); the sender drains a queue so that a stuck
socket can never block the engine. All decisions (what to send, when a silent socket is dead)
belong to the engine.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
import struct
import threading
import time
from typing import Any

import websocket
from websocket import ABNF

from sidecar.shell.inbox import ConnectFailed, FrameReceived, Post, SocketClosed, SocketOpened

log = logging.getLogger("sidecar.shell.connection")

CONNECT_TIMEOUT_S = 10.0
RECV_BYTES = 256 * 1024
_STOP = object()


class BufferedWebSocket(websocket.WebSocket):
    """websocket-client with one large read per system call and TLS-safe duplex I/O.

    Reads: the library's frame parser asks for exactly the bytes it needs next (header, length,
    payload: three ``recv`` calls per frame, each a syscall and a GIL hand-off). Serving those
    requests from one large read keeps every bit of protocol handling (pings, fragments, close)
    in the library and cuts the per-frame cost. Plugged in through ``create_connection(class_=...)``.

    Duplex: the reader thread reads while the sender thread writes. On ``wss://`` both go through
    one OpenSSL ``SSL`` object, which must never be used by two threads at once (concurrent
    SSL_read/SSL_write gives spurious empty reads, "bad record mac" and internal errors: dropped
    sockets). After the handshake the socket is switched to non-blocking and every read and write
    on it runs under ``io_lock``; waiting for readiness (poll) happens outside the lock, so a
    send never waits behind an idle read and a read never waits behind a blocked send.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._rbuf = b""
        self._rpos = 0
        # One buffer for the socket's life: a fresh 256 KiB allocation per read, shrunk to the
        # bytes received, fragmented the heap and RSS grew by megabytes a minute in the soak.
        self._rarea = bytearray(RECV_BYTES)
        self._rview = memoryview(self._rarea)
        self.io_lock = threading.Lock()
        self._duplex = False
        self._rpoll: select.poll | None = None
        self.send_deadline: float | None = None  # monotonic; set by close() to bound a stuck send
        super().__init__(*args, **kwargs)

    def go_duplex(self) -> None:
        """After the handshake: non-blocking socket, reads and writes serialised on io_lock."""
        sock = self.sock
        if sock is None:
            raise websocket.WebSocketConnectionClosedException("socket is already closed.")
        sock.setblocking(False)
        self._rpoll = select.poll()
        self._rpoll.register(sock, select.POLLIN)
        self._duplex = True

    def shutdown(self) -> None:
        super().shutdown()
        # Free the read buffer now: the library's frame parser holds our bound _recv, a reference
        # cycle that would keep 256 KiB per closed socket alive until a full garbage collection.
        self._rbuf = b""
        self._rarea = bytearray(0)
        self._rview = memoryview(self._rarea)

    def _recv(self, bufsize: int) -> bytes:
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            sock = self.sock
            # Before go_duplex (the handshake: one thread) the library's own path.
            buf = self._read_some(sock) if sock is not None and self._duplex else super()._recv(bufsize)
            pos = 0
        chunk = buf[pos : pos + bufsize]
        self._rbuf, self._rpos = buf, pos + len(chunk)
        return chunk

    def _read_some(self, sock: socket.socket) -> bytes:
        """Whatever the socket has (at least one byte), waiting for it without holding io_lock."""
        while True:
            with self.io_lock:
                try:
                    n = sock.recv_into(self._rarea)
                except (ssl.SSLWantReadError, BlockingIOError):
                    events = select.POLLIN
                except ssl.SSLWantWriteError:  # TLS needs to write (e.g. a key update) first
                    events = select.POLLOUT
                else:
                    if n == 0:
                        raise websocket.WebSocketConnectionClosedException("Connection lost (EOF).")
                    return bytes(self._rview[:n])
            if events == select.POLLIN and self._rpoll is not None:
                self._rpoll.poll()  # also wakes on HUP/ERR/NVAL: the next recv reports it
            else:
                _wait(sock, events, None)

    def _send(self, data: str | bytes) -> int:
        sock = self.sock
        if sock is None:
            raise websocket.WebSocketConnectionClosedException("socket is already closed.")
        if not self._duplex:
            return super()._send(data)
        if isinstance(data, str):
            data = data.encode("utf-8")
        while True:
            with self.io_lock:
                try:
                    return sock.send(data)
                except (ssl.SSLWantWriteError, BlockingIOError):
                    events = select.POLLOUT
                except ssl.SSLWantReadError:
                    events = select.POLLIN
                except (ssl.SSLEOFError, ssl.SSLZeroReturnError, BrokenPipeError):
                    raise websocket.WebSocketConnectionClosedException("socket is already closed.") from None
            deadline = self.send_deadline
            if deadline is not None and time.monotonic() >= deadline:
                raise websocket.WebSocketTimeoutException("send timed out")
            # Short slices: close() may set a deadline while we wait for a full send buffer.
            _wait(sock, events, 0.05)


def _wait(sock: socket.socket, events: int, timeout_s: float | None) -> None:
    poller = select.poll()
    poller.register(sock, events)
    poller.poll(None if timeout_s is None else timeout_s * 1000.0)


class SocketRunner:
    def __init__(self, conn_id: int, url: str, post: Post) -> None:
        self.conn_id = conn_id
        self.url = url
        self._post = post
        self._ws: BufferedWebSocket | None = None
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"ws-{conn_id}-read", daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name=f"ws-{conn_id}-send", daemon=True)

    def start(self) -> None:
        self._reader.start()

    def send(self, text: str) -> None:
        self._outbox.put(text)

    def close(self) -> None:
        """Best-effort close frame, then tear the socket down so the reader wakes up."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._outbox.put(_STOP)
        ws = self._ws
        if ws is not None:
            sock = ws.sock
            # Bound the close frame (and any send stuck on a full buffer) to 0.2 s; never change
            # the socket's blocking mode here, the reader relies on it being non-blocking.
            ws.send_deadline = time.monotonic() + 0.2
            with contextlib.suppress(Exception):
                ws.send_close()
            # ws.abort() is a no-op once send_close() has cleared ws.connected: shut the socket
            # down ourselves, which wakes a reader blocked in recv() at once.
            with contextlib.suppress(Exception):
                sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]

    def _read(self) -> None:
        post = self._post
        conn_id = self.conn_id
        try:
            ws = websocket.create_connection(
                self.url,
                timeout=CONNECT_TIMEOUT_S,
                skip_utf8_validation=True,
                enable_multithread=True,
                suppress_origin=True,
                class_=BufferedWebSocket,
            )
        except websocket.WebSocketBadStatusException as exc:
            post(ConnectFailed(conn_id, f"http_{exc.status_code}", exc.status_code))
            return
        except Exception as exc:
            post(ConnectFailed(conn_id, _classify(exc)))
            return
        # Liveness is judged by the engine on data, never by a read timeout.
        assert isinstance(ws, BufferedWebSocket)
        try:
            ws.go_duplex()
        except Exception as exc:
            with contextlib.suppress(Exception):
                ws.shutdown()
            post(ConnectFailed(conn_id, _classify(exc)))
            return
        self._ws = ws
        if self._closing.is_set():
            ws.shutdown()
            post(SocketClosed(conn_id, "local"))
            return
        self._sender.start()
        post(SocketOpened(conn_id))
        reason = "eof"
        try:
            recv = ws.recv_data
            clock = time.monotonic
            while True:
                opcode, data = recv()
                if opcode == ABNF.OPCODE_CLOSE:
                    code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                    reason = f"close_{code}"
                    text = data[2:].decode("utf-8", "replace")
                    log.info("socket %d closed by server: %d %s", conn_id, code, text[:80])
                    break
                post(FrameReceived(conn_id, data, clock()))
        except websocket.WebSocketConnectionClosedException:
            reason = "eof"
        except Exception as exc:
            reason = "local" if self._closing.is_set() else _classify(exc)
        finally:
            self._outbox.put(_STOP)
            with contextlib.suppress(Exception):
                ws.shutdown()
            post(SocketClosed(conn_id, "local" if self._closing.is_set() else reason))

    def _send_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is _STOP:
                return
            ws = self._ws
            if ws is None:
                return
            try:
                ws.send(item)
            except Exception as exc:  # the reader sees the broken socket and reports it
                log.debug("send on socket %d failed: %r", self.conn_id, exc)
                return


def _classify(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | websocket.WebSocketTimeoutException):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls_verify"  # the exchange's certificate is not trusted here (or not its name)
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, OSError):
        return "os_error"
    if isinstance(exc, websocket.WebSocketException):
        return "protocol_error"
    return "error"
