"""Redis truth end to end: a different Redis is noticed, and a stop never leaves `live` behind.

The real sidecar process against a real redis-server that is restarted from a snapshot taken
earlier (it holds our own older hashes, summary and stamp: redis-py reconnects silently and
nothing fails), and that is busy or down at SIGTERM.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from pmsim import Simulator

from devkit.redis_server import RedisServer, quiet_client
from devkit.scrape import wait_metric
from devkit.wait import wait_for, wait_for_none
from sidecar.config import Settings
from sidecar.core.engine import QuoteWrite
from sidecar.shell.redisconn import make_client
from sidecar.shell.writer import QuoteWriter
from tests.integration.common import BUSY_SCRIPT, P, all_match, hashes, move_truth, start_live

pytestmark = pytest.mark.integration


def test_redis_restarted_from_an_older_snapshot_gets_the_current_state_back(
    redis_server: RedisServer, sim: Simulator, sidecar
) -> None:
    tokens, r, proc = start_live(redis_server, sim, sidecar, 2)
    older = dict(zip(tokens, hashes(r, tokens), strict=True))
    snapshot = redis_server.save_rdb("older.rdb")  # our own hashes, summary and stamp, as of now
    for t in tokens:
        move_truth(sim, t, delta=7)
    wait_for(lambda: all_match(r, sim, tokens), 5, what="the moves in Redis")
    # No activity from here on: only a rewrite can put the newer state back.
    current = dict(zip(tokens, hashes(r, tokens), strict=True))
    assert all(current[t]["seq"] != older[t]["seq"] for t in tokens)
    epoch = r.get(P + "sidecar:alive")
    redis_server.stop()
    redis_server.start(rdb=snapshot)
    restarted = time.monotonic()
    r = redis_server.client()

    def differing() -> list[str]:
        """Tokens Redis holds older than before the restart, or not equal to the truth."""
        now = dict(zip(tokens, hashes(r, tokens), strict=True))
        out = [
            f"{t[:10]}… seq {now[t].get('seq')!r} < {current[t]['seq']!r}"
            for t in tokens
            if int(now[t].get("seq") or 0) < int(current[t]["seq"])
        ]
        out += [f"{t[:10]}… not live at the truth: {now[t]}" for t in tokens if not all_match(r, sim, [t])]
        if r.get(P + "sidecar:alive") != epoch:
            out.append(f"alive {r.get(P + 'sidecar:alive')!r}")
        return out

    wait_for_none(differing, 4, interval=0.05, what="the current state back in Redis")
    took = time.monotonic() - restarted
    assert "Redis does not hold our last write" in proc.log()
    print(f"older snapshot replaced {took:.2f}s after the restart")
    assert proc.terminate() == 0


def test_sigterm_with_redis_busy_exits_in_time_and_leaves_nothing_live(
    redis_server: RedisServer, sim: Simulator, sidecar
) -> None:
    """Writes are in flight behind a busy Redis when SIGTERM arrives: the process still exits
    within 2 s, and once Redis works again the final stale write is what it holds; no older
    transaction (setting `live` or the alive key) lands after it."""
    tokens, r, proc = start_live(redis_server, sim, sidecar, 5)
    sim.start_activity(200, tokens)
    wait_metric(proc, "pm_sidecar_events_total", 50, timeout=10, type="price_change")
    busy_s = 4.0
    slow = redis.Redis(port=redis_server.port, socket_timeout=busy_s + 10)
    blocker = threading.Thread(target=lambda: slow.eval(BUSY_SCRIPT, 0, busy_s), daemon=True)
    blocker.start()
    wait_metric(proc, "pm_sidecar_writer_backlog_tokens", 1, timeout=2)  # writes stuck behind it
    started = time.monotonic()
    code = proc.terminate(signal.SIGTERM, timeout=10)
    elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 2.0, f"stopped in {elapsed:.2f}s"
    assert blocker.is_alive(), "Redis was no longer busy at the exit: the test proved nothing"
    blocker.join(busy_s + 10)
    sim.stop_activity()
    r = quiet_client(redis_server)

    def final() -> bool:
        quotes = hashes(r, tokens)
        return not r.exists(P + "sidecar:alive") and all(
            q.get("status") == "stale" and q.get("reason") == "sidecar_stopped" for q in quotes
        )

    wait_for(final, 3, what="every quote stale (sidecar_stopped) and no alive key")
    # Whatever else the dead process had sent sat in Redis's buffers with the final write; give
    # Redis a moment to have processed all of it, then the final state must still be there.
    time.sleep(0.5)
    assert final(), f"overwritten after the final write: {hashes(r, tokens)[:2]}"
    assert r.hget(P + "sidecar", "live") == "0"


def test_sigterm_with_redis_down_exits_in_time(redis_server: RedisServer, sim: Simulator, sidecar) -> None:
    _, _, proc = start_live(redis_server, sim, sidecar, 1)
    redis_server.stop()
    wait_for(lambda: proc.http_get("/healthz")[0] == 503, 5, what="the writer noticing Redis is gone")
    started = time.monotonic()
    assert proc.terminate(signal.SIGTERM, timeout=10) == 0
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"stopped in {elapsed:.2f}s"


class GatedClient:
    """A real client for the writer whose next transaction waits at ``gate`` before it is sent."""

    def __init__(self, client: redis.Redis, gate: list[Callable[[], None]]) -> None:
        self._client = client
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def pipeline(self, transaction: bool = True) -> Any:
        pipe = self._client.pipeline(transaction=transaction)
        if transaction and self._gate:
            wait = self._gate.pop()
            execute = pipe.execute

            def gated(**kwargs: Any) -> Any:
                wait()
                return execute(**kwargs)

            pipe.execute = gated  # type: ignore[method-assign]
        return pipe


def test_a_transaction_sent_after_the_final_one_never_lands(redis_server: RedisServer) -> None:
    """The writer thread took a batch (a `live` change and the alive key) before the stop began
    but sends it only after the final write landed: the final write has killed its connection and
    no new one may open, so Redis keeps the final state."""
    gate: list[Callable[[], None]] = []
    r = redis_server.client()

    def factory(**kwargs: Any) -> GatedClient:
        return GatedClient(make_client(Settings(redis_url=redis_server.url, _env_file=None), **kwargs), gate)

    writer = QuoteWriter(factory, P, 5, 0)
    writer.start()
    key = P + "quote:" + TOKEN
    writer.submit([QuoteWrite(TOKEN, fields(1, "live"), True)])
    writer.submit_summary({"epoch": "e1", "live": "1"})
    wait_for(lambda: r.exists(P + "sidecar:alive"), 3, what="first write and alive key")
    entered = threading.Event()

    def hold() -> None:
        entered.set()
        wait_for(lambda: r.hget(key, "status") == "stale", 5, what="the final write landing first")

    gate.append(hold)
    writer.submit([QuoteWrite(TOKEN, fields(2, "live"), True)])
    writer.submit_summary({"epoch": "e1", "live": "1"})
    assert entered.wait(3), "the writer thread never took its batch"
    writer.submit([QuoteWrite(TOKEN, fields(3, "stale"), True)])
    writer.submit_summary({"epoch": "e1", "live": "0"})
    assert writer.stop(1.0) is True
    writer._thread.join(5)
    assert not writer._thread.is_alive()
    assert r.hgetall(key) == fields(3, "stale"), "a transaction taken before the stop landed after it"
    assert not r.exists(P + "sidecar:alive")
    assert r.hget(P + "sidecar", "live") == "0"


TOKEN = "4242"


def fields(seq: int, status: str) -> dict[str, str]:
    return {"bid": "0.40", "ask": "0.60", "seq": str(seq), "status": status, "epoch": "e1"}
