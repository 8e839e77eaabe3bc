"""Long run against sleepy markets: healthy but quiet sockets must never be reconnected.

The production failure this project exists to fix was a fixed "no message" guard reconnecting
quiet sockets. This runs the real sidecar (default settings) against the simulator with sleepy
tokens for ``--minutes`` and fails unless there were zero silence-triggered reconnects while every
quote stayed live. Not a unit test: ``python -m devkit.quiet_run --minutes 60``.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pmsim import Simulator

from devkit.procs import SidecarProcess, sidecar_env
from devkit.redis_server import RedisServer
from devkit.scrape import scrape, total
from devkit.wait import wait_for


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.quiet_run", description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--report-every", type=float, default=300.0, help="seconds between lines")
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server is required", file=sys.stderr)
        return 2
    rng = random.Random(5)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pm-quiet-")))
        redis_server = RedisServer(binary, tmp)
        redis_server.start()
        stack.callback(redis_server.stop)
        sim = Simulator(seed=5)
        sim.start()
        stack.callback(sim.stop)
        markets = [sim.add_market() for _ in range(args.tokens // 2)]
        tokens = [t for m in markets for t in sim.markets()[m]]
        # Two sockets: one entirely sleepy, one with a few livelier tokens among sleepy ones.
        env = sidecar_env(redis_server.url, sim.ws_url, sim.rest_url, max_tokens_per_conn=args.tokens // 2)
        proc = SidecarProcess(env, tmp / "sidecar.log")
        stack.callback(proc.stop)
        r = redis_server.client()
        r.sadd("pm:desired", *tokens)
        wait_for(lambda: all(r.hget("pm:quote:" + t, "status") == "live" for t in tokens), 30, what="live")
        sim.start_activity(0.5, tokens)
        rates = {}
        for i, token in enumerate(tokens):
            # one event every ~3 min, ~30 min, or (a few on the second socket) every ~10 s
            rate = 0.1 if i >= len(tokens) - 4 else rng.choice([1 / 180, 1 / 1800])
            sim.set_token_rate(token, rate)
            rates[token] = rate
        print(
            f"quiet run: {len(tokens)} tokens on 2 sockets, per-token event rates between "
            f"1/{1 / min(rates.values()):.0f} and {max(rates.values())} per s, {args.minutes:.0f} min, "
            "default silence settings (SILENCE_MIN_S=0.5, SILENCE_MAX_S=120, QUIET_CONFIRM_S=30)",
            flush=True,
        )
        start = time.monotonic()
        end = start + args.minutes * 60
        next_report = start
        not_live_samples = 0
        samples = 0
        while time.monotonic() < end:
            statuses = [r.hget("pm:quote:" + t, "status") for t in tokens]
            samples += 1
            not_live_samples += sum(1 for s in statuses if s != "live")
            if time.monotonic() >= next_report:
                next_report += args.report_every
                m = scrape(proc.metrics_port)
                print(
                    f"t={time.monotonic() - start:6.0f}s handshakes={sim.handshakes} "
                    f"reconnects={total(m, 'pm_sidecar_reconnects_total'):.0f} "
                    f"(silence {total(m, 'pm_sidecar_reconnects_total', reason='silence'):.0f}) "
                    f"probes sent/ok/failed={total(m, 'pm_sidecar_silence_probes_total', result='sent'):.0f}/"
                    f"{total(m, 'pm_sidecar_silence_probes_total', result='ok'):.0f}/"
                    f"{total(m, 'pm_sidecar_silence_probes_total', result='failed'):.0f} "
                    f"rest confirms={total(m, 'pm_sidecar_rest_confirms_total', result='match'):.0f} "
                    f"live={statuses.count('live')}/{len(tokens)}",
                    flush=True,
                )
            time.sleep(1.0)
        m = scrape(proc.metrics_port)
        silence = total(m, "pm_sidecar_reconnects_total", reason="silence")
        reconnects = total(m, "pm_sidecar_reconnects_total")
        ok = silence == 0 and reconnects == 0 and sim.handshakes == 2
        print(
            f"result: {reconnects:.0f} reconnects ({silence:.0f} silence-triggered), "
            f"{sim.handshakes} handshakes for 2 sockets, non-live quote samples "
            f"{not_live_samples}/{samples * len(tokens)} (1 s sampling; a probed overdue token is "
            f"briefly stale by design) -> {'PASS' if ok else 'FAIL'}",
            flush=True,
        )
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
