"""Market lifecycle: markets end, and the sidecar must learn it from more than one source.

The ``market_resolved`` event (sidecar/core/market.py) is reported as often not delivered, so each
desired token's market (its condition id, learned from the ``market`` field of books and events, or
read back from its hash) is also polled over REST: :class:`~sidecar.core.actions.MarketFetch`,
answered by :func:`on_market_states`. Every market comes due every ``SIDECAR_MARKET_POLL_S``,
staggered so they never come due together, and out of turn when a token's book goes empty or REST
``/books`` has no book for it. One request (at most :data:`MARKET_BATCH` markets) is in flight at a
time, so polls follow the shell's shared REST budget instead of queueing past it.

A closed market makes its desired tokens ``resolved`` (``won``/``lost`` when a winner is flagged,
``market_closed`` otherwise); an open one only refreshes reference data. Resolutions are remembered
for the process lifetime (a re-added token starts ``resolved``) and read back from the hashes at
start-up (:func:`restore`): such a token starts ``resolved`` and its market is polled at once; if
that says open, the token goes back through ``pending``. Nothing seen in this run is undone.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from sidecar.core import sockets
from sidecar.core.actions import MarketFetch
from sidecar.core.book import EMPTY_TOP
from sidecar.core.events import Book, MarketState, flag, parse_market_state
from sidecar.core.lifecycle_state import Closed, Saved
from sidecar.core.quote import TokenState
from sidecar.core.stats import Stat
from sidecar.core.status import (
    LOST,
    MARKET_CLOSED,
    PENDING,
    REASONS,
    RESOLVED,
    SUBSCRIBING,
    WON,
    set_status,
    start,
)

if TYPE_CHECKING:
    from sidecar.core.context import Context

MARKET_BATCH = 50  # markets per MarketFetch
MAX_INFLIGHT = 1  # MarketFetch requests in flight at once: polls wait for the REST budget, never pile up
URGENT_MIN_S = 30.0  # a market is polled out of turn (empty book, no REST book) at most this often
RETRY_S = 30.0  # a market whose poll failed or went unanswered is asked again this soon
INFLIGHT_TIMEOUT_S = 300.0  # a request never answered is given up and its markets asked again
SCAN_S = 1.0  # how often the desired tokens' markets are collected and due polls picked
FINAL = (WON, LOST)  # reasons a later answer never changes


def _frac(text: str) -> float:
    """A fixed fraction in [0, 1) per text: staggering without a random stream of its own."""
    return zlib.crc32(text.encode()) / 2**32


# ---- start-up read-back and re-adds ------------------------------------------------------------------


def restore(ctx: Context, saved: Mapping[str, Mapping[str, str]]) -> None:
    """Hashes read back at start-up (token -> fields), before the first desired set: a token saved
    ``resolved`` starts ``resolved`` (same reason) when added, and every token keeps its market
    and reference data until this run learns them again. A saved resolution is taken only when
    this run can confirm it (REST on, market known): otherwise one wrong hash would hold a token
    ``resolved`` for the life of the process while its books arrive."""
    lc = ctx.lifecycle
    for token, fields in saved.items():
        if not isinstance(fields, Mapping):
            continue
        market = fields.get("market") or None
        tick, min_size = fields.get("tick_size") or None, fields.get("min_order_size") or None
        lc.saved[token] = Saved(market, tick, min_size, flag(fields.get("neg_risk")))
        reason = fields.get("reason", "")
        confirmable = ctx.cfg.rest_enabled and market is not None
        if confirmable and fields.get("status") == RESOLVED and reason and REASONS[RESOLVED].allows(reason):
            lc.resolved.setdefault(token, Closed(market, reason, confirmed=False))


def adopt(ctx: Context, st: TokenState, now: float) -> None:
    """A token just added to the desired set: what is known about it from before (the read-back,
    or a resolution earlier in this run) is applied before its first write."""
    lc = ctx.lifecycle
    saved = lc.saved.pop(st.token, None)
    if saved is not None:
        st.market = saved.market
        st.tick_size = saved.tick_size
        st.min_order_size = saved.min_order_size
        st.neg_risk = saved.neg_risk
    closed = lc.resolved.get(st.token)
    if closed is None:
        return
    if st.market is None:
        st.market = closed.market
    start(ctx, st, RESOLVED, closed.reason)
    if not closed.confirmed and st.market is not None:
        _urgent(ctx, st.market, now)


# ---- resolution --------------------------------------------------------------------------------------


def resolve(ctx: Context, st: TokenState, reason: str) -> None:
    """The exchange says this token's market is over (event or market state). A known winner is
    never replaced by a later answer without one."""
    if st.status == RESOLVED and (st.reason in FINAL or reason not in FINAL):
        reason = st.reason
    set_status(ctx, st, RESOLVED, reason)
    ctx.unsettled.pop(st.token, None)
    ctx.reseed.discard(st.token)
    st.resync_deadline = None
    ctx.lifecycle.resolved[st.token] = Closed(st.market, reason)


def _reason(state: MarketState, token: str) -> str:
    if state.winner is None:
        return MARKET_CLOSED
    return WON if state.winner == token else LOST


def _reopen(ctx: Context, st: TokenState, now: float) -> None:
    """Read back ``resolved``, but the market is open: start over as a new token would (pending,
    no prices), re-subscribed so that a fresh book makes it live."""
    set_status(ctx, st, PENDING, SUBSCRIBING)
    st.shown = EMPTY_TOP
    st.confirmed = False
    st.redrives = 0
    st.moves = 0
    ctx.rlog.warning(
        "market_open",
        now,
        "token %s was read back resolved but its market %s is open: subscribing again",
        st.token,
        st.market,
        token=st.token,
    )
    sockets.redrive(ctx, [st.token], "market_open", now)


# ---- reference data ----------------------------------------------------------------------------------


def take_reference(
    st: TokenState,
    tick_size: str | None,
    min_order_size: str | None,
    neg_risk: bool | None,
    tick_if_unknown: bool,
) -> bool:
    """Store what the exchange says about the token's market; True when a field changed.
    ``tick_if_unknown``: a source less current than the token's own stream (a market-wide answer,
    a REST summary) only fills a tick size not known yet."""
    changed = False
    if tick_size is not None and tick_size != st.tick_size and (st.tick_size is None or not tick_if_unknown):
        st.tick_size = tick_size
        changed = True
    if min_order_size is not None and min_order_size != st.min_order_size:
        st.min_order_size = min_order_size
        changed = True
    if neg_risk is not None and neg_risk != st.neg_risk:
        st.neg_risk = neg_risk
        changed = True
    return changed


def rest_reference(ctx: Context, st: TokenState, book: Book) -> None:
    """A REST book summary's reference data (its tick only while none is known)."""
    if book.market is not None and st.market is None:
        st.market = book.market
    if take_reference(st, book.tick_size, book.min_order_size, book.neg_risk, tick_if_unknown=True):
        ctx.dirty.add(st.token)


