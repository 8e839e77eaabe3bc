"""`python -m pmsim`: run a simulator with random activity until SIGINT/SIGTERM.

Output (stdout, flushed before serving), so scripts can parse it line by line:
    ws_url ws://127.0.0.1:8765/ws/market
    rest_url http://127.0.0.1:8766
    tokens 20
    <token id>            (one per line, 20 lines)
    ca_file /dir/cert.pem (only with --tls DIR: the certificate a client must trust)
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from .server import Simulator
from .tls import make_self_signed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pmsim", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--ws-port", type=int, default=8765, help="0 picks a free port")
    p.add_argument("--rest-port", type=int, default=8766, help="0 picks a free port")
    p.add_argument("--markets", type=int, default=10, help="two-token markets to create")
    p.add_argument("--rate", type=float, default=50.0, help="random events per second, all tokens together")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tls", metavar="DIR", default="", help="serve wss:// with a self-signed certificate written to DIR"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    cert = make_self_signed(Path(args.tls), args.host) if args.tls else None
    sim = Simulator(
        host=args.host,
        ws_port=args.ws_port,
        rest_port=args.rest_port,
        seed=args.seed,
        tls=cert.server_context() if cert else None,
    )
    sim.start()
    try:
        for _ in range(args.markets):
            sim.add_market()
        if args.rate > 0:
            sim.start_activity(args.rate)
        tokens = sim.tokens()
        lines = [f"ws_url {sim.ws_url}", f"rest_url {sim.rest_url}", f"tokens {len(tokens)}", *tokens]
        if cert is not None:
            lines.append(f"ca_file {cert.cert}")
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
