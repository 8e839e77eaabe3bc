"""sidecar.shell.writer, the parts the Redis-truth tests of test_writer.py do not look at: the
metrics each transaction feeds, the alive key's expiry it reports, the flush-ms linger that makes
a burst one transaction, the connection ids recorded for the shutdown kill, the SCAN pages of the
sweep, and the typed state it reports. fakeredis for Redis; no network.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis

from devkit.wait import wait_for
from sidecar.core.actions import QuoteWrite
from sidecar.shell import writer as writer_mod
from sidecar.shell.metrics import Metrics
from sidecar.shell.writer import QuoteWriter, WriterState, _scan_pages

P = "pm:"


def fields(seq: int, status: str = "live") -> dict[str, str]:
    return {"bid": "0.40", "ask": "0.60", "seq": str(seq), "status": status, "epoch": "e1", "updated_at": "1"}


def count(histogram: Any) -> float:
    for metric in histogram.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                return float(sample.value)
    raise AssertionError("no _count sample")


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def make(server: fakeredis.FakeServer) -> Iterator[Any]:
    made: list[QuoteWriter] = []

    def build(flush_ms: float = 0.0, metrics: Metrics | None = None, ttl: float = 5.0) -> QuoteWriter:
        w = QuoteWriter(lambda **_: fakeredis.FakeRedis(server=server), P, ttl, flush_ms, metrics)
        made.append(w)
        w.start()
        return w

    yield build
    for w in made:
        w.stop(0.3)


def test_each_transaction_feeds_the_latency_and_size_metrics(server: fakeredis.FakeServer, make: Any) -> None:
    metrics = Metrics(lambda: None)  # type: ignore[arg-type,return-value]  # the engine side is not read here
    w = make(metrics=metrics)
    recv_at = time.monotonic() - 0.5
    exch_ts = int(time.time() * 1000) - 2000
    w.submit([QuoteWrite("1", fields(1), True, recv_at=recv_at, exch_ts=exch_ts)])
    wait_for(lambda: count(metrics.receive_to_redis) == 1, 3, what="receive -> Redis observed")
    assert count(metrics.exchange_to_redis) == 1
    assert count(metrics.redis_write_latency) >= 1
    assert count(metrics.flush_size) == 1
    sums = {s.name: s.value for m in metrics.receive_to_redis.collect() for s in m.samples}
    assert 0.5 <= sums["pm_sidecar_receive_to_redis_seconds_sum"] < 1.5, "measured from the frame's receipt"
    sums = {s.name: s.value for m in metrics.exchange_to_redis.collect() for s in m.samples}
    assert 2.0 <= sums["pm_sidecar_exchange_to_redis_seconds_sum"] < 3.0, "measured from the exchange stamp"
    w.submit([QuoteWrite("1", {"updated_at": "2"}, False)])  # a refresh: no latency sample
    wait_for(lambda: count(metrics.flush_size) == 2, 3, what="the refresh written")
    assert count(metrics.receive_to_redis) == 1


def test_alive_until_follows_the_key_it_wrote(server: fakeredis.FakeServer, make: Any) -> None:
    w = make(ttl=5.0)
    assert w.alive_until is None
    beat = time.monotonic()
    w.submit_summary({"epoch": "e1"}, beat_at=beat)
    wait_for(lambda: w.alive_until is not None, 3, what="the alive key written")
    assert w.alive_until is not None and beat + 4.5 < w.alive_until <= time.monotonic() + 5.0
    pttl = fakeredis.FakeRedis(server=server).pttl(P + "sidecar:alive")
    assert 4000 < pttl <= 5000
    assert w.stop(1.0) is True
    assert w.alive_until is None, "the final transaction deleted the key"


def test_a_burst_within_flush_ms_is_one_transaction(server: fakeredis.FakeServer, make: Any) -> None:
    w = make(flush_ms=300.0)
    w.submit([QuoteWrite("1", fields(1), True)])
    time.sleep(0.05)  # the burst's second change comes 50 ms after the first (inside flush_ms)
    w.submit([QuoteWrite("2", fields(1), True)])
    r = fakeredis.FakeRedis(server=server)
    wait_for(lambda: r.exists(P + "quote:1") and r.exists(P + "quote:2"), 3, what="both written")
    assert w.flushes == 1, f"{w.flushes} transactions for one burst"


def test_a_full_batch_is_not_held_back_by_flush_ms(server: fakeredis.FakeServer, make: Any) -> None:
    w = make(flush_ms=5000.0)
    w._core.batch_limit = 3
    t0 = time.monotonic()
    w.submit([QuoteWrite(str(i), fields(1), True) for i in range(4)])
    r = fakeredis.FakeRedis(server=server)
    wait_for(lambda: r.exists(P + "quote:0"), 3, what="the full batch written")
    assert time.monotonic() - t0 < 2.0, "a full batch waited for flush_ms"


class FakeConnection:
    def __init__(self, client_id: int | Exception) -> None:
        self._id = client_id
        self.connected = False

    def on_connect(self) -> None:
        self.connected = True

    def send_command(self, *args: Any) -> None:
        assert args == ("CLIENT", "ID")

    def read_response(self) -> Any:
        if isinstance(self._id, Exception):
            raise self._id
        return self._id


def test_every_connection_is_recorded_for_the_shutdown_kill(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_mod, "MAX_CONN_IDS", 3)
    w = QuoteWriter(lambda **_: fakeredis.FakeRedis(), P, 5.0, 0.0)
    for cid in (11, 12):
        w._on_connect(FakeConnection(cid))  # type: ignore[arg-type]
    w._on_connect(FakeConnection(redis.ResponseError("NOPERM")))  # type: ignore[arg-type]
    assert w._conn_ids == [11, 12], "a denied CLIENT ID is not a connection id"
    for cid in (13, 14):
        w._on_connect(FakeConnection(cid))  # type: ignore[arg-type]
    assert w._conn_ids == [12, 13, 14], "the newest are kept"
    assert w.stop(0.2) in (True, False)
    conn = FakeConnection(15)
    with pytest.raises(redis.ConnectionError):
        w._on_connect(conn)  # type: ignore[arg-type]
    assert 15 not in w._conn_ids, "no connection may open once the final write is under way"


def test_scan_pages_yield_every_key_once(server: fakeredis.FakeServer) -> None:
    r = fakeredis.FakeRedis(server=server)
    for i in range(2500):
        r.hset(f"{P}quote:{i}", "epoch", "e1")
    r.set(P + "sidecar:alive", "e1")
    keys = [k for page in _scan_pages(r, P + "quote:*") for k in page]
    assert sorted(keys) == sorted(f"{P}quote:{i}".encode() for i in range(2500))


def test_the_state_it_reports_is_typed(make: Any) -> None:
    w = make()
    wait_for(lambda: w.connected, 3, what="connected")
    assert w.snapshot() == WriterState(redis_up=True, backlog=0, errors=0)
