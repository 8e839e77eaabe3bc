"""sidecar.core.lifecycle: markets polled over REST resolve tokens without ``market_resolved``;
resolutions survive re-adds and restarts (read back); reference data reaches the hash."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pmsim import messages

from sidecar.core import lifecycle
from sidecar.core.actions import MarketFetch, QuoteWrite
from sidecar.core.events import number_text, parse_market_state
from tests.core.harness import TS0, Sim, book_ev, engine_cfg, tok, top

POLL_S = 300.0
A, B, C, D = tok(1), tok(2), tok(3), tok(4)
M1, M2 = "0xm1", "0xm2"


def market_obj(
    cid: str,
    tokens: list[str],
    *,
    closed: bool = False,
    winner: str | None = None,
    tick: float = 0.01,
    min_size: float = 5,
    neg_risk: bool = False,
) -> dict[str, Any]:
    """``GET /markets/{condition_id}`` in the CLOB's shape."""
    return {
        "condition_id": cid,
        "closed": closed,
        "active": not closed,
        "accepting_orders": not closed,
        "enable_order_book": not closed,
        "minimum_order_size": min_size,
        "minimum_tick_size": tick,
        "neg_risk": neg_risk,
        "tokens": [
            {"token_id": t, "outcome": o, "price": 0.5, "winner": t == winner}
            for t, o in zip(tokens, ["Yes", "No"], strict=False)
        ],
    }


def fetches(s: Sim, since: int = 0) -> list[tuple[float, MarketFetch]]:
    return [(t, a) for t, a in s.actions[since:] if isinstance(a, MarketFetch)]


def answer(s: Sim, fetch: MarketFetch, markets: dict[str, Any] | None) -> list[QuoteWrite]:
    s.engine.on_market_states(fetch.request_id, markets, s.now, s.wall_ms)
    return s.pump()


def live_in_markets(s: Sim, by_market: dict[str, list[str]], **extra: Any) -> None:
    """Desire the tokens, open their sockets, and deliver a book each naming its market."""
    s.desired([t for toks in by_market.values() for t in toks])
    s.tick()
    for market, toks in by_market.items():
        for t in toks:
            s.frame(s.conn_of(t), book_ev(t, market=market, **extra))
    for toks in by_market.values():
        for t in toks:
            assert s.status(t) == "live"


def poll_sim(**cfg: Any) -> Sim:
    return Sim(engine_cfg(rest_enabled=True, market_poll_s=POLL_S, **cfg))


def next_fetch(s: Sim, within: float, step: float = 1.0) -> MarketFetch:
    """Tick until a MarketFetch is sent (at most ``within`` seconds); the first one."""
    m = s.mark()
    start = s.now
    while s.now - start <= within:
        got = fetches(s, m)
        if got:
            return got[0][1]
        s.step(step)
    raise AssertionError(f"no MarketFetch within {within}s")


# ---- the poll schedule -------------------------------------------------------------------------------


def test_every_market_is_polled_once_a_period_staggered_and_batched() -> None:
    s = poll_sim()
    markets = {f"0xm{i:03d}": [tok(100 + 2 * i), tok(101 + 2 * i)] for i in range(120)}
    live_in_markets(s, markets)
    start = s.now
    polled: dict[str, list[float]] = {m: [] for m in markets}
    while s.now < start + 2 * POLL_S:
        m = s.mark()
        s.step(1.0)
        for t, fetch in fetches(s, m):
            assert len(fetch.markets) <= lifecycle.MARKET_BATCH
            assert len(s.engine.ctx.lifecycle.inflight) == 1  # one request at a time
            for market in fetch.markets:
                polled[market].append(t)
            answer(s, fetch, {mk: market_obj(mk, markets[mk]) for mk in fetch.markets})
    firsts = sorted(times[0] for times in polled.values())
    assert all(times for times in polled.values())
    assert firsts[-1] - start <= POLL_S + 1  # the first poll of each within one period
    assert firsts[-1] - firsts[0] > POLL_S / 2  # staggered: not all at once
    busiest = max(sum(1 for t in firsts if abs(t - x) < 1.0) for x in firsts)
    assert busiest <= 10, busiest  # no burst of markets coming due together
    for times in polled.values():  # then once a period (jittered, never longer than the period)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps and all(0.75 * POLL_S - 1 <= g <= POLL_S + 1 for g in gaps), gaps
    assert s.engine.counts()["resolved"] == 0  # open markets resolve nothing


