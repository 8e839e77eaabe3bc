"""The sidecar's brain: a deterministic, I/O-free state machine. Start reading here.

The shell (sidecar/shell/app.py) calls the engine with the time passed in (``now`` = monotonic
seconds, ``wall_ms`` = epoch milliseconds) and drains what it decided:

1. ``set_desired``: the scheduler's desired set; new tokens join a shard (one socket per shard,
   at most ``SIDECAR_MAX_TOKENS_PER_CONN`` tokens) and start ``pending``.      -> desired_set.py
2. ``tick``: timers open the shards' sockets (paced), ping them, and judge them on market data;
   tokens that never confirm are redriven or moved.                     -> timers.py, sockets.py
3. ``on_open`` / ``on_connect_failed`` / ``on_closed``: socket lifecycle; a lost socket makes its
   tokens ``stale`` at once and reconnects with backoff.                             -> sockets.py
4. ``on_frame``: a frame is parsed once into typed events (events.py) and applied to the books;
   a ``book`` makes a token ``live``, deltas move its top while it agrees with the exchange's own
   stated top.                                                                -> market.py, resync.py
5. ``on_rest_books``: REST books re-confirm quiet tokens and reseed resyncing ones.  -> confirm.py
   ``on_market_states`` / ``restore``: markets polled over REST (and read back at start-up) make
   tokens ``resolved`` when the ``market_resolved`` event is lost.                 -> lifecycle.py
6. ``take_actions`` (open/close a socket, send a frame, fetch over REST) and ``take_writes`` (the
   changed tokens' quote hashes, one write per token, a new ``seq`` each).            -> writes.py
7. ``summary`` / ``report``: the summary hash and the typed report for /metrics.       -> report.py

Each ``tick`` also judges the venue from the sockets' fates (up / degraded / down); while it is
down one probe socket stands in for all of them and the per-token ladders wait.     -> venue.py

Every part is a module of functions over one shared :class:`~sidecar.core.context.Context`; a
token's status changes only in :func:`sidecar.core.status.set_status` (the transition table).
Nothing here sleeps, reads a clock, or touches a socket, so every decision is unit-tested exactly.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable

from sidecar.core import confirm, desired_set, lifecycle, market, report, sockets, timers, venue, writes
from sidecar.core.actions import Action, Close, MarketFetch, Open, QuoteWrite, RestFetch, Send
from sidecar.core.context import Context, EngineConfig
from sidecar.core.quote import TokenState
from sidecar.core.report import Report
from sidecar.core.shards import Conn, ShardMap
from sidecar.core.stats import Stat
from sidecar.core.status import LIVE, PENDING, RESYNCING, SIDECAR_STOPPED, STALE, set_status


class Engine:
    """The façade the shell drives: each method hands over to the part that does the job."""

    def __init__(
        self, cfg: EngineConfig, epoch: str, now: float, wall_ms: int, rng: random.Random | None = None
    ) -> None:
        self.ctx = Context(cfg, epoch, now, wall_ms, rng or random.Random())

    # ---- inputs ------------------------------------------------------------------------------------

    def set_desired(self, members: Iterable[object], now: float, wall_ms: int) -> None:
        """Apply the autorun scheduler's desired set. Garbage is counted, never sent upstream."""
        desired_set.set_desired(self.ctx, members, now, wall_ms)

    def on_open(self, conn_id: int, now: float) -> None:
        sockets.on_open(self.ctx, conn_id, now)

    def on_connect_failed(self, conn_id: int, reason: str, now: float, status: int | None = None) -> None:
        sockets.on_connect_failed(self.ctx, conn_id, reason, now, status)

    def on_closed(self, conn_id: int, reason: str, now: float) -> None:
        sockets.on_closed(self.ctx, conn_id, reason, now)

    def on_frame(self, conn_id: int, data: bytes | str, now: float, wall_ms: int) -> None:
        """Apply one frame. Never raises: bad input is counted and the rest of the frame applied."""
        market.on_frame(self.ctx, conn_id, data, now, wall_ms)

    def on_rest_books(self, request_id: int, books: list[object] | None, now: float, wall_ms: int) -> None:
        confirm.on_rest_books(self.ctx, request_id, books, now, wall_ms)

    def on_market_states(
        self, request_id: int, markets: dict[str, object | None] | None, now: float, wall_ms: int
    ) -> None:
        """Answers to a MarketFetch: a closed market resolves its tokens; reference data."""
        lifecycle.on_market_states(self.ctx, request_id, markets, now, wall_ms)

    def restore(self, saved: dict[str, dict[str, str]], now: float, wall_ms: int) -> None:
        """The quote hashes read back at start-up, before the first desired set: a token saved
        ``resolved`` starts ``resolved`` and its market is polled at once to confirm."""
        lifecycle.restore(self.ctx, saved)

    def tick(self, now: float, wall_ms: int) -> None:
        """Timers: pacing, pings, pong and silence checks, confirmation and stall redrives; market polls."""
        timers.tick(self.ctx, now)
        lifecycle.tick(self.ctx, now)
        venue.check(self.ctx, now, wall_ms)  # the venue's state from how the sockets fare

    def shutdown(self) -> None:
        """Every quote we can no longer vouch for becomes stale before the process exits."""
        ctx = self.ctx
        for st in ctx.tokens.values():
            if st.status in (LIVE, RESYNCING, STALE):
                set_status(ctx, st, STALE, SIDECAR_STOPPED)
            elif st.status == PENDING:
                set_status(ctx, st, PENDING, SIDECAR_STOPPED)
        ctx.unsettled.clear()
        ctx.reseed.clear()
        sockets.close_all(ctx)

    # ---- outputs -----------------------------------------------------------------------------------

    def take_actions(self) -> list[Action]:
        ctx = self.ctx
        if ctx.reseed:
            confirm.request_reseeds(ctx)
        out, ctx.actions = ctx.actions, []
        return out

    def take_writes(self, now: float, wall_ms: int) -> list[QuoteWrite]:
        """Quote writes for everything that changed since the last call; bumps seq per change."""
        return writes.take_writes(self.ctx, now)

    # ---- report ------------------------------------------------------------------------------------

    def counts(self) -> Counter[str]:
        """Desired tokens by status (one pass; pass it on to summary/report/quote_health)."""
        return report.counts(self.ctx)

    def summary(self, wall_ms: int, version: str, counts: Counter[str] | None = None) -> dict[str, str]:
        """The ``P summary`` hash."""
        return report.summary(self.ctx, wall_ms, version, self.counts() if counts is None else counts)

    def report(self, now: float, wall_ms: int, counts: Counter[str] | None = None) -> Report:
        """The typed report for /metrics; takes the confirm latencies observed since the last one."""
        return report.report(self.ctx, now, wall_ms, self.counts() if counts is None else counts)

    def quote_health(self, counts: Counter[str] | None = None) -> float:
        return report.quote_health(self.ctx, self.counts() if counts is None else counts)

    def socket_ages(self, now: float) -> dict[int, float]:
        return report.socket_ages(self.ctx, now)

    def oldest_live_age(self, wall_ms: int) -> float:
        return report.oldest_live_age(self.ctx, wall_ms)

    def connection_states(self) -> Counter[str]:
        return report.connection_states(self.ctx)

    def no_data_count(self) -> int:
        return report.no_data_count(self.ctx)

    # ---- state, read by tests and the shell --------------------------------------------------------

    @property
    def tokens(self) -> dict[str, TokenState]:
        return self.ctx.tokens

    @property
    def conns(self) -> dict[int, Conn]:
        return self.ctx.conns

    @property
    def shards(self) -> ShardMap:
        return self.ctx.shards

    @property
    def stats(self) -> Counter[tuple[Stat, str]]:
        return self.ctx.stats

    @property
    def rest_inflight(self) -> dict[int, list[str]]:
        return self.ctx.rest_inflight

    @property
    def invalid_desired(self) -> int:
        return self.ctx.invalid_desired

    @property
    def capped_desired(self) -> int:
        return self.ctx.capped_desired


__all__ = [
    "Action",
    "Close",
    "Engine",
    "EngineConfig",
    "MarketFetch",
    "Open",
    "QuoteWrite",
    "Report",
    "RestFetch",
    "Send",
]
