"""sidecar.core.confirm: quiet live tokens re-confirmed over REST; REST books that differ."""

from __future__ import annotations

from typing import Any

from sidecar.core.engine import QuoteWrite
from tests.core.harness import (
    T0,
    TS0,
    Sim,
    engine_cfg,
    levels,
    tok,
    top,
)

A, B, C = tok(1), tok(2), tok(3)


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
    # The live books carry the reference data the REST summaries carry: a confirmation that
    # teaches nothing new is an updated_at-only refresh.
    s.book_extra = {"tick_size": "0.01", "min_order_size": "5", "neg_risk": False}
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
