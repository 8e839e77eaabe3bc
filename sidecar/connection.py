"""One WebSocket to the market channel: a reader thread and a sender thread, nothing clever.

The reader hands every frame (as raw bytes, with its receive time) to the runtime's inbox and
reports open/failed/closed; the sender drains a queue so that a stuck socket can never block the
engine. All decisions (what to send, when a silent socket is dead) belong to the engine.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import websocket
from websocket import ABNF

log = logging.getLogger("sidecar.connection")

Post = Callable[[tuple[Any, ...]], None]

CONNECT_TIMEOUT_S = 10.0
RECV_BYTES = 256 * 1024
_STOP = object()


class BufferedWebSocket(websocket.WebSocket):
    """websocket-client, reading whatever the kernel has in one call.

    The library's frame parser asks for exactly the bytes it needs next (header, length, payload:
    three ``recv`` calls per frame, each a syscall and a GIL hand-off). Serving those requests from
    one large read keeps every bit of protocol handling (pings, fragments, close) in the library
    and cuts the per-frame cost. Plugged in through ``create_connection(class_=...)``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._rbuf = b""
        self._rpos = 0
        # One buffer for the socket's life: a fresh 256 KiB allocation per read, shrunk to the
        # bytes received, fragmented the heap and RSS grew by megabytes a minute in the soak.
        self._rarea = bytearray(RECV_BYTES)
        self._rview = memoryview(self._rarea)
        super().__init__(*args, **kwargs)

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
            if sock is None or sock.gettimeout() is not None:
                buf = super()._recv(bufsize)  # handshake or timed reads: the library's own path
            else:
                n = sock.recv_into(self._rarea)  # blocking socket: data, EOF or an error
                if n == 0:
                    raise websocket.WebSocketConnectionClosedException("Connection to remote host was lost.")
                buf = bytes(self._rview[:n])
            pos = 0
        chunk = buf[pos : pos + bufsize]
        self._rbuf, self._rpos = buf, pos + len(chunk)
        return chunk


class SocketRunner:
    def __init__(self, conn_id: int, url: str, post: Post) -> None:
        self.conn_id = conn_id
        self.url = url
        self._post = post
        self._ws: websocket.WebSocket | None = None
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
            with contextlib.suppress(Exception):
                sock.settimeout(0.2)  # type: ignore[union-attr]
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
            post(("failed", conn_id, f"http_{exc.status_code}", exc.status_code))
            return
        except Exception as exc:
            post(("failed", conn_id, _classify(exc), None))
            return
        ws.settimeout(None)  # liveness is judged by the engine on data, never by a read timeout
        self._ws = ws
        if self._closing.is_set():
            ws.shutdown()
            post(("closed", conn_id, "local"))
            return
        self._sender.start()
        post(("open", conn_id))
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
                post(("frame", conn_id, data, clock()))
        except websocket.WebSocketConnectionClosedException:
            reason = "eof"
        except Exception as exc:
            reason = "local" if self._closing.is_set() else _classify(exc)
        finally:
            self._outbox.put(_STOP)
            with contextlib.suppress(Exception):
                ws.shutdown()
            post(("closed", conn_id, "local" if self._closing.is_set() else reason))

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
    if isinstance(exc, OSError):
        return "os_error"
    if isinstance(exc, websocket.WebSocketException):
        return "protocol_error"
    return "error"
