"""The exchange simulator, driven over real loopback sockets by a raw websocket-client client.

Negative checks ("nothing was sent") use an in-band marker instead of waiting: a connection's
frames leave in queue order, so if the answer to a PING is the next frame, nothing was queued
before it. Only half-open (which answers nothing) needs a bounded timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import websocket
from hypothesis import given
from hypothesis import strategies as st
from pmsim import Simulator, Top, canon

ROOT = Path(__file__).resolve().parents[2]
HEX40 = set("0123456789abcdef")


def wait_for(cond: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll until cond() is truthy; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


class Client:
    """A thin raw client: what the sidecar's transport does, minus everything clever."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.ws = websocket.create_connection(url, skip_utf8_validation=True, timeout=timeout)

    def send(self, payload: Any) -> None:
        self.ws.send(payload if isinstance(payload, str) else orjson.dumps(payload).decode())

    def subscribe(self, ids: list[Any], **extra: Any) -> None:
        self.send({"type": "market", "assets_ids": ids, **extra})

    def op(self, operation: str, ids: list[str]) -> None:
        self.send({"operation": operation, "assets_ids": ids})

    def recv(self, timeout: float = 5.0) -> str:
        self.ws.settimeout(timeout)
        text = self.ws.recv()
        assert isinstance(text, str), f"the market channel sends text frames only, got {text!r}"
        return text

    def recv_json(self, timeout: float = 5.0) -> Any:
        text = self.recv(timeout)
        assert text.startswith(("{", "[")), f"expected JSON, got {text!r}"
        return orjson.loads(text)

    def recv_close(self, timeout: float = 5.0) -> tuple[int, str]:
        """Read until the server's close frame; return (code, reason)."""
        self.ws.settimeout(timeout)
        while True:
            opcode, frame = self.ws.recv_data_frame(True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                data = frame.data
                return struct.unpack("!H", data[:2])[0], data[2:].decode()

    def assert_nothing_queued(self) -> None:
        """PING must be answered by the very next frame: proves nothing else was sent before it."""
        self.send("PING")
        assert self.recv() == "PONG"

    def close(self) -> None:
        self.ws.close(timeout=0.5)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=7) as s:
        yield s


@pytest.fixture
def connect(sim: Simulator) -> Iterator[Callable[[], Client]]:
    clients: list[Client] = []

    def make() -> Client:
        c = Client(sim.ws_url)
        clients.append(c)
        return c

    yield make
    for c in clients:
        with contextlib.suppress(Exception):
            c.close()


def two_token_market(sim: Simulator) -> tuple[str, str, str]:
    market = sim.add_market()
    a, b = sim.markets()[market]
    return market, a, b


def conn_id_for(sim: Simulator, token: str) -> int:
    info = sim.conn_for(token)
    assert info is not None, f"no open connection subscribed to {token}"
    return info.id


def best_of(levels: list[dict[str, str]], side: str) -> str:
    prices = [Decimal(level["price"]) for level in levels]
    if not prices:
        return ""
    return canon(max(prices) if side == "bid" else min(prices))


