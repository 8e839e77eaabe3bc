"""``pm-sidecar status`` against fakeredis: reading, ordering, header, table, JSON and exit codes."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from devkit.net import free_port
from sidecar import status
from sidecar import status_view as view
from sidecar.client import QuoteClient

NOW_S = 1_800_000_000.0
NOW_MS = int(NOW_S * 1000)
EPOCH = "18f0000000-abcd1234"
REPO = Path(__file__).resolve().parents[2]

LIVE_OLD = "1" * 77
LIVE_NEW = "2" * 77
STALE = "3" * 77
PENDING = "4" * 77
MISSING = "5" * 77
RESYNC = "6" * 77


def quote(**over: str) -> dict[str, str]:
    fields = {
        "bid": "0.48",
        "ask": "0.52",
        "bid_size": "1200.5",
        "ask_size": "300",
        "ts": str(NOW_MS - 1000),
        "updated_at": str(NOW_MS - 2000),
        "seq": "1800000000123456",
        "epoch": EPOCH,
        "status": "live",
        "reason": "",
        "source": "price_change",
    }
    fields.update(over)
    return fields


def summary(**over: str) -> dict[str, str]:
    fields = {
        "epoch": EPOCH,
        "version": "0.4.0",
        "started_at": str(NOW_MS - 3723_000),  # 1h02m03s ago
        "heartbeat_at": str(NOW_MS - 400),
        "desired": "6",
        "live": "2",
        "pending": "1",
        "stale": "1",
        "resyncing": "1",
        "resolved": "0",
        "connections": "3",
        "connections_up": "2",
        "quote_health": "0.3333",
        "invalid_desired": "1",
        "capped_desired": "0",
    }
    fields.update(over)
    return fields


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    red = fakeredis.FakeRedis(decode_responses=True)
    red.hset("pm:sidecar", mapping=summary())
    red.set("pm:sidecar:alive", EPOCH, ex=5)
    red.sadd("pm:desired", LIVE_OLD, LIVE_NEW, STALE, PENDING, MISSING, RESYNC, "not-a-token")
    red.hset(f"pm:quote:{LIVE_OLD}", mapping=quote(updated_at=str(NOW_MS - 45_000)))
    red.hset(f"pm:quote:{LIVE_NEW}", mapping=quote(bid="0.511", ask="0.513", source="book"))
    red.hset(
        f"pm:quote:{STALE}",
        mapping=quote(status="stale", reason="connection_pong_timeout", updated_at=str(NOW_MS - 9_000)),
    )
    red.hset(
        f"pm:quote:{PENDING}",
        mapping=quote(
            status="pending",
            reason="no_first_event_redrive_2",
            bid="",
            ask="",
            bid_size="",
            ask_size="",
            updated_at="",
            source="",
        ),
    )
    red.hset(f"pm:quote:{RESYNC}", mapping=quote(status="resyncing", reason="bbo_mismatch"))
    return red


def snap(r: fakeredis.FakeRedis) -> view.Snapshot:
    return status.read_snapshot(QuoteClient(redis=r), NOW_S)


def test_rows_are_worst_first_and_invalid_members_counted(r: fakeredis.FakeRedis) -> None:
    s = snap(r)
    assert [row.token for row in s.rows] == [STALE, MISSING, RESYNC, PENDING, LIVE_OLD, LIVE_NEW]
    assert s.rows[1].quote is None
    assert s.invalid_desired == 1
    assert s.alive and s.alive_epoch == EPOCH
    assert view.exit_code(s) == 0


def test_header_says_alive_uptime_health_sockets_and_counts(r: fakeredis.FakeRedis) -> None:
    first, second = view.header(snap(r))
    assert first == f"ALIVE  epoch {EPOCH}  up 1h02m  v0.4.0  heartbeat 0.4s ago"
    assert second == (
        "health 0.3333  sockets 2/3  desired 6  live 2  pending 1  stale 1  resyncing 1  invalid 1"
    )


def test_header_shows_the_venue_only_when_it_is_not_up(r: fakeredis.FakeRedis) -> None:
    r.hset("pm:sidecar", mapping={"venue": "up", "venue_since": str(NOW_MS - 600_000)})
    assert "VENUE" not in view.header(snap(r))[1]
    r.hset("pm:sidecar", mapping={"venue": "down", "venue_since": str(NOW_MS - 65_000)})
    assert "resyncing 1  VENUE DOWN for 1m05s  invalid 1" in view.header(snap(r))[1]
    sidecar = view.to_json(snap(r))["sidecar"]
    assert (sidecar["venue"], sidecar["venue_since"]) == ("down", NOW_MS - 65_000)


def test_not_alive_header_and_exit_code_1(r: fakeredis.FakeRedis) -> None:
    r.delete("pm:sidecar:alive")
    s = snap(r)
    assert not s.alive
    assert view.exit_code(s) == 1
    assert view.header(s)[0] == (
        f"NOT ALIVE  (no P sidecar:alive key)  last epoch {EPOCH}  last heartbeat 0.4s ago"
    )
    assert view.to_json(s)["sidecar"]["alive"] is False


def test_table_fits_100_columns_and_shows_each_field(r: fakeredis.FakeRedis) -> None:
    lines = view.table(snap(r))
    assert all(len(line) <= 100 for line in lines)
    assert lines[0].split() == [
        "TOKEN", "STATUS", "BID", "ASK", "BID_SZ", "ASK_SZ", "AGE", "SOURCE", "SEQ", "REASON"
    ]  # fmt: skip
    assert lines[1].split() == [
        "33333..33333", "stale", "0.48", "0.52", "1200.5", "300", "9.0s", "change", "123456",
        "connection_pong_timeout",
    ]  # fmt: skip
    assert lines[2].split() == ["55555..55555", "(no", "hash)"]
    assert lines[4].split() == [
        "44444..44444", "pending", "-", "-", "-", "-", "-", "-", "123456", "no_first_event_redrive_2"
    ]  # fmt: skip
    assert lines[5].split()[:7] == ["11111..11111", "live", "0.48", "0.52", "1200.5", "300", "45s"]
    assert lines[6].split() == [
        "22222..22222",
        "live",
        "0.511",
        "0.513",
        "1200.5",
        "300",
        "2.0s",
        "book",
        "123456",
    ]


def test_narrow_reason_is_cut_with_a_marker_and_wide_terminal_shows_it_whole(r: fakeredis.FakeRedis) -> None:
    s = snap(r)
    narrow = view.table(s, width=90)[1]
    assert len(narrow) == 90 and narrow.endswith("~")
    wide = view.table(s, width=140)[1]
    assert wide.endswith("connection_pong_timeout")


def test_max_rows_keeps_the_worst_and_counts_the_rest(r: fakeredis.FakeRedis) -> None:
    lines = view.table(snap(r), max_rows=3)
    assert [line.split()[0] for line in lines[1:3]] == ["33333..33333", "55555..55555"]
    assert lines[3] == "... 4 more tokens (2 live)"


def test_json_equals_the_hashes(r: fakeredis.FakeRedis) -> None:
    out = view.to_json(snap(r))
    assert out["sidecar"]["alive"] is True
    assert out["sidecar"]["alive_epoch"] == EPOCH
    assert out["sidecar"]["quote_health"] == 0.3333
    assert out["sidecar"]["connections_up"] == 2 and out["sidecar"]["connections"] == 3
    assert out["sidecar"]["uptime_s"] == 3723.0
    by_token = {t["token"]: t for t in out["tokens"]}
    assert [t["token"] for t in out["tokens"]] == [STALE, MISSING, RESYNC, PENDING, LIVE_OLD, LIVE_NEW]
    assert by_token[MISSING] == {"token": MISSING, "status": None, "alive": False}
    new = by_token[LIVE_NEW]
    assert (new["bid"], new["ask"], new["bid_size"], new["ask_size"]) == (0.511, 0.513, 1200.5, 300.0)
    assert (new["status"], new["source"], new["reason"], new["seq"]) == ("live", "book", "", 1800000000123456)
    assert new["age_s"] == 2.0 and new["alive"] is True and new["updated_at"] == NOW_MS - 2000
    pend = by_token[PENDING]
    assert (pend["bid"], pend["ask"], pend["age_s"], pend["updated_at"]) == (None, None, None, None)
    r.set("pm:sidecar:alive", "another-run", ex=5)
    assert view.to_json(snap(r))["tokens"][-1]["alive"] is False
    json.dumps(out)  # serialisable as is


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.44, "0.4s"),
        (9.96, "10.0s"),
        (12.7, "12s"),
        (245, "4m05s"),
        (7380, "2h03m"),
        (266400, "3d02h"),
    ],
)
def test_durations(seconds: float | None, text: str) -> None:
    assert view.fmt_duration(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (None, "-"),
        (0.0, "0"),
        (12.5, "12.5"),
        (9999.99, "9999.99"),
        (12345.67, "12345.7"),
        (99999.99, "100000"),
        (250_000, "250k"),
        (2_500_000.5, "2.5M"),
        (12_340_000, "12.3M"),
        (1.5e13, "1.5e+13"),
    ],
)
def test_sizes_fit_7_columns(size: float | None, text: str) -> None:
    assert view.fmt_size(size) == text
    assert len(text) <= 7


def test_short_token() -> None:
    assert view.short_token("1234567890123456") == "12345..23456"
    assert view.short_token("12345") == "12345"


def test_frame_redraws_over_the_last_without_scrolling() -> None:
    text = view.frame(["a", "b" * 200, "c", "d"], width=50, height=3)
    assert text.startswith(view.HOME)
    assert text.endswith("c" + view.CLEAR_EOL + view.CLEAR_EOS)
    assert "d" not in text  # never more lines than the terminal has: nothing scrolls
    assert "b" * 50 + view.CLEAR_EOL in text and "b" * 51 not in text


def args(**over: object) -> argparse.Namespace:
    base: dict[str, object] = {"watch": None, "json": False, "redis_url": None, "prefix": None}
    base.update(over)
    return argparse.Namespace(**base)


def test_run_exit_codes_and_outputs(r: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status.QuoteClient, "from_env", classmethod(lambda cls, **_: cls(redis=r)))
    out, err = io.StringIO(), io.StringIO()
    assert status.run(args(json=True), out, err) == 0
    assert json.loads(out.getvalue())["sidecar"]["alive"] is True
    assert err.getvalue() == ""
    out = io.StringIO()
    assert status.run(args(), out, err) == 0
    assert out.getvalue().startswith("ALIVE  epoch")
    r.delete("pm:sidecar:alive")
    out = io.StringIO()
    assert status.run(args(json=True), out, err) == 1
    assert json.loads(out.getvalue())["sidecar"]["alive"] is False


def test_unreachable_redis_is_exit_2_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    out, err = io.StringIO(), io.StringIO()
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert status.run(args(redis_url=url), out, err) == 2
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pm-sidecar status: cannot reach Redis at {url}: ")
    assert out.getvalue() == ""


def test_prefix_override_reads_other_keys(r: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[str, str]] = []

    class Recording(QuoteClient):
        """Built by QuoteClient.from_env with the effective URL and prefix: record them."""

        def __init__(self, url: str, prefix: str, **_: object) -> None:
            made.append((url, prefix))
            super().__init__(prefix=prefix, redis=r)

    monkeypatch.setattr(status, "QuoteClient", Recording)
    monkeypatch.setenv("SIDECAR_REDIS_URL", "redis://10.0.0.1:6390/2")
    out = io.StringIO()
    assert status.run(args(prefix="other:", json=True), out, io.StringIO()) == 1  # no other:sidecar:alive
    assert made == [("redis://10.0.0.1:6390/2", "other:")]
    assert json.loads(out.getvalue()) == {
        "sidecar": {"alive": False, "alive_epoch": None},
        "tokens": [],
        "problems": [],
    }


def test_cli_status_imports_no_engine_pydantic_or_websocket() -> None:
    code = (
        "import sys; from sidecar import status, cli; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pydantic', 'prometheus_client', 'websocket')"
        " or m in ('sidecar.core.engine', 'sidecar.shell.app', 'sidecar.config')]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_routes_status(
    r: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sidecar import cli

    monkeypatch.setattr(status.QuoteClient, "from_env", classmethod(lambda cls, **_: cls(redis=r)))
    assert cli.main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sidecar"]["epoch"] == EPOCH


class TtyOut(io.StringIO):
    def isatty(self) -> bool:
        return True


def ctrl_c_after(monkeypatch: pytest.MonkeyPatch, frames: int) -> list[float]:
    """Make --watch's sleep raise KeyboardInterrupt (Ctrl-C) once ``frames`` were drawn."""
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) >= frames:
            raise KeyboardInterrupt

    monkeypatch.setattr(status.time, "sleep", sleep)
    return sleeps