# ---- polls -------------------------------------------------------------------------------------------


def _urgent(ctx: Context, market: str, now: float) -> None:
    lc = ctx.lifecycle
    if market in lc.asked or market in lc.done or market in lc.urgent:
        return
    if now - lc.last_urgent.get(market, -URGENT_MIN_S) < URGENT_MIN_S:
        return
    lc.last_urgent[market] = now
    lc.urgent[market] = None


def book_empty(ctx: Context, st: TokenState, now: float) -> None:
    """Both sides of the token's book are empty (near resolution): ask about its market now."""
    if ctx.cfg.rest_enabled and st.market is not None:
        _urgent(ctx, st.market, now)


def no_books(ctx: Context, tokens: Iterable[str], now: float) -> None:
    """REST ``/books`` answered without a book for these tokens: ask about their markets now."""
    for token in tokens:
        st = ctx.tokens.get(token)
        if st is not None and st.market is not None:
            _urgent(ctx, st.market, now)


def tick(ctx: Context, now: float) -> None:
    """Collect the desired tokens' markets (once a second) and send the polls that are due."""
    if not ctx.cfg.rest_enabled:
        return
    lc = ctx.lifecycle
    if now >= lc.next_scan:
        lc.next_scan = now + SCAN_S
        _scan(ctx, now)
    if len(lc.inflight) < MAX_INFLIGHT and (lc.urgent or lc.ready):
        _send(ctx, now)


