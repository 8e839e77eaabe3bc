"""``pm-sidecar status``: what every desired token is doing, read from Redis only.

Consumer-side like the bridge: it needs ``sidecar.client`` (and so only ``redis``), never the
engine, the shell, pydantic, Prometheus or WebSocket code, so it runs from any host that can reach
the sidecar's Redis, whether the sidecar is up or not. Reading (:func:`read_snapshot`) is the only
I/O; rendering the header, the table and the JSON is pure, with the time passed in.

Exit codes: 0 the sidecar is alive (``P sidecar:alive`` exists), 1 it is not, 2 Redis cannot be
reached (one line on stderr). ``--watch`` redraws in place until Ctrl-C, then exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from typing import Any, TextIO

import redis

from sidecar.client import QuoteClient, check_tokens
from sidecar.client.sync import DEFAULT_PREFIX, DEFAULT_URL, redact
from sidecar.status_view import (
    ENTER_SCREEN,
    EXIT_ALIVE,
    EXIT_NO_REDIS,
    LEAVE_SCREEN,
    WIDTH,
    Row,
    Snapshot,
    Summary,
    exit_code,
    frame,
    render,
    sort_rows,
    to_json,
)

DEFAULT_WATCH_S = 2.0


# ---- reading (the only I/O) ----------------------------------------------------------------------


def read_snapshot(client: QuoteClient, now_s: float | None = None) -> Snapshot:
    """Read the summary hash, the desired set and every desired token's quote.

    Raises ``redis.RedisError`` when Redis cannot be reached.
    """
    summary_fields = client.redis.hgetall(client.prefix + "sidecar")
    members = sorted(client.wanted())
    tokens: list[str] = []
    for member in members:
        try:
            tokens.extend(check_tokens(member))
        except ValueError:
            continue  # the sidecar ignores (and counts) these too
    quotes = client.get_many(tokens) if tokens else {}
    alive_epoch = client.alive_epoch()
    summary = Summary.parse({_text(k): _text(v) for k, v in summary_fields.items()})
    rows = sort_rows([Row(t, quotes.get(t)) for t in dict.fromkeys(tokens)])
    return Snapshot(
        now_s=time.time() if now_s is None else now_s,
        alive_epoch=alive_epoch,
        summary=summary,
        rows=tuple(rows),
        invalid_desired=len(members) - len(tokens),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ---- command line ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=DEFAULT_WATCH_S,
        default=None,
        metavar="SECONDS",
        help=f"redraw in place every SECONDS (default {DEFAULT_WATCH_S:g}) until Ctrl-C",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object for scripts")
    parser.add_argument("--redis-url", default=None, help="instead of SIDECAR_REDIS_URL")
    parser.add_argument("--prefix", default=None, help="instead of SIDECAR_KEY_PREFIX")


def _client(args: argparse.Namespace) -> tuple[QuoteClient, str]:
    """The client (as ``QuoteClient.from_env()``, with the overrides) and its URL for messages."""
    env = os.environ
    url = args.redis_url or env.get("SIDECAR_REDIS_URL") or DEFAULT_URL
    if args.redis_url is None and args.prefix is None:
        return QuoteClient.from_env(), redact(url)
    prefix = args.prefix if args.prefix is not None else env.get("SIDECAR_KEY_PREFIX") or DEFAULT_PREFIX
    client = QuoteClient(
        url,
        prefix,
        password=env.get("SIDECAR_REDIS_PASSWORD") or None,
        ssl_ca_certs=env.get("SIDECAR_REDIS_TLS_CA_FILE") or None,
    )
    return client, redact(url)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``pm-sidecar status``: 0 alive, 1 not alive, 2 Redis unreachable; ``--watch`` ends with 0."""
    out = out or sys.stdout
    err = err or sys.stderr
    if args.watch is not None and not args.watch > 0:
        print("pm-sidecar status: --watch SECONDS must be positive", file=err)
        return EXIT_NO_REDIS
    if args.watch is not None and args.json:
        print("pm-sidecar status: --json is one object for scripts; it does not go with --watch", file=err)
        return EXIT_NO_REDIS
    try:
        client, url = _client(args)
    except ValueError as exc:  # an unusable URL
        print(f"pm-sidecar status: cannot reach Redis: {_one_line(exc)}", file=err)
        return EXIT_NO_REDIS
    with client:
        if args.watch is not None:
            return watch(client, url, args.watch, out)
        try:
            snapshot = read_snapshot(client)
        except redis.RedisError as exc:
            print(f"pm-sidecar status: cannot reach Redis at {url}: {_one_line(exc)}", file=err)
            return EXIT_NO_REDIS
        if args.json:
            out.write(json.dumps(to_json(snapshot)) + "\n")
        else:
            width = max(WIDTH, shutil.get_terminal_size((WIDTH, 40)).columns) if out.isatty() else WIDTH
            out.write("\n".join(render(snapshot, min(width, 160))) + "\n")
        return exit_code(snapshot)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def watch(client: QuoteClient, url: str, interval_s: float, out: TextIO) -> int:
    """Redraw until Ctrl-C (or SIGTERM), like ``top``; exit 0. An unreachable Redis is shown in
    the header and retried, not fatal."""
    tty = out.isatty()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    if tty:
        out.write(ENTER_SCREEN)
    try:
        while True:
            size = shutil.get_terminal_size((WIDTH, 40))
            stamp = time.strftime("%H:%M:%S")
            note = f"{stamp}  every {interval_s:g}s  Ctrl-C quits  redis {url} prefix {client.prefix}"
            try:
                snapshot = read_snapshot(client)
                lines = (
                    render(snapshot, size.columns, max_rows=max(1, size.lines - 6))
                    if tty
                    else render(snapshot)
                )
            except redis.RedisError as exc:
                lines = [f"REDIS UNREACHABLE: {_one_line(exc)}"]
            lines = [note, *lines]
            if tty:
                out.write(frame(lines, size.columns, size.lines))
            else:
                out.write("\n".join(lines) + "\n\n")
            out.flush()
            time.sleep(interval_s)
    except KeyboardInterrupt:
        return EXIT_ALIVE
    finally:
        signal.signal(signal.SIGTERM, previous)
        if tty:
            out.write(LEAVE_SCREEN)
            out.flush()
