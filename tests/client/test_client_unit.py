"""QuoteClient and Follower against fakeredis: the desired set, reads, and the follow rules."""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator

import fakeredis
import pytest
import redis

from sidecar.client import Follower, Quote, QuoteClient, add_redis_arguments, client_from_args
from sidecar.client.follow_state import WAIT_SLICE_S, FollowState, Next, Step

A = "1" * 72
B = "2" * 75


class FakeSidecar:
    """Writes quote hashes and publishes them the way the sidecar's writer does."""

    def __init__(self, r: redis.Redis, epoch: str = "e1") -> None:
        self.r = r
        self.epoch = epoch
        self.seq = {A: 100, B: 200}

    def alive(self, epoch: str | None = None) -> None:
        self.r.set("pm:sidecar:alive", epoch or self.epoch, ex=5)

    def write(self, token: str, publish: bool = True, seq: int | None = None, **over: str) -> dict[str, str]:
        if seq is None:
            self.seq[token] += 1
            seq = self.seq[token]
        fields = {
            "bid": "0.40",
            "ask": "0.42",
            "bid_size": "10",
            "ask_size": "11",
            "ts": "1700000000000",
            "updated_at": str(int(time.time() * 1000)),
            "seq": str(seq),
            "epoch": self.epoch,
            "status": "live",
            "reason": "",
            "source": "book",
        }
        fields.update(over)
        self.r.hset(f"pm:quote:{token}", mapping=fields)
        if publish:
            self.r.publish(f"pm:quote:{token}", json.dumps({**fields, "token": token}))
        return fields


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def r(server: fakeredis.FakeServer) -> redis.Redis:
    return fakeredis.FakeRedis(server=server, decode_responses=True)


@pytest.fixture
def client(server: fakeredis.FakeServer) -> Iterator[QuoteClient]:
    c = QuoteClient(redis=fakeredis.FakeRedis(server=server))  # bytes replies: the client decodes
    yield c
    c.close()


@pytest.fixture
def side(r: redis.Redis) -> FakeSidecar:
    s = FakeSidecar(r)
    s.alive()
    return s


def drain(follower: Follower, wait_s: float = 0.3) -> list[Quote]:
    """Everything the follower yields until it has been quiet for ``wait_s``."""
    out = []
    while (q := follower.poll(wait_s)) is not None:
        out.append(q)
    return out


def messages(pubsub: redis.client.PubSub, quiet_s: float) -> list[str]:
    """Channels of the messages received until none came for ``quiet_s``."""
    out: list[str] = []
    deadline = time.monotonic() + quiet_s
    while time.monotonic() < deadline:
        m = pubsub.get_message(timeout=0.02)
        if m is not None:
            out.append(m["channel"])
            deadline = time.monotonic() + quiet_s
    return out


# ---- desired set ------------------------------------------------------------------------------


def test_desired_changes_write_the_set_and_nudge_the_sidecar(client: QuoteClient, r: redis.Redis) -> None:
    nudges = r.pubsub(ignore_subscribe_messages=True)
    nudges.subscribe("pm:desired:changed")
    client.want([A, B])
    assert client.wanted() == {A, B}
    client.unwant([A])
    assert client.wanted() == {B}
    client.set_wanted([" " + A + " "])
    assert r.smembers("pm:desired") == {A}
    client.set_wanted([])
    assert not r.exists("pm:desired")
    assert messages(nudges, 0.2) == ["pm:desired:changed"] * 4


def test_invalid_ids_raise_before_anything_is_written(client: QuoteClient, r: redis.Redis) -> None:
    client.set_wanted([A])
    nudges = r.pubsub(ignore_subscribe_messages=True)
    nudges.subscribe("pm:desired:changed")
    for call in (client.want, client.unwant, client.set_wanted):
        with pytest.raises(ValueError, match="invalid token id"):
            call([B, "not-a-token"])
    assert r.smembers("pm:desired") == {A}
    assert messages(nudges, 0.2) == []


