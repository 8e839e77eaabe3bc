"""sidecar.core.coalesce: the writer's rules, checked against a model Redis over arbitrary interleavings.

The model Redis applies a batch the way MULTI/EXEC does (HSET merges, PERSIST, EXPIRE, PUBLISH,
the stamp swap) and can lose a transaction, apply one whose reply was lost, restart empty or
restart from a snapshot taken earlier. Whatever happened, once the writer has drained, every
token's hash must equal the engine's full current state.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core.coalesce import Batch, Coalescer
from sidecar.core.engine import QuoteWrite

TTL = 300
ALIVE_TTL = 5.0
CORE = ("bid", "ask", "seq", "status", "updated_at", "epoch")


@dataclass
class ModelRedis:
    hashes: dict[str, dict[str, str]] = field(default_factory=dict)
    expiring: set[str] = field(default_factory=set)
    stamp: str | None = None
    alive_px: int | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    published: dict[str, int] = field(default_factory=dict)

    def apply(self, batch: Batch) -> str | None:
        seen, self.stamp = self.stamp, batch.stamp
        for w in batch.writes:
            h = self.hashes.setdefault(w.token, {})
            h.update(w.fields)
            if w.persist:
                self.expiring.discard(w.token)
            if w.expire_s is not None:
                assert 0 < w.expire_s <= TTL
                self.expiring.add(w.token)
            if w.publish:
                msg = w.message()
                assert msg == {**h, "token": w.token}, "message and hash of one write differ"
                assert int(msg["seq"]) >= self.published.get(w.token, 0), "seq went backwards"
                self.published[w.token] = int(msg["seq"])
                self.messages.append(msg)
        if batch.summary is not None:
            if batch.summary.delete_alive:
                self.alive_px = None
            elif batch.summary.alive_px is not None:
                self.alive_px = batch.summary.alive_px
        return seen

    def snapshot(self) -> ModelRedis:
        return ModelRedis(copy.deepcopy(self.hashes), set(self.expiring), self.stamp)


@dataclass
class ModelEngine:
    """The engine's current full state per token (what the hash must end up equal to)."""

    state: dict[str, dict[str, str]] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    seq: int = 1000

    def change(self, token: str, status: str, now_ms: int) -> QuoteWrite:
        fresh = token not in self.state or token in self.removed  # added or re-added
        self.removed.discard(token)
        self.seq += 1
        self.state[token] = {
            "bid": f"0.{self.seq % 97:02d}",
            "ask": "0.99",
            "seq": str(self.seq),
            "status": status,
            "updated_at": str(now_ms),
            "epoch": "e1",
        }
        return QuoteWrite(token, dict(self.state[token]), True, persist=fresh)

    def refresh(self, token: str, now_ms: int) -> QuoteWrite:
        if token in self.state and token not in self.removed:
            self.state[token] = {**self.state[token], "updated_at": str(now_ms)}
        return QuoteWrite(token, {"updated_at": str(now_ms)}, False)

    def remove(self, token: str) -> QuoteWrite:
        self.seq += 1
        fields = {**self.state[token], "status": "unsubscribed", "seq": str(self.seq)}
        self.state[token] = fields
        self.removed.add(token)
        return QuoteWrite(token, dict(fields), True, expire_s=TTL)


TOKENS = ["t0", "t1", "t2", "t3"]
OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "change",
                "refresh",
                "remove",
                "flush",
                "fail_before",
                "fail_after",
                "save",
                "restart_empty",
                "restart_old",
                "beat",
            ]
        ),
        st.sampled_from(TOKENS),
        st.sampled_from(["live", "stale", "resyncing"]),
        st.integers(1, 3),
    ),
    max_size=60,
)


def drain(c: Coalescer, redis: ModelRedis, now: float) -> None:
    """What the writer does once Redis answers again: the loop's heartbeat, then batches until
    nothing is owed."""
    c.submit_summary({"epoch": "e1"}, now)
    for _ in range(100):
        batch = c.take(2, now)
        if batch is None:
            return
        c.done(batch, redis.apply(batch), now)
    raise AssertionError("the writer never drained")


