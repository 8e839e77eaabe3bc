"""The wire-message builders alone: field names, optional fields, order, digests, frames."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from pmsim import messages


def test_a_book_carries_the_live_fields_in_the_live_order() -> None:
    msg = messages.book("7", "0xm", [("0.4", "1"), ("0.5", "2")], [("0.7", "3")], 1234, hash="0xabc")
    assert list(msg) == ["market", "asset_id", "timestamp", "hash", "bids", "asks", "event_type"]
    assert msg["bids"] == [{"price": "0.4", "size": "1"}, {"price": "0.5", "size": "2"}]  # order kept
    assert (msg["timestamp"], msg["hash"], msg["event_type"]) == ("1234", "0xabc", "book")
    full = messages.book("7", "0xm", [], [], "1", tick_size="0.01", last_trade_price="", naming="buys_sells")
    assert (full["buys"], full["sells"], full["tick_size"], full["last_trade_price"]) == ([], [], "0.01", "")
    assert "bids" not in full and list(full)[-1] == "event_type"


def test_a_book_carries_the_reference_data_in_the_summary_order() -> None:
    msg = messages.book("7", "0xm", [], [], "1", tick_size="0.001", min_order_size="15", neg_risk=True)
    summary = messages.book_summary("7", "0xm", [], [], "1", tick_size="0.001", last_trade_price="")
    keys = ["min_order_size", "tick_size", "neg_risk"]
    assert [k for k in msg if k in keys] == [k for k in summary if k in keys] == keys
    assert (msg["tick_size"], msg["min_order_size"], msg["neg_risk"]) == ("0.001", "15", True)
    assert list(msg)[-1] == "event_type"
    bare = messages.book("7", "0xm", [], [], "1", neg_risk=False)  # False is a value, not "absent"
    assert bare["neg_risk"] is False and "min_order_size" not in bare and "tick_size" not in bare


def test_with_digest_hashes_the_message_as_it_stands_with_an_empty_hash() -> None:
    msg = messages.book("7", "0xm", [("0.4", "1")], [("0.7", "3")], "1", hash="stale")
    expected = hashlib.sha1(orjson.dumps({**msg, "hash": ""})).hexdigest()
    assert messages.with_digest(msg)["hash"] == expected
    assert messages.with_digest(msg)["hash"] == expected  # idempotent: its own hash is not hashed
    summary = messages.book_summary("7", "0xm", [], [], "1", tick_size="0.01", last_trade_price="0.5")
    assert summary["hash"] == hashlib.sha1(orjson.dumps({**summary, "hash": ""})).hexdigest()
    assert (summary["min_order_size"], summary["neg_risk"]) == ("5", False) and "event_type" not in summary


def test_a_price_change_entry_leaves_out_the_best_prices_only_when_not_given() -> None:
    bare = messages.price_change_entry("7", "0.4", "0", "BUY", "h")
    assert bare == {"asset_id": "7", "price": "0.4", "size": "0", "side": "BUY", "hash": "h"}
    empty = messages.price_change_entry("7", "0.4", "0", "BUY", "h", messages.EMPTY_BID, messages.EMPTY_ASK)
    assert (empty["best_bid"], empty["best_ask"]) == ("0", "1")
    msg = messages.price_change("0xm", [bare, empty], 5)
    assert msg == {
        "market": "0xm",
        "price_changes": [bare, empty],
        "timestamp": "5",
        "event_type": "price_change",
    }


def test_the_legacy_price_change_is_per_asset_with_changes() -> None:
    msg = messages.legacy_price_change("7", "0xm", [("0.31", "BUY", "4")], 9, "h")
    assert msg["changes"] == [{"price": "0.31", "side": "BUY", "size": "4"}]
    assert (msg["asset_id"], msg["timestamp"], msg["event_type"]) == ("7", "9", "price_change")
    assert "price_changes" not in msg


def test_the_other_events_name_their_type_and_fields() -> None:
    bba = messages.best_bid_ask("7", "0xm", "0.4", "0.45", "0.05", 1)
    assert (bba["event_type"], bba["best_bid"], bba["best_ask"], bba["spread"]) == (
        "best_bid_ask",
        "0.4",
        "0.45",
        "0.05",
    )
    tick = messages.tick_size_change("7", "0xm", "0.01", "0.001", 1)
    assert (tick["event_type"], tick["old_tick_size"], tick["new_tick_size"]) == (
        "tick_size_change",
        "0.01",
        "0.001",
    )
    trade = messages.last_trade_price("7", "0xm", "0.5", "3", "SELL", 1)
    assert trade["event_type"] == "last_trade_price" and "transaction_hash" not in trade
    assert messages.last_trade_price("7", "0xm", "0.5", "3", "SELL", 1, transaction_hash="0x1")[
        "transaction_hash"
    ]


@pytest.mark.parametrize(
    ("tokens", "winner", "outcome"),
    [(["a", "b"], "b", "No"), (["a", "b"], "a", "Yes"), (["a", "b", "c"], "c", "Outcome 2")],
)
def test_market_resolved_names_the_winning_outcome_by_its_place(
    tokens: list[str], winner: str, outcome: str
) -> None:
    msg = messages.market_resolved("1", "0xm", tokens, winner, 1)
    assert (msg["winning_asset_id"], msg["winning_outcome"], msg["assets_ids"]) == (winner, outcome, tokens)
    assert msg["event_type"] == "market_resolved"


def test_new_market_lists_its_tokens_and_outcomes() -> None:
    msg = messages.new_market("1", "0x1234567890ab", ["a", "b"], "Will it?", 1)
    assert (msg["event_type"], msg["assets_ids"], msg["outcomes"]) == (
        "new_market",
        ["a", "b"],
        ["Yes", "No"],
    )
    assert msg["slug"] == "sim-market-12345678" and msg["question"] == "Will it?"


def test_one_event_is_an_object_frame_and_several_an_array() -> None:
    one = messages.tick_size_change("7", "0xm", "0.01", "0.001", 1)
    assert orjson.loads(messages.encode(one)) == one
    assert orjson.loads(messages.encode(one, one)) == [one, one]


def test_the_client_frames() -> None:
    assert messages.subscription(["1", "2"]) == {
        "type": "market",
        "assets_ids": ["1", "2"],
        "initial_dump": True,
        "custom_feature_enabled": True,
    }
    assert messages.operation("unsubscribe", ("1",)) == {"operation": "unsubscribe", "assets_ids": ["1"]}
