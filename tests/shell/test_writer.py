"""sidecar.shell.writer, the shell around the coalescing rules: its thread against fakeredis.

The harness hands the writer clients on a switchable fake server, so a test can fail one
transaction, run code in the middle of one, take Redis away, or swap the server underneath an
open client the way redis-py's silent reconnect does after a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import orjson
import pytest
import redis

from devkit.wait import wait_for
from sidecar.core.actions import QuoteWrite
from sidecar.shell.writer import QuoteWriter

P = "pm:"
A = "1111"
B = "2222"
KEY_A = P + "quote:" + A
ALIVE = P + "sidecar:alive"


class Pipe:
    """A fakeredis pipeline that records what is queued and runs the harness hooks."""

    def __init__(self, harness: Harness, pipe: Any) -> None:
        self._h = harness
        self._pipe = pipe
        self.hsets: dict[str, dict[str, str]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def hset(self, key: str, mapping: dict[str, str]) -> Any:
        queued = self._pipe.hset(key, mapping=mapping)
        self.hsets[key] = dict(mapping)
        hook, self._h.on_hset = self._h.on_hset, None
        if hook is not None:
            hook()
        return queued

    def publish(self, channel: str, message: bytes) -> Any:
        self._h.published.append((channel, orjson.loads(message), self.hsets.get(channel)))
        return self._pipe.publish(channel, message)

    def execute(self, **kwargs: Any) -> Any:
        hook, self._h.before_execute = self._h.before_execute, None
        if hook is not None:
            hook()
        return self._pipe.execute(**kwargs)


class Client:
    """What the writer's factory returns: every command goes to the harness's current server."""

    def __init__(self, harness: Harness) -> None:
        self._h = harness

    def _real(self) -> fakeredis.FakeRedis:
        return fakeredis.FakeRedis(server=self._h.server)

    def ping(self) -> bool:
        return bool(self._real().ping())

    def pipeline(self, transaction: bool = True) -> Pipe:
        return Pipe(self._h, self._real().pipeline(transaction=transaction))

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)


class Harness:
    def __init__(self) -> None:
        self.server = fakeredis.FakeServer()
        self.on_hset: Callable[[], None] | None = None
        self.before_execute: Callable[[], None] | None = None
        self.published: list[tuple[str, dict[str, str], dict[str, str] | None]] = []

    def factory(self, **_: Any) -> Client:
        return Client(self)

    def r(self) -> fakeredis.FakeRedis:
        return fakeredis.FakeRedis(server=self.server, decode_responses=True)


@pytest.fixture
def h() -> Harness:
    return Harness()


@pytest.fixture
def make_writer(h: Harness) -> Iterator[Callable[..., QuoteWriter]]:
    writers: list[QuoteWriter] = []

    def make(alive_ttl_s: float = 5) -> QuoteWriter:
        w = QuoteWriter(h.factory, P, alive_ttl_s, 0)  # type: ignore[arg-type]
        writers.append(w)
        w.start()
        return w

    yield make
    for w in writers:
        w.stop(0.3)


def state(seq: int, status: str = "live", updated_at: int = 1000, bid: str = "0.40") -> dict[str, str]:
    return {
        "bid": bid,
        "ask": "0.60",
        "bid_size": "10",
        "ask_size": "12",
        "ts": "900",
        "updated_at": str(updated_at),
        "seq": str(seq),
        "epoch": "e1",
        "status": status,
        "source": "book",
        "reason": "" if status == "live" else "connection_eof",
    }


def full(token: str, fields: dict[str, str], **kw: Any) -> QuoteWrite:
    return QuoteWrite(token, dict(fields), True, **kw)


def refresh(token: str, updated_at: int) -> QuoteWrite:
    return QuoteWrite(token, {"updated_at": str(updated_at)}, False)


def summary() -> dict[str, str]:
    return {"epoch": "e1", "live": "1", "heartbeat_at": str(int(time.time() * 1000))}


def hash_is(h: Harness, key: str, want: dict[str, str]) -> Callable[[], bool]:
    return lambda: h.r().hgetall(key) == want


def fail_once(h: Harness, during: Callable[[], None] | None = None) -> None:
    """The next transaction fails (connection lost), after running ``during``."""

    def boom() -> None:
        if during is not None:
            during()
        raise redis.ConnectionError("connection lost (test)")

    h.before_execute = boom


# ---- item 1: never a partial or older state -----------------------------------------------------


def test_after_a_restart_a_refresh_only_token_gets_its_full_state_back(h: Harness, make_writer) -> None:
    w = make_writer()
    w.submit([full(A, state(1))])
    w.submit_summary(summary())
    wait_for(hash_is(h, KEY_A, state(1)), 3, what="first write")
    old = h.server
    h.server = fakeredis.FakeServer()  # Redis restarts empty...
    old.connected = False  # ...and the old connection is dead
    w.submit([refresh(A, 2000)])  # the token's only pending entry is a refresh
    want = state(1, updated_at=2000)
    try:
        wait_for(hash_is(h, KEY_A, want), 3, what="the full state rewritten")
    except AssertionError:
        raise AssertionError(f"Redis holds {h.r().hgetall(KEY_A)}, the engine {want}") from None


def test_a_failed_change_survives_a_refresh_that_arrives_during_the_failed_flush(
    h: Harness, make_writer
) -> None:
    w = make_writer()
    w.submit([full(A, state(1))])
    wait_for(hash_is(h, KEY_A, state(1)), 3, what="first write")
    fail_once(h, during=lambda: w.submit([refresh(A, 3000)]))
    w.submit([full(A, state(2, status="stale"))])
    want = state(2, status="stale", updated_at=3000)
    try:
        wait_for(hash_is(h, KEY_A, want), 3, what="the stale change and the refresh in Redis")
    except AssertionError:
        raise AssertionError(f"Redis holds {h.r().hgetall(KEY_A)}, the engine {want}") from None
    assert [m["status"] for ch, m, _ in h.published if ch == KEY_A][-1] == "stale"


def test_message_and_hash_of_one_write_come_from_one_snapshot(h: Harness, make_writer) -> None:
    w = make_writer()
    w.submit([full(A, state(1))])
    wait_for(lambda: h.published, 3, what="first publish")
    h.on_hset = lambda: w.submit([refresh(A, 5000)])  # arrives while the transaction is built
    w.submit([full(A, state(2, bid="0.41"))])
    wait_for(lambda: len(h.published) >= 2, 3, what="second publish")
    _, message, hashed = h.published[1]
    assert hashed is not None
    assert message == {**hashed, "token": A}, "pub/sub message differs from the hash it was sent with"
    wait_for(hash_is(h, KEY_A, state(2, bid="0.41", updated_at=5000)), 3, what="the refresh written later")


def test_a_silently_swapped_older_redis_is_noticed_and_rewritten(h: Harness, make_writer) -> None:
    """redis-py reconnects without telling anyone; Redis came back from an older snapshot that
    holds our own older keys (summary hash included): only the stamp can tell."""
    w = make_writer()
    w.submit([full(A, state(1)), full(B, state(1))])
    w.submit_summary(summary())
    wait_for(hash_is(h, KEY_A, state(1)), 3, what="first write")
    wait_for(lambda: h.r().exists(ALIVE), 3, what="summary written")
    older = fakeredis.FakeServer()
    old_r = fakeredis.FakeRedis(server=older)
    for key in h.r().keys("*"):
        old_r.restore(key, 0, h.r().dump(key))  # the snapshot, taken now
    w.submit([full(A, state(2, status="stale")), full(B, state(2, status="stale"))])
    w.submit_summary(summary())
    wait_for(hash_is(h, KEY_A, state(2, status="stale")), 3, what="second write")
    wait_for(lambda: w.backlog == 0, 3, what="writer idle")
    h.server = older  # the same open client now talks to the restarted, older Redis
    w.submit_summary(summary())  # the loop's next heartbeat
    try:
        wait_for(hash_is(h, KEY_A, state(2, status="stale")), 3, what="A rewritten")
        wait_for(hash_is(h, P + "quote:" + B, state(2, status="stale")), 3, what="B rewritten")
    except AssertionError:
        raise AssertionError(f"older Redis still holds {h.r().hgetall(KEY_A)}") from None
    assert w.server_changes == 1


# ---- item 13: PERSIST --------------------------------------------------------------------------


def test_a_readded_token_loses_the_expiry_of_its_removal_when_a_newer_write_coalesces(
    h: Harness, make_writer
) -> None:
    w = make_writer()
    w.submit([full(A, state(1))])
    w.submit([full(A, state(2, status="unsubscribed"), expire_s=300)])
    wait_for(lambda: h.r().ttl(KEY_A) > 0, 3, what="removal written with its TTL")
    # Re-added (persist) and changed again before the writer ran: one coalesced write.
    w.submit([full(A, state(3, status="pending"), persist=True), full(A, state(4))])
    wait_for(hash_is(h, KEY_A, state(4)), 3, what="re-added token written")
    assert h.r().ttl(KEY_A) == -1, "the live quote would vanish when the removal's TTL ran out"


# ---- item 12: the alive key and the stop ------------------------------------------------------


def test_a_replayed_summary_never_extends_the_alive_key(h: Harness, make_writer) -> None:
    """The loop is wedged (no heartbeat after t0) while Redis is away and comes back: the writer
    rewrites everything, but the alive key must still be gone by t0 + TTL."""
    ttl = 2
    w = make_writer(alive_ttl_s=ttl)
    w.submit([full(A, state(1))])
    t0 = time.monotonic()
    w.submit_summary(summary())  # the last heartbeat
    wait_for(lambda: h.r().exists(ALIVE), 1, what="alive key")
    h.server.connected = False
    w.submit([full(A, state(2))])  # something to write: the writer sees Redis gone
    wait_for(lambda: w.errors >= 1, 1, what="a failed write")
    while time.monotonic() < t0 + 1.2:  # the outage lasts 1.2 s of the 2 s TTL
        time.sleep(0.02)
    h.server.connected = True
    wait_for(hash_is(h, KEY_A, state(2)), 2, what="rewrite after the outage")
    assert h.r().hget(P + "sidecar", "epoch") == "e1", "the summary hash is rewritten"
    left = h.r().pttl(ALIVE)
    assert left <= (ttl - (time.monotonic() - t0)) * 1000 + 50, f"alive TTL restarted: {left} ms left"
    wait_for(lambda: not h.r().exists(ALIVE), max(0.05, t0 + ttl + 0.2 - time.monotonic()), what="expiry")


def test_stop_writes_the_final_state_deletes_alive_and_nothing_lands_after(h: Harness, make_writer) -> None:
    w = make_writer()
    w.submit([full(A, state(1))])
    w.submit_summary(summary())
    wait_for(lambda: h.r().exists(ALIVE), 3, what="alive key")
    w.submit([full(A, state(2, status="stale"))])
    w.submit_summary({**summary(), "live": "0"})
    assert w.stop(1.0) is True
    assert h.r().hgetall(KEY_A) == state(2, status="stale")
    assert not h.r().exists(ALIVE)
    assert h.r().hget(P + "sidecar", "live") == "0"
    w.submit([full(A, state(3))])
    w.submit_summary(summary())
    w._thread.join(1.0)
    assert not w._thread.is_alive()
    assert h.r().hgetall(KEY_A) == state(2, status="stale")
    assert not h.r().exists(ALIVE)


def test_stop_with_redis_down_gives_up_within_its_deadline(h: Harness, make_writer) -> None:
    w = make_writer()
    w.submit([full(A, state(1))])
    wait_for(hash_is(h, KEY_A, state(1)), 3, what="first write")
    h.server.connected = False
    started = time.monotonic()
    assert w.stop(0.5) is False
    took = time.monotonic() - started
    assert took < 0.6, f"stop took {took:.2f}s"


def test_hashes_of_long_removed_tokens_an_older_snapshot_brings_back_are_deleted(h: Harness) -> None:
    """A was removed longer ago than its TTL (the writer forgot it); Redis comes back from a
    snapshot in which A was still `live` under this run's epoch: workers would trust it."""
    clock = [100.0]
    w = QuoteWriter(h.factory, P, 5, 0, clock=lambda: clock[0])  # type: ignore[arg-type]
    w.start()
    try:
        w.submit([full(A, state(1)), full(B, state(1))])
        w.submit_summary(summary())
        wait_for(hash_is(h, KEY_A, state(1)), 3, what="first write")
        older = fakeredis.FakeServer()
        old_r = fakeredis.FakeRedis(server=older)
        for key in h.r().keys("*"):
            old_r.restore(key, 0, h.r().dump(key))
        other_run = P + "quote:3333"
        old_r.hset(other_run, mapping={**state(1), "epoch": "e0"})  # an earlier run's: not ours
        w.submit([full(A, state(2, status="unsubscribed"), expire_s=300)])
        wait_for(lambda: h.r().ttl(KEY_A) > 0, 3, what="removal written")
        clock[0] += 301  # A's key has expired by now; the writer forgets it
        w.submit_summary(summary())
        wait_for(lambda: w.backlog == 0 and w.flushes >= 3, 3, what="writer idle")
        h.server = older  # silently, as redis-py reconnects
        w.submit_summary(summary())
        wait_for(lambda: not h.r().exists(KEY_A), 3, what="the resurrected hash of A deleted")
        assert h.r().hgetall(P + "quote:" + B) == state(1)
        assert h.r().hget(other_run, "epoch") == "e0", "another run's hash is not ours to delete"
    finally:
        w.stop(0.3)
