"""Cross-checks, resyncs, tick size changes, REST reseeds and timestamps (issue 9, items 4, 8-10).

sidecar.core.resync and confirm, with the clock passed in (see tests/core/harness.py). The
scenarios come from live traffic: a crossing trade arrives as several ``price_change`` messages
with one timestamp, the first already stating the final top; a ``book`` can precede its
``tick_size_change``.
"""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.core import crosscheck
from sidecar.core.engine import QuoteWrite, RestFetch
from sidecar.core.protocol import Malformed
from tests.core.harness import (
    NO_FIRST_EVENT_REASONS,
    T0,
    TS0,
    Sim,
    book_ev,
    engine_cfg,
    legacy_pc_ev,
    levels,
    live_from,
    pc_entry,
    pc_ev,
    tok,
    top,
)

A, B = tok(1), tok(2)

BIDS = (("0.48", "100"), ("0.49", "200"))
ASKS = (("0.53", "50"), ("0.52", "300"), ("0.51", "150"))  # best level last, as live


def live_sim(**cfg: Any) -> tuple[Sim, int]:
    s = Sim(engine_cfg(**cfg))
    s.server_books[A] = (BIDS, ASKS)
    s.start_live([A])
    return s, s.conn_of(A)


def rest_requests(s: Sim) -> list[list[str]]:
    return [a.tokens for _, a in s.actions if isinstance(a, RestFetch)]


def rest_summary(asset: str, bids: Any, asks: Any, ts: int, tick: str | None = None) -> dict[str, Any]:
    out = {"market": "0xmarket", "asset_id": asset, "timestamp": str(ts), "hash": "0xr"}
    out |= {"bids": levels(bids), "asks": levels(asks)}
    if tick is not None:
        out["tick_size"] = tick
    return out


# the first message of a crossing buy: the 0.51 ask is gone, and the exchange's best ask (0.53)
# already reflects the removal of 0.52 that the next message carries
TRADE_1 = pc_ev([pc_entry(A, "0.51", "0", "SELL", best_bid="0.49", best_ask="0.53")], ts=TS0 + 1000)
TRADE_2 = pc_ev([pc_entry(A, "0.52", "0", "SELL", best_bid="0.49", best_ask="0.53")], ts=TS0 + 1000)


# ---- the pure cross-check -------------------------------------------------------------------


@pytest.mark.parametrize("marker", [None, "", "0", "1", "0.0", "1.00"])
def test_zero_one_and_empty_are_no_level_on_either_side(marker: str | None) -> None:
    assert crosscheck.server_level(marker) is None
    if marker is not None:
        assert crosscheck.claim(marker, marker) == (None, None)


def test_claim_and_agreement() -> None:
    assert crosscheck.claim(None, None) is None  # the message states no top
    assert crosscheck.claim("0.49", None) == (0.49, None)
    assert crosscheck.agrees((0.49, 0.51), 0.49, 0.51)
    assert not crosscheck.agrees((0.49, 0.53), 0.49, 0.51)
    assert not crosscheck.agrees((None, 0.51), 0.49, 0.51)
    assert crosscheck.agrees(None, 0.49, 0.51)
    assert not crosscheck.agrees(None, 0.51, 0.51)  # crossed (touching) is never consistent
    assert crosscheck.agrees(None, 0.49, None)
    with pytest.raises(Malformed) as exc:
        crosscheck.claim("abc", "0.5")
    assert exc.value.reason == "bad_bbo"


def test_claims_are_cached_only_when_valid() -> None:
    for _ in range(2):  # the second time from the cache: same answer, and a bad one still raises
        assert crosscheck.claim("0.49", "0.510") == (0.49, 0.51)
        assert crosscheck.claim("0", "1") == (None, None)
        with pytest.raises(Malformed):
            crosscheck.claim("0.49", "1.5")
        with pytest.raises(Malformed):
            crosscheck.claim("0.49", " 0.5")


