"""`python -m devkit.bench`: the flags, the phases in order, the results file and the report."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import redis

from devkit import REPO
from devkit.bench import big, latency, setup, throughput
from devkit.bench.context import Bench, log
from devkit.bench.report import report
from devkit.bench.workers import Stop, raise_stop
from devkit.procfs import cpu_model


def machine_info(redis_binary: str) -> dict[str, Any]:
    out = subprocess.run([redis_binary, "--version"], capture_output=True, text=True, check=False).stdout
    redis_version = next((p[2:] for p in out.split() if p.startswith("v=")), out.strip())
    import hiredis
    import websocket
    from redis.utils import HIREDIS_AVAILABLE

    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "redis_server": redis_version,
        "redis_py": redis.__version__,
        "hiredis": hiredis.__version__,
        "redis_py_uses_hiredis": bool(HIREDIS_AVAILABLE),
        "websocket_client": websocket.__version__,
        "kernel": platform.release(),
    }


def run(b: Bench) -> None:
    a = b.args
    b.results["machine"] = machine_info(b.redis_binary)
    b.results["config"] = dict(vars(a))
    t_all = time.monotonic()
    setup.setup(b)
    setup.connect_workers(b)  # the naive client's initial books must predate apply_silently
    setup.generate(b)
    throughput.transport(b)
    throughput.naive(b)
    throughput.sidecar(b)
    latency.latency(b)
    if a.big_tokens:
        big.big(b)
    b.results["total_seconds"] = round(time.monotonic() - t_all, 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m devkit.bench", description="pm-sidecar end-to-end benchmark")
    p.add_argument(
        "--events", type=int, default=240_000, help="price_change entries in the throughput stream"
    )
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--latency-rate", type=float, default=5000.0, help="events/s of the paced phase")
    p.add_argument("--latency-s", type=float, default=10.0)
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--big-tokens", type=int, default=5000, help="0 skips the 5,000-token phase")
    p.add_argument("--per-conn", type=int, default=200)
    p.add_argument("--drops", type=int, default=3)
    p.add_argument("--naive-timeout", type=float, default=150.0)
    p.add_argument(
        "--naive-free",
        action="store_true",
        help="leave the naive client and redis-server to the scheduler (default: same CPU, its best case)",
    )
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--out", default=str(REPO / "bench-results.json"))
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra sidecar setting for every sidecar started, e.g. --set write_flush_ms=5",
    )
    p.add_argument(
        "--pin-sidecar",
        type=int,
        default=None,
        metavar="CPU",
        help="run the sidecar on one CPU only (like systemd CPUAffinity=): experiment",
    )
    p.add_argument("--profile", default="", help="directory: py-spy raw profiles of the sidecar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_stop)
    with contextlib.ExitStack() as stack:
        bench = Bench(args, stack)
        try:
            run(bench)
        except (KeyboardInterrupt, Stop):
            # A second Ctrl-C must not cut the clean-up short: everything started is stopped.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            log("interrupted: stopping everything")
            return 130
        finally:
            if len(bench.results) > 2:
                Path(args.out).write_bytes(orjson.dumps(bench.results, option=orjson.OPT_INDENT_2))
        report(bench.results, args.out)
    return 0
