"""The ws_cache.json bridge without a real Redis: entry rules and membership (pure core), and the
shell's cycle, heartbeat, error handling and atomic write against fakeredis."""

from __future__ import annotations

import json
import logging
import math
import os
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import fakeredis
import pytest
import redis

from sidecar.bridge import DEFAULT_POLL_S, Bridge, write_atomic
from sidecar.bridge_core import BridgeState, CacheEntry, entry_for, entry_from_json
from sidecar.client import QuoteClient
from sidecar.client.quote import Quote, quote_from_fields

NOW_S = 1_800_000_000.0
A = "1" * 20
B = "2" * 20
C = "3" * 20
EPOCH = "e1"
CONFIRMED_MS = int((NOW_S - 2.5) * 1000)


def fields(**over: str) -> dict[str, str]:
    base = {
        "bid": "0.511",
        "ask": "0.514",
        "bid_size": "120",
        "ask_size": "33",
        "ts": "1799999999000",
        "updated_at": str(CONFIRMED_MS),
        "seq": "100",
        "epoch": EPOCH,
        "status": "live",
        "reason": "",
        "source": "price_change",
        "tick_size": "0.001",
    }
    base.update(over)
    return base


def quote(token: str = A, alive: str | None = EPOCH, **over: str) -> Quote:
    q = quote_from_fields(token, fields(**over), alive, NOW_S)
    assert q is not None
    return q


def as_json(entry: CacheEntry) -> dict[str, object]:
    return entry.as_json(NOW_S)


# ---- one entry --------------------------------------------------------------------------------


def test_a_live_quote_becomes_the_entry_workers_read() -> None:
    assert as_json(entry_for(quote(), None)) == {
        "best_bid": 0.511,
        "best_ask": 0.514,
        "price": pytest.approx(0.5125),  # no trade: the mid
        "ts": 1799999999000,
        "updated_at": CONFIRMED_MS / 1000,
        "seq": 100,
        "event_type": "price_change",
        "quote_status": "live",
        "age_s": 2.5,
        "bid_empty": False,
        "ask_empty": False,
        "sidecar_alive": True,
        "tick_size": 0.001,
    }


def test_price_is_the_last_trade_when_known() -> None:
    assert entry_for(quote(last_trade_price="0.52"), None).price == 0.52


@pytest.mark.parametrize("status", ["stale", "pending", "resyncing", "unsubscribed"])
def test_not_live_means_zero_prices_and_the_last_confirmation(status: str) -> None:
    entry = as_json(entry_for(quote(status=status, reason="x", last_trade_price="0.5"), None))
    assert (entry["best_bid"], entry["best_ask"], entry["price"]) == (0.0, 0.0, 0.0)
    assert entry["updated_at"] == CONFIRMED_MS / 1000
    assert entry["quote_status"] == status
    assert entry["sidecar_alive"] is True
    assert "status" not in entry and "market_closed" not in entry


@pytest.mark.parametrize("alive", [None, "e2"])
def test_a_live_hash_of_a_dead_sidecar_has_zero_prices(alive: str | None) -> None:
    entry = entry_for(quote(alive=alive), None)
    assert (entry.best_bid, entry.best_ask, entry.price, entry.sidecar_alive) == (0.0, 0.0, 0.0, False)
    assert entry.quote_status == "live"


def test_an_empty_side_is_zero_and_flagged_and_has_no_mid() -> None:
    entry = entry_for(quote(bid="", bid_size=""), None)
    assert (entry.best_bid, entry.best_ask, entry.price) == (0.0, 0.514, 0.0)
    assert (entry.bid_empty, entry.ask_empty) == (True, False)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_a_non_finite_number_is_unknown_and_the_file_stays_json(bad: str) -> None:
    state = BridgeState()
    state.apply(frozenset({A}), {A: quote(bid=bad, last_trade_price=bad, tick_size=bad)})
    entry = json.loads(state.document(NOW_S))["tokens"][A]
    assert (entry["best_bid"], entry["best_ask"], entry["price"], entry["tick_size"]) == (
        0.0,
        0.514,
        0.0,
        None,
    )


def test_resolved_carries_the_keys_workers_exit_on() -> None:
    entry = as_json(entry_for(quote(status="resolved", reason="won"), None))
    assert entry["market_closed"] is True
    assert entry["status"] == "resolved"
    assert (entry["best_bid"], entry["best_ask"], entry["price"]) == (0.0, 0.0, 0.0)


def test_a_restarted_sidecars_pending_hash_keeps_the_last_confirmation() -> None:
    last = entry_for(quote(), None)
    entry = entry_for(quote(status="pending", updated_at="", ts="", epoch=EPOCH), last)
    assert entry.updated_at == CONFIRMED_MS / 1000
    assert entry.ts == 1799999999000


