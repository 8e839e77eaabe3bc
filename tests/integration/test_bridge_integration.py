"""The ws_cache.json bridge end to end: simulator -> real sidecar -> real redis-server -> the real
``python -m sidecar bridge`` process -> the file, read the way the maker bot's workers read it."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import pytest
import redis
from pmsim import Simulator

from devkit.procs import BridgeProcess, SidecarProcess
from devkit.redis_server import RedisServer
from devkit.wait import wait_for

pytestmark = pytest.mark.integration

P = "pm:"
Cache = dict[str, Any]


def start_live(
    redis_server: RedisServer,
    sim: Simulator,
    sidecar: Callable[..., SidecarProcess],
    bridge: Callable[..., BridgeProcess],
    markets: int,
    heartbeat_s: float = 30.0,
    **settings: Any,
) -> tuple[list[str], redis.Redis, SidecarProcess, BridgeProcess]:
    """Tokens of new markets desired, sidecar and bridge running, every token's entry in the file
    with the simulator's true top of book."""
    ids = [sim.add_market() for _ in range(markets)]
    tokens = [t for m in ids for t in sim.markets()[m]]
    r = redis_server.client()
    r.sadd(P + "desired", *tokens)
    proc = sidecar(**settings)
    cache = bridge(heartbeat_s)
    wait_for(lambda: all(matches_truth(cache, sim, t) for t in tokens), 15, what="every entry = truth")
    return tokens, r, proc, cache


def matches_truth(cache: BridgeProcess, sim: Simulator, token: str) -> bool:
    entry = cache.entry(token)
    top = sim.truth(token)
    return (
        entry is not None
        and entry["quote_status"] == "live"
        and entry["best_bid"] == float(top.bid)
        and entry["best_ask"] == float(top.ask)
    )


def zeroed(entry: dict[str, Any] | None) -> bool:
    return entry is not None and (entry["best_bid"], entry["best_ask"], entry["price"]) == (0.0, 0.0, 0.0)


def all_not_alive(cache: BridgeProcess, tokens: list[str]) -> bool:
    doc = cache.read()
    return doc is not None and all(
        zeroed(doc["tokens"].get(t)) and doc["tokens"][t]["sidecar_alive"] is False for t in tokens
    )


# ---- tests ----------------------------------------------------------------------------------------


def test_the_file_always_parses_and_follows_heavy_updates(redis_server, sim, sidecar, bridge) -> None:
    tokens, _, _, cache = start_live(redis_server, sim, sidecar, bridge, markets=10)
    sim.start_activity(2000.0, tokens=tokens)
    reads = 0
    stamps: set[str] = set()
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        doc = cache.read()  # json.loads raises on a partial file
        assert doc is not None and set(doc["tokens"]) == set(tokens)
        stamps.add(doc["updated_at"])
        reads += 1
        time.sleep(0.002)
    sim.stop_activity()
    assert reads > 500
    assert len(stamps) >= 12  # rewritten about every 0.2 s while being read
    wait_for(lambda: all(matches_truth(cache, sim, t) for t in tokens), 3, what="the file = truth")


def test_a_change_in_redis_reaches_the_file_within_half_a_second(redis_server, sim, sidecar, bridge) -> None:
    tokens, r, _, cache = start_live(redis_server, sim, sidecar, bridge, markets=2)
    token = tokens[0]
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(P + "quote:" + token)
    for i in range(10):
        top = sim.truth(token)
        sim.price_change([(token, "BUY", top.bid, str(Decimal(top.bid_size) + 1 + i))])
        msg = wait_for(lambda: pubsub.get_message(timeout=0.05), 3, what="the push")
        in_redis = time.monotonic()
        seq = int(orjson.loads(msg["data"])["seq"])
        wait_for(lambda s=seq: cache.entry(token)["seq"] >= s, 2, interval=0.005, what="the file's seq")
        assert time.monotonic() - in_redis < 0.5
    pubsub.close()


def test_a_dropped_socket_zeroes_prices_within_a_second_and_holds_updated_at(
    redis_server, sim, sidecar, bridge
) -> None:
    tokens, _, _, cache = start_live(redis_server, sim, sidecar, bridge, markets=2, confirm_timeout_s=2)
    token = tokens[0]
    before = cache.entry(token)
    assert before is not None and before["best_bid"] > 0
    conn = sim.conn_for(token)
    assert conn is not None
    sim.mute(token, subscribes=1)  # the re-subscription after the drop stays silent: stale until a redrive
    dropped = time.monotonic()
    sim.drop(conn.id)
    wait_for(lambda: zeroed(cache.entry(token)), 1.0, interval=0.005, what="0.0 prices after the drop")
    assert time.monotonic() - dropped < 1.0
    held = cache.entry(token)
    assert held["quote_status"] == "stale" and held["sidecar_alive"] is True
    assert held["updated_at"] == before["updated_at"]
    # Until the redrive brings a fresh book, every read shows 0.0 and the old confirmation.
    while (entry := cache.entry(token))["quote_status"] != "live":
        assert zeroed(entry) and entry["updated_at"] == before["updated_at"], entry
        assert time.monotonic() - dropped < 15, "never live again"
        time.sleep(0.01)
    assert entry["updated_at"] > before["updated_at"]
    wait_for(lambda: matches_truth(cache, sim, token), 2, what="live prices again")


