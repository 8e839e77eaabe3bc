#!/usr/bin/env python3
"""The ws_cache.json bridge's CPU at the maker bot's production load, measured on this machine.

Production: about 4,500 market events per minute over 40 tokens, i.e. ~1.9 events/s per token, or
~260 events/s at the ~140 tokens the scheduler wants at most. This script runs that load end to
end: the exchange simulator (in this process) with 70 two-token markets and random activity at
``--rate`` events/s, a throwaway redis-server, the real sidecar (``python -m sidecar run``) and the
real bridge (``python -m sidecar bridge``), and reads the bridge's utime+stime from /proc over a
fixed window. For comparison it then runs a pub/sub consumer of the same quotes (the client's
``follow``, doing nothing with them) and measures it the same way: the cost the bridge would have
had it been built on pushes instead of a ``get_many`` poll.

    .venv/bin/python -m devkit.bench.bridge [--tokens 140] [--rate 260] [--window 30]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis
from pmsim import Simulator

from devkit.procfs import cpu_s, rss_mb
from devkit.procs import BridgeProcess, ChildProcess, SidecarProcess, sidecar_env
from devkit.redis_server import RedisServer
from devkit.wait import wait_for

P = "pm:"
FOLLOWER = """
import sys
from sidecar.client import QuoteClient
client = QuoteClient.from_env()
tokens = sys.argv[1].split(",")
n = 0
for quote in client.follow(tokens):
    n += 1
"""


def log(msg: str) -> None:
    print(f"[bench_bridge {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Counter:
    """Pushes on P quote:* during the window: the event rate the sidecar actually published."""

    def __init__(self, url: str) -> None:
        self.n = 0
        self._r = redis.Redis.from_url(url)
        self._ps = self._r.pubsub(ignore_subscribe_messages=True)
        self._ps.psubscribe(**{P + "quote:*": self._on})
        self._thread = self._ps.run_in_thread(sleep_time=0.05, daemon=True)

    def _on(self, message: object) -> None:
        self.n += 1

    def close(self) -> None:
        self._thread.stop()
        self._thread.join(2)
        self._ps.close()
        self._r.close()


def file_writes(path: Path, stop: threading.Event, out: list[int]) -> None:
    """Count the bridge's renames (each write is a new inode) by sampling every 10 ms."""
    last = None
    while not stop.is_set():
        with contextlib.suppress(OSError):
            ino = path.stat().st_ino
            if ino != last:
                out[0] += last is not None
                last = ino
        time.sleep(0.01)


def measure(pid: int, window_s: float, counter: Counter) -> tuple[float, float, int]:
    """(% of one core, events/s published) over the window."""
    c0, n0, t0 = cpu_s(pid), counter.n, time.monotonic()
    time.sleep(window_s)
    c1, n1, t1 = cpu_s(pid), counter.n, time.monotonic()
    return 100.0 * (c1 - c0) / (t1 - t0), (n1 - n0) / (t1 - t0), n1 - n0


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m devkit.bench.bridge", description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=140)
    ap.add_argument("--rate", type=float, default=260.0, help="simulator events per second, all tokens")
    ap.add_argument("--window", type=float, default=30.0, help="seconds of each CPU measurement")
    ap.add_argument("--poll-s", type=float, default=0.2, help="the bridge's --poll-s")
    ap.add_argument("--no-follow", action="store_true", help="skip the pub/sub comparison")
    args = ap.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        log("redis-server is not installed")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    server = RedisServer(binary, tmp)
    sim = Simulator(seed=3)
    procs: list[ChildProcess] = []
    sidecar: SidecarProcess | None = None
    counter: Counter | None = None
    result: dict[str, object] = {}
    try:
        server.start()
        sim.start()
        for _ in range((args.tokens + 1) // 2):
            sim.add_market()
        tokens = sim.tokens()[: args.tokens]
        env = sidecar_env(server.url, sim.ws_url, sim.rest_url)
        sidecar = SidecarProcess(env, tmp / "sidecar.log")
        r = server.client()
        r.sadd(P + "desired", *tokens)
        r.publish(P + "desired:changed", "1")

        def all_live() -> bool:
            pipe = r.pipeline(transaction=False)
            for t in tokens:
                pipe.hget(P + "quote:" + t, "status")
            return all(s == "live" for s in pipe.execute())

        try:
            wait_for(all_live, 30, what="every token live")
        except AssertionError:
            log("sidecar log tail:\n" + "\n".join(sidecar.log().splitlines()[-20:]))
            raise
        sim.start_activity(args.rate, tokens=tokens)
        counter = Counter(server.url)
        cache = tmp / "ws_cache.json"
        bridge = BridgeProcess(env, cache, tmp / "bridge.log", ("--poll-s", str(args.poll_s)))
        procs.append(bridge)
        wait_for(lambda: cache.exists() and len(json.loads(cache.read_bytes())["tokens"]) == len(tokens), 15)
        time.sleep(3.0)  # past start-up (imports, first full read)
        writes = [0]
        done = threading.Event()
        watcher = threading.Thread(target=file_writes, args=(cache, done, writes), daemon=True)
        watcher.start()
        pct, eps, _ = measure(bridge.pid, args.window, counter)
        done.set()
        watcher.join()
        log(
            f"bridge (poll {args.poll_s}s): {pct:.2f}% of one core over {args.window:.0f}s, "
            f"{len(tokens)} tokens, {eps:.0f} quote changes/s published, "
            f"{writes[0] / args.window:.1f} file writes/s, RSS {rss_mb(bridge.pid):.0f} MB, "
            f"file {cache.stat().st_size / 1024:.0f} KiB"
        )
        result["bridge"] = {
            "cpu_pct_one_core": round(pct, 2),
            "poll_s": args.poll_s,
            "writes_per_s": round(writes[0] / args.window, 2),
            "rss_mb": round(rss_mb(bridge.pid), 1),
            "file_kib": round(cache.stat().st_size / 1024, 1),
        }
        result["load"] = {"tokens": len(tokens), "sim_rate_eps": args.rate, "published_per_s": round(eps)}
        code = bridge.shutdown()
        log(f"bridge stopped with SIGTERM: exit code {code}")
        if not args.no_follow:
            follower = ChildProcess(
                [sys.executable, "-c", FOLLOWER, ",".join(tokens)], env, tmp / "follower.log"
            )
            procs.append(follower)
            time.sleep(3.0)
            fpct, feps, _ = measure(follower.pid, args.window, counter)
            log(
                f"pub/sub follower (client.follow, reconcile 1 s, no output): {fpct:.2f}% of one core "
                f"at {feps:.0f} quote changes/s"
            )
            result["follow_consumer"] = {"cpu_pct_one_core": round(fpct, 2), "published_per_s": round(feps)}
            follower.shutdown()
        print(json.dumps(result, indent=2))
        return 0
    finally:
        for proc in procs:
            proc.stop()
        if counter is not None:
            counter.close()
        if sidecar is not None:
            sidecar.stop()
        sim.stop()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