def test_unreachable_redis_means_not_alive() -> None:
    entry = entry_for(quote(), None, reachable=False)
    assert (entry.best_bid, entry.price, entry.sidecar_alive) == (0.0, 0.0, False)
    assert entry.updated_at == CONFIRMED_MS / 1000


# ---- membership -------------------------------------------------------------------------------


def test_an_entry_appears_only_once_seen_live_and_alive() -> None:
    state = BridgeState()
    desired = frozenset({A})
    assert not state.apply(desired, {A: quote(status="pending", updated_at="")})
    assert not state.apply(desired, {A: quote(alive="old-run")})  # a dead run's 'live' is not live
    assert not state.apply(desired, {A: None})
    assert A not in state.entries
    assert state.apply(desired, {A: quote()})
    assert state.entries[A].best_bid == 0.511


def test_an_entry_stays_while_desired_with_zero_prices_and_goes_when_removed() -> None:
    state = BridgeState()
    state.apply(frozenset({A, B}), {A: quote(), B: quote(B)})
    assert state.apply(frozenset({A, B}), {A: quote(status="stale", seq="101"), B: quote(B)})
    assert state.entries[A].best_bid == 0.0
    assert state.entries[A].updated_at == CONFIRMED_MS / 1000
    assert state.apply(frozenset({B}), {B: quote(B)})
    assert set(state.entries) == {B}


def test_nothing_changed_is_no_change_and_a_confirmation_is_one() -> None:
    state = BridgeState()
    state.apply(frozenset({A}), {A: quote()})
    assert not state.apply(frozenset({A}), {A: quote()})
    assert state.apply(frozenset({A}), {A: quote(updated_at=str(CONFIRMED_MS + 900))})


def test_a_missing_hash_keeps_the_entry_as_missing() -> None:
    state = BridgeState()
    state.apply(frozenset({A}), {A: quote()})
    assert state.apply(frozenset({A}), {A: None})
    entry = state.entries[A]
    assert (entry.quote_status, entry.best_bid, entry.sidecar_alive) == ("missing", 0.0, False)
    assert entry.updated_at == CONFIRMED_MS / 1000


def test_redis_unreadable_turns_every_entry_not_alive_and_back() -> None:
    state = BridgeState()
    state.apply(frozenset({A}), {A: quote()})
    assert state.apply(frozenset({A}), None)
    assert (state.entries[A].best_bid, state.entries[A].sidecar_alive) == (0.0, False)
    assert state.apply(frozenset({A}), {A: quote()})
    assert state.entries[A].best_bid == 0.511


def test_an_empty_desired_set_after_a_reconnect_is_held_for_the_grace_then_applied() -> None:
    state = BridgeState(empty_grace_s=60.0)
    assert state.effective_desired([A], NOW_S) == {A}
    state.reconnected(NOW_S + 1)  # start, or Redis readable again after a failed read
    assert state.effective_desired(None, NOW_S + 1) == {A}  # read failed: keep
    assert state.effective_desired([], NOW_S + 2) == {A}
    assert state.effective_desired([], NOW_S + 60.9) == {A}
    assert state.effective_desired([], NOW_S + 61) == frozenset()
    assert state.effective_desired([B], NOW_S + 62) == {B}


def test_a_deliberately_emptied_desired_set_is_applied_at_once() -> None:
    """Issue 10: an entry goes when its token leaves the set, also when the set is emptied."""
    state = BridgeState(empty_grace_s=60.0)
    state.reconnected(NOW_S)
    assert state.effective_desired([A], NOW_S + 1) == {A}
    assert state.effective_desired([], NOW_S + 60) == frozenset()  # the grace is over
    assert state.effective_desired([A], NOW_S + 61) == {A}
    assert state.effective_desired([], NOW_S + 61.1) == frozenset()  # no reconnect: at once
    never = BridgeState(empty_grace_s=60.0)
    never.effective_desired([A], NOW_S)
    assert never.effective_desired([], NOW_S + 0.1) == frozenset()


def test_a_removal_that_leaves_tokens_is_applied_at_once() -> None:
    state = BridgeState()
    state.effective_desired([A, B], NOW_S)
    assert state.effective_desired([B], NOW_S + 0.1) == {B}


