"""sidecar.core.market: frames applied to books, statuses from market data, bad input counted and
skipped (including fuzzed frames)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from sidecar.core import events
from sidecar.core.engine import QuoteWrite
from tests.core.harness import (
    LIVE_BOOK,
    T0,
    TS0,
    Sim,
    book_ev,
    by_token,
    engine_cfg,
    legacy_pc_ev,
    pc_entry,
    pc_ev,
    tok,
    top,
    trade_ev,
)

A, B, C = tok(1), tok(2), tok(3)


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
    assert (writes[B].fields["status"], writes[B].fields["reason"]) == ("resolved", "lost")  # winner named
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


def test_an_unexpected_error_in_one_event_is_counted_and_costs_no_other_event(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    s = Sim()
    s.desired([A, B])
    s.tick()

    def broken(raw: dict[str, Any]) -> events.Event:
        raise RuntimeError("a parser bug")

    monkeypatch.setitem(events._PARSERS, events.TRADE, broken)
    with caplog.at_level(logging.ERROR, logger="sidecar.core.engine"):
        writes = s.frame(s.conn_of(A), trade_ev(A, "0.5", "1", "BUY"), book_ev(B))
    assert [w.token for w in writes] == [B]
    assert s.stat("parse_errors", "unexpected") == 1
    assert s.stat("events", "last_trade_price") == 1
    (record,) = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert record.exc_info is not None and "a parser bug" in str(record.exc_info[1])