def test_same_tick() -> None:
    assert crosscheck.same_tick("0.01", "0.01")
    assert crosscheck.same_tick("0.01", "0.010")
    assert not crosscheck.same_tick("0.01", "0.001")
    assert not crosscheck.same_tick(None, "0.01")
    assert not crosscheck.same_tick("0.01", None)


# ---- item 4: crossing trades ----------------------------------------------------------------


def test_crossing_trade_over_two_frames_settles_without_a_resync() -> None:
    s, conn = live_sim(rest_enabled=True)
    m = s.mark()
    s.now = T0 + 1
    (w,) = s.frame(conn, TRADE_1)
    # the local top (ask 0.52) disagrees with the exchange's (0.53): not live, not resynced
    assert (w.fields["status"], w.fields["reason"]) == ("resyncing", "bbo_settling")
    assert top(w.fields) == ("0.49", "200", "0.51", "150")  # the prices it last showed as live
    assert w.fields["updated_at"] == str(TS0)  # nothing confirmed it
    s.now = T0 + 1.005
    (w,) = s.frame(conn, TRADE_2)
    assert (w.fields["status"], w.fields["reason"]) == ("live", "")
    assert top(w.fields) == ("0.49", "200", "0.53", "50")
    assert w.fields["updated_at"] == str(TS0 + 1005)  # the message that confirmed it
    assert w.fields["ts"] == str(TS0 + 1000)
    assert s.ops(m) == []
    assert rest_requests(s) == []
    assert (s.stat("bbo_mismatch"), s.stat("bbo_settled")) == (0, 1)
    # nothing was ever written as live with a top the exchange had contradicted
    for fields in (w.fields for w in s.token_writes(A)):
        if fields["status"] == "live":
            assert fields["ask"] in ("0.51", "0.53")
            assert fields["ask"] == "0.51" or int(fields["ts"]) == TS0 + 1000


def test_crossing_trade_in_one_frame_is_one_live_write() -> None:
    s, conn = live_sim()
    s.now = T0 + 1
    (w,) = s.frame(conn, TRADE_1, TRADE_2)
    assert (w.fields["status"], top(w.fields)) == ("live", ("0.49", "200", "0.53", "50"))
    assert s.stat("bbo_mismatch") == 0


def test_a_mismatch_that_outlasts_the_grace_resyncs_with_ws_and_rest() -> None:
    s, conn = live_sim(rest_enabled=True, bbo_grace_s=0.3)
    m = s.mark()
    s.now = T0 + 1
    s.frame(conn, TRADE_1)
    assert s.tick_at(T0 + 1.29) == []
    assert s.ops(m) == [] and rest_requests(s) == []
    (w,) = s.tick_at(T0 + 1.3)  # SIDECAR_BBO_GRACE_S after the first disagreeing message
    assert (w.fields["status"], w.fields["reason"]) == ("resyncing", "bbo_mismatch")
    assert top(w.fields) == ("0.49", "200", "0.51", "150")
    assert s.ops(m) == [(conn, "unsubscribe", [A]), (conn, "subscribe", [A])]
    assert rest_requests(s) == [[A]]
    assert s.stat("bbo_mismatch") == 1
    assert s.stat("redrives", "bbo_mismatch") == 1


def test_a_still_disagreeing_message_after_the_grace_resyncs_at_once() -> None:
    s, conn = live_sim()
    s.now = T0 + 1
    s.frame(conn, TRADE_1)
    s.now = T0 + 1.999
    s.frame(conn, pc_ev([pc_entry(A, "0.40", "1", "BUY", best_bid="0.49", best_ask="0.53")]))
    assert s.engine.tokens[A].reason == "bbo_settling"
    s.now = T0 + 2.0
    (w,) = s.frame(conn, pc_ev([pc_entry(A, "0.41", "1", "BUY", best_bid="0.49", best_ask="0.53")]))
    assert (w.fields["status"], w.fields["reason"]) == ("resyncing", "bbo_mismatch")


