"""``pm-sidecar bridge``: keeps the maker bot's legacy ``ws_cache.json`` current from Redis.

The thin shell around :mod:`sidecar.bridge_core`: it reads ``P desired`` and the quotes with
:class:`sidecar.client.QuoteClient` every ``poll_s`` (one ``SMEMBERS`` and one pipelined round
trip of ``HGETALL`` + the alive key), and rewrites the file atomically when an entry changed, and
at least every ``heartbeat_s``. Polling, not pub/sub: at 140 tokens and ~260 events/s it costs a
few percent of a core (``python -m devkit.bench.bridge``), reads the alive key and the unpublished
``updated_at`` refreshes every time, and has no subscription to lose in a Redis restart.

Imports only the client package, the dependency-free ``sidecar.systemd`` (sd_notify) and
``sidecar.logs`` (the sidecar's log formats, so ``SIDECAR_LOG_FORMAT`` and journald priorities
apply) and the standard library: no engine, writer, pydantic, WebSocket or Prometheus code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import FrameType

import redis

from sidecar import logs
from sidecar.bridge_core import BridgeState, CacheEntry, entry_from_json
from sidecar.client import QuoteClient, check_tokens
from sidecar.systemd import Notifier

log = logging.getLogger("sidecar.bridge")

EX_CONFIG = 78  # as the sidecar: systemd does not restart a unit on a configuration error
DEFAULT_POLL_S = 0.2
SUMMARY_EVERY_S = 60.0
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")  # as sidecar.config accepts


class ErrorLog:
    """One line per kind of recurring error, then one a minute; and one line when it clears."""

    def __init__(self, interval_s: float = 60.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._repeats: dict[str, int] = {}

    def error(self, kind: str, now: float, msg: str) -> None:
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._repeats[kind] = self._repeats.get(kind, 0) + 1
            return
        repeats = self._repeats.pop(kind, 0)
        self._last[kind] = now
        log.error("%s%s", msg, f" (+{repeats} more in the last {self.interval_s:.0f}s)" if repeats else "")

    def clear(self, kind: str, msg: str) -> None:
        if self._last.pop(kind, None) is not None:
            self._repeats.pop(kind, None)
            log.info("%s", msg)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old file or the new one, never a part.

    Temp file in the same directory (same filesystem, so the rename is atomic), fsync, rename,
    fsync the directory (so the rename itself survives a power cut).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, 0o644)  # workers may run as another user; the umask must not hide it
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def previous_entries(path: Path) -> dict[str, CacheEntry]:
    """The entries of the file a previous run left (kept, zeroed); none if there is no such file."""
    try:
        tokens = json.loads(path.read_bytes())["tokens"]
        if not isinstance(tokens, dict):
            raise TypeError("'tokens' is not an object")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("bridge: ignoring the existing %s (%s): starting with no entries", path, exc)
        return {}
    out = {}
    for token, obj in tokens.items():
        entry = entry_from_json(obj)
        if entry is not None and valid_tokens([token]):
            out[token] = entry
    return out


def valid_tokens(members: Iterable[str]) -> list[str]:
    """The desired set's valid ids; the sidecar ignores (and counts) the others, so does the bridge."""
    out = []
    for member in members:
        with contextlib.suppress(ValueError):
            out.extend(check_tokens([member]))
    return out