def test_one_request_in_flight_at_a_time() -> None:
    """Polls follow the shell's REST budget: nothing more is asked while a request is unanswered."""
    s = poll_sim()
    live_in_markets(s, {f"0xm{i:03d}": [tok(100 + i)] for i in range(120)})
    s.run_for(lifecycle.INFLIGHT_TIMEOUT_S - 10)
    (_, fetch), *rest = fetches(s)
    assert rest == [] and len(fetch.markets) <= lifecycle.MARKET_BATCH


def test_polls_need_rest() -> None:
    s = Sim(engine_cfg(rest_enabled=False, market_poll_s=POLL_S))
    live_in_markets(s, {M1: [A, B]})
    s.run_for(2 * POLL_S, step=5.0)
    s.frame(s.conn_of(A), book_ev(A, [], [], market=M1))
    s.step(1.0)
    assert fetches(s) == []


def test_a_failed_request_is_retried_soon_and_a_lost_answer_given_up_on() -> None:
    s = poll_sim()
    live_in_markets(s, {M1: [A, B]})
    fetch = next_fetch(s, POLL_S + 1)
    answer(s, fetch, None)
    assert s.stat("market_polls", "error") == 1
    again = next_fetch(s, lifecycle.RETRY_S + 2)
    assert again.markets == [M1]
    assert s.now - s.actions[-1][0] < 1.0
    # never answered: given up after INFLIGHT_TIMEOUT_S, then asked again
    s.run_for(lifecycle.INFLIGHT_TIMEOUT_S - 5)
    assert [f.markets for _, f in fetches(s)][-1] == [M1]
    assert len(fetches(s)) == 2
    third = next_fetch(s, 20)
    assert third.markets == [M1] and third.request_id != again.request_id


# ---- at once: empty books, no REST book --------------------------------------------------------------


def test_an_empty_book_asks_about_its_market_at_once_and_not_again_right_away() -> None:
    s = poll_sim()
    live_in_markets(s, {M1: [A, B], M2: [C, D]})
    s.step(0.05)
    m = s.mark()
    s.frame(s.conn_of(A), book_ev(A, [("0.4", "1")], [], market=M1))  # one side empty: nothing
    s.step(0.05)
    assert fetches(s, m) == [] or all(M1 not in f.markets for _, f in fetches(s, m))
    s.frame(s.conn_of(A), book_ev(A, [], [], market=M1))
    s.step(0.05)
    (_, fetch), *_ = fetches(s, m)
    assert fetch.markets == [M1]
    answer(s, fetch, {M1: market_obj(M1, [A, B])})
    m = s.mark()
    s.frame(s.conn_of(B), book_ev(B, [], [], market=M1))
    s.step(1.0)
    assert all(M1 not in f.markets for _, f in fetches(s, m))  # not again within URGENT_MIN_S


def test_a_rest_answer_without_the_token_asks_about_its_market() -> None:
    s = poll_sim(quiet_confirm_s=30.0)
    live_in_markets(s, {M1: [A], M2: [C]})
    s.run_for(31)
    for _, f in fetches(s):  # a scheduled poll may have come due meanwhile
        answer(s, f, {mk: market_obj(mk, [A] if mk == M1 else [C]) for mk in f.markets})
    (req,) = s.rest_requests
    m = s.mark()
    summary_c = messages.book_summary(C, M2, [], [], TS0, tick_size="0.01", last_trade_price="")
    s.rest(req.request_id, [summary_c])
    s.step(0.05)
    (_, fetch), *_ = fetches(s, m)
    assert fetch.markets == [M1]  # A had no book any more; C did


# ---- resolution ------------------------------------------------------------------------------------


