"""REST confirmation: the exchange's own books, fetched over REST, for what the socket cannot say.

Two uses. A live token that has been quiet for ``SIDECAR_QUIET_CONFIRM_S`` has its top re-confirmed
(same top: ``updated_at`` moves; different and not older than the stream: the REST book is applied
and the token redriven). A ``resyncing`` token is reseeded: a REST book not older than the latest
event applied, and not crossed, makes it ``live`` again at once.
"""

from __future__ import annotations

from collections.abc import Iterable

from sidecar.core import crosscheck, events, lifecycle, resync, sockets
from sidecar.core.actions import RestFetch
from sidecar.core.context import Context
from sidecar.core.quote import TokenState
from sidecar.core.shards import chunks
from sidecar.core.stats import Stat
from sidecar.core.status import LIVE, RESYNCING, set_status

REST_BATCH = 500


def request_rest(ctx: Context, tokens: Iterable[str]) -> None:
    """Fetch these tokens' books over REST now, in requests of at most REST_BATCH, skipping any
    already in flight. The one way REST is asked: quiet-token confirmations and reseeds of
    tokens whose book is no longer known right (the shell's client enforces the rate budget)."""
    if not ctx.cfg.rest_enabled:
        return
    wanted = sorted({t for t in tokens if t not in ctx.rest_pending})
    for part in chunks(wanted, REST_BATCH):
        request_id = ctx.next_request_id
        ctx.next_request_id += 1
        ctx.rest_inflight[request_id] = part
        ctx.rest_pending.update(part)
        ctx.actions.append(RestFetch(request_id, part))


def request_reseeds(ctx: Context) -> None:
    """One REST request for every resync of this step (tokens still resyncing)."""
    tokens = ctx.tokens
    request_rest(ctx, (t for t in ctx.reseed if t in tokens and tokens[t].status == RESYNCING))
    ctx.reseed.clear()


def on_rest_books(
    ctx: Context, request_id: int, books: list[object] | None, now: float, wall_ms: int
) -> None:
    """REST snapshots confirm quiet tokens (updated_at) or reveal what the socket missed."""
    tokens = ctx.rest_inflight.pop(request_id, [])
    ctx.rest_pending.difference_update(tokens)
    if books is None:
        ctx.stats[Stat.REST, "error"] += 1
        return
    ctx.stats[Stat.REST, "ok"] += 1
    missing = set(tokens)
    for book in events.parse_rest_books(books):
        st = ctx.tokens.get(book.asset_id) if book.asset_id is not None else None
        if st is None:
            continue
        missing.discard(st.token)
        reseed = st.status == RESYNCING and not resync.settling(st)
        if not reseed and st.status != LIVE:
            continue
        if isinstance(book, events.Book):
            lifecycle.rest_reference(ctx, st, book)
        if isinstance(book, events.BadEvent):
            ctx.stats[Stat.PARSE_ERRORS, f"rest_{book.reason}"] += 1
        elif reseed:
            _reseed(ctx, st, book, now, wall_ms)
        else:
            _confirm(ctx, st, book, now, wall_ms)
    if missing:
        lifecycle.no_books(ctx, missing, now)  # no order book any more: is the market closed?


def _confirm(ctx: Context, st: TokenState, book: events.Book, now: float, wall_ms: int) -> None:
    bids, asks = book.bids, book.asks
    rest_bid = max(bids) if bids else None
    rest_ask = min(asks) if asks else None
    top = st.book.top()
    same = (
        rest_bid == st.book.bid_key
        and rest_ask == st.book.ask_key
        and (rest_bid is None or float(bids[rest_bid][1]) == float(top[1]))
        and (rest_ask is None or float(asks[rest_ask][1]) == float(top[3]))
    )
    if same:
        ctx.stats[Stat.REST_CONFIRM, "match"] += 1
        st.updated_at = wall_ms
        ctx.touched.add(st.token)
        return
    rest_ts = book.ts
    if rest_ts is not None and st.ts is not None and rest_ts < st.ts:
        ctx.stats[Stat.REST_CONFIRM, "older"] += 1
        return  # the stream moved on after REST's snapshot: it is the newer truth
    if rest_bid is not None and rest_ask is not None and rest_bid >= rest_ask:
        # REST disagrees with our book but its own is crossed: neither can be shown as
        # live; resync (a WS book, or a later uncrossed REST book, settles it).
        ctx.stats[Stat.REST_CONFIRM, "crossed"] += 1
        resync.resync(ctx, st, "rest_mismatch", now, redrive=True)
        return
    ctx.stats[Stat.REST_CONFIRM, "mismatch"] += 1
    ctx.rlog.warning(
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
    ctx.dirty.add(st.token)
    sockets.redrive(ctx, [st.token], "rest_mismatch", now)


def _reseed(ctx: Context, st: TokenState, book: events.Book, now: float, wall_ms: int) -> None:
    """A REST book for a resyncing token: the exchange's own snapshot makes it live again (the
    contract promises a fresh book over WS or REST), unless the socket has already applied
    events newer than it (then the WS book the redrive asked for settles it) or it is crossed.
    A WS book arriving later replaces it as usual."""
    bids, asks = book.bids, book.asks
    rest_ts = book.ts
    if rest_ts is not None and st.ts is not None and rest_ts < st.ts:
        ctx.stats[Stat.REST_RESEED, "older"] += 1
        return
    if not crosscheck.agrees(None, max(bids) if bids else None, min(asks) if asks else None):
        ctx.stats[Stat.REST_RESEED, "crossed"] += 1
        return
    ctx.stats[Stat.REST_RESEED, "applied"] += 1
    st.book.replace(bids, asks)
    if rest_ts is not None:
        st.ts = rest_ts
    if book.tick_size is not None:
        st.tick_size = book.tick_size
    set_status(ctx, st, LIVE, "")
    st.source = "rest"
    st.resync_deadline = None
    st.updated_at = wall_ms
    st.last_recv = now
    st.last_quiet_check = now
    ctx.dirty.add(st.token)
