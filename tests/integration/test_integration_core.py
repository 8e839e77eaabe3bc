"""End to end: simulator → real sidecar process → real redis-server.

These assert the product's contract as a worker sees it: quote hashes equal the exchange's true
top of book, statuses follow reality, seq only grows on pub/sub, and the wire rules hold in what
the exchange actually received.
"""

from __future__ import annotations

import itertools
import signal
import time
from decimal import Decimal

import orjson
import pytest

from devkit.wait import wait_for
from tests.integration.common import P, QuoteListener, all_match, matches_truth, quote

pytestmark = pytest.mark.integration


def second_level(levels: list[tuple[str, str]]) -> tuple[str, str]:
    return levels[1]


def test_quotes_follow_truth_through_a_scripted_session(redis_server, sim, sidecar) -> None:
    markets = [sim.add_market() for _ in range(3)]
    by_market = sim.markets()
    tokens = [t for m in markets for t in by_market[m]]
    sibling = by_market[markets[0]][1]  # shares price_change frames but is never desired
    desired = [t for t in tokens if t != sibling]
    r = redis_server.client()
    listener = QuoteListener(redis_server)
    r.sadd(P + "desired", *desired)
    proc = sidecar()
    try:
        wait_for(lambda: all_match(r, sim, desired), 15, what="all desired tokens live and matching truth")
        target = desired[0]  # same market as the sibling
        other = desired[1]

        # A change below the top: nothing published for it.
        before = len(listener.for_token(other))
        bids, _ = sim.book(other)
        price, size = second_level(bids)
        sim.price_change([(other, "BUY", price, str(Decimal(size) + 7))])
        # then a change AT the top so we know the first was processed before we count
        top = sim.truth(other)
        sim.price_change([(other, "BUY", top.bid, str(Decimal(top.bid_size) + 1))])
        wait_for(lambda: matches_truth(r, sim, other), what="top size change applied")
        assert len(listener.for_token(other)) == before + 1, "a below-top change must not publish"

        # Removal of the best level: the next level becomes the top.
        top = sim.truth(target)
        sim.price_change([(target, "SELL", top.ask, "0")])
        assert sim.truth(target).ask != top.ask
        wait_for(lambda: matches_truth(r, sim, target), what="best ask removal")

        # One multi-asset frame touching a desired token and its non-desired sibling.
        t_top, s_top = sim.truth(target), sim.truth(sibling)
        sim.price_change(
            [
                (target, "BUY", t_top.bid, str(Decimal(t_top.bid_size) + 3)),
                (sibling, "BUY", s_top.bid, str(Decimal(s_top.bid_size) + 3)),
            ]
        )
        wait_for(lambda: matches_truth(r, sim, target), what="multi-asset change applied")
        assert not r.exists(P + "quote:" + sibling), "a non-desired sibling must never get a quote"

        # best_bid_ask agreeing with our book keeps the token live.
        sim.best_bid_ask(target)
        # tick size change the book does not carry yet: resynced with a REST reseed at once (its
        # resyncing write may coalesce with the live one the REST book brings ms later), then the
        # book that follows; live at the truth.
        rest_before = sim.rest_requests
        sim.tick_size_change(other, "0.001", book_delay_s=0.3)
        wait_for(
            lambda: quote(r, other).get("tick_size") == "0.001" and matches_truth(r, sim, other),
            what="live again after tick size change + book",
        )
        assert sim.rest_requests == rest_before + 1

        # A trade.
        t_top = sim.truth(target)
        sim.trade(target, t_top.bid, "5", "SELL")
        wait_for(lambda: quote(r, target).get("last_trade_size") == "5", what="trade fields")
        q = quote(r, target)
        assert q["last_trade_price"] == t_top.bid and q["last_trade_side"] == "SELL"
        assert q["market"] == markets[0]

        # A dropped connection: stale within 1 s, then live again only with a fresh book.
        dropped_at = time.monotonic()
        sim.drop()
        wait_for(
            lambda: all(quote(r, t).get("status") == "stale" for t in desired),
            timeout=1.0,
            interval=0.01,
            what="every token stale within 1 s of the drop",
        )
        assert time.monotonic() - dropped_at <= 1.0
        sim.price_change([(target, "BUY", sim.truth(target).bid, "1234")])  # moves truth while down
        # First reconnect within 2 x SIDECAR_BACKOFF_MIN_S (1 s), then the fresh books.
        wait_for(lambda: all_match(r, sim, desired), 5, what="live again after reconnect")

        # Random activity, then quiet: everything still equals the truth.
        published = len(listener.messages)
        sim.start_activity(200, desired)
        # Activity reached Redis: a hundred more quote messages (top moves) were published.
        wait_for(lambda: len(listener.messages) >= published + 100, 10, what="activity published")
        sim.stop_activity()
        wait_for(lambda: all_match(r, sim, desired), 3, what="converged after random activity")

        # Published seq strictly increases per token; every message is well formed.
        for token in desired:
            seqs = [int(m["seq"]) for m in listener.for_token(token)]
            assert seqs, token
            assert all(b > a for a, b in itertools.pairwise(seqs)), f"seq not increasing: {seqs}"
        assert listener.atomicity_violations == []
        assert sim.violations == []
        # The summary is rewritten every second: within two it counts every token live again.
        wait_for(lambda: r.hget(P + "sidecar", "live") == str(len(desired)), 2, what="summary: all live")
        sidecar_hash = r.hgetall(P + "sidecar")
        assert sidecar_hash["desired"] == str(len(desired))
        assert sidecar_hash["live"] == str(len(desired))
        assert float(sidecar_hash["quote_health"]) == 1.0
        assert r.get(P + "sidecar:alive") == sidecar_hash["epoch"]
        assert 0 < r.ttl(P + "sidecar:alive") <= 5
    finally:
        listener.close()
    assert proc.terminate() == 0


