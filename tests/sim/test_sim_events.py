"""Snapshots and events over real sockets: what each scripted change sends, and the truth it leaves."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

import orjson
import pytest
from pmsim import Simulator, Top, canon

from tests.sim.wire import HEX40, Client, two_token_market, wait_for


def test_initial_dump_one_array_best_last(sim: Simulator, connect: Callable[[], Client]) -> None:
    market, a, b = two_token_market(sim)
    _, c_tok, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a, b, c_tok])
    frame = c.recv_json()
    assert isinstance(frame, list) and [book["asset_id"] for book in frame] == [a, b, c_tok]
    for book in frame:
        truth = sim.truth(book["asset_id"])
        assert book["event_type"] == "book"
        assert book["market"] == sim.market_of(book["asset_id"])
        bid_prices = [Decimal(lv["price"]) for lv in book["bids"]]
        ask_prices = [Decimal(lv["price"]) for lv in book["asks"]]
        assert bid_prices == sorted(bid_prices) and 10 <= len(bid_prices) <= 30
        assert ask_prices == sorted(ask_prices, reverse=True) and 10 <= len(ask_prices) <= 30
        assert (book["bids"][-1]["price"], book["bids"][-1]["size"]) == (truth.bid, truth.bid_size)
        assert (book["asks"][-1]["price"], book["asks"][-1]["size"]) == (truth.ask, truth.ask_size)
        assert bid_prices[-1] < ask_prices[-1] and bid_prices[0] > 0 and ask_prices[0] < 1
        assert set(book["hash"]) <= HEX40 and len(book["hash"]) == 40
        assert book["timestamp"].isdigit() and book["tick_size"] == "0.01"
        assert "last_trade_price" in book
        bids, asks = sim.book(book["asset_id"])
        assert bids == [(lv["price"], lv["size"]) for lv in reversed(book["bids"])]
        assert asks == [(lv["price"], lv["size"]) for lv in reversed(book["asks"])]
    assert frame[0]["market"] == market
    assert sim.violations == []


def test_price_change_carries_sibling_and_new_totals(sim: Simulator, connect: Callable[[], Client]) -> None:
    market, a, b = two_token_market(sim)
    c, only_b = connect(), connect()
    c.subscribe([a])
    c.recv_json()
    only_b.subscribe([b], initial_dump=False)
    only_b.assert_nothing_queued()
    sim.set_book(a, [("0.40", "10"), ("0.39", "20")], [("0.45", "5")])
    c.recv_json()
    sim.price_change([(a, "BUY", "0.40", "0"), (b, "SELL", "0.99", "12.50"), (a, "BUY", "0.41", "3")])
    raw = c.recv()
    assert only_b.recv() == raw  # the whole frame goes to subscribers of ANY asset in it
    msg = orjson.loads(raw)
    assert msg["event_type"] == "price_change" and msg["market"] == market
    entries = msg["price_changes"]
    assert [(e["asset_id"], e["side"], e["price"], e["size"]) for e in entries] == [
        (a, "BUY", "0.4", "0"),
        (b, "SELL", "0.99", "12.5"),
        (a, "BUY", "0.41", "3"),
    ]
    assert (entries[0]["best_bid"], entries[0]["best_ask"]) == ("0.39", "0.45")
    assert (entries[2]["best_bid"], entries[2]["best_ask"]) == ("0.41", "0.45")
    assert all(len(e["hash"]) == 40 for e in entries)
    assert sim.truth(a) == Top("0.41", "3", "0.45", "5")
    assert ("0.99", "12.5") in sim.book(b)[1]
    # Empty sides show the live server's quirk: best_bid "0", best_ask "1".
    sim.price_change([(a, "SELL", "0.45", "0")])
    assert (c.recv_json()["price_changes"][0]["best_ask"]) == "1"
    assert sim.truth(a) == Top("0.41", "3", "", "")
    sim.price_change([(a, "BUY", "0.41", "0"), (a, "BUY", "0.39", "0")])
    entries = c.recv_json()["price_changes"]
    assert (entries[0]["best_bid"], entries[1]["best_bid"], entries[1]["best_ask"]) == ("0.39", "0", "1")
    assert sim.truth(a) == Top("", "", "", "")
    assert sim.violations == []


def test_canonical_strings_in_frames_and_truth(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a], initial_dump=False)
    c.assert_nothing_queued()  # the subscription is in place before scripting
    sim.set_book(a, [("0.50", "100.00"), ("0.490", "1e2")], [("0.5100", "12.50")], naming="buys_sells")
    book = c.recv_json()
    assert "bids" not in book and book["buys"] == [
        {"price": "0.49", "size": "100"},
        {"price": "0.5", "size": "100"},
    ]
    assert book["sells"] == [{"price": "0.51", "size": "12.5"}]
    assert sim.truth(a) == Top("0.5", "100", "0.51", "12.5")


def test_legacy_price_change(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, b = two_token_market(sim)
    c = connect()
    c.subscribe([a], initial_dump=False)
    c.assert_nothing_queued()
    sim.set_book(a, [("0.3", "1")], [("0.6", "1")])
    c.recv_json()
    sim.price_change_legacy(a, [("BUY", "0.31", "4"), ("SELL", "0.6", "0")])
    msg = c.recv_json()
    assert msg["event_type"] == "price_change" and msg["asset_id"] == a and "price_changes" not in msg
    assert msg["changes"] == [
        {"price": "0.31", "side": "BUY", "size": "4"},
        {"price": "0.6", "side": "SELL", "size": "0"},
    ]
    assert len(msg["hash"]) == 40
    assert sim.truth(a) == Top("0.31", "4", "", "")
    sim.price_change_legacy(b, [("BUY", "0.01", "4")])  # legacy form is per asset: no sibling leak
    c.assert_nothing_queued()


def test_tick_size_change_then_separate_book(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a])
    c.recv_json()
    sim.tick_size_change(a, "0.001")
    first = c.recv_json()
    assert first["event_type"] == "tick_size_change"
    assert (first["old_tick_size"], first["new_tick_size"], first["asset_id"]) == ("0.01", "0.001", a)
    second = c.recv_json()
    assert isinstance(second, dict) and second["event_type"] == "book" and second["tick_size"] == "0.001"
    assert second["bids"][-1]["price"] == sim.truth(a).bid


def test_trade_sends_last_trade_price_then_book(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a], initial_dump=False)
    c.assert_nothing_queued()
    ask = sim.truth(a).ask
    sim.trade(a, ask, "25", "BUY")
    trade = c.recv_json()
    assert trade["event_type"] == "last_trade_price"
    assert (trade["price"], trade["size"], trade["side"]) == (ask, "25", "BUY")
    assert trade["transaction_hash"].startswith("0x") and "fee_rate_bps" in trade
    book = c.recv_json()
    assert book["event_type"] == "book" and book["last_trade_price"] == ask
    sim.send_book(a)
    again = c.recv_json()
    assert again["event_type"] == "book" and again["bids"] == book["bids"] and again["asks"] == book["asks"]


def test_custom_features(sim: Simulator, connect: Callable[[], Client]) -> None:
    market, a, b = two_token_market(sim)
    plain, custom = connect(), connect()
    plain.subscribe([a], initial_dump=False)
    custom.subscribe([a], initial_dump=False, custom_feature_enabled=True)
    wait_for(lambda: len(sim.connections()) == 2 and all(i.subscribed for i in sim.connections()))
    bid = Decimal(sim.truth(a).bid)
    ask = Decimal(sim.truth(a).ask)
    new_bid = canon(bid + Decimal("0.001"))
    assert Decimal(new_bid) < ask
    sim.price_change([(a, "BUY", new_bid, "5")])
    assert custom.recv_json()["event_type"] == "price_change"
    bba = custom.recv_json()
    assert bba["event_type"] == "best_bid_ask" and (bba["best_bid"], bba["best_ask"]) == (new_bid, canon(ask))
    assert bba["spread"] == canon(ask - Decimal(new_bid))
    assert plain.recv_json()["event_type"] == "price_change"
    plain.assert_nothing_queued()  # no best_bid_ask without the custom feature
    sim.price_change([(a, "BUY", canon(bid - Decimal("0.05")), "5")])  # below the top: no best_bid_ask
    for c in (custom, plain):
        assert c.recv_json()["event_type"] == "price_change"
        c.assert_nothing_queued()
    sim.set_book(a, [("0.2", "1")], [("0.3", "1")])
    assert [custom.recv_json()["event_type"] for _ in range(2)] == ["book", "best_bid_ask"]
    assert plain.recv_json()["event_type"] == "book"
    sim.best_bid_ask(a)
    explicit = custom.recv_json()
    assert explicit["event_type"] == "best_bid_ask" and explicit["best_bid"] == "0.2"
    plain.assert_nothing_queued()
    sim.resolve(market, b)
    resolved = custom.recv_json()
    assert resolved["event_type"] == "market_resolved" and resolved["winning_asset_id"] == b
    assert resolved["assets_ids"] == [a, b] and resolved["winning_outcome"] == "No"
    new_id = sim.new_market()
    announced = custom.recv_json()
    assert announced["event_type"] == "new_market" and announced["market"] == new_id
    assert announced["assets_ids"] == sim.markets()[new_id]
    plain.assert_nothing_queued()


def test_crossing_trade_arrives_as_one_timestamp_with_the_final_top_first(
    sim: Simulator, connect: Callable[[], Client]
) -> None:
    _, a, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a], initial_dump=False)
    c.assert_nothing_queued()
    sim.set_book(a, [("0.40", "10")], [("0.45", "5"), ("0.46", "7"), ("0.48", "9")])
    c.recv_json()
    # A BUY for 20 up to 0.47: takes 0.45 x5 and 0.46 x7, rests 8 at 0.47.
    sim.crossing_trade(a, "BUY", "0.47", "20")
    final = Top("0.47", "8", "0.48", "9")
    assert sim.truth(a) == final
    msgs = [c.recv_json() for _ in range(3)]
    assert {m["event_type"] for m in msgs} == {"price_change"}
    assert len({m["timestamp"] for m in msgs}) == 1
    steps = [(e["side"], e["price"], e["size"]) for m in msgs for e in m["price_changes"]]
    assert steps == [("BUY", "0.47", "8"), ("SELL", "0.45", "0"), ("SELL", "0.46", "0")]
    # Every message, the first included, already says the final top ...
    assert {(e["best_bid"], e["best_ask"]) for m in msgs for e in m["price_changes"]} == {("0.47", "0.48")}
    # ... while a client applying the first one alone holds a crossed book (bid 0.47 > ask 0.45).
    trade = c.recv_json()
    assert (trade["event_type"], trade["price"], trade["size"], trade["side"]) == (
        "last_trade_price",
        "0.46",
        "12",
        "BUY",
    )
    assert trade["timestamp"] == msgs[0]["timestamp"]
    c.assert_nothing_queued()  # no best_bid_ask without custom features, nothing else
    assert sim.violations == []


def test_crossing_trade_without_a_remainder_and_with_a_gap(
    sim: Simulator, connect: Callable[[], Client]
) -> None:
    _, a, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a], initial_dump=False, custom_feature_enabled=True)
    c.assert_nothing_queued()
    sim.set_book(a, [("0.40", "10"), ("0.39", "4"), ("0.30", "1")], [("0.45", "5")])
    c.recv_json()  # book
    c.recv_json()  # best_bid_ask
    t0 = time.monotonic()
    sim.crossing_trade(a, "SELL", "0.39", "12", gap_s=0.2)  # 0.40 x10, then 0.39 x2 of 4
    assert time.monotonic() - t0 >= 0.2
    first, second = c.recv_json(), c.recv_json()
    assert [(e["price"], e["size"]) for m in (first, second) for e in m["price_changes"]] == [
        ("0.4", "0"),
        ("0.39", "2"),
    ]
    assert first["price_changes"][0]["best_bid"] == "0.39"  # the later removal already reflected
    assert first["timestamp"] == second["timestamp"]
    assert c.recv_json()["event_type"] == "last_trade_price"
    bba = c.recv_json()
    assert (bba["event_type"], bba["best_bid"], bba["best_ask"]) == ("best_bid_ask", "0.39", "0.45")
    assert sim.truth(a) == Top("0.39", "2", "0.45", "5")


def test_crossing_trade_that_does_not_cross_is_refused(sim: Simulator) -> None:
    _, a, _ = two_token_market(sim)
    sim.set_book(a, [("0.40", "10")], [("0.45", "5")])
    with pytest.raises(ValueError, match="does not cross"):
        sim.crossing_trade(a, "BUY", "0.44", "1")
    assert sim.truth(a) == Top("0.4", "10", "0.45", "5")


@pytest.mark.parametrize(("field", "sent"), [("price", "not-a-price"), ("size", "-3"), ("side", "HOLD")])
def test_a_corrupt_entry_rides_with_good_entries_and_the_truth_still_moves(
    sim: Simulator, connect: Callable[[], Client], field: str, sent: str
) -> None:
    _, a, b = two_token_market(sim)
    c = connect()
    c.subscribe([a, b], initial_dump=False)
    c.assert_nothing_queued()
    sim.set_book(a, [("0.40", "10")], [("0.45", "5")])
    sim.set_book(b, [("0.50", "10")], [("0.55", "5")])
    c.recv_json()
    c.recv_json()
    sim.price_change([(a, "BUY", "0.41", "3"), (b, "SELL", "0.54", "2")], corrupt={a: field})
    entries = c.recv_json()["price_changes"]  # one frame: the market's entries together
    bad, good = entries
    assert bad["asset_id"] == a and bad[field] == sent
    readable = {"asset_id": a, "price": "0.41", "size": "3", "side": "BUY", "hash": bad["hash"]}
    readable.update(best_bid="0.41", best_ask="0.45")
    assert bad == {**readable, field: sent}  # only that one field is unreadable
    assert (good["asset_id"], good["side"], good["price"], good["size"]) == (b, "SELL", "0.54", "2")
    assert sim.truth(a) == Top("0.41", "3", "0.45", "5")  # a real change the client could not read
    assert sim.truth(b) == Top("0.5", "10", "0.54", "2")


def test_corrupt_needs_a_known_field_and_a_change_to_corrupt(sim: Simulator) -> None:
    _, a, b = two_token_market(sim)
    with pytest.raises(ValueError, match="corrupt field"):
        sim.price_change([(a, "BUY", "0.41", "3")], corrupt={a: "hash"})
    with pytest.raises(ValueError, match="no change to corrupt"):
        sim.price_change([(a, "BUY", "0.41", "3")], corrupt={b: "price"})
