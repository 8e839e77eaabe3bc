#!/usr/bin/env python3
"""The autorun scheduler's side: say which tokens to quote, start a worker once its quote is live.

Each cycle the scheduler computes the tokens it wants (running, pending and starting workers) and
writes them with one ``set_wanted`` (atomic replace of ``P desired`` + a nudge to the sidecar).
Doing it every cycle, not only on a change, also re-asserts the set after a Redis restart without
persistence (the sidecar holds its last set for only 60 s). A worker is started only once
``wait_live`` returns its quote: live at the exchange, written by a running sidecar.

Against the demo (``python -m devkit.demo --seconds 120`` prints its Redis URL and tokens):

    python examples/scheduler.py --redis-url redis://127.0.0.1:PORT/0 --tokens T1,T2 --duration 30

Against the installed sidecar, with its settings (URL, password, prefix) from its env file:

    set -a; . /etc/pm-sidecar/env; set +a; python examples/scheduler.py --tokens T1,T2
"""

from __future__ import annotations

import argparse
import sys
import time

import redis

from sidecar.client import add_redis_arguments, client_from_args


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_redis_arguments(ap)  # --redis-url, --prefix: default to the sidecar's own settings
    ap.add_argument("--tokens", required=True, help="comma-separated token ids to run workers for")
    ap.add_argument("--cycle-s", type=float, default=5.0, help="scheduler cycle (default 5 s)")
    ap.add_argument("--start-timeout-s", type=float, default=30.0, help="longest wait for a live quote")
    ap.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: never)")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    wanted = [t.strip() for t in args.tokens.split(",") if t.strip()]
    client = client_from_args(args)  # configured like the sidecar (its env file)
    end = time.monotonic() + args.duration if args.duration > 0 else float("inf")
    started: set[str] = set()
    with client:
        while True:
            try:
                client.set_wanted(wanted)  # ValueError on an invalid id, before anything is written
            except redis.RedisError as exc:  # Redis down: say so, try again next cycle
                print(f"cannot write Redis at {client!r}: {type(exc).__name__}: {exc}", file=sys.stderr)
                wanted_now: list[str] = []
            else:
                print(f"cycle: desired set = {len(wanted)} tokens", flush=True)
                wanted_now = wanted
            for token in wanted_now:
                if token in started:
                    continue
                # Sequential for clarity; a real scheduler waits per starting worker (a thread each,
                # or a short timeout per cycle) so one token that never goes live delays no other.
                left = max(0.1, min(args.start_timeout_s, end - time.monotonic()))
                quote = client.wait_live(token, left)
                if quote is None:
                    print(f"not live after {left:.1f}s, retry next cycle: {token}", flush=True)
                    continue
                started.add(token)
                print(f"live, start worker: {token} bid={quote.bid} ask={quote.ask}", flush=True)
                # ... subprocess.Popen([... "maker_worker.py", "--token", token]) here
            if time.monotonic() + args.cycle_s >= end:
                break
            time.sleep(args.cycle_s)
    print(f"summary: {len(started)}/{len(wanted)} workers started", flush=True)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(0) from None