def check_equal(engine: ModelEngine, redis: ModelRedis) -> None:
    for token, fields in engine.state.items():
        assert redis.hashes.get(token) == fields, f"{token}: Redis {redis.hashes.get(token)} != {fields}"
        assert (token in redis.expiring) == (token in engine.removed), f"{token}: wrong expiry"


@settings(max_examples=400, deadline=None)
@given(OPS)
def test_after_any_interleaving_redis_equals_the_engine_state(ops: list[tuple[str, str, str, int]]) -> None:
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    saved = redis.snapshot()
    now = 100.0
    now_ms = 1_000_000
    for op, token, status, n in ops:
        now += 0.25
        now_ms += 250
        if op == "change":
            c.submit([engine.change(token, status, now_ms)], now)
        elif op == "refresh":
            c.submit([engine.refresh(token, now_ms)], now)
        elif op == "remove" and token in engine.state and token not in engine.removed:
            c.submit([engine.remove(token)], now)
        elif op == "beat":
            c.submit_summary({"epoch": "e1"}, now)
        elif op in ("flush", "fail_before", "fail_after"):
            batch = c.take(n, now)
            if batch is None:
                continue
            if op == "flush":
                c.done(batch, redis.apply(batch), now)
            else:
                if op == "fail_after":  # it landed, the reply was lost
                    redis.apply(batch)
                c.failed(batch, now)
        elif op == "save":
            saved = redis.snapshot()
        elif op == "restart_empty":
            redis = ModelRedis()
        elif op == "restart_old":
            redis = saved.snapshot()
        # Never a partial hash: whatever Redis holds for a token has every core field.
        for token_, h in redis.hashes.items():
            assert all(k in h for k in CORE), f"partial hash for {token_}: {h}"
    drain(c, redis, now)
    check_equal(engine, redis)


def test_a_refresh_alone_is_never_written_over_a_state_redis_may_not_have() -> None:
    """The bug of today's writer: after an outage the refresh was the only pending entry, the
    rewrite skipped the token, and Redis held a hash of nothing but updated_at."""
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    c.submit([engine.change("a", "live", 1)], 0.0)
    batch = c.take(10, 0.0)
    assert batch is not None
    c.done(batch, ModelRedis().apply(batch), 0.0)
    c.submit([engine.refresh("a", 2)], 0.1)
    batch = c.take(10, 0.1)
    assert batch is not None
    (w,) = batch.writes
    assert dict(w.fields) == engine.state["a"], "a refresh must carry the full latest state"
    assert w.publish is False


def test_a_failed_change_is_not_lost_when_a_refresh_arrives_meanwhile() -> None:
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change("a", "live", 1)], 0.0)
    drain(c, redis, 0.0)
    c.submit([engine.change("a", "stale", 2)], 0.1)
    batch = c.take(10, 0.1)
    assert batch is not None
    c.submit([engine.refresh("a", 3)], 0.2)  # arrives while the failing flush is out
    c.failed(batch, 0.2)
    drain(c, redis, 0.3)
    assert redis.hashes["a"] == engine.state["a"]
    assert redis.hashes["a"]["status"] == "stale"
    assert redis.messages[-1]["status"] == "stale", "the change was never published"


def test_a_batch_is_an_immutable_snapshot() -> None:
    """A refresh arriving after a batch was taken never changes what that batch writes or sends."""
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    c.submit([engine.change("a", "live", 1)], 0.0)
    batch = c.take(10, 0.0)
    assert batch is not None
    before = dict(batch.writes[0].fields)
    c.submit([engine.refresh("a", 99)], 0.1)
    assert dict(batch.writes[0].fields) == before
    assert batch.writes[0].message() == {**before, "token": "a"}


def test_restart_from_an_older_snapshot_is_detected_and_everything_rewritten() -> None:
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change("a", "live", 1), engine.change("b", "live", 1)], 0.0)
    drain(c, redis, 0.0)
    old = redis.snapshot()  # contains our own, older stamp
    c.submit([engine.change("a", "stale", 2), engine.change("b", "stale", 2)], 1.0)
    drain(c, redis, 1.0)
    redis = old.snapshot()
    c.submit_summary({"epoch": "e1"}, 2.0)
    batch = c.take(10, 2.0)
    assert batch is not None and batch.writes == ()
    assert c.done(batch, redis.apply(batch), 2.0) is True, "older stamp not noticed"
    drain(c, redis, 2.0)
    check_equal(engine, redis)


