"""A resyncing token whose resync redrives bring no book escalates like a token with no first
event: the resync's own redrives (at once, RESYNC_WAIT_S later), then SIDECAR_REDRIVE_MAX more,
4 x RESYNC_WAIT_S apart, then a move to a fresh socket with the same budget there, then slow
retries. Its status stays ``resyncing`` with its resync reason throughout.

Why it matters: a busy token's deltas keep advancing its exchange timestamp, so every REST reseed
is refused as older; only a fresh WS book can rescue it, and a socket that will not re-snapshot it
never will. Without the move such a token, live at the exchange, stays ``resyncing`` forever."""

from __future__ import annotations

from typing import Any

from sidecar.core.resync import RESYNC_WAIT_S
from sidecar.core.timers import REDRIVE_SLOW_S
from tests.core.harness import T0, TS0, Sim, engine_cfg, levels, pc_entry, pc_ev, tok

A = tok(1)
B = tok(2)


def older_rest_book(ts: int) -> dict[str, Any]:
    """A REST book the socket's deltas already moved past: refused as older."""
    return {
        "asset_id": A,
        "market": "0xmarket",
        "timestamp": str(ts),
        "bids": levels([("0.47", "9")]),
        "asks": levels([("0.53", "8")]),
    }


def busy_resync(seconds: float) -> tuple[Sim, int, int]:
    """A and B live on one socket that answers subscribes with books, but never again for A; a bad
    entry puts A in resync at T0 + 1, then A gets a delta every second (B none) and each REST answer
    for A is older than its latest delta. Returns the sim, the first socket, the action mark."""
    s = Sim(engine_cfg(rest_enabled=True, redrive_max=2, confirm_timeout_s=20.0), answer_subscribe=True)
    s.mute.add(A)
    s.start_live([A, B])
    first = s.conn_of(A)
    s.now = T0 + 1
    m = s.mark()
    (w,) = s.frame(first, pc_ev([pc_entry(A, "0.49", "-7", "BUY")], ts=TS0 + 1000))
    assert (w.fields["status"], w.fields["reason"]) == ("resyncing", "bad_entry")
    busy(s, 2, seconds)
    return s, first, m


def busy(s: Sim, start: int, end: float) -> None:
    """Tick once a second from T0 + start to T0 + end: A gets a delta each second on the socket that
    holds it; every REST book asked for A is older than A's latest delta."""
    for k in range(start, round(end) + 1):
        s.tick_at(T0 + k)
        conn = s.engine.shards.shards[s.engine.tokens[A].shard_id].conn_id  # None while opening
        if conn in s.open_conns and A in s.server_subs[conn]:
            s.frame(conn, pc_ev([pc_entry(A, "0.49", str(k), "BUY")], ts=TS0 + k * 1000))
        for req in [r for r in s.rest_requests if r.request_id in s.engine.rest_inflight]:
            latest = s.engine.tokens[A].ts
            assert latest is not None
            s.rest(req.request_id, [older_rest_book(latest - 1)])


def subscribe_times(s: Sim, since: int) -> list[tuple[float, int]]:
    """(time, socket) of each subscribe frame naming A (a fresh socket's first frame included)."""
    out = []
    for t, a in s.actions[since:]:
        text = getattr(a, "text", "")
        if A in text and ('"operation":"subscribe"' in text or '"type":"market"' in text):
            out.append((t, a.conn_id))
    return out


