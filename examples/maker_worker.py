#!/usr/bin/env python3
"""A maker worker's quote loop on the sidecar client: price only from a quote that is ``usable``.

One worker, one token (as the maker bot runs them). It reads the quote once at start (``get``),
then follows it (``follow``: pushes within milliseconds plus a re-read every second) and, on
every change and at least once a second, decides:

- ``usable(max_age_s)``: the sidecar is alive, the token is ``live`` and the exchange confirmed the
  top less than ``max_age_s`` ago -> quote around ``bid``/``ask``;
- ``resolved``: the market is over -> cancel and exit;
- anything else (``stale``, ``resyncing``, ``pending``, sidecar not alive, too old) -> do not price
  from it; after ``--missing-before-rest`` such seconds a real worker would fall back to REST.

Against the demo (``python -m devkit.demo --seconds 120`` prints its Redis URL and tokens):

    python examples/maker_worker.py --redis-url redis://127.0.0.1:PORT/0 --token TOKEN --duration 30

Against the installed sidecar, with its settings (URL, password, prefix) from its env file:

    set -a; . /etc/pm-sidecar/env; set +a; python examples/maker_worker.py --token TOKEN
"""

from __future__ import annotations

import argparse
import sys
import time

import redis

from sidecar.client import Quote, QuoteClient, add_redis_arguments, client_from_args


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_redis_arguments(ap)  # --redis-url, --prefix: default to the sidecar's own settings
    ap.add_argument("--token", required=True, help="the token this worker makes a market in")
    ap.add_argument("--max-age-s", type=float, default=60.0, help="oldest confirmation to price from")
    ap.add_argument("--missing-before-rest", type=float, default=3.0, help="seconds unusable before REST")
    ap.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: never)")
    return ap.parse_args()


def describe(q: Quote | None) -> str:
    if q is None:
        return "no quote (token not desired yet?)"
    return (
        f"status={q.status} reason={q.reason or '-'} alive={q.alive} bid={q.bid} ask={q.ask} "
        f"age_s={q.age_s if q.age_s is None else round(q.age_s, 2)} seq={q.seq}"
    )


def first_read(client: QuoteClient, token: str, end: float) -> Quote | None:
    """The quote at start; while Redis cannot be read, one line and a retry every second; exit 1
    with one more line (no traceback) when ``--duration`` ends first."""
    warned = False
    while True:
        try:
            return client.get(token)
        except redis.RedisError as exc:
            problem = f"cannot read Redis at {client!r}: {type(exc).__name__}: {exc}"
        if time.monotonic() + 1.0 >= end:
            print(f"error: {problem}", file=sys.stderr, flush=True)
            raise SystemExit(1)
        if not warned:
            print(f"{problem}; retrying every second", file=sys.stderr, flush=True)
            warned = True
        time.sleep(1.0)


def main() -> int:
    args = parse_args()
    client = client_from_args(args)  # configured like the sidecar (its env file)
    end = time.monotonic() + args.duration if args.duration > 0 else float("inf")
    quote = first_read(client, args.token, end)
    print(f"start: {describe(quote)}", flush=True)
    usable = unusable = 0
    unusable_since: float | None = None
    with client, client.follow([args.token]) as follower:
        while time.monotonic() < end:
            # Wake on every change, and at least once a second: age grows without any message.
            quote = follower.poll(min(1.0, max(0.0, end - time.monotonic()))) or quote
            if quote is None:
                continue
            if quote.usable(args.max_age_s):
                usable += 1
                unusable_since = None
                print(f"usable: bid={quote.bid} ask={quote.ask} mid={quote.mid} seq={quote.seq}", flush=True)
                # ... place/replace orders around quote.bid / quote.ask here
            elif quote.resolved:
                print(f"resolved ({quote.reason}): cancel orders and exit", flush=True)
                break
            else:
                unusable += 1
                now = time.monotonic()
                unusable_since = unusable_since or now
                print(f"not usable: {describe(quote)}", flush=True)
                if now - unusable_since >= args.missing_before_rest:
                    print("  (a real worker would now read the book over REST)", flush=True)
    print(f"summary: {usable} usable, {unusable} not usable", flush=True)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(0) from None
