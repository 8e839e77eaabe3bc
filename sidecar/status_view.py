"""What ``pm-sidecar status`` shows, as pure functions of a :class:`Snapshot` (time passed in):
the order of the tokens, the header, the table that fits 100 columns, the JSON for scripts and
the --watch frame. No I/O here; sidecar.status reads Redis and drives the terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.client import Quote
from sidecar.client.quote import number

EXIT_ALIVE = 0
EXIT_NOT_ALIVE = 1
EXIT_NO_REDIS = 2
WIDTH = 100  # the table fits this many columns (wider terminals give the reason more room)

# Worst first: a table read top-down at 3 a.m. starts with what needs looking at.
RANK = {"stale": 0, "resyncing": 2, "pending": 3, "unsubscribed": 4, "resolved": 5, "live": 6}
RANK_MISSING = 1  # desired but no hash at all: the sidecar never wrote it
SOURCE_SHORT = {"price_change": "change"}

# Terminal control for --watch: alternate screen (no scrollback spam, the shell's screen comes
# back on exit), hidden cursor, and each frame drawn over the last from the home position.
ENTER_SCREEN = "\x1b[?1049h\x1b[?25l"
LEAVE_SCREEN = "\x1b[?25h\x1b[?1049l"
HOME = "\x1b[H"
CLEAR_EOL = "\x1b[K"
CLEAR_EOS = "\x1b[J"


# ---- typed data --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    """The ``P sidecar`` hash, parsed (``None`` for a field that is missing or not a number)."""

    epoch: str
    version: str
    started_at_ms: int | None
    heartbeat_at_ms: int | None
    desired: int | None
    live: int | None
    pending: int | None
    stale: int | None
    resyncing: int | None
    resolved: int | None
    connections: int | None
    connections_up: int | None
    quote_health: float | None
    invalid_desired: int | None
    capped_desired: int | None
    venue: str = ""  # up | degraded | down ("" from a sidecar that does not report it)
    venue_since_ms: int | None = None

    @classmethod
    def parse(cls, fields: Mapping[str, str]) -> Summary | None:
        """``None`` for a missing (empty) hash: no sidecar ever ran with this prefix."""
        if not fields:
            return None
        get = fields.get
        return cls(
            epoch=get("epoch") or "",
            version=get("version") or "",
            started_at_ms=number(get("started_at"), int),
            heartbeat_at_ms=number(get("heartbeat_at"), int),
            desired=number(get("desired"), int),
            live=number(get("live"), int),
            pending=number(get("pending"), int),
            stale=number(get("stale"), int),
            resyncing=number(get("resyncing"), int),
            resolved=number(get("resolved"), int),
            connections=number(get("connections"), int),
            connections_up=number(get("connections_up"), int),
            quote_health=number(get("quote_health"), float),
            invalid_desired=number(get("invalid_desired"), int),
            capped_desired=number(get("capped_desired"), int),
            venue=get("venue") or "",
            venue_since_ms=number(get("venue_since"), int),
        )


@dataclass(frozen=True, slots=True)
class Row:
    """One desired token and its quote (``None``: the token has no hash in Redis)."""

    token: str
    quote: Quote | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything ``status`` shows, as read at ``now_s`` (epoch seconds)."""

    now_s: float
    alive_epoch: str | None
    summary: Summary | None
    rows: tuple[Row, ...]  # worst first
    invalid_desired: int  # desired-set members that are not token ids (not shown as rows)
    # Keys Redis refused to read (WRONGTYPE, NOPERM), one line each: shown, never fatal.
    problems: tuple[str, ...] = ()

    @property
    def alive(self) -> bool:
        return self.alive_epoch is not None


# ---- pure: order, render, JSON -------------------------------------------------------------------


def sort_rows(rows: list[Row]) -> list[Row]:
    """Worst status first; within a status the longest-unconfirmed first, then by token."""

    def key(row: Row) -> tuple[int, float, str]:
        q = row.quote
        if q is None:
            return (RANK_MISSING, 0.0, row.token)
        rank = RANK.get(q.status, RANK_MISSING)
        age = -1.0 if q.updated_at_ms is None else float(q.updated_at_ms)
        return (rank, age, row.token)  # an older updated_at (smaller) sorts first

    return sorted(rows, key=key)


def exit_code(snapshot: Snapshot) -> int:
    return EXIT_ALIVE if snapshot.alive else EXIT_NOT_ALIVE