def test_a_readded_token_keeps_its_persist_when_newer_writes_coalesce_over_it() -> None:
    """Removed (key given a TTL), added again, then changed before the writer ran: the write that
    lands must still clear the TTL, or the live quote vanishes after the unsubscribe TTL."""
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change("a", "live", 1)], 0.0)
    drain(c, redis, 0.0)
    c.submit([engine.remove("a")], 1.0)
    drain(c, redis, 1.0)
    assert "a" in redis.expiring
    c.submit([engine.change("a", "pending", 2)], 2.0)  # re-added: persist=True
    c.submit([engine.change("a", "live", 3)], 2.1)  # newer write, persist=False
    drain(c, redis, 2.2)
    assert "a" not in redis.expiring, "re-added token kept the expiry of its removal"
    assert redis.hashes["a"]["status"] == "live"


def test_persist_survives_a_failed_flush_and_a_newer_write() -> None:
    c = Coalescer("s", ALIVE_TTL)
    c.submit([QuoteWrite("a", {"seq": "1"}, True, expire_s=TTL)], 0.0)
    c.submit([QuoteWrite("a", {"seq": "2"}, True, persist=True)], 0.1)
    batch = c.take(10, 0.1)
    assert batch is not None and batch.writes[0].persist
    c.submit([QuoteWrite("a", {"seq": "3"}, True)], 0.2)
    c.failed(batch, 0.2)
    batch = c.take(10, 0.3)
    assert batch is not None
    assert batch.writes[0].persist and batch.writes[0].fields["seq"] == "3"


def test_alive_ttl_counts_from_the_heartbeat_never_from_a_replay() -> None:
    c = Coalescer("s", ALIVE_TTL)
    c.submit_summary({"epoch": "e1"}, 10.0)
    batch = c.take(10, 10.0)
    assert batch is not None and batch.summary is not None
    assert batch.summary.alive_px == 5000
    c.failed(batch, 13.0)  # Redis was away for 3 s; the loop is wedged (no new heartbeat)
    batch = c.take(10, 13.0)
    assert batch is not None and batch.summary is not None
    assert batch.summary.alive_px == 2000, "a replayed summary restarted the alive TTL"
    c.failed(batch, 15.5)
    batch = c.take(10, 15.5)
    assert batch is not None and batch.summary is not None
    assert batch.summary.alive_px is None, "alive written after its heartbeat's TTL ran out"


def test_final_batch_takes_what_is_in_flight_deletes_alive_and_ends_the_writer() -> None:
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    c.submit([engine.change("a", "live", 1), engine.change("r", "resolved", 1)], 0.0)
    c.submit_summary({"epoch": "e1", "live": "1"}, 0.0)
    inflight = c.take(10, 0.0)  # the writer thread's transaction, stuck behind a slow Redis
    assert inflight is not None
    c.submit([engine.change("a", "stale", 2), engine.change("b", "stale", 2)], 0.5)
    c.submit_summary({"epoch": "e1", "live": "0"}, 0.5)
    final = c.take_final(0.6)
    # r is only in flight (resolved stays resolved): the final write must carry it, since the
    # transaction carrying it is killed by the final one.
    assert {w.token: w.fields["status"] for w in final.writes} == {
        "a": "stale",
        "b": "stale",
        "r": "resolved",
    }
    assert final.summary is not None and final.summary.delete_alive and final.summary.alive_px is None
    assert final.summary.fields["live"] == "0"
    c.submit([engine.change("a", "live", 3)], 0.7)
    assert c.take(10, 0.7) is None, "nothing may be written after the final transaction"
    c.done(inflight, None, 0.8)
    assert c.take(10, 0.8) is None


def test_removed_tokens_are_forgotten_once_their_key_has_expired() -> None:
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change("a", "live", 1)], 0.0)
    c.submit([engine.remove("a")], 0.0)
    drain(c, redis, 0.0)
    c.rewrite(100.0)
    batch = c.take(10, 100.0)
    assert batch is not None and batch.writes[0].expire_s == TTL - 100
    c.done(batch, redis.apply(batch), 100.0)
    c.rewrite(float(TTL))
    batch = c.take(10, float(TTL))
    assert batch is not None and batch.writes == (), "an expired removal was written again"
    assert "a" not in c.known


