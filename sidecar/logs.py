"""Log output: ``text`` or ``json`` lines, syslog priority prefixes under journald, and the
one-line summary the loop logs every minute.

Why: the people running the sidecar read the journal over SSH at night (``journalctl -p warning``
must show only what matters) or ship the lines to a log store (one JSON object per line, with the
structured fields ``conn``, ``token``, ``reason``, ``count`` to filter on). Everything here is pure
formatting; :func:`configure` is the only place that touches the logging tree.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, TextIO

FORMATS = ("text", "json")
# Structured fields a log call may carry (``extra={"conn": 3}``); both formats show them.
FIELDS = ("conn", "token", "reason", "count")
TEXT_FIELDS = ("conn", "token", "reason")
# sd-daemon(3) priorities: journald strips the prefix and files the line at that level.
SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"  # journald stamps each line itself


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a Python level (a custom level between two maps to the lower)."""
    for level in sorted(SYSLOG_PRIORITY, reverse=True):
        if levelno >= level:
            return SYSLOG_PRIORITY[level]
    return 7


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields present on a record: the named ones, then a ``fields`` dict."""
    out = {name: getattr(record, name) for name in FIELDS if getattr(record, name, None) is not None}
    extra = getattr(record, "fields", None)
    if isinstance(extra, dict):
        out.update(extra)
    return out


def with_priority(text: str, levelno: int) -> str:
    """Every line prefixed ``<N>``: a traceback's lines are filed at the record's level too."""
    prefix = f"<{syslog_priority(levelno)}>"
    return "\n".join(prefix + line for line in text.split("\n"))


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message conn=.. token=.. reason=..``; with ``journal``, no time (journald
    stamps lines itself) and ``<N>`` first."""

    def __init__(self, journal: bool = False) -> None:
        super().__init__(JOURNAL_TEXT_FORMAT if journal else TEXT_FORMAT)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        # conn/token/reason as key=value for grep; count is already in a rate-limited line's
        # message ("+N similar") and the summary's numbers are its message: JSON carries those
        fields = {k: v for k in TEXT_FIELDS if (v := getattr(record, k, None)) is not None}
        if fields:
            head, sep, tail = text.partition("\n")  # fields on the message line, not the traceback
            text = head + " " + " ".join(f"{k}={v}" for k, v in fields.items()) + sep + tail
        return with_priority(text, record.levelno) if self.journal else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ms), ``level``, ``logger``, ``message``, the
    structured fields, and ``exc`` with the traceback when there is one.

    With ``journal`` the object is preceded by ``<N>``, which journald strips: the stored message
    is the plain object, filed at the right priority.
    """

    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        obj: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            obj.setdefault(key, value)  # a field never overwrites the four above
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            obj["exc"] = record.exc_text
        if record.stack_info:
            obj["stack"] = self.formatStack(record.stack_info)
        line = json.dumps(obj, default=str, ensure_ascii=False)
        return f"<{syslog_priority(record.levelno)}>{line}" if self.journal else line


def stream_is_journal(stream: TextIO, journal_stream: str | None) -> bool:
    """True when ``stream`` is the journald stream systemd connected us to.

    systemd sets ``JOURNAL_STREAM=dev:inode`` of that stream; a child process that inherited the
    variable but writes elsewhere (a pipe, a file) must not get prefixes, so compare, as
    systemd.exec(5) advises.
    """
    if not journal_stream:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return journal_stream.strip() == f"{st.st_dev}:{st.st_ino}"


def make_formatter(fmt: str, journal: bool) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return JsonFormatter(journal) if fmt == "json" else TextFormatter(journal)


def configure(level: str, fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Root logging to ``stream`` (stderr) in ``fmt``; prefixes when that stream is journald."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(fmt, stream_is_journal(stream, os.environ.get("JOURNAL_STREAM"))))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level, logging.INFO))
    # redis-py / websocket-client chatter is not useful at INFO
    logging.getLogger("websocket").setLevel(logging.WARNING)
    return handler


# ---- the minute summary --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MinuteSummary:
    """What the loop logs once a minute: enough to see from the journal alone how it has been."""

    desired: int
    live: int
    pending: int
    stale: int
    resyncing: int
    sockets_up: int
    sockets: int
    events_per_s: float
    redis_latency_ms: float | None  # mean quote-flush time over the minute; None: no flush
    redis_up: bool
    backlog: int
    quote_health: float

    def message(self) -> str:
        latency = "-" if self.redis_latency_ms is None else f"{self.redis_latency_ms:.1f}ms"
        return (
            f"summary: desired={self.desired} live={self.live} pending={self.pending} "
            f"stale={self.stale} resyncing={self.resyncing} sockets={self.sockets_up}/{self.sockets} "
            f"events/s={self.events_per_s:.1f} redis={'up' if self.redis_up else 'DOWN'} "
            f"redis_latency={latency} backlog={self.backlog} health={self.quote_health:.3f}"
        )

    def fields(self) -> dict[str, Any]:
        """The same numbers as structured fields (JSON logs)."""
        out = asdict(self)
        out["events_per_s"] = round(self.events_per_s, 1)
        if self.redis_latency_ms is not None:
            out["redis_latency_ms"] = round(self.redis_latency_ms, 2)
        return out


def rate(now_total: float, then_total: float, seconds: float) -> float:
    """Per-second rate between two readings of a counter (0 over no time or a counter reset)."""
    if seconds <= 0 or now_total < then_total:
        return 0.0
    return (now_total - then_total) / seconds


def mean_delta(sum_now: float, count_now: float, sum_then: float, count_then: float) -> float | None:
    """Mean of the observations made between two readings of a histogram's sum and count."""
    n = count_now - count_then
    if n <= 0:
        return None
    return (sum_now - sum_then) / n
