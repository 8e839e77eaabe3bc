"""The Redis side of quotes: coalescing, pipelined, atomic, and unbothered by outages.

The engine hands over writes without ever waiting. Pending writes are coalesced per token
(latest state wins), so a slow or absent Redis costs bounded memory (one entry per token) and
never backs up the sockets. Each flush is one MULTI/EXEC round trip: a subscriber that receives
seq N and then reads the hash sees seq >= N. The writer also keeps the latest full state of
every token so that after a Redis restart it can put everything back within seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis

from sidecar.engine import QuoteWrite
from sidecar.metrics import Metrics

log = logging.getLogger("sidecar.writer")

MAX_BATCH = 2000  # token writes per MULTI/EXEC; bigger backlogs take several round trips


class QuoteWriter:
    def __init__(
        self,
        client_factory: Callable[[], redis.Redis],
        prefix: str,
        alive_ttl_s: int,
        flush_ms: float,
        metrics: Metrics | None = None,
    ) -> None:
        self._factory = client_factory
        self._prefix = prefix
        self._alive_ttl = alive_ttl_s
        self._flush_s = flush_ms / 1000.0
        self._metrics = metrics
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pending: dict[str, QuoteWrite] = {}
        self._state: dict[str, dict[str, str]] = {}  # latest full fields, for rewrites
        self._summary: dict[str, str] | None = None
        self._summary_dirty = False
        self._epoch = ""
        self._client: redis.Redis | None = None
        self._needs_rewrite = False
        self._summary_written = False
        self.connected = False
        self.ever_connected = threading.Event()
        self.errors = 0
        self.flushes = 0
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="redis-writer", daemon=True)

    # ---- called from the engine thread -----------------------------------------------------

    def submit(self, writes: list[QuoteWrite]) -> None:
        if not writes:
            return
        with self._lock:
            pending = self._pending
            state = self._state
            for w in writes:
                token = w.token
                prev = pending.get(token)
                if w.publish:
                    if w.expire_s is not None:
                        state.pop(token, None)
                    else:
                        state[token] = w.fields
                    if prev is not None and prev.persist and w.expire_s is None:
                        w.persist = True
                    pending[token] = w
                else:
                    full = state.get(token)
                    if full is not None:
                        full.update(w.fields)
                    if prev is not None and prev.publish:
                        prev.fields.update(w.fields)  # fold updated_at into the pending change
                    else:
                        pending[token] = w
        self._wake.set()

    def submit_summary(self, summary: dict[str, str]) -> None:
        with self._lock:
            self._summary = summary
            self._epoch = summary.get("epoch", self._epoch)
            self._summary_dirty = True
        self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, deadline_s: float = 1.5, delete_alive: bool = True) -> bool:
        """Flush what is pending, delete the alive key, within the deadline. True on success."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=deadline_s)
        end = time.monotonic() + max(0.2, deadline_s / 2)
        ok = False
        while time.monotonic() < end:
            try:
                client = self._client or self._connect()
                self._flush(client)
                if delete_alive:
                    client.delete(self._prefix + "sidecar:alive")
                ok = True
                break
            except redis.RedisError as exc:
                log.warning("final flush to Redis failed: %s", exc)
                self._client = None
                time.sleep(0.1)
        return ok

    # ---- writer thread ----------------------------------------------------------------------------

    def _connect(self) -> redis.Redis:
        client = self._factory()
        client.ping()
        return client

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            if self._client is None:
                try:
                    self._client = self._connect()
                except redis.RedisError as exc:
                    self._note_error("connect", exc)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.1
                if self.ever_connected.is_set():
                    log.warning("Redis is back: rewriting the full state of %d tokens", len(self._state))
                    self._needs_rewrite = True
                else:
                    log.info("connected to Redis")
                self.connected = True
                self.ever_connected.set()
            self._wake.wait(0.5)
            if self._stop.is_set():
                break
            self._wake.clear()
            if self._flush_s > 0 and len(self._pending) < MAX_BATCH:
                time.sleep(self._flush_s)  # let a burst coalesce into one round trip
            try:
                self._flush(self._client)
            except redis.RedisError as exc:
                self._note_error("write", exc)
                self._client = None
                self.connected = False
                self._wake.set()

    def _note_error(self, what: str, exc: Exception) -> None:
        self.errors += 1
        if self.connected or self.errors == 1 or self.errors % 100 == 0:
            log.warning("Redis %s failed (%d errors so far): %s", what, self.errors, exc)
        self.connected = False

    def _flush(self, client: redis.Redis) -> None:
        with self._lock:
            batch = self._pending
            self._pending = {}
            summary = self._summary if self._summary_dirty else None
            self._summary_dirty = False
            if self._needs_rewrite:
                self._needs_rewrite = False
                for token, fields in self._state.items():
                    if token not in batch:
                        batch[token] = QuoteWrite(token, dict(fields), False, persist=True)
                if self._summary is not None:
                    summary = self._summary
        if not batch and summary is None:
            return
        items = list(batch.values())
        try:
            for start in range(0, max(len(items), 1), MAX_BATCH):
                self._write(client, items[start : start + MAX_BATCH], summary)
                summary = None
        except redis.RedisError:
            with self._lock:
                # Put back what did not land unless something newer arrived meanwhile.
                for w in items:
                    if w.token not in self._pending:
                        self._pending[w.token] = w
                if self._summary is not None:
                    self._summary_dirty = True
                self._needs_rewrite = True
            raise

    def _write(self, client: redis.Redis, items: list[QuoteWrite], summary: dict[str, str] | None) -> None:
        prefix = self._prefix
        quote_prefix = prefix + "quote:"
        pipe = client.pipeline(transaction=True)
        dumps = orjson.dumps
        for w in items:
            key = quote_prefix + w.token
            pipe.hset(key, mapping=w.fields)
            if w.persist:
                pipe.persist(key)
            if w.expire_s is not None:
                pipe.expire(key, w.expire_s)
            if w.publish:
                message = dict(w.fields)
                message["token"] = w.token
                pipe.publish(key, dumps(message))
        if summary is not None:
            pipe.hset(prefix + "sidecar", mapping=summary)
            pipe.set(prefix + "sidecar:alive", summary.get("epoch", ""), ex=self._alive_ttl)
        started = time.monotonic()
        results = pipe.execute()
        done = time.monotonic()
        if summary is not None:
            # HSET returns how many fields it created: after our first summary, anything but 0
            # means the hash vanished (restart, failover, flush): put everything back.
            if self._summary_written and results[-2]:
                log.warning("Redis lost our keys (restart or flush): rewriting the full state")
                with self._lock:
                    self._needs_rewrite = True
                self._wake.set()
            self._summary_written = True
        self.flushes += 1
        self.written += len(items)
        m = self._metrics
        if m is not None:
            m.redis_write_latency.observe(done - started)
            if items:
                m.flush_size.observe(len(items))
            wall_ms = time.time() * 1000.0
            for w in items:
                if w.publish and w.recv_at is not None:
                    m.receive_to_redis.observe(done - w.recv_at)
                    if w.exch_ts is not None:
                        m.exchange_to_redis.observe(max(0.0, (wall_ms - w.exch_ts) / 1000.0))

    def snapshot(self) -> dict[str, Any]:
        return {"redis_up": self.connected, "backlog": len(self._pending), "errors": self.errors}
