"""sidecar.core.events: a frame parsed once into typed events; bad input becomes a typed bad event."""

from __future__ import annotations

import orjson

from sidecar.core import events
from sidecar.core.protocol import BUY, BadEntry, Control, LevelChange, Malformed


def one(raw: object) -> events.Event:
    frame = events.parse_frame(orjson.dumps(raw))
    assert isinstance(frame, list) and len(frame) == 1
    return frame[0]


def test_book_is_parsed_whole() -> None:
    ev = one(
        {
            "event_type": "book",
            "asset_id": "1",
            "market": "0xm",
            "timestamp": "17",
            "tick_size": "0.01",
            "buys": [{"price": "0.4", "size": "2"}],
            "sells": [{"price": "0.6", "size": "0"}],
        }
    )
    assert ev == events.Book("1", {0.4: ("0.4", "2")}, {}, 17, "0xm", "0.01")


def test_level_changes_carry_the_exchange_best_prices_per_entry() -> None:
    ev = one(
        {
            "event_type": "price_change",
            "market": "0xm",
            "timestamp": "5",
            "price_changes": [
                {
                    "asset_id": "1",
                    "price": "0.5",
                    "size": "3",
                    "side": "BUY",
                    "best_bid": "0.5",
                    "best_ask": "0.6",
                },
                {"asset_id": "2", "price": "x", "size": "3", "side": "BUY"},
            ],
        }
    )
    assert ev == events.LevelChanges(
        "0xm",
        5,
        [LevelChange("1", BUY, "0.5", "3", 0.5, False, "0.5", "0.6"), BadEntry("2", "bad_price", "'x'")],
    )


def test_other_kinds() -> None:
    assert one({"event_type": "best_bid_ask", "asset_id": "1", "best_bid": "0.4", "best_ask": 7}) == (
        events.BestBidAsk("1", "0.4", 7)
    )
    assert one(
        {
            "event_type": "last_trade_price",
            "asset_id": "1",
            "price": "0.4",
            "size": 3,
            "side": "BUY",
            "timestamp": "9",
        }
    ) == events.Trade("1", "0.4", None, "BUY", 9)
    assert one({"event_type": "tick_size_change", "asset_id": "1", "new_tick_size": "0.001"}) == (
        events.TickSizeChange("1", "0.001", None)
    )
    assert one({"event_type": "market_resolved", "assets_ids": ["1", 2], "winning_asset_id": "1"}) == (
        events.Resolution(["1", None], "1")
    )
    assert one({"event_type": "market_resolved", "asset_id": "3"}) == events.Resolution(["3"], None)
    assert one({"event_type": "new_market", "assets_ids": ["1"]}) == events.Broadcast("new_market")
    assert one({"event_type": "x" * 100}) == events.Unknown("x" * 40)
    assert one({"asset_id": "1"}) == events.Unknown("None")


def test_bad_events_name_their_kind_and_asset() -> None:
    assert one({"event_type": "book", "asset_id": "1", "bids": []}) == events.BadEvent(
        "book", "bad_book", "no asks or sells", "1"
    )
    assert one({"event_type": "last_trade_price", "asset_id": "1", "price": "2"}) == events.BadEvent(
        "last_trade_price", "bad_price", "2", "1"
    )
    assert one({"event_type": "price_change", "market": "0xm"}) == events.BadEvent(
        "price_change", "bad_price_change", "no asset_id", None, "0xm"
    )
    frame = events.parse_frame(b'[1, {"event_type": "new_market"}]')
    assert frame == [
        events.BadEvent("", "bad_event", "event is not an object"),
        events.Broadcast("new_market"),
    ]


def test_control_and_bad_frames() -> None:
    assert events.parse_frame(b"PONG") == Control("PONG")
    bad = events.parse_frame(b"{nope")
    assert isinstance(bad, events.BadFrame) and bad.reason == "bad_json"
    assert events.parse_frame(b"[5") == events.BadFrame("bad_json", str(_bad_json()))


def _bad_json() -> Exception:
    try:
        orjson.loads(b"[5")
    except orjson.JSONDecodeError as exc:
        return Malformed("bad_json", str(exc)[:120])
    raise AssertionError("unreachable")
