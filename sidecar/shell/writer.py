"""The Redis side of quotes: a thin thread around the coalescing rules in ``sidecar.core.coalesce``.

The engine hands over writes without ever waiting; the rules decide what is owed (always a
token's full latest state), this thread moves it: one MULTI/EXEC per batch (a subscriber that
receives seq N and then reads the hash sees seq >= N), each transaction also swapping the writer's
stamp key so that a Redis holding anything other than our last write (restart from an older
snapshot, failover, flush) is noticed and everything is rewritten.

Stopping never waits behind a slow Redis: the final transaction goes on a fresh connection and
first kills every connection this writer opened (so no transaction still queued on them can land
after it), then writes every owed state and the summary and deletes the alive key, in one EXEC.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from redis.connection import AbstractConnection

from sidecar.core.coalesce import Batch, Coalescer, Write
from sidecar.core.ratelog import RateLimitedLog
from sidecar.shell.metrics import Metrics

log = logging.getLogger("sidecar.shell.writer")

MAX_CONN_IDS = 64  # writer connections remembered for the shutdown kill (newest kept)


@dataclass(frozen=True, slots=True)
class WriterState:
    """What the summary and the metrics report about the writer."""

    redis_up: bool
    backlog: int  # tokens whose latest state is not known to be in Redis
    errors: int  # failed connects and transactions so far


class QuoteWriter:
    def __init__(
        self,
        client_factory: Callable[..., redis.Redis],
        prefix: str,
        alive_ttl_s: float,
        flush_ms: float,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``client_factory(**redis_kwargs)`` builds a client; the writer passes its connect hook
        and, for the final transaction, short timeouts."""
        self._factory = client_factory
        self._prefix = prefix
        self._alive_key = prefix + "sidecar:alive"
        self._stamp_key = prefix + "sidecar:stamp"
        self._flush_s = flush_ms / 1000.0
        self._metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._core = Coalescer(uuid.uuid4().hex[:12], alive_ttl_s)
        self._conn_ids: list[int] = []
        self._closing = False
        self._client: redis.Redis | None = None
        self._rlog = RateLimitedLog(log)
        self.connected = False
        self.ever_connected = threading.Event()
        self.errors = 0
        self.flushes = 0
        self.written = 0
        self.server_changes = 0
        self.alive_until: float | None = None  # monotonic expiry of our last alive-key SET (metrics)
        self._thread = threading.Thread(target=self._run, name="redis-writer", daemon=True)

    # ---- called from the engine thread -----------------------------------------------------

    def submit(self, writes: Iterable[Write]) -> None:
        if not writes:
            return
        with self._lock:
            self._core.submit(writes, self._clock())
        self._wake.set()

    def submit_summary(self, summary: dict[str, str], beat_at: float | None = None) -> None:
        """The loop's heartbeat (``beat_at``: its monotonic time): the alive key lives at most
        ``alive_ttl_s`` past the latest one, however often the summary is rewritten."""
        with self._lock:
            self._core.submit_summary(summary, self._clock() if beat_at is None else beat_at)
        self._wake.set()

    @property
    def backlog(self) -> int:
        with self._lock:
            return self._core.backlog

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, deadline_s: float = 1.2) -> bool:
        """The final transaction, within the deadline whatever Redis does. True if it landed."""
        end = time.monotonic() + deadline_s
        with self._lock:
            self._closing = True  # no new connection and no new batch from the writer thread
            ids = list(self._conn_ids)
            batch = self._core.take_final(self._clock())
        self._halt.set()
        self._wake.set()
        while True:
            left = end - time.monotonic()
            if left < 0.05:
                return False
            try:
                self._send_final(ids, batch, left)
                self.alive_until = batch.alive_until(time.monotonic(), self.alive_until)  # deleted
                return True
            except redis.RedisError as exc:
                log.warning("final write to Redis failed: %s", exc)
                time.sleep(min(0.05, max(0.0, end - time.monotonic())))

    def _send_final(self, ids: list[int], batch: Batch, timeout_s: float) -> None:
        """Kill our other connections, then the final MULTI/EXEC, all sent in one go on a fresh
        connection without a handshake round trip (RESP2, no name, no lib info; only a configured
        password still costs its AUTH round trip). Even behind a busy Redis the bytes are out
        before the deadline, and the kills run before the transaction: a transaction still
        queued on a killed connection is dropped by Redis with it."""
        client = self._factory(
            socket_timeout=timeout_s,
            socket_connect_timeout=min(timeout_s, 2.0),
            client_name=None,
            driver_info=None,
            protocol=2,  # RESP3 would start with HELLO and wait for its reply
        )
        try:
            pipe = client.pipeline(transaction=False)
            self._queue(pipe, batch)
            cmds: list[tuple[Any, ...]] = [("CLIENT", "KILL", "ID", cid) for cid in ids]
            cmds += [("MULTI",), *(args for args, _ in pipe.command_stack), ("EXEC",)]
            conn = client.connection_pool.get_connection()
            try:
                conn.send_packed_command(conn.pack_commands(cmds))
                for _ in range(len(cmds) - 1):
                    # An error here is a connection already gone, or a refused command (which
                    # aborts the EXEC below).
                    with contextlib.suppress(redis.ResponseError):
                        conn.read_response()
                conn.read_response()  # EXEC: raises if the transaction was aborted
            finally:
                conn.disconnect()
                client.connection_pool.release(conn)
        finally:
            client.close()

    # ---- writer thread ----------------------------------------------------------------------------

    def _on_connect(self, conn: AbstractConnection) -> None:
        """Every connection the writer opens (also redis-py's silent reconnects) is recorded by id
        for the shutdown kill; none is opened once stopping has begun."""
        conn.on_connect()
        cid: int | None
        try:
            conn.send_command("CLIENT", "ID")
            cid = int(conn.read_response())
        except redis.ResponseError:
            cid = None  # CLIENT denied: the shutdown cannot fence this connection
        with self._lock:
            if self._closing:
                raise redis.ConnectionError("the Redis writer is stopping")
            if cid is not None:
                self._conn_ids.append(cid)
                del self._conn_ids[:-MAX_CONN_IDS]

    def _connect(self) -> redis.Redis:
        client = self._factory(redis_connect_func=self._on_connect)
        client.ping()
        return client

    def _run(self) -> None:
        backoff = 0.1
        while not self._halt.is_set():
            if self._client is None:
                try:
                    self._client = self._connect()
                except redis.RedisError as exc:
                    self._note_error("connect", exc)
                    self._halt.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.1
                log.info("connected to Redis" if not self.ever_connected.is_set() else "Redis is back")
                self.connected = True
                self.ever_connected.set()
            self._wake.wait(0.5)
            if self._halt.is_set():
                break
            self._wake.clear()
            with self._lock:
                linger = self._flush_s > 0 and self._core.linger()
            if linger:
                self._halt.wait(self._flush_s)  # let a burst coalesce into one round trip
            try:
                self._flush(self._client)
            except redis.RedisError as exc:
                self._note_error("write", exc)
                with contextlib.suppress(Exception):
                    self._client.close()  # its pooled sockets; a new client is made on reconnect
                self._client = None
                self._wake.set()

    def _note_error(self, what: str, exc: Exception) -> None:
        self.errors += 1
        if self._halt.is_set():
            return
        if self.connected or self.errors == 1 or self.errors % 100 == 0:
            log.warning("Redis %s failed (%d errors so far): %s", what, self.errors, exc)
        self.connected = False

    def _flush(self, client: redis.Redis) -> None:
        """Write batches until nothing is owed. Raises on a failed transaction (put back first).
        A sweep owed (after a failure, or a batch that found Redis changed) runs first: the
        summary and the alive key wait for it."""
        while True:
            with self._lock:
                if self._closing:
                    return
                sweep = self._core.sweep_due
            if sweep:
                self._sweep(client)
            with self._lock:
                if self._closing:
                    return
                batch = self._core.take(self._clock())
                sweep = self._core.sweep_due  # take() may have forgotten a removal never written
            if batch is None:
                if sweep:
                    continue
                return
            try:
                seen = self._execute(client, batch)
            except redis.RedisError:
                with self._lock:
                    self._core.failed(batch, self._clock())
                raise
            with self._lock:
                changed = self._core.done(batch, seen, self._clock())
                again = self._core.flush_again(batch, changed)
                tokens = len(self._core.known)
            if not again:
                return
            if changed:
                self.server_changes += 1
                self._rlog.warning(
                    "server-changed",
                    time.monotonic(),
                    "Redis does not hold our last write (restart from an older snapshot, failover, "
                    "flush, or another writer on this prefix): rewriting the full state of %d tokens",
                    tokens,
                )

    def _sweep(self, client: redis.Redis) -> None:
        """After a rewrite was owed (Redis may be an older copy): delete the quote hashes of this
        run's epoch for tokens the writer no longer knows (removed, TTL long gone), which an older
        snapshot brings back as `live`. Runs before the batches, in this thread, so a token added
        meanwhile is written after any delete of its old hash."""
        prefix = self._prefix + "quote:"
        deleted = 0
        for keys in _scan_pages(client, prefix + "*"):
            tokens = [(k.decode() if isinstance(k, bytes) else k)[len(prefix) :] for k in keys]
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hget(key, "epoch")
            epochs = [e.decode() if isinstance(e, bytes) else e for e in pipe.execute()]
            with self._lock:
                doomed = self._core.orphans(tokens, epochs)
            if doomed:
                client.delete(*(prefix + t for t in doomed))
                deleted += len(doomed)
        with self._lock:
            self._core.swept()
        if deleted:
            log.warning("deleted %d quote hashes of removed tokens that Redis had brought back", deleted)

    def _queue(self, pipe: Any, batch: Batch) -> None:
        """Queue one batch: stamp swap, token hashes (hash and message from one snapshot), summary."""
        pipe.set(self._stamp_key, batch.stamp, get=True)
        quote_prefix = self._prefix + "quote:"
        dumps = orjson.dumps
        for w in batch.writes:
            key = quote_prefix + w.token
            pipe.hset(key, mapping=w.fields)
            if w.persist:
                pipe.persist(key)
            if w.expire_s is not None:
                pipe.expire(key, w.expire_s)
            if w.publish:
                pipe.publish(key, dumps(w.message()))
        s = batch.summary
        if s is not None:
            pipe.hset(self._prefix + "sidecar", mapping=s.fields)
            if s.delete_alive:
                pipe.delete(self._alive_key)
            elif s.alive_px is not None:
                pipe.set(self._alive_key, s.alive, px=s.alive_px)

    def _execute(self, client: redis.Redis, batch: Batch) -> str | None:
        """Run one batch as MULTI/EXEC; returns the stamp Redis held before it."""
        pipe = client.pipeline(transaction=True)
        self._queue(pipe, batch)
        started = time.monotonic()
        results = pipe.execute()
        done = time.monotonic()
        seen = results[0]
        self.flushes += 1
        self.written += len(batch.writes)
        self.connected = True
        self.alive_until = batch.alive_until(started, self.alive_until)
        m = self._metrics
        if m is not None:
            m.redis_write_latency.observe(done - started)
            if batch.writes:
                m.flush_size.observe(len(batch.writes))
            wall_ms = time.time() * 1000.0
            for w in batch.writes:
                if w.publish and w.recv_at is not None:
                    m.receive_to_redis.observe(done - w.recv_at)
                    if w.exch_ts is not None:
                        m.exchange_to_redis.observe(max(0.0, (wall_ms - w.exch_ts) / 1000.0))
        return seen.decode() if isinstance(seen, bytes) else seen

    def snapshot(self) -> WriterState:
        return WriterState(self.connected, self.backlog, self.errors)


def _scan_pages(client: redis.Redis, match: str) -> Iterator[list[Any]]:
    """SCAN in pages of about 1000 keys (never KEYS: it blocks Redis)."""
    cursor: int = 0
    while True:
        cursor, keys = client.scan(cursor, match=match, count=1000)
        if keys:
            yield keys
        if not cursor:
            return
