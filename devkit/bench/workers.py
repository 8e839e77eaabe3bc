"""The bench's helper processes, each a `python -m devkit.bench.workers ROLE ...` of its own.

- ``naive``: the obvious client (json.loads per frame, one HSET and one PUBLISH per event,
  unpipelined): the baseline the sidecar is compared with in the same run;
- ``sink``: websocket-client's reader with no work behind it: the transport ceiling;
- ``subscriber``: PSUBSCRIBE, every message timestamped on arrival: exact end-to-end latency.

Each prints ``ready`` once set up; the bench reads its lines with :class:`Worker`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import redis
from pmsim import messages

from devkit import REPO
from devkit.procs import stop_process

NAIVE_P = "naive:quote:"


class Worker:
    """A helper process of the bench; it prints `ready ...` once it is set up."""

    def __init__(self, role: str, *args: str) -> None:
        self.role = role
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "devkit.bench.workers", role, *args],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=str(REPO),
        )

    def line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"{self.role} worker said nothing for {timeout:.0f}s")
        text = self.proc.stdout.readline()
        if not text:
            raise RuntimeError(f"{self.role} worker exited (code {self.proc.poll()})")
        return text.strip()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        stop_process(self.proc, sig, timeout)


class Stop(Exception):
    """SIGTERM, raised in the main thread: stop and clean up."""


def raise_stop(*_: Any) -> None:
    raise Stop


def _ws_subscribe(url: str, tokens: list[str]) -> Any:
    import websocket

    ws = websocket.create_connection(url, timeout=30, skip_utf8_validation=True, suppress_origin=True)
    if tokens:
        ws.send(json.dumps(messages.subscription(tokens[:100], custom_feature_enabled=False)))
        for i in range(100, len(tokens), 100):
            ws.send(json.dumps(messages.operation("subscribe", tokens[i : i + 100])))
    return ws


def naive_main(url: str, redis_port: int, tokens_file: str) -> int:
    """The obvious client: json.loads per frame, one HSET and one PUBLISH per event, unpipelined."""
    signal.signal(signal.SIGTERM, raise_stop)
    tokens = json.loads(Path(tokens_file).read_text())
    r = redis.Redis(port=redis_port)
    books: dict[str, tuple[dict[float, tuple[str, str]], dict[float, tuple[str, str]]]] = {}
    ws = _ws_subscribe(url, tokens)

    def write(token: str) -> None:
        bids, asks = books[token]
        bb = max(bids) if bids else None
        ba = min(asks) if asks else None
        fields = {
            "bid": bids[bb][0] if bb is not None else "",
            "bid_size": bids[bb][1] if bb is not None else "",
            "ask": asks[ba][0] if ba is not None else "",
            "ask_size": asks[ba][1] if ba is not None else "",
        }
        r.hset(NAIVE_P + token, mapping=fields)
        r.publish(NAIVE_P + token, json.dumps({"token": token, **fields}))

    def handle(ev: dict[str, Any]) -> None:
        kind = ev.get("event_type")
        if kind == "book":
            token = ev["asset_id"]
            bids = {float(lv["price"]): (lv["price"], lv["size"]) for lv in ev["bids"]}
            asks = {float(lv["price"]): (lv["price"], lv["size"]) for lv in ev["asks"]}
            books[token] = (bids, asks)
            write(token)
        elif kind == "price_change":
            for e in ev["price_changes"]:
                token = e["asset_id"]
                if token not in books:
                    continue
                levels = books[token][0 if e["side"] == "BUY" else 1]
                if float(e["size"]) == 0.0:
                    levels.pop(float(e["price"]), None)
                else:
                    levels[float(e["price"])] = (e["price"], e["size"])
                write(token)

    try:
        while len(books) < len(tokens):
            msg = json.loads(ws.recv())
            for ev in msg if isinstance(msg, list) else [msg]:
                handle(ev)
        print("ready", flush=True)
        while True:
            data = ws.recv()
            if not data or data[0] not in "{[":
                continue
            msg = json.loads(data)
            for ev in msg if isinstance(msg, list) else [msg]:
                handle(ev)
    except (Stop, KeyboardInterrupt):
        return 0
    finally:
        with contextlib.suppress(Exception):
            ws.close()


def sink_main(url: str, cmd_path: str) -> int:
    """Transport ceiling: websocket-client's frame reader (what the sidecar's socket reader runs
    on) in a process of its own, frames only counted: what the simulator and the reader manage
    without any work behind them."""
    signal.signal(signal.SIGTERM, raise_stop)
    ws = _ws_subscribe(url, [])
    print("ready", flush=True)
    try:
        count = int(_read_cmd(cmd_path))
        first = 0.0
        recv = ws.recv_data
        for seen in range(count):
            recv()
            if seen == 0:
                first = time.monotonic()
        print(f"done {first:.6f} {time.monotonic():.6f}", flush=True)
        signal.pause()
        return 0
    except (Stop, KeyboardInterrupt):
        return 0


def _read_cmd(path: str) -> str:
    """The bench says how many frames to expect by writing a file (stdin stays free)."""
    while True:
        with contextlib.suppress(FileNotFoundError):
            text = Path(path).read_text()
            if text.endswith("\n"):
                os.unlink(path)
                return text.strip()
        time.sleep(0.001)


def subscriber_main(redis_port: int, pattern: str, out: str) -> int:
    """PSUBSCRIBE and timestamp every message on arrival; results go to a file on SIGTERM."""
    signal.signal(signal.SIGTERM, raise_stop)
    r = redis.Redis(port=redis_port)
    pubsub = r.pubsub(ignore_subscribe_messages=False)
    pubsub.psubscribe(pattern)
    got: list[tuple[float, bytes]] = []
    clock = time.monotonic
    try:
        while True:
            msg = pubsub.get_message(timeout=1.0)
            if msg is None:
                continue
            if msg["type"] == "psubscribe":
                print("ready", flush=True)
                continue
            got.append((clock(), msg["data"]))
    except (Stop, KeyboardInterrupt):
        pass
    rows = []
    for t, data in got:
        m = orjson.loads(data)
        rows.append(
            [t, m["token"], m.get("bid", ""), m.get("bid_size", ""), m.get("ask", ""), m.get("ask_size", "")]
        )
    Path(out).write_bytes(orjson.dumps(rows))
    return 0


def main(argv: list[str]) -> int:
    role, *rest = argv
    if role == "naive":
        return naive_main(rest[0], int(rest[1]), rest[2])
    if role == "sink":
        return sink_main(rest[0], rest[1])
    if role == "subscriber":
        return subscriber_main(int(rest[0]), rest[1], rest[2])
    raise SystemExit(f"unknown worker role {role!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
