"""Timers: everything the engine decides because time passed.

Per socket: pings, the PONG timeout, and silence judged on market data (a socket is suspect after
its own norm; overdue tokens stop being vouched for and are redriven as the probe; a probe that
brings nothing means a zombie, replaced). Per token, once a second: a subscription with no first
book is redriven, then moved to a fresh socket, then retried slowly; a resync with no book is
asked again; a stalled busy token is redriven; a quiet live token is re-confirmed over REST.
While the venue is down (venue.py) the per-token ladders are paused.
"""

from __future__ import annotations

import logging

from sidecar.core import confirm, health, resync, sockets
from sidecar.core.actions import Send
from sidecar.core.context import Context
from sidecar.core.quote import TokenState
from sidecar.core.resync import RESYNC_WAIT_S
from sidecar.core.shards import OPEN, Conn
from sidecar.core.stats import Stat
from sidecar.core.status import BBO_SETTLING, LIVE, NO_DATA, PENDING, RESYNCING, STALE, set_status

log = logging.getLogger("sidecar.core.engine")

REDRIVE_SLOW_S = 300.0  # retry period for a token whose redrive and move budget is spent
SLOW_CHECK_S = 1.0  # how often every token's timers are checked


def tick(ctx: Context, now: float) -> None:
    """Pacing, pings, pong and silence checks, confirmation and stall redrives."""
    sockets.pump_opens(ctx, now)
    for conn in list(ctx.conns.values()):
        if conn.state != OPEN or conn.close_reason:
            continue
        shard = ctx.shards.shards.get(conn.shard_id)
        if shard is None or shard.conn_id != conn.id:
            continue
        if conn.first_sent and now - conn.last_ping_at >= ctx.cfg.ping_interval_s:
            conn.last_ping_at = now
            ctx.actions.append(Send(conn.id, "PING"))
        if now - conn.last_pong_at > ctx.cfg.pong_timeout_s:
            sockets.request_close(ctx, conn, "pong_timeout")
            sockets.lose_conn(ctx, conn, "pong_timeout", now)
            continue
        _check_silence(ctx, conn, now)
    for shard in ctx.shards:
        if shard.retiring:
            sockets.retire_done(ctx, shard, now)
    if ctx.unsettled:
        resync.check_unsettled(ctx, now)
    if now - ctx.last_slow_check >= SLOW_CHECK_S:
        ctx.last_slow_check = now
        _check_tokens(ctx, now)


def _check_silence(ctx: Context, conn: Conn, now: float) -> None:
    """A socket is judged on data. Silence past its own norm makes it suspect: tokens overdue
    by their own rate stop being vouched for (stale) and are redriven as the probe, so a
    healthy socket brings them back with fresh books within a round trip; quiet tokens stay
    live and one of them is the probe. A probe that brings nothing means a zombie."""
    if conn.probe_token is not None:
        if now >= conn.probe_deadline:
            ctx.stats[Stat.PROBES, "failed"] += 1
            conn.probe_token = None
            sockets.replace(ctx, conn, "silence", now)
            return
        late = _stale_overdue(ctx, conn, now)  # tokens falling overdue while the probe is out
        if late:
            sockets.redrive(ctx, late, "probe", now)
        return
    threshold = health.silence_threshold(
        conn.gap_ewma, conn.quiet_mult, ctx.cfg.silence_min_s, ctx.cfg.silence_max_s
    )
    if now - conn.last_data_at < threshold:
        return
    watched = [t for t in conn.subscribed if ctx.tokens[t].status in (LIVE, RESYNCING)]
    if not watched:
        return  # nothing there is expected to talk (all pending or resolved)
    suspect = _stale_overdue(ctx, conn, now)
    probe = suspect or [min(watched, key=lambda t: ctx.tokens[t].last_event_at)]
    conn.probe_token = probe[0]
    conn.probe_deadline = now + ctx.cfg.probe_timeout_s
    ctx.stats[Stat.PROBES, "sent"] += 1
    log.info(
        "socket %d silent for %.1fs (threshold %.1fs): %d overdue tokens stale, probing with %d redrives",
        conn.id,
        now - conn.last_data_at,
        threshold,
        len(suspect),
        len(probe),
    )
    sockets.redrive(ctx, probe, "probe", now)


def _stale_overdue(ctx: Context, conn: Conn, now: float) -> list[str]:
    """Live tokens on a suspect socket that are overdue by their own rate: no longer vouched for."""
    lo = ctx.cfg.silence_min_s
    out = []
    for token in conn.subscribed:
        st = ctx.tokens[token]
        if st.status == LIVE and health.overdue(st.event_gap, st.events, now - st.last_event_at, lo):
            set_status(ctx, st, STALE, "silence_suspected")
            out.append(token)
    return out


