"""The client library against the real sidecar, a real redis-server and the exchange simulator."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from pmsim import Simulator
from redis.backoff import NoBackoff
from redis.retry import Retry

from devkit.procs import SidecarProcess
from devkit.redis_server import RedisServer
from devkit.wait import wait_for
from sidecar.client import Quote, QuoteClient
from tests.integration.common import new_tokens

pytestmark = pytest.mark.integration

P = "pm:"


class Collector:
    """Iterates a follower on a thread and keeps everything it yields."""

    def __init__(self, client: QuoteClient, tokens: list[str], reconcile_s: float = 1.0) -> None:
        self.follower = client.follow(tokens, reconcile_s=reconcile_s)
        self.quotes: list[Quote] = []
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for q in self.follower:
                self.quotes.append(q)
        except BaseException as exc:  # the test asserts there were none
            self.errors.append(exc)

    def last(self, token: str) -> Quote | None:
        for q in reversed(list(self.quotes)):
            if q.token == token:
                return q
        return None

    def close(self) -> None:
        self.follower.close()
        self._thread.join(3)
        assert not self._thread.is_alive(), "follower did not end on close()"

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def all_alive(self, tokens: list[str], alive: bool) -> bool:
        """Every token's last yield exists and says the sidecar is (or is not) alive."""
        return all((q := self.last(t)) is not None and q.alive is alive for t in tokens)

    def ends_on_the_hashes(self, r: redis.Redis, tokens: list[str], timeout: float, what: str) -> None:
        """The last yield per token equals its hash, nothing failed and no seq went back."""

        def same() -> bool:
            return all(same_as_hash(self.last(t), hash_state(r, t)) for t in tokens)

        wait_for(same, timeout, what=what)
        assert self.errors == []
        assert seqs_never_decrease(self.quotes) == []


def live_through_client(
    sim: Simulator, sidecar: Callable[..., SidecarProcess], client: QuoteClient, markets: int, **settings: Any
) -> tuple[list[str], SidecarProcess]:
    """New markets' tokens wanted through the client, a sidecar started, every quote live at the
    truth as the client reads it (common.start_live does the same with plain Redis calls)."""
    tokens = new_tokens(sim, markets)
    client.set_wanted(tokens)
    proc = sidecar(**settings)
    wait_for(lambda: all(matches(q, sim) for q in client.get_many(tokens).values()), 15, what="live")
    return tokens, proc


def matches(q: Quote | None, sim: Simulator) -> bool:
    if q is None or q.status != "live" or not q.alive:
        return False
    t = sim.truth(q.token)
    return (q.bid_str, q.ask_str) == (t.bid, t.ask)


def hash_state(r: redis.Redis, token: str) -> dict[str, str]:
    return r.hgetall(P + "quote:" + token)


def same_as_hash(q: Quote | None, fields: dict[str, str]) -> bool:
    return (
        q is not None
        and str(q.seq) == fields.get("seq")
        and q.bid_str == fields.get("bid")
        and q.ask_str == fields.get("ask")
        and str(q.updated_at_ms) == fields.get("updated_at")
        and q.status == fields.get("status")
    )


def seqs_never_decrease(quotes: list[Quote]) -> list[str]:
    last: dict[str, int] = {}
    bad = []
    for q in quotes:
        if q.seq < last.get(q.token, -1):
            bad.append(f"{q.token[:8]}: {last[q.token]} -> {q.seq}")
        last[q.token] = q.seq
    return bad


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[QuoteClient]:
    c = QuoteClient(redis_server.url)
    yield c
    c.close()


