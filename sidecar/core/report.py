"""The engine's report: the summary hash and, once a second, a typed :class:`Report` for /metrics.

Everything here only reads the engine's state (one pass over the tokens for the status counts).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sidecar.core.context import Context
from sidecar.core.shards import OPEN
from sidecar.core.stats import Stat
from sidecar.core.status import LIVE, NO_DATA, PENDING, RESOLVED, RESYNCING, STALE
from sidecar.core.venue import VenueState


@dataclass(frozen=True, slots=True)
class Report:
    """What the shell's /metrics and log lines show of the engine (sidecar/shell/metrics.py)."""

    stats: dict[tuple[Stat, str], int] = field(default_factory=dict)  # counters, see Stat
    statuses: dict[str, int] = field(default_factory=dict)  # desired tokens by status
    sockets: dict[str, int] = field(default_factory=dict)  # sockets by state (connecting/open/retiring)
    desired: int = 0
    connections: int = 0  # shards
    connections_up: int = 0  # shards with an open socket
    no_data: int = 0  # pending tokens given up on (retried slowly)
    quote_health: float = 1.0
    invalid_desired: int = 0
    capped_desired: int = 0
    oldest_live_age: float = 0.0  # seconds since the oldest live quote's last confirmation
    socket_ages: dict[int, float] = field(default_factory=dict)  # shard -> seconds since data
    confirm_latencies: list[float] = field(default_factory=list)  # since the last report
    venue: VenueState = VenueState.UP  # up / degraded / down (core/venue.py)
    venue_since_ms: int = 0  # epoch ms of its last change

    def stat_total(self, name: Stat) -> int:
        """One counter summed over its labels."""
        return sum(v for (k, _), v in self.stats.items() if k == name)


def counts(ctx: Context) -> Counter[str]:
    return Counter(st.status for st in ctx.tokens.values())


def quote_health(ctx: Context, by_status: Counter[str]) -> float:
    """Share of desired tokens with a usable quote (live, or resolved: the market is over)."""
    if not ctx.tokens:
        return 1.0
    return (by_status[LIVE] + by_status[RESOLVED]) / len(ctx.tokens)


def connections_up(ctx: Context) -> int:
    return sum(
        1
        for shard in ctx.shards
        if shard.conn_id is not None and (c := ctx.conns.get(shard.conn_id)) is not None and c.state == OPEN
    )


def summary(ctx: Context, wall_ms: int, version: str, by_status: Counter[str]) -> dict[str, str]:
    """The ``P summary`` hash (docs/redis-contract.md)."""
    desired = len(ctx.tokens)
    healthy = by_status[LIVE] + by_status[RESOLVED]
    return {
        "epoch": ctx.epoch,
        "version": version,
        "started_at": str(ctx.started_ms),
        "heartbeat_at": str(wall_ms),
        "desired": str(desired),
        "live": str(by_status[LIVE]),
        "pending": str(by_status[PENDING]),
        "stale": str(by_status[STALE]),
        "resyncing": str(by_status[RESYNCING]),
        "resolved": str(by_status[RESOLVED]),
        "connections": str(len(ctx.shards)),
        "connections_up": str(connections_up(ctx)),
        "quote_health": f"{(healthy / desired) if desired else 1.0:.4f}",
        "invalid_desired": str(ctx.invalid_desired),
        "capped_desired": str(ctx.capped_desired),
        "venue": ctx.venue.state.value,
        "venue_since": str(ctx.venue.since_ms),
    }


def socket_ages(ctx: Context, now: float) -> dict[int, float]:
    """Seconds since the last market data, per shard with an open socket."""
    out = {}
    for shard in ctx.shards:
        conn = ctx.conns.get(shard.conn_id) if shard.conn_id is not None else None
        if conn is not None and conn.state == OPEN:
            out[shard.id] = now - conn.last_data_at
    return out


def oldest_live_age(ctx: Context, wall_ms: int) -> float:
    """Seconds since the exchange last confirmed the oldest live quote."""
    oldest = 0
    for st in ctx.tokens.values():
        if st.status == LIVE and st.updated_at is not None:
            oldest = max(oldest, wall_ms - st.updated_at)
    return oldest / 1000.0


def connection_states(ctx: Context) -> Counter[str]:
    return Counter(("retiring" if c.close_reason else c.state) for c in ctx.conns.values())


def no_data_count(ctx: Context) -> int:
    return sum(1 for st in ctx.tokens.values() if st.reason == NO_DATA)


def report(ctx: Context, now: float, wall_ms: int, by_status: Counter[str]) -> Report:
    """The whole report; takes the confirm latencies observed since the last one."""
    latencies, ctx.confirm_latencies = ctx.confirm_latencies, []
    return Report(
        stats=dict(ctx.stats),
        statuses=dict(by_status),
        sockets=dict(connection_states(ctx)),
        desired=len(ctx.tokens),
        connections=len(ctx.shards),
        connections_up=connections_up(ctx),
        no_data=no_data_count(ctx),
        quote_health=quote_health(ctx, by_status),
        invalid_desired=ctx.invalid_desired,
        capped_desired=ctx.capped_desired,
        oldest_live_age=oldest_live_age(ctx, wall_ms),
        socket_ages=socket_ages(ctx, now),
        confirm_latencies=latencies,
        venue=ctx.venue.state,
        venue_since_ms=ctx.venue.since_ms,
    )