def test_a_busy_resyncing_token_with_no_book_is_redriven_then_moved_then_retried_slowly() -> None:
    s, first, m = busy_resync(300)
    subs = subscribe_times(s, m)
    times = [t - T0 for t, _ in subs]
    conns = [c for _, c in subs]
    # at once, RESYNC_WAIT_S later, then SIDECAR_REDRIVE_MAX (2) more 4 x RESYNC_WAIT_S apart ...
    assert times[0] == 1.0
    assert RESYNC_WAIT_S <= times[1] - times[0] < RESYNC_WAIT_S + 1
    for i in (2, 3):
        assert 4 * RESYNC_WAIT_S <= times[i] - times[i - 1] < 4 * RESYNC_WAIT_S + 1, times
    assert conns[:4] == [first] * 4
    # ... then moved to a fresh socket, 4 x RESYNC_WAIT_S after the last redrive ...
    assert s.stat("moves") == 1
    fresh = s.conn_of(A)
    assert fresh != first
    moved = max(
        t
        for t, a in s.actions[m:]
        if getattr(a, "conn_id", None) == first and "unsub" in getattr(a, "text", "") and A in a.text
    )
    assert 4 * RESYNC_WAIT_S <= moved - T0 - times[3] < 4 * RESYNC_WAIT_S + 1, (moved, times)
    assert A not in s.server_subs[first]  # unsubscribed from the socket that would not answer
    assert conns[4] == fresh
    assert 0 <= times[4] - (moved - T0) <= 1  # the fresh socket's first frame, once it is open
    assert s.conn_of(B) == first  # the healthy token stays where it is
    # ... with the same redrive budget there, timed from the move, then nothing until the slow retry
    assert 4 * RESYNC_WAIT_S <= times[5] - (moved - T0) < 4 * RESYNC_WAIT_S + 1, times
    assert 4 * RESYNC_WAIT_S <= times[6] - times[5] < 4 * RESYNC_WAIT_S + 1, times
    assert conns[5:] == [fresh, fresh]
    assert len(times) == 7, times
    assert s.stat("redrives", "resync_timeout") == 5  # counted as resync redrives, the move aside
    assert s.stat("redrives", "confirm_timeout") == 0
    assert 300 - times[6] < REDRIVE_SLOW_S  # the slow retry is not due yet
    # the deltas kept making every REST reseed older: only a WS book could ever settle it
    assert s.stat("rest_reseed", "applied") == 0
    assert s.stat("rest_reseed", "older") >= 7
    # resyncing with its own reason all along: never a pending-only reason
    assert s.status(A) == "resyncing"
    writes = [(w.fields["status"], w.fields["reason"]) for w in s.token_writes(A)]
    assert writes[:3] == [("pending", "subscribing"), ("live", ""), ("resyncing", "bad_entry")]
    after = writes[2:]
    assert set(after) == {("resyncing", "bad_entry")}
    assert s.engine.no_data_count() == 0
    # the fresh socket's book makes it live
    s.now = T0 + 300.5
    (w,) = s.frame(fresh, s.snapshot(A))
    assert (w.fields["status"], w.fields["reason"]) == ("live", "")


def test_the_slow_retry_of_a_resyncing_token_redrives_and_asks_rest_again() -> None:
    s, _, m = busy_resync(130)
    fresh = s.conn_of(A)
    done = len(subscribe_times(s, m))
    rest_before = len(s.rest_requests)
    busy(s, 131, 130 + REDRIVE_SLOW_S - 1)  # to T0 + 429: the slow retry falls due at about T0 + 426
    late = subscribe_times(s, m)[done:]
    assert [c for _, c in late] == [fresh]
    assert REDRIVE_SLOW_S <= late[0][0] - T0 - 126 < REDRIVE_SLOW_S + 2, late
    assert [r.tokens for r in s.rest_requests[rest_before:] if A in r.tokens] == [[A]]
    assert (s.status(A), s.engine.tokens[A].reason) == ("resyncing", "bad_entry")


def test_a_resyncing_token_whose_book_comes_is_not_moved() -> None:
    s, first, m = busy_resync(30)  # redriven at once, at +5 s and +25 s
    assert len(subscribe_times(s, m)) == 3
    s.now = T0 + 30.5
    (w,) = s.frame(first, s.snapshot(A))
    assert (w.fields["status"], w.fields["reason"]) == ("live", "")
    for k in range(31, 91):  # busy and well: a delta a second
        s.tick_at(T0 + k)
        s.frame(first, pc_ev([pc_entry(A, "0.49", str(k), "BUY")], ts=TS0 + k * 1000))
    assert s.status(A) == "live"
    assert s.stat("moves") == 0
    assert s.conn_of(A) == first
    assert len(subscribe_times(s, m)) == 3
