"""Random activity: the frames it sends agree with the truth, books stay sane, rates apply."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from decimal import Decimal

import orjson
from pmsim import Simulator
from pmsim.activity import RandomWalk
from pmsim.fanout import Fanout
from pmsim.market import Markets
from pmsim.script import Script

from tests.sim.wire import Client, LocalBook, two_token_market, wait_for


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
    markets = Markets(random.Random(3))  # the parts alone: no loop, no sockets needed
    fanout = Fanout(markets, lambda v: None, auto_create=True, strict=True, custom_features=True)
    walk = RandomWalk(Script(markets, fanout, custom_features=True))
    market = markets.add_market(None, "0.001", None, True)
    markets.add_market(None, "0.01", None, True)
    tokens = list(markets.books)
    for i in range(20_000):
        token = tokens[i % 4]
        walk.event(token)
        book = markets.books[token]
        assert 3 <= len(book.bids) <= 40 and 3 <= len(book.asks) <= 40
        assert max(book.bids) < min(book.asks)
    for token in tokens:
        book = markets.books[token]
        for price in [*book.bids, *book.asks]:
            assert 0 < price < 1 and price % book.tick == 0
    assert markets.markets[market] == tokens[:2]


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
