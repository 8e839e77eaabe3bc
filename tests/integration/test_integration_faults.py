"""Fault tolerance end to end: the real sidecar process against a real redis-server and the simulator.

Redis unavailable, restarted empty or stalled; hostile frames from the exchange; hostile desired
sets; exchange-side closes, drops, handshake refusals, half-open and slow sockets; signals and
systemd; and one fault schedule that checks the only thing a worker really cares about: a quote
that says ``live`` is the exchange's top of book (give or take a second).
"""

from __future__ import annotations

import itertools
import json
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from pmsim import Simulator

from devkit.procfs import status as proc_status
from devkit.procs import SidecarProcess
from devkit.redis_server import RedisServer
from devkit.scrape import metric, scrape, wait_metric
from devkit.truth import TOP_FIELDS, TruthWatch
from devkit.wait import wait_for, wait_for_none
from tests.integration.common import (
    BUSY_SCRIPT,
    P,
    QuoteListener,
    all_match,
    hashes,
    move_truth,
    new_tokens,
    quote,
    start_live,
    statuses,
)

pytestmark = pytest.mark.integration

# ---- helpers ---------------------------------------------------------------------------------


def health_json(proc: SidecarProcess, path: str = "/healthz") -> tuple[int, dict[str, Any]]:
    status, body = proc.http_get(path)
    return status, (json.loads(body) if body else {})


def sent_ops(sim: Simulator) -> list[dict[str, Any]]:
    """Every JSON frame the sidecar sent to the exchange, across all connections."""
    out = []
    for conn in sim.connections():
        for _, text in conn.received:
            if text != "PING":
                out.append(orjson.loads(text))
    return out


def unsubscribed_ids(sim: Simulator) -> set[str]:
    return {t for op in sent_ops(sim) if op.get("operation") == "unsubscribe" for t in op["assets_ids"]}


@pytest.fixture
def listener(redis_server: RedisServer) -> Iterator[QuoteListener]:
    """Every quote message published from before the sidecar starts (closed after the test)."""
    watch = QuoteListener(redis_server)
    yield watch
    watch.close()


def stale_since(listener: QuoteListener, token: str, index: int) -> bool:
    return any(m["status"] == "stale" for m in listener.for_token(token)[index:])


class Sampler(threading.Thread):
    """Calls ``fn`` every ``interval`` seconds in the background and keeps (time, value).

    A sample that raises is a failed observation, not a quiet one: ``stop()`` fails the test.
    """

    def __init__(self, fn: Callable[[], Any], interval: float) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.interval = interval
        self.values: list[tuple[float, Any]] = []
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.values.append((time.monotonic(), self.fn()))
            except Exception as exc:
                self.errors.append(repr(exc))
            self._stop_event.wait(self.interval)

    def stop(self) -> list[tuple[float, Any]]:
        self._stop_event.set()
        self.join(5)
        assert not self.is_alive(), "the sampler did not stop"
        assert self.errors == [], f"{len(self.errors)} samples failed, first: {self.errors[0]}"
        return self.values


def backoff_wait(elapsed: float, first: float, cap: float) -> float:
    """The wait a retry loop doubling from `first` to `cap` is in after `elapsed` seconds."""
    return min(cap, first * 2 ** (backoff_attempts(elapsed, first, cap) - 1))


def backoff_attempts(elapsed: float, first: float, cap: float) -> int:
    """Attempts made within `elapsed` seconds by a retry loop doubling its wait from `first` to `cap`."""
    attempts, t, wait = 1, 0.0, first
    while t + wait <= elapsed:
        t += wait
        attempts += 1
        wait = min(wait * 2, cap)
    return attempts


# ---- 1. Redis faults ----------------------------------------------------------------------------


def test_redis_unavailable_at_startup_retries_reports_not_ready_then_works(
    redis_server: RedisServer, sim: Simulator, sidecar
) -> None:
    tokens = new_tokens(sim, 1)
    redis_server.stop()
    launched = time.monotonic()
    proc = sidecar()
    wait_for(lambda: proc.http_get("/metrics")[0] == 200, 10, what="/metrics served without Redis")
    started = time.monotonic()
    status, body = health_json(proc, "/healthz")
    assert status == 503 and body["redis"] is False, body
    assert proc.http_get("/readyz")[0] == 503
    assert metric(proc, "pm_sidecar_redis_up") == 0
    # It keeps retrying (errors keep coming) but with backoff, not in a busy loop.
    wait_metric(proc, "pm_sidecar_redis_errors_total", 2, timeout=15, component="writer")
    wait_metric(proc, "pm_sidecar_redis_errors_total", 2, timeout=15, component="desired")
    down_for = time.monotonic() - started
    errors = metric(proc, "pm_sidecar_redis_errors_total")
    # Each of the two components retries after 0.1, 0.2, 0.4, ... s (capped at 5 s).
    most = 2 * (backoff_attempts(down_for, first=0.1, cap=5.0) + 1)
    assert errors <= most, f"{errors} Redis errors in {down_for:.1f}s (backoff allows {most})"
    assert proc.proc.poll() is None
    assert proc.http_get("/healthz")[0] == 503
    assert sim.handshakes == 0, "no desired set yet: nothing to subscribe"

    redis_server.start()
    appeared = time.monotonic()
    r = redis_server.client()
    r.sadd(P + "desired", *tokens)
    wait_for(lambda: all_match(r, sim, tokens), 15, what="quotes live once Redis appears")
    took = time.monotonic() - appeared
    # The desired reader and the writer each retry within their current backoff wait; then one
    # socket, its snapshot and a write: a second or two.
    most = backoff_wait(appeared - launched, first=0.1, cap=5.0) + 2.0
    assert took < most, f"took {took:.1f}s after Redis appeared (backoff allows {most:.1f}s)"
    wait_for(lambda: proc.http_get("/healthz")[0] == 200, 5, what="/healthz 200")
    wait_for(lambda: proc.http_get("/readyz")[0] == 200, 5, what="/readyz 200")
    assert r.get(P + "sidecar:alive") == r.hget(P + "sidecar", "epoch")
    wait_for(lambda: metric(proc, "pm_sidecar_redis_up") == 1, 5, what="redis_up gauge 1")
    print(f"{errors:.0f} Redis errors in {down_for:.1f}s down; live {took:.2f}s after Redis appeared")
    assert proc.terminate() == 0


