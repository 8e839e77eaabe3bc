"""What the engine asks the shell to do (:data:`Action`) and the quote writes it hands over.

Plain data: the shell carries actions out in order and gives every :class:`QuoteWrite` to the
Redis writer. Nothing here knows about sockets or Redis.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Open:
    """Open a WebSocket for a shard; the shell answers with ``on_open`` or ``on_connect_failed``."""

    conn_id: int
    shard_id: int


@dataclass(slots=True)
class Send:
    """Send one text frame (a subscription frame or ``PING``) on an open socket."""

    conn_id: int
    text: str


@dataclass(slots=True)
class Close:
    """Close a socket; the shell answers with ``on_closed``."""

    conn_id: int
    reason: str


@dataclass(slots=True)
class RestFetch:
    """Fetch these tokens' books over REST (``POST /books``); answered by ``on_rest_books``."""

    request_id: int
    tokens: list[str]


@dataclass(slots=True)
class MarketFetch:
    """Fetch these markets' states over REST (``GET /markets/{condition_id}`` each, condition ids);
    answered by ``on_market_states``."""

    request_id: int
    markets: list[str]


Action = Open | Send | Close | RestFetch | MarketFetch


@dataclass(frozen=True, slots=True)
class QuoteWrite:
    """One token's new state for Redis. ``publish`` False means an updated_at-only refresh.
    Frozen: once handed to the writer nobody changes it (the writer copies ``fields``)."""

    token: str
    fields: dict[str, str]
    publish: bool
    expire_s: int | None = None
    persist: bool = False
    recv_at: float | None = None  # monotonic receive time of the frame behind it (latency)
    exch_ts: int | None = None
