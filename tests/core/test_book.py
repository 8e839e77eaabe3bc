"""sidecar.core.book: exact-string L2 book with cached best prices, against a live sample and a model."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core import protocol
from sidecar.core.book import EMPTY_TOP, Book
from sidecar.core.protocol import BUY, SELL

# A real book frame captured from the live channel (copied from shared/samples/ so it always runs).
LIVE_BOOK = Path(__file__).resolve().parent / "data" / "book_live_2024.json"


def make(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> Book:
    book = Book()
    book.replace(
        protocol.parse_levels([{"price": p, "size": s} for p, s in bids]),
        protocol.parse_levels([{"price": p, "size": s} for p, s in asks]),
    )
    return book


def put(book: Book, side: int, price: str, size: str) -> bool:
    return book.set_level(side, protocol.price_key(price), price, size, protocol.size_value(size) == 0.0)


# ---- the live sample -----------------------------------------------------------------------------


@pytest.fixture
def live_event() -> dict[str, Any]:
    return json.loads(LIVE_BOOK.read_text())


def test_live_sample_best_levels_are_last_but_found(live_event: dict[str, Any]) -> None:
    bids_raw, asks_raw = protocol.book_sides(live_event)
    # the trap: live data lists the best level LAST on both sides
    assert bids_raw[-1] == {"price": "0.511", "size": "1304.72"}
    assert asks_raw[-1] == {"price": "0.514", "size": "20230.87"}
    assert bids_raw[0]["price"] != "0.511" and asks_raw[0]["price"] != "0.514"
    book = Book()
    book.replace(protocol.parse_levels(bids_raw), protocol.parse_levels(asks_raw))
    assert book.top() == ("0.511", "1304.72", "0.514", "20230.87")
    assert book.bid_key == 0.511
    assert book.ask_key == 0.514
    assert book.depth() == (76, 86)
    assert not book.crossed


def test_live_sample_reversed_order_gives_same_top(live_event: dict[str, Any]) -> None:
    # REST documents the opposite order: order must not matter
    book = Book()
    book.replace(
        protocol.parse_levels(list(reversed(live_event["bids"]))),
        protocol.parse_levels(list(reversed(live_event["asks"]))),
    )
    assert book.top() == ("0.511", "1304.72", "0.514", "20230.87")


def test_live_sample_removing_best_bid_falls_back_to_next(live_event: dict[str, Any]) -> None:
    book = Book()
    book.replace(protocol.parse_levels(live_event["bids"]), protocol.parse_levels(live_event["asks"]))
    assert put(book, BUY, "0.511", "0") is True
    assert book.top()[:2] == ("0.51", "12848.17")
    assert put(book, SELL, "0.514", "0") is True
    assert book.top()[2:] == ("0.515", "43551.96")


# ---- snapshots ---------------------------------------------------------------------------------


def test_empty_book() -> None:
    book = Book()
    assert book.top() == EMPTY_TOP == ("", "", "", "")
    assert book.bid_key is None and book.ask_key is None
    assert book.depth() == (0, 0)
    assert not book.crossed


def test_snapshot_replaces_never_merges() -> None:
    book = make([("0.40", "1"), ("0.45", "2")], [("0.60", "3"), ("0.55", "4")])
    assert book.top() == ("0.45", "2", "0.55", "4")
    book.replace(protocol.parse_levels([{"price": "0.30", "size": "7"}]), {})
    assert book.top() == ("0.30", "7", "", "")
    assert book.depth() == (1, 0)
    assert 0.45 not in book.bids and 0.40 not in book.bids
    # an update to a level that only existed in the old snapshot is a new level now
    assert put(book, BUY, "0.40", "1") is True
    assert book.top()[:2] == ("0.40", "1")


def test_snapshot_with_both_sides_empty() -> None:
    book = make([("0.5", "1")], [("0.6", "1")])
    book.replace({}, {})
    assert book.top() == EMPTY_TOP
    assert book.bid_key is None and book.ask_key is None


def test_crossed_book_is_flagged() -> None:
    assert make([("0.6", "1")], [("0.5", "1")]).crossed
    assert make([("0.5", "1")], [("0.5", "1")]).crossed
    assert not make([("0.5", "1")], [("0.51", "1")]).crossed
    assert not make([("0.5", "1")], []).crossed


# ---- level changes -------------------------------------------------------------------------------


def test_set_level_reports_top_moves_on_bid_side() -> None:
    book = make([("0.40", "10"), ("0.45", "20")], [("0.60", "5")])
    assert put(book, BUY, "0.41", "7") is False  # new level below the top
    assert put(book, BUY, "0.40", "11") is False  # size change below the top
    assert book.top() == ("0.45", "20", "0.60", "5")
    assert put(book, BUY, "0.45", "25") is True  # top size changes
    assert book.top()[:2] == ("0.45", "25")
    assert put(book, BUY, "0.47", "1") is True  # better price
    assert book.top()[:2] == ("0.47", "1")
    assert put(book, BUY, "0.41", "0") is False  # removal below the top
    assert put(book, BUY, "0.33", "0") is False  # removal of a level that does not exist
    assert put(book, BUY, "0.47", "0") is True  # removal of the top recomputes
    assert book.top()[:2] == ("0.45", "25")
    assert book.depth() == (2, 1)


def test_set_level_reports_top_moves_on_ask_side() -> None:
    book = make([("0.40", "10")], [("0.60", "5"), ("0.55", "6")])
    assert put(book, SELL, "0.58", "1") is False
    assert put(book, SELL, "0.55", "9") is True
    assert put(book, SELL, "0.52", "3") is True
    assert book.top()[2:] == ("0.52", "3")
    assert put(book, SELL, "0.60", "0") is False
    assert put(book, SELL, "0.52", "0") is True
    assert book.top()[2:] == ("0.55", "9")
    assert put(book, SELL, "0.55", "0") is True
    assert put(book, SELL, "0.58", "0") is True
    assert book.top()[2:] == ("", "")
    assert book.ask_key is None
    assert put(book, SELL, "0.70", "2") is True  # first level on an empty side
    assert book.top()[2:] == ("0.70", "2")


def test_equal_prices_are_one_level_and_strings_are_kept_exact() -> None:
    book = make([("0.5", "10")], [])
    assert put(book, BUY, "0.50", "12.50") is True
    assert book.depth() == (1, 0)
    assert book.top()[:2] == ("0.50", "12.50")  # the newest exchange strings, untouched
    assert put(book, BUY, "0.500", "0.0") is True  # "0.500" with size "0.0" removes "0.5"
    assert book.top() == EMPTY_TOP
    assert book.depth() == (0, 0)


def test_sizes_keep_their_trailing_zeros() -> None:
    book = make([("0.1", "100.00")], [("0.9", "1000.0")])
    assert book.top() == ("0.1", "100.00", "0.9", "1000.0")


def test_rewriting_the_top_with_identical_strings_is_not_a_move() -> None:
    book = make([("0.45", "20")], [("0.55", "5")])
    assert put(book, BUY, "0.45", "20") is False
    assert put(book, SELL, "0.55", "5") is False


# ---- property: cached top vs a naive model -----------------------------------------------------

TICKS = st.integers(min_value=0, max_value=1000)
SIZES = st.sampled_from(["0", "0.0", "0.00", "1", "1.0", "10", "10.00", "250.5", "1304.72", "99999"])


@st.composite
def price_strings(draw: st.DrawFn) -> str:
    """A price on the 0.001 grid, in any of the spellings the exchange might use for it."""
    value = Decimal(draw(TICKS)).scaleb(-3)
    style = draw(st.sampled_from(["fixed", "normal", "padded"]))
    if style == "fixed":
        return format(value, "f")
    normal = format(value.normalize(), "f")
    if style == "normal":
        return normal
    return normal + ("0" if "." in normal else ".0")


LEVELS = st.lists(st.tuples(price_strings(), SIZES), max_size=12)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("snap"), LEVELS, LEVELS),
        st.tuples(st.just("set"), st.sampled_from([BUY, SELL]), price_strings(), SIZES),
    ),
    max_size=60,
)


class Model:
    def __init__(self) -> None:
        self.sides: dict[int, dict[Decimal, tuple[str, str]]] = {BUY: {}, SELL: {}}

    def snap(self, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> None:
        for side, pairs in ((BUY, bids), (SELL, asks)):
            levels: dict[Decimal, tuple[str, str]] = {}
            for price, size in pairs:
                if Decimal(size) != 0:
                    levels[Decimal(price)] = (price, size)
            self.sides[side] = levels

    def set(self, side: int, price: str, size: str) -> None:
        if Decimal(size) == 0:
            self.sides[side].pop(Decimal(price), None)
        else:
            self.sides[side][Decimal(price)] = (price, size)

    def top(self) -> tuple[str, str, str, str]:
        bids, asks = self.sides[BUY], self.sides[SELL]
        bid = bids[max(bids)] if bids else ("", "")
        ask = asks[min(asks)] if asks else ("", "")
        return bid[0], bid[1], ask[0], ask[1]


def as_decimals(top: tuple[str, str, str, str]) -> tuple[Decimal | None, ...]:
    return tuple(Decimal(x) if x else None for x in top)


@settings(max_examples=400, deadline=None)
@given(OPS)
def test_cached_top_always_matches_naive_model(ops: list[tuple[Any, ...]]) -> None:
    book, model = Book(), Model()
    for op in ops:
        before = model.top()
        if op[0] == "snap":
            _, bids, asks = op
            book.replace(
                protocol.parse_levels([{"price": p, "size": s} for p, s in bids]),
                protocol.parse_levels([{"price": p, "size": s} for p, s in asks]),
            )
            model.snap(bids, asks)
        else:
            _, side, price, size = op
            moved = put(book, side, price, size)
            model.set(side, price, size)
            if as_decimals(model.top()) != as_decimals(before):
                assert moved, f"top moved {before} -> {model.top()} but set_level said it did not"
            if model.top() == before and moved:
                # the only tolerated false alarm: the top level rewritten with the same strings
                assert Decimal(price) in (
                    (max(model.sides[BUY]) if model.sides[BUY] else None),
                    (min(model.sides[SELL]) if model.sides[SELL] else None),
                )
        top = book.top()
        assert as_decimals(top) == as_decimals(model.top())
        assert top == model.top()  # stronger: the exact exchange strings
        bids, asks = model.sides[BUY], model.sides[SELL]
        assert book.bid_key == (float(max(bids)) if bids else None)
        assert book.ask_key == (float(min(asks)) if asks else None)
        assert book.depth() == (len(bids), len(asks))