@pytest.mark.parametrize(
    "outage_s",
    [
        pytest.param(0.0, id="immediate-restart"),
        pytest.param(6.0, id="six-second-outage"),
    ],
)
def test_redis_restart_rewrites_the_full_state_of_every_token(
    redis_server: RedisServer, sim: Simulator, sidecar, outage_s: float
) -> None:
    active = new_tokens(sim, 2)
    quiet = new_tokens(sim, 1)  # no event after the snapshot: only a rewrite can bring them back
    muted = new_tokens(sim, 1)[0]  # never gets data: pending, with a reason
    resolved_market = sim.add_market()
    resolved = sim.markets()[resolved_market]
    tokens = [*active, *quiet, muted, *resolved]
    sim.mute(muted)
    r = redis_server.client()
    r.sadd(P + "desired", *tokens)
    proc = sidecar(confirm_timeout_s=60)
    live = [*active, *quiet]
    wait_for(lambda: all_match(r, sim, live + resolved), 15, what="live")
    sim.resolve(resolved_market, resolved[0])
    wait_for(lambda: statuses(r, resolved) == {"resolved"}, 5, what="resolved")
    wait_for(lambda: quote(r, muted).get("status") == "pending", 5, what="muted token pending")
    before = dict(zip(tokens, hashes(r, tokens), strict=True))
    epoch = r.hget(P + "sidecar", "epoch")
    handshakes = sim.handshakes
    sim.start_activity(20, active)
    # Restart right after a summary write, as a quick supervised restart would land between writes.
    beat = r.hget(P + "sidecar", "heartbeat_at")
    wait_for(lambda: r.hget(P + "sidecar", "heartbeat_at") != beat, 3, interval=0.005, what="a summary write")
    redis_server.stop()
    if outage_s:
        wait_for(lambda: proc.http_get("/healthz")[0] == 503, 10, what="/healthz 503 during the outage")
        wait_for(lambda: metric(proc, "pm_sidecar_redis_up") == 0, 5, what="redis_up gauge 0")
        deadline = time.monotonic() + outage_s
        while time.monotonic() < deadline:  # the outage itself; the sidecar keeps running
            assert proc.proc.poll() is None
            time.sleep(0.2)
    redis_server.start()
    restarted = time.monotonic()
    r = redis_server.client()
    assert not r.exists(P + "desired"), "no persistence: the restarted Redis is empty"

    def lacking() -> list[str]:
        """What is not yet back in the restarted Redis (empty when everything is)."""
        out = []
        now = dict(zip(tokens, hashes(r, tokens), strict=True))
        for t in [*quiet, *resolved, muted]:
            old, new = before[t], now[t]
            diff = [k for k in (*TOP_FIELDS, "reason", "epoch") if new.get(k) != old.get(k)]
            if diff:
                out.append(f"quote {t[:10]}… ({old.get('status')}) differs in {diff}: {new or 'missing'}")
        out += [f"active {t[:10]}… {now[t] or 'missing'}" for t in active if not all_match(r, sim, [t])]
        summary = r.hgetall(P + "sidecar")
        if summary.get("epoch") != epoch or summary.get("desired") != str(len(tokens)):
            out.append(f"{P}sidecar is {summary or 'missing'}")
        if r.get(P + "sidecar:alive") != epoch:
            out.append(f"{P}sidecar:alive is {r.get(P + 'sidecar:alive')!r}")
        return out

    wait_for_none(lacking, 8, interval=0.1, what="full state of every token back in Redis")
    took = time.monotonic() - restarted
    assert 0 < r.ttl(P + "sidecar:alive") <= 5
    sim.stop_activity()
    wait_for(lambda: all_match(r, sim, active), 3, what="active tokens equal truth after activity")
    # The vanished desired set was not taken for "the scheduler wants nothing".
    assert unsubscribed_ids(sim) == set(), "tokens were unsubscribed after the Redis restart"
    assert statuses(r, tokens) <= {"live", "pending", "resolved"}
    assert sim.handshakes == handshakes, "a Redis restart must not touch the exchange sockets"
    # The scheduler rewrites the desired set, with one token more: re-read and applied.
    extra = new_tokens(sim, 1)[0]
    r.sadd(P + "desired", *tokens, extra)
    r.publish(P + "desired:changed", "1")
    wait_for(lambda: all_match(r, sim, [extra]), 3, what="new token from the rewritten desired set live")
    wait_for(lambda: proc.http_get("/healthz")[0] == 200, 5, what="/healthz 200 again")
    assert sim.violations == []
    print(f"state restored {took:.2f}s after Redis came back (outage {outage_s}s)")
    assert proc.terminate() == 0


