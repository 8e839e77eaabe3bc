"""The engine's settings and the one state object every part of it works on.

The engine is split into parts by job (desired set, sockets, market data, resync, timers, REST
confirmation, writes, report); each part is a module of functions taking this :class:`Context`.
Nothing is hidden in the parts themselves: all state is here, grouped by the part that owns it.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from sidecar.core.actions import Action, QuoteWrite
from sidecar.core.crosscheck import Unsettled
from sidecar.core.lifecycle_state import Lifecycle
from sidecar.core.quote import TokenState
from sidecar.core.ratelog import RateLimitedLog
from sidecar.core.shards import OPEN, Conn, ShardMap
from sidecar.core.stats import Stat
from sidecar.core.venue import Venue

log = logging.getLogger("sidecar.core.engine")


@dataclass
class EngineConfig:
    """The SIDECAR_* settings the engine decides with (see sidecar/config.py for their meaning)."""

    max_tokens_per_conn: int = 200
    max_tokens: int = 5000
    ping_interval_s: float = 10.0
    pong_timeout_s: float = 30.0
    connect_spacing_s: float = 0.25
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    silence_min_s: float = 0.5
    silence_max_s: float = 120.0
    probe_timeout_s: float = 3.0
    confirm_timeout_s: float = 20.0
    redrive_max: int = 2
    quiet_confirm_s: float = 30.0
    rest_enabled: bool = True
    unsubscribed_ttl_s: int = 300
    bbo_grace_s: float = 1.0
    market_poll_s: float = 300.0
    venue_down_after_s: float = 3.0

    @classmethod
    def from_settings(cls, s: Any) -> EngineConfig:
        return cls(**{n: getattr(s, n) for n in cls.__dataclass_fields__})


class Context:
    """Everything the engine knows, shared by its parts. Outputs collect in ``actions``,
    ``dirty`` (tokens to write in full), ``touched`` (updated_at-only refreshes) and ``final``
    (last writes of removed tokens) until the shell drains them."""

    def __init__(self, cfg: EngineConfig, epoch: str, now: float, wall_ms: int, rng: random.Random) -> None:
        self.cfg = cfg
        self.epoch = epoch
        self.started_ms = wall_ms
        self.rng = rng
        self.rlog = RateLimitedLog(log)
        # desired set
        self.tokens: dict[str, TokenState] = {}
        self.invalid_desired = 0
        self.capped_desired = 0
        self.seq_floor = 0  # seq of removed tokens: a re-add starts above it
        # sockets and subscriptions
        self.shards = ShardMap(cfg.max_tokens_per_conn)
        self.conns: dict[int, Conn] = {}
        self.next_conn_id = 1
        self.open_queue: deque[int] = deque()
        self.next_open_at = now
        self.pause_until = now
        self.venue = Venue(now, wall_ms)  # up, degraded or down, judged from the sockets
        # market data: the frame being applied
        self.frame_deltas = False  # it carried a non-book event for one of the socket's tokens
        self.frame_own = 0  # events in it for the socket's own tokens (its data)
        # resync
        self.unsettled: dict[str, Unsettled] = {}  # tokens whose top disagrees, within the grace
        self.reseed: set[str] = set()  # resyncing tokens to reseed over REST with the next actions
        # REST confirmation
        self.next_request_id = 1
        self.rest_inflight: dict[int, list[str]] = {}
        self.rest_pending: set[str] = set()
        # market lifecycle: state polls, resolved markets, start-up read-back
        self.lifecycle = Lifecycle(now)
        # timers
        self.last_slow_check = now
        self.next_touch_scan = now
        # outputs
        self.actions: list[Action] = []
        self.dirty: set[str] = set()
        self.touched: set[str] = set()
        self.final: list[QuoteWrite] = []
        self.stats: Counter[tuple[Stat, str]] = Counter()
        self.confirm_latencies: list[float] = []  # subscribe sent -> first book, seconds

    def owner_conn(self, st: TokenState) -> Conn | None:
        """The open socket currently carrying this token's shard, if any."""
        shard = self.shards.shards.get(st.shard_id)
        if shard is None or shard.conn_id is None:
            return None
        conn = self.conns.get(shard.conn_id)
        return conn if conn is not None and conn.state == OPEN else None
