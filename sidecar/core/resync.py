"""Resync: a token whose book is no longer known right leaves ``live`` until a fresh book.

Two ways in. The exchange states its top of book (``price_change`` entries, ``best_bid_ask``): a
local top that disagrees with it, or is crossed, is first only ``bbo_settling`` (a crossing trade
arrives as several messages, the first already stating the final top) and is resynced only if the
disagreement outlasts ``SIDECAR_BBO_GRACE_S``. Or the book certainly missed something (an entry
that cannot be applied, a tick size change, a REST book that differs and is itself crossed): then
at once. A resync asks for a WS book (redrive) and a REST reseed together; the first to arrive
that is not older than the stream makes the token live again.
"""

from __future__ import annotations

from collections.abc import Iterable

from sidecar.core import crosscheck, sockets
from sidecar.core.context import Context
from sidecar.core.protocol import Malformed
from sidecar.core.quote import TokenState
from sidecar.core.stats import Stat
from sidecar.core.status import BBO_SETTLING, LIVE, RESOLVED, RESYNCING, set_status

RESYNC_WAIT_S = 5.0  # a resyncing token with no book this long is redriven (again), then every 4x this


def settling(st: TokenState) -> bool:
    """Held out of ``live`` only while a disagreement may still settle: the book is still trusted."""
    return st.status == RESYNCING and st.reason == BBO_SETTLING


def judge(ctx: Context, st: TokenState, best_bid: object, best_ask: object, now: float) -> bool:
    """Is this token's top publishable as ``live``: live (or settling) and consistent with the
    exchange's stated best prices (if the message had any) and not crossed?

    Meanwhile a disagreeing token is ``resyncing`` (``bbo_settling``): the hash keeps the prices it
    last showed as live, nothing disagreeing with the exchange's own best prices is written as
    live, nothing is redriven. Agreement within ``bbo_grace_s`` makes it live again (an exchange
    confirmation: updated_at moves); a disagreement that outlasts it is a real mismatch.
    """
    status = st.status
    is_settling = status == RESYNCING and st.reason == BBO_SETTLING
    if status != LIVE and not is_settling:
        return False  # no trustworthy book until the next snapshot (or REST reseed)
    try:
        stated = crosscheck.claim(best_bid, best_ask)
    except Malformed as exc:
        ctx.stats[Stat.PARSE_ERRORS, exc.reason] += 1
        stated = None  # an unreadable claim cannot be judged; the book itself still is
    pending = ctx.unsettled.get(st.token) if is_settling else None
    if stated is None and pending is not None:
        stated = pending.claim  # a message without a claim is judged against the latest one
    book = st.book
    if book.crossed:
        ctx.stats[Stat.CROSSED_BOOKS, ""] += 1
    if crosscheck.agrees(stated, book.bid_key, book.ask_key):
        if is_settling:
            ctx.unsettled.pop(st.token, None)
            ctx.stats[Stat.BBO_SETTLED, ""] += 1
            set_status(ctx, st, LIVE, "")
        return True
    if pending is None:
        ctx.unsettled[st.token] = crosscheck.Unsettled(now, now + ctx.cfg.bbo_grace_s, stated)
        if not is_settling:
            set_status(ctx, st, RESYNCING, BBO_SETTLING)
        return False
    pending.claim = stated
    if now >= pending.deadline:
        _escalate(ctx, st, now)
    return False


def _escalate(ctx: Context, st: TokenState, now: float) -> None:
    """A disagreement that outlasted the grace: the book is wrong. Resync (WS + REST at once)."""
    pending = ctx.unsettled.pop(st.token, None)
    stated = pending.claim if pending is not None else None
    crossed = st.book.crossed
    mismatch = stated is not None and stated != (st.book.bid_key, st.book.ask_key)
    reason = "bbo_mismatch" if mismatch else "crossed_book"
    if mismatch:
        ctx.stats[Stat.BBO_MISMATCH, ""] += 1
    ctx.rlog.warning(
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
    resync(ctx, st, reason, now, redrive=True)


def check_unsettled(ctx: Context, now: float) -> None:
    """Escalate settling tokens whose grace ran out with no message to judge them by."""
    for token, pending in list(ctx.unsettled.items()):
        if now < pending.deadline:
            continue
        st = ctx.tokens.get(token)
        if st is None or not settling(st):
            del ctx.unsettled[token]  # settled some other way (a book, a lost socket)
            continue
        _escalate(ctx, st, now)


def resync(ctx: Context, st: TokenState, reason: str, now: float, redrive: bool) -> None:
    """The book is no longer known right: ``resyncing`` until a WS book or a REST reseed, both
    asked for at once (``redrive``); without a book within RESYNC_WAIT_S it is redriven again."""
    if st.status == RESOLVED:
        return
    if st.status != RESYNCING or st.reason == BBO_SETTLING:
        set_status(ctx, st, RESYNCING, reason)
    ctx.unsettled.pop(st.token, None)
    st.resync_deadline = now + RESYNC_WAIT_S
    ctx.reseed.add(st.token)
    if redrive:
        sockets.redrive(ctx, [st.token], reason, now)


def distrust(ctx: Context, sts: Iterable[TokenState], now: float) -> None:
    """Trusted books that missed an update are no longer known right: resync them (a WS redrive
    and a REST reseed at once). Any other book is not shown anyway."""
    for st in sts:
        if st.status == LIVE or settling(st):
            resync(ctx, st, "bad_entry", now, redrive=True)
