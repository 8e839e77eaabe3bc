"""sidecar.core.sockets: subscription frames, shards, socket lifecycle, reconnects and backoff.

Every test runs on :class:`tests.core.harness.Sim`, whose fake exchange asserts the wire rules on
every frame the engine sends (first frame ``type: market``, never a second one, 1-100 valid ids
per frame, no re-subscribe of an id already on the socket, PING only after the subscription).
"""

from __future__ import annotations

import itertools
import json
import random

import pytest

from sidecar.core.engine import Close, Open
from tests.core.harness import (
    T0,
    MaxRandom,
    Sim,
    book_ev,
    by_token,
    encode,
    engine_cfg,
    legacy_pc_ev,
    pc_entry,
    pc_ev,
    tok,
    top,
    total,
)

A, B, C = tok(1), tok(2), tok(3)


# ---- wire rules --------------------------------------------------------------------------------

# The per-socket backoff while the venue is judged up: one shard failing for long would otherwise
# be a venue outage, with its one shared probe instead (tests/core/test_venue.py).
NEVER = 1e9


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


def backoff_sim(backoff_max_s: float) -> tuple[Sim, MaxRandom]:
    """One token, sockets opened by hand, the longest jitter always drawn: every wait is exact."""
    rng = MaxRandom()
    cfg = engine_cfg(backoff_min_s=1.0, venue_down_after_s=NEVER, backoff_max_s=backoff_max_s)
    s = Sim(cfg, rng=rng, auto_open=False)
    s.desired([A])
    s.tick()
    return s, rng


def fail_and_await_reopen(s: Sim, reason: str, http_status: int | None) -> None:
    """The newest socket's handshake fails; step the clock until the engine opens the next one."""
    s.engine.on_connect_failed(s.opens()[-1].conn_id, reason, s.now, http_status)
    s.pump()
    await_next_open(s)


def await_next_open(s: Sim) -> None:
    opens = len(s.opens())
    while len(s.opens()) == opens:
        s.step(0.5)


def test_connect_backoff_grows_with_full_jitter_and_is_bounded() -> None:
    s, rng = backoff_sim(8.0)
    open_times = [s.now]
    for _ in range(6):
        fail_and_await_reopen(s, "http_429", 429)
        assert len(s.opens()) == len(open_times) + 1  # exactly one socket per failure
        open_times.append(s.now)
    assert rng.windows == [(0.0, 2.0), (0.0, 4.0), (0.0, 8.0), (0.0, 8.0), (0.0, 8.0), (0.0, 8.0)]
    assert [b - a for a, b in itertools.pairwise(open_times)] == [2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert s.stat("connect_failures", "http_429") == 6


def test_backoff_starts_over_once_a_socket_has_delivered_data() -> None:
    s, rng = backoff_sim(64.0)
    for _ in range(3):
        fail_and_await_reopen(s, "refused", None)
    assert rng.windows == [(0.0, 2.0), (0.0, 4.0), (0.0, 8.0)]
    conn = s.opens()[-1].conn_id
    s.connect(conn)
    s.frame(conn, book_ev(A))
    s.close_from_server(conn)
    assert rng.windows[-1] == (0.0, 2.0)  # a socket that worked: start over
    await_next_open(s)
    conn = s.opens()[-1].conn_id
    s.connect(conn)
    s.close_from_server(conn)  # opened but never delivered: keep backing off
    assert rng.windows[-1] == (0.0, 4.0)


def test_connect_backoff_with_a_seeded_rng_stays_in_its_window() -> None:
    s = Sim(
        engine_cfg(backoff_min_s=0.5, venue_down_after_s=NEVER, backoff_max_s=4.0),
        rng=random.Random(3),
        auto_open=False,
    )
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