def _scan(ctx: Context, now: float) -> None:
    lc = ctx.lifecycle
    poll_s = ctx.cfg.market_poll_s
    present: set[str] = set()
    for st in ctx.tokens.values():
        market = st.market
        if market is None:
            continue
        present.add(market)
        if st.status == RESOLVED:
            closed = lc.resolved.get(st.token)
            if closed is not None and not closed.confirmed:
                _urgent(ctx, market, now)  # read back, not confirmed yet (market learned late)
    for market in present:
        if market not in lc.due and market not in lc.done:
            lc.due[market] = now + poll_s * _frac(market)  # the first poll: anywhere in one period
    for market in [m for m in lc.due if m not in present]:
        del lc.due[market]
        lc.polls.pop(market, None)
        lc.last_urgent.pop(market, None)
    for request_id, (sent_at, markets) in list(lc.inflight.items()):
        if now - sent_at >= INFLIGHT_TIMEOUT_S:
            del lc.inflight[request_id]
            lc.asked.difference_update(markets)
            ctx.stats[Stat.MARKET_POLLS, "error"] += len(markets)
    due = lc.due
    lc.ready = sorted((m for m, at in due.items() if at <= now and m not in lc.asked), key=due.__getitem__)


def _send(ctx: Context, now: float) -> None:
    lc = ctx.lifecycle
    batch: list[str] = []
    for market in list(lc.urgent):
        if len(batch) == MARKET_BATCH:
            break
        del lc.urgent[market]
        if market not in lc.asked:
            batch.append(market)
    taken = set(batch)
    while lc.ready and len(batch) < MARKET_BATCH:
        market = lc.ready.pop(0)
        if market in lc.due and market not in lc.asked and market not in taken:
            batch.append(market)
            taken.add(market)
    if not batch:
        return
    request_id = ctx.next_request_id
    ctx.next_request_id += 1
    lc.inflight[request_id] = (now, batch)
    lc.asked.update(batch)
    ctx.actions.append(MarketFetch(request_id, batch))


def on_market_states(
    ctx: Context, request_id: int, markets: Mapping[str, object | None] | None, now: float, wall_ms: int
) -> None:
    """Answers to a MarketFetch: condition id -> market object (None: 404), or None when the
    request failed (asked again in RETRY_S)."""
    lc = ctx.lifecycle
    entry = lc.inflight.pop(request_id, None)
    if entry is None:
        return  # given up on already (INFLIGHT_TIMEOUT_S), or not ours
    asked = entry[1]
    lc.asked.difference_update(asked)
    if not isinstance(markets, Mapping):
        ctx.stats[Stat.MARKET_POLLS, "error"] += len(asked)
        for market in asked:
            if market in lc.due:
                lc.due[market] = now + RETRY_S
        return
    wanted = set(asked)
    by_market: dict[str, list[TokenState]] = {}
    for st in ctx.tokens.values():
        if st.market in wanted:
            by_market.setdefault(st.market, []).append(st)
    for market in asked:
        if market not in markets:
            ctx.stats[Stat.MARKET_POLLS, "error"] += 1
            if market in lc.due:
                lc.due[market] = now + RETRY_S
            continue
        state = parse_market_state(market, markets[market])
        _schedule(ctx, market, state, now)
        if state is None:
            ctx.stats[Stat.MARKET_POLLS, "unknown"] += 1  # 404, or nothing we can judge
            continue
        ctx.stats[Stat.MARKET_POLLS, "closed" if state.closed else "open"] += 1
        _apply(ctx, state, by_market.get(market, []), now)


def _schedule(ctx: Context, market: str, state: MarketState | None, now: float) -> None:
    """The next poll: within one period (jittered per answer), never again once the winner is known."""
    lc = ctx.lifecycle
    if state is not None and state.closed and state.winner is not None:
        lc.done.add(market)
        lc.due.pop(market, None)
        return
    n = lc.polls[market] = lc.polls.get(market, 0) + 1
    if market in lc.due:
        lc.due[market] = now + ctx.cfg.market_poll_s * (0.75 + 0.25 * _frac(f"{market}:{n}"))


def _unconfirmed(closed: Closed | None) -> bool:
    return closed is not None and not closed.confirmed


def _apply(ctx: Context, state: MarketState, sts: list[TokenState], now: float) -> None:
    lc = ctx.lifecycle
    for st in sts:
        if take_reference(st, state.tick_size, state.min_order_size, state.neg_risk, tick_if_unknown=True):
            ctx.dirty.add(st.token)
        if state.closed:
            resolve(ctx, st, _reason(state, st.token))
        elif st.status == RESOLVED and _unconfirmed(lc.resolved.get(st.token)):
            del lc.resolved[st.token]
            _reopen(ctx, st, now)
    for token in state.tokens:  # its other tokens, for a later add of one of them
        closed = lc.resolved.get(token)
        if state.closed and (closed is None or closed.reason not in FINAL):
            lc.resolved[token] = Closed(state.market, _reason(state, token))
        elif not state.closed and closed is not None and not closed.confirmed:
            del lc.resolved[token]
