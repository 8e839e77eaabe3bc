"""sidecar.shell.desired on its own, against fakeredis: what it posts, when, and how it rides out a
wrong-typed key, Redis errors and a Redis that comes back empty."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator

import fakeredis
import pytest
import redis

from devkit.wait import wait_for
from sidecar.shell import desired
from sidecar.shell.desired import DesiredReader
from sidecar.shell.inbox import DesiredChanged, InboxMessage

P = "pm:"


class Posted:
    def __init__(self) -> None:
        self.q: queue.SimpleQueue[InboxMessage] = queue.SimpleQueue()

    def post(self, event: InboxMessage) -> None:
        self.q.put(event)

    def get(self, timeout: float = 5.0) -> frozenset[bytes]:
        event = self.q.get(timeout=timeout)
        assert isinstance(event, DesiredChanged), event
        return event.members

    def nothing_for(self, seconds: float) -> bool:
        try:
            event = self.q.get(timeout=seconds)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected post {event!r}")


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def start(server: fakeredis.FakeServer) -> Iterator[Callable[..., tuple[DesiredReader, Posted]]]:
    readers: list[DesiredReader] = []

    def make(
        poll_s: float = 0.05, factory: Callable[[], redis.Redis] | None = None
    ) -> tuple[DesiredReader, Posted]:
        posted = Posted()
        reader = DesiredReader(
            factory or (lambda: fakeredis.FakeRedis(server=server)), P, poll_s, posted.post
        )
        reader.start()
        readers.append(reader)
        return reader, posted

    yield make
    for reader in readers:
        reader.stop()


def test_posts_the_set_at_start_then_only_changes(server: fakeredis.FakeServer, start) -> None:
    r = fakeredis.FakeRedis(server=server)
    r.sadd(P + "desired", "1", "2")
    _, posted = start()
    assert posted.get() == {b"1", b"2"}
    assert posted.nothing_for(0.3)  # six polls of the same set: no post
    r.sadd(P + "desired", "3")
    assert posted.get() == {b"1", b"2", b"3"}
    r.srem(P + "desired", "1", "2", "3")  # a set emptied by the scheduler (no reconnect): applied
    assert posted.get() == frozenset()


def test_a_nudge_reads_at_once_not_at_the_next_poll(server: fakeredis.FakeServer, start) -> None:
    r = fakeredis.FakeRedis(server=server)
    r.sadd(P + "desired", "1")
    _, posted = start(poll_s=30.0)
    assert posted.get() == {b"1"}
    r.sadd(P + "desired", "2")
    t0 = time.monotonic()
    r.publish(P + "desired:changed", "1")
    assert posted.get(timeout=2.0) == {b"1", b"2"}
    assert time.monotonic() - t0 < 1.0


def test_a_wrong_typed_key_keeps_the_last_set_and_logs_once(
    server: fakeredis.FakeServer, start, caplog: pytest.LogCaptureFixture
) -> None:
    r = fakeredis.FakeRedis(server=server)
    r.sadd(P + "desired", "1")
    reader, posted = start()
    assert posted.get() == {b"1"}
    r.delete(P + "desired")
    r.set(P + "desired", "oops")
    wait_for(lambda: reader.wrong_type, 5, what="the wrong type noticed")
    assert posted.nothing_for(0.3)
    assert caplog.text.count("is not a SET") == 1
    r.delete(P + "desired")
    r.sadd(P + "desired", "2")
    assert posted.get() == {b"2"}
    assert reader.wrong_type is False


class Flaky:
    """A client factory that fails the first `fail` connections, then hands out real clients."""

    def __init__(self, server: fakeredis.FakeServer, fail: int) -> None:
        self.server = server
        self.fail = fail
        self.calls = 0

    def __call__(self) -> redis.Redis:
        self.calls += 1
        if self.calls <= self.fail:
            raise redis.ConnectionError("connection refused (test)")
        return fakeredis.FakeRedis(server=self.server)


def test_redis_errors_are_counted_and_retried_with_backoff(server: fakeredis.FakeServer, start) -> None:
    r = fakeredis.FakeRedis(server=server)
    r.sadd(P + "desired", "1")
    flaky = Flaky(server, fail=4)
    reader, posted = start(factory=flaky)
    t0 = time.monotonic()
    assert posted.get() == {b"1"}
    # Backoff 0.1, 0.2, 0.4, 0.8 s before the fifth attempt: about 1.5 s, never a busy loop.
    assert time.monotonic() - t0 >= 1.4
    assert reader.errors == 4
    assert flaky.calls == 5


def test_a_set_that_vanished_with_a_redis_restart_is_held(start, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a reconnect an empty set means "Redis restarted empty", not "the scheduler wants
    nothing": the last set is kept until the scheduler rewrites it (or the grace ends)."""
    monkeypatch.setattr(desired, "RESTART_GRACE_S", 1.0)
    current = {"server": fakeredis.FakeServer()}
    fakeredis.FakeRedis(server=current["server"]).sadd(P + "desired", "1", "2")
    reader, posted = start(factory=lambda: fakeredis.FakeRedis(server=current["server"]))
    assert posted.get() == {b"1", b"2"}
    current["server"].connected = False  # Redis goes away ...
    wait_for(lambda: reader.errors >= 1, 5, what="a Redis error")
    current["server"] = fakeredis.FakeServer()  # ... and comes back empty
    t_back = time.monotonic()
    assert posted.nothing_for(0.5)
    assert reader.holding is True
    # Grace over: the empty set is now the scheduler's word.
    assert posted.get(timeout=3.0) == frozenset()
    assert time.monotonic() - t_back >= 0.5
    assert reader.holding is False


def test_the_scheduler_rewriting_the_set_ends_the_hold(start) -> None:
    current = {"server": fakeredis.FakeServer()}
    fakeredis.FakeRedis(server=current["server"]).sadd(P + "desired", "1", "2")
    reader, posted = start(factory=lambda: fakeredis.FakeRedis(server=current["server"]))
    assert posted.get() == {b"1", b"2"}
    current["server"].connected = False
    wait_for(lambda: reader.errors >= 1, 5, what="a Redis error")
    current["server"] = fakeredis.FakeServer()
    wait_for(lambda: reader.holding, 5, what="the last set held")
    fakeredis.FakeRedis(server=current["server"]).sadd(P + "desired", "1", "3")
    assert posted.get() == {b"1", b"3"}
    assert reader.holding is False


def test_an_unexpected_error_is_survived_like_a_redis_error(server: fakeredis.FakeServer, start) -> None:
    """Anything else going wrong (a bad TLS file, a library bug) must not kill the reader thread
    for good: the sidecar would never see a desired-set change again."""
    fakeredis.FakeRedis(server=server).sadd(P + "desired", "1")
    calls = [0]

    def factory() -> redis.Redis:
        calls[0] += 1
        if calls[0] == 1:
            raise ValueError("unexpected (test)")
        return fakeredis.FakeRedis(server=server)

    reader, posted = start(factory=factory)
    assert posted.get() == {b"1"}
    assert reader.errors == 1


def test_a_non_positive_poll_interval_is_refused() -> None:
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="poll interval"):
            DesiredReader(lambda: fakeredis.FakeRedis(), P, bad, lambda e: None)