def test_a_closed_market_resolves_its_tokens_won_lost_or_market_closed() -> None:
    s = poll_sim()
    live_in_markets(s, {M1: [A, B], M2: [C, D]})
    fetch = next_fetch(s, POLL_S + 1)
    while set(fetch.markets) != {M1, M2}:  # the two may come due apart
        answer(s, fetch, {m: market_obj(m, [A, B] if m == M1 else [C, D]) for m in fetch.markets})
        fetch = next_fetch(s, POLL_S + 1)
    answer(
        s,
        fetch,
        {M1: market_obj(M1, [A, B], closed=True, winner=B), M2: market_obj(M2, [C, D], closed=True)},
    )
    assert [(s.last(t)["status"], s.last(t)["reason"]) for t in (A, B, C, D)] == [
        ("resolved", "lost"),
        ("resolved", "won"),
        ("resolved", "market_closed"),
        ("resolved", "market_closed"),
    ]
    # a later book updates prices, never the status
    s.frame(s.conn_of(A), book_ev(A, [("0.1", "5")], [("0.2", "5")], market=M1))
    assert s.last(A)["status"] == "resolved" and top(s.last(A))[0] == "0.1"
    # M1 is final (winner known): never polled again; M2 is, until a winner is flagged
    s.run_for(POLL_S + 2)
    later = [f for _, f in fetches(s)][-1]
    assert later.markets == [M2]
    answer(s, later, {M2: market_obj(M2, [C, D], closed=True, winner=C)})
    assert (s.last(C)["reason"], s.last(D)["reason"]) == ("won", "lost")
    # ...and a market_resolved without a winner never takes the winner back
    s.frame(s.conn_of(C), {"event_type": "market_resolved", "market": M2, "assets_ids": [C, D]})
    assert (s.engine.tokens[C].reason, s.engine.tokens[D].reason) == ("won", "lost")


def test_a_removed_and_re_added_resolved_token_starts_resolved() -> None:
    s = poll_sim()
    live_in_markets(s, {M1: [A, B], M2: [C]})
    s.frame(s.conn_of(A), {"event_type": "market_resolved", "assets_ids": [A, B], "winning_asset_id": A})
    assert (s.status(A), s.status(B)) == ("resolved", "resolved")
    s.desired([C])
    assert s.last(A)["status"] == "unsubscribed"
    writes = s.desired([A, B, C])
    firsts = {w.token: w.fields for w in writes}
    assert (firsts[A]["status"], firsts[A]["reason"]) == ("resolved", "won")
    assert (firsts[B]["status"], firsts[B]["reason"]) == ("resolved", "lost")
    s.frame(s.conn_of(A), book_ev(A, market=M1))
    assert s.status(A) == "resolved"


# ---- restarts: the read-back -----------------------------------------------------------------------


def saved_hash(status: str, reason: str, market: str, **extra: str) -> dict[str, str]:
    return {"status": status, "reason": reason, "market": market, "seq": "5", "bid": "", **extra}


def test_a_token_read_back_resolved_starts_resolved_and_its_market_is_confirmed_at_once() -> None:
    s = poll_sim()
    ref = {"tick_size": "0.001", "min_order_size": "15", "neg_risk": "true"}
    s.engine.restore(
        {A: saved_hash("resolved", "won", M1, **ref), C: saved_hash("live", "", M2, **ref)}, s.now, s.wall_ms
    )
    writes = {w.token: w.fields for w in s.desired([A, C])}
    assert (writes[A]["status"], writes[A]["reason"], writes[A]["market"]) == ("resolved", "won", M1)
    assert {k: writes[A][k] for k in ref} == ref  # reference data kept
    assert (writes[C]["status"], writes[C]["market"]) == ("pending", M2)  # only resolved is kept
    m = s.mark()
    s.tick()
    (_, fetch), *_ = fetches(s, m)
    assert fetch.markets == [M1]  # at once, before its period
    s.frame(s.conn_of(A), book_ev(A, [], [], market=M1))  # a book before the answer: still resolved
    assert s.status(A) == "resolved"
    answer(s, fetch, {M1: market_obj(M1, [A, B], closed=True, winner=A)})
    assert (s.status(A), s.engine.tokens[A].reason) == ("resolved", "won")
    assert s.engine.ctx.lifecycle.resolved[A].confirmed


@pytest.mark.parametrize(("rest", "market"), [(False, M1), (True, "")])
def test_a_read_back_resolution_nobody_can_confirm_is_not_taken(rest: bool, market: str) -> None:
    s = Sim(engine_cfg(rest_enabled=rest, market_poll_s=POLL_S))
    s.engine.restore({A: saved_hash("resolved", "won", market)}, s.now, s.wall_ms)
    writes = {w.token: w.fields for w in s.desired([A])}
    assert writes[A]["status"] == "pending"
    s.step(1.0)  # its socket opens and subscribes
    s.frame(s.conn_of(A), book_ev(A, [["0.4", "10"]], [["0.6", "10"]], market=M1))
    assert s.status(A) == "live"


