"""The fan-out without sockets: sessions' decisions carried out, messages routed to write queues."""

from __future__ import annotations

import random
from typing import Any, cast

import orjson
from pmsim import messages
from pmsim.conns import Conn, Kind, SimConnection
from pmsim.fanout import Fanout
from pmsim.market import Markets

A, B = "101", "202"


class FakeWs:
    """Stands in for the websockets connection: the fan-out only queues, the shell writes."""

    sim_ws_pings = 0


def setup(auto_create: bool = True) -> tuple[Fanout, list[str]]:
    violations: list[str] = []
    fanout = Fanout(
        Markets(random.Random(1)),
        violations.append,
        auto_create=auto_create,
        strict=True,
        custom_features=True,
    )
    return fanout, violations


def connect(fanout: Fanout, *ids: str) -> Conn:
    conn = fanout.accept(cast(SimConnection, FakeWs()), "/ws/market")
    fanout.on_frame(conn, orjson.dumps(messages.subscription(list(ids))).decode(), binary=False)
    return conn


def queued(conn: Conn) -> list[tuple[Kind, Any]]:
    """Drain the write queue: each frame's kind and its decoded text."""
    out = [(kind, p if p == "PONG" else orjson.loads(p)) for kind, p in conn.queue]  # type: ignore[arg-type]
    conn.queue.clear()
    return out


def test_a_subscription_creates_unknown_tokens_and_queues_their_books_as_one_array() -> None:
    fanout, violations = setup()
    conn = connect(fanout, A, B)
    ((kind, books),) = queued(conn)
    assert kind is Kind.DATA and [b["asset_id"] for b in books] == [A, B]
    assert fanout.markets.markets[books[0]["market"]] == [A]  # each auto-created as its own market
    assert fanout.subs == {A: {conn.id}, B: {conn.id}} and violations == []
    fanout.on_frame(conn, "PING", binary=False)
    assert queued(conn) == [(Kind.CONTROL, "PONG")]
    fanout.on_frame(conn, "PING", binary=True)
    assert violations == [f"conn {conn.id}: binary frame 'PING'"]  # named after its socket


def test_without_auto_create_an_unknown_token_is_subscribed_and_silent() -> None:
    fanout, _ = setup(auto_create=False)
    conn = connect(fanout, A)
    assert queued(conn) == [] and conn.session.subscribed == {A} and fanout.markets.books == {}


def test_a_mute_count_silences_that_many_subscriptions_until_each_is_redriven() -> None:
    fanout, _ = setup()
    fanout.markets.add_market([A, B], "0.01", None, True)
    fanout.mute(A, 1)
    first = connect(fanout, A, B)
    assert [b["asset_id"] for _, books in queued(first) for b in books] == [B]
    assert first.session.muted == {A} and A not in fanout.mute_counts  # the count is used up
    assert fanout.receivers(A) == [] and fanout.receivers(B) == [first]
    second = connect(fanout, A)
    assert [b["asset_id"] for _, books in queued(second) for b in books] == [A]
    unsubscribe, subscribe = messages.operation("unsubscribe", [A]), messages.operation("subscribe", [A])
    fanout.on_frame(first, orjson.dumps(unsubscribe).decode(), binary=False)
    fanout.on_frame(first, orjson.dumps(subscribe).decode(), binary=False)
    assert [b["asset_id"] for _, books in queued(first) for b in books] == [A]


def test_a_price_change_leaks_siblings_and_hides_only_muted_entries() -> None:
    fanout, _ = setup()
    fanout.markets.add_market([A, B], "0.01", "0xm", True)
    only_a, both = connect(fanout, A), connect(fanout, A, B)
    fanout.mute(B, None)
    muted_b = connect(fanout, B)
    for conn in (only_a, both, muted_b):
        queued(conn)
    entries = [messages.price_change_entry(t, "0.5", "1", "BUY", "h") for t in (A, B)]
    fanout.send_price_entries("0xm", entries, "1")
    assert [e["asset_id"] for _, msg in queued(only_a) for e in msg["price_changes"]] == [A, B]
    assert [e["asset_id"] for _, msg in queued(both) for e in msg["price_changes"]] == [A, B]
    assert queued(muted_b) == []  # its one token is muted: no frame at all
    fanout.send_price_entries("0xm", entries[1:], "1")
    assert queued(only_a) == []  # a frame with nothing it holds does not reach it


def test_a_closed_connection_leaves_the_index_and_gets_nothing() -> None:
    fanout, _ = setup()
    conn = connect(fanout, A)
    queued(conn)
    fanout.mark_closed(conn, None)
    assert (conn.open, conn.close_code, fanout.subs) == (False, 1006, {})
    fanout.send_asset_event(A, messages.tick_size_change(A, "0xm", "0.01", "0.001", 1))
    assert queued(conn) == [] and fanout.find(A) is None
    assert conn.info().subscribed == {A}  # the snapshot still says what it held