def test_redis_restarted_while_stalled_keeps_the_desired_set(
    redis_server: RedisServer, sim: Simulator, sidecar
) -> None:
    """A hung Redis gets restarted by its supervisor while the sidecar's reads wait on it."""
    tokens, r, proc = start_live(redis_server, sim, sidecar, 2, desired_poll_s=0.2)
    r.execute_command("CLIENT", "PAUSE", "10000", "ALL")
    # Nothing can be observed inside a paused Redis (CLIENT LIST waits too); the desired reader
    # polls every 0.2 s, so after 1 s it is certainly waiting on its SMEMBERS.
    time.sleep(1.0)
    redis_server.stop()
    redis_server.start()
    r = redis_server.client()
    wait_for(lambda: r.get(P + "sidecar:alive"), 5, what="the sidecar writing to the new Redis")
    deadline = time.monotonic() + 3.0  # the scheduler has not rewritten its set yet
    seen: set[str] = set()
    while time.monotonic() < deadline:
        assert not unsubscribed_ids(sim), f"unsubscribed after the restart: {proc.log()[-1500:]}"
        seen |= statuses(r, tokens)
        time.sleep(0.1)
    assert "unsubscribed" not in seen
    wait_for(lambda: all_match(r, sim, tokens), 5, what="quotes rewritten, live")
    assert sim.violations == []
    assert proc.terminate() == 0


@pytest.mark.parametrize("stall", ["client-pause", "busy-script"])
def test_stalled_redis_never_blocks_the_sockets_and_the_backlog_drains(
    redis_server: RedisServer, sim: Simulator, sidecar, stall: str
) -> None:
    tokens = new_tokens(sim, 50)
    r = redis_server.client()
    r.sadd(P + "desired", *tokens)
    proc = sidecar(ping_interval_s=0.3, pong_timeout_s=1.5, silence_min_s=1, silence_max_s=5)
    wait_for(lambda: statuses(r, tokens) == {"live"}, 20, interval=0.1, what="100 tokens live")
    sim.start_activity(400, tokens)
    wait_metric(proc, "pm_sidecar_events_total", 200, timeout=10, type="price_change")
    handshakes = sim.handshakes
    pings = sum(c.pings for c in sim.connections())
    rss_before = proc_status(proc.pid).rss_kb
    stall_s = 3.0

    blocker: threading.Thread | None = None
    if stall == "client-pause":
        r.execute_command("CLIENT", "PAUSE", str(int(stall_s * 1000)), "ALL")
    else:
        slow = redis.Redis(port=redis_server.port, socket_timeout=stall_s + 10)
        blocker = threading.Thread(target=lambda: slow.eval(BUSY_SCRIPT, 0, stall_s), daemon=True)
        blocker.start()
    stalled_at = time.monotonic()
    backlog: list[float] = []
    lags: list[float] = []
    # Observe through HTTP only: any Redis command from here would itself wait for the stall.
    while time.monotonic() - stalled_at < stall_s - 0.3:
        status, body = health_json(proc)
        assert status == 200, f"/healthz {status} {body}: a stall is not an outage"
        lags.append(body["loop_lag_s"])
        backlog.append(metric(proc, "pm_sidecar_writer_backlog_tokens"))
        time.sleep(0.1)
    pings_during = sum(c.pings for c in sim.connections()) - pings
    if blocker is not None:
        blocker.join(stall_s + 10)
    assert max(backlog) > 0, f"the stall never held up a write (backlog {backlog})"
    assert max(backlog) <= len(tokens), f"backlog {max(backlog)} > {len(tokens)} tokens: not coalesced"
    assert max(lags) < 0.5, f"engine loop lagged {max(lags)}s during the Redis stall"
    assert pings_during >= 5, f"only {pings_during} PINGs during a {stall_s}s stall: the loop blocked"
    wait_for(lambda: metric(proc, "pm_sidecar_writer_backlog_tokens") <= 10, 10, what="backlog drained")
    sim.stop_activity()
    wait_for(lambda: all_match(r, sim, tokens), 3, interval=0.1, what="quotes equal truth after the stall")
    assert sim.handshakes == handshakes, "no socket reconnect"
    assert metric(proc, "pm_sidecar_reconnects_total") == 0, "no PONG timeout, no silence replacement"
    growth = proc_status(proc.pid).rss_kb - rss_before
    print(f"{stall}: backlog max {max(backlog):.0f}, loop lag max {max(lags):.3f}s, {pings_during} PINGs")
    assert growth < 50_000, f"RSS grew {growth} kB over a {stall_s}s stall"
    assert proc.terminate() == 0


# ---- 2. Bad exchange input ----------------------------------------------------------------------


