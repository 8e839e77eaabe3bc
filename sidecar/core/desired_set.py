"""The desired set: which tokens the engine holds a book for.

The autorun scheduler's set arrives whole; garbage is counted (never sent upstream), the valid
tokens are capped at ``SIDECAR_MAX_TOKENS`` (keeping the ones already held), and the difference is
applied: new tokens join a shard and start ``pending``, removed ones get a final ``unsubscribed``
write that expires.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sidecar.core import lifecycle, protocol, sockets
from sidecar.core.actions import QuoteWrite
from sidecar.core.context import Context
from sidecar.core.quote import TokenState
from sidecar.core.status import REMOVED, UNSUBSCRIBED, set_status

log = logging.getLogger("sidecar.core.engine")


def set_desired(ctx: Context, members: Iterable[object], now: float, wall_ms: int) -> None:
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
            ctx.rlog.warning(
                "desired_invalid", now, "ignoring invalid token id in desired set: %r", str(raw)[:80]
            )
    ctx.invalid_desired = invalid
    cap = ctx.cfg.max_tokens
    if len(valid) > cap:
        keep = sorted(valid & ctx.tokens.keys())[:cap]
        rest = sorted(valid - ctx.tokens.keys())[: cap - len(keep)]
        ctx.capped_desired = len(valid) - cap
        ctx.rlog.warning(
            "desired_cap",
            now,
            "desired set has %d valid tokens, over SIDECAR_MAX_TOKENS=%d: %d ignored",
            len(valid),
            cap,
            len(valid) - cap,
        )
        valid = set(keep) | set(rest)
    else:
        ctx.capped_desired = 0
    removed = [t for t in ctx.tokens if t not in valid]
    added = sorted(valid - ctx.tokens.keys())
    touched: set[int] = set()
    for token in removed:
        touched.add(_remove_token(ctx, token))
    for token in added:
        touched.add(_add_token(ctx, token, now, wall_ms))
    if added or removed:
        log.info("desired set: +%d -%d, now %d tokens", len(added), len(removed), len(ctx.tokens))
    for shard_id in touched:
        sockets.sync_shard(ctx, shard_id, now)


def _add_token(ctx: Context, token: str, now: float, wall_ms: int) -> int:
    # seq starts from the wall clock in microseconds, so it keeps increasing across re-adds
    # and sidecar restarts (no token changes 1,000 times a millisecond).
    st = TokenState(token, max(wall_ms * 1000, ctx.seq_floor), now)
    ctx.tokens[token] = st
    lifecycle.adopt(ctx, st, now)  # resolved earlier in this run, or read back at start-up
    shard = ctx.shards.assign(token, now)
    st.shard_id = shard.id
    ctx.dirty.add(token)
    return shard.id


def _remove_token(ctx: Context, token: str) -> int:
    st = ctx.tokens.pop(token)
    ctx.touched.discard(token)
    ctx.rest_pending.discard(token)
    set_status(ctx, st, UNSUBSCRIBED, REMOVED)
    ctx.dirty.discard(token)  # its last write is the final one below, which expires
    st.seq += 1
    ctx.seq_floor = max(ctx.seq_floor, st.seq)
    ctx.final.append(QuoteWrite(token, st.fields(ctx.epoch), True, expire_s=ctx.cfg.unsubscribed_ttl_s))
    ctx.shards.remove(token, st.shard_id)
    return st.shard_id