def test_watch_on_a_terminal_uses_the_alternate_screen_and_ctrl_c_exits_0(
    r: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps = ctrl_c_after(monkeypatch, 2)
    out = TtyOut()
    assert status.watch(QuoteClient(redis=r), "redis://x", 0.5, out) == 0
    text = out.getvalue()
    assert sleeps == [0.5, 0.5]
    assert text.startswith(view.ENTER_SCREEN) and text.endswith(view.LEAVE_SCREEN)
    assert text.count(view.HOME) == 2 and text.count("ALIVE  epoch") == 2
    assert "\n\n" not in text.replace("\r\n", "")  # no bare newlines: frames never scroll


def test_watch_keeps_going_while_redis_is_down_and_ctrl_c_still_exits_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctrl_c_after(monkeypatch, 2)
    out = io.StringIO()  # not a terminal: frames one after another, no escape codes
    client = QuoteClient(f"redis://127.0.0.1:{free_port()}/0")
    assert status.watch(client, "redis://down", 0.1, out) == 0
    assert out.getvalue().count("REDIS UNREACHABLE: ") == 2
    assert "\x1b" not in out.getvalue()


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"watch": 0.0}, "pm-sidecar status: --watch SECONDS must be positive\n"),
        (
            {"watch": 1.0, "json": True},
            "pm-sidecar status: --json is one object for scripts; it does not go with --watch\n",
        ),
    ],
)
def test_bad_option_combinations_are_refused(over: dict[str, object], message: str) -> None:
    err = io.StringIO()
    assert status.run(args(**over), io.StringIO(), err) == 2
    assert err.getvalue() == message