def test_a_previous_runs_entries_stay_zeroed_until_redis_says_otherwise() -> None:
    state = BridgeState()
    state.apply(frozenset({A, B}), {A: quote(), B: quote(B)})
    state.apply(frozenset({A, B}), {A: quote(), B: quote(B, status="resolved")})
    written = json.loads(state.document(NOW_S))["tokens"]
    restarted = BridgeState()
    restarted.seed({t: e for t, e in ((t, entry_from_json(o)) for t, o in written.items()) if e})
    assert as_json(restarted.entries[A]) == {
        **written[A],
        "best_bid": 0.0,
        "best_ask": 0.0,
        "price": 0.0,
        "sidecar_alive": False,
        "age_s": 2.5,
    }
    assert restarted.entries[B].quote_status == "resolved"
    # Redis still down: the seeded set is the desired set, nothing vanishes.
    desired = restarted.effective_desired(None, NOW_S)
    assert not restarted.apply(desired, None)
    assert set(restarted.entries) == {A, B}
    # First good read: A stale (kept, although this run never saw it live), B no longer desired.
    desired = restarted.effective_desired([A, C], NOW_S)
    assert restarted.apply(desired, {A: quote(status="stale", seq="101"), C: quote(C, status="pending")})
    assert set(restarted.entries) == {A}
    assert restarted.entries[A].sidecar_alive is True


def test_a_malformed_previous_entry_is_skipped() -> None:
    assert entry_from_json("x") is None
    entry = entry_from_json({"updated_at": True, "seq": "7"})
    assert entry is not None and (entry.updated_at, entry.seq, entry.quote_status) == (None, 0, "missing")


@pytest.mark.parametrize("key", ["updated_at", "tick_size", "seq", "ts"])
@pytest.mark.parametrize("bad", ["Infinity", "-Infinity", "NaN", "1" + "0" * 400])
def test_a_non_finite_number_in_a_previous_entry_makes_it_malformed(key: str, bad: str) -> None:
    obj = json.loads(f'{{"{key}": {bad}, "quote_status": "live"}}')
    assert entry_from_json(obj) is None


def test_a_leftover_file_with_infinity_neither_crashes_nor_poisons_the_write(fake, tmp_path: Path) -> None:
    path = tmp_path / "ws_cache.json"
    tokens = {
        A: {"updated_at": math.inf, "quote_status": "live"},
        B: {"seq": math.inf},
        C: {"updated_at": 1.5, "seq": 3, "quote_status": "stale"},
    }
    path.write_text(json.dumps({"updated_at": "x", "tokens": tokens}))  # Infinity, as Python writes it
    assert "Infinity" in path.read_text()
    fake.down = True  # the seeded entries are all the bridge has
    bridge = make_bridge(fake, path)
    bridge.prepare()
    bridge.cycle()
    tokens = read(path)["tokens"]
    assert set(tokens) == {C}
    assert (tokens[C]["updated_at"], tokens[C]["seq"], tokens[C]["best_bid"]) == (1.5, 3, 0.0)


def test_the_document_parses_with_an_iso_utc_stamp_and_sorted_tokens() -> None:
    state = BridgeState()
    state.apply(frozenset({A, B}), {A: quote(), B: quote(B)})
    state.apply(frozenset({A, B}), {A: quote(), B: quote(B, status="resolved")})
    doc = json.loads(state.document(NOW_S + 1.5))
    assert datetime.fromisoformat(doc["updated_at"]).timestamp() == NOW_S + 1.5
    assert doc["updated_at"].endswith("+00:00")
    assert list(doc["tokens"]) == [A, B]
    assert doc["tokens"][A]["age_s"] == 4.0
    assert doc["tokens"][B]["status"] == "resolved"


# ---- the shell against fakeredis ----------------------------------------------------------------