class LocalBook:
    """The tiniest correct client book: replace on `book`, set-or-remove on price_change."""

    def __init__(self, assets: set[str]) -> None:
        self.assets = assets
        self.bids: dict[str, dict[str, str]] = {}
        self.asks: dict[str, dict[str, str]] = {}
        self.events = 0

    def top(self, asset: str) -> Top:
        bids, asks = self.bids[asset], self.asks[asset]
        bb = max(bids, key=Decimal) if bids else ""
        ba = min(asks, key=Decimal) if asks else ""
        return Top(bb, bids.get(bb, ""), ba, asks.get(ba, ""))

    def apply_frame(self, text: str) -> None:
        msg = orjson.loads(text)
        for event in msg if isinstance(msg, list) else [msg]:
            self.apply(event)

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["event_type"]
        if kind == "book":
            asset = event["asset_id"]
            assert asset in self.assets, "book for an asset this socket did not subscribe"
            self.bids[asset] = {lv["price"]: lv["size"] for lv in event.get("bids", event.get("buys", []))}
            self.asks[asset] = {lv["price"]: lv["size"] for lv in event.get("asks", event.get("sells", []))}
        elif kind == "price_change":
            for entry in event["price_changes"]:
                asset = entry["asset_id"]
                if asset not in self.assets:
                    continue  # sibling leak: filter, as the sidecar must
                levels = self.bids[asset] if entry["side"] == "BUY" else self.asks[asset]
                if entry["size"] == "0":
                    levels.pop(entry["price"], None)
                else:
                    levels[entry["price"]] = entry["size"]
                top = self.top(asset)
                assert (entry["best_bid"], entry["best_ask"]) == (top.bid or "0", top.ask or "1")
                self.events += 1
        for asset in self.bids:
            top = self.top(asset)
            if top.bid and top.ask:
                assert Decimal(top.bid) < Decimal(top.ask), f"crossed book {top}"


# ---------------------------------------------------------------- handshake rules


@pytest.mark.parametrize("first", ["PING", "not json", "{}", '{"type": "user", "assets_ids": []}', "[1, 2]"])
def test_invalid_first_frame_is_closed_with_1008(
    sim: Simulator, connect: Callable[[], Client], first: str
) -> None:
    c = connect()
    c.send(first)
    assert c.recv_close() == (1008, "invalid subscription payload")
    info = wait_for(lambda: [i for i in sim.connections() if not i.open], what="server-side close")[0]
    assert info.close_code == 1008
    assert [text for _, text in info.received] == [first]
    assert len(sim.violations) == 1 and "first frame" in sim.violations[0]


def test_type_is_case_insensitive_and_ping_pong(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    c = connect()
    c.send({"type": "Market", "assets_ids": [a], "initial_dump": False})
    c.assert_nothing_queued()  # initial_dump false: no snapshot before the PONG
    c.send("PING")
    assert c.recv() == "PONG"
    info = sim.connections()[0]
    assert info.pings == 2 and info.subscribed == {a} and info.path == "/ws/market"
    assert sim.violations == []


def test_second_type_frame_is_invalid_operation(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, b = two_token_market(sim)
    c = connect()
    c.subscribe([a], initial_dump=False)
    c.subscribe([b])
    assert c.recv() == "INVALID OPERATION"
    assert sim.connections()[0].subscribed == {a}
    assert any("second subscription" in v for v in sim.violations)


def test_resubscribe_gets_no_new_assets(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a])
    c.recv_json()
    c.op("subscribe", [a])
    assert c.recv() == "NO NEW ASSETS"
    assert sim.violations == [f"conn 1: re-subscribe of already subscribed asset {a}"]


def test_too_many_ids_closes_in_strict_mode(sim: Simulator, connect: Callable[[], Client]) -> None:
    c = connect()
    c.subscribe([str(10**20 + i) for i in range(101)])
    assert c.recv_close() == (1008, "too many assets")
    assert any("101 ids" in v for v in sim.violations)
    c2 = connect()
    c2.subscribe([str(10**20 + i) for i in range(100)], initial_dump=False)
    c2.op("subscribe", [str(10**30 + i) for i in range(101)])
    assert c2.recv_close() == (1008, "too many assets")


def test_non_strict_accepts_big_frames() -> None:
    with Simulator(strict=False) as sim:
        c = Client(sim.ws_url)
        c.subscribe([str(10**20 + i) for i in range(150)])
        assert len(c.recv_json()) == 150
        assert sim.violations == []
        c.close()


def test_invalid_ids_are_ignored_and_recorded(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a, "0xdeadbeef", 12345, "1" * 101])
    frame = c.recv_json()
    assert [book["asset_id"] for book in frame] == [a]
    assert sim.connections()[0].subscribed == {a}
    assert len(sim.violations) == 3


