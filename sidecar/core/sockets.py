"""Sockets and subscriptions: each shard's socket, opened paced and backed off, subscribed to
exactly the shard's tokens in frames of at most 100 ids.

A lost socket makes its tokens ``stale`` at once and the shard reconnects with full-jitter backoff
(a 429 pauses every socket; while the venue is down, one probe socket on a shared backoff,
see venue.py). A socket judged useless is replaced make-before-break: the new one
takes the shard at once, the old one is closed when the new one delivers (or after a grace).
"""

from __future__ import annotations

import logging

from sidecar.core import health, protocol
from sidecar.core.actions import Close, Open, Send
from sidecar.core.context import Context
from sidecar.core.shards import CONNECTING, OPEN, Conn, Shard, chunks
from sidecar.core.stats import Stat
from sidecar.core.status import LIVE, PENDING, RESYNCING, STALE, VENUE_DOWN, set_status

log = logging.getLogger("sidecar.core.engine")

MAX_IDS_PER_FRAME = 100
RETIRE_GRACE_S = 10.0  # how long a replaced socket may linger before it is closed anyway


# ---- subscriptions ---------------------------------------------------------------------------------


def sync_shard(ctx: Context, shard_id: int, now: float) -> None:
    """Make the shard's socket subscriptions equal its token set, in ≤100-id frames."""
    shard = ctx.shards.shards.get(shard_id)
    if shard is None:
        return
    if not shard.tokens:
        _close_shard(ctx, shard)
        return
    conn = ctx.conns.get(shard.conn_id) if shard.conn_id is not None else None
    if conn is None:
        if shard.id not in ctx.open_queue:
            ctx.open_queue.append(shard.id)
        return
    if conn.state != OPEN:
        return
    gone = conn.subscribed - shard.tokens
    if gone:
        conn.subscribed -= gone
        for part in chunks(sorted(gone), MAX_IDS_PER_FRAME):
            ctx.actions.append(Send(conn.id, protocol.subscribe_op("unsubscribe", part)))
        if conn.probe_token in gone:
            conn.probe_token = None
    new = sorted(shard.tokens - conn.subscribed)
    if new:
        _subscribe(ctx, conn, new, now)
    if gone or (new and conn.data_seen):
        log.info(
            "socket %d: +%d -%d subscriptions, %d tokens", conn.id, len(new), len(gone), len(shard.tokens)
        )


def _subscribe(ctx: Context, conn: Conn, tokens: list[str], now: float) -> None:
    for part in chunks(tokens, MAX_IDS_PER_FRAME):
        if not conn.first_sent:
            text = protocol.subscribe_first(part)
            conn.first_sent = True
            conn.last_ping_at = now  # PING only after the subscription frame
        else:
            text = protocol.subscribe_op("subscribe", part)
        ctx.actions.append(Send(conn.id, text))
    conn.subscribed.update(tokens)
    for token in tokens:
        st = ctx.tokens[token]
        st.sub_sent_at = now
        st.confirmed = False
    ctx.stats[Stat.SUBSCRIBES, ""] += len(tokens)


def redrive(ctx: Context, tokens: list[str], reason: str, now: float) -> None:
    """Unsubscribe + subscribe again on the owning socket: the server then sends a fresh book."""
    by_conn: dict[int, list[str]] = {}
    for token in tokens:
        st = ctx.tokens.get(token)
        if st is None:
            continue
        shard = ctx.shards.shards.get(st.shard_id)
        conn = ctx.conns.get(shard.conn_id) if shard and shard.conn_id is not None else None
        if conn is None or conn.state != OPEN or token not in conn.subscribed:
            continue
        by_conn.setdefault(conn.id, []).append(token)
        ctx.stats[Stat.REDRIVES, reason] += 1
    for conn_id, toks in by_conn.items():
        conn = ctx.conns[conn_id]
        toks.sort()
        for part in chunks(toks, MAX_IDS_PER_FRAME):
            ctx.actions.append(Send(conn_id, protocol.subscribe_op("unsubscribe", part)))
        conn.subscribed.difference_update(toks)
        _subscribe(ctx, conn, toks, now)


# ---- socket lifecycle ------------------------------------------------------------------------------


