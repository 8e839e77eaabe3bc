"""sidecar.core.engine: the deterministic state machine, driven the way the shell drives it.

Every test runs on :class:`tests.unit_helpers.Sim`, whose fake exchange asserts the wire rules on
every frame the engine sends (first frame ``type: market``, never a second one, 1-100 valid ids
per frame, no re-subscribe of an id already on the socket, PING only after the subscription).
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.core.engine import Close, Open, QuoteWrite
from tests.core.harness import (
    T0,
    TS0,
    MaxRandom,
    Sim,
    book_ev,
    encode,
    engine_cfg,
    legacy_pc_ev,
    levels,
    pc_entry,
    pc_ev,
    tok,
    top,
    trade_ev,
)

A, B, C = tok(1), tok(2), tok(3)
LIVE_BOOK = Path(__file__).resolve().parent / "data" / "book_live_2024.json"


def subscribed_ids(s: Sim) -> list[str]:
    return [i for _, op, ids in s.ops() if op in ("market", "subscribe") for i in ids]


def by_token(writes: list[QuoteWrite]) -> dict[str, QuoteWrite]:
    out = {w.token: w for w in writes}
    assert len(out) == len(writes), "more than one write per token in one batch"
    return out


def total(s: Sim, name: str) -> int:
    return sum(v for (n, _), v in s.engine.stats.items() if n == name)


# ---- desired set -------------------------------------------------------------------------------


def test_invalid_desired_members_are_counted_and_never_sent() -> None:
    s = Sim()
    hundred = "9" * 100
    members: list[Any] = [
        A,
        B.encode(),  # the desired reader hands over bytes, as read from Redis
        hundred,
        f"  {A} ",  # padded duplicates: normalised, sent once
        A + "\n",
        b" " + B.encode(),
        "abc",
        "12a",
        "9" * 101,
        "",
        b"",
        b"\xff\xfe",
        "   ",
        "-5",
        "1.5",
        "0x1f",
        "\u0661\u0662",
        None,
        123,
    ]
    writes = s.desired(members)
    assert s.engine.invalid_desired == 13
    assert s.engine.summary(TS0, "t")["invalid_desired"] == "13"
    assert sorted(s.engine.tokens) == sorted([A, B, hundred])
    assert sorted(w.token for w in writes) == sorted([A, B, hundred])
    s.tick()
    assert sorted(subscribed_ids(s)) == sorted([A, B, hundred])  # each exactly once
    for send in s.sends():
        assert " " not in send.text and "abc" not in send.text and "9" * 101 not in send.text
    s.desired([A, B, hundred])
    assert s.engine.invalid_desired == 0


def test_desired_cap_keeps_existing_tokens_first() -> None:
    s = Sim(engine_cfg(max_tokens=3))
    s.desired([tok(i) for i in range(5, 0, -1)])
    assert sorted(s.engine.tokens) == [tok(1), tok(2), tok(3)]
    assert s.engine.capped_desired == 2
    assert s.engine.summary(TS0, "t")["capped_desired"] == "2"
    s.tick()
    assert sorted(subscribed_ids(s)) == [tok(1), tok(2), tok(3)]
    s.desired([tok(4), tok(5)])
    assert s.engine.capped_desired == 0
    m = s.mark()
    s.desired([tok(i) for i in range(1, 7)])
    # the two already followed stay; only the lowest new one fits
    assert sorted(s.engine.tokens) == [tok(1), tok(4), tok(5)]
    assert s.engine.capped_desired == 3
    conn = s.conn_of(tok(4))
    assert s.ops(m) == [(conn, "subscribe", [tok(1)])]


# ---- wire rules --------------------------------------------------------------------------------


def test_first_frame_then_operation_frames_of_at_most_100_ids() -> None:
    s = Sim(engine_cfg(max_tokens_per_conn=300))
    toks = [tok(i) for i in range(250)]
    s.desired(toks)
    s.tick()
    (opened,) = s.opens()
    conn = opened.conn_id
    ops = s.ops(conn_id=conn)
    assert [(op, len(ids)) for _, op, ids in ops] == [("market", 100), ("subscribe", 100), ("subscribe", 50)]
    assert [i for _, _, ids in ops for i in ids] == sorted(toks)
    first = json.loads(s.sent[conn][0])
    assert first == {
        "type": "market",
        "assets_ids": sorted(toks)[:100],
        "initial_dump": True,
        "custom_feature_enabled": True,
    }
    m = s.mark()
    extra = [tok(1000 + i) for i in range(5)]
    s.desired(toks + extra)
    assert s.ops(m) == [(conn, "subscribe", extra)]
    assert all('"type"' not in text for text in s.sent[conn][1:])


def test_a_socket_whose_shard_emptied_while_connecting_sends_nothing() -> None:
    s = Sim(auto_open=False)
    s.desired([A])
    s.tick()
    (opened,) = s.opens()
    s.desired([])
    assert s.closes() == [Close(opened.conn_id, "empty")]
    s.connect(opened.conn_id)  # the socket opens anyway (a race with the close)
    s.run_for(30)
    assert s.sends() == []


def test_ping_only_after_the_subscription_and_every_interval() -> None:
    s = Sim(auto_open=False)
    s.desired([A])
    s.tick()
    (opened,) = s.opens()
    s.run_for(25)  # still connecting: nothing at all is sent
    assert s.sends() == []
    t_open = s.now
    s.connect(opened.conn_id)
    s.run_for(35, step=0.5)
    assert s.send_log[0][2].startswith('{"type":"market"')
    assert [t for t, _, text in s.send_log if text == "PING"] == [t_open + 10, t_open + 20, t_open + 30]


def test_removing_tokens_unsubscribes_and_writes_a_final_quote() -> None:
    s = Sim()
    s.start_live([A, B])
    conn = s.conn_of(A)
    seq_before = int(s.last(A)["seq"])
    m = s.mark()
    writes = s.desired([B])
    assert s.ops(m) == [(conn, "unsubscribe", [A])]
    (final,) = writes
    assert final.token == A
    assert final.publish is True
    assert final.expire_s == 300
    assert final.fields["status"] == "unsubscribed"
    assert final.fields["reason"] == "removed_from_desired"
    assert int(final.fields["seq"]) == seq_before + 1
    assert top(final.fields) == ("0.49", "200", "0.51", "150")
    assert A not in s.engine.tokens
    assert s.closes(m) == []
    # the last token leaves: its socket is closed, and nothing more is sent to it
    m = s.mark()
    (final_b,) = s.desired([])
    assert final_b.token == B and final_b.fields["status"] == "unsubscribed"
    assert s.closes(m) == [Close(conn, "empty")]
    s.run_for(60)
    assert s.sends(m) == []
    assert s.opens(m) == []
    # a frame that was still in flight is not applied anywhere
    assert s.raw(conn, encode(book_ev(B))) == []
    assert s.stat("frames", "orphan") == 1


# ---- sharding ----------------------------------------------------------------------------------


def test_1000_tokens_open_exactly_5_sockets_of_200() -> None:
    s = Sim()
    toks = [tok(i) for i in range(1000)]
    s.desired(toks)
    assert s.opens() == []  # sockets are opened by tick()
    s.tick()
    opens = s.opens()
    assert len(opens) == 5
    assert sorted(o.shard_id for o in opens) == [0, 1, 2, 3, 4]
    seen: set[str] = set()
    for o in opens:
        subs = s.server_subs[o.conn_id]
        assert len(subs) == 200
        assert not subs & seen
        seen |= subs
        assert [(op, len(ids)) for _, op, ids in s.ops(conn_id=o.conn_id)] == [
            ("market", 100),
            ("subscribe", 100),
        ]
    assert seen == set(toks)
    s.run_for(5)
    assert len(s.opens()) == 5


def test_socket_opens_are_paced() -> None:
    s = Sim(engine_cfg(connect_spacing_s=2.0))
    s.desired([tok(i) for i in range(1000)])
    s.run_for(12, step=0.5)
    times = [t for t, a in s.actions if isinstance(a, Open)]
    assert times == [T0 + 0.5, T0 + 2.5, T0 + 4.5, T0 + 6.5, T0 + 8.5]


def test_adding_and_removing_tokens_never_moves_others() -> None:
    rnd = random.Random(5)
    s = Sim()
    current = {tok(i) for i in range(1000)}
    s.desired(sorted(current))
    s.tick()
    shard_of = {t: s.engine.tokens[t].shard_id for t in current}
    conn_of = {t: s.conn_of(t) for t in current}
    next_id = 1000
    for _ in range(6):
        gone = set(rnd.sample(sorted(current), 120))
        new = {tok(next_id + i) for i in range(rnd.randint(50, 250))}
        next_id += 1000
        current = (current - gone) | new
        s.desired(sorted(current))
        s.tick()
        for t in current - new:
            assert s.engine.tokens[t].shard_id == shard_of[t]
            assert s.conn_of(t) == conn_of[t]
        for t in new:
            shard_of[t] = s.engine.tokens[t].shard_id
            conn_of[t] = s.conn_of(t)
        owners: dict[str, int] = {}
        for shard in s.engine.shards:
            assert len(shard.tokens) <= 200
            assert shard.conn_id is not None
            assert s.server_subs[shard.conn_id] == shard.tokens
            for t in shard.tokens:
                assert t not in owners
                owners[t] = shard.id
        assert set(owners) == current
    assert s.closes() == []
    assert total(s, "reconnects") == 0


# ---- statuses ----------------------------------------------------------------------------------


def test_added_token_is_pending() -> None:
    s = Sim()
    (w,) = s.desired([A])
    assert w.token == A and w.publish is True and w.persist is True and w.expire_s is None
    assert w.fields == {
        "bid": "",
        "ask": "",
        "bid_size": "",
        "ask_size": "",
        "ts": "",
        "updated_at": "",
        "seq": str(TS0 * 1000 + 1),
        "epoch": "epoch-1",
        "status": "pending",
        "source": "",
        "reason": "subscribing",
    }


def test_live_sample_book_makes_the_token_live_with_exact_strings() -> None:
    event = json.loads(LIVE_BOOK.read_text())
    token = event["asset_id"]
    s = Sim()
    s.desired([token])
    s.tick()
    s.now = T0 + 0.25
    (w,) = s.frame(s.conn_of(token), event)
    assert top(w.fields) == ("0.511", "1304.72", "0.514", "20230.87")
    assert w.fields["status"] == "live"
    assert w.fields["reason"] == ""
    assert w.fields["source"] == "book"
    assert w.fields["ts"] == "1728799418260"
    assert w.fields["updated_at"] == str(TS0 + 250)
    assert w.fields["market"] == event["market"]
    assert w.exch_ts == 1728799418260
    assert w.recv_at == T0 + 0.25
    assert w.persist is False


def test_book_with_buys_and_sells() -> None:
    s = Sim()
    s.desired([A])
    s.tick()
    event = book_ev(A, [("0.30", "5")], [("0.70", "6")], names=("buys", "sells"), tick_size="0.01")
    (w,) = s.frame(s.conn_of(A), event)
    assert top(w.fields) == ("0.30", "5", "0.70", "6")
    assert w.fields["tick_size"] == "0.01"
    assert w.fields["status"] == "live"


def test_book_on_a_socket_that_does_not_own_the_token_is_ignored() -> None:
    s = Sim(engine_cfg(max_tokens_per_conn=1))
    s.desired([A, B])
    s.tick()
    conn_a, conn_b = s.conn_of(A), s.conn_of(B)
    assert conn_a != conn_b
    assert s.frame(conn_b, book_ev(A)) == []
    assert s.status(A) == "pending"
    assert s.stat("events", "filtered") == 1
    (w,) = s.frame(conn_a, book_ev(A))
    assert w.fields["status"] == "live"


def test_price_change_below_the_top_only_refreshes_updated_at_once_a_second() -> None:
    s = Sim()
    s.start_live([A])  # publish at T0
    conn = s.conn_of(A)
    seq = s.last(A)["seq"]
    s.now = T0 + 0.5
    assert s.frame(conn, legacy_pc_ev(A, [("0.45", "BUY", "77")])) == []
    assert s.tick_at(T0 + 0.9) == []
    assert s.tick_at(T0 + 1.0) == [QuoteWrite(A, {"updated_at": str(TS0 + 500), "ts": str(TS0)}, False)]
    s.now = T0 + 1.2
    assert s.frame(conn, pc_ev([pc_entry(A, "0.53", "9", "SELL", best_bid="0.49", best_ask="0.51")])) == []
    assert s.tick_at(T0 + 1.5) == []
    assert s.tick_at(T0 + 2.0) == [QuoteWrite(A, {"updated_at": str(TS0 + 1200), "ts": str(TS0)}, False)]
    assert s.tick_at(T0 + 5.0) == []
    assert s.last(A)["seq"] == seq
    assert s.engine.tokens[A].book.depth() == (3, 3)


def test_price_changes_that_move_the_top_publish() -> None:
    s = Sim()
    s.start_live([A])
    conn = s.conn_of(A)
    seq = int(s.last(A)["seq"])
    s.now = T0 + 2
    (w,) = s.frame(
        conn, pc_ev([pc_entry(A, "0.50", "12", "BUY", best_bid="0.5", best_ask="0.51")], ts=TS0 + 1999)
    )
    assert top(w.fields) == ("0.50", "12", "0.51", "150")
    assert (w.fields["source"], w.fields["status"]) == ("price_change", "live")
    assert (w.fields["ts"], w.fields["updated_at"]) == (str(TS0 + 1999), str(TS0 + 2000))
    assert w.exch_ts == TS0 + 1999 and w.recv_at == T0 + 2
    # removing the best level recomputes the top from what is left
    (w,) = s.frame(conn, pc_ev([pc_entry(A, "0.50", "0", "BUY", best_bid="0.49", best_ask="0.51")]))
    assert top(w.fields) == ("0.49", "200", "0.51", "150")
    # legacy schema, ask side
    (w,) = s.frame(conn, legacy_pc_ev(A, [("0.51", "SELL", "0")]))
    assert top(w.fields) == ("0.49", "200", "0.52", "300")
    # oldest single-level schema
    (w,) = s.frame(
        conn, {"event_type": "price_change", "asset_id": A, "price": "0.505", "side": "SELL", "size": "4"}
    )
    assert top(w.fields) == ("0.49", "200", "0.505", "4")
    # a new total size at the top is a move too
    (w,) = s.frame(conn, legacy_pc_ev(A, [("0.49", "BUY", "201.5")]))
    assert top(w.fields) == ("0.49", "201.5", "0.505", "4")
    assert [int(x.fields["seq"]) for x in s.token_writes(A)][-5:] == [
        seq + 1,
        seq + 2,
        seq + 3,
        seq + 4,
        seq + 5,
    ]


def test_multi_asset_price_change_ignores_a_non_desired_sibling() -> None:
    s = Sim()
    s.start_live([A])
    other = tok(999)
    (w,) = s.frame(
        s.conn_of(A),
        pc_ev(
            [
                pc_entry(other, "0.9", "5", "BUY", best_bid="0.9", best_ask="0.95"),
                pc_entry(A, "0.495", "8", "BUY", best_bid="0.495", best_ask="0.51"),
            ]
        ),
    )
    assert w.token == A
    assert top(w.fields) == ("0.495", "8", "0.51", "150")
    assert s.stat("events", "filtered") == 1
    assert other not in s.engine.tokens
    assert s.stat("bbo_mismatch") == 0


def test_server_best_mismatch_resyncs_and_redrives() -> None:
    s = Sim()
    s.start_live([A, B])
    conn = s.conn_of(A)
    m = s.mark()
    s.now = T0 + 1
    # the entry says the top is 0.47 while the local book's is 0.49
    (w,) = s.frame(conn, pc_ev([pc_entry(A, "0.40", "5", "BUY", best_bid="0.47", best_ask="0.51")]))
    assert (w.fields["status"], w.fields["reason"]) == ("resyncing", "bbo_settling")
    assert s.ops(m) == []
    (w,) = s.tick_at(T0 + 2)  # the disagreement outlasted SIDECAR_BBO_GRACE_S (1 s)
    assert (w.fields["status"], w.fields["reason"]) == ("resyncing", "bbo_mismatch")
    assert s.stat("bbo_mismatch") == 1
    assert s.stat("redrives", "bbo_mismatch") == 1
    assert s.ops(m) == [(conn, "unsubscribe", [A]), (conn, "subscribe", [A])]
    # nothing is published from an untrusted book
    assert s.frame(conn, pc_ev([pc_entry(A, "0.495", "5", "BUY", best_bid="0.495", best_ask="0.51")])) == []
    assert s.status(A) == "resyncing"
    # the snapshot that answers the redrive settles it
    (w,) = s.frame(conn, book_ev(A, [("0.47", "3")], [("0.51", "150")]))
    assert w.fields["status"] == "live"
    assert top(w.fields) == ("0.47", "3", "0.51", "150")
    assert s.status(B) == "live"
    assert s.stat("bbo_mismatch") == 1


def test_empty_side_markers_are_not_a_mismatch() -> None:
    s = Sim()
    s.desired([A])
    s.tick()
    conn = s.conn_of(A)
    s.frame(conn, book_ev(A, [("0.2", "10")], []))
    (w,) = s.frame(conn, pc_ev([pc_entry(A, "0.25", "1", "BUY", best_bid="0.25", best_ask="1")]))
    assert top(w.fields) == ("0.25", "1", "", "")
    (w,) = s.frame(conn, pc_ev([pc_entry(A, "0.25", "0", "BUY", best_bid="0.2", best_ask="")]))
    assert top(w.fields) == ("0.2", "10", "", "")
    (w,) = s.frame(conn, pc_ev([pc_entry(A, "0.2", "0", "BUY", best_bid="0", best_ask="1")]))
    assert top(w.fields) == ("", "", "", "")
    assert w.fields["status"] == "live"
    assert s.stat("bbo_mismatch") == 0


def test_best_bid_ask_event_confirms_or_resyncs() -> None:
    s = Sim()
    s.start_live([A])
    conn = s.conn_of(A)
    bba = {"event_type": "best_bid_ask", "asset_id": A, "market": "0xmarket", "spread": "0.02"}
    s.now = T0 + 3
    # agreement: an updated_at-only refresh, no publish
    assert s.frame(conn, {**bba, "best_bid": "0.49", "best_ask": "0.51"}) == [
        QuoteWrite(A, {"updated_at": str(TS0 + 3000), "ts": str(TS0)}, False)
    ]
    (w,) = s.frame(conn, {**bba, "best_bid": "0.48", "best_ask": "0.51"})
    assert (w.fields["status"], w.fields["reason"]) == ("resyncing", "bbo_settling")
    (w,) = s.tick_at(T0 + 4)  # past SIDECAR_BBO_GRACE_S
    assert (w.fields["status"], w.fields["reason"]) == ("resyncing", "bbo_mismatch")


def test_tick_size_change_resyncs_until_the_next_book() -> None:
    s = Sim()
    s.start_live([A])
    conn = s.conn_of(A)
    m = s.mark()
    change = {
        "event_type": "tick_size_change",
        "asset_id": A,
        "market": "0xmarket",
        "old_tick_size": "0.01",
        "new_tick_size": "0.001",
        "timestamp": str(TS0 + 5),
    }
    (w,) = s.frame(conn, change)
    assert (w.fields["status"], w.fields["reason"]) == ("resyncing", "tick_size_change")
    assert (w.fields["tick_size"], w.fields["ts"]) == ("0.001", str(TS0 + 5))
    assert s.ops(m) == [(conn, "unsubscribe", [A]), (conn, "subscribe", [A])]  # no REST: a WS book now
    assert s.frame(conn, legacy_pc_ev(A, [("0.495", "BUY", "3")])) == []
    assert s.status(A) == "resyncing"
    (w,) = s.frame(conn, book_ev(A, [("0.491", "4")], [("0.509", "5")], tick_size="0.001"))
    assert w.fields["status"] == "live"
    assert top(w.fields) == ("0.491", "4", "0.509", "5")


def test_resync_without_a_book_redrives_after_a_wait() -> None:
    s = Sim()
    s.start_live([A])
    conn = s.conn_of(A)
    s.run_for(60)
    s.frame(conn, {"event_type": "tick_size_change", "asset_id": A, "new_tick_size": "0.001"})
    assert s.status(A) == "resyncing"
    m = s.mark()
    s.run_for(4)
    assert s.ops(m) == []
    s.tick_at(T0 + 65)  # no book within RESYNC_WAIT_S: ask for one
    assert s.ops(m) == [(conn, "unsubscribe", [A]), (conn, "subscribe", [A])]
    assert s.stat("redrives", "resync_timeout") == 1
    (w,) = s.frame(conn, book_ev(A))
    assert w.fields["status"] == "live"


def test_last_trade_price_sets_last_trade_fields() -> None:
    s = Sim()
    s.start_live([A])
    conn = s.conn_of(A)
    (w,) = s.frame(conn, trade_ev(A, "0.5", "33.3", "BUY", ts=TS0 + 7))
    assert w.fields["last_trade_price"] == "0.5"
    assert w.fields["last_trade_size"] == "33.3"
    assert w.fields["last_trade_side"] == "BUY"
    assert w.fields["last_trade_ts"] == str(TS0 + 7)
    assert top(w.fields) == ("0.49", "200", "0.51", "150")
    assert w.fields["status"] == "live"
    # a trade with an impossible price is rejected whole
    assert s.frame(conn, trade_ev(A, "1.5", "1", "SELL")) == []
    assert s.stat("parse_errors", "bad_price") == 1
    assert s.engine.tokens[A].last_trade_price == "0.5"


def test_market_resolved() -> None:
    s = Sim()
    s.start_live([A, B])
    conn = s.conn_of(A)
    resolved = {
        "event_type": "market_resolved",
        "market": "0xmarket",
        "assets_ids": [A, B],
        "winning_asset_id": A,
        "winning_outcome": "Yes",
        "timestamp": str(TS0 + 9),
    }
    writes = by_token(s.frame(conn, resolved))
    assert (writes[A].fields["status"], writes[A].fields["reason"]) == ("resolved", "won")
    assert (writes[B].fields["status"], writes[B].fields["reason"]) == ("resolved", "market_resolved")
    # a later (empty) book updates the top but never un-resolves
    (w,) = s.frame(conn, book_ev(A, [], []))
    assert w.fields["status"] == "resolved"
    assert top(w.fields) == ("", "", "", "")
    assert s.engine.quote_health() == 1.0


def test_unknown_event_types_are_counted_and_harmless() -> None:
    s = Sim()
    s.start_live([A])
    conn = s.conn_of(A)
    assert s.frame(conn, {"event_type": "brand_new_thing", "asset_id": A, "price": "NaN"}) == []
    assert s.frame(conn, {"asset_id": A}) == []
    assert s.frame(conn, {"event_type": "new_market", "market": "0xnew", "assets_ids": ["1"]}) == []
    assert s.stat("events", "unknown") == 2
    assert s.stat("events", "new_market") == 1
    assert s.status(A) == "live"
    assert s.tick_at(T0 + 1) == []


def test_malformed_events_are_counted_and_the_rest_of_the_frame_applies() -> None:
    s = Sim()
    s.desired([A, B, C])
    s.tick()
    conn = s.conn_of(A)
    writes = s.frame(
        conn,
        book_ev(A, [("NaN", "1")]),
        "not an object",
        book_ev(B),
        {"event_type": "price_change", "asset_id": C, "changes": "x"},
        {"event_type": "book", "asset_id": C},
        book_ev(C, asks=[("0.6", "-1")]),
        {
            "event_type": "price_change",
            "price_changes": [{"asset_id": C, "price": "0.4", "size": "1", "side": "?"}],
        },
    )
    assert [w.token for w in writes] == [B]
    assert (s.status(A), s.status(B), s.status(C)) == ("pending", "live", "pending")
    for reason in ("bad_price", "bad_event", "bad_price_change", "bad_book", "bad_size", "bad_side"):
        assert s.stat("parse_errors", reason) == 1, reason
    # one bad entry in a multi-entry message does not lose another asset's good one
    (w,) = s.frame(conn, pc_ev([pc_entry(C, "abc", "1", "BUY"), pc_entry(B, "0.495", "7", "BUY")]))
    assert top(w.fields) == ("0.495", "7", "0.51", "150")
    assert s.stat("parse_errors", "bad_price") == 2
    # whole frames that are not events
    assert s.raw(conn, b"{not json") == []
    assert s.raw(conn, b"INVALID OPERATION") == []
    assert s.raw(conn, b"NO NEW ASSETS") == []
    assert s.raw(conn, b"something else") == []
    assert s.raw(conn, b"PONG") == []
    assert s.stat("parse_errors", "bad_json") == 1
    assert s.stat("control", "INVALID OPERATION") == 1
    assert s.stat("control", "NO NEW ASSETS") == 1
    assert s.stat("control", "other") == 1
    assert s.stat("control", "PONG") == 1
    assert s.status(B) == "live"


def test_connection_loss_stales_tokens_and_reconnects_after_backoff() -> None:
    rng = MaxRandom()
    s = Sim(engine_cfg(backoff_min_s=1.0, backoff_max_s=8.0), rng=rng)
    s.start_live([A, B])
    conn = s.conn_of(A)
    shard_id = s.engine.tokens[A].shard_id
    s.tick_at(T0 + 5)
    m = s.mark()
    writes = by_token(s.close_from_server(conn, "close_1006"))
    for token in (A, B):
        assert (writes[token].fields["status"], writes[token].fields["reason"]) == (
            "stale",
            "connection_close_1006",
        )
        assert top(writes[token].fields) == ("0.49", "200", "0.51", "150")
    assert s.stat("reconnects", "close_1006") == 1
    assert rng.windows[-1] == (0.0, 2.0)  # data had flowed: backoff starts over at attempt 1
    s.tick_at(T0 + 6.5)
    assert s.opens(m) == []
    s.tick_at(T0 + 7.0)
    (reopened,) = s.opens(m)
    assert reopened.shard_id == shard_id and reopened.conn_id != conn
    new = reopened.conn_id
    assert s.ops(m) == [(new, "market", sorted([A, B]))]
    # a price_change alone must not make a stale token live again
    assert s.frame(new, legacy_pc_ev(A, [("0.495", "BUY", "1")])) == []
    assert s.frame(new, pc_ev([pc_entry(A, "0.496", "1", "BUY", best_bid="0.496", best_ask="0.51")])) == []
    assert s.status(A) == "stale"
    (w,) = s.frame(new, book_ev(A, [("0.44", "1")], [("0.56", "2")]))
    assert (w.fields["status"], w.fields["reason"]) == ("live", "")
    assert top(w.fields) == ("0.44", "1", "0.56", "2")
    assert s.status(B) == "stale"
    # a late frame from the dead socket changes nothing
    assert s.raw(conn, encode(book_ev(B))) == []
    assert s.status(B) == "stale"


def test_seq_strictly_increases_and_epoch_is_constant() -> None:
    s = Sim(epoch="e-42")
    s.start_live([A, B])
    conn = s.conn_of(A)
    s.frame(conn, legacy_pc_ev(A, [("0.495", "BUY", "1")]))
    s.frame(conn, trade_ev(A, "0.5", "1", "SELL"))
    s.frame(conn, {"event_type": "tick_size_change", "asset_id": A, "new_tick_size": "0.001"})
    s.frame(conn, book_ev(A))
    s.tick_at(T0 + 0.005)
    s.desired([B])  # A removed...
    s.tick_at(T0 + 0.010)
    s.desired([A, B])  # ...and back
    s.frame(conn, book_ev(A))
    s.close_from_server(conn)
    s.run_for(10)
    s.frame(s.conn_of(A), book_ev(A), book_ev(B))
    for token, count in ((A, 11), (B, 4)):
        writes = s.token_writes(token)
        assert len(writes) == count
        seqs = [int(w.fields["seq"]) for w in writes]
        assert all(b > a for a, b in itertools.pairwise(seqs)), seqs
    assert {w.fields["epoch"] for _, w in s.writes if w.publish} == {"e-42"}
    assert {w.fields["status"] for w in s.token_writes(A)} == {
        "pending",
        "live",
        "resyncing",
        "unsubscribed",
        "stale",
    }
    readded = [w for w in s.token_writes(A) if w.persist]
    assert len(readded) == 2  # the first write after each add clears an earlier expiry


def test_seq_increases_across_a_readd_in_the_same_millisecond() -> None:
    s = Sim()
    s.start_live([A])
    conn = s.conn_of(A)
    s.frame(conn, legacy_pc_ev(A, [("0.495", "BUY", "1")]))
    s.desired([])
    s.desired([A])  # the desired set flapped within one millisecond (or the wall clock stepped back)
    seqs = [int(w.fields["seq"]) for w in s.token_writes(A)]
    assert all(b > a for a, b in itertools.pairwise(seqs)), seqs


# ---- confirmation --------------------------------------------------------------------------------


def test_token_without_a_first_event_is_redriven_then_moved_then_no_data() -> None:
    s = Sim()
    s.mute.add(A)
    s.desired([A, B])
    s.tick()
    c1 = s.conn_of(A)
    s.frame(c1, book_ev(B))
    for k in range(1, 601):
        s.tick_at(T0 + k)
        if k % 5 == 0:  # B keeps its socket busy, so only A's own confirmation logic is at work
            s.frame(s.conn_of(B), legacy_pc_ev(B, [("0.3", "BUY", str(k))]))
    (c2,) = [o.conn_id for o in s.opens() if o.conn_id != c1]
    a_ops = [(t - T0, conn, text) for t, conn, text in s.send_log if A in text]
    sub = f'{{"operation":"subscribe","assets_ids":["{A}"]}}'
    unsub = f'{{"operation":"unsubscribe","assets_ids":["{A}"]}}'
    first = f'{{"type":"market","assets_ids":["{A}"],"initial_dump":true,"custom_feature_enabled":true}}'
    assert [(t, conn, text[:20]) for t, conn, text in a_ops][:1] == [(0.0, c1, '{"type":"market","as')]
    assert a_ops[1:] == [
        (20.0, c1, unsub),
        (20.0, c1, sub),
        (60.0, c1, unsub),
        (60.0, c1, sub),
        (140.0, c1, unsub),  # moved off its socket...
        (141.0, c2, first),
        (161.0, c2, unsub),
        (161.0, c2, sub),
        (201.0, c2, unsub),
        (201.0, c2, sub),
        (581.0, c2, unsub),  # ...then retried slowly
        (581.0, c2, sub),
    ]
    assert s.opens()[1].shard_id != s.opens()[0].shard_id
    assert s.engine.shards.shards[s.engine.tokens[A].shard_id].rescue is True
    assert s.stat("moves") == 1
    writes = s.token_writes(A)
    assert {w.fields["status"] for w in writes} == {"pending"}
    assert [w.fields["reason"] for w in writes] == [
        "subscribing",
        "no_first_event_redrive_1",
        "no_first_event_redrive_2",
        "no_first_event_moved",
        "no_first_event_redrive_1",
        "no_first_event_redrive_2",
        "no_data",
    ]
    assert s.status(B) == "live"
    assert s.conn_of(B) == c1


def test_token_with_deltas_but_no_snapshot_is_still_redriven() -> None:
    s = Sim()
    s.desired([A, B])
    s.tick()
    conn = s.conn_of(A)
    s.frame(conn, book_ev(A))
    s.frame(conn, legacy_pc_ev(B, [("0.3", "BUY", "10")]))  # B gets deltas, never its snapshot
    m = s.mark()
    for k in range(1, 121):  # A keeps the socket busy for two minutes
        s.tick_at(T0 + k)
        s.frame(conn, legacy_pc_ev(A, [("0.2", "BUY", str(k))]))
    assert (conn, "subscribe", [B]) in s.ops(m)
    assert s.status(B) == "pending"


# ---- silence -------------------------------------------------------------------------------------


def busy_then_silent(s: Sim) -> int:
    """A and B live at T0; A ticks every second until T0+20 (socket norm: 1 s); then silence."""
    s.start_live([A, B])
    conn = s.conn_of(A)
    for k in range(1, 21):
        s.tick_at(T0 + k)
        s.frame(conn, legacy_pc_ev(A, [("0.3", "BUY", str(k))]))
    return conn


def test_silent_socket_is_probed_and_data_proves_it_alive() -> None:
    s = Sim()
    conn = busy_then_silent(s)
    m = s.mark()
    s.run_for(19)  # threshold = 20 x 1 s gaps
    assert s.ops(m) == []
    writes = by_token(s.tick_at(T0 + 40))
    # A (one event a second) is 20 of its gaps late: no longer vouched for, and it is the probe.
    # B (no event rate yet, so quiet) stays live.
    assert s.ops(m) == [(conn, "unsubscribe", [A]), (conn, "subscribe", [A])]
    assert (writes[A].fields["status"], writes[A].fields["reason"]) == ("stale", "silence_suspected")
    assert B not in writes and s.status(B) == "live"
    assert s.stat("probes", "sent") == 1
    s.now = T0 + 41
    s.frame(conn, book_ev(A), trade_ev(A, "0.5", "1", "BUY"))  # the snapshot the redrive asked for
    assert s.stat("probes", "ok") == 1
    assert s.status(A) == "live", "a fresh book makes it live again"
    assert s.engine.conns[conn].quiet_mult == 2.0
    m = s.mark()
    # gap EWMA 1 + 0.1 x (21 - 1) = 3 s -> 60 s, doubled by the quiet multiplier -> 120 s
    s.run_for(119)
    assert s.ops(m) == []
    s.tick_at(T0 + 161)
    assert s.ops(m) == [(conn, "unsubscribe", [A]), (conn, "subscribe", [A])]
    s.now = T0 + 162
    s.frame(conn, book_ev(A))
    assert s.opens() == s.opens()[:1]
    assert s.closes() == []
    assert total(s, "reconnects") == 0
    assert {s.status(A), s.status(B)} == {"live"}


def test_zombie_socket_is_replaced_after_an_unanswered_probe() -> None:
    s = Sim()
    old = busy_then_silent(s)
    shard_id = s.engine.tokens[A].shard_id
    s.run_for(20)
    assert s.stat("probes", "sent") == 1
    m = s.mark()
    s.run_for(9)  # probe_timeout_s = 10; PINGs are still answered
    assert s.stat("probes", "failed") == 0
    writes = by_token(s.tick_at(T0 + 50))
    assert s.stat("probes", "failed") == 1
    assert s.stat("reconnects", "silence") == 1
    for token in (A, B):
        assert (writes[token].fields["status"], writes[token].fields["reason"]) == ("stale", "silence")
    assert s.opens(m) == []
    s.tick_at(T0 + 51)
    (new,) = s.opens(m)
    assert new.shard_id == shard_id and new.conn_id != old
    assert s.ops(m) == [(new.conn_id, "market", sorted([A, B]))]
    assert s.closes(m) == []  # make-before-break: the old socket lingers...
    assert s.raw(old, encode(book_ev(A))) == []  # ...but nothing it says is applied
    assert s.stat("frames", "replaced_socket") == 1
    s.now = T0 + 52
    writes = by_token(s.frame(new.conn_id, book_ev(A), book_ev(B)))
    assert {w.fields["status"] for w in writes.values()} == {"live"}
    assert s.closes(m) == [Close(old, "silence")]  # ...until the new one delivers


def test_replaced_socket_is_closed_after_a_grace_even_without_data() -> None:
    s = Sim()
    old = busy_then_silent(s)
    s.run_for(30)  # probe at T0+40, fails at T0+50
    m = s.mark()
    s.run_for(9)
    assert s.closes(m) == []
    s.tick_at(T0 + 60)
    assert s.closes(m) == [Close(old, "silence")]


def test_quiet_socket_is_probed_rarely_and_never_reconnected_over_an_hour() -> None:
    rnd = random.Random(11)
    s = Sim()
    s.start_live([A])
    conn = s.conn_of(A)
    s.answer_subscribe = True  # from now on every probe (a redrive) is answered with a snapshot
    next_event = T0 + rnd.uniform(40, 200)
    probe_times: list[float] = []
    for k in range(1, 3601):
        t = T0 + k
        s.tick_at(t)
        if s.stat("probes", "sent") > len(probe_times):
            probe_times.append(t)
        if t >= next_event:
            s.frame(conn, legacy_pc_ev(A, [("0.3", "BUY", str(k))]))
            next_event = t + rnd.uniform(40, 200)
    assert total(s, "reconnects") == 0
    assert s.opens() == [Open(conn, 0)]
    assert s.closes() == []
    assert s.stat("probes", "failed") == 0
    assert s.stat("probes", "ok") == len(probe_times)
    assert 3 <= len(probe_times) <= 3600 / 120 + 1
    assert all(b - a >= 120 for a, b in itertools.pairwise(probe_times)), probe_times
    assert {w.fields["status"] for w in s.token_writes(A)} == {"pending", "live"}


def test_removing_the_probed_token_cancels_its_probe() -> None:
    s = Sim()
    busy_then_silent(s)
    s.run_for(20)
    assert s.stat("probes", "sent") == 1  # probing with overdue A at T0+40
    s.desired([B])  # A leaves while its probe is in flight
    s.run_for(10)  # past the old probe's deadline
    assert s.stat("probes", "failed") == 0
    assert total(s, "reconnects") == 0


def test_removing_another_token_keeps_the_probe() -> None:
    s = Sim()
    s.start_live([A, B, C])
    conn = s.conn_of(A)
    for k in range(1, 21):
        s.tick_at(T0 + k)
        s.frame(conn, legacy_pc_ev(A, [("0.3", "BUY", str(k))]))
    s.run_for(20)
    probed = s.engine.conns[conn].probe_token
    assert probed == A  # the overdue token is the probe; quiet B and C stay live
    assert s.status(B) == s.status(C) == "live"
    s.desired([A, C])  # a quiet token leaves
    s.run_for(10)
    assert s.stat("probes", "failed") == 1
    assert s.stat("reconnects", "silence") == 1


def test_initial_snapshot_burst_does_not_make_a_quiet_socket_suspect() -> None:
    s = Sim(answer_subscribe=False)
    s.desired([A, B])
    s.tick()
    conn = s.conn_of(A)
    s.frame(conn, book_ev(A))
    s.now = T0 + 0.01
    s.frame(conn, book_ev(B))  # the initial dump, split over two frames 10 ms apart
    s.answer_subscribe = True
    s.run_for(100)  # a quiet market: nothing for 100 s, less than silence_max_s
    assert s.stat("probes", "sent") == 0


# ---- pong timeout --------------------------------------------------------------------------------


def test_pong_timeout_closes_stales_and_reconnects() -> None:
    rng = MaxRandom()
    s = Sim(engine_cfg(silence_max_s=1000.0), rng=rng, answer_ping=False)
    s.start_live([A, B])
    conn = s.conn_of(A)
    m = s.mark()
    s.run_for(30)
    assert s.closes(m) == []
    assert [t for t, _, text in s.send_log if text == "PING"] == [T0 + 10, T0 + 20, T0 + 30]
    writes = by_token(s.tick_at(T0 + 31))
    assert s.closes(m) == [Close(conn, "pong_timeout")]
    assert s.stat("reconnects", "pong_timeout") == 1
    for token in (A, B):
        assert (writes[token].fields["status"], writes[token].fields["reason"]) == (
            "stale",
            "connection_pong_timeout",
        )
    s.tick_at(T0 + 32)
    assert s.opens(m) == []
    s.tick_at(T0 + 33)  # backoff window (0, 2 x backoff_min_s], top of it
    (new,) = s.opens(m)
    assert new.conn_id != conn


def test_answered_pings_keep_an_idle_socket() -> None:
    s = Sim(engine_cfg(silence_max_s=1000.0))
    s.start_live([A])
    s.run_for(300)
    assert s.closes() == []
    assert total(s, "reconnects") == 0
    assert s.stat("control", "PONG") == 30


# ---- REST ----------------------------------------------------------------------------------------


def summary(
    asset: str,
    bids: list[tuple[str, str]] | None = None,
    asks: list[tuple[str, str]] | None = None,
    ts: int | str = TS0 + 100,
) -> dict[str, Any]:
    """A REST /books summary; REST lists levels best first (the opposite of the socket)."""
    return {
        "market": "0xmarket",
        "asset_id": asset,
        "timestamp": str(ts),
        "hash": "0xrest",
        "bids": levels(bids if bids is not None else [("0.49", "200.0"), ("0.48", "100")]),
        "asks": levels(asks if asks is not None else [("0.51", "150"), ("0.52", "300")]),
        "tick_size": "0.01",
        "min_order_size": "5",
        "neg_risk": False,
    }


def rest_sim() -> tuple[Sim, int]:
    s = Sim(engine_cfg(rest_enabled=True, quiet_confirm_s=30.0))
    s.start_live([A, B])
    s.run_for(29)
    assert s.rest_requests == []
    s.tick_at(T0 + 30)
    (req,) = s.rest_requests
    assert req.tokens == sorted([A, B])
    return s, req.request_id


def test_quiet_live_tokens_are_confirmed_over_rest() -> None:
    s, request_id = rest_sim()
    s.run_for(10)
    assert len(s.rest_requests) == 1  # never a second request while one is in flight
    seq = s.last(A)["seq"]
    m = s.mark()
    writes = s.rest(request_id, [summary(A), summary(B)])
    assert sorted(writes, key=lambda w: w.token) == [
        QuoteWrite(A, {"updated_at": str(TS0 + 40_000), "ts": str(TS0)}, False),
        QuoteWrite(B, {"updated_at": str(TS0 + 40_000), "ts": str(TS0)}, False),
    ]
    assert s.stat("rest_confirm", "match") == 2
    assert s.ops(m) == []
    assert s.last(A)["seq"] == seq
    s.run_for(19)
    assert len(s.rest_requests) == 1
    s.run_for(1)  # quiet_confirm_s after the last check
    assert len(s.rest_requests) == 2


def test_rest_book_that_differs_and_is_newer_is_applied_and_redriven() -> None:
    s, request_id = rest_sim()
    conn = s.conn_of(A)
    s.desired([A, B, C])  # C is pending: REST never makes a token live
    m = s.mark()
    writes = s.rest(
        request_id,
        [summary(A, [("0.47", "9")], [("0.53", "8")], ts=TS0 + 20_000), summary(C), summary(B)],
    )
    w, touch = sorted(writes, key=lambda x: x.token)
    assert touch == QuoteWrite(B, {"updated_at": str(TS0 + 30_000), "ts": str(TS0)}, False)  # B matched
    assert w.token == A and w.publish
    assert top(w.fields) == ("0.47", "9", "0.53", "8")
    assert (w.fields["source"], w.fields["status"]) == ("rest", "live")
    assert (w.fields["ts"], w.fields["updated_at"]) == (str(TS0 + 20_000), str(TS0 + 30_000))
    assert s.ops(m) == [(conn, "unsubscribe", [A]), (conn, "subscribe", [A])]
    assert s.stat("rest_confirm", "mismatch") == 1
    assert s.stat("redrives", "rest_mismatch") == 1
    assert s.status(C) == "pending"


def test_older_rest_book_is_ignored() -> None:
    s, request_id = rest_sim()
    m = s.mark()
    assert s.rest(request_id, [summary(A, [("0.47", "9")], [("0.53", "8")], ts=TS0 - 1)]) == []
    assert s.stat("rest_confirm", "older") == 1
    assert s.engine.tokens[A].book.top() == ("0.49", "200", "0.51", "150")
    assert s.ops(m) == []
    assert s.tick_at(T0 + 31) == []


def test_rest_failure_is_counted_and_retried_on_the_next_period() -> None:
    s, request_id = rest_sim()
    assert s.rest(request_id, None) == []
    assert s.stat("rest", "error") == 1
    s.run_for(29)
    assert len(s.rest_requests) == 1
    s.tick_at(T0 + 60)
    assert len(s.rest_requests) == 2
    assert s.rest_requests[1].request_id != request_id


def test_hostile_rest_summaries_never_raise() -> None:
    s, request_id = rest_sim()
    s.rest(request_id, [{"asset_id": ["x"]}, {"asset_id": {"a": 1}}, "junk", None, summary(A)])
    assert s.stat("rest_confirm", "match") == 1


def test_rest_summary_with_unicode_digit_timestamp_never_raises() -> None:
    s, request_id = rest_sim()
    s.rest(request_id, [summary(A, [("0.47", "9")], [("0.53", "8")], ts="\u00b2")])
    assert s.last(A)["source"] == "rest"


# ---- connect failures --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, None])
def test_http_429_pauses_every_socket(status: int | None) -> None:
    rng = MaxRandom()
    s = Sim(engine_cfg(max_tokens_per_conn=1, backoff_min_s=1.0, backoff_max_s=8.0), rng=rng, auto_open=False)
    s.desired([A, B])
    s.tick()
    first, second = s.opens()
    s.engine.on_connect_failed(first.conn_id, "http_429" if status else "refused", s.now, status)
    s.pump()
    assert rng.windows == [(0.0, 2.0)]
    s.connect(second.conn_id)
    m = s.mark()
    s.desired([A, B, C])  # a new shard, ready at once
    s.tick_at(T0 + 1)
    if status == 429:
        assert s.opens(m) == []  # throttled: nobody connects until the pause is over
        s.tick_at(T0 + 2)
        assert sorted(o.shard_id for o in s.opens(m)) == [first.shard_id, 2]
    else:
        assert [o.shard_id for o in s.opens(m)] == [2]
        s.tick_at(T0 + 2)
        assert sorted(o.shard_id for o in s.opens(m)) == [first.shard_id, 2]


def test_connect_backoff_grows_with_full_jitter_and_is_bounded() -> None:
    rng = MaxRandom()
    s = Sim(engine_cfg(backoff_min_s=1.0, backoff_max_s=8.0), rng=rng, auto_open=False)
    s.desired([A])
    s.tick()
    open_times = []
    for _ in range(6):
        (opened,) = s.opens()[len(open_times) :]
        open_times.append(s.now)
        s.engine.on_connect_failed(opened.conn_id, "http_429", s.now, 429)
        s.pump()
        while len(s.opens()) == len(open_times):
            s.step(0.5)
    assert rng.windows == [(0.0, 2.0), (0.0, 4.0), (0.0, 8.0), (0.0, 8.0), (0.0, 8.0), (0.0, 8.0)]
    assert [b - a for a, b in itertools.pairwise(open_times)] == [2.0, 4.0, 8.0, 8.0, 8.0]
    assert s.stat("connect_failures", "http_429") == 6


def test_backoff_starts_over_once_a_socket_has_delivered_data() -> None:
    rng = MaxRandom()
    s = Sim(engine_cfg(backoff_min_s=1.0, backoff_max_s=64.0), rng=rng, auto_open=False)
    s.desired([A])
    s.tick()
    for _ in range(3):
        s.engine.on_connect_failed(s.opens()[-1].conn_id, "refused", s.now, None)
        s.pump()
        opens = len(s.opens())
        while len(s.opens()) == opens:
            s.step(0.5)
    assert rng.windows == [(0.0, 2.0), (0.0, 4.0), (0.0, 8.0)]
    conn = s.opens()[-1].conn_id
    s.connect(conn)
    s.frame(conn, book_ev(A))
    s.close_from_server(conn)
    assert rng.windows[-1] == (0.0, 2.0)  # a socket that worked: start over
    opens = len(s.opens())
    while len(s.opens()) == opens:
        s.step(0.5)
    conn = s.opens()[-1].conn_id
    s.connect(conn)
    s.close_from_server(conn)  # opened but never delivered: keep backing off
    assert rng.windows[-1] == (0.0, 4.0)


def test_connect_backoff_with_a_seeded_rng_stays_in_its_window() -> None:
    s = Sim(engine_cfg(backoff_min_s=0.5, backoff_max_s=4.0), rng=random.Random(3), auto_open=False)
    s.desired([A])
    s.tick()
    delays = []
    for attempt in range(1, 30):
        (opened,) = s.opens()[attempt - 1 :]
        s.engine.on_connect_failed(opened.conn_id, "timeout", s.now, None)
        s.pump()
        shard = s.engine.shards.shards[0]
        delay = shard.next_attempt_at - s.now
        assert 0.0 <= delay <= min(4.0, 0.5 * 2**attempt)
        delays.append(delay)
        s.tick_at(shard.next_attempt_at)
    assert max(delays) > 3.0  # the window really grew to the cap
    assert len(set(delays)) == len(delays)  # and the delays are jittered


# ---- shutdown and summary ----------------------------------------------------------------------


def test_shutdown_marks_quotes_stale_and_closes_sockets() -> None:
    s = Sim()
    s.start_live([A])
    s.desired([A, B])
    conn = s.conn_of(A)
    s.engine.shutdown()
    writes = by_token(s.pump())
    assert (writes[A].fields["status"], writes[A].fields["reason"]) == ("stale", "sidecar_stopped")
    assert (writes[B].fields["status"], writes[B].fields["reason"]) == ("pending", "sidecar_stopped")
    assert s.closes() == [Close(conn, "shutdown")]


def test_summary_counts() -> None:
    s = Sim(engine_cfg(max_tokens_per_conn=2))
    s.start_live([A, B])
    s.desired([A, B, C])
    summary_ = s.engine.summary(TS0 + 5, "9.9")
    assert summary_["desired"] == "3"
    assert (summary_["live"], summary_["pending"], summary_["stale"]) == ("2", "1", "0")
    assert summary_["quote_health"] == "0.6667"
    assert (summary_["connections"], summary_["connections_up"]) == ("2", "1")
    assert (summary_["epoch"], summary_["version"], summary_["heartbeat_at"]) == (
        "epoch-1",
        "9.9",
        str(TS0 + 5),
    )


# ---- fuzz ----------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
VALUE = st.one_of(st.sampled_from([A, B, "0.5", "0", "1", "BUY", "SELL", "", "NaN", "-1", "2"]), JSON)
LEVEL_LIST = st.lists(st.fixed_dictionaries({"price": VALUE, "size": VALUE}), max_size=3)
ENTRY = st.fixed_dictionaries(
    {"asset_id": VALUE, "price": VALUE, "size": VALUE, "side": VALUE},
    optional={"best_bid": VALUE, "best_ask": VALUE},
)
EVENT = st.builds(
    lambda kind, fields: {"event_type": kind, **fields},
    st.sampled_from(
        [
            "book",
            "price_change",
            "last_trade_price",
            "tick_size_change",
            "best_bid_ask",
            "market_resolved",
            "new_market",
            "???",
        ]
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "asset_id": VALUE,
            "assets_ids": st.lists(VALUE, max_size=3) | VALUE,
            "bids": LEVEL_LIST | VALUE,
            "asks": LEVEL_LIST | VALUE,
            "buys": LEVEL_LIST,
            "sells": LEVEL_LIST,
            "price_changes": st.lists(ENTRY | VALUE, max_size=3) | VALUE,
            "changes": st.lists(ENTRY | VALUE, max_size=3) | VALUE,
            "price": VALUE,
            "size": VALUE,
            "side": VALUE,
            "best_bid": VALUE,
            "best_ask": VALUE,
            "timestamp": VALUE,
            "market": VALUE,
            "new_tick_size": VALUE,
            "winning_asset_id": VALUE,
        },
    ),
)
PAYLOAD = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64),
    JSON.map(lambda v: json.dumps(v).encode()),
    EVENT.map(lambda e: json.dumps(e).encode()),
    st.lists(EVENT | JSON, max_size=4).map(lambda es: json.dumps(es).encode()),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(PAYLOAD, min_size=1, max_size=4))
def test_fuzzed_frames_never_raise_and_a_good_book_still_applies(payloads: list[bytes | str]) -> None:
    s = Sim()
    s.desired([A, B])
    s.tick()
    conn = s.conn_of(A)
    for payload in payloads:
        s.raw(conn, payload)
    s.tick_at(T0 + 1)
    writes = [w for w in s.frame(conn, book_ev(A, [("0.123", "4.5")], [("0.877", "6.5")])) if w.publish]
    (w,) = [w for w in writes if w.token == A]
    assert top(w.fields) == ("0.123", "4.5", "0.877", "6.5")
    assert w.fields["status"] in ("live", "resolved")
    s.run_for(5)
