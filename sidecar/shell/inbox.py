"""What shell threads tell the runtime loop: one small class per message, posted into its inbox.

Socket readers, the desired-set reader and the REST client never touch the engine; they post one
of these and the loop applies them in arrival order (``sidecar.shell.app``). A ``FrameReceived``
is made for every WebSocket frame, so the classes are plain slots dataclasses (not frozen: a
frozen one costs three times as much to build, measured) and the loop tests the frame first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class FrameReceived:
    """One WebSocket data frame, stamped (monotonic) by the reader the moment it arrived."""

    conn_id: int
    data: bytes | str
    recv_at: float


@dataclass(slots=True)
class SocketOpened:
    conn_id: int


@dataclass(slots=True)
class SocketClosed:
    """An open socket ended: ``close_<code>``, ``eof``, ``local`` (we closed it) or an error class."""

    conn_id: int
    reason: str


@dataclass(slots=True)
class ConnectFailed:
    """The socket never opened; ``http_status`` is the handshake's HTTP status when there was one."""

    conn_id: int
    reason: str
    http_status: int | None = None


@dataclass(slots=True)
class DesiredChanged:
    """The scheduler's desired set as read from Redis (raw members; the engine validates them)."""

    members: frozenset[bytes]


@dataclass(slots=True)
class RestAnswer:
    """The answer to one ``RestFetch``: the books, or None when the request failed."""

    request_id: int
    books: list[Any] | None


@dataclass(slots=True)
class MarketAnswer:
    """The answer to one ``MarketFetch``: condition id -> the market's JSON object (None for a
    market the exchange answered 404), or None as a whole when the request failed."""

    request_id: int
    markets: dict[str, Any | None] | None


@dataclass(slots=True)
class Wake:
    """Nothing to apply: makes the loop look at its stop flag now rather than at the next tick."""


InboxMessage = (
    FrameReceived
    | SocketOpened
    | SocketClosed
    | ConnectFailed
    | DesiredChanged
    | RestAnswer
    | MarketAnswer
    | Wake
)
Post = Callable[[InboxMessage], None]
