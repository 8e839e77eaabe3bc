"""The WebSocket shell of the simulator: sockets in, frames out, nothing decided here.

Received text goes to :meth:`Fanout.on_frame` (which asks the connection's session); each
connection has one writer task that drains its queue in order, honouring the fault modes, so a
slow or stuck socket never delays the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .conns import Conn, Payload, QueuedClose, SimConnection, withheld
from .fanout import Fanout
from .ledger import Ledger

BATCH_FRAMES = 256  # data frames framed per drain when a queue is backed up


class WsShell:
    """Serves the market channel for one :class:`Fanout`."""

    def __init__(self, fanout: Fanout, ledger: Ledger) -> None:
        self.fanout = fanout
        self.ledger = ledger

    async def serve(self, host: str, port: int, tls: ssl.SSLContext | None) -> Server:
        return await serve(
            self._handler,
            host,
            port,
            process_request=self._process_request,
            create_connection=SimConnection,
            compression=None,  # fast blasts; the sidecar's websocket-client never offers deflate anyway
            ping_interval=None,  # the server sends no keepalive pings of its own: silence is the client's job
            ping_timeout=None,
            close_timeout=2,
            max_size=2**23,
            write_limit=2**18,
            ssl=tls,
        )

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        status = self.ledger.handshake()
        if status is None:
            return None
        response = connection.respond(status, f"simulated handshake rejection ({status})\n")
        retry_after = self.ledger.retry_after
        if status in (429, 503) and retry_after > 0:
            response.headers["Retry-After"] = str(retry_after)
        return response

    async def _handler(self, ws: ServerConnection) -> None:
        assert isinstance(ws, SimConnection)
        path = ws.request.path if ws.request is not None else ""
        conn = self.fanout.accept(ws, path)
        if self.ledger.dropping:  # upgraded just before the venue went down: cut it like the rest
            self.fanout.drop(conn.id)
            return
        conn.writer = asyncio.get_running_loop().create_task(self._writer(conn))
        try:
            async for message in ws:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                conn.received.append((time.monotonic(), text))
                if conn.mode == "half_open" or not conn.open:
                    continue
                close = self.fanout.on_frame(conn, text, isinstance(message, bytes))
                if close is not None:
                    conn.server_close_code = close.code
                    conn.queue.clear()
                    await ws.close(close.code, close.reason)
                    break
        except ConnectionClosed:
            pass
        finally:
            self.fanout.mark_closed(conn, ws.close_code)

    async def _writer(self, conn: Conn) -> None:
        """The single writer of one connection: drains its queue in order, honouring faults."""
        ws = conn.ws
        queue = conn.queue
        try:
            while True:
                if not queue:
                    conn.wake.clear()
                    await conn.wake.wait()
                    continue
                kind, payload = queue.popleft()
                if isinstance(payload, QueuedClose):
                    conn.server_close_code = payload.code
                    await ws.close(payload.code, payload.reason)
                    return
                if conn.delay > 0:
                    await asyncio.sleep(conn.delay)
                if withheld(conn.mode, kind):
                    continue
                if conn.delay <= 0 and queue and conn.mode == "normal":
                    await self._write_batch(conn, payload)
                    continue
                await ws.send(payload, text=True)
                conn.sent += 1
        except (ConnectionClosed, OSError):
            pass

    async def _write_batch(self, conn: Conn, first: Payload) -> None:
        """Frame a run of queued data frames and write them with one drain: blasts need this speed.

        Stops at a queued close; order is kept and fault modes are checked before each batch.
        """
        ws = conn.ws
        queue = conn.queue
        batch = [first]
        while queue and len(batch) < BATCH_FRAMES and not isinstance(queue[0][1], QueuedClose):
            batch.append(queue.popleft()[1])
        async with ws.send_context():
            for payload in batch:
                assert not isinstance(payload, QueuedClose)
                ws.protocol.send_text(payload.encode() if isinstance(payload, str) else payload)
        conn.sent += len(batch)

    async def shutdown(self, server: Server | None) -> None:
        """Say 1001 to every socket, give clients a moment to answer, then cut whatever is left."""
        open_conns = [c for c in self.fanout.conns.values() if c.open]
        closers = [
            asyncio.ensure_future(c.ws.close(1001, "server shutting down"))
            for c in open_conns
            if c.mode != "half_open"
        ]
        if closers:
            await asyncio.wait(closers, timeout=0.5)
        for conn in open_conns:
            conn.ws.transport.abort()
        if server is not None:
            server.close(close_connections=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 3)
        for task in closers:
            task.cancel()
        for conn in open_conns:
            self.fanout.mark_closed(conn, conn.ws.close_code or 1006)
