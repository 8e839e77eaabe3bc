"""sidecar.core.writes and report: seq and epoch of quote writes, shutdown, the summary hash."""

from __future__ import annotations

import itertools

from sidecar.core.engine import Close
from tests.core.harness import (
    T0,
    TS0,
    Sim,
    book_ev,
    by_token,
    engine_cfg,
    legacy_pc_ev,
    tok,
    trade_ev,
)

A, B, C = tok(1), tok(2), tok(3)


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
