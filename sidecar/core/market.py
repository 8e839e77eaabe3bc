"""Market data: a socket's frames applied to the books of the tokens it carries.

A frame is parsed once into typed events (sidecar/core/events.py) and each is dispatched on its
type. Only events for the socket's own tokens count as its data (they feed its silence norm and
answer a probe); anything else is counted as filtered. A book snapshot makes a token ``live``; a
level change is published only while the book is trusted and agrees with the exchange's stated
top (see sidecar/core/resync.py). Bad input is counted, logged (rate-limited) and skipped; it
never costs the rest of the frame.
"""

from __future__ import annotations

from sidecar.core import crosscheck, events, health, lifecycle, resync, sockets
from sidecar.core.context import Context
from sidecar.core.events import LevelChanges
from sidecar.core.protocol import BadEntry, Control, LevelChange
from sidecar.core.quote import TokenState
from sidecar.core.shards import Conn
from sidecar.core.stats import Stat
from sidecar.core.status import LIVE, LOST, MARKET_RESOLVED, RESOLVED, RESYNCING, WON, set_status

_PRICE_CHANGE = (Stat.EVENTS, events.PRICE_CHANGE)  # the hot path's counter key, built once
_DATA_FRAMES = (Stat.FRAMES, "data")


def on_frame(ctx: Context, conn_id: int, data: bytes | str, now: float, wall_ms: int) -> None:
    """Apply one frame. Never raises: bad input is counted and the rest of the frame applied."""
    conn = ctx.conns.get(conn_id)
    if conn is None:
        ctx.stats[Stat.FRAMES, "orphan"] += 1
        return
    frame = events.parse_frame(data)
    if not isinstance(frame, list):
        _on_other_frame(ctx, conn, frame, now)
        return
    shard = ctx.shards.shards.get(conn.shard_id)
    if shard is None or shard.conn_id != conn_id:
        ctx.stats[Stat.FRAMES, "replaced_socket"] += 1
        return
    ctx.stats[_DATA_FRAMES] += 1
    conn.last_pong_at = now  # any JSON frame proves the connection is up (not that it has data)
    ctx.frame_deltas = False
    ctx.frame_own = 0
    for event in frame:
        try:
            if type(event) is LevelChanges:  # the hot path: most events are level changes
                ctx.stats[_PRICE_CHANGE] += 1
                _on_level_changes(ctx, conn, event, now, wall_ms)
            else:
                _apply(ctx, conn, event, now, wall_ms)
        except Exception as exc:  # hostile input must never kill the socket
            ctx.stats[Stat.PARSE_ERRORS, "unexpected"] += 1
            ctx.rlog.error("event:unexpected", now, "unexpected error applying event: %r", exc, exc_info=True)
    if ctx.frame_own:
        gap = now - conn.last_data_at
        if conn.data_seen and ctx.frame_deltas:
            # Snapshot bursts (a split initial dump) say nothing about the usual event rate.
            conn.gap_ewma = health.update_gap(conn.gap_ewma, gap)
        conn.last_data_at = now
        conn.data_seen = True
        if conn.probe_token is not None:
            conn.probe_token = None
            conn.quiet_mult = min(conn.quiet_mult * 2.0, 64.0)
            ctx.stats[Stat.PROBES, "ok"] += 1
        elif gap < ctx.cfg.silence_min_s:
            conn.quiet_mult = 1.0
        if shard.retiring:
            sockets.retire_done(ctx, shard, now, force=True)