def test_a_restart_after_a_failed_flush_still_gets_every_token_back() -> None:
    """A failed transaction leaves the stamp unknown, so only the rewrite it schedules can bring
    back tokens that were not in it when Redis comes back empty."""
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change("a", "live", 1)], 0.0)
    drain(c, redis, 0.0)
    c.submit([engine.change("b", "live", 2)], 1.0)
    batch = c.take(10, 1.0)
    assert batch is not None and [w.token for w in batch.writes] == ["b"]
    c.failed(batch, 1.0)
    redis = ModelRedis()  # it was a restart, empty
    drain(c, redis, 2.0)
    check_equal(engine, redis)


def test_a_readded_token_is_persisted_even_if_the_engine_did_not_ask() -> None:
    """The coalescer knows the key it wrote last had a TTL: the next non-expiring write clears it."""
    c = Coalescer("s", ALIVE_TTL)
    redis = ModelRedis()
    c.submit([QuoteWrite("a", {"seq": "1", "status": "unsubscribed"}, True, expire_s=TTL)], 0.0)
    drain(c, redis, 0.0)
    c.submit([QuoteWrite("a", {"seq": "2", "status": "pending"}, True)], 1.0)
    drain(c, redis, 1.0)
    assert "a" not in redis.expiring


def test_a_rewrite_clears_a_ttl_an_older_snapshot_brought_back() -> None:
    """Redis restarts from a snapshot taken while the token was unsubscribed (its key expiring);
    the token is desired again: the rewrite must PERSIST it, or its live quote vanishes."""
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change("a", "live", 1)], 0.0)
    c.submit([engine.remove("a")], 0.0)
    drain(c, redis, 0.0)
    old = redis.snapshot()
    c.submit([engine.change("a", "live", 2)], 1.0)  # re-added
    drain(c, redis, 1.0)
    assert "a" not in redis.expiring
    redis = old.snapshot()
    drain(c, redis, 2.0)
    check_equal(engine, redis)


def test_orphans_are_hashes_of_this_epoch_for_tokens_no_longer_known() -> None:
    c = Coalescer("s", ALIVE_TTL)
    assert c.orphans(["x"], ["e1"]) == [], "no summary yet: no epoch to match"
    c.submit_summary({"epoch": "e1"}, 0.0)
    c.submit([QuoteWrite("known", {"seq": "1"}, True)], 0.0)
    got = c.orphans(["known", "gone", "older_run", "no_epoch"], ["e1", "e1", "e0", None])
    assert got == ["gone"]


def test_after_an_outage_the_alive_key_waits_for_every_rewritten_hash() -> None:
    """A rewrite bigger than one transaction: the alive key must not come back in its first
    batch while later batches' hashes still say what Redis kept from before the outage."""
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    tokens = [f"t{i}" for i in range(5)]
    c.submit([engine.change(t, "live", 1) for t in tokens], 0.0)
    c.submit_summary({"epoch": "e"}, 0.0)
    drain(c, redis, 0.0)
    c.submit_summary({"epoch": "e"}, 1.0)
    c.rewrite(1.0)
    seen = []
    while (batch := c.take(2, 1.0)) is not None:
        seen.append((len(batch.writes), batch.summary is not None))
        c.done(batch, redis.apply(batch), 1.0)
    assert seen == [(2, False), (2, False), (1, True)]


def test_a_large_rewrite_is_taken_whole_in_batches_of_the_limit() -> None:
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change(f"t{i}", "live", 1) for i in range(20_000)], 0.0)
    c.submit_summary({"epoch": "e1"}, 0.0)
    while (batch := c.take(2000, 0.0)) is not None:
        c.done(batch, redis.apply(batch), 0.0)
    c.rewrite(0.0)
    sizes = []
    while (batch := c.take(2000, 0.0)) is not None:
        sizes.append(len(batch.writes))
        c.done(batch, redis.apply(batch), 0.0)
    assert sizes == [2000] * 10