def test_handshake_rejection_with_429(sim: Simulator, connect: Callable[[], Client]) -> None:
    sim.reject_handshakes(429, 2)
    for _ in range(2):
        with pytest.raises(websocket.WebSocketBadStatusException) as err:
            connect()
        assert err.value.status_code == 429
    c = connect()
    c.subscribe([], initial_dump=False)
    c.assert_nothing_queued()
    assert sim.handshakes == 3
    assert [i.id for i in sim.connections()] == [1]


# ---------------------------------------------------------------- snapshots and events


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


def test_operation_subscribe_and_unsubscribe(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    _, c_tok, _ = two_token_market(sim)
    _, d_tok, _ = two_token_market(sim)
    client = connect()
    client.subscribe([a])
    assert len(client.recv_json()) == 1
    client.op("subscribe", [c_tok, d_tok])
    assert [book["asset_id"] for book in client.recv_json()] == [c_tok, d_tok]
    client.op("unsubscribe", [c_tok])
    wait_for(lambda: sim.connections()[0].subscribed == {a, d_tok}, what="unsubscribe applied")
    top = sim.truth(c_tok)
    sim.price_change([(c_tok, "SELL", top.ask, "777")])
    client.assert_nothing_queued()
    sim.price_change([(d_tok, "SELL", sim.truth(d_tok).ask, "778")])
    assert client.recv_json()["price_changes"][0]["asset_id"] == d_tok
    assert sim.conn_for(c_tok) is None and conn_id_for(sim, d_tok) == 1
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


# ---------------------------------------------------------------- faults


def test_mute_until_redrive(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    _, b, _ = two_token_market(sim)
    sim.mute(a, subscribes=1)
    c = connect()
    c.subscribe([a, b])
    assert [book["asset_id"] for book in c.recv_json()] == [b]
    sim.price_change([(a, "BUY", sim.truth(a).bid, "9")])
    c.assert_nothing_queued()
    assert sim.connections()[0].muted == {a}
    c.op("unsubscribe", [a])
    c.op("subscribe", [a])
    snapshot = c.recv_json()
    assert [book["asset_id"] for book in snapshot] == [a] and snapshot[0]["bids"][-1]["size"] == "9"
    sim.price_change([(a, "BUY", sim.truth(a).bid, "10")])
    assert c.recv_json()["price_changes"][0]["size"] == "10"
    assert sim.violations == []


def test_mute_forever_and_unmute(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    sim.mute(a)
    c = connect()
    c.subscribe([a])
    c.assert_nothing_queued()
    c.op("unsubscribe", [a])
    c.op("subscribe", [a])
    c.assert_nothing_queued()
    sim.unmute(a)
    c.op("unsubscribe", [a])
    c.op("subscribe", [a])
    assert c.recv_json()[0]["asset_id"] == a


def test_zombie_answers_ping_but_sends_no_data(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    _, b, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a])
    c.recv_json()
    sim.zombie(1)
    before = sim.truth(a)
    sim.price_change([(a, "BUY", before.bid, "0")])
    c.assert_nothing_queued()
    c.op("subscribe", [b])
    c.assert_nothing_queued()  # not even the snapshot for a new subscription
    assert sim.truth(a) != before
    c.ws.ping("zz")  # protocol-level pings are answered too
    c.ws.settimeout(5)
    assert c.ws.recv_data_frame(True)[0] == websocket.ABNF.OPCODE_PONG
    info = sim.connections()[0]
    assert info.mode == "zombie" and info.open and info.subscribed == {a, b} and info.ws_pings == 1


def test_relay_only_sends_broadcasts_but_not_its_own_data(
    sim: Simulator, connect: Callable[[], Client]
) -> None:
    _, a, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a], custom_feature_enabled=True)
    c.recv_json()
    sim.relay_only(1)
    sim.price_change([(a, "BUY", sim.truth(a).bid, "0")])
    new_id = sim.new_market()
    announced = c.recv_json()
    assert (announced["event_type"], announced["market"]) == ("new_market", new_id)
    c.assert_nothing_queued()  # the price change for its own token never came; PINGs answered
    assert sim.connections()[0].mode == "relay_only"
    sim.zombie(1)  # a plain zombie withholds broadcasts too
    sim.new_market()
    c.assert_nothing_queued()