def test_malformed_frames_are_counted_by_reason_and_the_good_ones_applied(
    redis_server: RedisServer, sim: Simulator, sidecar
) -> None:
    a, b = new_tokens(sim, 1)
    r = redis_server.client()
    r.sadd(P + "desired", a, b)
    proc = sidecar()
    wait_for(lambda: all_match(r, sim, [a, b]), 10, what="live")
    conn = sim.conn_for(a)
    assert conn is not None
    market = sim.market_of(a)

    def book(asset: str, bids: Any, asks: Any) -> bytes:
        return orjson.dumps(
            {"event_type": "book", "asset_id": asset, "market": market, "bids": bids, "asks": asks}
        )

    def change(**entry: Any) -> bytes:
        base = {"asset_id": a, "price": "0.5", "size": "10", "side": "BUY"}
        base.update(entry)
        return orjson.dumps({"event_type": "price_change", "market": market, "price_changes": [base]})

    level = {"price": "0.5", "size": "1"}
    two_mb_levels = b'{"price":"0.33","size":"1000"},' * 70_000
    bad: list[tuple[str, bytes | str]] = [
        ("bad_json", "{not json"),
        ("bad_json", b'{"event_type": "book", "asset_id": "' + a.encode() + b'", "bids": ['),
        ("bad_json", b'{"event_type": "\xff\xfe"}'),
        ("bad_json", b"[" + b"{" * 2_000_000),  # 2 MB of garbage
        ("bad_json", "[1, 2"),
        ("bad_event", '[1, "two", null]'),
        ("bad_book", book(a, "lots", [])),
        ("bad_levels", book(a, [["0.5", "10"]], [])),
        ("bad_book", orjson.dumps({"event_type": "book", "asset_id": a, "market": market})),
        ("bad_price", book(a, [{"price": 0.5, "size": "10"}], [])),
        ("bad_price", book(a, [{"price": "1e308", "size": "10"}], [])),
        ("bad_price", book(a, [level, {"price": "NaN", "size": "10"}], [])),
        ("bad_price", book(a, [{"size": "10"}], [])),
        ("bad_size", book(a, [{"price": "0.5", "size": "-5"}], [])),
        ("bad_size", book(a, [{"price": "0.5", "size": "NaN"}], [])),
        ("bad_size", book(a, [{"price": "0.5", "size": "1e999"}], [])),
        ("bad_size", book(a, [{"price": "0.5"}], [])),
        # 2 MB of plausible levels with a poisoned one at the end: the whole book is refused.
        (
            "bad_size",
            b'{"event_type":"book","asset_id":"%s","bids":[%s{"price":"0.4","size":"-1"}],"asks":[]}'
            % (a.encode(), two_mb_levels),
        ),
        ("bad_price", change(price="-0.1")),
        ("bad_price", change(price="1e400")),
        ("bad_size", change(size="NaN")),
        ("bad_size", change(size="-3")),
        ("bad_size", change(size=None)),
        ("bad_side", change(side="UP")),
        ("bad_price_change", orjson.dumps({"event_type": "price_change", "price_changes": "x"})),
        ("bad_price_change", orjson.dumps({"event_type": "price_change", "price_changes": [{"x": 1}]})),
        ("bad_price_change", orjson.dumps({"event_type": "price_change", "market": market})),
        ("bad_price_change", orjson.dumps({"event_type": "price_change", "asset_id": a, "changes": 7})),
    ]
    expected: dict[str, int] = {}
    for reason, _ in bad:
        expected[reason] = expected.get(reason, 0) + 1
    expected["bad_event"] += 2  # '[1, "two", null]' is three bad events in one frame
    assert max(len(p) for _, p in bad) > 2_000_000
    seen: set[str] = set()
    for i, (_, payload) in enumerate(bad):
        sim.send_raw(payload, conn.id)
        move_truth(sim, a if i % 2 else b)  # good frames right after each bad one
        if i % 5 == 0:
            seen |= statuses(r, [a, b])
    # A frame mixing a good event (b's true book, after a change) with a bad one: the good part counts.
    top = sim.truth(b)
    sim.apply_silently([(b, "SELL", top.ask, str(Decimal(top.ask_size) + 5))])
    bids, asks = sim.book(b)
    good_b = {
        "event_type": "book",
        "asset_id": b,
        "market": market,
        "bids": [{"price": p, "size": s} for p, s in bids],
        "asks": [{"price": p, "size": s} for p, s in asks],
    }
    sim.send_raw(orjson.dumps([good_b, 42]), conn.id)
    expected["bad_event"] += 1
    wait_for(lambda: all_match(r, sim, [b]), 5, what="the good half of a mixed frame applied")
    sim.send_raw("INVALID OPERATION", conn.id)
    sim.send_raw(b"\x00\x01\x02 binary noise", conn.id)
    sim.send_raw(orjson.dumps({"event_type": "book_of_the_dead", "asset_id": a}), conn.id)
    move_truth(sim, a)
    wait_for(lambda: all_match(r, sim, [a, b]), 10, what="quotes equal truth after the bad frames")
    for reason, count in expected.items():
        wait_metric(proc, "pm_sidecar_parse_errors_total", count, reason=reason)
    got = {k[0][1]: v for k, v in scrape(proc).get("pm_sidecar_parse_errors_total", {}).items()}
    assert got == expected, f"parse errors by reason {got} != {expected}"
    wait_metric(proc, "pm_sidecar_control_frames_total", 1, text="INVALID OPERATION")
    wait_metric(proc, "pm_sidecar_control_frames_total", 1, text="other")
    wait_metric(proc, "pm_sidecar_unknown_events_total", 1)
    # A bad entry for a live token withdraws its quote (resyncing, reason bad_entry) until a book.
    assert seen <= {"live", "resyncing"}, f"bad frames disturbed the statuses: {seen}"
    assert metric(proc, "pm_sidecar_redrives_total", reason="bad_entry") >= 1
    assert statuses(r, [a, b]) == {"live"}
    assert sim.conn(conn.id).open, "the socket must not be dropped over bad frames"
    assert sim.handshakes == 1
    assert metric(proc, "pm_sidecar_reconnects_total") == 0
    assert proc.proc.poll() is None
    assert sim.violations == []
    assert proc.terminate() == 0