class Bridge:
    """One loop: read Redis, decide (pure core), write the file when it changed or is due."""

    def __init__(
        self, client: QuoteClient, path: Path, heartbeat_s: float, poll_s: float = DEFAULT_POLL_S
    ) -> None:
        self.client = client
        self.path = path
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.state = BridgeState()
        self.stop = threading.Event()
        self.errors = ErrorLog()
        self.notifier = Notifier()
        self.redis_ok = False
        self._read_failed = False  # the last read of Redis failed: the next good one is a reconnect
        self.state.reconnected(time.monotonic())  # an empty set right after start is held (grace)
        self.writes = 0
        self._dirty = True  # the first cycle always writes: an old run's file must not linger
        self._last_write = 0.0
        self._raw_desired: frozenset[str] | None = None
        self._valid: list[str] = []

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop.set()

    def prepare(self) -> None:
        """Clean up after a run killed mid-write; keep the entries the previous run wrote."""
        for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()
        self.state.seed(previous_entries(self.path))

    def run(self) -> int:
        self.prepare()
        log.info(
            "bridge: writing %s from %r every <= %.2fs on a change, heartbeat %.0fs",
            self.path,
            self.client,
            self.poll_s,
            self.heartbeat_s,
        )
        next_summary = time.monotonic() + SUMMARY_EVERY_S
        writes_at_summary = 0
        next_ping = 0.0
        while not self.stop.is_set():
            began = time.monotonic()
            self.cycle()
            if began >= next_ping and self.notifier.enabled:
                # READY after the first cycle; WATCHDOG from the loop that writes, so a wedged loop
                # is restarted by systemd.
                interval = self.notifier.watchdog_interval_s
                next_ping = began + (min(interval, 5.0) if interval else 5.0)
                self.notifier.notify(
                    f"READY=1\nWATCHDOG=1\nSTATUS={len(self.state.entries)} entries, "
                    f"redis {'ok' if self.redis_ok else 'UNREADABLE'}, {self.writes} writes"
                )
            if began >= next_summary:
                next_summary = began + SUMMARY_EVERY_S
                live = sum(1 for e in self.state.entries.values() if e.quote_status == "live")
                log.info(
                    "bridge: %d entries (%d live), %d desired, %d writes in the last %.0fs",
                    len(self.state.entries),
                    live,
                    len(self.state.desired),
                    self.writes - writes_at_summary,
                    SUMMARY_EVERY_S,
                )
                writes_at_summary = self.writes
            self.stop.wait(max(0.0, self.poll_s - (time.monotonic() - began)))
        self.notifier.stopping()
        # Nothing vouches for the file once the bridge stops: leave every price at 0.0.
        self.state.apply(self.state.desired, None)
        self.write(time.time(), final=True)
        log.info("bridge: stopped; %s left with every price 0.0 and sidecar_alive false", self.path)
        return 0

    def cycle(self) -> None:
        try:
            read = self.read_desired()
            mono = time.monotonic()
            if self._read_failed:
                self._read_failed = False
                self.state.reconnected(mono)  # Redis may be back empty: hold an emptied set
            desired = self.state.effective_desired(read, mono)
            quotes = self.client.get_many(sorted(desired)) if desired else {}
        except redis.RedisError as exc:
            self.errors.error(
                "redis", time.monotonic(), f"bridge: cannot read Redis: {type(exc).__name__}: {exc}"
            )
            self.redis_ok = False
            self._read_failed = True
            changed = self.state.apply(self.state.desired, None)
        else:
            self.redis_ok = True
            self.errors.clear("redis", "bridge: Redis readable again")
            changed = self.state.apply(desired, quotes)
        mono = time.monotonic()
        if changed or self._dirty or mono - self._last_write >= self.heartbeat_s:
            self.write(time.time())

    def read_desired(self) -> list[str] | None:
        """The valid ids of ``P desired``; ``None`` (keep the last set) when it is not a SET.

        Like the sidecar, which also keeps its last good set then. Connection errors propagate.
        """
        try:
            raw = frozenset(self.client.wanted())
        except redis.ResponseError as exc:
            self.errors.error(
                "desired", time.monotonic(), f"bridge: cannot read P desired, keeping the last set: {exc}"
            )
            return None
        self.errors.clear("desired", "bridge: P desired readable again")
        if raw != self._raw_desired:
            self._raw_desired, self._valid = raw, valid_tokens(raw)
        return self._valid

    def write(self, now_s: float, final: bool = False) -> None:
        try:
            write_atomic(self.path, self.state.document(now_s))
        except OSError as exc:
            self._dirty = True
            self.errors.error("write", time.monotonic(), f"bridge: cannot write {self.path}: {exc}")
            return
        self._dirty = False
        self._last_write = time.monotonic()
        self.writes += 1
        if not final:
            self.errors.clear("write", f"bridge: writing {self.path} again")


def check_target(path: Path) -> str | None:
    """Why the cache file cannot be written there, or ``None``."""
    parent = path.parent
    if not parent.is_dir():
        return f"directory {parent} does not exist"
    if path.is_dir():
        return f"{path} is a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"directory {parent} is not writable by this user"
    return None


def configure_logging(environ: Mapping[str, str]) -> str | None:
    """The sidecar's logging (:mod:`sidecar.logs`: ``text``/``json``, ``<N>`` prefixes under
    journald) from ``SIDECAR_LOG_LEVEL``/``SIDECAR_LOG_FORMAT``, read here without pydantic.

    Returns why a setting is invalid (logging is then text at INFO, so the reason can be logged),
    or ``None``; the values accepted are the ones ``sidecar.config`` accepts.
    """
    level = environ.get("SIDECAR_LOG_LEVEL", "INFO").strip().upper()
    fmt = environ.get("SIDECAR_LOG_FORMAT", "text").strip().lower()
    problem = None
    if level not in LOG_LEVELS:
        problem = f"SIDECAR_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {level!r}"
        level = "INFO"
    if fmt not in logs.FORMATS:
        problem = f"SIDECAR_LOG_FORMAT must be one of {', '.join(logs.FORMATS)}, not {fmt!r}"
        fmt = "text"
    logs.configure(level, fmt)
    return problem


def run(ws_cache: str, heartbeat_s: float, poll_s: float = DEFAULT_POLL_S) -> int:
    """``pm-sidecar bridge``: exit 0 on SIGTERM/SIGINT, 78 on a bad argument or target."""
    problem = configure_logging(os.environ)
    if problem:
        log.error("bridge: %s", problem)
        return EX_CONFIG
    path = Path(ws_cache).absolute()
    problem = None
    if not heartbeat_s > 0 or not 0 < poll_s <= 0.4:
        problem = "--heartbeat-s must be > 0 and --poll-s in (0, 0.4] (a change must show within 0.5 s)"
    problem = problem or check_target(path)
    if problem:
        log.error("bridge: %s", problem)
        return EX_CONFIG
    try:
        client = QuoteClient.from_env()
    except ValueError as exc:  # e.g. SIDECAR_REDIS_URL with an unknown scheme; the URL may hold a password
        log.error("bridge: invalid SIDECAR_REDIS_URL: %s", exc)
        return EX_CONFIG
    bridge = Bridge(client, path, heartbeat_s, poll_s)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, bridge.request_stop)
    try:
        return bridge.run()
    finally:
        bridge.client.close()
