"""What a worker sees, drawn for the demo: quotes read back from Redis, the pushes on
``pm:quote:*`` and the bridge's ws_cache.json entry."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
import redis

PREFIX = "pm:"

CLEAR_HOME = "\x1b[2J\x1b[H"
COLORS = {"live": "32", "pending": "33", "resyncing": "33", "stale": "31", "resolved": "36"}

# ---- small helpers ------------------------------------------------------------------------------


def short(token: str) -> str:
    """Token ids are 70+ digits; the head and tail are enough to tell them apart on screen."""
    return token if len(token) <= 14 else f"{token[:8]}..{token[-4:]}"


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def cache_entry(cache: Path, token: str) -> dict[str, Any] | None:
    """One token's entry in ws_cache.json, read the way a worker reads it."""
    try:
        doc = orjson.loads(cache.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    entry = doc.get("tokens", {}).get(token)
    return entry if isinstance(entry, dict) else None


CACHE_KEYS = ("best_bid", "best_ask", "price", "updated_at", "seq", "quote_status", "sidecar_alive")


def cache_line(cache: Path, token: str) -> str:
    entry = cache_entry(cache, token)
    if entry is None:
        return f"ws_cache.json has no entry for {short(token)}"
    shown = ", ".join(f"{k}={entry.get(k)}" for k in CACHE_KEYS)
    return f"ws_cache.json[{short(token)}]: {shown}"


# ---- watching the push channel ------------------------------------------------------------------


@dataclass
class Pushes:
    """What a worker subscribed to ``pm:quote:*`` sees: counts and status transitions."""

    messages: int = 0
    status: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    stale_at: dict[str, float] = field(default_factory=dict)
    live_again_at: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, data: bytes) -> None:
        msg = orjson.loads(data)
        token, status = msg["token"], msg["status"]
        now = time.monotonic()
        with self.lock:
            self.messages += 1
            before = self.status.get(token)
            self.status[token] = status
            if status == "stale" and before == "live":
                self.stale_at[token] = now
                self.reasons[token] = msg.get("reason", "")
                self.live_again_at.pop(token, None)
            elif status == "live" and before == "stale":
                self.live_again_at[token] = now

    def counts(self) -> tuple[int, dict[str, float], dict[str, float], dict[str, str]]:
        with self.lock:
            return self.messages, dict(self.stale_at), dict(self.live_again_at), dict(self.reasons)

    def live_count(self) -> int:
        with self.lock:
            return sum(1 for status in self.status.values() if status == "live")

    def reset_transitions(self) -> None:
        with self.lock:
            self.stale_at.clear()
            self.live_again_at.clear()
            self.reasons.clear()


