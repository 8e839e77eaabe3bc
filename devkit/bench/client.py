"""Benchmark of the consumer side: ``QuoteClient.get`` / ``get_many`` latency against a local Redis.

Baseline in the same run: the hand-written read from docs/redis-contract.md (one pipeline with
GET alive + HGETALL, dict in hand, no parsing), so the figure says what the typed client costs.

    python -m devkit.bench.client [--calls 20000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from devkit.redis_server import RedisServer
from sidecar.client import QuoteClient

TOKEN = "71321045679252212594626385532706912750332728571942532289631379312455583992563"


def fields(seq: int) -> dict[str, str]:
    return {
        "bid": "0.511",
        "ask": "0.514",
        "bid_size": "1520.5",
        "ask_size": "33",
        "ts": "1796050000000",
        "updated_at": str(int(time.time() * 1000)),
        "seq": str(seq),
        "epoch": "19a4c1f2e-7f3a",
        "status": "live",
        "reason": "",
        "source": "price_change",
        "market": "0x" + "ab" * 32,
        "tick_size": "0.001",
        "last_trade_price": "0.512",
        "last_trade_size": "10",
        "last_trade_side": "BUY",
        "last_trade_ts": "1796050000000",
    }


def timed(fn: Callable[[], object], calls: int) -> list[float]:
    for _ in range(min(1000, calls)):  # warm up connections and caches
        fn()
    out = []
    clock = time.perf_counter
    for _ in range(calls):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def report(name: str, samples: list[float], base: list[float] | None = None) -> float:
    samples = sorted(samples)
    med = statistics.median(samples) * 1e6
    p99 = samples[int(len(samples) * 0.99) - 1] * 1e6
    extra = ""
    if base is not None:
        extra = f"   ({med / (statistics.median(base) * 1e6):.2f}x the baseline median)"
    print(f"  {name:<44} median {med:8.1f} us   p99 {p99:8.1f} us{extra}")
    return med


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.bench.client", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server is not installed: this benchmark needs a real local Redis", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(binary, Path(tmp))
        server.start()
        try:
            return run(server, args.calls)
        finally:
            server.stop()


def run(server: RedisServer, calls: int) -> int:
    raw = redis.Redis(port=server.port, decode_responses=True)
    tokens = [str(int(TOKEN) + i) for i in range(140)]
    pipe = raw.pipeline(transaction=False)
    for i, token in enumerate(tokens):
        pipe.hset("pm:quote:" + token, mapping=fields(1000 + i))
    pipe.set("pm:sidecar:alive", "19a4c1f2e-7f3a")
    pipe.execute()
    client = QuoteClient(server.url)

    def baseline_one() -> object:
        p = raw.pipeline(transaction=False)
        p.get("pm:sidecar:alive")
        p.hgetall("pm:quote:" + TOKEN)
        return p.execute()

    def baseline_many() -> object:
        p = raw.pipeline(transaction=False)
        p.get("pm:sidecar:alive")
        for token in tokens:
            p.hgetall("pm:quote:" + token)
        return p.execute()

    assert client.get(TOKEN) is not None and client.get(TOKEN).usable(60)  # type: ignore[union-attr]
    print(f"QuoteClient latency against a local redis-server (loopback), {calls} calls each:")
    base = timed(baseline_one, calls)
    report("baseline: pipeline GET alive + HGETALL", base)
    med = report("QuoteClient.get(token)", timed(lambda: client.get(TOKEN), calls), base)
    many_calls = max(1, calls // 10)
    base_many = timed(baseline_many, many_calls)
    report("baseline: pipeline GET + 140 x HGETALL", base_many)
    report("QuoteClient.get_many(140 tokens)", timed(lambda: client.get_many(tokens), many_calls), base_many)
    verdict = "PASS" if med < 1000 else "FAIL"
    print(f"target: QuoteClient.get median under 1 ms: {verdict} ({med:.0f} us)")
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
