"""One simulated WebSocket connection: its session, its write queue and the faults it can have.

Fault modes (set by the simulator's controls):

- ``normal``: everything is sent.
- ``zombie``: PONGs and other control text still go out, market data never again.
- ``relay_only``: a zombie that still relays venue-wide broadcasts (``new_market``).
- ``half_open``: nothing at all goes out (no PONG, no close) and input is swallowed, while the TCP
  connection stays open.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode

from .session import Session

Mode = Literal["normal", "zombie", "half_open", "relay_only"]


class Kind(Enum):
    """What a queued frame is, which decides whether a faulty connection still sends it."""

    CONTROL = "control"  # PONG, INVALID OPERATION, raw test frames
    DATA = "data"  # this connection's market data
    BROADCAST = "broadcast"  # a venue-wide event (new_market)


def withheld(mode: Mode, kind: Kind) -> bool:
    """Is a frame of this kind withheld by a connection in this fault mode?"""
    if mode == "half_open":
        return True
    if mode == "zombie":
        return kind is not Kind.CONTROL
    return mode == "relay_only" and kind is Kind.DATA


@dataclass
class ConnInfo:
    """A snapshot of one WebSocket connection, for assertions; copying keeps tests race-free."""

    id: int
    open: bool
    subscribed: set[str]
    received: list[tuple[float, str]]
    pings: int
    opened_at: float
    closed_at: float | None
    close_code: int | None
    custom_features: bool
    mode: str
    path: str = ""
    muted: set[str] = field(default_factory=set)
    ws_pings: int = 0
    sent: int = 0


@dataclass(frozen=True)
class QueuedClose:
    """Queue item: close cleanly after the frames queued before it."""

    code: int
    reason: str


Payload = bytes | str | QueuedClose


class SimConnection(ServerConnection):
    """websockets connection that can go deaf (half-open) and counts protocol-level pings."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sim_deaf = False
        self.sim_ws_pings = 0

    def data_received(self, data: bytes) -> None:
        # Half-open: swallow the bytes so websockets neither pongs nor answers a close frame.
        if self.sim_deaf:
            return
        super().data_received(data)

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.sim_ws_pings += 1
        super().process_event(event)

    def send_data(self) -> None:
        super().send_data()
        # Closing handshake done: drop the TCP connection now, as a real front end does, instead
        # of waiting (up to close_timeout) for a client that never closes its socket.
        if (
            self.protocol.close_sent is not None
            and self.protocol.close_rcvd is not None
            and not self.transport.is_closing()
        ):
            self.transport.close()


class Conn:
    """Server-side state of one connection (lives on the loop)."""

    def __init__(self, conn_id: int, ws: SimConnection, path: str, session: Session) -> None:
        self.id = conn_id
        self.ws = ws
        self.path = path
        self.session = session
        self.open = True
        self.opened_at = time.monotonic()
        self.closed_at: float | None = None
        self.close_code: int | None = None
        self.server_close_code: int | None = None
        self.received: list[tuple[float, str]] = []
        self.mode: Mode = "normal"
        self.delay = 0.0
        self.sent = 0
        self.queue: deque[tuple[Kind, Payload]] = deque()
        self.wake = asyncio.Event()
        self.writer: asyncio.Task[None] | None = None

    def enqueue(self, payload: Payload, kind: Kind = Kind.DATA) -> None:
        """Queue a frame unless the connection is gone or its fault mode withholds the kind."""
        if not self.open or withheld(self.mode, kind):
            return
        self.queue.append((kind, payload))
        self.wake.set()

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "half_open":
            self.ws.sim_deaf = True
        # Frames already queued are filtered by the writer, which checks the mode before each send.

    def info(self) -> ConnInfo:
        session = self.session
        return ConnInfo(
            id=self.id,
            open=self.open,
            subscribed=set(session.subscribed),
            received=list(self.received),
            pings=session.pings,
            opened_at=self.opened_at,
            closed_at=self.closed_at,
            close_code=self.close_code,
            custom_features=session.custom,
            mode=self.mode,
            path=self.path,
            muted=set(session.muted),
            ws_pings=self.ws.sim_ws_pings,
            sent=self.sent,
        )
