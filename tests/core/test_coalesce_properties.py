"""sidecar.core.coalesce over arbitrary interleavings, against the model Redis of ``coalesce_model``.

Hypothesis mixes: quote changes (published), ``updated_at``-only refreshes, removals (EXPIRE) and
re-adds (PERSIST), loop heartbeats, transactions of any size that land, fail before Redis applied
them or fail after (the reply was lost), reconnect rewrites, Redis restarting empty or from an
older snapshot (any of the last few states), and time jumping past the unsubscribed TTL. After
every transaction:

- it holds at most its limit of token writes, each token once, never a partial hash;
- it sets the alive key only when no rewritten hash and no sweep is still owed, and never for
  longer than the TTL left from the latest loop heartbeat.

Once Redis answers again and the writer has drained, every token's hash is the engine's full
current state, the last message on the wire carries it, and removed tokens whose TTL ran out are
gone (an older snapshot's copy included).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core.coalesce import Batch, Coalescer
from tests.core.coalesce_model import (
    ALIVE_TTL,
    CORE,
    EPOCH,
    ModelEngine,
    ModelRedis,
    check_equal,
    drain,
    sweep,
)

TOKENS = ["t0", "t1", "t2"]
JUMP_S = {1: 40.0, 2: 150.0, 3: 299.0}  # time jumps that, summed, land on either side of the TTL
OP_NAMES = [
    "change",
    "refresh",
    "remove",
    "flush",
    "fail_before",
    "fail_after",
    "rewrite",
    "save",
    "restart_empty",
    "restart_old",
    "beat",
    "jump",
]
Op = tuple[str, str, str, int]


@st.composite
def op_lists(draw: st.DrawFn) -> list[Op]:
    """Swarm testing: each example uses a few operation kinds and tokens only, so that rare
    sequences (remove, flush, re-add, older snapshot...) come up often, not once in a million."""
    kinds = draw(st.lists(st.sampled_from(OP_NAMES), min_size=1, max_size=len(OP_NAMES), unique=True))
    if "flush" not in kinds and draw(st.booleans()):
        kinds.append("flush")
    tokens = draw(st.sampled_from([TOKENS[:1], TOKENS[:2], TOKENS]))
    op = st.tuples(
        st.sampled_from(kinds),
        st.sampled_from(tokens),
        st.sampled_from(["live", "stale", "resyncing"]),
        st.integers(1, 3),
    )
    return draw(st.lists(op, min_size=10, max_size=80))


@dataclass
class Checker:
    """What the test knows independently of the coalescer: which rewritten hashes and which sweep
    are still owed, and when the loop last beat."""

    engine: ModelEngine
    owed: set[str] = field(default_factory=set)
    sweep_owed: bool = False
    last_beat: float | None = None

    def rewrite_started(self, now: float) -> None:
        self.owed = {t for t in self.engine.state if self.engine.held(t, now)}
        self.sweep_owed = True

    def time_passed(self, now: float) -> None:
        self.owed = {t for t in self.owed if self.engine.held(t, now)}

    def landed(self, batch: Batch, limit: int, now: float, redis: ModelRedis) -> None:
        tokens = [w.token for w in batch.writes]
        assert len(tokens) <= limit, f"{len(tokens)} writes in a transaction of at most {limit}"
        assert len(set(tokens)) == len(tokens), f"a token twice in one transaction: {tokens}"
        self.owed -= set(tokens)
        s = batch.summary
        if s is not None and s.alive_px is not None and not s.delete_alive:
            assert not self.sweep_owed, "alive key set before the sweep of brought-back hashes"
            assert not self.owed, f"alive key set while the rewrite still owes {sorted(self.owed)}"
            assert self.last_beat is not None
            until = now + s.alive_px / 1000.0
            assert until <= self.last_beat + ALIVE_TTL + 1e-6, "alive key outlives its heartbeat"
        for token, h in redis.hashes.items():
            assert all(k in h for k in CORE), f"partial hash for {token}: {h}"


@settings(max_examples=2000, deadline=None)
@given(op_lists(), st.sampled_from([0.0, 0.0, 150.0, 301.0]))
def test_after_any_interleaving_redis_equals_the_engine_state(ops: list[Op], outage_s: float) -> None:
    """``outage_s``: how long Redis stays away after the last operation, before the drain."""
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    check = Checker(engine)
    redis = ModelRedis()
    saved = [redis.snapshot()]  # explicit saves, and Redis as it was after each transaction
    now = 100.0
    now_ms = 1_000_000
    for op, token, status, n in ops:
        step = JUMP_S[n] if op == "jump" else 0.25
        now += step
        now_ms += int(step * 1000)
        redis.advance(now)
        check.time_passed(now)
        if op == "change":
            # n == 3: an engine that does not ask for PERSIST on a re-add (the coalescer knows)
            c.submit([engine.change(token, status, now_ms, ask_persist=n != 3)], now)
        elif op == "refresh":
            c.submit([engine.refresh(token, now_ms)], now)
        elif op == "remove" and token in engine.state and token not in engine.removed:
            c.submit([engine.remove(token, now)], now)
        elif op == "beat":
            c.submit_summary({"epoch": EPOCH}, now)
            check.last_beat = now
        elif op == "rewrite":  # what a reconnect does
            c.rewrite(now)
            check.rewrite_started(now)
        elif op in ("flush", "fail_before", "fail_after"):
            if op == "flush" and c.sweep_due:  # the writer sweeps first, on a working Redis
                sweep(c, redis)
                check.sweep_owed = False
            batch = c.take(now, limit=n)
            if batch is None:
                continue
            if op == "flush":
                seen = redis.apply(batch, now)
                check.landed(batch, n, now, redis)
                saved.append(redis.snapshot())
                if c.done(batch, seen, now):
                    check.rewrite_started(now)
            else:
                if op == "fail_after":  # it landed, the reply was lost
                    redis.apply(batch, now)
                    check.landed(batch, n, now, redis)
                    saved.append(redis.snapshot())
                c.failed(batch, now)
                check.rewrite_started(now)
        elif op == "save":
            saved.append(redis.snapshot())
        elif op == "restart_empty":
            redis = redis.restarted_empty()
        elif op == "restart_old":
            redis = saved[-min(n, len(saved))].snapshot()  # n = 1: the latest; 3: two before it
            redis.advance(now)
    now += outage_s
    drain(c, redis, now)
    assert redis.alive, "the alive key did not come back once Redis answered and the loop beat"
    check_equal(engine, redis, now)


def test_the_model_catches_a_writer_that_forgets() -> None:
    """The checks themselves can fail: a Redis that missed one change is not equal to the engine."""
    c = Coalescer("s", ALIVE_TTL)
    engine = ModelEngine()
    redis = ModelRedis()
    c.submit([engine.change("a", "live", 1)], 0.0)
    drain(c, redis, 0.0)
    engine.change("a", "stale", 2)  # never submitted
    try:
        check_equal(engine, redis, 0.0)
    except AssertionError:
        return
    raise AssertionError("check_equal accepted a Redis that missed a change")
