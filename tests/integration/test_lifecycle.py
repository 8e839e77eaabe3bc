"""Market lifecycle against the real process and simulator: a market closed without its
``market_resolved`` event resolves its tokens within the poll period, they stay ``resolved`` across
a sidecar restart (from the first write on) and a re-add, and the reference data in every live
hash is the simulator's truth."""

from __future__ import annotations

from collections.abc import Callable

import redis
from pmsim import Simulator

from devkit.procs import SidecarProcess
from devkit.redis_server import RedisServer
from devkit.wait import wait_for, wait_for_none
from tests.integration.common import P, QuoteListener, hashes, start_live

POLL_S = 2.0  # SIDECAR_MARKET_POLL_S for these tests: every market asked at least this often


def reference_problems(r: redis.Redis, sim: Simulator, tokens: list[str]) -> list[str]:
    out = []
    for token, q in zip(tokens, hashes(r, tokens), strict=True):
        tick, min_size, neg_risk = sim.market_info(token)
        want = {"tick_size": tick, "min_order_size": min_size, "neg_risk": "true" if neg_risk else "false"}
        got = {k: q.get(k) for k in want}
        if q.get("status") == "live" and got != want:
            out.append(f"{token[:12]}: {got} != {want}")
    return out


def resolved_as(r: redis.Redis, expected: dict[str, str]) -> list[str]:
    tokens = list(expected)
    return [
        f"{t[:12]}: {q.get('status')}/{q.get('reason')}"
        for t, q in zip(tokens, hashes(r, tokens), strict=True)
        if (q.get("status"), q.get("reason")) != ("resolved", expected[t])
    ]


def restart_keeps_resolved(
    redis_server: RedisServer,
    r: redis.Redis,
    sidecar: Callable[..., SidecarProcess],
    proc: SidecarProcess,
    expected: dict[str, str],
    open_tokens: list[str],
) -> SidecarProcess:
    """Restart the sidecar: every write of the new run for a resolved token says resolved, from
    its first one; then a resolved token removed and re-added is resolved again at once."""
    proc.shutdown()
    old_epoch = r.hget(P + "sidecar", "epoch")
    listener = QuoteListener(redis_server)
    try:
        proc = sidecar(market_poll_s=POLL_S)
        wait_for(lambda: all(q.get("status") == "live" for q in hashes(r, open_tokens)), 15.0, what="live")
        epoch = wait_for(
            lambda: (e := r.hget(P + "sidecar", "epoch")) != old_epoch and e, 5.0, what="new epoch"
        )
        wait_for(lambda: all(listener.for_token(t) for t in expected), 5.0, what="a write per resolved token")
        seen = [
            (m["token"][:12], m["epoch"], m["status"], m["reason"])
            for t in expected
            for m in listener.for_token(t)
        ]
        assert all(e == epoch and status == "resolved" for _, e, status, _ in seen), seen
        assert resolved_as(r, expected) == []

        token, reason = next(iter(expected.items()))
        r.srem(P + "desired", token)
        wait_for(lambda: r.hget(P + "quote:" + token, "status") == "unsubscribed", 5.0, what="unsubscribed")
        before = len(listener.for_token(token))
        r.sadd(P + "desired", token)
        wait_for(lambda: r.ttl(P + "quote:" + token) == -1, 5.0, what="re-added (TTL removed)")
        after = [(m["status"], m["reason"]) for m in listener.for_token(token)[before:]]
        assert after and all(a == ("resolved", reason) for a in after), after
        assert listener.atomicity_violations == []
    finally:
        listener.close()
    return proc


def test_resolution_by_the_event_survives_restarts_and_re_adds(
    redis_server: RedisServer, sim: Simulator, sidecar: Callable[..., SidecarProcess]
) -> None:
    """The read-back alone (no market polls needed): market_resolved, then a restart."""
    tokens, r, proc = start_live(redis_server, sim, sidecar, markets=4, market_poll_s=POLL_S)
    wait_for_none(lambda: reference_problems(r, sim, tokens), 5.0, what="reference data")
    by_market = sim.markets()
    market = next(m for m in by_market if by_market[m][0] in tokens)
    winner, loser = by_market[market]
    sim.resolve_market(market, winner)  # announced
    expected = {winner: "won", loser: "lost"}
    wait_for_none(lambda: resolved_as(r, expected), 5.0, what="resolved by the event")
    open_tokens = [t for t in tokens if t not in expected]
    restart_keeps_resolved(redis_server, r, sidecar, proc, expected, open_tokens)
    wait_for_none(lambda: reference_problems(r, sim, open_tokens), 5.0, what="reference data after restart")


def test_resolution_without_the_event_within_the_poll_period(
    redis_server: RedisServer, sim: Simulator, sidecar: Callable[..., SidecarProcess]
) -> None:
    """market_resolved withheld: the market polls find it (winner flagged or not), and it
    survives a restart and a re-add."""
    tokens, r, proc = start_live(redis_server, sim, sidecar, markets=6, market_poll_s=POLL_S)
    wait_for_none(lambda: reference_problems(r, sim, tokens), 5.0, what="reference data")
    by_market = sim.markets()
    won_market, closed_market = [m for m in by_market if by_market[m][0] in tokens][:2]
    winner, loser = by_market[won_market]
    expected = {winner: "won", loser: "lost", **dict.fromkeys(by_market[closed_market], "market_closed")}
    sim.resolve_market(won_market, winner, announce=False)  # no market_resolved: only REST knows
    sim.resolve_market(closed_market, None, announce=False)
    wait_for_none(lambda: resolved_as(r, expected), POLL_S + 3.0, what="resolved within the poll period")
    open_tokens = [t for t in tokens if t not in expected]
    restart_keeps_resolved(redis_server, r, sidecar, proc, expected, open_tokens)
    wait_for_none(lambda: reference_problems(r, sim, open_tokens), 5.0, what="reference data after restart")
