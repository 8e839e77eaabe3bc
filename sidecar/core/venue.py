"""The venue's state: is the exchange up, degraded (some sockets failing) or down (all of them)?

Judged only from socket outcomes: a connect failure (refused, timeout, a handshake answered with
HTTP 5xx/429), a socket lost, or one that closes right after opening (it never delivered data
nor stayed open :data:`STABLE_S`) leaves its shard *failing* until a socket of it works again.

- ``up``: no shard is failing.
- ``degraded``: some are (or all of them, for less than ``SIDECAR_VENUE_DOWN_AFTER_S``).
- ``down``: every shard has been failing for ``SIDECAR_VENUE_DOWN_AFTER_S``. It stays down until
  one socket works again, so a shard added meanwhile does not flip it back.

While down a token is not "broken", the venue is: every token shows ``venue_down``, the per-token
redrive and move ladders are paused, and the per-socket backoffs give way to one shared, jittered
probe: one socket at a time (:meth:`Venue.probe_delay`). When the probe works, the venue is back
and every other shard opens at once, paced by ``SIDECAR_CONNECT_SPACING_S`` as at start-up.
One log line when the venue goes down, one when it comes back.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from sidecar.core.shards import OPEN
from sidecar.core.status import LIVE, PENDING, RESYNCING, STALE, SUBSCRIBING, VENUE_DOWN, set_status

if TYPE_CHECKING:
    from sidecar.core.context import Context

log = logging.getLogger("sidecar.core.engine")

STABLE_S = 5.0  # an open socket that neither delivered nor closed in this long works (a book: sooner)
PROBE_MAX_S = 5.0  # the longest wait between probes: the venue's return is noticed within this


class VenueState(StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


@dataclass
class Venue:
    """The venue judge: which shards are failing since when, the state, and the shared probe."""

    since: float  # monotonic time of the last state change
    since_ms: int  # the same, epoch ms (``venue_since`` in ``P sidecar``)
    state: VenueState = VenueState.UP
    failing: dict[int, float] = field(default_factory=dict)  # shard -> failing since (monotonic)
    probe_conn: int | None = None  # while down: the one socket out probing
    probes: int = 0  # failed probes in this outage (the shared backoff's exponent)
    next_probe_at: float = 0.0
    refused: int = 0  # connect failures while down (the log line coming back reports them)

    @property
    def down(self) -> bool:
        return self.state is VenueState.DOWN

    def shard_failed(self, shard_id: int, now: float) -> None:
        self.failing.setdefault(shard_id, now)

    def shard_works(self, shard_id: int) -> None:
        self.failing.pop(shard_id, None)

    def judge(
        self, shards: Collection[int], opened: Collection[int], now: float, down_after_s: float
    ) -> VenueState:
        """The state the venue is in now, given the desired shards and those with a socket open
        right now (pure). An open socket spares its shard until it closes (then the shard is
        failing since before it opened, when it never proved itself); but once the venue is down,
        only a proven socket brings it back, so a probe that opens and drops at once does not
        flap the state."""
        if self.down and shards and all(s in self.failing for s in shards):
            return VenueState.DOWN
        failing = [self.failing[s] for s in shards if s in self.failing and s not in opened]
        if not shards or not failing:
            return VenueState.UP
        if len(failing) < len(shards):
            return VenueState.DEGRADED
        if now - max(failing) >= down_after_s:
            return VenueState.DOWN
        return VenueState.DEGRADED

    def probe_delay(self, rng: random.Random, lo: float, hi: float) -> float:
        """Exponential, jittered in [cap/2, cap] (never near 0: that would be a storm of one)."""
        cap = min(hi, PROBE_MAX_S, lo * (2.0 ** min(self.probes, 30)))
        return rng.uniform(cap / 2, cap)

    def probe_failed(self, rng: random.Random, now: float, lo: float, hi: float) -> float:
        """The probe socket failed to connect (or closed right away): the next probe's delay."""
        self.probe_conn = None
        self.probes += 1
        delay = self.probe_delay(rng, lo, hi)
        self.next_probe_at = now + delay
        return delay


def check(ctx: Context, now: float, wall_ms: int) -> None:
    """Once per tick: which shards work again, then the venue's state and its consequences."""
    venue = ctx.venue
    shards = ctx.shards.shards
    opened = set()
    for shard in shards.values():
        conn = ctx.conns.get(shard.conn_id) if shard.conn_id is not None else None
        if conn is not None and conn.state == OPEN:
            opened.add(shard.id)
            if conn.data_seen or now - conn.opened_at >= STABLE_S:
                venue.shard_works(shard.id)
        elif venue.down:
            venue.shard_failed(shard.id, now)  # added while down: it has no socket to prove otherwise
    for shard_id in [s for s in venue.failing if s not in shards]:
        del venue.failing[shard_id]
    state = venue.judge(shards.keys(), opened, now, ctx.cfg.venue_down_after_s)
    if state is venue.state:
        return
    was_down = venue.down
    lasted = now - venue.since
    venue.state, venue.since, venue.since_ms = state, now, wall_ms
    if state is VenueState.DOWN:
        _went_down(ctx, now)
    elif was_down:
        _came_back(ctx, now, lasted)


def _went_down(ctx: Context, now: float) -> None:
    venue = ctx.venue
    venue.probes = 0
    venue.refused = 0
    venue.probe_conn = None
    venue.next_probe_at = now + venue.probe_delay(ctx.rng, ctx.cfg.backoff_min_s, ctx.cfg.backoff_max_s)
    for st in ctx.tokens.values():
        if st.status in (LIVE, RESYNCING, STALE):
            set_status(ctx, st, STALE, VENUE_DOWN)
        elif st.status == PENDING:
            set_status(ctx, st, PENDING, VENUE_DOWN)
    log.warning(
        "venue down: all %d sockets failing for %.1fs; %d tokens venue_down, probing with one socket",
        len(ctx.shards),
        ctx.cfg.venue_down_after_s,
        len(ctx.tokens),
        extra={"reason": VENUE_DOWN},
    )


def _came_back(ctx: Context, now: float, lasted: float) -> None:
    """Every other shard opens now, paced; the ladders start afresh (the outage was not theirs)."""
    venue = ctx.venue
    venue.probe_conn = None
    for shard in ctx.shards:
        shard.attempts = 0
        shard.next_attempt_at = now
    ctx.pause_until = now  # a 429's pause of every socket is over: the probe got through
    for st in ctx.tokens.values():
        st.redrives = 0
        st.stall_redrives = 0
        st.next_redrive_at = now
        if st.status == PENDING and st.reason == VENUE_DOWN:
            set_status(ctx, st, PENDING, SUBSCRIBING)
    log.warning(
        "venue up after %.1fs down (%d connect attempts refused): reopening %d sockets %.2fs apart",
        lasted,
        venue.refused,
        len(ctx.shards),
        ctx.cfg.connect_spacing_s,
    )