@contextlib.contextmanager
def listening(client: redis.Redis, pushes: Pushes) -> Iterator[None]:
    """Subscribe to every quote channel in a background thread for as long as the block runs."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(**{f"{PREFIX}quote:*": lambda m: pushes.on_message(m["data"])})
    worker = pubsub.run_in_thread(sleep_time=0.05, daemon=True)
    try:
        yield
    finally:
        worker.stop()
        worker.join(2.0)
        with contextlib.suppress(Exception):
            pubsub.close()


# ---- the viewer -------------------------------------------------------------------------------


@dataclass
class Viewer:
    """Reads quotes back from Redis exactly as a worker would and draws them."""

    client: redis.Redis
    tokens: list[str]
    sleepy: set[str]
    header: list[str]
    pushes: Pushes
    out: TextIO
    tty: bool
    cache: Path | None = None  # the bridge's ws_cache.json
    notes: list[str] = field(default_factory=list)
    _prev: dict[str, tuple[str, str]] = field(default_factory=dict)
    _started: float = field(default_factory=time.monotonic)

    def note(self, line: str) -> None:
        """Narration: printed at once in plain mode, kept under the table on a TTY."""
        stamp = f"[{time.monotonic() - self._started:5.1f}s] {line}"
        self.notes = [*self.notes, stamp][-6:]
        if not self.tty:
            print(stamp, file=self.out, flush=True)

    def read(self) -> tuple[dict[str, str], bool, list[dict[str, str]]]:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(f"{PREFIX}sidecar")
        pipe.get(f"{PREFIX}sidecar:alive")
        for token in self.tokens:
            pipe.hgetall(f"{PREFIX}quote:{token}")
        raw = pipe.execute()
        summary = {text(k): text(v) for k, v in raw[0].items()}
        alive = raw[1] is not None and text(raw[1]) == summary.get("epoch")
        quotes = [{text(k): text(v) for k, v in h.items()} for h in raw[2:]]
        return summary, alive, quotes

    def render(self, title: str = "") -> None:
        summary, alive, quotes = self.read()
        now_ms = time.time() * 1000
        lines = list(self.header)
        if title:
            lines.append(title)
        beat = summary.get("heartbeat_at", "")
        beat_age = f"{max(0.0, now_ms - int(beat)) / 1000:.1f}s ago" if beat.isdigit() else "-"
        lines.append(
            f"{PREFIX}sidecar (written every 1 s, heartbeat {beat_age}): "
            "live {}/{} desired, pending {}, stale {}, quote_health {}, connections_up {}/{}, "
            "alive key {}".format(
                summary.get("live", "?"),
                summary.get("desired", "?"),
                summary.get("pending", "?"),
                summary.get("stale", "?"),
                summary.get("quote_health", "?"),
                summary.get("connections_up", "?"),
                summary.get("connections", "?"),
                "present (epoch matches)" if alive else "MISSING or epoch differs",
            )
        )
        messages, *_ = self.pushes.counts()
        lines.append(f"pushes received on {PREFIX}quote:* so far: {messages}")
        lines.append("")
        lines.append(
            f"  {'token':<15} {'bid':>6} {'ask':>6} {'bid_size':>10} {'ask_size':>10} {'age':>6}  "
            f"{'status':<10} {'seq':>17}  reason"
        )
        for token, q in zip(self.tokens, quotes, strict=True):
            lines.append(self._row(token, q, now_ms))
        lines.append("  (* = bid or ask moved since the previous frame, ~ = a deliberately quiet token)")
        if self.tty:
            lines.append("")
            lines.extend(self.notes)
            self.out.write(CLEAR_HOME + "\n".join(lines) + "\n")
        else:
            stamp = f"---- {time.strftime('%H:%M:%S')} (+{time.monotonic() - self._started:.1f}s) ----"
            self.out.write("\n".join([stamp, *lines[len(self.header) :]]) + "\n\n")
        self.out.flush()

    def _row(self, token: str, q: dict[str, str], now_ms: float) -> str:
        if not q:
            return f"  {short(token):<15} (no quote yet)"
        bid, ask = q.get("bid", ""), q.get("ask", "")
        moved = self._prev.get(token, (bid, ask)) != (bid, ask)
        self._prev[token] = (bid, ask)
        updated = q.get("updated_at", "")
        age = f"{max(0.0, now_ms - int(updated)) / 1000:.1f}s" if updated else "-"
        status = q.get("status", "?")
        shown = f"{status:<10}"
        if self.tty and status in COLORS:
            shown = f"\x1b[{COLORS[status]}m{shown}\x1b[0m"
        mark = "*" if moved else " "
        name = short(token) + ("~" if token in self.sleepy else "")
        return (
            f"{mark} {name:<15} {bid or '-':>6} {ask or '-':>6} {q.get('bid_size') or '-':>10} "
            f"{q.get('ask_size') or '-':>10} {age:>6}  {shown} {q.get('seq', ''):>17}  {q.get('reason', '')}"
        )


def show_entry(cache: Path, token: str, out: TextIO) -> None:
    """One token's whole ws_cache.json entry: what the maker bot's workers read."""
    entry = cache_entry(cache, token)
    text_ = "(no entry)" if entry is None else orjson.dumps(entry, option=orjson.OPT_INDENT_2).decode()
    print(f"\nws_cache.json entry of {token}, as the bridge wrote it:\n{text_}\n", file=out, flush=True)
