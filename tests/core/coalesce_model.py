"""Models for the coalescer's tests: Redis as the writer's transactions see it, and the engine's truth.

``ModelRedis`` applies a ``Batch`` the way MULTI/EXEC does in ``sidecar.shell.writer._queue``
(stamp swap, HSET merges, PERSIST, EXPIRE, PUBLISH, the summary and the alive key), with key
expiry in model time. What subscribers received (``Wire``) survives a Redis restart. ``ModelEngine``
holds each token's full current state, what a drained writer must leave in Redis.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from sidecar.core.actions import QuoteWrite
from sidecar.core.coalesce import Batch, Coalescer

TTL = 300  # the unsubscribed TTL the model engine gives a removed token
ALIVE_TTL = 5.0
CORE = ("bid", "ask", "seq", "status", "updated_at", "epoch")
EPOCH = "e1"


@dataclass
class Wire:
    """Pub/sub as subscribers saw it: every message, in order, across Redis restarts."""

    messages: list[dict[str, str]] = field(default_factory=list)
    last: dict[str, dict[str, str]] = field(default_factory=dict)  # token -> its last message

    def publish(self, token: str, msg: dict[str, str]) -> None:
        before = self.last.get(token)
        assert before is None or int(msg["seq"]) >= int(before["seq"]), "seq went backwards on the wire"
        self.messages.append(msg)
        self.last[token] = msg


@dataclass
class ModelRedis:
    hashes: dict[str, dict[str, str]] = field(default_factory=dict)
    expires_at: dict[str, float] = field(default_factory=dict)  # token -> its key's expiry
    stamp: str | None = None
    alive_until: float | None = None
    wire: Wire = field(default_factory=Wire)
    now: float = 0.0

    @property
    def expiring(self) -> set[str]:
        return set(self.expires_at)

    @property
    def messages(self) -> list[dict[str, str]]:
        return self.wire.messages

    @property
    def alive(self) -> bool:
        return self.alive_until is not None

    def advance(self, now: float) -> None:
        """Time passes: keys whose TTL ran out are gone."""
        self.now = max(self.now, now)
        for token, at in list(self.expires_at.items()):
            if at <= self.now:
                del self.expires_at[token]
                del self.hashes[token]
        if self.alive_until is not None and self.alive_until <= self.now:
            self.alive_until = None

    def delete(self, token: str) -> None:
        self.hashes.pop(token, None)
        self.expires_at.pop(token, None)

    def apply(self, batch: Batch, now: float = 0.0) -> str | None:
        """One MULTI/EXEC; returns the stamp Redis held before it (``SET stamp GET``)."""
        self.advance(now)
        seen, self.stamp = self.stamp, batch.stamp
        for w in batch.writes:
            h = self.hashes.setdefault(w.token, {})
            h.update(w.fields)
            if w.persist:
                self.expires_at.pop(w.token, None)
            if w.expire_s is not None:
                assert 0 < w.expire_s <= TTL
                self.expires_at[w.token] = self.now + w.expire_s
            if w.publish:
                msg = w.message()
                assert msg == {**h, "token": w.token}, "message and hash of one write differ"
                self.wire.publish(w.token, msg)
        s = batch.summary
        if s is not None:
            if s.delete_alive:
                self.alive_until = None
            elif s.alive_px is not None:
                self.alive_until = self.now + s.alive_px / 1000.0
        return seen

    def snapshot(self) -> ModelRedis:
        """An RDB snapshot; restoring it keeps the wire (messages already sent stay sent)."""
        return ModelRedis(
            copy.deepcopy(self.hashes),
            dict(self.expires_at),
            self.stamp,
            self.alive_until,
            self.wire,
            self.now,
        )

    def restarted_empty(self) -> ModelRedis:
        return ModelRedis(wire=self.wire, now=self.now)


def sweep(c: Coalescer, redis: ModelRedis) -> None:
    """What ``QuoteWriter._sweep`` does with the coalescer's answer: delete this run's hashes of
    tokens it no longer knows."""
    tokens = list(redis.hashes)
    for token in c.orphans(tokens, [redis.hashes[t].get("epoch") for t in tokens]):
        redis.delete(token)
    c.swept()


@dataclass
class ModelEngine:
    """The engine's current full state per token (what the hash must end up equal to)."""

    state: dict[str, dict[str, str]] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    removed_at: dict[str, float] = field(default_factory=dict)
    seq: int = 1000

    def change(self, token: str, status: str, now_ms: int, ask_persist: bool = True) -> QuoteWrite:
        fresh = token not in self.state or token in self.removed  # added or re-added
        self.removed.discard(token)
        self.removed_at.pop(token, None)
        self.seq += 1
        self.state[token] = {
            "bid": f"0.{self.seq % 97:02d}",
            "ask": "0.99",
            "seq": str(self.seq),
            "status": status,
            "updated_at": str(now_ms),
            "epoch": EPOCH,
        }
        return QuoteWrite(token, dict(self.state[token]), True, persist=fresh and ask_persist)

    def refresh(self, token: str, now_ms: int) -> QuoteWrite:
        if token in self.state and token not in self.removed:
            self.state[token] = {**self.state[token], "updated_at": str(now_ms)}
        return QuoteWrite(token, {"updated_at": str(now_ms)}, False)

    def remove(self, token: str, now: float = 0.0) -> QuoteWrite:
        self.seq += 1
        fields = {**self.state[token], "status": "unsubscribed", "seq": str(self.seq)}
        self.state[token] = fields
        self.removed.add(token)
        self.removed_at[token] = now
        return QuoteWrite(token, dict(fields), True, expire_s=TTL)

    def held(self, token: str, now: float) -> bool:
        """Whether the writer still owes Redis this token (a removal's key not yet expired)."""
        at = self.removed_at.get(token)
        return at is None or now < at + TTL

    def gone(self, token: str, now: float) -> bool:
        """Whether Redis must no longer hold the token's key (its removal's TTL ran out: the
        EXPIRE is rounded up to whole seconds, so one second after the writer forgot it)."""
        at = self.removed_at.get(token)
        return at is not None and now >= at + TTL + 1