# ---- 3. Bad desired-set input -------------------------------------------------------------------


def test_huge_desired_set_is_capped_and_never_floods_the_exchange(
    redis_server: RedisServer, sim: Simulator, sidecar
) -> None:
    r = redis_server.client()
    cap = 300
    ids = [str(10**30 + i) for i in range(200_000)]
    invalid = [f"bogus-{i}" for i in range(300)] + ["", "  ", "0x12", "1" * 101, "12 34", "-7"]
    padded = [f"  {t}\n" for t in ids[:1000]]  # duplicates with whitespace
    pipe = r.pipeline(transaction=False)
    members = ids + invalid + padded
    for start in range(0, len(members), 10_000):
        pipe.sadd(P + "desired", *members[start : start + 10_000])
    pipe.execute()
    assert r.scard(P + "desired") == len(members)
    proc = sidecar(max_tokens=cap, desired_poll_s=1)
    subscribed = Sampler(lambda: sum(len(c.subscribed) for c in sim.connections() if c.open), 0.05)
    subscribed.start()
    try:
        wait_for(lambda: r.hget(P + "sidecar", "live") == str(cap), 40, interval=0.2, what=f"{cap} live")
        wait_for(lambda: metric(proc, "pm_sidecar_desired_over_cap") > 0, 5, what="over-cap gauge")
        subscribes = metric(proc, "pm_sidecar_subscribes_total")
        # A few more polls (1 s apart) of the same 200,000 ids: nothing may churn.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert proc.proc.poll() is None
            time.sleep(0.2)
    finally:
        samples = subscribed.stop()
    assert samples and max(v for _, v in samples) <= cap, "more than SIDECAR_MAX_TOKENS subscribed"
    assert metric(proc, "pm_sidecar_subscribes_total") == subscribes == cap
    assert metric(proc, "pm_sidecar_desired_over_cap") == len(ids) - cap
    assert metric(proc, "pm_sidecar_desired_tokens") == cap
    assert metric(proc, "pm_sidecar_desired_invalid_entries") == len(invalid)
    h = r.hgetall(P + "sidecar")
    assert h["capped_desired"] == str(len(ids) - cap)
    assert h["desired"] == str(cap) and h["invalid_desired"] == str(len(invalid))
    on_wire = [t for op in sent_ops(sim) for t in op["assets_ids"]]
    assert len(on_wire) == len(set(on_wire)) == cap, "each chosen token subscribed exactly once"
    assert set(on_wire) <= set(ids)
    assert all(len(op["assets_ids"]) <= 100 for op in sent_ops(sim))
    assert unsubscribed_ids(sim) == set(), "the same capped set on every poll: no churn"
    assert len([c for c in sim.connections() if c.open]) == 2
    log = proc.log()
    assert f"over SIDECAR_MAX_TOKENS={cap}" in log
    assert log.count(f"over SIDECAR_MAX_TOKENS={cap}") == 1, "logged once, not on every poll"
    assert sim.violations == []
    assert proc.terminate() == 0


def test_desired_key_of_the_wrong_type_keeps_the_last_good_set(
    redis_server: RedisServer, sim: Simulator, sidecar
) -> None:
    key = P + "desired"
    tokens, r, proc = start_live(redis_server, sim, sidecar, 2, desired_poll_s=0.1)

    def replace(build: Callable[[redis.client.Pipeline], Any]) -> None:
        pipe = r.pipeline(transaction=True)  # never an empty/missing key in between
        pipe.delete(key)
        build(pipe)
        pipe.execute()
        r.publish(P + "desired:changed", "1")

    def hold(seconds: float) -> set[str]:
        seen: set[str] = set()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert proc.proc.poll() is None, "the sidecar died"
            seen |= statuses(r, tokens)
            time.sleep(0.05)
        return seen

    r.set(key, "oops, a string")  # SET replaces a key of any type atomically
    wait_for(lambda: "is not a SET" in proc.log(), 5, what="wrong-type log line")
    assert hold(1.5) == {"live"}
    replace(lambda p: p.hset(key, mapping={"a": "1", "b": "2"}))
    assert hold(1.5) == {"live"}
    replace(lambda p: p.rpush(key, *tokens[:1]))
    assert hold(1.0) == {"live"}
    assert proc.log().count("is not a SET") == 1, "logged once, not on every poll"
    assert unsubscribed_ids(sim) == set()
    assert sim.handshakes == 1
    # A SET again, one token fewer: applied at once.
    replace(lambda p: p.sadd(key, *tokens[1:]))
    wait_for(lambda: quote(r, tokens[0]).get("status") == "unsubscribed", 5, what="removal applied")
    assert "is a SET again" in proc.log()
    assert statuses(r, tokens[1:]) == {"live"}
    assert unsubscribed_ids(sim) == {tokens[0]}
    assert sim.violations == []
    assert proc.terminate() == 0


# ---- 4. Exchange faults -------------------------------------------------------------------------


SPACING_SEEN = 0.15  # default SIDECAR_CONNECT_SPACING_S (0.25 s) less connect-latency jitter


def handshake_times(samples: list[tuple[float, int]]) -> list[float]:
    """Times at which the handshake counter went up, one entry per attempt."""
    out: list[float] = []
    prev = samples[0][1] if samples else 0
    for t, n in samples:
        out.extend([t] * (n - prev))
        prev = n
    return out


def max_in_window(times: list[float], window: float) -> int:
    best = 0
    for i, t in enumerate(times):
        best = max(best, sum(1 for u in times[i:] if u - t < window))
    return best