def test_wire_rules_and_chunked_incremental_subscribe(redis_server, sim, sidecar) -> None:
    r = redis_server.client()
    first = [str(10**20 + i) for i in range(150)]
    r.sadd(P + "desired", *first)
    proc = sidecar(ping_interval_s=0.3, desired_poll_s=30)
    wait_for(lambda: all(quote(r, t).get("status") == "live" for t in first), 20, what="150 tokens live")
    # Nudge: added tokens are applied at once via desired:changed, long before the 30 s poll.
    more = [str(10**20 + i) for i in range(150, 260)]
    r.sadd(P + "desired", *more)
    r.publish(P + "desired:changed", "1")
    wait_for(lambda: all(quote(r, t).get("status") == "live" for t in more), 3, what="nudged tokens live")
    wait_for(lambda: sum(c.pings for c in sim.connections()) >= 4, 5, what="text PINGs")

    conns = sim.connections()
    assert len(conns) == 2, "260 tokens at 200 per socket make two sockets"
    seen: dict[str, int] = {}
    for conn in conns:
        frames = [text for _, text in conn.received]
        first_frame = orjson.loads(frames[0])
        assert first_frame["type"] == "market"
        assert first_frame["initial_dump"] is True and first_frame["custom_feature_enabled"] is True
        assert 0 < len(first_frame["assets_ids"]) <= 100
        for text in frames[1:]:
            if text == "PING":
                continue
            frame = orjson.loads(text)
            assert "type" not in frame, "never a second type frame"
            assert frame["operation"] in ("subscribe", "unsubscribe")
            assert 0 < len(frame["assets_ids"]) <= 100
        for token in conn.subscribed:
            seen[token] = seen.get(token, 0) + 1
        assert len(conn.subscribed) <= 200
        assert conn.pings >= 1
    assert set(seen) == set(first + more) and set(seen.values()) == {1}, "each token on exactly one socket"
    assert sim.violations == []
    # PONGs were answered, so nothing reconnected.
    assert sim.handshakes == 2

    # Removal: unsubscribe frame, status unsubscribed, key expires later.
    gone = first[:3]
    r.srem(P + "desired", *gone)
    r.publish(P + "desired:changed", "1")
    wait_for(lambda: all(quote(r, t).get("status") == "unsubscribed" for t in gone), 2, what="unsubscribed")
    assert all(0 < r.ttl(P + "quote:" + t) <= 300 for t in gone)
    unsubscribed = set()
    for conn in sim.connections():
        for _, text in conn.received:
            if text != "PING" and orjson.loads(text).get("operation") == "unsubscribe":
                unsubscribed.update(orjson.loads(text)["assets_ids"])
    assert unsubscribed == set(gone)
    assert proc.terminate() == 0


def test_garbage_in_desired_set_never_reaches_the_exchange(redis_server, sim, sidecar) -> None:
    r = redis_server.client()
    good = [str(7 * 10**30 + i) for i in range(3)]
    garbage = ["abc", "", "12 34", "1" * 101, "-5", "0x1f", "\uff11\uff12\uff13"]
    r.sadd(P + "desired", *good, *garbage, f"  {good[0]}  ")
    proc = sidecar()
    wait_for(lambda: all(quote(r, t).get("status") == "live" for t in good), 10, what="good tokens live")
    sent_ids: set[str] = set()
    for conn in sim.connections():
        for _, text in conn.received:
            if text != "PING":
                sent_ids.update(orjson.loads(text)["assets_ids"])
    assert sent_ids == set(good)
    wait_for(lambda: r.hget(P + "sidecar", "invalid_desired") == str(len(garbage)), 5, what="invalid count")
    assert r.hget(P + "sidecar", "desired") == "3"
    assert sim.violations == []
    assert proc.terminate() == 0


def test_sigkill_lets_the_alive_key_expire(redis_server, sim, sidecar) -> None:
    r = redis_server.client()
    market = sim.add_market()
    r.sadd(P + "desired", *sim.markets()[market])
    proc = sidecar(alive_ttl_s=2)
    wait_for(lambda: r.exists(P + "sidecar:alive"), 10, what="alive key")
    proc.terminate(signal.SIGKILL)
    wait_for(lambda: not r.exists(P + "sidecar:alive"), 3.5, what="alive key to expire after SIGKILL")


def test_invalid_configuration_exits_78_naming_the_variable(redis_server, sim, sidecar) -> None:
    proc = sidecar(max_tokens_per_conn="lots")
    assert proc.proc.wait(10) == 78
    assert "SIDECAR_MAX_TOKENS_PER_CONN" in proc.log()