def test_a_locally_crossed_book_is_not_live_until_it_uncrosses() -> None:
    s, conn = live_sim()
    s.now = T0 + 1
    # legacy messages carry no exchange top: the book itself must be consistent
    (w,) = s.frame(conn, legacy_pc_ev(A, [("0.51", "BUY", "5")], ts=TS0 + 1000))
    assert (w.fields["status"], w.fields["reason"]) == ("resyncing", "bbo_settling")
    assert top(w.fields) == ("0.49", "200", "0.51", "150")
    s.now = T0 + 1.002
    (w,) = s.frame(conn, legacy_pc_ev(A, [("0.51", "SELL", "0")], ts=TS0 + 1000))
    assert (w.fields["status"], top(w.fields)) == ("live", ("0.51", "5", "0.52", "300"))
    assert s.stat("crossed_books") == 1


def test_a_crossed_book_that_persists_resyncs_as_crossed_book() -> None:
    s, conn = live_sim()
    m = s.mark()
    s.now = T0 + 1
    s.frame(conn, legacy_pc_ev(A, [("0.52", "BUY", "5")]))
    (w,) = s.tick_at(T0 + 2.0)
    assert (w.fields["status"], w.fields["reason"]) == ("resyncing", "crossed_book")
    assert s.ops(m) == [(conn, "unsubscribe", [A]), (conn, "subscribe", [A])]
    assert s.stat("bbo_mismatch") == 0


def test_later_legacy_message_is_judged_against_the_latest_exchange_top() -> None:
    s, conn = live_sim()
    s.now = T0 + 1
    s.frame(conn, TRADE_1)
    s.now = T0 + 1.001
    (w,) = s.frame(conn, legacy_pc_ev(A, [("0.52", "SELL", "0")], ts=TS0 + 1000))
    assert (w.fields["status"], top(w.fields)) == ("live", ("0.49", "200", "0.53", "50"))


def test_best_bid_ask_settles_a_disagreement_and_zero_is_no_level_on_both_sides() -> None:
    s = Sim()
    s.server_books[A] = ((), ())  # both sides empty: near resolution
    s.start_live([A])
    conn = s.conn_of(A)
    bba = {"event_type": "best_bid_ask", "asset_id": A, "market": "0xmarket"}
    s.now = T0 + 2
    # seen live for an empty book: best_bid "0", best_ask "0", spread "0"
    assert s.frame(conn, {**bba, "best_bid": "0", "best_ask": "0", "spread": "0"}) == [
        QuoteWrite(A, {"updated_at": str(TS0 + 2000), "ts": str(TS0)}, False)
    ]
    s.now = T0 + 4
    s.frame(conn, {**bba, "best_bid": "1", "best_ask": "", "spread": "0"})
    assert s.status(A) == "live"
    assert s.engine.tokens[A].updated_at == TS0 + 4000
    # a best_bid_ask ahead of the price_change that carries the change, then the change
    s.now = T0 + 5
    (w,) = s.frame(conn, {**bba, "best_bid": "0.4", "best_ask": "1"})
    assert w.fields["reason"] == "bbo_settling"
    s.now = T0 + 5.01
    (w,) = s.frame(conn, pc_ev([pc_entry(A, "0.4", "10", "BUY")]))
    assert (w.fields["status"], top(w.fields)) == ("live", ("0.4", "10", "", ""))
    assert s.stat("bbo_mismatch") == 0


def test_price_change_best_prices_zero_or_one_mean_no_level_on_either_side() -> None:
    s = Sim()
    s.server_books[A] = ((("0.2", "10"),), ())
    s.start_live([A])
    conn = s.conn_of(A)
    (w,) = s.frame(conn, pc_ev([pc_entry(A, "0.25", "1", "BUY", best_bid="0.25", best_ask="0")]))
    assert (w.fields["status"], top(w.fields)) == ("live", ("0.25", "1", "", ""))
    assert s.stat("bbo_mismatch") == 0 and s.status(A) == "live"