def test_scheduler_and_worker_round_trip(
    redis_server: RedisServer, sim: Simulator, sidecar: Callable[..., SidecarProcess], client: QuoteClient
) -> None:
    tokens = new_tokens(sim, 3)
    proc = sidecar()
    client.set_wanted(tokens[:4])
    started = time.monotonic()
    first = client.wait_live(tokens[0], 15)
    assert first is not None and first.alive and first.status == "live"
    assert time.monotonic() - started < 15
    truth = sim.truth(tokens[0])
    assert (first.bid_str, first.ask_str) == (truth.bid, truth.ask)
    assert first.bid == float(truth.bid) and first.ask == float(truth.ask)
    assert first.bid_size == float(truth.bid_size) and first.ask_size == float(truth.ask_size)
    wait_for(lambda: all(matches(q, sim) for q in client.get_many(tokens[:4]).values()), 10, what="live")
    assert all(client.is_fresh(t, 10) for t in tokens[:4])
    assert client.get_many(tokens[4:]) == {tokens[4]: None, tokens[5]: None}

    # The scheduler replaces its set; the sidecar follows at once (nudge, not the poll).
    client.set_wanted(tokens[2:])
    assert client.wanted() == set(tokens[2:])
    wait_for(lambda: matches(client.get(tokens[5]), sim), 5, what="newly wanted token live")
    wait_for(
        lambda: client.get(tokens[0]).status == "unsubscribed",  # type: ignore[union-attr]
        5,
        what="unwanted token unsubscribed",
    )
    assert not client.is_fresh(tokens[0], 60)
    client.unwant([tokens[5]])
    wait_for(lambda: client.get(tokens[5]).status == "unsubscribed", 5, what="unwant")  # type: ignore[union-attr]
    assert client.wanted() == set(tokens[2:5])
    assert proc.terminate() == 0
    # Clean stop: alive key gone, nothing usable.
    assert all(q is not None and not q.alive for q in client.get_many(tokens[2:5]).values())


def test_follower_killed_connection_ends_with_the_hash_state(
    redis_server: RedisServer, sim: Simulator, sidecar: Callable[..., SidecarProcess], client: QuoteClient
) -> None:
    tokens, _ = live_through_client(sim, sidecar, client, 4)
    r = redis_server.client()
    with Collector(client, tokens, reconcile_s=1.0) as col:
        wait_for(lambda: all(col.last(t) is not None for t in tokens), 5, what="initial yields")
        sim.start_activity(300, tokens)
        kills = 0
        for _ in range(5):
            before = len(col.quotes)
            kills += r.client_kill_filter(_type="pubsub")
            wait_for(lambda b=before: len(col.quotes) > b, 5, what="yields after a kill")
        assert kills >= 5
        sim.stop_activity()
        wait_for(lambda: all(matches(client.get(t), sim) for t in tokens), 10, what="sidecar converged")
        col.ends_on_the_hashes(r, tokens, 2.5, "follower's last yield equals the hash for every token")


def test_sigkilled_sidecar_is_unusable_within_the_alive_ttl(
    redis_server: RedisServer, sim: Simulator, sidecar: Callable[..., SidecarProcess], client: QuoteClient
) -> None:
    ttl = 2
    tokens, proc = live_through_client(sim, sidecar, client, 2, alive_ttl_s=ttl)
    with Collector(client, tokens, reconcile_s=0.5) as col:
        wait_for(lambda: col.all_alive(tokens, True), 5, what="alive")
        n_before = len(col.quotes)
        killed_at = time.monotonic()
        proc.proc.kill()
        wait_for(lambda: not any(client.is_fresh(t, 60) for t in tokens), ttl + 1, what="unusable")
        unusable_after = time.monotonic() - killed_at
        wait_for(
            lambda: col.all_alive(tokens, False),
            max(0.1, ttl + 1 - (time.monotonic() - killed_at)),
            what="follower yields alive=False for every token",
        )
        assert unusable_after <= ttl + 1
        gone = col.quotes[n_before:]
        # The hashes still say live with the dead run's epoch: only the alive key tells.
        assert {q.token for q in gone if not q.alive} == set(tokens)
        assert all(q.status == "live" and not q.usable(60) for q in gone if not q.alive)
        assert col.errors == []