# ---- a key of the wrong type is a problem line, not "cannot reach Redis" ----------------------


def run_json(r: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict[str, Any], str]:
    monkeypatch.setattr(status.QuoteClient, "from_env", classmethod(lambda cls, **_: cls(redis=r)))
    out, err = io.StringIO(), io.StringIO()
    code = status.run(args(json=True), out, err)
    return code, json.loads(out.getvalue()), err.getvalue()


@pytest.mark.parametrize("alive", [True, False])
def test_desired_of_the_wrong_type_is_a_problem_and_the_exit_code_follows_alive(
    r: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch, alive: bool
) -> None:
    r.delete("pm:desired")
    r.set("pm:desired", "oops")  # WRONGTYPE for SMEMBERS; the sidecar keeps its last set
    if not alive:
        r.delete("pm:sidecar:alive")
    code, out, err = run_json(r, monkeypatch)
    assert (code, err) == (0 if alive else 1, "")
    assert out["problems"] == [
        "pm:desired is a string, not a set (the sidecar keeps its last set; no tokens shown)"
    ]
    assert out["sidecar"]["alive"] is alive and out["sidecar"]["epoch"] == EPOCH  # the rest is read
    assert out["tokens"] == []
    text, err_io = io.StringIO(), io.StringIO()
    assert status.run(args(), text, err_io) == (0 if alive else 1)
    lines = text.getvalue().splitlines()
    assert (
        lines[2]
        == "PROBLEM: pm:desired is a string, not a set (the sidecar keeps its last set; no tokens shown)"
    )
    assert err_io.getvalue() == ""


