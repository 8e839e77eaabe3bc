"""sidecar.core.timers: confirmation redrives and moves, silence probes, zombie sockets."""

from __future__ import annotations

import itertools
import random

from sidecar.core.engine import Close, Open
from tests.core.harness import (
    NO_FIRST_EVENT_REASONS,
    T0,
    Sim,
    book_ev,
    by_token,
    encode,
    legacy_pc_ev,
    tok,
    total,
    trade_ev,
)

A, B, C = tok(1), tok(2), tok(3)


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
    assert [w.fields["reason"] for w in writes] == NO_FIRST_EVENT_REASONS
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