def test_resolved_tokens_carry_the_exit_keys_and_removed_tokens_leave(
    redis_server, sim, sidecar, bridge
) -> None:
    tokens, r, _, cache = start_live(redis_server, sim, sidecar, bridge, markets=2)
    market = sim.market_of(tokens[0])
    pair = sim.markets()[market]
    sim.resolve(market, pair[0])
    for token in pair:
        wait_for(lambda t=token: (cache.entry(t) or {}).get("status") == "resolved", 2, what="resolved")
        entry = cache.entry(token)
        assert entry["market_closed"] is True and zeroed(entry)
    others = [t for t in tokens if t not in pair]
    assert all("status" not in cache.entry(t) and "market_closed" not in cache.entry(t) for t in others)
    r.srem(P + "desired", others[0])
    r.publish(P + "desired:changed", "1")
    wait_for(lambda: others[0] not in cache.read()["tokens"], 1.0, interval=0.01, what="entry removed")
    assert set(cache.read()["tokens"]) == set(tokens) - {others[0]}


def test_a_token_never_live_gets_no_entry_until_it_is(redis_server, sim, sidecar, bridge) -> None:
    ids = [sim.add_market() for _ in range(2)]
    tokens = [t for m in ids for t in sim.markets()[m]]
    silent = tokens[0]
    sim.mute(silent, subscribes=1)  # its first subscription brings nothing: pending until a redrive
    r = redis_server.client()
    r.sadd(P + "desired", *tokens)
    sidecar(confirm_timeout_s=2)
    cache = bridge()
    others = tokens[1:]
    wait_for(lambda: all(matches_truth(cache, sim, t) for t in others), 15, what="the other entries")
    pending_since = time.monotonic()
    while r.hget(P + "quote:" + silent, "status") != "live":
        assert silent not in cache.read()["tokens"]  # pending: the scheduler must not start a worker
        time.sleep(0.01)
    assert time.monotonic() - pending_since > 0.5  # the bridge had several reads to get it wrong
    wait_for(lambda: matches_truth(cache, sim, silent), 1.0, what="its entry once live")


def test_heartbeat_rewrites_an_unchanged_file(redis_server, sim, sidecar, bridge) -> None:
    _, _, _, cache = start_live(redis_server, sim, sidecar, bridge, markets=1, heartbeat_s=1.0)
    first = cache.read()["updated_at"]
    wait_for(lambda: cache.read()["updated_at"] != first, 2.0, what="a heartbeat write")
    t1 = time.monotonic()
    second = cache.read()
    wait_for(lambda: cache.read()["updated_at"] != second["updated_at"], 2.0, interval=0.005)
    gap = time.monotonic() - t1
    assert 0.75 <= gap <= 1.5
    third = cache.read()["tokens"]

    def without_age(tokens: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {t: {k: v for k, v in e.items() if k != "age_s"} for t, e in tokens.items()}

    assert without_age(third) == without_age(second["tokens"])  # nothing but the stamp changed


def test_survives_a_redis_restart_without_persistence(redis_server, sim, sidecar, bridge) -> None:
    tokens, _, _, cache = start_live(redis_server, sim, sidecar, bridge, markets=2)
    redis_server.stop()
    wait_for(lambda: all_not_alive(cache, tokens), 8, what="entries not alive while Redis is down")
    redis_server.start()  # same port, empty: no desired set, no hashes
    # Neither the sidecar nor the bridge takes the empty set for a real one at once (60 s grace).
    wait_for(lambda: all(matches_truth(cache, sim, t) for t in tokens), 20, what="live entries again")
    assert cache.proc.poll() is None


def test_survives_a_sidecar_crash_and_restart(redis_server, sim, sidecar, bridge) -> None:
    tokens, _, proc, cache = start_live(redis_server, sim, sidecar, bridge, markets=2, alive_ttl_s=2)
    before = {t: cache.entry(t)["updated_at"] for t in tokens}
    killed = time.monotonic()
    proc.terminate(signal.SIGKILL)
    wait_for(lambda: all_not_alive(cache, tokens), 3.5, what="not alive after SIGKILL")
    assert time.monotonic() - killed < 2 + 1.0 + 0.5  # alive TTL + 1 s (+ the bridge's poll)
    assert all(cache.entry(t)["updated_at"] == before[t] for t in tokens)
    sidecar(alive_ttl_s=2)
    wait_for(lambda: all(matches_truth(cache, sim, t) for t in tokens), 15, what="live under the new run")
    assert all(cache.entry(t)["sidecar_alive"] is True for t in tokens)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_exits_0_leaving_zero_prices(redis_server, sim, sidecar, bridge, sig) -> None:
    tokens, _, _, cache = start_live(redis_server, sim, sidecar, bridge, markets=1)
    assert cache.terminate(sig) == 0
    assert all_not_alive(cache, tokens)


def test_readers_in_other_threads_never_see_a_missing_file(redis_server, sim, sidecar, bridge) -> None:
    """rename() replaces the file in one step: no moment without it, even under a write storm."""
    tokens, _, _, cache = start_live(redis_server, sim, sidecar, bridge, markets=5)
    sim.start_activity(1000.0, tokens=tokens)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                json.loads(cache.path.read_bytes())
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(2.0)  # the duration of the storm, not a wait for an outcome
    stop.set()
    for t in threads:
        t.join()
    sim.stop_activity()
    assert errors == []