class FailingRedis(fakeredis.FakeRedis):
    """Redis that can be switched off."""

    down = False

    def execute_command(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.down:
            raise redis.ConnectionError("Connection refused")
        return super().execute_command(*args, **kwargs)


@pytest.fixture
def fake() -> FailingRedis:
    return FailingRedis(decode_responses=True)


def read(path: Path) -> dict[str, dict[str, object]]:
    return json.loads(path.read_bytes())


def put(r: redis.Redis, token: str, **over: str) -> None:
    r.hset(f"pm:quote:{token}", mapping=fields(**over))


def sidecar_wrote(r: redis.Redis, *tokens: str, **over: str) -> None:
    """A running sidecar (alive key ``EPOCH``) quoting ``tokens``, all desired."""
    r.set("pm:sidecar:alive", EPOCH)
    r.sadd("pm:desired", *tokens)
    for token in tokens:
        put(r, token, **over)


def make_bridge(
    r: redis.Redis, path: Path, heartbeat_s: float = 30.0, poll_s: float = DEFAULT_POLL_S
) -> Bridge:
    return Bridge(QuoteClient(redis=r), path, heartbeat_s=heartbeat_s, poll_s=poll_s)


def test_cycle_writes_the_file_from_redis_and_follows_the_desired_set(fake, tmp_path: Path) -> None:
    path = tmp_path / "ws_cache.json"
    fake.set("pm:sidecar:alive", EPOCH)
    fake.sadd("pm:desired", A, B, "not-a-token")
    put(fake, A)
    put(fake, B, status="pending", updated_at="")
    bridge = make_bridge(fake, path)
    bridge.cycle()
    assert set(read(path)["tokens"]) == {A}
    assert read(path)["tokens"][A]["best_bid"] == 0.511
    put(fake, B)
    bridge.cycle()
    assert set(read(path)["tokens"]) == {A, B}
    fake.srem("pm:desired", A)
    bridge.cycle()
    assert set(read(path)["tokens"]) == {B}
    writes = bridge.writes
    bridge.cycle()
    assert bridge.writes == writes  # nothing changed, heartbeat not due: no write


def test_a_desired_key_of_the_wrong_type_keeps_the_last_set(fake, tmp_path: Path) -> None:
    path = tmp_path / "ws_cache.json"
    sidecar_wrote(fake, A)
    bridge = make_bridge(fake, path)
    bridge.cycle()
    fake.delete("pm:desired")
    fake.set("pm:desired", "oops")
    put(fake, A, bid="0.5", seq="101")
    bridge.cycle()
    entry = read(path)["tokens"][A]
    assert (entry["best_bid"], entry["sidecar_alive"]) == (0.5, True)


def test_heartbeat_rewrites_an_unchanged_file(fake, tmp_path: Path) -> None:
    path = tmp_path / "ws_cache.json"
    bridge = make_bridge(fake, path, 0.05)
    bridge.cycle()
    first = read(path)["updated_at"]
    bridge._last_write -= 0.05
    bridge.cycle()
    assert bridge.writes == 2
    assert read(path)["updated_at"] > first


def test_redis_down_zeroes_the_prices_and_recovers(fake, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.bridge")
    path = tmp_path / "ws_cache.json"
    sidecar_wrote(fake, A)
    bridge = make_bridge(fake, path)
    bridge.cycle()
    fake.down = True
    bridge.cycle()
    bridge.cycle()
    entry = read(path)["tokens"][A]
    assert (entry["best_bid"], entry["sidecar_alive"]) == (0.0, False)
    assert sum("cannot read Redis" in r.message for r in caplog.records) == 1
    fake.down = False
    bridge.cycle()
    assert read(path)["tokens"][A]["best_bid"] == 0.511
    assert any("Redis readable again" in r.message for r in caplog.records)


def test_a_stopped_bridge_leaves_zero_prices(fake, tmp_path: Path) -> None:
    path = tmp_path / "ws_cache.json"
    sidecar_wrote(fake, A)
    bridge = make_bridge(fake, path, 30.0, poll_s=0.01)
    bridge.stop.set()
    bridge.cycle()
    assert read(path)["tokens"][A]["best_bid"] == 0.511
    assert bridge.run() == 0
    entry = read(path)["tokens"][A]
    assert (entry["best_bid"], entry["sidecar_alive"]) == (0.0, False)


def test_a_restarted_bridge_keeps_the_previous_entries(fake, tmp_path: Path) -> None:
    path = tmp_path / "ws_cache.json"
    path.write_text(json.dumps({"updated_at": "x", "tokens": {A: {}, B: {}}}))
    (tmp_path / ".ws_cache.json.999.tmp").write_text("half")
    sidecar_wrote(fake, A, status="stale")
    bridge = make_bridge(fake, path)
    bridge.prepare()
    bridge.cycle()
    assert set(read(path)["tokens"]) == {A}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws_cache.json"]


def test_a_bridge_restarted_while_redis_is_down_keeps_every_entry_zeroed(fake, tmp_path: Path) -> None:
    path = tmp_path / "ws_cache.json"
    sidecar_wrote(fake, A, B)
    first = make_bridge(fake, path)
    first.cycle()
    fake.down = True
    second = make_bridge(fake, path)
    second.prepare()
    second.cycle()
    tokens = read(path)["tokens"]
    assert set(tokens) == {A, B}
    assert all(e["best_bid"] == 0.0 and e["sidecar_alive"] is False for e in tokens.values())
    assert tokens[A]["updated_at"] == CONFIRMED_MS / 1000 and tokens[A]["quote_status"] == "live"
    fake.down = False
    second.cycle()
    assert read(path)["tokens"][A]["best_bid"] == 0.511


def test_write_atomic_is_readable_by_others_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "ws_cache.json"
    old = os.umask(0o077)
    try:
        write_atomic(path, b"{}\n")
        write_atomic(path, b'{"a":1}\n')
    finally:
        os.umask(old)
    assert path.read_bytes() == b'{"a":1}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["ws_cache.json"]


def test_bad_arguments_exit_78_with_one_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "sidecar", "bridge", "--ws-cache", str(tmp_path / "nodir" / "c.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 78
    assert "does not exist" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_an_invalid_redis_url_exits_78_with_one_line_and_no_password(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "sidecar", "bridge", "--ws-cache", str(tmp_path / "c.json")]
    env = {**os.environ, "SIDECAR_REDIS_URL": "foo://user:s3cret@host/0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode == 78
    assert "invalid SIDECAR_REDIS_URL" in proc.stderr and "s3cret" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_bridge_imports_neither_pydantic_nor_the_engine() -> None:
    code = (
        "import sys, sidecar.cli, sidecar.bridge; "
        "bad = [m for m in sys.modules if m in ('pydantic', 'websocket', 'websockets', 'prometheus_client', "
        "'sidecar.config') or m.startswith(('sidecar.core', 'sidecar.shell'))]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "[]", out.stderr


def test_an_emptied_set_drops_the_entries_at_once_unless_redis_just_came_back(fake, tmp_path: Path) -> None:
    path = tmp_path / "ws_cache.json"
    sidecar_wrote(fake, A)
    bridge = make_bridge(fake, path)
    assert bridge.state.hold_empty_until is not None  # the start opens the grace
    bridge.state.hold_empty_until = None  # ... which is over
    bridge.cycle()
    fake.delete("pm:desired")  # set_wanted([])
    bridge.cycle()
    assert read(path)["tokens"] == {}
    fake.sadd("pm:desired", A)
    bridge.cycle()
    assert set(read(path)["tokens"]) == {A}
    fake.down = True
    bridge.cycle()
    fake.down = False
    fake.delete("pm:desired")  # Redis came back empty
    bridge.cycle()
    assert set(read(path)["tokens"]) == {A}  # held for the grace
    assert bridge.state.hold_empty_until is not None
    bridge.state.hold_empty_until -= bridge.state.empty_grace_s  # the grace has passed
    bridge.cycle()
    assert read(path)["tokens"] == {}


def bridge_stderr(tmp_path: Path, **env: str) -> list[str]:
    """The stderr lines of a bridge that exits at once (no directory for its file), written to a
    file whose device:inode JOURNAL_STREAM may name."""
    err = tmp_path / "stderr"
    err.write_bytes(b"")
    st = err.stat()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_LOG", "JOURNAL_"))}
    environ.update({k: v.replace("@", f"{st.st_dev}:{st.st_ino}") for k, v in env.items()})
    cmd = [sys.executable, "-m", "sidecar", "bridge", "--ws-cache", str(tmp_path / "nodir" / "c.json")]
    with err.open("wb") as stderr:
        proc = subprocess.run(cmd, stderr=stderr, timeout=30, env=environ)
    assert proc.returncode == 78
    return err.read_text().splitlines()


def test_bridge_errors_carry_syslog_priorities_under_journald(tmp_path: Path) -> None:
    (line,) = bridge_stderr(tmp_path, JOURNAL_STREAM="@")
    assert line.startswith("<3>ERROR sidecar.bridge: bridge: directory "), line
    (line,) = bridge_stderr(tmp_path, JOURNAL_STREAM="1:2")  # inherited, not our stream
    assert line.split()[2:4] == ["ERROR", "sidecar.bridge:"], line


def test_bridge_logs_json_lines_when_asked(tmp_path: Path) -> None:
    (line,) = bridge_stderr(tmp_path, SIDECAR_LOG_FORMAT="json")
    obj = json.loads(line)
    assert (obj["level"], obj["logger"]) == ("ERROR", "sidecar.bridge")
    assert obj["message"].startswith("bridge: directory ") and obj["message"].endswith("does not exist")
    (line,) = bridge_stderr(tmp_path, SIDECAR_LOG_FORMAT="json", JOURNAL_STREAM="@")
    assert line.startswith("<3>{") and json.loads(line[3:])["level"] == "ERROR"


def test_an_invalid_log_setting_exits_78_with_one_line(tmp_path: Path) -> None:
    (line,) = bridge_stderr(tmp_path, SIDECAR_LOG_FORMAT="xml")
    assert "SIDECAR_LOG_FORMAT must be one of text, json, not 'xml'" in line