def test_zombie_drops_data_already_queued(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a], initial_dump=False)
    c.assert_nothing_queued()
    sim.slow(1, 0.05)
    for size in ("1", "2", "3"):
        sim.price_change([(a, "BUY", sim.truth(a).bid, size)])
    sim.zombie(1)
    c.assert_nothing_queued()


def test_half_open_sends_nothing_and_keeps_socket(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a])
    c.recv_json()
    sim.half_open(1)
    sim.price_change([(a, "BUY", sim.truth(a).bid, "0")])
    c.send("PING")
    c.ws.ping("zz")
    c.ws.settimeout(0.5)  # bounded: a half-open peer is, by definition, silence
    with pytest.raises(websocket.WebSocketTimeoutException):
        c.ws.recv_data_frame(True)  # would also return a protocol pong
    info = sim.connections()[0]
    assert info.open and info.mode == "half_open" and info.pings == 0


def test_drop_aborts_without_close_frame(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    c1, c2 = connect(), connect()
    for c in (c1, c2):
        c.subscribe([a])
        c.recv_json()
    sim.drop(1)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionResetError)):
        c1.recv()
    info = sim.connections()[0]
    assert not info.open and info.close_code == 1006 and info.closed_at is not None
    assert conn_id_for(sim, a) == 2
    c2.assert_nothing_queued()
    sim.drop()
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionResetError)):
        c2.recv()
    assert sim.conn_for(a) is None


def test_clean_close_with_code(sim: Simulator, connect: Callable[[], Client]) -> None:
    c = connect()
    c.subscribe([], initial_dump=False)
    wait_for(lambda: sim.connections())
    sim.close(1, 1011, "going down")
    assert c.recv_close() == (1011, "going down")
    info = wait_for(lambda: [i for i in sim.connections() if not i.open], what="closed")[0]
    assert info.close_code == 1011