def pump_opens(ctx: Context, now: float) -> None:
    """Open queued shards' sockets, paced and backed off, never in a storm (while the venue is
    down: one probe socket at a time, on the venue's shared backoff)."""
    if not ctx.open_queue:
        return
    venue = ctx.venue
    if venue.down:
        if (venue.probe_conn is None or venue.probe_conn not in ctx.conns) and now >= venue.next_probe_at:
            shard = _next_queued(ctx, now, backoff=False)
            if shard is not None:
                venue.probe_conn = _open(ctx, shard, now)
        return
    if now < ctx.pause_until or now < ctx.next_open_at:
        return
    while (shard := _next_queued(ctx, now, backoff=True)) is not None:
        _open(ctx, shard, now)
        if ctx.cfg.connect_spacing_s > 0:
            return


def _next_queued(ctx: Context, now: float, backoff: bool) -> Shard | None:
    """The first queued shard that needs a socket (and, with ``backoff``, whose wait is over)."""
    for _ in range(len(ctx.open_queue)):
        shard_id = ctx.open_queue.popleft()
        shard = ctx.shards.shards.get(shard_id)
        if shard is None or not shard.tokens or shard.conn_id is not None:
            continue
        if backoff and now < shard.next_attempt_at:
            ctx.open_queue.append(shard_id)
            continue
        return shard
    return None


def _open(ctx: Context, shard: Shard, now: float) -> int:
    conn = Conn(ctx.next_conn_id, shard.id)
    ctx.next_conn_id += 1
    ctx.conns[conn.id] = conn
    shard.conn_id = conn.id
    ctx.actions.append(Open(conn.id, shard.id))
    ctx.next_open_at = now + ctx.cfg.connect_spacing_s
    return conn.id


def on_open(ctx: Context, conn_id: int, now: float) -> None:
    conn = ctx.conns.get(conn_id)
    if conn is None or conn.state != CONNECTING:
        return
    conn.state = OPEN
    conn.opened_at = now
    conn.last_data_at = conn.last_pong_at = conn.last_ping_at = now
    ctx.stats[Stat.CONNECTS, ""] += 1
    shard = ctx.shards.shards.get(conn.shard_id)
    if shard is None or shard.conn_id != conn_id or not shard.tokens:
        request_close(ctx, conn, "unneeded")
        return
    log.info("socket %d (shard %d) connected: subscribing %d tokens", conn_id, shard.id, len(shard.tokens))
    sync_shard(ctx, shard.id, now)


def on_connect_failed(ctx: Context, conn_id: int, reason: str, now: float, status: int | None) -> None:
    conn = ctx.conns.pop(conn_id, None)
    if conn is None:
        return
    ctx.stats[Stat.CONNECT_FAILURES, reason] += 1
    shard = ctx.shards.shards.get(conn.shard_id)
    if shard is None or shard.conn_id != conn_id:
        return
    shard.conn_id = None
    venue = ctx.venue
    venue.shard_failed(shard.id, now)
    if venue.down:
        venue.refused += 1
        if conn_id == venue.probe_conn:
            delay = venue.probe_failed(ctx.rng, now, ctx.cfg.backoff_min_s, ctx.cfg.backoff_max_s)
        else:  # a socket still connecting when the venue went down: it is not the probe
            delay = max(0.0, venue.next_probe_at - now)
    else:
        shard.attempts += 1
        delay = health.full_jitter(ctx.rng, shard.attempts, ctx.cfg.backoff_min_s, ctx.cfg.backoff_max_s)
        shard.next_attempt_at = now + delay
        if status == 429:
            # Throttled: every socket waits, not just this one.
            ctx.pause_until = max(ctx.pause_until, now + delay)
    ctx.rlog.warning(
        f"connect_fail:{reason}",
        now,
        "socket for shard %d failed to connect (%s); retry in %.1fs",
        shard.id,
        reason,
        delay,
        reason=f"connect_{reason}",
    )
    sync_shard(ctx, shard.id, now)


def on_closed(ctx: Context, conn_id: int, reason: str, now: float) -> None:
    conn = ctx.conns.get(conn_id)
    if conn is None:
        return
    if conn.close_reason:  # we asked for it and already dealt with the consequences
        ctx.conns.pop(conn_id, None)
        return
    lose_conn(ctx, conn, reason, now)