def test_a_token_read_back_resolved_whose_market_is_open_goes_back_through_pending() -> None:
    s = poll_sim()
    s.engine.restore({A: saved_hash("resolved", "market_closed", M1)}, s.now, s.wall_ms)
    s.desired([A])
    s.tick()
    conn = s.conn_of(A)
    s.frame(conn, book_ev(A, market=M1))  # the initial dump: prices, no status change yet
    assert s.last(A)["status"] == "resolved" and top(s.last(A))[0] == "0.49"
    (_, fetch), *_ = fetches(s)
    m = s.mark()
    answer(s, fetch, {M1: market_obj(M1, [A, B])})
    w = s.last(A)
    assert (w["status"], w["reason"], top(w)) == ("pending", "subscribing", ("", "", "", ""))
    assert s.ops(m) == [(conn, "unsubscribe", [A]), (conn, "subscribe", [A])]
    s.frame(conn, book_ev(A, market=M1))
    assert s.last(A)["status"] == "live"
    assert A not in s.engine.ctx.lifecycle.resolved
    s.desired([])
    s.desired([A])
    assert s.last(A)["status"] == "pending"  # not remembered as resolved


def test_a_resolution_seen_in_this_run_is_never_undone_by_an_open_answer() -> None:
    s = poll_sim()
    live_in_markets(s, {M1: [A, B]})
    s.frame(s.conn_of(A), {"event_type": "market_resolved", "assets_ids": [A, B], "winning_asset_id": A})
    s.engine.ctx.lifecycle.urgent[M1] = None  # ask now, whatever the schedule
    s.step(0.05)
    (_, fetch), *_ = fetches(s)
    answer(s, fetch, {M1: market_obj(M1, [A, B])})  # REST lagging behind the event
    assert (s.status(A), s.engine.tokens[A].reason) == ("resolved", "won")


def test_a_404_or_garbage_answer_changes_nothing() -> None:
    s = poll_sim()
    s.engine.restore({A: saved_hash("resolved", "won", M1)}, s.now, s.wall_ms)
    s.desired([A])
    s.tick()
    (_, fetch), *_ = fetches(s)
    answer(s, fetch, {M1: None})
    assert (s.status(A), s.engine.tokens[A].reason) == ("resolved", "won")
    assert s.stat("market_polls", "unknown") == 1
    assert parse_market_state(M1, {"closed": "yes"}) is None
    assert parse_market_state(M1, {**market_obj(M2, [A]), "closed": True}) is None  # another market


# ---- reference data ----------------------------------------------------------------------------------


def test_reference_data_from_books_and_market_states() -> None:
    s = poll_sim()
    live_in_markets(s, {M1: [A, B]}, tick_size="0.01", min_order_size="5", neg_risk=False)
    assert {k: s.last(A)[k] for k in ("tick_size", "min_order_size", "neg_risk")} == {
        "tick_size": "0.01",
        "min_order_size": "5",
        "neg_risk": "false",
    }
    fetch = next_fetch(s, POLL_S + 1)
    seq = int(s.last(A)["seq"])
    answer(s, fetch, {M1: market_obj(M1, [A, B], tick=0.001, min_size=15, neg_risk=True)})
    w = s.last(A)
    # the market-wide tick only fills an unknown one: the token's own stream says 0.01
    assert (w["tick_size"], w["min_order_size"], w["neg_risk"]) == ("0.01", "15", "true")
    assert int(w["seq"]) > seq and w["status"] == "live"
    # nothing new: nothing written
    again = next_fetch(s, POLL_S + 1)
    assert answer(s, again, {M1: market_obj(M1, [A, B], tick=0.001, min_size=15, neg_risk=True)}) == []


def test_a_tick_size_change_is_a_published_change() -> None:
    s = poll_sim()
    live_in_markets(s, {M1: [A]}, tick_size="0.01")
    seq = int(s.last(A)["seq"])
    s.frame(s.conn_of(A), messages.tick_size_change(A, M1, "0.01", "0.001", TS0 + 5))
    w = s.last(A)
    assert w["tick_size"] == "0.001" and int(w["seq"]) > seq


def test_reference_numbers_as_the_hash_shows_them() -> None:
    assert [number_text(v) for v in (5, 5.0, 0.01, 0.001, 1e-05, "5", " 0.01 ")] == [
        "5",
        "5",
        "0.01",
        "0.001",
        "0.00001",
        "5",
        "0.01",
    ]
    assert [number_text(v) for v in (True, None, "", -1, float("nan"), [])] == [None] * 6
