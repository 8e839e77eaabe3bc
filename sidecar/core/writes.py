"""Write batching: what changed since the shell last asked becomes quote writes.

A token changed any number of times between two calls is written once, with its latest state and a
new ``seq``. Tokens whose top the exchange re-confirmed without a change (``touched``) get an
``updated_at``-only refresh, at most once a second each, so a quiet healthy token costs little.
"""

from __future__ import annotations

from sidecar.core.actions import QuoteWrite
from sidecar.core.context import Context

TOUCH_INTERVAL_S = 1.0  # updated_at-only refreshes, at most this often per token
TOUCH_SCAN_S = 0.05  # how often the touched set is scanned for refreshes that are due


def take_writes(ctx: Context, now: float) -> list[QuoteWrite]:
    """Quote writes for everything that changed since the last call; bumps seq per change."""
    out = ctx.final
    ctx.final = []
    epoch = ctx.epoch
    tokens = ctx.tokens
    for token in ctx.dirty:
        st = tokens.get(token)
        if st is None:
            continue
        st.seq += 1
        st.last_touch_write = now
        out.append(
            QuoteWrite(token, st.fields(epoch), True, persist=st.fresh, recv_at=st.last_recv, exch_ts=st.ts)
        )
        st.fresh = False
    ctx.dirty.clear()
    if ctx.touched and now >= ctx.next_touch_scan:
        ctx.next_touch_scan = now + TOUCH_SCAN_S
        keep: set[str] = set()
        for token in ctx.touched:
            st = tokens.get(token)
            if st is None or st.updated_at is None:
                continue
            if now - st.last_touch_write < TOUCH_INTERVAL_S:
                keep.add(token)  # refresh later, at most once a second
                continue
            st.last_touch_write = now
            # ts too: the hash's ts is the latest event applied, also when only updated_at moves
            refresh = {"updated_at": str(st.updated_at), "ts": "" if st.ts is None else str(st.ts)}
            out.append(QuoteWrite(token, refresh, False))
        ctx.touched = keep
    return out