def test_slow_connection_does_not_block_others(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    slow_c, fast_c = connect(), connect()
    for c in (slow_c, fast_c):
        c.subscribe([a], initial_dump=False)
    wait_for(lambda: len(sim.connections()) == 2 and all(i.subscribed for i in sim.connections()))
    sim.slow(1, 0.03)
    bid = sim.truth(a).bid
    for i in range(20):
        sim.price_change([(a, "BUY", bid, str(i + 1))])
    sizes = [fast_c.recv_json()["price_changes"][0]["size"] for _ in range(20)]
    assert sizes == [str(i + 1) for i in range(20)]
    assert sim.sent_frames(1) < 15  # the slow one is still far behind
    assert [slow_c.recv_json()["price_changes"][0]["size"] for _ in range(20)] == sizes


# ---------------------------------------------------------------- truth vs frames


def test_truth_matches_frames_under_random_activity(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, b = two_token_market(sim)
    _, c_tok, d_tok = two_token_market(sim)
    subscribed = {a, b, c_tok}  # d_tok is only seen as a sibling leak
    client = connect()
    client.subscribe(sorted(subscribed))
    local = LocalBook(subscribed)
    local.apply_frame(client.recv())
    sim.start_activity(600, tokens=[a, b, c_tok, d_tok])
    leaked = False
    while local.events < 400:
        text = client.recv()
        leaked = leaked or d_tok in text
        local.apply_frame(text)
    sim.stop_activity()
    sim.send_raw('{"event_type":"sentinel"}', 1)
    while (text := client.recv()) != '{"event_type":"sentinel"}':
        local.apply_frame(text)
    for token in subscribed:
        assert local.top(token) == sim.truth(token)
        bids, asks = sim.book(token)
        assert dict(bids) == local.bids[token] and dict(asks) == local.asks[token]
    for token in (a, b, c_tok, d_tok):
        top = sim.truth(token)
        assert top.bid and top.ask and Decimal(top.bid) < Decimal(top.ask)
    assert leaked, "sibling entries never appeared in 400 events"
    assert sim.violations == []


def test_random_walk_keeps_books_sane() -> None:
    sim = Simulator(seed=3)  # not started: scripting runs inline, no sockets needed
    market = sim.add_market(tick_size="0.001")
    sim.add_market(tick_size="0.01")
    for i in range(20_000):
        token = sim.tokens()[i % 4]
        sim._random_event(token)
        book = sim._books[token]
        assert 3 <= len(book.bids) <= 40 and 3 <= len(book.asks) <= 40
        assert max(book.bids) < min(book.asks)
    for token in sim.tokens():
        book = sim._books[token]
        for price in [*book.bids, *book.asks]:
            assert 0 < price < 1 and price % book.tick == 0
    assert sim.markets()[market] == sim.tokens()[:2]


def test_token_rate_override(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    _, quiet, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a, quiet], initial_dump=False)
    sim.start_activity(0, tokens=[])
    sim.set_token_rate(a, 300)
    sim.set_token_rate(quiet, 0)
    frames = [orjson.loads(c.recv()) for _ in range(30)]
    sim.stop_activity()
    assets = {e["asset_id"] for f in frames if f["event_type"] == "price_change" for e in f["price_changes"]}
    assets |= {f["asset_id"] for f in frames if "asset_id" in f}
    assert a in assets and quiet not in assets


def test_apply_silently_and_blast(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a], initial_dump=False)
    wait_for(lambda: sim.conn_for(a))
    sim.apply_silently([(a, "SELL", "0.99", "1")])
    c.assert_nothing_queued()
    assert ("0.99", "1") in sim.book(a)[1]
    n = 40_000
    frame = orjson.dumps({"event_type": "price_change", "market": "m", "price_changes": [], "timestamp": "1"})
    got: list[int] = [0]

    def reader() -> None:
        while got[0] < n:
            c.recv()
            got[0] += 1

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    sim.blast([frame] * n, 1)
    thread.join(10)
    elapsed = time.perf_counter() - t0
    assert got[0] == n
    assert n / elapsed >= 20_000, f"blast delivered only {n / elapsed:.0f} frames/s"
    assert sim.sent_frames(1) == n + 1  # + the PONG


def test_thousand_tokens_across_five_connections(sim: Simulator, connect: Callable[[], Client]) -> None:
    clients = [connect() for _ in range(5)]
    ids = [[str(10**40 + 1000 * k + i) for i in range(200)] for k in range(5)]
    for client, mine in zip(clients, ids, strict=True):
        client.subscribe(mine[:100])
        client.op("subscribe", mine[100:])
    for client, mine in zip(clients, ids, strict=True):
        got = [book["asset_id"] for _ in range(2) for book in client.recv_json()]
        assert got == mine
    assert len(sim.tokens()) == 1000
    token = ids[3][150]
    assert conn_id_for(sim, token) == 4
    sim.price_change([(token, "BUY", sim.truth(token).bid, "1")])
    assert clients[3].recv_json()["price_changes"][0]["asset_id"] == token
    for client in clients[:3]:
        client.assert_nothing_queued()
    assert sim.violations == []


def test_auto_create_off_leaves_unknown_ids_silent() -> None:
    with Simulator(auto_create=False) as sim:
        c = Client(sim.ws_url)
        c.subscribe(["123"])
        c.assert_nothing_queued()
        assert sim.tokens() == [] and sim.connections()[0].subscribed == {"123"}
        c.close()