def drain(c: Coalescer, redis: ModelRedis, now: float) -> None:
    """What the writer does once Redis answers again: the loop's heartbeat, then the sweep when
    one is owed and batches until nothing is owed."""
    c.submit_summary({"epoch": EPOCH}, now)
    for _ in range(100):
        if c.sweep_due:
            sweep(c, redis)
        batch = c.take(now, limit=2)
        if batch is None:
            if c.sweep_due:  # take() forgot a removal that never reached Redis: sweep, go on
                continue
            return
        c.done(batch, redis.apply(batch, now), now)
    raise AssertionError("the writer never drained")


def check_equal(engine: ModelEngine, redis: ModelRedis, now: float = 0.0) -> None:
    """Every token's hash is the engine's full current state, with a TTL exactly when removed, and
    the last message on the wire carries that state (bar ``updated_at``, which refreshes move
    without a message); a token whose removal has expired has no hash at all."""
    redis.advance(now)
    for token, fields in engine.state.items():
        if engine.gone(token, now):
            assert token not in redis.hashes, (
                f"{token}: removed long ago, Redis still has {redis.hashes[token]}"
            )
            continue
        if not engine.held(token, now):
            continue  # within the second its EXPIRE was rounded up by: either is right
        assert redis.hashes.get(token) == fields, f"{token}: Redis {redis.hashes.get(token)} != {fields}"
        assert (token in redis.expiring) == (token in engine.removed), f"{token}: wrong expiry"
        last = redis.wire.last.get(token)
        assert last is not None, f"{token}: never published"
        want = {k: v for k, v in fields.items() if k != "updated_at"}
        got = {k: v for k, v in last.items() if k not in ("updated_at", "token")}
        assert got == want, f"{token}: last message {last} is not the state {fields}"