def test_unreadable_exchange_top_is_counted_and_not_judged() -> None:
    s, conn = live_sim()
    (w,) = s.frame(conn, pc_ev([pc_entry(A, "0.495", "3", "BUY", best_bid="x", best_ask="0.51")]))
    assert (w.fields["status"], top(w.fields)) == ("live", ("0.495", "3", "0.51", "150"))
    assert s.stat("parse_errors", "bad_bbo") == 1


# ---- items 8 and 10: tick size changes, resync timings, REST reseeds ---------------------------


def tick_change(asset: str, old: str, new: str, ts: int) -> dict[str, Any]:
    return {
        "event_type": "tick_size_change",
        "asset_id": asset,
        "market": "0xmarket",
        "old_tick_size": old,
        "new_tick_size": new,
        "timestamp": str(ts),
    }


def test_a_tick_change_the_book_already_reflects_is_no_resync() -> None:
    s = Sim(engine_cfg(rest_enabled=True))
    s.desired([A])
    s.tick()
    conn = s.conn_of(A)
    s.frame(conn, book_ev(A, [("0.491", "4")], [("0.509", "5")], ts=TS0 + 10, tick_size="0.01"))
    m = s.mark()
    # the new book on the new grid arrives a few ms before its tick_size_change (captured traffic)
    s.now = T0 + 0.003
    s.frame(conn, book_ev(A, [("0.492", "4")], [("0.509", "5")], ts=TS0 + 12, tick_size="0.001"))
    (w,) = s.frame(conn, tick_change(A, "0.01", "0.001", TS0 + 13))
    assert (w.fields["status"], w.fields["tick_size"], w.fields["ts"]) == ("live", "0.001", str(TS0 + 13))
    assert top(w.fields) == ("0.492", "4", "0.509", "5")
    assert s.ops(m) == [] and rest_requests(s) == []
    assert s.stat("tick_size_change", "reflected") == 1


def test_a_tick_change_not_yet_reflected_reseeds_from_rest_at_once_and_the_ws_book_wins() -> None:
    s, conn = live_sim(rest_enabled=True)
    m = s.mark()
    s.now = T0 + 1
    (w,) = s.frame(conn, tick_change(A, "0.01", "0.001", TS0 + 1000))
    assert (w.fields["status"], w.fields["reason"]) == ("resyncing", "tick_size_change")
    (req,) = [a for _, a in s.actions[m:] if isinstance(a, RestFetch)]  # at once: no tick needed
    assert req.tokens == [A]
    assert s.ops(m) == []  # the exchange sends the new book by itself
    s.now = T0 + 1.2
    rest_book = rest_summary(A, [("0.491", "7")], [("0.509", "8")], TS0 + 1100, tick="0.001")
    (w,) = s.rest(req.request_id, [rest_book])
    assert (w.fields["status"], w.fields["reason"], w.fields["source"]) == ("live", "", "rest")
    assert top(w.fields) == ("0.491", "7", "0.509", "8")
    assert (w.fields["updated_at"], w.fields["ts"]) == (str(TS0 + 1200), str(TS0 + 1100))
    assert s.stat("rest_reseed", "applied") == 1
    s.now = T0 + 1.3
    (w,) = s.frame(conn, book_ev(A, [("0.492", "1")], [("0.508", "2")], ts=TS0 + 1250))
    assert live_from(w) == ("live", "book", ("0.492", "1", "0.508", "2"))
    s.run_for(10)
    assert s.ops(m) == []  # settled: no resync redrive after RESYNC_WAIT_S


