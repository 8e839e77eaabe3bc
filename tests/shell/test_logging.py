"""Log output: text/json formats, structured fields, journald priority prefixes, the rate limiter's
fields and the minute summary line."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from sidecar import logs
from sidecar.config import Settings, describe_errors
from sidecar.core.engine import Report
from sidecar.core.ratelog import RateLimitedLog
from sidecar.shell import app
from sidecar.shell.metrics import Snapshot


def record(
    level: int = logging.WARNING,
    msg: str = "socket %d lost",
    args: tuple[object, ...] = (3,),
    **extra: object,
) -> logging.LogRecord:
    rec = logging.LogRecord("sidecar", level, __file__, 1, msg, args, None)
    rec.created = 1_800_000_000.25
    rec.msecs = 250.0
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_line_has_time_level_logger_message_and_fields() -> None:
    line = logs.JsonFormatter().format(record(conn=3, token="123", reason="connection_eof", count=4))
    assert json.loads(line) == {
        "time": "2027-01-15T08:00:00.250Z",
        "level": "WARNING",
        "logger": "sidecar",
        "message": "socket 3 lost",
        "conn": 3,
        "token": "123",
        "reason": "connection_eof",
        "count": 4,
    }
    assert "\n" not in line


def test_json_summary_fields_and_exception_stay_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        rec = logging.LogRecord("sidecar", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    rec.fields = {"desired": 5, "message": "not overwritten"}
    line = logs.JsonFormatter().format(rec)
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["desired"] == 5 and obj["message"] == "boom"
    assert obj["exc"].startswith("Traceback") and "ValueError: bad\nthing" in obj["exc"]


def test_json_under_journald_is_prefixed_with_the_priority() -> None:
    line = logs.JsonFormatter(journal=True).format(record(logging.ERROR, conn=1))
    assert line.startswith("<3>{")
    assert json.loads(line[3:])["level"] == "ERROR"


@pytest.mark.parametrize(
    ("level", "prio"),
    [
        (logging.DEBUG, 7),
        (logging.INFO, 6),
        (logging.WARNING, 4),
        (logging.ERROR, 3),
        (logging.CRITICAL, 2),
        (25, 6),
    ],
)
def test_syslog_priorities(level: int, prio: int) -> None:
    assert logs.syslog_priority(level) == prio


def test_text_line_appends_conn_token_reason_but_not_count() -> None:
    text = logs.TextFormatter().format(record(conn=3, token="123", reason="connection_eof", count=4))
    assert text.endswith(" WARNING sidecar: socket 3 lost conn=3 token=123 reason=connection_eof")
    assert text[:4].isdigit() and not text.startswith("<")  # starts with the time


def test_text_under_journald_prefixes_every_line_and_drops_the_time() -> None:
    try:
        raise RuntimeError("x")
    except RuntimeError:
        rec = logging.LogRecord(
            "sidecar.shell.writer", logging.WARNING, __file__, 1, "oops", (), sys.exc_info()
        )
    rec.reason = "write"
    lines = logs.TextFormatter(journal=True).format(rec).split("\n")
    assert lines[0] == "<4>WARNING sidecar.shell.writer: oops reason=write"
    assert len(lines) > 2 and all(line.startswith("<4>") for line in lines)
    assert lines[-1] == "<4>RuntimeError: x"
    info = logs.TextFormatter(journal=True).format(record(logging.INFO, "ready", ()))
    assert info == "<6>INFO sidecar: ready"


def test_journal_is_detected_only_for_the_stream_systemd_gave_us(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    with open(path, "w") as stream, open(tmp_path / "other", "w") as other:
        st = os.fstat(stream.fileno())
        ident = f"{st.st_dev}:{st.st_ino}"
        assert logs.stream_is_journal(stream, ident)
        assert not logs.stream_is_journal(other, ident)  # inherited variable, redirected stream
        assert not logs.stream_is_journal(stream, None)
        assert not logs.stream_is_journal(io.StringIO(), ident)  # no file descriptor


def test_configure_json_and_journal_prefix_to_the_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "err"
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        with open(path, "w") as stream:
            st = os.fstat(stream.fileno())
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
            logs.configure("WARNING", "json", stream)
            logging.getLogger("sidecar.t").info("hidden")
            logging.getLogger("sidecar.t").warning("shown %s", "x", extra={"conn": 7})
            monkeypatch.setenv("JOURNAL_STREAM", "1:2")
            logs.configure("INFO", "text", stream)
            logging.getLogger("sidecar.t").info("plain")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    first, second = path.read_text().splitlines()
    assert first.startswith("<4>")
    assert json.loads(first[3:])["conn"] == 7 and json.loads(first[3:])["message"] == "shown x"
    assert second.endswith(" INFO sidecar.t: plain") and not second.startswith("<")


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        logs.make_formatter("xml", False)


def test_setting_log_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_LOG_FORMAT", " JSON ")
    assert Settings(_env_file=None).log_format == "json"  # type: ignore[call-arg]
    monkeypatch.delenv("SIDECAR_LOG_FORMAT")
    assert Settings(_env_file=None).log_format == "text"  # type: ignore[call-arg]
    monkeypatch.setenv("SIDECAR_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError) as exc:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert describe_errors(exc.value) == [
        "pm-sidecar: invalid configuration: SIDECAR_LOG_FORMAT: must be text or json"
    ]


def test_rate_limited_lines_carry_count_and_the_named_fields(caplog: pytest.LogCaptureFixture) -> None:
    rl = RateLimitedLog(logging.getLogger("test.fields"), interval_s=60.0)
    with caplog.at_level(logging.INFO, logger="test.fields"):
        rl.warning("k", 0.0, "bad frame on %d", 4, conn=4, reason="json")
        rl.warning("k", 1.0, "bad frame on %d", 4, conn=4, reason="json")
        rl.warning("k", 2.0, "bad frame on %d", 4, conn=4, reason="json")
        rl.warning("k", 61.0, "bad frame on %d", 5, conn=5, token="77", reason="json")
    got = [(r.getMessage(), r.count, r.conn, getattr(r, "token", None), r.reason) for r in caplog.records]  # type: ignore[attr-defined]
    assert got == [
        ("bad frame on 4", 1, 4, None, "json"),
        ("bad frame on 5 (+2 similar in the last 60s)", 3, 5, "77", "json"),
    ]


def test_minute_summary_line() -> None:
    line = logs.MinuteSummary(
        desired=10,
        live=8,
        pending=1,
        stale=1,
        resyncing=0,
        sockets_up=2,
        sockets=3,
        events_per_s=12.345,
        redis_latency_ms=1.234,
        redis_up=True,
        backlog=0,
        quote_health=0.8,
    )
    assert line.message() == (
        "summary: desired=10 live=8 pending=1 stale=1 resyncing=0 sockets=2/3 events/s=12.3 "
        "redis=up redis_latency=1.2ms backlog=0 health=0.800"
    )
    fields = line.fields()
    assert (fields["desired"], fields["stale"], fields["sockets_up"], fields["sockets"]) == (10, 1, 2, 3)
    assert (fields["events_per_s"], fields["redis_latency_ms"]) == (12.3, 1.23)


def test_rate_and_mean_delta() -> None:
    assert logs.rate(700.0, 100.0, 60.0) == 10.0
    assert logs.rate(5.0, 100.0, 60.0) == 0.0  # counter reset
    assert logs.rate(5.0, 1.0, 0.0) == 0.0
    assert logs.mean_delta(0.5, 110, 0.3, 10) == pytest.approx(0.002)
    assert logs.mean_delta(0.3, 10, 0.3, 10) is None


def test_runtime_logs_the_minute_summary_from_its_own_counters(caplog: pytest.LogCaptureFixture) -> None:
    rt = app.Runtime(Settings(_env_file=None, metrics_port=0))  # type: ignore[call-arg]
    start = rt._last_log[0]
    rt._snapshot = Snapshot(
        engine_report=Report(
            desired=4,
            statuses={"live": 2, "pending": 1, "stale": 1},
            connections=2,
            connections_up=1,
            quote_health=0.5,
        ),
        redis_up=True,
        backlog=3,
    )
    rt.engine.stats["events", "book"] += 90
    rt.engine.stats["events", "price_change"] += 30
    rt.engine.stats["reconnects", "eof"] += 1000  # not an event
    rt.metrics.redis_write_latency.observe(0.002)
    rt.metrics.redis_write_latency.observe(0.004)
    with caplog.at_level(logging.INFO, logger="sidecar"):
        rt._log_summary(start + 60.0)
        rt.engine.stats["events", "book"] += 60
        rt._log_summary(start + 120.0)
    first, second = (r for r in caplog.records if r.getMessage().startswith("summary:"))
    assert first.getMessage() == (
        "summary: desired=4 live=2 pending=1 stale=1 resyncing=0 sockets=1/2 events/s=2.0 "
        "redis=up redis_latency=3.0ms backlog=3 health=0.500"
    )
    assert first.fields["events_per_s"] == 2.0  # type: ignore[attr-defined]
    assert "events/s=1.0 " in second.getMessage() and "redis_latency=- " in second.getMessage()
    assert app.LOG_SUMMARY_S == 60.0