# ---------------------------------------------------------------- REST


def http(url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_rest_book_and_books(sim: Simulator) -> None:
    market, a, b = two_token_market(sim)
    status, summary = http(f"{sim.rest_url}/book?token_id={a}")
    assert status == 200 and summary["asset_id"] == a and summary["market"] == market
    assert {"timestamp", "hash", "tick_size", "min_order_size", "neg_risk", "last_trade_price"} <= set(
        summary
    )
    truth = sim.truth(a)
    assert best_of(summary["bids"], "bid") == summary["bids"][-1]["price"] == truth.bid
    assert best_of(summary["asks"], "ask") == summary["asks"][-1]["price"] == truth.ask
    assert http(f"{sim.rest_url}/book?token_id=42") == (
        404,
        {"error": "No orderbook exists for the requested token id"},
    )
    status, books = http(f"{sim.rest_url}/books", [{"token_id": a}, {"token_id": "42"}, {"token_id": b}])
    assert status == 200 and [s["asset_id"] for s in books] == [a, b]
    status, _ = http(f"{sim.rest_url}/books", [{"token_id": a}] * 501)
    assert status == 400
    sim.rest_fail(503, 1)
    assert http(f"{sim.rest_url}/book?token_id={a}")[0] == 503
    assert http(f"{sim.rest_url}/book?token_id={a}")[0] == 200
    assert sim.rest_requests == 6


def test_rest_delay_keeps_an_older_answer_in_flight(sim: Simulator) -> None:
    """For Redis faults during REST confirmations: the answer is read, then held."""
    _, a, _ = two_token_market(sim)
    sim.set_book(a, [("0.40", "10")], [("0.45", "5")])
    sim.rest_delay(0.5)
    got: list[Any] = []
    t0 = time.monotonic()
    thread = threading.Thread(target=lambda: got.append(http(f"{sim.rest_url}/books", [{"token_id": a}])))
    thread.start()
    wait_for(lambda: sim.rest_in_flight == 1, what="the request in flight")
    sim.price_change([(a, "BUY", "0.41", "2")])  # the truth moves while the answer is held
    thread.join(5)
    assert time.monotonic() - t0 >= 0.5
    status, books = got[0]
    assert status == 200 and books[0]["bids"] == [{"price": "0.4", "size": "10"}]  # read before the move
    assert sim.rest_in_flight == 0
    sim.rest_delay(0)
    t0 = time.monotonic()
    assert http(f"{sim.rest_url}/book?token_id={a}")[1]["bids"][-1] == {"price": "0.41", "size": "2"}
    assert time.monotonic() - t0 < 0.5
    with pytest.raises(ValueError):
        sim.rest_delay(-1)


# ---------------------------------------------------------------- lifecycle, CLI, numbers


def test_start_failure_cleans_up() -> None:
    with Simulator() as first:
        second = Simulator(ws_port=first.ws_port)
        with pytest.raises(OSError):
            second.start()
        second.stop()  # still idempotent

        def one_loop_left() -> bool:
            return sum(t.name == "sim-loop" for t in threading.enumerate()) == 1

        wait_for(one_loop_left, what="the failed simulator's loop thread to end")


def test_stop_is_idempotent_and_closes_ports() -> None:
    sim = Simulator().start()
    url = sim.ws_url
    c = Client(url)
    c.subscribe([], initial_dump=False)
    wait_for(lambda: sim.connections())
    t0 = time.monotonic()
    sim.stop()
    sim.stop()
    assert time.monotonic() - t0 < 2, "stop() must not wait long for clients that do not answer"
    assert c.recv_close() == (1001, "server shutting down")
    assert sim.connections()[0].open is False
    with pytest.raises(ConnectionRefusedError):
        websocket.create_connection(url, timeout=2)


def test_cli_serves_wss_with_the_certificate_it_prints(tmp_path: Path) -> None:
    args = ["--ws-port", "0", "--rest-port", "0", "--markets", "1", "--rate", "0", "--tls", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmsim", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        out = [proc.stdout.readline().split() for _ in range(6)]  # ws_url, rest_url, tokens 2, 2 ids, ca_file
        assert out[0][0] == "ws_url" and out[0][1].startswith("wss://")
        assert out[5] == ["ca_file", str(tmp_path / "cert.pem")]
        ws = websocket.create_connection(out[0][1], sslopt={"ca_certs": out[5][1]}, timeout=5)
        ws.send(orjson.dumps({"type": "market", "assets_ids": [out[3][0]]}).decode())
        assert orjson.loads(ws.recv())[0]["asset_id"] == out[3][0]
        ws.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_cli_prints_urls_and_tokens_and_stops_on_sigint() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pmsim",
            "--ws-port",
            "0",
            "--rest-port",
            "0",
            "--markets",
            "2",
            "--rate",
            "20",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    try:
        ws_key, ws_url = lines.get(timeout=15).split()
        rest_key, rest_url = lines.get(timeout=5).split()
        tok_key, count = lines.get(timeout=5).split()
        tokens = [lines.get(timeout=5) for _ in range(int(count))]
        assert (ws_key, rest_key, tok_key, count) == ("ws_url", "rest_url", "tokens", "4")
        assert all(t.isdigit() and 70 <= len(t) <= 77 for t in tokens)
        c = Client(ws_url)
        c.subscribe(tokens)
        assert len(c.recv_json()) == 4
        assert http(f"{rest_url}/book?token_id={tokens[0]}")[0] == 200
        c.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@given(st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("1e7"), places=4))
def test_canon_is_unique_and_exact(x: Decimal) -> None:
    s = canon(x)
    assert Decimal(s) == x and canon(s) == s and canon(Decimal(s + "000" if "." in s else s)) == s
    assert "e" not in s.lower() and not (s.endswith("0") and "." in s)


# ---- scenarios for the truth-under-faults run ---------------------------------------------------


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


def test_broadcasts_keep_a_relay_only_socket_talking_without_its_data(
    sim: Simulator, connect: Callable[[], Client]
) -> None:
    _, a, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a], custom_feature_enabled=True)
    c.recv_json()
    sim.relay_only(1)
    before = len(sim.markets())
    sim.start_activity(200.0, [a])
    sim.start_broadcasts(0.05)
    try:
        kinds = [c.recv_json()["event_type"] for _ in range(5)]
    finally:
        sim.stop_broadcasts()
        sim.stop_activity()
    assert kinds == ["new_market"] * 5
    assert len(sim.markets()) >= before + 5
    assert sim.conn(1).open and sim.conn(1).mode == "relay_only"


def test_broadcasts_need_a_running_simulator_and_a_positive_interval() -> None:
    s = Simulator()
    with pytest.raises(RuntimeError):
        s.start_broadcasts(1.0)
    with pytest.raises(ValueError):
        s.start_broadcasts(0)


def test_wss_serves_the_same_protocol(tmp_path: Path) -> None:
    from pmsim.tls import make_self_signed

    cert = make_self_signed(tmp_path)
    with Simulator(tls=cert.server_context()) as s:
        assert s.ws_url.startswith("wss://127.0.0.1:")
        _, a, _ = two_token_market(s)
        ws = websocket.create_connection(s.ws_url, sslopt={"ca_certs": str(cert.cert)}, timeout=5)
        try:
            ws.send(orjson.dumps({"type": "market", "assets_ids": [a]}).decode())
            book = orjson.loads(ws.recv())[0]
            assert (book["event_type"], book["asset_id"]) == ("book", a)
            ws.send("PING")
            assert ws.recv() == "PONG"
        finally:
            ws.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            websocket.create_connection(s.ws_url, timeout=5)  # the system store does not know it