def lose_conn(ctx: Context, conn: Conn, reason: str, now: float) -> None:
    """A socket is gone (or judged useless): its tokens go stale now, the shard reconnects."""
    ctx.conns.pop(conn.id, None)
    ctx.stats[Stat.RECONNECTS, reason] += 1
    shard = ctx.shards.shards.get(conn.shard_id)
    if shard is None:
        return
    shard.retiring.discard(conn.id)
    if shard.conn_id != conn.id:
        return
    shard.conn_id = None
    venue = ctx.venue
    venue.shard_failed(shard.id, now)
    if conn.data_seen:
        shard.attempts = 0
    shard.attempts += 1
    delay = health.full_jitter(ctx.rng, shard.attempts, ctx.cfg.backoff_min_s, ctx.cfg.backoff_max_s)
    shard.next_attempt_at = now + delay
    if venue.down:  # the probe opened and closed again: the venue is still down, said once
        if conn.id == venue.probe_conn:
            venue.probe_failed(ctx.rng, now, ctx.cfg.backoff_min_s, ctx.cfg.backoff_max_s)
        _stale_shard(ctx, shard, VENUE_DOWN)
        ctx.rlog.warning(f"probe_lost:{reason}", now, "probe socket %d lost: %s", conn.id, reason)
        sync_shard(ctx, shard.id, now)
        return
    _stale_shard(ctx, shard, f"connection_{reason}")
    log.warning(
        "socket %d (shard %d, %d tokens) lost: %s; reconnect in %.2fs",
        conn.id,
        shard.id,
        len(shard.tokens),
        reason,
        delay,
        extra={"conn": conn.id, "reason": f"connection_{reason}"},
    )
    sync_shard(ctx, shard.id, now)


def _stale_shard(ctx: Context, shard: Shard, reason: str) -> None:
    for token in shard.tokens:
        st = ctx.tokens[token]
        if st.status in (LIVE, RESYNCING):
            set_status(ctx, st, STALE, reason)
        elif st.status == PENDING or st.status == STALE:
            set_status(ctx, st, st.status, reason)
        st.confirmed = False
        st.sub_sent_at = None


def request_close(ctx: Context, conn: Conn, reason: str) -> None:
    if conn.close_reason:
        return
    conn.close_reason = reason
    ctx.actions.append(Close(conn.id, reason))


def replace(ctx: Context, conn: Conn, reason: str, now: float) -> None:
    """Make-before-break: a new socket takes the shard now; the old one is closed once the new
    one delivers (or after a grace), so there is never a moment with no socket at all."""
    shard = ctx.shards.shards.get(conn.shard_id)
    ctx.stats[Stat.RECONNECTS, reason] += 1
    log.warning(
        "socket %d (shard %s) judged %s; replacing it",
        conn.id,
        conn.shard_id,
        reason,
        extra={"conn": conn.id, "reason": reason},
    )
    if shard is None or shard.conn_id != conn.id:
        request_close(ctx, conn, reason)
        return
    conn.close_reason = reason  # its later close is expected
    shard.retiring.add(conn.id)
    shard.conn_id = None
    _stale_shard(ctx, shard, reason)
    shard.next_attempt_at = now
    ctx.open_queue.appendleft(shard.id)
    conn.retire_at = now + RETIRE_GRACE_S


def retire_done(ctx: Context, shard: Shard, now: float, force: bool = False) -> None:
    """Close the shard's replaced sockets whose grace is over (all of them with ``force``)."""
    for conn_id in list(shard.retiring):
        old = ctx.conns.get(conn_id)
        if old is None:
            shard.retiring.discard(conn_id)
            continue
        if force or now >= old.retire_at:
            shard.retiring.discard(conn_id)
            ctx.conns.pop(conn_id, None)
            ctx.actions.append(Close(conn_id, old.close_reason or "replaced"))


def _close_shard(ctx: Context, shard: Shard) -> None:
    if shard.conn_id is not None:
        conn = ctx.conns.pop(shard.conn_id, None)
        if conn is not None:
            ctx.actions.append(Close(conn.id, "empty"))
    for conn_id in shard.retiring:
        if ctx.conns.pop(conn_id, None) is not None:
            ctx.actions.append(Close(conn_id, "empty"))
    ctx.shards.drop(shard.id)


def close_all(ctx: Context) -> None:
    """Shutdown: every socket closes."""
    for conn in list(ctx.conns.values()):
        ctx.actions.append(Close(conn.id, "shutdown"))
    ctx.conns.clear()