def test_summary_and_quote_of_the_wrong_type_are_problems_and_the_rest_is_shown(
    r: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    r.delete("pm:sidecar", f"pm:quote:{STALE}")
    r.rpush("pm:sidecar", "x")
    r.sadd(f"pm:quote:{STALE}", "x")
    code, out, err = run_json(r, monkeypatch)
    assert (code, err) == (0, "")
    assert out["problems"] == [
        "pm:sidecar is a list, not a hash (summary not shown)",
        f"pm:quote:{STALE} is a set, not a hash (shown as no hash)",
    ]
    assert out["sidecar"] == {"alive": True, "alive_epoch": EPOCH}
    by_token = {t["token"]: t for t in out["tokens"]}
    assert len(by_token) == 6
    assert by_token[STALE] == {"token": STALE, "status": None, "alive": False}
    assert by_token[LIVE_NEW]["bid"] == 0.511 and by_token[LIVE_NEW]["alive"] is True


def test_alive_key_of_the_wrong_type_reads_as_not_alive_and_quotes_are_still_shown(
    r: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    r.delete("pm:sidecar:alive")
    r.hset("pm:sidecar:alive", "x", "1")
    code, out, err = run_json(r, monkeypatch)
    assert (code, err) == (1, "")
    assert out["problems"] == ["pm:sidecar:alive is a hash, not a string (read as not alive)"]
    by_token = {t["token"]: t for t in out["tokens"]}
    assert by_token[LIVE_NEW]["status"] == "live" and by_token[LIVE_NEW]["alive"] is False


def test_watch_shows_a_wrong_typed_key_as_a_problem_not_redis_unreachable(
    r: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctrl_c_after(monkeypatch, 1)
    r.delete("pm:desired")
    r.hset("pm:desired", "x", "1")
    out = io.StringIO()
    assert status.watch(QuoteClient(redis=r), "redis://x", 0.5, out) == 0
    assert "UNREACHABLE" not in out.getvalue()
    assert "PROBLEM: pm:desired is a hash, not a set" in out.getvalue()
    assert "ALIVE  epoch" in out.getvalue()


@pytest.mark.parametrize(
    "error",
    [
        redis.AuthenticationError("WRONGPASS invalid username-password pair"),
        redis.TimeoutError("Timeout reading from socket"),
        redis.ConnectionError("Connection reset by peer"),
    ],
)
def test_unreachable_kinds_are_exit_2(
    r: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch, error: redis.RedisError
) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise error

    monkeypatch.setattr(r, "hgetall", refuse)
    monkeypatch.delenv("SIDECAR_REDIS_URL", raising=False)
    monkeypatch.setattr(status.QuoteClient, "from_env", classmethod(lambda cls, **_: cls(redis=r)))
    out, err = io.StringIO(), io.StringIO()
    assert status.run(args(json=True), out, err) == 2
    assert err.getvalue() == f"pm-sidecar status: cannot reach Redis at redis://127.0.0.1:6379/0: {error}\n"
    assert out.getvalue() == ""
