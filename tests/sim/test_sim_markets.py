"""Each market's truth beyond its books: reference data (tick, minimum order size, neg-risk) in
every book frame and REST summary, GET /markets/{condition_id}, and resolution with or without
the market_resolved announcement."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pmsim import MarketInfo, Simulator

from tests.sim.wire import Client, http, two_token_market, wait_for

MARKET_FIELDS = {
    "condition_id",
    "closed",
    "active",
    "accepting_orders",
    "enable_order_book",
    "minimum_order_size",
    "minimum_tick_size",
    "neg_risk",
    "tokens",
}


def reference(event: dict[str, Any]) -> MarketInfo:
    return MarketInfo(event["tick_size"], event["min_order_size"], event["neg_risk"])


def market_json(sim: Simulator, market: str) -> dict[str, Any]:
    status, body = http(f"{sim.rest_url}/markets/{market}")
    assert status == 200, body
    assert isinstance(body, dict) and set(body) >= MARKET_FIELDS
    return body


def test_reference_data_varies_by_market_and_follows_the_seed() -> None:
    def draw(seed: int) -> dict[str, MarketInfo]:
        with Simulator(seed=seed) as sim:
            for _ in range(24):
                sim.add_market(tick_size=None)  # None: the tick is drawn too
            return {t: sim.market_info(t) for t in sim.tokens()}

    first = draw(3)
    assert draw(3) == first
    assert draw(4).keys().isdisjoint(first)
    assert {i.tick_size for i in first.values()} == {"0.01", "0.001"}
    assert len({i.min_order_size for i in first.values()}) >= 3
    assert {i.neg_risk for i in first.values()} == {True, False}


def test_book_frames_rest_summaries_and_markets_carry_the_truth(
    sim: Simulator, connect: Callable[[], Client]
) -> None:
    markets = [sim.add_market(tick_size=None) for _ in range(8)]
    tokens = [t for m in markets for t in sim.markets()[m]]
    assert sim.add_market() and sim.market_info(sim.tokens()[-1]).tick_size == "0.01"  # default kept
    c = connect()
    c.subscribe(tokens)
    books = {b["asset_id"]: b for b in c.recv_json()}
    status, summaries = http(f"{sim.rest_url}/books", [{"token_id": t} for t in tokens])
    assert status == 200
    for token, summary in zip(tokens, summaries, strict=True):
        info = sim.market_info(token)
        assert reference(books[token]) == info == reference(summary)
        assert isinstance(info.neg_risk, bool) and summary["market"] == sim.market_of(token)
        assert reference(http(f"{sim.rest_url}/book?token_id={token}")[1]) == info
    for market in markets:
        body = market_json(sim, market)
        a, b = sim.markets()[market]
        info = sim.market_info(a)
        assert body["condition_id"] == market
        assert (body["closed"], body["active"], body["accepting_orders"], body["enable_order_book"]) == (
            False,
            True,
            True,
            True,
        )
        assert (str(body["minimum_tick_size"]), body["neg_risk"]) == (info.tick_size, info.neg_risk)
        assert float(body["minimum_order_size"]) == float(info.min_order_size)
        assert [(t["token_id"], t["outcome"], t["winner"]) for t in body["tokens"]] == [
            (a, "Yes", False),
            (b, "No", False),
        ]
        assert all(isinstance(t["price"], (int, float)) for t in body["tokens"])
    assert http(f"{sim.rest_url}/markets/0x42") == (404, {"error": "market not found"})
    asked = sim.new_market(question="Will it rain?")
    state = sim.market_state(asked)
    assert state is not None and state == market_json(sim, asked) and state["question"] == "Will it rain?"
    a = tokens[0]
    sim.tick_size_change(a, "0.0001")
    assert c.recv_json()["event_type"] == "tick_size_change"
    assert reference(c.recv_json()) == sim.market_info(a) and sim.market_info(a).tick_size == "0.0001"
    assert market_json(sim, markets[0])["minimum_tick_size"] == 0.0001
    assert sim.violations == []


def test_resolve_market_without_announcement_closes_the_truth_silently(
    sim: Simulator, connect: Callable[[], Client]
) -> None:
    market, a, b = two_token_market(sim)
    _, other, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a, b, other], custom_feature_enabled=True)
    c.recv_json()
    sim.resolve_market(market, b, announce=False)
    c.assert_nothing_queued()  # no market_resolved, no book
    body = market_json(sim, market)
    assert (body["closed"], body["active"], body["accepting_orders"], body["enable_order_book"]) == (
        True,
        False,
        False,
        False,
    )
    assert [(t["token_id"], t["winner"], t["price"]) for t in body["tokens"]] == [(a, False, 0), (b, True, 1)]
    assert not sim.has_book(a) and sim.has_book(other)
    assert http(f"{sim.rest_url}/book?token_id={a}") == (
        404,
        {"error": "No orderbook exists for the requested token id"},
    )
    status, books = http(f"{sim.rest_url}/books", [{"token_id": a}, {"token_id": other}, {"token_id": b}])
    assert status == 200 and [s["asset_id"] for s in books] == [other]
    late = connect()
    late.subscribe([a, other])
    assert [book["asset_id"] for book in late.recv_json()] == [other]  # no book for a closed market
    sim.send_book(a)  # a scripted late book still goes out (a resolved token must ignore it)
    assert c.recv_json()["asset_id"] == a
    # Books stop: random activity over all three tokens moves only the open one.
    sim.start_activity(300.0, tokens=[a, b, other])
    seen: set[str] = set()

    def other_moved() -> bool:
        frame = c.recv_json()
        for event in frame if isinstance(frame, list) else [frame]:
            if event["event_type"] == "price_change":
                seen.update(e["asset_id"] for e in event["price_changes"])
            else:
                seen.add(event["asset_id"])
        return other in seen

    wait_for(other_moved, what="activity on the open market")
    for _ in range(40):  # a good run of events: none of them for the closed market
        other_moved()
    sim.stop_activity()
    assert seen.isdisjoint({a, b})  # (other's sibling may leak into its price_change: a quirk)
    with pytest.raises(ValueError):
        sim.resolve_market(market, other)  # not one of its tokens


def test_resolve_market_without_winner_and_with_announcement(
    sim: Simulator, connect: Callable[[], Client]
) -> None:
    unknown, a, _ = two_token_market(sim)
    announced, c_tok, d_tok = two_token_market(sim)
    c = connect()
    c.subscribe([a, c_tok], custom_feature_enabled=True)
    c.recv_json()
    sim.resolve_market(unknown)  # winner unknown: market_resolved names one, so nothing is sent
    c.assert_nothing_queued()
    body = market_json(sim, unknown)
    assert body["closed"] is True and [t["winner"] for t in body["tokens"]] == [False, False]
    assert all(0 < t["price"] < 1 for t in body["tokens"])  # last prices, not a payout
    sim.resolve_market(announced, d_tok)
    event = c.recv_json()
    assert (event["event_type"], event["market"], event["winning_asset_id"]) == (
        "market_resolved",
        announced,
        d_tok,
    )
    assert [t["winner"] for t in market_json(sim, announced)["tokens"]] == [False, True]
    with pytest.raises(KeyError):
        sim.resolve_market("0x42", None, announce=False)


def test_resolve_is_still_only_the_announcement(sim: Simulator, connect: Callable[[], Client]) -> None:
    """The older control sends market_resolved and leaves the market open (tests rely on it)."""
    market, a, b = two_token_market(sim)
    c = connect()
    c.subscribe([a], custom_feature_enabled=True)
    c.recv_json()
    sim.resolve(market, a)
    assert c.recv_json()["event_type"] == "market_resolved"
    assert market_json(sim, market)["closed"] is False and sim.has_book(a)
    assert http(f"{sim.rest_url}/book?token_id={b}")[0] == 200
