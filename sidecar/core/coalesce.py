"""The writer's coalescing rules, as pure code: what Redis must be told, and when to tell it again.

The writer thread only moves bytes; everything that decides lives here, with time passed in, so
the rules can be checked over every interleaving of submits, failed flushes and rewrites.

Rules:
- Every token write carries the token's *full* latest state. An ``updated_at``-only refresh is
  merged into that state and written with it, never on its own, so Redis can never hold a hash
  made of a refresh over a state it does not have.
- Stored states are never mutated after they are stored (copy on write): a ``TokenWrite`` is an
  immutable snapshot, and the hash and the pub/sub message of one write are built from it.
- A flush that failed puts its tokens back and schedules a full rewrite (the server may have lost
  or may still apply it); so does a transaction that finds Redis holding a stamp other than the
  one our last transaction set (restart from an older snapshot, failover, flush, another writer).
- PERSIST is owed from the moment a token is (re-)added or a rewrite starts until a transaction
  carrying it succeeds; coalescing or failures never drop it.
- The alive key gets only the TTL left from the loop heartbeat behind the summary: replaying an
  old summary never extends it, so a wedged loop loses the key within the TTL. While a rewrite
  still owes any token its hash, or the sweep of hashes Redis brought back is still owed, no
  batch carries the summary and the alive key.
- A transaction carries at most ``batch_limit`` token writes. Before a flush the writer lingers
  ``SIDECAR_WRITE_FLUSH_MS`` for a burst to grow, unless a full batch is owed already; after a
  successful one it goes on at once only when a full batch went out or a rewrite became owed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

MIN_ALIVE_MS = 20  # a shorter remaining TTL is not worth writing: let the key lapse
BATCH_LIMIT = 2000  # token writes per MULTI/EXEC; bigger backlogs take several round trips


class Write(Protocol):
    """What the engine hands over (``sidecar.core.engine.QuoteWrite``). Read-only members: the
    coalescer only reads a write (and copies ``fields``), so a frozen dataclass satisfies it."""

    @property
    def token(self) -> str: ...
    @property
    def fields(self) -> Mapping[str, str]: ...
    @property
    def publish(self) -> bool: ...
    @property
    def expire_s(self) -> int | None: ...
    @property
    def persist(self) -> bool: ...
    @property
    def recv_at(self) -> float | None: ...
    @property
    def exch_ts(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class TokenWrite:
    """One token's full hash for one transaction. ``fields`` is never mutated by anyone."""

    token: str
    fields: Mapping[str, str]
    publish: bool
    persist: bool
    expire_s: int | None
    recv_at: float | None = None
    exch_ts: int | None = None

    def message(self) -> dict[str, str]:
        """The pub/sub message: the same snapshot as the hash, plus the token."""
        return {**self.fields, "token": self.token}


@dataclass(frozen=True, slots=True)
class SummaryWrite:
    fields: Mapping[str, str]
    alive: str  # the value of the alive key (the epoch)
    alive_px: int | None  # None: leave the alive key alone (no fresh heartbeat, or stopping)
    delete_alive: bool = False


@dataclass(frozen=True, slots=True)
class Batch:
    """One MULTI/EXEC: token writes, maybe the summary, and the stamp check."""

    writes: tuple[TokenWrite, ...]
    summary: SummaryWrite | None
    stamp: str  # the stamp this transaction leaves in Redis
    expect: str | None  # the stamp Redis must hold before it; None when we cannot know
    final: bool = False

    def alive_until(self, sent_at: float, before: float | None) -> float | None:
        """When the alive key expires once this batch has landed (``sent_at``: monotonic time the
        transaction was sent; Redis counts the TTL from EXEC, after it). ``before``: the expiry
        until now, kept when the batch leaves the key alone."""
        s = self.summary
        if s is None:
            return before
        if s.delete_alive:
            return None
        if s.alive_px is not None:
            return sent_at + s.alive_px / 1000.0
        return before


@dataclass(slots=True)
class _Known:
    fields: dict[str, str]  # replaced, never mutated
    recv_at: float | None = None
    exch_ts: int | None = None
    expire_s: int | None = None  # set for a removed token (its final, expiring hash)
    removed_at: float = 0.0


@dataclass(slots=True)
class _Owed:
    publish: bool = False
    persist: bool = False

    def merge(self, other: _Owed) -> None:
        self.publish |= other.publish
        self.persist |= other.persist


@dataclass(slots=True)
class _Summary:
    fields: dict[str, str]
    beat_at: float  # monotonic time of the loop heartbeat that produced it