def test_handshake_429_storm_is_paced_and_recovers(
    redis_server: RedisServer, sim: Simulator, sidecar
) -> None:
    tokens = new_tokens(sim, 5)
    r = redis_server.client()
    r.sadd(P + "desired", *tokens)
    sim.reject_handshakes(429, 20)
    counter = Sampler(lambda: sim.handshakes, 0.005)
    counter.start()
    proc = sidecar(max_tokens_per_conn=2, backoff_min_s=0.2, backoff_max_s=1.0)
    try:
        # 20 refusals, each pausing all opens for at most backoff_max (1 s), then five sockets
        # 0.25 s apart and their snapshots: about 22 s at worst.
        wait_for(lambda: all_match(r, sim, tokens), 30, interval=0.1, what="all live after the 429 storm")
    finally:
        samples = counter.stop()
    attempts = handshake_times([(0.0, 0), *samples])
    assert len(attempts) == sim.handshakes == 25, "20 refused, then one per socket"
    # The engine opens at most one socket per 0.25 s; what the server sees also carries the jitter
    # of thread start-up and TCP connect on a busy machine, hence the slack.
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert min(gaps) >= SPACING_SEEN, f"handshakes closer than SIDECAR_CONNECT_SPACING_S: {sorted(gaps)[:5]}"
    assert max_in_window(attempts, 1.0) <= 5, "more than 5 handshakes in one second"
    # Throttling slows every socket down beyond the spacing: backoff, not a metronome.
    refused_span = attempts[19] - attempts[0]
    assert refused_span > 19 * 0.25 * 1.1, f"20 refusals within {refused_span:.2f}s"
    wait_metric(proc, "pm_sidecar_connect_failures_total", 20, reason="http_429")
    conns = [c for c in sim.connections() if c.open]
    assert len(conns) == 5 and all(len(c.subscribed) == 2 for c in conns)
    wait_for(lambda: r.hget(P + "sidecar", "connections_up") == "5", 5, what="5 sockets up")

    # Every socket dropped at once: the reconnects are paced too, never a storm.
    counter = Sampler(lambda: sim.handshakes, 0.005)
    counter.start()
    sim.drop()
    for t in tokens[::2]:
        move_truth(sim, t)
    try:
        # Each socket had data: first attempt within 0.4 s, five opens 0.25 s apart, snapshots.
        wait_for(lambda: all_match(r, sim, tokens), 6, interval=0.1, what="all live after dropping all")
    finally:
        samples = counter.stop()
    again = handshake_times(samples)
    assert len(again) == 5
    gaps = [b - a for a, b in itertools.pairwise(again)]
    assert min(gaps) >= SPACING_SEEN, f"reconnects closer than the connect spacing: {gaps}"
    assert max_in_window(again, 1.0) <= 5
    assert sim.violations == []
    assert proc.terminate() == 0


def test_closes_drops_and_5xx_handshakes_recover_without_touching_other_sockets(
    redis_server: RedisServer, sim: Simulator, sidecar, listener: QuoteListener
) -> None:
    tokens, r, proc = start_live(
        redis_server, sim, sidecar, 4, max_tokens_per_conn=4, backoff_min_s=0.2, backoff_max_s=1.0
    )
    first = sim.conn_for(tokens[0])
    other = sim.conn_for(tokens[4])
    assert first is not None and other is not None and first.id != other.id
    shard_a = sorted(first.subscribed)
    shard_b = sorted(other.subscribed)

    def fault(what: str, act: Callable[[int], None], name: str, **labels: str) -> None:
        conn = sim.conn_for(shard_a[0])
        assert conn is not None
        marks = {t: len(listener.for_token(t)) for t in shard_a}
        counted = metric(proc, name, **labels)
        act(conn.id)
        for t in shard_a:
            move_truth(sim, t)  # the truth moves while the socket is gone
        # A close or drop is seen at once: stale within a second, as in the core test.
        wait_for(
            lambda: all(stale_since(listener, t, marks[t]) for t in shard_a),
            1.0,
            interval=0.01,
            what=f"{what}: shard tokens published stale",
        )
        # Reconnect: full-jitter backoff from 0.2 s doubling to 1.0 s, at most three attempts
        # here (two refusals), then the snapshot: about 2.2 s at worst, plus slack.
        wait_for(lambda: all_match(r, sim, shard_a), 5, what=f"{what}: live and equal truth again")
        wait_metric(proc, name, counted + 1, **labels)
        new = sim.conn_for(shard_a[0])
        assert new is not None and new.id != conn.id

    def refuse(status: int, count: int) -> Callable[[int], None]:
        def act(cid: int) -> None:
            sim.reject_handshakes(status, count)
            sim.drop(cid)

        return act

    def close(code: int) -> Callable[[int], None]:
        return lambda cid: sim.close(cid, code, "simulated")

    fault("1008 close", close(1008), "pm_sidecar_reconnects_total", reason="close_1008")
    fault("1011 close", close(1011), "pm_sidecar_reconnects_total", reason="close_1011")
    fault("abrupt drop", sim.drop, "pm_sidecar_reconnects_total")
    fault("HTTP 503 x2", refuse(503, 2), "pm_sidecar_connect_failures_total", reason="http_503")
    fault("HTTP 500", refuse(500, 1), "pm_sidecar_connect_failures_total", reason="http_500")
    fault("HTTP 502", refuse(502, 1), "pm_sidecar_connect_failures_total", reason="http_502")
    assert metric(proc, "pm_sidecar_connect_failures_total", reason="http_503") == 2
    # The other socket never noticed any of it.
    assert sim.conn(other.id).open
    assert sim.conn_for(shard_b[0]).id == other.id
    assert all(not stale_since(listener, t, 0) for t in shard_b), "an unrelated shard went stale"
    assert all_match(r, sim, tokens)
    assert sim.violations == []
    assert proc.terminate() == 0