def _on_other_frame(ctx: Context, conn: Conn, frame: Control | events.BadFrame, now: float) -> None:
    """A control text (PONG...) or a frame that is not readable JSON."""
    if isinstance(frame, events.BadFrame):
        ctx.stats[Stat.PARSE_ERRORS, frame.reason] += 1
        ctx.rlog.warning(
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
    ctx.stats[Stat.CONTROL, label] += 1
    if label == "PONG":
        conn.last_pong_at = now
    elif label != "NO NEW ASSETS":
        ctx.rlog.warning(
            f"control:{label}", now, "control text on socket %d: %r", conn.id, frame.text, conn=conn.id
        )


def _token_event(
    ctx: Context, conn: Conn, asset: str | None, now: float, delta: bool = True
) -> TokenState | None:
    """The token an event is about, if it is ours and on this socket; counts everything else."""
    st = ctx.tokens.get(asset) if asset is not None else None
    if st is None or st.shard_id != conn.shard_id:
        ctx.stats[Stat.EVENTS, "filtered"] += 1
        return None
    # Only events for the socket's own tokens prove it still delivers market data: broadcasts
    # (new_market, market_resolved for the whole venue) and other assets' entries keep coming
    # from a socket that has stopped sending its own books.
    ctx.frame_own += 1
    if delta:
        ctx.frame_deltas = True
    if st.events:
        st.event_gap = health.update_gap(st.event_gap, now - st.last_event_at)
    st.events += 1
    st.last_event_at = now
    return st


def _apply(ctx: Context, conn: Conn, event: events.Event, now: float, wall_ms: int) -> None:
    match event:
        case events.Book():
            ctx.stats[Stat.EVENTS, events.BOOK] += 1
            _on_book(ctx, conn, event, now, wall_ms)
        case events.LevelChanges():
            ctx.stats[_PRICE_CHANGE] += 1
            _on_level_changes(ctx, conn, event, now, wall_ms)
        case events.BestBidAsk():
            ctx.stats[Stat.EVENTS, events.BEST_BID_ASK] += 1
            _on_best_bid_ask(ctx, conn, event, now, wall_ms)
        case events.Trade():
            ctx.stats[Stat.EVENTS, events.TRADE] += 1
            _on_trade(ctx, conn, event, now)
        case events.TickSizeChange():
            ctx.stats[Stat.EVENTS, events.TICK_SIZE_CHANGE] += 1
            _on_tick_size(ctx, conn, event, now)
        case events.Resolution():
            ctx.stats[Stat.EVENTS, events.RESOLVED] += 1
            _on_resolved(ctx, conn, event, now)
        case events.Broadcast():
            ctx.stats[Stat.EVENTS, event.kind] += 1  # a venue-wide broadcast: not this socket's data
        case events.Unknown():
            ctx.stats[Stat.EVENTS, events.UNKNOWN] += 1
            ctx.rlog.info(f"unknown:{event.kind}", now, "unknown event_type %r skipped", event.kind)
        case events.BadEvent():
            _on_bad_event(ctx, conn, event, now)


def _on_bad_event(ctx: Context, conn: Conn, event: events.BadEvent, now: float) -> None:
    """An event that cannot be applied: counted like the kind it is, its token (if ours) seen."""
    if event.kind:
        ctx.stats[Stat.EVENTS, event.kind] += 1
    if event.reason == "unexpected":
        ctx.stats[Stat.PARSE_ERRORS, "unexpected"] += 1
        ctx.rlog.error(
            "event:unexpected", now, "unexpected error applying event: %r", event.error, exc_info=event.error
        )
        return
    if event.kind == events.PRICE_CHANGE:
        # No recognisable entries: whose book it was is unknown, so every one of the market's.
        resync.distrust(ctx, _market_tokens(ctx, conn, event.market), now)
    elif event.kind and _token_event(ctx, conn, event.asset_id, now, event.kind != events.BOOK) is None:
        return  # another socket's asset, or no one's: filtered, not our error
    ctx.stats[Stat.PARSE_ERRORS, event.reason] += 1
    ctx.rlog.warning(
        f"event:{event.reason}",
        now,
        "skipping bad event on socket %d: %s",
        conn.id,
        f"{event.reason}: {event.detail}" if event.detail else event.reason,
        conn=conn.id,
        reason=event.reason,
    )


def _on_book(ctx: Context, conn: Conn, event: events.Book, now: float, wall_ms: int) -> None:
    st = _token_event(ctx, conn, event.asset_id, now, delta=False)
    if st is None:
        return
    if not st.confirmed:
        # Only a snapshot confirms a subscription: deltas alone can never make a quote.
        st.confirmed = True
        if st.sub_sent_at is not None:
            ctx.confirm_latencies.append(now - st.sub_sent_at)
        st.redrives = 0
    st.book.replace(event.bids, event.asks)
    st.shown = st.book.top()  # a snapshot makes prices, also for a resolved token
    if event.ts is not None:
        st.ts = event.ts
    if event.market is not None:
        st.market = event.market
    lifecycle.take_reference(st, event.tick_size, event.min_order_size, event.neg_risk, tick_if_unknown=False)
    if not event.bids and not event.asks:
        lifecycle.book_empty(ctx, st, now)  # near resolution: ask about its market now
    if st.status != RESOLVED:  # a resolved token's books update its prices, never its status
        set_status(ctx, st, LIVE, "")
    st.resync_deadline = None
    st.source = "book"
    st.updated_at = wall_ms
    st.last_recv = now
    st.last_quiet_check = now
    if st.book.crossed:
        ctx.stats[Stat.CROSSED_BOOKS, ""] += 1
    ctx.dirty.add(st.token)


def _on_level_changes(ctx: Context, conn: Conn, event: LevelChanges, now: float, wall_ms: int) -> None:
    """Apply each entry on its own; a token with an entry that cannot be applied is resynced."""
    market = event.market
    ts = event.ts
    last: dict[str, LevelChange] = {}
    changed: dict[str, bool] = {}
    bad: list[TokenState] = []
    for ch in event.entries:
        if isinstance(ch, BadEntry):
            bad += _bad_entry(ctx, conn, ch, market, now)
            continue
        st = _token_event(ctx, conn, ch.asset_id, now)
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
        resync.distrust(ctx, bad, now)  # no longer live: nothing below publishes or confirms them
    for token, moved in changed.items():
        st = ctx.tokens[token]
        st.last_recv = now
        ch = last[token]
        if not resync.judge(ctx, st, ch.best_bid, ch.best_ask, now):
            continue  # not live, or its top is not (yet) the exchange's: publish nothing
        st.updated_at = wall_ms
        st.last_quiet_check = now
        if moved:
            st.source = "price_change"
            ctx.dirty.add(token)
        else:
            ctx.touched.add(token)


def _bad_entry(ctx: Context, conn: Conn, entry: BadEntry, market: str | None, now: float) -> list[TokenState]:
    """Count a price_change entry that cannot be applied; the tokens whose book it leaves wrong."""
    if entry.asset_id is None:
        suspects = _market_tokens(ctx, conn, market)
    else:
        st = _token_event(ctx, conn, entry.asset_id, now)
        if st is None:
            return []  # another socket's asset, or no one's: filtered, not our error
        suspects = [st]
    ctx.stats[Stat.PARSE_ERRORS, entry.reason] += 1
    ctx.rlog.warning(
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


def _market_tokens(ctx: Context, conn: Conn, market: str | None) -> list[TokenState]:
    """This socket's tokens of one market: the books an unattributable bad entry may be about."""
    if market is None:
        return []
    return [st for t in conn.subscribed if (st := ctx.tokens[t]).market == market]


def _on_best_bid_ask(ctx: Context, conn: Conn, event: events.BestBidAsk, now: float, wall_ms: int) -> None:
    st = _token_event(ctx, conn, event.asset_id, now)
    if st is None:
        return
    was_live = st.status == LIVE
    # A best_bid_ask carries nothing but its claim: without a readable one it confirms nothing.
    consistent = resync.judge(ctx, st, event.best_bid, event.best_ask, now)
    if consistent and crosscheck.states_top(event.best_bid, event.best_ask):
        st.updated_at = wall_ms
        st.last_quiet_check = now
        if was_live:
            ctx.touched.add(st.token)


def _on_trade(ctx: Context, conn: Conn, event: events.Trade, now: float) -> None:
    st = _token_event(ctx, conn, event.asset_id, now)
    if st is None:
        return
    st.last_trade_price = event.price
    st.last_trade_size = event.size
    st.last_trade_side = event.side
    st.last_trade_ts = event.ts
    st.last_recv = now
    ctx.dirty.add(st.token)


def _on_tick_size(ctx: Context, conn: Conn, event: events.TickSizeChange, now: float) -> None:
    st = _token_event(ctx, conn, event.asset_id, now)
    if st is None:
        return
    new_tick = event.new_tick_size
    # Captured traffic has the book a few ms before its tick_size_change: a trusted book that
    # already carries the new tick is on the new grid, so there is nothing to resync.
    reflected = (st.status == LIVE or resync.settling(st)) and crosscheck.same_tick(st.tick_size, new_tick)
    if new_tick is not None:
        st.tick_size = new_tick
    if event.ts is not None:
        st.ts = event.ts
    st.last_recv = now
    if reflected:
        ctx.stats[Stat.TICK_SIZE_CHANGE, "reflected"] += 1
    elif st.status in (LIVE, RESYNCING):
        # A new tick grid is a new book epoch: untrusted until a fresh book. Reseed from REST at
        # once (the next WS book still wins); without REST, redrive at once instead.
        ctx.stats[Stat.TICK_SIZE_CHANGE, "resync"] += 1
        resync.resync(ctx, st, "tick_size_change", now, redrive=not ctx.cfg.rest_enabled)
    ctx.dirty.add(st.token)


def _on_resolved(ctx: Context, conn: Conn, event: events.Resolution, now: float) -> None:
    for asset in event.asset_ids:
        st = _token_event(ctx, conn, asset, now)
        if st is None:
            continue
        winner = event.winner
        reason = MARKET_RESOLVED if winner is None else WON if winner == st.token else LOST
        lifecycle.resolve(ctx, st, reason)