def test_follower_rides_out_a_redis_restart(
    redis_server: RedisServer, sim: Simulator, sidecar: Callable[..., SidecarProcess], client: QuoteClient
) -> None:
    tokens, _ = live_through_client(sim, sidecar, client, 2)
    with Collector(client, tokens, reconcile_s=0.5) as col:
        wait_for(lambda: col.all_alive(tokens, True), 5, what="alive")
        redis_server.stop()
        wait_for(
            lambda: col.all_alive(tokens, False),
            3,
            what="quotes not vouched for while Redis is down",
        )
        redis_server.start()
        client.set_wanted(tokens)  # an unpersisted Redis lost the set: the scheduler re-asserts it
        wait_for(lambda: all(matches(col.last(t), sim) for t in tokens), 15, what="follower live again")
        r = redis_server.client()
        col.ends_on_the_hashes(r, tokens, 3, "follower equals the hashes after the restart")


def test_wait_live_gate_for_a_token_that_never_goes_live(
    redis_server: RedisServer, sim: Simulator, sidecar: Callable[..., SidecarProcess], client: QuoteClient
) -> None:
    tokens = new_tokens(sim, 1)
    sim.mute(tokens[0])  # the exchange accepts the subscription and never sends a first event
    client.want(tokens[:1])
    sidecar()
    wait_for(lambda: client.get(tokens[0]) is not None, 10, what="pending hash")
    t0 = time.monotonic()
    assert client.wait_live(tokens[0], 1.0) is None
    assert 1.0 <= time.monotonic() - t0 < 1.5
    q: Any = client.get(tokens[0])
    assert q.status == "pending" and q.alive and q.bid is None and not q.usable(60)


@pytest.mark.parametrize("retrying", [False, True], ids=["own-client", "given-retrying-client"])
def test_a_resubscription_rereads_and_yields_every_hash(redis_server: RedisServer, retrying: bool) -> None:
    """What was published while the follower's connection was dead is recovered at once on the
    re-subscription, not at the next reconcile (30 s away here), and unchanged tokens are yielded
    again: the caller learns its subscription was renewed. Our own client sees the dead connection
    as an error; a given client with retries re-subscribes inside redis-py, which the follower
    notices by the repeated subscribe confirmations."""
    if retrying:
        given = redis.Redis(
            port=redis_server.port, retry=Retry(NoBackoff(), 3), retry_on_error=[redis.ConnectionError]
        )
        client = QuoteClient(redis=given)
    else:
        client = QuoteClient(redis_server.url)
    r = redis_server.client()
    a, b = "1" * 72, "2" * 72
    r.set(P + "sidecar:alive", "e1")

    def write(token: str, seq: int, bid: str) -> None:
        fields = {
            "bid": bid,
            "ask": "0.60",
            "seq": str(seq),
            "epoch": "e1",
            "status": "live",
            "updated_at": "1",
        }
        r.hset(P + "quote:" + token, mapping=fields)
        r.publish(P + "quote:" + token, json.dumps({**fields, "token": token}))

    write(a, 10, "0.40")
    write(b, 20, "0.41")
    with client.follow([a, b], reconcile_s=30) as follower:
        first = [follower.poll(1.0), follower.poll(1.0)]
        assert sorted((q.token, q.seq) for q in first if q is not None) == [(a, 10), (b, 20)]
        assert follower.poll(0.2) is None
        # The follower is not reading now: kill its connection, then change A. The message is lost.
        assert r.client_kill_filter(_type="pubsub") == 1
        write(a, 11, "0.45")
        t0 = time.monotonic()
        got = {}
        while len(got) < 2 and time.monotonic() - t0 < 1.0:
            q = follower.poll(0.1)
            if q is not None:
                got[q.token] = q
        # A connection killed and re-opened at once is no outage: nothing is yielded as not alive.
        assert sorted((t, q.seq, q.bid_str, q.alive) for t, q in got.items()) == [
            (a, 11, "0.45", True),
            (b, 20, "0.41", True),
        ]
    client.close()
