"""The sidecar's brain: a deterministic, I/O-free state machine.

Inputs are method calls with the time passed in (``now`` = monotonic seconds, ``wall_ms`` =
epoch milliseconds): the desired set changed, a socket opened/closed/failed, a frame arrived, a
REST answer came back, time passed. Outputs are drained by the shell: :meth:`take_actions`
(open/close a socket, send a text frame, fetch books over REST) and :meth:`take_writes` (quote
hash writes). Nothing here sleeps, reads a clock, or touches a socket, so every decision can be
unit-tested exactly.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sidecar.core import crosscheck, events, health, protocol
from sidecar.core.events import LevelChanges
from sidecar.core.protocol import BUY, Levels, Malformed
from sidecar.core.quote import TokenState
from sidecar.core.ratelog import RateLimitedLog
from sidecar.core.shards import CONNECTING, OPEN, Conn, Shard, ShardMap, chunks
from sidecar.core.status import (
    BBO_SETTLING,
    LIVE,
    NO_DATA,
    PENDING,
    REMOVED,
    RESOLVED,
    RESYNCING,
    SIDECAR_STOPPED,
    STALE,
    UNSUBSCRIBED,
    set_status,
)

log = logging.getLogger("sidecar.core.engine")

MAX_IDS_PER_FRAME = 100
RESYNC_WAIT_S = 5.0  # a resyncing token with no book this long is redriven (again), then every 4x this
RETIRE_GRACE_S = 10.0  # how long a replaced socket may linger before it is closed anyway
REST_BATCH = 500
REDRIVE_SLOW_S = 300.0  # retry period for a token whose redrive and move budget is spent
TOUCH_INTERVAL_S = 1.0  # updated_at-only refreshes, at most this often per token
TOUCH_SCAN_S = 0.05  # how often the touched set is scanned for refreshes that are due
SLOW_CHECK_S = 1.0
_PRICE_CHANGE_KEY = ("events", events.PRICE_CHANGE)


# ---- outputs ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Open:
    conn_id: int
    shard_id: int


@dataclass(slots=True)
class Send:
    conn_id: int
    text: str


@dataclass(slots=True)
class Close:
    conn_id: int
    reason: str


@dataclass(slots=True)
class RestFetch:
    request_id: int
    tokens: list[str]


Action = Open | Send | Close | RestFetch


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


@dataclass
class EngineConfig:
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

    @classmethod
    def from_settings(cls, s: Any) -> EngineConfig:
        return cls(**{n: getattr(s, n) for n in cls.__dataclass_fields__})


class Engine:
    def __init__(
        self,
        cfg: EngineConfig,
        epoch: str,
        now: float,
        wall_ms: int,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.epoch = epoch
        self.started_ms = wall_ms
        self.rng = rng or random.Random()
        self.tokens: dict[str, TokenState] = {}
        self.shards = ShardMap(cfg.max_tokens_per_conn)
        self.conns: dict[int, Conn] = {}
        self._next_conn_id = 1
        self._next_request_id = 1
        self.open_queue: deque[int] = deque()
        self.next_open_at = now
        self.pause_until = now
        self.rest_inflight: dict[int, list[str]] = {}
        self.rest_pending: set[str] = set()
        self.stats: Counter[tuple[str, str]] = Counter()
        self.observations: list[tuple[str, float]] = []
        self.invalid_desired = 0
        self.capped_desired = 0
        self._actions: list[Action] = []
        self.dirty: set[str] = set()
        self._touched: set[str] = set()
        self._final: list[QuoteWrite] = []
        self._last_slow_check = now
        self._next_touch_scan = now
        self._frame_deltas = False  # this frame carried a non-book event for one of the socket's tokens
        self._frame_own = 0  # events in this frame for the socket's own tokens (its data)
        self._event_is_delta = False
        self._seq_floor = 0
        self._unsettled: dict[str, crosscheck.Unsettled] = {}  # see _crosscheck
        self._reseed: set[str] = set()  # resyncing tokens to reseed over REST with the next actions
        self._rlog = RateLimitedLog(log)
        self.stopping = False

    # ---- desired set -------------------------------------------------------------------------

    def set_desired(self, members: Iterable[Any], now: float, wall_ms: int) -> None:
        """Apply the autorun scheduler's desired set. Garbage is counted, never sent upstream."""
        valid: set[str] = set()
        invalid = 0
        for raw in members:
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", "replace")
            value = raw.strip() if isinstance(raw, str) else ""
            if protocol.is_token_id(value):
                valid.add(value)
            else:
                invalid += 1
                self._rlog.warning(
                    "desired_invalid", now, "ignoring invalid token id in desired set: %r", str(raw)[:80]
                )
        self.invalid_desired = invalid
        cap = self.cfg.max_tokens
        if len(valid) > cap:
            keep = sorted(valid & self.tokens.keys())[:cap]
            rest = sorted(valid - self.tokens.keys())[: cap - len(keep)]
            self.capped_desired = len(valid) - cap
            self._rlog.warning(
                "desired_cap",
                now,
                "desired set has %d valid tokens, over SIDECAR_MAX_TOKENS=%d: %d ignored",
                len(valid),
                cap,
                len(valid) - cap,
            )
            valid = set(keep) | set(rest)
        else:
            self.capped_desired = 0
        removed = [t for t in self.tokens if t not in valid]
        added = sorted(valid - self.tokens.keys())
        touched: set[int] = set()
        for token in removed:
            touched.add(self._remove_token(token))
        for token in added:
            touched.add(self._add_token(token, now, wall_ms))
        if added or removed:
            log.info("desired set: +%d -%d, now %d tokens", len(added), len(removed), len(self.tokens))
        for shard_id in touched:
            self._sync_shard(shard_id, now)

    def _add_token(self, token: str, now: float, wall_ms: int) -> int:
        # seq starts from the wall clock in microseconds, so it keeps increasing across re-adds
        # and sidecar restarts (no token changes 1,000 times a millisecond).
        st = TokenState(token, max(wall_ms * 1000, self._seq_floor), now)
        self.tokens[token] = st
        shard = self.shards.assign(token, now)
        st.shard_id = shard.id
        self.dirty.add(token)
        return shard.id

    def _remove_token(self, token: str) -> int:
        st = self.tokens.pop(token)
        self.dirty.discard(token)
        self._touched.discard(token)
        self.rest_pending.discard(token)
        set_status(self, st, UNSUBSCRIBED, REMOVED)
        st.seq += 1
        self._seq_floor = max(self._seq_floor, st.seq)
        self._final.append(
            QuoteWrite(token, st.fields(self.epoch), True, expire_s=self.cfg.unsubscribed_ttl_s)
        )
        self.shards.remove(token, st.shard_id)
        return st.shard_id

    # ---- subscription wire ---------------------------------------------------------------------

    def _sync_shard(self, shard_id: int, now: float) -> None:
        """Make the shard's socket subscriptions equal its token set, in ≤100-id frames."""
        shard = self.shards.shards.get(shard_id)
        if shard is None:
            return
        if not shard.tokens:
            self._close_shard(shard, now)
            return
        conn = self.conns.get(shard.conn_id) if shard.conn_id is not None else None
        if conn is None:
            if shard.id not in self.open_queue:
                self.open_queue.append(shard.id)
            return
        if conn.state != OPEN:
            return
        gone = conn.subscribed - shard.tokens
        if gone:
            conn.subscribed -= gone
            for part in chunks(sorted(gone), MAX_IDS_PER_FRAME):
                self._actions.append(Send(conn.id, protocol.subscribe_op("unsubscribe", part)))
            if conn.probe_token in gone:
                conn.probe_token = None
        new = sorted(shard.tokens - conn.subscribed)
        if new:
            self._subscribe(conn, new, now)
        if gone or (new and conn.data_seen):
            log.info(
                "socket %d: +%d -%d subscriptions, %d tokens", conn.id, len(new), len(gone), len(shard.tokens)
            )

    def _subscribe(self, conn: Conn, tokens: list[str], now: float) -> None:
        for part in chunks(tokens, MAX_IDS_PER_FRAME):
            if not conn.first_sent:
                text = protocol.subscribe_first(part)
                conn.first_sent = True
                conn.last_ping_at = now  # PING only after the subscription frame
            else:
                text = protocol.subscribe_op("subscribe", part)
            self._actions.append(Send(conn.id, text))
        conn.subscribed.update(tokens)
        for token in tokens:
            st = self.tokens[token]
            st.sub_sent_at = now
            st.confirmed = False
        self.stats["subscribes", ""] += len(tokens)

    def _redrive(self, tokens: list[str], reason: str, now: float) -> None:
        """Unsubscribe + subscribe again on the owning socket: the server then sends a fresh book."""
        by_conn: dict[int, list[str]] = {}
        for token in tokens:
            st = self.tokens.get(token)
            if st is None:
                continue
            shard = self.shards.shards.get(st.shard_id)
            conn = self.conns.get(shard.conn_id) if shard and shard.conn_id is not None else None
            if conn is None or conn.state != OPEN or token not in conn.subscribed:
                continue
            by_conn.setdefault(conn.id, []).append(token)
            self.stats["redrives", reason] += 1
        for conn_id, toks in by_conn.items():
            conn = self.conns[conn_id]
            toks.sort()
            for part in chunks(toks, MAX_IDS_PER_FRAME):
                self._actions.append(Send(conn_id, protocol.subscribe_op("unsubscribe", part)))
            conn.subscribed.difference_update(toks)
            self._subscribe(conn, toks, now)

    # ---- sockets -------------------------------------------------------------------------------

    def _pump_opens(self, now: float) -> None:
        """Open queued shards' sockets, paced and backed off, never in a storm."""
        if not self.open_queue or now < self.pause_until or now < self.next_open_at:
            return
        for _ in range(len(self.open_queue)):
            shard_id = self.open_queue.popleft()
            shard = self.shards.shards.get(shard_id)
            if shard is None or not shard.tokens or shard.conn_id is not None:
                continue
            if now < shard.next_attempt_at:
                self.open_queue.append(shard_id)
                continue
            conn = Conn(self._next_conn_id, shard.id)
            self._next_conn_id += 1
            self.conns[conn.id] = conn
            shard.conn_id = conn.id
            self._actions.append(Open(conn.id, shard.id))
            self.next_open_at = now + self.cfg.connect_spacing_s
            if self.cfg.connect_spacing_s > 0:
                return

    def on_open(self, conn_id: int, now: float) -> None:
        conn = self.conns.get(conn_id)
        if conn is None or conn.state != CONNECTING:
            return
        conn.state = OPEN
        conn.opened_at = conn.last_data_at = conn.last_pong_at = conn.last_ping_at = now
        self.stats["connects", ""] += 1
        shard = self.shards.shards.get(conn.shard_id)
        if shard is None or shard.conn_id != conn_id or not shard.tokens:
            self._request_close(conn, "unneeded", now)
            return
        log.info(
            "socket %d (shard %d) connected: subscribing %d tokens", conn_id, shard.id, len(shard.tokens)
        )
        self._sync_shard(shard.id, now)

    def on_connect_failed(self, conn_id: int, reason: str, now: float, status: int | None = None) -> None:
        conn = self.conns.pop(conn_id, None)
        if conn is None:
            return
        self.stats["connect_failures", reason] += 1
        shard = self.shards.shards.get(conn.shard_id)
        if shard is None or shard.conn_id != conn_id:
            return
        shard.conn_id = None
        shard.attempts += 1
        delay = health.full_jitter(self.rng, shard.attempts, self.cfg.backoff_min_s, self.cfg.backoff_max_s)
        shard.next_attempt_at = now + delay
        if status == 429:
            # Throttled: every socket waits, not just this one.
            self.pause_until = max(self.pause_until, now + delay)
        self._rlog.warning(
            f"connect_fail:{reason}",
            now,
            "socket for shard %d failed to connect (%s); retry in %.1fs",
            shard.id,
            reason,
            delay,
            reason=f"connect_{reason}",
        )
        self._sync_shard(shard.id, now)

    def on_closed(self, conn_id: int, reason: str, now: float) -> None:
        conn = self.conns.get(conn_id)
        if conn is None:
            return
        if conn.close_reason:  # we asked for it and already dealt with the consequences
            self.conns.pop(conn_id, None)
            return
        self._lose_conn(conn, reason, now)

    def _lose_conn(self, conn: Conn, reason: str, now: float) -> None:
        """A socket is gone (or judged useless): its tokens go stale now, the shard reconnects."""
        self.conns.pop(conn.id, None)
        self.stats["reconnects", reason] += 1
        shard = self.shards.shards.get(conn.shard_id)
        if shard is None:
            return
        shard.retiring.discard(conn.id)
        if shard.conn_id != conn.id:
            return
        shard.conn_id = None
        if conn.data_seen:
            shard.attempts = 0
        shard.attempts += 1
        delay = health.full_jitter(self.rng, shard.attempts, self.cfg.backoff_min_s, self.cfg.backoff_max_s)
        shard.next_attempt_at = now + delay
        self._stale_shard(shard, f"connection_{reason}")
        log.warning(
            "socket %d (shard %d, %d tokens) lost: %s; reconnect in %.2fs",
            conn.id,
            shard.id,
            len(shard.tokens),
            reason,
            delay,
            extra={"conn": conn.id, "reason": f"connection_{reason}"},
        )
        self._sync_shard(shard.id, now)

    def _stale_shard(self, shard: Shard, reason: str) -> None:
        for token in shard.tokens:
            st = self.tokens[token]
            if st.status in (LIVE, RESYNCING):
                set_status(self, st, STALE, reason)
            elif st.status in (PENDING, STALE):
                set_status(self, st, st.status, reason)
            st.confirmed = False
            st.sub_sent_at = None

    def _request_close(self, conn: Conn, reason: str, now: float) -> None:
        if conn.close_reason:
            return
        conn.close_reason = reason
        self._actions.append(Close(conn.id, reason))

    def _replace(self, conn: Conn, reason: str, now: float) -> None:
        """Make-before-break: a new socket takes the shard now; the old one is closed once the new
        one delivers (or after a grace), so there is never a moment with no socket at all."""
        shard = self.shards.shards.get(conn.shard_id)
        self.stats["reconnects", reason] += 1
        log.warning(
            "socket %d (shard %s) judged %s; replacing it",
            conn.id,
            conn.shard_id,
            reason,
            extra={"conn": conn.id, "reason": reason},
        )
        if shard is None or shard.conn_id != conn.id:
            self._request_close(conn, reason, now)
            return
        conn.close_reason = reason  # its later close is expected
        shard.retiring.add(conn.id)
        shard.conn_id = None
        self._stale_shard(shard, reason)
        shard.next_attempt_at = now
        self.open_queue.appendleft(shard.id)
        conn.retire_at = now + RETIRE_GRACE_S

    def _retire_done(self, shard: Shard, now: float, force: bool = False) -> None:
        for conn_id in list(shard.retiring):
            old = self.conns.get(conn_id)
            if old is None:
                shard.retiring.discard(conn_id)
                continue
            if force or now >= old.retire_at:
                shard.retiring.discard(conn_id)
                self.conns.pop(conn_id, None)
                self._actions.append(Close(conn_id, old.close_reason or "replaced"))

    def _close_shard(self, shard: Shard, now: float) -> None:
        if shard.conn_id is not None:
            conn = self.conns.pop(shard.conn_id, None)
            if conn is not None:
                self._actions.append(Close(conn.id, "empty"))
        for conn_id in shard.retiring:
            if self.conns.pop(conn_id, None) is not None:
                self._actions.append(Close(conn_id, "empty"))
        self.shards.drop(shard.id)

    # ---- frames --------------------------------------------------------------------------------

    def on_frame(self, conn_id: int, data: bytes | str, now: float, wall_ms: int) -> None:
        """Apply one frame. Never raises: bad input is counted and the rest of the frame applied."""
        conn = self.conns.get(conn_id)
        if conn is None:
            self.stats["frames", "orphan"] += 1
            return
        frame = events.parse_frame(data)
        if not isinstance(frame, list):
            self._on_other_frame(conn, frame, now)
            return
        shard = self.shards.shards.get(conn.shard_id)
        owner = shard is not None and shard.conn_id == conn_id
        if not owner:
            self.stats["frames", "replaced_socket"] += 1
            return
        self.stats["frames", "data"] += 1
        conn.last_pong_at = now  # any JSON frame proves the connection is up (not that it has data)
        self._frame_deltas = False
        self._frame_own = 0
        for event in frame:
            try:
                if type(event) is LevelChanges:  # the hot path: most events are level changes
                    self.stats[_PRICE_CHANGE_KEY] += 1
                    self._on_price_change(conn, event, now, wall_ms)
                else:
                    self._apply_event(conn, event, now, wall_ms)
            except Exception as exc:  # hostile input must never kill the socket
                self.stats["parse_errors", "unexpected"] += 1
                self._rlog.error(
                    "event:unexpected", now, "unexpected error applying event: %r", exc, exc_info=True
                )
        if self._frame_own:
            gap = now - conn.last_data_at
            if conn.data_seen and self._frame_deltas:
                # Snapshot bursts (a split initial dump) say nothing about the usual event rate.
                conn.gap_ewma = health.update_gap(conn.gap_ewma, gap)
            conn.last_data_at = now
            conn.data_seen = True
            if conn.probe_token is not None:
                conn.probe_token = None
                conn.quiet_mult = min(conn.quiet_mult * 2.0, 64.0)
                self.stats["probes", "ok"] += 1
            elif gap < self.cfg.silence_min_s:
                conn.quiet_mult = 1.0
            if shard is not None and shard.retiring:
                self._retire_done(shard, now, force=True)

    def _on_other_frame(self, conn: Conn, frame: events.Control | events.BadFrame, now: float) -> None:
        """A control text (PONG...) or a frame that is not readable JSON."""
        if isinstance(frame, events.BadFrame):
            self.stats["parse_errors", frame.reason] += 1
            self._rlog.warning(
                f"parse:{frame.reason}",
                now,
                "malformed frame on socket %d: %s",
                conn.id,
                frame.detail,
                conn=conn.id,
                reason=frame.reason,
            )
            return
        label = frame.label
        self.stats["control", label] += 1
        if label == "PONG":
            conn.last_pong_at = now
        elif label != "NO NEW ASSETS":
            self._rlog.warning(
                f"control:{label}", now, "control text on socket %d: %r", conn.id, frame.text, conn=conn.id
            )

    def _token_event(
        self, conn: Conn, asset: str | None, now: float, delta: bool = True
    ) -> TokenState | None:
        """The token an event is about, if it is ours and on this socket; counts everything else."""
        st = self.tokens.get(asset) if asset is not None else None
        if st is None or st.shard_id != conn.shard_id:
            self.stats["events", "filtered"] += 1
            return None
        # Only events for the socket's own tokens prove it still delivers market data: broadcasts
        # (new_market, market_resolved for the whole venue) and other assets' entries keep coming
        # from a socket that has stopped sending its own books.
        self._frame_own += 1
        if delta:
            self._frame_deltas = True
        if st.events:
            st.event_gap = health.update_gap(st.event_gap, now - st.last_event_at)
        st.events += 1
        st.last_event_at = now
        return st

    def _apply_event(self, conn: Conn, event: events.Event, now: float, wall_ms: int) -> None:
        match event:
            case events.LevelChanges():
                self.stats["events", events.PRICE_CHANGE] += 1
                self._on_price_change(conn, event, now, wall_ms)
            case events.Book():
                self.stats["events", events.BOOK] += 1
                self._on_book(conn, event, now, wall_ms)
            case events.BestBidAsk():
                self.stats["events", events.BEST_BID_ASK] += 1
                self._on_best_bid_ask(conn, event, now, wall_ms)
            case events.Trade():
                self.stats["events", events.TRADE] += 1
                self._on_trade(conn, event, now)
            case events.TickSizeChange():
                self.stats["events", events.TICK_SIZE_CHANGE] += 1
                self._on_tick_size(conn, event, now)
            case events.Resolution():
                self.stats["events", events.RESOLVED] += 1
                self._on_resolved(conn, event, now)
            case events.Broadcast():
                self.stats["events", event.kind] += 1  # a venue-wide broadcast: not this socket's data
            case events.Unknown():
                self.stats["events", events.UNKNOWN] += 1
                self._rlog.info(f"unknown:{event.kind}", now, "unknown event_type %r skipped", event.kind)
            case events.BadEvent():
                self._on_bad_event(conn, event, now)

    def _on_bad_event(self, conn: Conn, event: events.BadEvent, now: float) -> None:
        """An event that cannot be applied: counted like the kind it is, its token (if ours) seen."""
        if event.kind:
            self.stats["events", event.kind] += 1
        if event.reason == "unexpected":
            self.stats["parse_errors", "unexpected"] += 1
            self._rlog.error("event:unexpected", now, "unexpected error applying event: %s", event.detail)
            return
        if event.kind == events.PRICE_CHANGE:
            # No recognisable entries: whose book it was is unknown, so every one of the market's.
            self._distrust(self._market_tokens(conn, event.market), now)
        elif event.kind and self._token_event(conn, event.asset_id, now, event.kind != events.BOOK) is None:
            return  # another socket's asset, or no one's: filtered, not our error
        self.stats["parse_errors", event.reason] += 1
        self._rlog.warning(
            f"event:{event.reason}",
            now,
            "skipping bad event on socket %d: %s",
            conn.id,
            f"{event.reason}: {event.detail}" if event.detail else event.reason,
            conn=conn.id,
            reason=event.reason,
        )

    def _on_book(self, conn: Conn, event: events.Book, now: float, wall_ms: int) -> None:
        st = self._token_event(conn, event.asset_id, now, delta=False)
        if st is None:
            return
        if not st.confirmed:
            # Only a snapshot confirms a subscription: deltas alone can never make a quote.
            st.confirmed = True
            st.confirmed_at = now
            if st.sub_sent_at is not None:
                self.observations.append(("confirm_latency", now - st.sub_sent_at))
            st.redrives = 0
        st.book.replace(event.bids, event.asks)
        st.shown = st.book.top()  # a snapshot makes prices, also for a resolved token
        if event.ts is not None:
            st.ts = event.ts
        if event.market is not None:
            st.market = event.market
        if event.tick_size is not None:
            st.tick_size = event.tick_size
        if st.status != RESOLVED:
            set_status(self, st, LIVE, "")
        st.resync_deadline = None
        st.source = "book"
        st.updated_at = wall_ms
        st.last_recv = now
        st.last_quiet_check = now
        if st.book.crossed:
            self.stats["crossed_books", ""] += 1
        self.dirty.add(st.token)

    def _on_price_change(self, conn: Conn, event: events.LevelChanges, now: float, wall_ms: int) -> None:
        """Apply each entry on its own; a token with an entry that cannot be applied is resynced."""
        market = event.market
        ts = event.ts
        last: dict[str, protocol.LevelChange] = {}
        changed: dict[str, bool] = {}
        bad: list[TokenState] = []
        for ch in event.entries:
            if isinstance(ch, protocol.BadEntry):
                bad += self._bad_entry(conn, ch, market, now)
                continue
            st = self._token_event(conn, ch.asset_id, now)
            if st is None:
                continue
            moved = st.book.set_level(ch.side, ch.key, ch.price, ch.size, ch.zero)
            changed[st.token] = changed.get(st.token, False) or moved
            last[st.token] = ch
            if ts is not None:
                st.ts = ts
            if market is not None:
                st.market = market
        if bad:
            for st in bad:
                if ts is not None:
                    st.ts = ts  # so a REST book older than the entry it missed cannot reseed it
            self._distrust(bad, now)  # no longer live: nothing below publishes or confirms them
        for token, moved in changed.items():
            st = self.tokens[token]
            st.last_recv = now
            ch = last[token]
            if not self._crosscheck(st, ch.best_bid, ch.best_ask, now, wall_ms):
                continue  # not live, or its top is not (yet) the exchange's: publish nothing
            st.updated_at = wall_ms
            st.last_quiet_check = now
            if moved:
                st.source = "price_change"
                self.dirty.add(token)
            else:
                self._touched.add(token)

    def _bad_entry(
        self, conn: Conn, entry: protocol.BadEntry, market: str | None, now: float
    ) -> list[TokenState]:
        """Count a price_change entry that cannot be applied; the tokens whose book it leaves wrong."""
        if entry.asset_id is None:
            suspects = self._market_tokens(conn, market)
        else:
            st = self._token_event(conn, entry.asset_id, now)
            if st is None:
                return []  # another socket's asset, or no one's: filtered, not our error
            suspects = [st]
        self.stats["parse_errors", entry.reason] += 1
        self._rlog.warning(
            f"entry:{entry.reason}",
            now,
            "bad price_change entry on socket %d (asset %s): %s %s",
            conn.id,
            entry.asset_id,
            entry.reason,
            entry.detail,
            conn=conn.id,
            token=entry.asset_id or None,
            reason=entry.reason,
        )
        return suspects

    def _market_tokens(self, conn: Conn, market: str | None) -> list[TokenState]:
        """This socket's tokens of one market: the books an unattributable bad entry may be about."""
        if market is None:
            return []
        return [st for t in conn.subscribed if (st := self.tokens[t]).market == market]

    def _distrust(self, sts: Iterable[TokenState], now: float) -> None:
        """Trusted books that missed an update are no longer known right: resync them (a WS redrive
        and a REST reseed at once, see :meth:`_resync`). Any other book is not shown anyway."""
        for st in sts:
            if st.status == LIVE or (st.status == RESYNCING and st.reason == BBO_SETTLING):
                self._resync(st, "bad_entry", now, redrive=True)

    def _crosscheck(self, st: TokenState, best_bid: Any, best_ask: Any, now: float, wall_ms: int) -> bool:
        """Is this token's top publishable as ``live``: live (or settling) and consistent with the
        exchange's stated best prices (if the message had any) and not crossed?

        A disagreement may be a crossing trade still arriving (several messages, one timestamp,
        the first already stating the final top). Meanwhile the token is ``resyncing``
        (``bbo_settling``): the hash keeps the prices it last showed as live, nothing disagreeing
        with the exchange's own best prices is written as live, nothing is redriven. Agreement
        within ``bbo_grace_s`` makes it live again (an exchange confirmation: updated_at moves);
        a disagreement that outlasts it is a real mismatch (see :meth:`_escalate`).
        """
        settling = st.status == RESYNCING and st.reason == BBO_SETTLING
        if st.status != LIVE and not settling:
            return False  # no trustworthy book until the next snapshot (or REST reseed)
        try:
            stated = crosscheck.claim(best_bid, best_ask)
        except Malformed as exc:
            self.stats["parse_errors", exc.reason] += 1
            stated = None  # an unreadable claim cannot be judged; the book itself still is
        pending = self._unsettled.get(st.token) if settling else None
        if stated is None and pending is not None:
            stated = pending.claim  # a message without a claim is judged against the latest one
        book = st.book
        if book.crossed:
            self.stats["crossed_books", ""] += 1
        if crosscheck.agrees(stated, book.bid_key, book.ask_key):
            if settling:
                self._unsettled.pop(st.token, None)
                self.stats["bbo_settled", ""] += 1
                set_status(self, st, LIVE, "")
            return True
        if pending is None:
            self._unsettled[st.token] = crosscheck.Unsettled(now, now + self.cfg.bbo_grace_s, stated)
            if not settling:
                set_status(self, st, RESYNCING, BBO_SETTLING)
            return False
        pending.claim = stated
        if now >= pending.deadline:
            self._escalate(st, now)
        return False

    def _escalate(self, st: TokenState, now: float) -> None:
        """A disagreement that outlasted the grace: the book is wrong. Resync (WS + REST at once)."""
        pending = self._unsettled.pop(st.token, None)
        stated = pending.claim if pending is not None else None
        crossed = st.book.crossed
        mismatch = stated is not None and stated != (st.book.bid_key, st.book.ask_key)
        reason = "bbo_mismatch" if mismatch else "crossed_book"
        if mismatch:
            self.stats["bbo_mismatch", ""] += 1
        self._rlog.warning(
            reason,
            now,
            "token %s: exchange top %s differs from local book %s/%s (crossed: %s) for %.2fs; resyncing",
            st.token,
            stated,
            st.book.bid_key,
            st.book.ask_key,
            crossed,
            now - pending.since if pending is not None else 0.0,
            token=st.token,
            reason=reason,
        )
        self._resync(st, reason, now, redrive=True)

    def _check_unsettled(self, now: float) -> None:
        """Escalate settling tokens whose grace ran out with no message to judge them by."""
        for token, pending in list(self._unsettled.items()):
            if now < pending.deadline:
                continue
            st = self.tokens.get(token)
            if st is None or st.status != RESYNCING or st.reason != BBO_SETTLING:
                del self._unsettled[token]  # settled some other way (a book, a lost socket)
                continue
            self._escalate(st, now)

    def _resync(self, st: TokenState, reason: str, now: float, redrive: bool) -> None:
        """The book is no longer known right: ``resyncing`` until a WS book or a REST reseed, both
        asked for at once (``redrive``); without a book within RESYNC_WAIT_S it is redriven again."""
        if st.status == RESOLVED:
            return
        if st.status != RESYNCING or st.reason == BBO_SETTLING:
            set_status(self, st, RESYNCING, reason)
        self._unsettled.pop(st.token, None)
        st.resync_deadline = now + RESYNC_WAIT_S
        self._reseed.add(st.token)
        if redrive:
            self._redrive([st.token], reason, now)

    def _on_best_bid_ask(self, conn: Conn, event: events.BestBidAsk, now: float, wall_ms: int) -> None:
        st = self._token_event(conn, event.asset_id, now)
        if st is None:
            return
        was_live = st.status == LIVE
        best_bid, best_ask = event.best_bid, event.best_ask
        # A best_bid_ask carries nothing but its claim: without a readable one it confirms nothing.
        consistent = self._crosscheck(st, best_bid, best_ask, now, wall_ms)
        if consistent and crosscheck.states_top(best_bid, best_ask):
            st.updated_at = wall_ms
            st.last_quiet_check = now
            if was_live:
                self._touched.add(st.token)

    def _on_trade(self, conn: Conn, event: events.Trade, now: float) -> None:
        st = self._token_event(conn, event.asset_id, now)
        if st is None:
            return
        st.last_trade_price = event.price
        st.last_trade_size = event.size
        st.last_trade_side = event.side
        st.last_trade_ts = event.ts
        st.last_recv = now
        self.dirty.add(st.token)

    def _on_tick_size(self, conn: Conn, event: events.TickSizeChange, now: float) -> None:
        st = self._token_event(conn, event.asset_id, now)
        if st is None:
            return
        new_tick = event.new_tick_size
        trusted = st.status == LIVE or (st.status == RESYNCING and st.reason == BBO_SETTLING)
        # Captured traffic has the book a few ms before its tick_size_change: a trusted book that
        # already carries the new tick is on the new grid, so there is nothing to resync.
        reflected = trusted and crosscheck.same_tick(st.tick_size, new_tick)
        if new_tick is not None:
            st.tick_size = new_tick
        if event.ts is not None:
            st.ts = event.ts
        st.last_recv = now
        if reflected:
            self.stats["tick_size_change", "reflected"] += 1
        elif st.status in (LIVE, RESYNCING):
            # A new tick grid is a new book epoch: untrusted until a fresh book. Reseed from REST at
            # once (the next WS book still wins); without REST, redrive at once instead.
            self.stats["tick_size_change", "resync"] += 1
            self._resync(st, "tick_size_change", now, redrive=not self.cfg.rest_enabled)
        self.dirty.add(st.token)

    def _on_resolved(self, conn: Conn, event: events.Resolution, now: float) -> None:
        for asset in event.asset_ids:
            st = self._token_event(conn, asset, now)
            if st is None:
                continue
            set_status(self, st, RESOLVED, "won" if event.winner == st.token else "market_resolved")

    # ---- REST confirmation -----------------------------------------------------------------------

    def on_rest_books(self, request_id: int, books: list[Any] | None, now: float, wall_ms: int) -> None:
        """REST snapshots confirm quiet tokens (updated_at) or reveal what the socket missed."""
        tokens = self.rest_inflight.pop(request_id, [])
        self.rest_pending.difference_update(tokens)
        if books is None:
            self.stats["rest", "error"] += 1
            return
        self.stats["rest", "ok"] += 1
        for summary in books:
            if not isinstance(summary, dict):
                continue
            asset = summary.get("asset_id")
            st = self.tokens.get(asset) if isinstance(asset, str) else None
            if st is None:
                continue
            if st.status == RESYNCING and st.reason != BBO_SETTLING:
                self._reseed_from_rest(st, summary, now, wall_ms)
                continue
            if st.status != LIVE:
                continue
            levels = self._rest_levels(summary)
            if levels is None:
                continue
            bids, asks = levels
            rest_bid = max(bids) if bids else None
            rest_ask = min(asks) if asks else None
            same = (
                rest_bid == st.book.bid_key
                and rest_ask == st.book.ask_key
                and (rest_bid is None or float(bids[rest_bid][1]) == float(st.book.top()[1]))
                and (rest_ask is None or float(asks[rest_ask][1]) == float(st.book.top()[3]))
            )
            if same:
                self.stats["rest_confirm", "match"] += 1
                st.updated_at = wall_ms
                self._touched.add(st.token)
                continue
            rest_ts = protocol.timestamp_ms(summary.get("timestamp"))
            if rest_ts is not None and st.ts is not None and rest_ts < st.ts:
                self.stats["rest_confirm", "older"] += 1
                continue  # the stream moved on after REST's snapshot: it is the newer truth
            if rest_bid is not None and rest_ask is not None and rest_bid >= rest_ask:
                # REST disagrees with our book but its own is crossed: neither can be shown as
                # live; resync (a WS book, or a later uncrossed REST book, settles it).
                self.stats["rest_confirm", "crossed"] += 1
                self._resync(st, "rest_mismatch", now, redrive=True)
                continue
            self.stats["rest_confirm", "mismatch"] += 1
            self._rlog.warning(
                "rest_mismatch",
                now,
                "token %s: REST book differs from the socket's; applying it and redriving",
                st.token,
                token=st.token,
                reason="rest_mismatch",
            )
            st.book.replace(bids, asks)
            if rest_ts is not None:
                st.ts = rest_ts
            st.source = "rest"
            st.updated_at = wall_ms
            st.last_recv = now
            self.dirty.add(st.token)
            self._redrive([st.token], "rest_mismatch", now)

    def _rest_levels(self, summary: dict[str, Any]) -> tuple[Levels, Levels] | None:
        """A REST book summary's (bids, asks), or ``None`` (counted) when it is malformed."""
        try:
            raw_bids, raw_asks = protocol.book_sides(summary)
            return protocol.parse_levels(raw_bids), protocol.parse_levels(raw_asks)
        except Malformed as exc:
            self.stats["parse_errors", f"rest_{exc.reason}"] += 1
            return None

    def _reseed_from_rest(self, st: TokenState, summary: dict[str, Any], now: float, wall_ms: int) -> None:
        """A REST book for a resyncing token: the exchange's own snapshot makes it live again (the
        contract promises a fresh book over WS or REST), unless the socket has already applied
        events newer than it (then the WS book the redrive asked for settles it) or it is crossed.
        A WS book arriving later replaces it as usual."""
        levels = self._rest_levels(summary)
        if levels is None:
            return
        bids, asks = levels
        rest_ts = protocol.timestamp_ms(summary.get("timestamp"))
        if rest_ts is not None and st.ts is not None and rest_ts < st.ts:
            self.stats["rest_reseed", "older"] += 1
            return
        if not crosscheck.agrees(None, max(bids) if bids else None, min(asks) if asks else None):
            self.stats["rest_reseed", "crossed"] += 1
            return
        self.stats["rest_reseed", "applied"] += 1
        st.book.replace(bids, asks)
        if rest_ts is not None:
            st.ts = rest_ts
        tick = summary.get("tick_size")
        if isinstance(tick, str):
            st.tick_size = tick
        set_status(self, st, LIVE, "")
        st.source = "rest"
        st.resync_deadline = None
        st.updated_at = wall_ms
        st.last_recv = now
        st.last_quiet_check = now
        self.dirty.add(st.token)

    # ---- time ------------------------------------------------------------------------------------

    def tick(self, now: float, wall_ms: int) -> None:
        """Timers: pacing, pings, pong and silence checks, confirmation and stall redrives."""
        self._pump_opens(now)
        for conn in list(self.conns.values()):
            if conn.state != OPEN or conn.close_reason:
                continue
            shard = self.shards.shards.get(conn.shard_id)
            if shard is None or shard.conn_id != conn.id:
                continue
            if conn.first_sent and now - conn.last_ping_at >= self.cfg.ping_interval_s:
                conn.last_ping_at = now
                self._actions.append(Send(conn.id, "PING"))
            if now - conn.last_pong_at > self.cfg.pong_timeout_s:
                self._request_close(conn, "pong_timeout", now)
                self._lose_conn(conn, "pong_timeout", now)
                continue
            self._check_silence(conn, shard, now)
        for shard in self.shards:
            if shard.retiring:
                self._retire_done(shard, now)
        if self._unsettled:
            self._check_unsettled(now)
        if now - self._last_slow_check >= SLOW_CHECK_S:
            self._last_slow_check = now
            self._check_tokens(now)

    def _check_silence(self, conn: Conn, shard: Shard, now: float) -> None:
        """A socket is judged on data. Silence past its own norm makes it suspect: tokens overdue
        by their own rate stop being vouched for (stale) and are redriven as the probe, so a
        healthy socket brings them back with fresh books within a round trip; quiet tokens stay
        live and one of them is the probe. A probe that brings nothing means a zombie."""
        if conn.probe_token is not None:
            if now >= conn.probe_deadline:
                self.stats["probes", "failed"] += 1
                conn.probe_token = None
                self._replace(conn, "silence", now)
                return
            late = self._stale_overdue(conn, now)  # tokens falling overdue while the probe is out
            if late:
                self._redrive(late, "probe", now)
            return
        threshold = health.silence_threshold(
            conn.gap_ewma, conn.quiet_mult, self.cfg.silence_min_s, self.cfg.silence_max_s
        )
        if now - conn.last_data_at < threshold:
            return
        watched = [t for t in conn.subscribed if self.tokens[t].status in (LIVE, RESYNCING)]
        if not watched:
            return  # nothing there is expected to talk (all pending or resolved)
        suspect = self._stale_overdue(conn, now)
        probe = suspect or [min(watched, key=lambda t: self.tokens[t].last_event_at)]
        conn.probe_token = probe[0]
        conn.probe_deadline = now + self.cfg.probe_timeout_s
        self.stats["probes", "sent"] += 1
        log.info(
            "socket %d silent for %.1fs (threshold %.1fs): %d overdue tokens stale, probing with %d redrives",
            conn.id,
            now - conn.last_data_at,
            threshold,
            len(suspect),
            len(probe),
        )
        self._redrive(probe, "probe", now)

    def _stale_overdue(self, conn: Conn, now: float) -> list[str]:
        """Live tokens on a suspect socket that are overdue by their own rate: no longer vouched for."""
        lo = self.cfg.silence_min_s
        out = []
        for token in conn.subscribed:
            st = self.tokens[token]
            if st.status == LIVE and health.overdue(st.event_gap, st.events, now - st.last_event_at, lo):
                set_status(self, st, STALE, "silence_suspected")
                out.append(token)
        return out

    def _check_tokens(self, now: float) -> None:
        redrive: dict[str, list[str]] = {}
        quiet: list[str] = []
        for st in self.tokens.values():
            status = st.status
            if status == RESYNCING:
                if st.reason == BBO_SETTLING:
                    continue  # nothing asked for yet: _check_unsettled escalates it
                if st.resync_deadline is not None:
                    # No book (or REST reseed) RESYNC_WAIT_S into the resync: ask both again. From
                    # here on it is treated like a token with no first event (see below).
                    if now >= st.resync_deadline:
                        st.resync_deadline = None
                        st.next_redrive_at = now + RESYNC_WAIT_S * 4
                        redrive.setdefault("resync_timeout", []).append(st.token)
                        self._reseed.add(st.token)
                elif now >= st.next_redrive_at:
                    # Still no book: every 4x as long, the redrive budget, a move to a fresh socket
                    # (a socket that will not re-snapshot a busy token never will, and its deltas
                    # make every REST book older), then slow retries; REST is asked again each time.
                    st.next_redrive_at = now + RESYNC_WAIT_S * 4
                    self._unconfirmed(st, now, redrive)
                    self._reseed.add(st.token)
            elif status == PENDING or (status == STALE and not st.confirmed):
                if st.sub_sent_at is None:
                    continue
                timeout = self.cfg.confirm_timeout_s * (2 ** min(st.redrives, 4))
                if st.confirmed or now - st.sub_sent_at < timeout or now < st.next_redrive_at:
                    continue
                self._unconfirmed(st, now, redrive)
            elif status == LIVE:
                idle = now - st.last_event_at
                limit = health.stall_threshold(st.event_gap, st.events, self.cfg.silence_max_s)
                if limit is not None and idle > limit and now >= st.next_redrive_at:
                    conn = self._owner_conn(st)
                    if conn is not None and now - conn.last_data_at < self.cfg.silence_min_s:
                        st.next_redrive_at = now + health.stall_backoff(st.stall_redrives)
                        st.stall_redrives += 1
                        redrive.setdefault("stall", []).append(st.token)
                        continue
                if (
                    self.cfg.rest_enabled
                    and now - st.last_quiet_check >= self.cfg.quiet_confirm_s
                    and st.token not in self.rest_pending
                ):
                    quiet.append(st.token)
        for reason, tokens in redrive.items():
            self._redrive(tokens, reason, now)
        for token in quiet:
            self.tokens[token].last_quiet_check = now
        self._request_rest(quiet)

    def _request_rest(self, tokens: Iterable[str]) -> None:
        """Fetch these tokens' books over REST now, in requests of at most REST_BATCH, skipping any
        already in flight. The one way REST is asked: quiet-token confirmations and reseeds of
        tokens whose book is no longer known right (the shell's client enforces the rate budget)."""
        if not self.cfg.rest_enabled:
            return
        wanted = sorted({t for t in tokens if t not in self.rest_pending})
        for part in chunks(wanted, REST_BATCH):
            request_id = self._next_request_id
            self._next_request_id += 1
            self.rest_inflight[request_id] = part
            self.rest_pending.update(part)
            self._actions.append(RestFetch(request_id, part))

    def _owner_conn(self, st: TokenState) -> Conn | None:
        shard = self.shards.shards.get(st.shard_id)
        if shard is None or shard.conn_id is None:
            return None
        conn = self.conns.get(shard.conn_id)
        return conn if conn is not None and conn.state == OPEN else None

    def _unconfirmed(self, st: TokenState, now: float, redrive: dict[str, list[str]]) -> None:
        """No first event (or, resyncing, no book): redrive a few times (the caller paces them),
        then move to a fresh socket, then keep retrying slowly. A pending token shows each step in
        its reason; a stale or resyncing one keeps its own (why it is not live): the
        no_first_event_* reasons are pending-only."""
        if st.redrives < self.cfg.redrive_max:
            st.redrives += 1
            self._pending_reason(st, f"no_first_event_redrive_{st.redrives}")
            reason = "resync_timeout" if st.status == RESYNCING else "confirm_timeout"
            redrive.setdefault(reason, []).append(st.token)
            return
        if st.moves < 1:
            st.moves += 1
            st.redrives = 0
            self._pending_reason(st, "no_first_event_moved")
            self._move(st, now)
            return
        st.next_redrive_at = now + REDRIVE_SLOW_S
        if st.moves == 1:  # the budget just ran out: from now on one retry every REDRIVE_SLOW_S
            st.moves = 2
            self._pending_reason(st, NO_DATA)
            self._rlog.warning(
                "no_data",
                now,
                "token %s got no book after redrives and a move; retrying every %ds",
                st.token,
                int(REDRIVE_SLOW_S),
                token=st.token,
                reason="no_data",
            )
        else:
            redrive.setdefault("confirm_retry", []).append(st.token)

    def _pending_reason(self, st: TokenState, reason: str) -> None:
        if st.status == PENDING:
            set_status(self, st, PENDING, reason)

    def _move(self, st: TokenState, now: float) -> None:
        old = st.shard_id
        self.shards.remove(st.token, old)
        shard = self.shards.assign(st.token, now, exclude=old, rescue=True)
        st.shard_id = shard.id
        st.sub_sent_at = now  # the confirm clock restarts with the move
        self.stats["moves", ""] += 1
        log.warning(
            "token %s got no book on shard %d: moving it to shard %d",
            st.token,
            old,
            shard.id,
            extra={
                "token": st.token,
                "reason": st.reason if st.status == RESYNCING else "no_first_event_moved",
            },
        )
        self._sync_shard(old, now)
        self._sync_shard(shard.id, now)

    # ---- shutdown and outputs -------------------------------------------------------------------

    def shutdown(self) -> None:
        """Every quote we can no longer vouch for becomes stale before the process exits."""
        self.stopping = True
        for st in self.tokens.values():
            if st.status in (LIVE, RESYNCING, STALE):
                set_status(self, st, STALE, SIDECAR_STOPPED)
            elif st.status == PENDING:
                set_status(self, st, PENDING, SIDECAR_STOPPED)
        self._unsettled.clear()
        self._reseed.clear()
        for conn in list(self.conns.values()):
            self._actions.append(Close(conn.id, "shutdown"))
        self.conns.clear()

    def take_actions(self) -> list[Action]:
        if self._reseed:  # one batch for every resync of this step
            tokens = self.tokens
            self._request_rest(t for t in self._reseed if t in tokens and tokens[t].status == RESYNCING)
            self._reseed.clear()
        out, self._actions = self._actions, []
        return out

    def take_writes(self, now: float, wall_ms: int) -> list[QuoteWrite]:
        """Quote writes for everything that changed since the last call; bumps seq per change."""
        out = self._final
        self._final = []
        epoch = self.epoch
        for token in self.dirty:
            st = self.tokens.get(token)
            if st is None:
                continue
            st.seq += 1
            st.last_touch_write = now
            out.append(
                QuoteWrite(
                    token,
                    st.fields(epoch),
                    True,
                    persist=st.fresh,
                    recv_at=st.last_recv,
                    exch_ts=st.ts,
                )
            )
            st.fresh = False
        self.dirty.clear()
        if self._touched and now >= self._next_touch_scan:
            self._next_touch_scan = now + TOUCH_SCAN_S
            keep: set[str] = set()
            for token in self._touched:
                st = self.tokens.get(token)
                if st is None or st.updated_at is None:
                    continue
                if now - st.last_touch_write < TOUCH_INTERVAL_S:
                    keep.add(token)  # refresh later, at most once a second
                    continue
                st.last_touch_write = now
                # ts too: the hash's ts is the latest event applied, also when only updated_at moves
                refresh = {"updated_at": str(st.updated_at), "ts": "" if st.ts is None else str(st.ts)}
                out.append(QuoteWrite(token, refresh, False))
            self._touched = keep
        return out

    def no_data_count(self) -> int:
        return sum(1 for st in self.tokens.values() if st.reason == NO_DATA)

    def counts(self) -> Counter[str]:
        return Counter(st.status for st in self.tokens.values())

    def summary(self, wall_ms: int, version: str, counts: Counter[str] | None = None) -> dict[str, str]:
        """``counts`` (from :meth:`counts`) may be passed in so one pass over the tokens serves all."""
        if counts is None:
            counts = self.counts()
        desired = len(self.tokens)
        healthy = counts[LIVE] + counts[RESOLVED]
        up = sum(
            1
            for shard in self.shards
            if shard.conn_id is not None
            and (c := self.conns.get(shard.conn_id)) is not None
            and c.state == OPEN
        )
        return {
            "epoch": self.epoch,
            "version": version,
            "started_at": str(self.started_ms),
            "heartbeat_at": str(wall_ms),
            "desired": str(desired),
            "live": str(counts[LIVE]),
            "pending": str(counts[PENDING]),
            "stale": str(counts[STALE]),
            "resyncing": str(counts[RESYNCING]),
            "resolved": str(counts[RESOLVED]),
            "connections": str(len(self.shards)),
            "connections_up": str(up),
            "quote_health": f"{(healthy / desired) if desired else 1.0:.4f}",
            "invalid_desired": str(self.invalid_desired),
            "capped_desired": str(self.capped_desired),
        }

    def quote_health(self, counts: Counter[str] | None = None) -> float:
        if not self.tokens:
            return 1.0
        if counts is None:
            counts = self.counts()
        return (counts[LIVE] + counts[RESOLVED]) / len(self.tokens)

    def socket_ages(self, now: float) -> dict[int, float]:
        """Seconds since the last market data, per shard with an open socket."""
        out = {}
        for shard in self.shards:
            conn = self.conns.get(shard.conn_id) if shard.conn_id is not None else None
            if conn is not None and conn.state == OPEN:
                out[shard.id] = now - conn.last_data_at
        return out

    def oldest_live_age(self, wall_ms: int) -> float:
        """Seconds since the exchange last confirmed the oldest live quote."""
        oldest = 0
        for st in self.tokens.values():
            if st.status == LIVE and st.updated_at is not None:
                oldest = max(oldest, wall_ms - st.updated_at)
        return oldest / 1000.0

    def connection_states(self) -> Counter[str]:
        return Counter(("retiring" if c.close_reason else c.state) for c in self.conns.values())


__all__ = [
    "BUY",
    "Action",
    "Close",
    "Engine",
    "EngineConfig",
    "Open",
    "QuoteWrite",
    "RestFetch",
    "Send",
]