@dataclass
class Coalescer:
    """Pending Redis work per token. Not thread-safe: the writer calls it under its lock."""

    stamp_prefix: str
    alive_ttl_s: float
    batch_limit: int = BATCH_LIMIT
    known: dict[str, _Known] = field(default_factory=dict)
    dirty: dict[str, _Owed] = field(default_factory=dict)
    inflight: dict[str, _Owed] = field(default_factory=dict)
    summary: _Summary | None = None
    summary_dirty: bool = False
    summary_inflight: bool = False
    closed: bool = False
    sweep_owed: bool = False  # look for hashes of ours the engine no longer has (see writer)
    rewrites: int = 0
    dropped_refreshes: int = 0
    # Tokens a rewrite still owes Redis: the alive key waits until they are all written, so a
    # worker never sees a fresh alive key next to hashes Redis kept from before an outage.
    rewrite_left: set[str] = field(default_factory=set)
    _stamp: str | None = None  # what our last successful transaction left in Redis
    _stamps: int = 0
    _tombs: dict[str, float] = field(default_factory=dict)  # removed token -> key expiry, in order

    # ---- input --------------------------------------------------------------------------------

    def submit(self, writes: Iterable[Write], now: float) -> None:
        for w in writes:
            token = w.token
            prev = self.known.get(token)
            if not w.publish:
                # updated_at-only refresh: merge into the latest full state, never write it alone.
                if prev is None or prev.expire_s is not None:
                    self.dropped_refreshes += 1
                    continue
                prev.fields = {**prev.fields, **w.fields}
                self._owe(token, _Owed())
                continue
            readded = prev is not None and prev.expire_s is not None and w.expire_s is None
            self._tombs.pop(token, None)
            if w.expire_s is not None:
                self._tombs[token] = now + w.expire_s  # constant TTL: insertion order is expiry order
            self.known[token] = _Known(
                dict(w.fields), w.recv_at, w.exch_ts, w.expire_s, now if w.expire_s is not None else 0.0
            )
            persist = w.expire_s is None and (w.persist or readded)
            self._owe(token, _Owed(publish=True, persist=persist))

    def submit_summary(self, fields: Mapping[str, str], beat_at: float) -> None:
        """The loop's heartbeat: only this may (re)start the alive key's TTL."""
        self.summary = _Summary(dict(fields), beat_at)
        self.summary_dirty = True

    def rewrite(self, now: float) -> None:
        """Redis may hold anything: owe every token its full state (with PERSIST) and the summary."""
        self.rewrites += 1
        self.sweep_owed = True
        self._prune(now)
        for token, k in self.known.items():
            self._owe(token, _Owed(persist=k.expire_s is None))
        self.rewrite_left = set(self.known)
        if self.summary is not None:
            self.summary_dirty = True

    # ---- output -------------------------------------------------------------------------------

    def take(self, now: float, *, limit: int | None = None) -> Batch | None:
        """The next transaction (at most ``limit`` token writes, ``batch_limit`` by default), or
        None when nothing is owed (or after the final one)."""
        if limit is None:
            limit = self.batch_limit
        self._prune(now)
        if self.closed or (not self.dirty and not self.summary_dirty):
            return None
        writes: list[TokenWrite] = []
        while self.dirty and len(writes) < limit:
            # Take a slice at a time: popping the dict's first item in a loop rescans the
            # deleted slots each time (quadratic in a 5,000-token rewrite).
            for token, owed in list(itertools.islice(self.dirty.items(), limit - len(writes))):
                del self.dirty[token]
                self.rewrite_left.discard(token)
                w = self._write(token, owed, now)
                if w is not None:
                    writes.append(w)
                    self.inflight[token] = owed
        summary = None
        if self.summary_dirty and self.summary is not None and not self.rewrite_left and not self.sweep_owed:
            summary = SummaryWrite(self.summary.fields, self._alive(), self.alive_px(now))
            self.summary_dirty = False
            self.summary_inflight = True
        if not writes and summary is None:
            return None
        return Batch(tuple(writes), summary, self._next_stamp(), self._stamp)

    def take_final(self, now: float) -> Batch:
        """Everything owed or in flight, the summary without the alive key (deleted), and no
        further batch after it: the shutdown transaction."""
        self.closed = True
        for token, owed in self.inflight.items():
            self._owe(token, owed)
        self.inflight = {}
        writes = []
        for token, owed in self.dirty.items():
            w = self._write(token, owed, now)
            if w is not None:
                writes.append(w)
        self.dirty = {}
        summary = None
        if self.summary is not None:
            summary = SummaryWrite(self.summary.fields, self._alive(), None, delete_alive=True)
        return Batch(tuple(writes), summary, self._next_stamp(), None, final=True)

    def done(self, batch: Batch, seen: str | None, now: float) -> bool:
        """A transaction succeeded; ``seen`` is the stamp Redis held before it. True when that was
        not ours: the server changed under us and a full rewrite is now owed."""
        for w in batch.writes:
            self.inflight.pop(w.token, None)
        if batch.summary is not None:
            self.summary_inflight = False
        self._stamp = batch.stamp
        if batch.expect is not None and seen != batch.expect:
            self.rewrite(now)
            return True
        return False

    def failed(self, batch: Batch, now: float) -> None:
        """A transaction failed (it may or may not have landed): put it back and rewrite all."""
        for w in batch.writes:
            owed = self.inflight.pop(w.token, None)
            if owed is not None:
                self._owe(w.token, owed)
        if batch.summary is not None:
            self.summary_inflight = False
            self.summary_dirty = True
        self._stamp = None
        self.rewrite(now)

    @property
    def sweep_due(self) -> bool:
        """A sweep is owed and can tell this run's hashes apart: the first summary has named the
        epoch (before it, sweeping would find nothing, and must not count as done)."""
        return self.sweep_owed and bool(self.epoch)

    def swept(self) -> None:
        """The writer has deleted the ``orphans`` Redis held: no sweep is owed until the next rewrite."""
        self.sweep_owed = False

    # ---- pacing -------------------------------------------------------------------------------

    def linger(self) -> bool:
        """Before a flush: wait for a burst to coalesce into one round trip, unless a full
        transaction is owed already (waiting would only delay it)."""
        return self.backlog < self.batch_limit

    def flush_again(self, batch: Batch, server_changed: bool) -> bool:
        """After a successful transaction: go on at once? Only when it was full (more is owed) or
        Redis changed under us (a rewrite is owed). What arrived during the round trip waits for
        the next wake-up and its linger, so a burst coalesces into one transaction instead of
        trickling out in many small ones (2.6x the flushes, measured)."""
        return server_changed or len(batch.writes) >= self.batch_limit

    # ---- derived ------------------------------------------------------------------------------

    def alive_px(self, now: float) -> int | None:
        """The alive key's TTL left from the heartbeat behind the current summary."""
        if self.summary is None:
            return None
        left = int((self.alive_ttl_s - (now - self.summary.beat_at)) * 1000)
        return left if left >= MIN_ALIVE_MS else None

    @property
    def epoch(self) -> str:
        """This run's epoch, as the latest summary carries it ("" before the first one)."""
        return self._alive()

    def orphans(self, tokens: Iterable[str], epochs: Iterable[str | None]) -> list[str]:
        """Of the quote hashes found in Redis (token, its ``epoch`` field), those this run wrote
        and no longer knows: after a restore from an older snapshot they would say ``live``
        under the current epoch for a token long removed, so they must go."""
        epoch = self.epoch
        if not epoch:
            return []
        return [t for t, e in zip(tokens, epochs, strict=True) if e == epoch and t not in self.known]

    @property
    def backlog(self) -> int:
        """Tokens whose latest state is not known to be in Redis."""
        return len(self.dirty) + sum(1 for t in self.inflight if t not in self.dirty)

    # ---- internals ----------------------------------------------------------------------------

    def _owe(self, token: str, owed: _Owed) -> None:
        cur = self.dirty.get(token)
        if cur is None:
            self.dirty[token] = _Owed(owed.publish, owed.persist)
        else:
            cur.merge(owed)

    def _write(self, token: str, owed: _Owed, now: float) -> TokenWrite | None:
        k = self.known.get(token)
        if k is None:
            return None
        expire_s = None
        if k.expire_s is not None:
            left = math.ceil(k.expire_s - (now - k.removed_at))
            if left <= 0:  # its key has expired in Redis by now: nothing to write
                return None
            expire_s = left
        return TokenWrite(
            token,
            k.fields,
            owed.publish,
            owed.persist and expire_s is None,
            expire_s,
            k.recv_at,
            k.exch_ts,
        )

    def _prune(self, now: float) -> None:
        """Forget removed tokens whose keys have expired in Redis by now (oldest first)."""
        tombs = self._tombs
        while tombs:
            token, expires_at = next(iter(tombs.items()))
            if expires_at > now:
                return
            del tombs[token]
            self.known.pop(token, None)
            if self.dirty.pop(token, None) is not None:
                # Its removal (the EXPIRE) never reached Redis, which may still hold an older hash
                # without a TTL: the sweep deletes it.
                self.sweep_owed = True
            self.rewrite_left.discard(token)  # nothing is owed for it any more: the alive key must not wait

    def _alive(self) -> str:
        return self.summary.fields.get("epoch", "") if self.summary is not None else ""

    def _next_stamp(self) -> str:
        self._stamps += 1
        return f"{self.stamp_prefix}:{self._stamps}"
