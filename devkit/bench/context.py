"""What every bench phase shares: the processes it started, Redis and the simulator, the tokens,
the results so far, and the small reads (tops, truths, wait for a final state) the phases use.

One object, handed to each phase in turn; a phase adds what later phases read.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from pmsim import Simulator

from devkit.bench.stream import BookModel, Stream, Top
from devkit.bench.workers import Worker
from devkit.procs import SidecarProcess, sidecar_env
from devkit.redis_server import RedisServer
from devkit.truth import truth_top

P = "pm:"
TOP_FIELDS = ("bid", "bid_size", "ask", "ask_size")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    t = time.monotonic()
    log(f"{name} ...")
    yield
    log(f"{name}: {time.monotonic() - t:.1f}s")


class Bench:
    """The run's shared state. Attributes below the plumbing are filled in by the phases."""

    # setup
    markets: list[str]
    market_tokens: list[tuple[str, list[str]]]
    tokens: list[str]
    side: SidecarProcess  # the 200-token sidecar
    side_conns: set[int]
    side_conn: int
    # workers
    naive: Worker
    naive_conn: int
    sink: Worker
    sink_conn: int
    # stream
    model: BookModel
    s: Stream  # the throughput stream, encoded
    final: list[Top]
    last_tokens: list[str]
    lat: Stream  # the latency stream, encoded as it is sent

    def __init__(self, args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
        self.args = args
        self.stack = stack
        self.tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pm-bench-")))
        self.results: dict[str, Any] = {}
        self.redis_binary = shutil.which("redis-server") or ""
        if not self.redis_binary:
            raise SystemExit("bench: redis-server is not installed (apt-get install redis-server)")

    # -- plumbing

    def start_redis(self) -> None:
        self.redis = RedisServer(self.redis_binary, self.tmp)
        self.redis.start()
        self.stack.callback(self.redis.stop)
        self.r: redis.Redis = self.redis.client()

    def start_sim(self) -> None:
        self.sim = Simulator(seed=self.args.seed)
        self.sim.start()
        self.stack.callback(self.sim.stop)

    def start_sidecar(self, name: str, **overrides: Any) -> SidecarProcess:
        env = sidecar_env(self.redis.url, self.sim.ws_url, self.sim.rest_url, **overrides)
        env["SIDECAR_LOG_LEVEL"] = "WARNING"
        for item in self.args.set:
            key, _, value = item.partition("=")
            env["SIDECAR_" + key.upper().removeprefix("SIDECAR_")] = value
        self.results.setdefault("sidecar_settings", {})[name] = {
            k: v for k, v in sorted(env.items()) if k.startswith("SIDECAR_") and "URL" not in k
        }
        proc = SidecarProcess(env, self.tmp / f"sidecar-{name}.log")
        self.stack.callback(proc.stop)
        if self.args.pin_sidecar is not None:
            # Before the interpreter starts its threads (they inherit the main thread's mask).
            os.sched_setaffinity(proc.pid, {self.args.pin_sidecar})
        return proc

    def worker(self, role: str, *args: str) -> Worker:
        w = Worker(role, *args)
        self.stack.callback(w.stop)
        return w

    def tops(self, tokens: list[str], prefix: str, fields: tuple[str, ...] = TOP_FIELDS) -> list[list[Any]]:
        pipe = self.r.pipeline(transaction=False)
        for tok in tokens:
            pipe.hmget(prefix + tok, list(fields))
        return pipe.execute()

    def truths(self, tokens: list[str]) -> list[Top]:
        return [truth_top(self.sim, tok) for tok in tokens]

    def open_conns(self) -> set[int]:
        return {c.id for c in self.sim.connections() if c.open}

    def wait_final(
        self, prefix: str, tokens: list[str], final: list[Top], last: list[str], timeout: float
    ) -> float:
        """Poll until every token's quote equals its final top; returns the monotonic time it did.

        Only the last frame's tokens (set to never-seen sizes) are polled at first: frames are applied
        in order, so the rest can only be final once they are."""
        want = dict(zip(tokens, final, strict=True))
        last_want = [list(want[t]) for t in last]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.tops(last, prefix) == last_want:
                got = self.tops(tokens, prefix)
                now = time.monotonic()
                if all(tuple(g) == want[t] for g, t in zip(got, tokens, strict=True)):
                    return now
            time.sleep(0.004)
        got = self.tops(tokens, prefix)
        bad = [t for g, t in zip(got, tokens, strict=True) if tuple(g) != want[t]]
        raise AssertionError(f"{prefix}: {len(bad)} tokens not at the final state after {timeout:.0f}s")