def test_tick_change_without_rest_redrives_at_once() -> None:
    s, conn = live_sim(rest_enabled=False)
    m = s.mark()
    s.frame(conn, tick_change(A, "0.01", "0.001", TS0 + 1000))
    assert s.ops(m) == [(conn, "unsubscribe", [A]), (conn, "subscribe", [A])]


def redrive_times(s: Sim, since: int) -> list[float]:
    return [t for t, a in s.actions[since:] if getattr(a, "text", "").startswith('{"operation":"subscribe"')]


def test_tick_change_with_no_book_and_no_rest_answer_is_redriven_after_the_documented_wait() -> None:
    s, conn = live_sim(rest_enabled=True)
    s.run_for(10)  # clock at T0 + 10
    m = s.mark()
    s.frame(conn, tick_change(A, "0.01", "0.001", TS0 + 10_000))
    (req,) = [a for _, a in s.actions[m:] if isinstance(a, RestFetch)]
    s.rest(req.request_id, None)  # REST fails
    s.run_for(60, step=0.25)
    # RESYNC_WAIT_S (5 s) after the change, then every 4 x 5 s, each checked once a second
    times = redrive_times(s, m)
    assert len(times) == 3, times
    assert 15.0 <= times[0] - T0 < 16.0
    assert 20.0 <= times[1] - times[0] < 21.0
    assert 20.0 <= times[2] - times[1] < 21.0
    # and each redrive asks REST again (the first answer is still in flight, so only once more)
    assert rest_requests(s) == [[A], [A]]
    assert s.engine.tokens[A].reason == "tick_size_change"


def test_bbo_mismatch_redrives_at_once_then_after_the_documented_wait() -> None:
    s, conn = live_sim()
    s.run_for(10)
    m = s.mark()
    s.frame(conn, TRADE_1)
    s.run_for(60, step=0.25)  # the exchange never answers the redrive with a book
    times = redrive_times(s, m)
    assert len(times) == 4, times
    assert times[0] - T0 == pytest.approx(11.0)  # SIDECAR_BBO_GRACE_S after the mismatch
    assert 5.0 <= times[1] - times[0] < 6.0
    assert 20.0 <= times[2] - times[1] < 21.0
    assert 20.0 <= times[3] - times[2] < 21.0
    # resyncing the whole time, never with a pending-only reason
    assert {(w.fields["status"], w.fields["reason"]) for w in s.token_writes(A)[2:]} == {
        ("resyncing", "bbo_settling"),
        ("resyncing", "bbo_mismatch"),
    }


def test_rest_reseeds_a_resyncing_token_unless_the_stream_moved_past_it() -> None:
    s, conn = live_sim(rest_enabled=True)
    s.now = T0 + 1
    s.frame(conn, TRADE_1)
    s.tick_at(T0 + 2)  # past the grace: bbo_mismatch, WS redrive and REST at once
    (req,) = [a for _, a in s.actions if isinstance(a, RestFetch)]
    assert s.status(A) == "resyncing"
    # a REST snapshot older than events the socket already applied is not the truth any more
    old = rest_summary(A, [("0.49", "200")], [("0.51", "1")], TS0 + 999)
    assert s.rest(req.request_id, [old]) == []
    assert s.status(A) == "resyncing"
    assert s.stat("rest_reseed", "older") == 1
    s.tick_at(T0 + 7)  # RESYNC_WAIT_S later: WS redrive and REST again
    (_, req) = [a for _, a in s.actions if isinstance(a, RestFetch)]
    s.now = T0 + 7.1
    fresh = rest_summary(A, [("0.49", "200")], [("0.53", "50")], TS0 + 7000)
    (w,) = s.rest(req.request_id, [fresh])
    assert live_from(w) == ("live", "rest", ("0.49", "200", "0.53", "50"))
    assert w.fields["updated_at"] == str(TS0 + 7100)