def test_half_open_invalid_operation_and_slow_frames(
    redis_server: RedisServer, sim: Simulator, sidecar, listener: QuoteListener
) -> None:
    tokens, r, proc = start_live(
        redis_server, sim, sidecar, 2, ping_interval_s=0.3, pong_timeout_s=1.5, silence_max_s=60
    )
    conn = sim.conn_for(tokens[0])
    assert conn is not None
    # Control texts are counted, nothing else happens.
    sim.send_raw("INVALID OPERATION", conn.id)
    sim.send_raw("NO NEW ASSETS", conn.id)
    move_truth(sim, tokens[0])
    wait_for(lambda: all_match(r, sim, tokens), 5, what="applied after INVALID OPERATION")
    wait_metric(proc, "pm_sidecar_control_frames_total", 1, text="INVALID OPERATION")
    wait_metric(proc, "pm_sidecar_control_frames_total", 1, text="NO NEW ASSETS")
    assert sim.conn(conn.id).open and sim.handshakes == 1
    assert not any(stale_since(listener, t, 0) for t in tokens)

    # Slow frames (100 ms each): late but alive, never reconnected.
    sim.slow(conn.id, 0.1)
    sim.start_activity(2, tokens)
    pings = sim.conn(conn.id).pings
    wait_for(lambda: sim.conn(conn.id).pings >= pings + 10, 10, what="3 s of PINGs on the slow socket")
    sim.stop_activity()
    wait_for(lambda: all_match(r, sim, tokens), 3, what="slow frames converge to truth")
    assert sim.handshakes == 1 and metric(proc, "pm_sidecar_reconnects_total") == 0
    sim.slow(conn.id, 0)

    # Half-open: no FIN, no data, no PONG; found by the missing PONGs.
    marks = {t: len(listener.for_token(t)) for t in tokens}
    sim.half_open(conn.id)
    lost = time.monotonic()
    wait_for(lambda: all(stale_since(listener, t, marks[t]) for t in tokens), 5, what="stale")
    assert time.monotonic() - lost < 1.5 + 1.0
    for t in tokens:
        move_truth(sim, t)
    # First reconnect attempt within 2 x SIDECAR_BACKOFF_MIN_S (1 s), then the snapshot.
    wait_for(lambda: all_match(r, sim, tokens), 5, what="live again on a new socket")
    wait_metric(proc, "pm_sidecar_reconnects_total", 1, reason="pong_timeout")
    assert sim.handshakes == 2
    assert sim.violations == []
    assert proc.terminate() == 0


# ---- 5. Process lifecycle -----------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_marks_quotes_stale_and_removes_alive_key(
    redis_server: RedisServer, sim: Simulator, sidecar, sig: signal.Signals
) -> None:
    tokens, r, proc = start_live(redis_server, sim, sidecar, 1)
    assert r.exists(P + "sidecar:alive")
    started = time.monotonic()
    code = proc.terminate(sig, timeout=5)
    elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 2.0, f"stopped in {elapsed:.2f}s"
    assert all(quote(r, t)["status"] == "stale" for t in tokens)
    assert all(quote(r, t)["reason"] == "sidecar_stopped" for t in tokens)
    assert not r.exists(P + "sidecar:alive")
    assert "Traceback" not in proc.log() and "KeyboardInterrupt" not in proc.log()


class NotifySocket:
    """A fake systemd: an AF_UNIX datagram socket collecting sd_notify messages with their time."""

    def __init__(self, directory: Path) -> None:
        path = directory / "notify.sock"
        if len(str(path)) > 100:  # sun_path limit
            path = Path(tempfile.mkdtemp(prefix="pmsd-")) / "n.sock"
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            for line in data.decode(errors="replace").splitlines():
                self.messages.append((now, line))

    def times(self, message: str) -> list[float]:
        return [t for t, m in list(self.messages) if m == message]

    def starting(self, prefix: str) -> list[str]:
        return [m for _, m in list(self.messages) if m.startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        self.path.unlink(missing_ok=True)


@pytest.fixture
def notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    sock = NotifySocket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock.path))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    yield sock
    sock.close()


def test_systemd_ready_only_once_redis_is_up_then_watchdog_status_and_stopping(
    redis_server: RedisServer, sim: Simulator, sidecar, notify: NotifySocket
) -> None:
    tokens = new_tokens(sim, 1)
    redis_server.stop()
    proc = sidecar()
    assert proc.env["NOTIFY_SOCKET"] == str(notify.path)
    wait_for(lambda: len(notify.starting("STATUS=")) >= 3, 10, what="STATUS lines while Redis is down")
    wait_for(lambda: len(notify.times("WATCHDOG=1")) >= 2, 5, what="watchdog fed while Redis is down")
    assert notify.times("READY=1") == [], "READY=1 before Redis was reachable"
    assert any("redis=DOWN" in s for s in notify.starting("STATUS=")), notify.starting("STATUS=")
    redis_server.start()
    redis_up = time.monotonic()
    r = redis_server.client()
    r.sadd(P + "desired", *tokens)
    ready = wait_for(lambda: notify.times("READY=1"), 15, what="READY=1 after Redis appears")
    assert ready[0] >= redis_up
    wait_for(lambda: all_match(r, sim, tokens), 10, what="live")
    wait_for(
        lambda: any("live=2" in s and "redis=up" in s for s in notify.starting("STATUS=")),
        5,
        what="a STATUS line with the live count",
    )
    beats = len(notify.times("WATCHDOG=1"))
    wait_for(lambda: len(notify.times("WATCHDOG=1")) >= beats + 3, 5, what="periodic WATCHDOG=1")
    code = proc.terminate(signal.SIGTERM, timeout=5)
    assert code == 0
    wait_for(lambda: notify.times("STOPPING=1"), 2, what="STOPPING=1 on SIGTERM")
    assert len(notify.times("READY=1")) == 1
    assert notify.times("STOPPING=1")[0] >= max(notify.times("READY=1"))