def test_set_wanted_is_one_transaction(client: QuoteClient, r: redis.Redis) -> None:
    client.set_wanted([A])
    seen: list[set[str]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(r.smembers("pm:desired"))

    t = threading.Thread(target=watch)
    t.start()
    for _ in range(200):
        client.set_wanted([A, B])
        client.set_wanted([A])
    stop.set()
    t.join()
    assert all(s in ({A}, {A, B}) for s in seen), "a reader saw the set half replaced"


def test_key_prefix_is_used_everywhere(server: fakeredis.FakeServer, r: redis.Redis) -> None:
    c = QuoteClient(prefix="x:", redis=fakeredis.FakeRedis(server=server))
    c.want([A])
    assert r.smembers("x:desired") == {A} and not r.exists("pm:desired")
    r.set("x:sidecar:alive", "e9")
    r.hset(f"x:quote:{A}", mapping={"status": "live", "epoch": "e9", "seq": "1", "updated_at": "1"})
    q = c.get(A)
    assert q is not None and q.alive and q.seq == 1


# ---- reads ----------------------------------------------------------------------------------------


def test_get_and_get_many_read_the_hash_with_the_alive_key(client: QuoteClient, side: FakeSidecar) -> None:
    side.write(A, bid="0.33", bid_size="7")
    q = client.get(A)
    assert q is not None and (q.bid, q.bid_str, q.bid_size, q.alive) == (0.33, "0.33", 7.0, True)
    assert client.get(B) is None
    many = client.get_many([A, B, A])
    assert list(many) == [A, B] and many[A] == q and many[B] is None
    side.alive("e2")
    assert client.get(A).alive is False  # type: ignore[union-attr]


def test_is_fresh(client: QuoteClient, side: FakeSidecar, r: redis.Redis) -> None:
    side.write(A, updated_at=str(int(time.time() * 1000) - 5_000))
    assert client.is_fresh(A, 6)
    assert not client.is_fresh(A, 4)
    assert not client.is_fresh(B, 60)
    r.delete("pm:sidecar:alive")
    assert not client.is_fresh(A, 60)


def test_is_fresh_is_false_when_redis_is_down(
    client: QuoteClient, side: FakeSidecar, server: fakeredis.FakeServer
) -> None:
    side.write(A)
    server.connected = False
    assert client.is_fresh(A, 60) is False
    with pytest.raises(redis.ConnectionError):
        client.get(A)


def test_reprs_never_show_the_password() -> None:
    c = QuoteClient("redis://user:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in repr(c) and "***" in repr(c)
    c2 = QuoteClient("redis://127.0.0.1:1/0", password="s3cret")
    assert "s3cret" not in repr(c2)


def test_from_env_reads_the_sidecar_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_REDIS_URL", "redis://10.9.8.7:6390/3")
    monkeypatch.setenv("SIDECAR_REDIS_PASSWORD", "pw")
    monkeypatch.setenv("SIDECAR_KEY_PREFIX", "t1:")
    c = QuoteClient.from_env()
    kwargs = c.redis.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("10.9.8.7", 6390, 3, "pw")
    assert c.prefix == "t1:" and c.desired_key == "t1:desired"
    monkeypatch.delenv("SIDECAR_KEY_PREFIX")
    assert QuoteClient.from_env().prefix == "pm:"


def test_constructor_does_not_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_KEY_PREFIX", "t1:")
    monkeypatch.setenv("SIDECAR_REDIS_URL", "redis://10.9.8.7:6390/3")
    c = QuoteClient()
    assert c.prefix == "pm:"
    assert c.redis.connection_pool.connection_kwargs["port"] == 6379


# ---- follow ---------------------------------------------------------------------------------------


def test_follow_yields_current_state_then_pushes(client: QuoteClient, side: FakeSidecar) -> None:
    side.write(A)
    with client.follow([A, B], reconcile_s=5) as f:
        first = drain(f, 0.2)
        assert [(q.token, q.seq) for q in first] == [(A, 101)]
        side.write(B, bid="0.10")
        side.write(A, bid="0.20")
        got = drain(f, 0.2)
        assert [(q.token, q.seq, q.bid) for q in got] == [(B, 201, 0.10), (A, 102, 0.20)]


def test_follow_never_goes_back_in_seq(client: QuoteClient, side: FakeSidecar) -> None:
    side.write(A, seq=500)
    with client.follow([A], reconcile_s=5) as f:
        assert [q.seq for q in drain(f, 0.2)] == [500]
        # A late, coalesced-over message with an older seq must never be yielded.
        side.r.publish(f"pm:quote:{A}", json.dumps({**side.write(A, publish=False, seq=499), "token": A}))
        side.write(A, seq=501)
        assert [q.seq for q in drain(f, 0.2)] == [501]


def test_reconcile_carries_unpublished_refreshes(client: QuoteClient, side: FakeSidecar) -> None:
    side.write(A)
    with client.follow([A], reconcile_s=0.2) as f:
        first = drain(f, 0.1)
        assert len(first) == 1
        later = str(int(first[0].updated_at_ms or 0) + 1000)
        side.write(A, publish=False, seq=first[0].seq, updated_at=later)  # updated_at-only refresh
        t0 = time.monotonic()
        q = f.poll(1.0)
        assert q is not None and q.updated_at_ms == int(later) and q.seq == first[0].seq
        assert time.monotonic() - t0 <= 0.3
        assert f.poll(0.5) is None, "an unchanged state is not yielded again"


def test_alive_loss_and_epoch_change_yield_every_token(
    client: QuoteClient, side: FakeSidecar, r: redis.Redis
) -> None:
    side.write(A)
    side.write(B)
    with client.follow([A, B], reconcile_s=0.1) as f:
        assert {q.token for q in drain(f, 0.15)} == {A, B}
        r.delete("pm:sidecar:alive")
        gone = drain(f, 0.3)
        assert sorted((q.token, q.alive) for q in gone) == [(A, False), (B, False)]
        side.alive("e2")  # a new run, hashes not rewritten yet: still nobody vouches for them
        assert drain(f, 0.3) == []
        side.epoch = "e2"
        side.write(A, publish=False)
        side.write(B, publish=False)
        back = drain(f, 0.3)
        assert sorted((q.token, q.alive, q.epoch) for q in back) == [(A, True, "e2"), (B, True, "e2")]


def test_a_message_from_a_new_run_is_judged_against_a_fresh_alive_key(
    client: QuoteClient, side: FakeSidecar
) -> None:
    side.write(A)
    with client.follow([A], reconcile_s=30) as f:
        assert drain(f, 0.1)[0].alive
        side.epoch = "e2"
        side.alive("e2")
        side.write(A)  # published long before the next reconcile
        q = f.poll(0.5)
        assert q is not None and q.epoch == "e2" and q.alive


def test_redis_outage_marks_quotes_not_alive_then_recovers(
    client: QuoteClient, side: FakeSidecar, server: fakeredis.FakeServer
) -> None:
    side.write(A)
    with client.follow([A], reconcile_s=0.1) as f:
        assert drain(f, 0.15)[0].alive
        server.connected = False
        q = f.poll(1.0)
        assert q is not None and q.token == A and q.alive is False
        assert f.poll(0.5) is None, "one not-alive yield per outage, not one per retry"
        server.connected = True
        side.write(A, publish=False)
        q = f.poll(3.0)
        assert q is not None and q.alive and q.seq == 102


def test_close_from_another_thread_ends_iteration(client: QuoteClient, side: FakeSidecar) -> None:
    f = client.follow([A], reconcile_s=10)
    got: list[Quote] = []
    t = threading.Thread(target=lambda: got.extend(f))
    t.start()
    time.sleep(0.2)  # let the iterator block in its wait; the join below is the real check
    t0 = time.monotonic()
    f.close()
    t.join(2)
    assert not t.is_alive() and time.monotonic() - t0 < 0.5
    assert list(f) == []


def test_client_close_ends_its_followers(client: QuoteClient) -> None:
    f = client.follow([A], reconcile_s=10)
    client.close()
    assert f.closed and list(f) == []


def test_follow_rejects_bad_arguments(client: QuoteClient) -> None:
    with pytest.raises(ValueError, match="invalid token id"):
        client.follow(["abc"])
    with pytest.raises(ValueError, match="reconcile_s"):
        client.follow([A], reconcile_s=0)


# ---- wait_live ------------------------------------------------------------------------------------


def test_wait_live_returns_on_the_push(client: QuoteClient, side: FakeSidecar) -> None:
    side.write(A, status="pending", bid="", ask="", updated_at="")
    timer = threading.Timer(0.3, lambda: side.write(A))
    timer.start()
    t0 = time.monotonic()
    q = client.wait_live(A, 5)
    elapsed = time.monotonic() - t0
    timer.join()
    assert q is not None and q.status == "live" and q.alive
    assert 0.25 <= elapsed < 0.6


def test_wait_live_times_out_with_none(client: QuoteClient, side: FakeSidecar, r: redis.Redis) -> None:
    side.write(A)
    r.delete("pm:sidecar:alive")  # live but not vouched for: not a start signal
    t0 = time.monotonic()
    assert client.wait_live(A, 0.4) is None
    assert 0.4 <= time.monotonic() - t0 < 0.7


def test_unreadable_messages_are_counted_and_skipped(
    client: QuoteClient, side: FakeSidecar, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    side.write(A)
    with client.follow([A], reconcile_s=5) as f:
        assert len(drain(f, 0.1)) == 1
        for junk in ("{oops", "[1, 2]", "7"):
            r.publish(f"pm:quote:{A}", junk)
        side.write(A, bid="0.21")
        got = drain(f, 0.2)
        assert [(q.seq, q.bid) for q in got] == [(102, 0.21)]
        assert f._state.bad_messages == 3
    assert [rec.getMessage() for rec in caplog.records if "unreadable" in rec.getMessage()] == [
        f"unreadable quote message on pm:quote:{A} (1 so far)"
    ]


def test_get_takes_an_id_with_whitespace_like_every_other_call(
    client: QuoteClient, side: FakeSidecar
) -> None:
    side.write(A)
    q = client.get(f" {A}\n")
    assert q is not None and q.token == A
    with pytest.raises(ValueError, match="invalid token id"):
        client.get("12 34")


@pytest.mark.parametrize("how", ["flushed", "older snapshot"])
def test_alive_loss_is_yielded_even_when_the_hash_vanished_or_went_back(
    client: QuoteClient, side: FakeSidecar, r: redis.Redis, how: str
) -> None:
    """Redis restarted (empty, or from an older snapshot) while the sidecar is dead: no hash
    yields anything new, but the last quote must still come back as not alive."""
    side.write(A, seq=500)
    with client.follow([A], reconcile_s=0.1) as f:
        assert [(q.seq, q.alive) for q in drain(f, 0.15)] == [(500, True)]
        if how == "flushed":
            r.flushall()
        else:
            r.delete("pm:sidecar:alive")
            side.write(A, publish=False, seq=400)
        assert [(q.seq, q.alive) for q in drain(f, 0.3)] == [(500, False)]
        side.alive()  # the same run answers again and rewrites its newer state
        side.write(A, publish=False, seq=501)
        assert [(q.seq, q.alive) for q in drain(f, 0.3)] == [(501, True)]


def test_reprs_never_show_a_password_given_in_the_query() -> None:
    c = QuoteClient("redis://127.0.0.1:1/0?password=s3cret")
    assert "s3cret" not in repr(c) and "password=***" in repr(c)


def test_from_env_overrides_replace_only_the_url_and_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_REDIS_URL", "redis://10.9.8.7:6390/3")
    monkeypatch.setenv("SIDECAR_REDIS_PASSWORD", "pw")
    monkeypatch.setenv("SIDECAR_KEY_PREFIX", "t1:")
    c = QuoteClient.from_env(redis_url="redis://10.1.1.1:7000/2")
    kwargs = c.redis.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("10.1.1.1", 7000, 2, "pw")
    assert c.prefix == "t1:"
    assert QuoteClient.from_env(prefix="x:").prefix == "x:"
    assert QuoteClient.from_env(prefix="x:").redis.connection_pool.connection_kwargs["port"] == 6390


def test_a_scripts_redis_options_default_to_the_env_and_replace_only_url_and_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIDECAR_REDIS_URL", "redis://10.9.8.7:6390/3")
    monkeypatch.setenv("SIDECAR_REDIS_PASSWORD", "pw")
    monkeypatch.setenv("SIDECAR_KEY_PREFIX", "t1:")
    parser = argparse.ArgumentParser()
    add_redis_arguments(parser)
    plain = client_from_args(parser.parse_args([]))
    kw = plain.redis.connection_pool.connection_kwargs
    assert (kw["host"], kw["port"], kw["password"], plain.prefix) == ("10.9.8.7", 6390, "pw", "t1:")
    given = client_from_args(parser.parse_args(["--redis-url", "redis://10.1.1.1:7000/2", "--prefix", "x:"]))
    kw = given.redis.connection_pool.connection_kwargs
    assert (kw["host"], kw["port"], kw["password"], given.prefix) == ("10.1.1.1", 7000, "pw", "x:")
    empty = client_from_args(parser.parse_args(["--redis-url", "", "--prefix", ""]))  # empty: not given
    assert (empty.redis.connection_pool.connection_kwargs["port"], empty.prefix) == (6390, "t1:")


def test_both_followers_take_their_next_step_from_the_state() -> None:
    state = FollowState(["1"], {"pm:quote:1": "1"}, reconcile_s=1.0)
    assert state.next_step(10.0, 20.0, subscribed=False) == Next(Step.SUBSCRIBE)
    assert state.next_step(10.0, 20.0, subscribed=True) == Next(Step.RECONCILE)  # never read yet
    state.read(None, [{}], 10.0, 1_800_000_000.0, force=True)
    assert state.next_step(10.0, 20.0, subscribed=True) == Next(Step.LISTEN, WAIT_SLICE_S)
    assert state.next_step(10.0, 10.01, subscribed=True) == Next(Step.LISTEN, pytest.approx(0.01))
    assert state.next_step(10.98, 20.0, subscribed=True) == Next(Step.LISTEN, pytest.approx(0.02))
    assert state.next_step(11.0, 20.0, subscribed=True) == Next(Step.RECONCILE)
    assert not state.failed(11.0)  # a killed connection: subscribe again at once
    assert state.next_step(11.0, 20.0, subscribed=False) == Next(Step.SUBSCRIBE)
    assert state.failed(11.0)  # twice: down, retry after a pause
    assert state.next_step(11.0, 20.0, subscribed=False) == Next(Step.WAIT, pytest.approx(0.1))
    assert state.next_step(11.0, 11.05, subscribed=False) == Next(Step.WAIT, pytest.approx(0.05))
    assert state.next_step(11.1, 20.0, subscribed=False) == Next(Step.SUBSCRIBE)