def test_rest_never_makes_a_crossed_book_live() -> None:
    s, conn = live_sim(rest_enabled=True)
    s.frame(conn, tick_change(A, "0.01", "0.001", TS0 + 1000))
    (req,) = [a for _, a in s.actions if isinstance(a, RestFetch)]
    assert s.rest(req.request_id, [rest_summary(A, [("0.52", "1")], [("0.51", "1")], TS0 + 2000)]) == []
    assert s.status(A) == "resyncing"
    assert s.stat("rest_reseed", "crossed") == 1


def test_stale_tokens_never_show_pending_only_reasons() -> None:
    s = Sim(engine_cfg(confirm_timeout_s=5.0))
    s.start_live([A])
    s.close_from_server(s.conn_of(A), "close_1006")
    s.mute.add(A)  # the new socket never sends its book
    s.run_for(400)
    assert s.status(A) == "stale"
    ops = [op for _, op, ids in s.ops() if A in ids]
    assert ops.count("subscribe") + ops.count("market") >= 5  # redriven, moved, retried
    assert s.stat("moves") == 1
    reasons = {w.fields["reason"] for w in s.token_writes(A)[2:]}  # after pending, live
    assert reasons == {"connection_close_1006"}
    assert s.engine.no_data_count() == 0


def test_pending_tokens_still_show_their_redrive_reasons() -> None:
    s = Sim(engine_cfg(confirm_timeout_s=5.0))
    s.mute.add(A)
    s.desired([A])
    s.run_for(400)
    reasons = [w.fields["reason"] for w in s.token_writes(A)]
    assert reasons == NO_FIRST_EVENT_REASONS
    assert s.engine.no_data_count() == 1


# ---- item 9: timestamps ---------------------------------------------------------------------


def test_updated_at_only_refresh_carries_the_latest_event_ts() -> None:
    s, conn = live_sim()
    s.now = T0 + 1.2
    # a change below the top: the top is confirmed (updated_at) and ts moves with it
    assert s.frame(conn, legacy_pc_ev(A, [("0.45", "BUY", "7")], ts=TS0 + 1150)) == [
        QuoteWrite(A, {"updated_at": str(TS0 + 1200), "ts": str(TS0 + 1150)}, False)
    ]


# ---- item 13: shutdown ----------------------------------------------------------------------


def test_shutdown_turns_resyncing_and_settling_quotes_stale() -> None:
    s = Sim()
    s.server_books[A] = (BIDS, ASKS)
    s.server_books[B] = (BIDS, ASKS)
    s.start_live([A, B])
    s.frame(s.conn_of(A), TRADE_1)  # A settling
    s.frame(s.conn_of(B), tick_change(B, "0.01", "0.001", TS0 + 1))  # B resyncing
    assert (s.engine.tokens[A].reason, s.engine.tokens[B].reason) == ("bbo_settling", "tick_size_change")
    s.engine.shutdown()
    writes = {w.token: w.fields for w in s.pump()}
    assert (writes[A]["status"], writes[A]["reason"]) == ("stale", "sidecar_stopped")
    assert (writes[B]["status"], writes[B]["reason"]) == ("stale", "sidecar_stopped")
    assert s.tick_at(T0 + 5) == []  # a settling token's grace ends in nothing after the stop


@pytest.mark.parametrize(
    "claim",
    [{}, {"best_bid": "abc", "best_ask": "xyz"}, {"best_bid": None, "best_ask": None}],
    ids=["no-prices", "garbage", "nulls"],
)
def test_a_best_bid_ask_without_a_readable_top_confirms_nothing(claim: dict[str, Any]) -> None:
    """It carries nothing but its claim: with none, updated_at must not move and nothing is written."""
    s = Sim()
    s.server_books[A] = (BIDS, ASKS)
    s.start_live([A])
    before = s.engine.tokens[A].updated_at
    s.now = T0 + 5
    assert s.frame(s.conn_of(A), {"event_type": "best_bid_ask", "asset_id": A, **claim}) == []
    assert s.engine.tokens[A].updated_at == before
    assert s.status(A) == "live"