def test_systemd_watchdog_is_fed_at_half_the_watchdog_period(
    redis_server: RedisServer, sim: Simulator, sidecar, notify: NotifySocket
) -> None:
    tokens = new_tokens(sim, 1)
    r = redis_server.client()
    r.sadd(P + "desired", *tokens)
    proc = sidecar()
    wait_for(lambda: notify.times("READY=1"), 10, what="READY=1")
    wait_for(lambda: len(notify.times("WATCHDOG=1")) >= 6, 10, what="6 watchdog pings")
    beats = notify.times("WATCHDOG=1")
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    # systemd: send WATCHDOG=1 at about half of WATCHDOG_USEC; a gap >= the period is a kill.
    assert max(gaps) <= 0.75, f"watchdog gaps up to {max(gaps):.3f}s with WATCHDOG_USEC=1s: {gaps}"
    assert proc.terminate() == 0


# ---- 6. Truth under a fault schedule -----------------------------------------------------------


def test_no_quote_is_live_and_wrong_for_more_than_a_second_under_faults(
    redis_server: RedisServer, sim: Simulator, sidecar
) -> None:
    # The default silence_min_s (0.5 s) is what bounds a zombie: once its socket is suspect, busy
    # tokens go stale at once, whatever the probe timeout (kept short here only for test speed).
    tokens, r, proc = start_live(
        redis_server,
        sim,
        sidecar,
        10,
        timeout=15,
        max_tokens_per_conn=10,
        silence_max_s=5,
        probe_timeout_s=1.5,
        ping_interval_s=0.5,
        pong_timeout_s=2,
        backoff_min_s=0.2,
        backoff_max_s=1.0,
    )
    sim.start_activity(150, tokens)
    watch = TruthWatch(redis_server, sim, tokens)
    watch.start()
    started = time.monotonic()

    def at(offset: float) -> None:
        while time.monotonic() - started < offset:
            assert proc.proc.poll() is None, "the sidecar died"
            time.sleep(0.05)

    def conn_of(token: str) -> int:
        conn = sim.conn_for(token)
        assert conn is not None
        return conn.id

    def garbage(conn_id: int | None = None) -> None:
        bad_book = {"event_type": "book", "asset_id": tokens[0], "bids": 7}
        entry = {"asset_id": tokens[1], "price": "NaN", "size": "1", "side": "BUY"}
        bad_change = {"event_type": "price_change", "price_changes": [entry]}
        for payload in (
            "{oops",
            "[1,2,3]",
            orjson.dumps(bad_book),
            orjson.dumps(bad_change),
            "INVALID OPERATION",
        ):
            sim.send_raw(payload, conn_id)

    try:
        at(2)
        sim.drop(conn_of(tokens[0]))
        at(5)
        garbage()
        at(7)
        zombie = conn_of(tokens[-1])
        sim.zombie(zombie)
        at(11)
        redis_server.stop()
        redis_server.start()
        at(12)
        r = redis_server.client()
        r.sadd(P + "desired", *tokens)  # the scheduler rewrites its set
        at(15)
        garbage(conn_of(tokens[0]))
        sim.drop(conn_of(tokens[-1]))
        at(18)
        zombie2 = conn_of(tokens[0])
        sim.zombie(zombie2)
        at(22)
        sim.drop()
        at(25)
        garbage()
        at(30)
    finally:
        watch.stop()
        sim.stop_activity()
    # The last zombie (t=18 s) is replaced within SILENCE_MAX_S + PROBE_TIMEOUT_S; the last fault
    # is at t=25 s: everything has converged by the time the schedule ends, give or take.
    wait_for(lambda: all_match(r, sim, tokens), 5, what="converged after the schedule")
    worst = max(watch.longest.values(), default=0.0)
    print(
        f"samples={watch.samples} unreadable={watch.unreadable} not_live={watch.not_live} "
        f"wrong={watch.wrong} longest_live_wrong={worst:.2f}s"
    )
    assert watch.samples >= 200, "the watcher barely sampled"
    # Redis is down only across one stop/start: at most a second or so of 100 ms samples.
    assert watch.unreadable <= 15, f"{watch.unreadable} samples could not read Redis"
    assert watch.not_live > 0, "the faults never showed as non-live quotes: did they happen?"
    assert not sim.conn(zombie).open and not sim.conn(zombie2).open, "zombies replaced and closed"
    wait_metric(proc, "pm_sidecar_reconnects_total", 2, reason="silence")
    assert watch.violations == [], "\n".join(watch.violations[:20])
    assert watch.partial == [], "\n".join(watch.partial[:20])
    assert sim.violations == []
    assert proc.terminate() == 0