def short_token(token: str, width: int = 12) -> str:
    """Head and tail of a long token id, so a 77-digit id fits a column and stays recognisable."""
    if len(token) <= width:
        return token
    head = (width - 2) // 2
    tail = width - 2 - head
    return f"{token[:head]}..{token[-tail:]}"


def fmt_duration(seconds: float | None) -> str:
    """Compact age: ``0.4s``, ``12s``, ``4m05s``, ``2h03m``, ``3d04h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{int(s)}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d{int(s % 86400 // 3600):02d}h"


def fmt_size(value: float | None) -> str:
    """A level's size in at most 7 characters: exact when it fits (``1200.5``), fewer decimals
    below 100,000 (``12345.7``), else scaled (``250k``, ``12.3M``); ``-`` for an empty side."""
    if value is None:
        return "-"
    if value < 100_000:
        for decimals in (2, 1, 0):
            text = f"{value:.{decimals}f}"
            text = text.rstrip("0").rstrip(".") if "." in text else text
            if len(text) <= 7:
                return text
    for scale, unit in ((1e3, "k"), (1e6, "M"), (1e9, "G")):
        if value / scale < 999.95:
            return f"{value / scale:.1f}".rstrip("0").rstrip(".") + unit
    return f"{value:.1e}"


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


def header(snapshot: Snapshot) -> list[str]:
    """Two lines: is it alive (epoch, uptime, heartbeat), then health, sockets and counts; then
    one ``PROBLEM:`` line per key Redis refused to read."""
    s = snapshot.summary
    now_ms = snapshot.now_s * 1000
    beat = None if s is None or s.heartbeat_at_ms is None else (now_ms - s.heartbeat_at_ms) / 1000
    if snapshot.alive:
        started = None if s is None or s.started_at_ms is None else (now_ms - s.started_at_ms) / 1000
        first = f"ALIVE  epoch {snapshot.alive_epoch}  up {fmt_duration(started)}"
        if s is not None and s.version:
            first += f"  v{s.version}"
        first += f"  heartbeat {fmt_duration(beat)} ago"
    elif s is None:
        first = "NOT ALIVE  (no P sidecar:alive key, and no summary: no sidecar ran with this prefix)"
    else:
        first = (
            f"NOT ALIVE  (no P sidecar:alive key)  last epoch {s.epoch or '?'}  "
            f"last heartbeat {fmt_duration(beat)} ago"
        )
    if s is None:
        second = f"desired set {len(snapshot.rows)} tokens"
    else:
        health = "?" if s.quote_health is None else f"{s.quote_health:.4f}"
        second = (
            f"health {health}  sockets {_n(s.connections_up)}/{_n(s.connections)}  "
            f"desired {_n(s.desired)}  live {_n(s.live)}  pending {_n(s.pending)}  "
            f"stale {_n(s.stale)}  resyncing {_n(s.resyncing)}"
        )
        if s.resolved:
            second += f"  resolved {s.resolved}"
        if s.venue and s.venue != "up":
            since = None if s.venue_since_ms is None else (now_ms - s.venue_since_ms) / 1000
            second += f"  VENUE {s.venue.upper()} for {fmt_duration(since)}"
    invalid = snapshot.invalid_desired
    if invalid:
        second += f"  invalid {invalid}"
    if s is not None and s.capped_desired:
        second += f"  capped {s.capped_desired}"
    return [first, second, *(f"PROBLEM: {p}" for p in snapshot.problems)]


# (title, width, right-aligned); the reason column takes what is left of the line (24 at 100
# columns). SEQ shows the last 6 digits: enough to see it move (the JSON has it whole).
COLUMNS = (
    ("TOKEN", 12, False),
    ("STATUS", 12, False),
    ("BID", 6, True),
    ("ASK", 6, True),
    ("BID_SZ", 7, True),
    ("ASK_SZ", 7, True),
    ("AGE", 5, True),
    ("SOURCE", 6, False),
    ("SEQ", 6, True),
)
REASON_MIN = 10


def _cells(row: Row, now_s: float) -> list[str]:
    q = row.quote
    if q is None:
        return [short_token(row.token), "(no hash)", "", "", "", "", "", "", "", ""]
    return [
        short_token(row.token),
        q.status,
        q.bid_str or "-",
        q.ask_str or "-",
        fmt_size(q.bid_size),
        fmt_size(q.ask_size),
        fmt_duration(q.age_at(now_s)),
        SOURCE_SHORT.get(q.source, q.source) or "-",
        str(q.seq)[-6:] if q.seq else "-",
        q.reason,
    ]


def _line(cells: list[str], width: int) -> str:
    parts = []
    for cell, (_, w, right) in zip(cells, COLUMNS, strict=False):
        text = cell if len(cell) <= w else cell[: w - 1] + "~"
        parts.append(text.rjust(w) if right else text.ljust(w))
    used = sum(w for _, w, _ in COLUMNS) + len(COLUMNS)
    room = max(REASON_MIN, width - used)
    reason = cells[len(COLUMNS)]
    if len(reason) > room:
        reason = reason[: room - 1] + "~"
    return (" ".join(parts) + " " + reason).rstrip()


def table(snapshot: Snapshot, width: int = WIDTH, max_rows: int | None = None) -> list[str]:
    """The column titles and one line per token, worst first, each at most ``width`` wide.

    With ``max_rows``, the last line says how many more (and how many of those are live).
    """
    lines = [_line([t for t, _, _ in COLUMNS] + ["REASON"], width)]
    rows = snapshot.rows
    shown = rows
    if max_rows is not None and len(rows) > max_rows:
        shown = rows[: max(0, max_rows - 1)]
    lines.extend(_line(_cells(row, snapshot.now_s), width) for row in shown)
    hidden = rows[len(shown) :]
    if hidden:
        live = sum(1 for r in hidden if r.quote is not None and r.quote.status == "live")
        lines.append(f"... {len(hidden)} more tokens ({live} live)")
    if not rows:
        lines.append("(the desired set is empty)")
    return lines


def render(snapshot: Snapshot, width: int = WIDTH, max_rows: int | None = None) -> list[str]:
    """Header, a blank line, the table."""
    return [*header(snapshot), "", *table(snapshot, width, max_rows)]


def to_json(snapshot: Snapshot) -> dict[str, Any]:
    """``{"sidecar": {..., "alive": bool}, "tokens": [...], "problems": [...]}``, tokens worst
    first, for scripts (``problems``: one line per key Redis refused to read, usually empty)."""
    s = snapshot.summary
    now_ms = snapshot.now_s * 1000
    sidecar: dict[str, Any] = {"alive": snapshot.alive, "alive_epoch": snapshot.alive_epoch}
    if s is not None:
        sidecar.update(
            epoch=s.epoch,
            version=s.version,
            started_at=s.started_at_ms,
            heartbeat_at=s.heartbeat_at_ms,
            uptime_s=None
            if not snapshot.alive or s.started_at_ms is None
            else round((now_ms - s.started_at_ms) / 1000, 3),
            heartbeat_age_s=None
            if s.heartbeat_at_ms is None
            else round((now_ms - s.heartbeat_at_ms) / 1000, 3),
            quote_health=s.quote_health,
            connections=s.connections,
            connections_up=s.connections_up,
            desired=s.desired,
            live=s.live,
            pending=s.pending,
            stale=s.stale,
            resyncing=s.resyncing,
            resolved=s.resolved,
            invalid_desired=s.invalid_desired,
            capped_desired=s.capped_desired,
            venue=s.venue or None,
            venue_since=s.venue_since_ms,
        )
    tokens: list[dict[str, object]] = []
    for row in snapshot.rows:
        q = row.quote
        if q is None:
            tokens.append({"token": row.token, "status": None, "alive": False})
            continue
        age = q.age_at(snapshot.now_s)
        tokens.append(
            {
                "token": row.token,
                "status": q.status,
                "bid": q.bid,
                "ask": q.ask,
                "bid_size": q.bid_size,
                "ask_size": q.ask_size,
                "age_s": None if age is None else round(age, 3),
                "source": q.source,
                "reason": q.reason,
                "seq": q.seq,
                "epoch": q.epoch,
                "updated_at": q.updated_at_ms,
                "alive": q.alive,
            }
        )
    return {"sidecar": sidecar, "tokens": tokens, "problems": list(snapshot.problems)}


def frame(lines: list[str], width: int, height: int) -> str:
    """One --watch screen: drawn from the home position over the previous one, each line cleared
    to its end and everything below the last line cleared, in a single write (no flicker)."""
    shown = [line[:width] for line in lines[:height]]
    return (
        HOME + "".join(line + CLEAR_EOL + "\r\n" for line in shown[:-1]) + shown[-1] + CLEAR_EOL + CLEAR_EOS
    )
