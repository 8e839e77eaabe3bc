"""sidecar.core.protocol: frame decoding, price/size validation, the three price_change schemas."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core import protocol
from sidecar.core.protocol import BUY, SELL, BadEntry, Control, LevelChange, Malformed

# ---- decode_frame ------------------------------------------------------------------------------


def test_object_frame_is_one_event() -> None:
    assert protocol.decode_frame(b'{"event_type":"book","asset_id":"1"}') == [
        {"event_type": "book", "asset_id": "1"}
    ]
    assert protocol.decode_frame('{"a":"1"}') == [{"a": "1"}]


def test_array_frame_is_its_events_in_order() -> None:
    assert protocol.decode_frame(b'[{"n":"1"},{"n":"2"},{"n":"3"}]') == [{"n": "1"}, {"n": "2"}, {"n": "3"}]
    assert protocol.decode_frame("[]") == []
    # non-object members are returned as-is; the engine rejects them one by one
    assert protocol.decode_frame(b'[1,"x",{"n":"1"}]') == [1, "x", {"n": "1"}]


@pytest.mark.parametrize(
    ("data", "text", "label"),
    [
        (b"PONG", "PONG", "PONG"),
        ("PONG", "PONG", "PONG"),
        (b"INVALID OPERATION", "INVALID OPERATION", "INVALID OPERATION"),
        (b"NO NEW ASSETS", "NO NEW ASSETS", "NO NEW ASSETS"),
        (b"PONG\n", "PONG", "PONG"),
        (b"pong", "pong", "other"),
        (b"Hello there", "Hello there", "other"),
        (b"\xff\xfe garbage", "\ufffd\ufffd garbage", "other"),
        (b"", "", "other"),
        ("", "", "other"),
        (b"123", "123", "other"),
        (b'"a json string"', '"a json string"', "other"),
    ],
)
def test_control_texts(data: bytes | str, text: str, label: str) -> None:
    decoded = protocol.decode_frame(data)
    assert isinstance(decoded, Control)
    assert decoded.text == text
    assert decoded.label == label


def test_control_text_is_bounded() -> None:
    decoded = protocol.decode_frame(b"X" * 10_000)
    assert decoded == Control("X" * 64)
    assert decoded.label == "other"


@pytest.mark.parametrize("data", [b"{", b"[1,", b'{"a":}', b"{'a': 1}", "[NaN]", b'{"a":"\xff"}'])
def test_bad_json_is_malformed(data: bytes | str) -> None:
    with pytest.raises(Malformed) as info:
        protocol.decode_frame(data)
    assert info.value.reason == "bad_json"


def test_malformed_carries_reason_and_detail() -> None:
    exc = Malformed("bad_price", "x")
    assert exc.reason == "bad_price"
    assert exc.detail == "x"
    assert str(exc) == "bad_price: x"
    assert str(Malformed("bad_side")) == "bad_side"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decode_frame_never_raises_anything_but_malformed(data: bytes) -> None:
    try:
        out = protocol.decode_frame(data)
    except Malformed as exc:
        assert exc.reason == "bad_json"
        return
    assert isinstance(out, list | Control)


# ---- prices and sizes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "key"),
    [("0", 0.0), ("0.5", 0.5), ("0.50", 0.5), ("0.500", 0.5), ("1", 1.0), ("1.0", 1.0), ("0.001", 0.001)],
)
def test_price_key_valid(price: str, key: float) -> None:
    assert protocol.price_key(price) == key


def test_equal_prices_written_differently_share_a_key() -> None:
    assert protocol.price_key("0.5") == protocol.price_key("0.50") == protocol.price_key("0.5000")
    assert protocol.price_key("0.51") != protocol.price_key("0.511")


@pytest.mark.parametrize(
    "price",
    ["NaN", "nan", "inf", "-inf", "Infinity", "-0.01", "1.0001", "2", "abc", "", "0.5.1", "1e400"],
)
def test_price_key_rejects_bad_strings(price: str) -> None:
    with pytest.raises(Malformed) as info:
        protocol.price_key(price)
    assert info.value.reason == "bad_price"


@pytest.mark.parametrize("price", [0.5, 1, None, True, ["0.5"], {"p": "0.5"}, b"0.5"])
def test_price_key_rejects_non_strings(price: object) -> None:
    with pytest.raises(Malformed) as info:
        protocol.price_key(price)
    assert info.value.reason == "bad_price"


@pytest.mark.parametrize("validate", [protocol.price_key, protocol.size_value])
def test_non_canonical_numbers_are_rejected(validate: object) -> None:
    # These strings are what would be written to Redis as bid/ask/size (the book keeps the
    # exchange's own strings), so anything float() merely tolerates must be rejected.
    for text in (" 0.5", "0.5 ", "0.2_5", "\u0660.\u0665"):
        with pytest.raises(Malformed):
            validate(text)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("size", "value"), [("0", 0.0), ("0.0", 0.0), ("1304.72", 1304.72), ("10500100", 10500100.0)]
)
def test_size_value_valid(size: str, value: float) -> None:
    assert protocol.size_value(size) == value


@pytest.mark.parametrize("size", ["NaN", "inf", "Infinity", "-1", "-0.01", "x", "", "1e999"])
def test_size_value_rejects_bad_strings(size: str) -> None:
    with pytest.raises(Malformed) as info:
        protocol.size_value(size)
    assert info.value.reason == "bad_size"


@pytest.mark.parametrize("size", [1.0, 0, None, ["1"], b"1"])
def test_size_value_rejects_non_strings(size: object) -> None:
    with pytest.raises(Malformed) as info:
        protocol.size_value(size)
    assert info.value.reason == "bad_size"


def test_parse_levels_keeps_exact_strings_and_drops_zero_sizes() -> None:
    out = protocol.parse_levels(
        [
            {"price": "0.50", "size": "10.00"},
            {"price": "0.4", "size": "0"},
            {"price": "0.3", "size": "0.000"},
            {"price": "0.61", "size": "1304.72"},
        ]
    )
    assert out == {0.5: ("0.50", "10.00"), 0.61: ("0.61", "1304.72")}
    assert protocol.parse_levels([]) == {}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("0.5", "bad_levels"),
        (None, "bad_levels"),
        ({"price": "0.5", "size": "1"}, "bad_levels"),
        (["0.5"], "bad_levels"),
        ([{"price": "0.5", "size": "1"}, {"price": "NaN", "size": "1"}], "bad_price"),
        ([{"price": "0.5", "size": "-1"}], "bad_size"),
        ([{"price": "0.5"}], "bad_size"),
        ([{"size": "1"}], "bad_price"),
        ([{"price": 0.5, "size": "1"}], "bad_price"),
    ],
)
def test_parse_levels_all_or_nothing(raw: object, reason: str) -> None:
    with pytest.raises(Malformed) as info:
        protocol.parse_levels(raw)
    assert info.value.reason == reason


# ---- book sides ----------------------------------------------------------------------------------


def test_book_sides_bids_asks() -> None:
    event = {"bids": [{"price": "0.1", "size": "1"}], "asks": [{"price": "0.9", "size": "2"}]}
    assert protocol.book_sides(event) == (event["bids"], event["asks"])


def test_book_sides_buys_sells() -> None:
    event = {"buys": [{"price": "0.1", "size": "1"}], "sells": [{"price": "0.9", "size": "2"}]}
    assert protocol.book_sides(event) == (event["buys"], event["sells"])


def test_book_sides_explicit_empty_lists_and_mixed_names() -> None:
    assert protocol.book_sides({"bids": [], "asks": []}) == ([], [])
    assert protocol.book_sides({"buys": [], "sells": [{"price": "0.9", "size": "2"}]}) == (
        [],
        [{"price": "0.9", "size": "2"}],
    )
    assert protocol.book_sides({"bids": [], "sells": []}) == ([], [])


@pytest.mark.parametrize(
    "event",
    [
        {"event_type": "book", "asset_id": "1"},
        {"bids": [{"price": "0.1", "size": "1"}]},  # asks missing: malformed, not an empty side
        {"sells": []},
        {"bids": [], "asks": None},
        {"bids": None, "asks": []},
        {"bids": [], "asks": {"price": "0.9", "size": "1"}},
        {"buys": "lots", "sells": []},
        {"bids": 7, "asks": []},
    ],
)
def test_book_with_a_missing_or_non_list_side_is_malformed(event: dict[str, object]) -> None:
    with pytest.raises(Malformed) as info:
        protocol.book_sides(event)
    assert info.value.reason == "bad_book"


def test_level_change_sides() -> None:
    def side(value: object) -> LevelChange | BadEntry:
        return protocol.level_change("1", {"side": value, "price": "0.5", "size": "1"})

    assert side("BUY") == LevelChange("1", BUY, "0.5", "1", 0.5, False) and BUY == 0
    assert side("buy") == LevelChange("1", BUY, "0.5", "1", 0.5, False)
    assert side("SELL") == LevelChange("1", SELL, "0.5", "1", 0.5, False) and SELL == 1
    assert side("sell") == LevelChange("1", SELL, "0.5", "1", 0.5, False)
    for bad in ("Buy", "BID", "", None, 0, ["BUY"]):
        assert side(bad) == BadEntry("1", "bad_side", repr(bad)[:20])


# ---- price_change schemas ------------------------------------------------------------------------


def test_price_change_new_schema_multi_asset() -> None:
    event = {
        "event_type": "price_change",
        "market": "0xm",
        "timestamp": "1757908892351",
        "price_changes": [
            {"asset_id": "111", "price": "0.5", "size": "200", "side": "BUY", "hash": "h1",
             "best_bid": "0.5", "best_ask": "1"},
            {"asset_id": "222", "price": "0.5", "size": "0", "side": "SELL", "hash": "h2",
             "best_bid": "0", "best_ask": "0.52"},
        ],
    }  # fmt: skip
    assert protocol.price_changes(event) == [
        LevelChange("111", BUY, "0.5", "200", 0.5, False, "0.5", "1"),
        LevelChange("222", SELL, "0.5", "0", 0.5, True, "0", "0.52"),
    ]


def test_price_change_new_schema_without_best_fields() -> None:
    event = {"price_changes": [{"asset_id": "1", "price": "0.4", "size": "3", "side": "SELL"}]}
    assert protocol.price_changes(event) == [LevelChange("1", SELL, "0.4", "3", 0.4, False)]


def test_price_change_legacy_changes_list() -> None:
    event = {
        "event_type": "price_change",
        "asset_id": "777",
        "market": "0xm",
        "timestamp": "1",
        "changes": [
            {"price": "0.4", "side": "BUY", "size": "10"},
            {"price": "0.6", "side": "SELL", "size": "0"},
        ],
    }
    assert protocol.price_changes(event) == [
        LevelChange("777", BUY, "0.4", "10", 0.4, False),
        LevelChange("777", SELL, "0.6", "0", 0.6, True),
    ]


def test_price_change_oldest_single_level() -> None:
    event = {"event_type": "price_change", "asset_id": "9", "price": "0.33", "side": "SELL", "size": "12.5"}
    assert protocol.price_changes(event) == [LevelChange("9", SELL, "0.33", "12.5", 0.33, False)]


def test_price_changes_takes_precedence_over_legacy_fields() -> None:
    event = {
        "asset_id": "9",
        "changes": [{"price": "0.1", "side": "BUY", "size": "1"}],
        "price_changes": [{"asset_id": "8", "price": "0.2", "size": "2", "side": "SELL"}],
    }
    assert protocol.price_changes(event) == [LevelChange("8", SELL, "0.2", "2", 0.2, False)]


@pytest.mark.parametrize(
    "event",
    [
        {"price_changes": "nope"},
        {"changes": []},
        {"asset_id": 5, "changes": []},
        {"price": "0.1", "size": "1", "side": "BUY"},
    ],
)
def test_price_change_without_entries_or_an_asset_is_malformed(event: dict[str, object]) -> None:
    with pytest.raises(Malformed) as info:
        protocol.price_changes(event)
    assert info.value.reason == "bad_price_change"


def test_each_price_change_entry_stands_alone() -> None:
    """A bad entry becomes a BadEntry in its place, naming its asset when it has one; the valid
    entries around it, for any asset, are still returned."""
    event = {
        "price_changes": [
            {"asset_id": "1", "price": "0.1", "size": "1", "side": "X"},
            {"asset_id": "2", "price": "0.2", "size": "5", "side": "BUY",
             "best_bid": "0.2", "best_ask": "0.3"},
            {"asset_id": "3", "price": "1.5", "size": "1", "side": "SELL"},
            {"asset_id": "3", "price": "0.3", "size": "NaN", "side": "SELL"},
            {"asset_id": "3", "price": "0.35", "size": "2", "side": "sell"},
            "nope",
            {"price": "0.1", "size": "1", "side": "BUY"},
            {"asset_id": 5, "price": "0.1", "size": "1", "side": "BUY"},
            {"asset_id": "4", "price": 0.4, "size": "1", "side": "BUY"},
            {"asset_id": "4", "size": "1", "side": "BUY"},
            {"asset_id": "4", "price": "0.4", "size": 1, "side": "BUY"},
        ]
    }  # fmt: skip
    out = protocol.price_changes(event)
    assert [(type(e).__name__, e.asset_id, getattr(e, "reason", "")) for e in out] == [
        ("BadEntry", "1", "bad_side"),
        ("LevelChange", "2", ""),
        ("BadEntry", "3", "bad_price"),
        ("BadEntry", "3", "bad_size"),
        ("LevelChange", "3", ""),
        ("BadEntry", None, "bad_price_change"),
        ("BadEntry", None, "bad_price_change"),
        ("BadEntry", None, "bad_price_change"),
        ("BadEntry", "4", "bad_price"),
        ("BadEntry", "4", "bad_price"),
        ("BadEntry", "4", "bad_size"),
    ]
    assert out[1] == LevelChange("2", BUY, "0.2", "5", 0.2, False, "0.2", "0.3")
    assert out[4] == LevelChange("3", SELL, "0.35", "2", 0.35, False)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"asset_id": "1", "changes": "x"}, [BadEntry("1", "bad_price_change", "changes is not a list")]),
        ({"asset_id": "1"}, [BadEntry("1", "bad_price_change", "no recognised schema")]),
        ({"asset_id": "1", "price": "0.1", "size": "1", "side": "?"}, [BadEntry("1", "bad_side", "'?'")]),
        (
            {"asset_id": "1",
             "changes": ["x", {"price": "0.1", "size": "1"}, {"price": "0.2", "size": "0", "side": "BUY"}]},
            [
                BadEntry("1", "bad_price_change", "change is not an object"),
                BadEntry("1", "bad_side", "None"),
                LevelChange("1", BUY, "0.2", "0", 0.2, True),
            ],
        ),
    ],
)  # fmt: skip
def test_legacy_price_change_with_an_asset_names_it_in_its_bad_entries(
    event: dict[str, object], expected: list[object]
) -> None:
    assert protocol.price_changes(event) == expected


# ---- timestamps and token ids --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1728799418260", 1728799418260),
        ("0", 0),
        (1728799418260, 1728799418260),
        ("", None),
        ("-1", None),
        ("12.5", None),
        ("1" * 17, None),
        (10**16, None),
        (-5, None),
        (True, None),
        (None, None),
        (1.5, None),
    ],
)
def test_timestamp_ms(value: object, expected: int | None) -> None:
    assert protocol.timestamp_ms(value) == expected


def test_timestamp_ms_never_raises_on_unicode_digits() -> None:
    # str.isdigit() accepts superscripts that int() refuses; the module promises never to raise.
    assert protocol.timestamp_ms("\u00b2") is None
    assert protocol.timestamp_ms("\u0661\u0662") is None  # Arabic-Indic digits are not exchange ms


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("1", True),
        ("0", True),
        ("9" * 100, True),
        ("9" * 101, False),
        ("", False),
        (" 1", False),
        ("1 ", False),
        ("1\n", False),
        ("-1", False),
        ("0x1f", False),
        ("1.0", False),
        ("\u0661", False),
        ("1e5", False),
    ],
)
def test_is_token_id(value: str, ok: bool) -> None:
    assert protocol.is_token_id(value) is ok


# ---- subscription frames -------------------------------------------------------------------------


def test_subscribe_first_exact_json() -> None:
    text = protocol.subscribe_first(["111", "222"])
    assert text == (
        '{"type":"market","assets_ids":["111","222"],"initial_dump":true,"custom_feature_enabled":true}'
    )
    assert orjson.loads(text) == {
        "type": "market",
        "assets_ids": ["111", "222"],
        "initial_dump": True,
        "custom_feature_enabled": True,
    }


def test_subscribe_first_accepts_any_iterable() -> None:
    assert orjson.loads(protocol.subscribe_first(iter(["5"])))["assets_ids"] == ["5"]


def test_subscribe_op_exact_json() -> None:
    assert (
        protocol.subscribe_op("subscribe", ["1", "2"]) == '{"operation":"subscribe","assets_ids":["1","2"]}'
    )
    assert protocol.subscribe_op("unsubscribe", ("3",)) == '{"operation":"unsubscribe","assets_ids":["3"]}'
    assert "type" not in orjson.loads(protocol.subscribe_op("subscribe", ["1"]))


def test_constants() -> None:
    assert frozenset({"PONG", "INVALID OPERATION", "NO NEW ASSETS"}) == protocol.CONTROL_TEXTS