def _check_tokens(ctx: Context, now: float) -> None:
    redrive: dict[str, list[str]] = {}
    quiet: list[str] = []
    ladders = not ctx.venue.down  # paused while the venue is down: a token is not broken, the venue is
    for st in ctx.tokens.values():
        status = st.status
        if not ladders and status != LIVE:
            continue
        if status == RESYNCING:
            if st.reason == BBO_SETTLING:
                continue  # nothing asked for yet: resync.check_unsettled escalates it
            if st.resync_deadline is not None:
                # No book (or REST reseed) RESYNC_WAIT_S into the resync: ask both again. From
                # here on it is treated like a token with no first event (see below).
                if now >= st.resync_deadline:
                    st.resync_deadline = None
                    st.next_redrive_at = now + RESYNC_WAIT_S * 4
                    redrive.setdefault("resync_timeout", []).append(st.token)
                    ctx.reseed.add(st.token)
            elif now >= st.next_redrive_at:
                # Still no book: every 4x as long, the redrive budget, a move to a fresh socket
                # (a socket that will not re-snapshot a busy token never will, and its deltas
                # make every REST book older), then slow retries; REST is asked again each time.
                st.next_redrive_at = now + RESYNC_WAIT_S * 4
                _unconfirmed(ctx, st, now, redrive)
                ctx.reseed.add(st.token)
        elif status == PENDING or (status == STALE and not st.confirmed):
            if st.sub_sent_at is None:
                continue
            timeout = ctx.cfg.confirm_timeout_s * (2 ** min(st.redrives, 4))
            if st.confirmed or now - st.sub_sent_at < timeout or now < st.next_redrive_at:
                continue
            _unconfirmed(ctx, st, now, redrive)
        elif status == LIVE:
            idle = now - st.last_event_at
            limit = health.stall_threshold(st.event_gap, st.events, ctx.cfg.silence_max_s)
            if limit is not None and idle > limit and now >= st.next_redrive_at:
                conn = ctx.owner_conn(st)
                if conn is not None and now - conn.last_data_at < ctx.cfg.silence_min_s:
                    st.next_redrive_at = now + health.stall_backoff(st.stall_redrives)
                    st.stall_redrives += 1
                    redrive.setdefault("stall", []).append(st.token)
                    continue
            if (
                ctx.cfg.rest_enabled
                and now - st.last_quiet_check >= ctx.cfg.quiet_confirm_s
                and st.token not in ctx.rest_pending
            ):
                quiet.append(st.token)
    for reason, tokens in redrive.items():
        sockets.redrive(ctx, tokens, reason, now)
    for token in quiet:
        ctx.tokens[token].last_quiet_check = now
    confirm.request_rest(ctx, quiet)


def _unconfirmed(ctx: Context, st: TokenState, now: float, redrive: dict[str, list[str]]) -> None:
    """No first event (or, resyncing, no book): redrive a few times (the caller paces them),
    then move to a fresh socket, then keep retrying slowly. A pending token shows each step in
    its reason; a stale or resyncing one keeps its own (why it is not live): the
    no_first_event_* reasons are pending-only."""
    if st.redrives < ctx.cfg.redrive_max:
        st.redrives += 1
        _pending_reason(ctx, st, f"no_first_event_redrive_{st.redrives}")
        reason = "resync_timeout" if st.status == RESYNCING else "confirm_timeout"
        redrive.setdefault(reason, []).append(st.token)
        return
    if st.moves < 1:
        st.moves += 1
        st.redrives = 0
        _pending_reason(ctx, st, "no_first_event_moved")
        _move(ctx, st, now)
        return
    st.next_redrive_at = now + REDRIVE_SLOW_S
    if st.moves == 1:  # the budget just ran out: from now on one retry every REDRIVE_SLOW_S
        st.moves = 2
        _pending_reason(ctx, st, NO_DATA)
        ctx.rlog.warning(
            "no_data",
            now,
            "token %s got no book after redrives and a move; retrying every %ds",
            st.token,
            int(REDRIVE_SLOW_S),
            token=st.token,
            reason=NO_DATA,
        )
    else:
        redrive.setdefault("confirm_retry", []).append(st.token)


def _pending_reason(ctx: Context, st: TokenState, reason: str) -> None:
    if st.status == PENDING:
        set_status(ctx, st, PENDING, reason)


def _move(ctx: Context, st: TokenState, now: float) -> None:
    old = st.shard_id
    ctx.shards.remove(st.token, old)
    shard = ctx.shards.assign(st.token, now, exclude=old, rescue=True)
    st.shard_id = shard.id
    st.sub_sent_at = now  # the confirm clock restarts with the move
    ctx.stats[Stat.MOVES, ""] += 1
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
    sockets.sync_shard(ctx, old, now)
    sockets.sync_shard(ctx, shard.id, now)
