"""``pm-sidecar status``: what every desired token is doing, read from Redis only.

Consumer-side like the bridge: it needs ``sidecar.client`` (and so only ``redis``), never the
engine, the shell, pydantic, Prometheus or WebSocket code, so it runs from any host that can reach
the sidecar's Redis, whether the sidecar is up or not. Reading (:func:`read_snapshot`) is the only
I/O; rendering the header, the table and the JSON is pure, with the time passed in.

Exit codes: 0 the sidecar is alive (``P sidecar:alive`` exists), 1 it is not, 2 Redis cannot be
reached (connection refused or lost, timeout, authentication refused: one line on stderr). A key
Redis refuses to read (a wrong type, an ACL) is a ``PROBLEM`` line (``problems`` in ``--json``),
not exit 2. ``--watch`` redraws in place until Ctrl-C, then exits 0.
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

from sidecar.client import Quote, QuoteClient, check_tokens
from sidecar.client.base import decode_hash
from sidecar.client.quote import quote_from_fields
from sidecar.client.sync import DEFAULT_URL, redact
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


# Exit 2 ("cannot reach Redis") is for a ConnectionError (refused, reset; AuthenticationError for
# NOAUTH/WRONGPASS and BusyLoadingError are ConnectionErrors), a TimeoutError, or any other
# RedisError that is not a ResponseError (a garbled reply). A ResponseError on one key (WRONGTYPE,
# NOPERM) is not: read_snapshot shows that key as a problem and reads the rest.


def read_snapshot(client: QuoteClient, now_s: float | None = None) -> Snapshot:
    """Read the summary hash, the desired set and every desired token's quote.

    A key Redis refuses to read (``ResponseError``: wrong type, ACL) becomes a problem line and
    reads as missing. Raises any other ``redis.RedisError`` (Redis cannot be reached).
    """
    p = client.prefix
    problems: list[str] = []
    try:
        summary_fields = client.redis.hgetall(p + "sidecar")
    except redis.ResponseError as exc:
        problems.append(_refused(client, p + "sidecar", "hash", exc, "summary not shown"))
        summary_fields = {}
    try:
        members = sorted(client.wanted())
    except redis.ResponseError as exc:
        note = "the sidecar keeps its last set; no tokens shown"
        problems.append(_refused(client, client.desired_key, "set", exc, note))
        members = []
    tokens: list[str] = []
    for member in members:
        try:
            tokens.extend(check_tokens(member))
        except ValueError:
            continue  # the sidecar ignores (and counts) these too
    tokens = list(dict.fromkeys(tokens))
    alive_ok = True
    try:
        alive_epoch = client.alive_epoch()
    except redis.ResponseError as exc:
        problems.append(_refused(client, client.alive_key, "string", exc, "read as not alive"))
        alive_epoch, alive_ok = None, False
    quotes = _quotes(client, tokens, alive_epoch, alive_ok, problems)
    summary = Summary.parse({_text(k): _text(v) for k, v in summary_fields.items()})
    rows = sort_rows([Row(t, quotes.get(t)) for t in tokens])
    return Snapshot(
        now_s=time.time() if now_s is None else now_s,
        alive_epoch=alive_epoch,
        summary=summary,
        rows=tuple(rows),
        invalid_desired=len(members) - len(tokens),
        problems=tuple(problems),
    )


def _quotes(
    client: QuoteClient, tokens: list[str], alive_epoch: str | None, alive_ok: bool, problems: list[str]
) -> dict[str, Quote | None]:
    """All quotes in one round trip; if Redis refuses a key, each hash alone (only then)."""
    if not tokens:
        return {}
    if alive_ok:  # get_many reads the alive key too: it cannot succeed when that one is refused
        try:
            return client.get_many(tokens)
        except redis.ResponseError:
            pass
    quotes: dict[str, Quote | None] = {}
    now_s = time.time()
    for token in tokens:
        try:
            fields = decode_hash(client.redis.hgetall(client.quote_key(token)))
            quotes[token] = quote_from_fields(token, fields, alive_epoch, now_s)
        except redis.ResponseError as exc:
            problems.append(_refused(client, client.quote_key(token), "hash", exc, "shown as no hash"))
            quotes[token] = None
    return quotes


def _refused(client: QuoteClient, key: str, expected: str, exc: redis.ResponseError, note: str) -> str:
    """One line for a key Redis would not read: its actual type when that is the reason."""
    try:
        kind = _text(client.redis.type(key))
    except redis.ResponseError:
        kind = "?"
    if kind not in ("none", "?", expected):
        return f"{key} is a {kind}, not a {expected} ({note})"
    return f"cannot read {key}: {_one_line(exc)} ({note})"


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
    url = args.redis_url or os.environ.get("SIDECAR_REDIS_URL") or DEFAULT_URL
    return QuoteClient.from_env(redis_url=args.redis_url or None, prefix=args.prefix), redact(url)


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
        except redis.RedisError as exc:  # not a ResponseError: read_snapshot turns those into problems
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
                    render(snapshot, size.columns, max_rows=max(1, size.lines - 6 - len(snapshot.problems)))
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
