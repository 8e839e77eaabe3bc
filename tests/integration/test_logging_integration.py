"""The real sidecar's log output: SIDECAR_LOG_FORMAT=json lines with structured fields, and syslog
priority prefixes when its stderr is the stream JOURNAL_STREAM names (as under systemd)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pmsim import Simulator

from devkit.procs import SidecarProcess, sidecar_env
from devkit.redis_server import RedisServer
from devkit.wait import wait_for
from sidecar.client import QuoteClient

pytestmark = pytest.mark.integration


def start(redis_server: RedisServer, sim: Simulator, log: Path, journal: bool, **over: str) -> SidecarProcess:
    env = sidecar_env(redis_server.url, sim.ws_url, sim.rest_url, **over)
    log.write_bytes(b"")  # SidecarProcess reopens it with "wb": same inode, so JOURNAL_STREAM matches
    if journal:
        st = os.stat(log)
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    else:
        env["JOURNAL_STREAM"] = "1:1"  # inherited from a unit but not our stream: no prefixes
    return SidecarProcess(env, log)


def lines(proc: SidecarProcess) -> list[str]:
    return [line for line in proc.log().splitlines() if line]


def test_json_logs_under_journald_carry_priorities_and_fields(
    redis_server: RedisServer, sim: Simulator, tmp_path: Path
) -> None:
    market = sim.add_market()
    token = sim.markets()[market][0]
    client = QuoteClient(redis_server.url)
    client.set_wanted([token])
    proc = start(redis_server, sim, tmp_path / "journal.log", journal=True, log_format="json")
    try:
        wait_for(lambda: (q := client.get(token)) is not None and q.live, 15, what="live")
        wait_for(lambda: any("ready" in line for line in lines(proc)), 5, what="the ready line")
        for _ in range(3):  # one line, then counted: repeats are rate-limited
            sim.send_raw("{not json")
        wait_for(lambda: any("bad_json" in line for line in lines(proc)), 5, what="the parse warning")
        sim.wait_drained()
        assert proc.terminate() == 0
    finally:
        proc.stop()
        client.close()
    out = lines(proc)
    assert out and all(line.startswith(("<6>{", "<4>{", "<3>{")) for line in out), out[:5]
    objs = [json.loads(line[3:]) for line in out]
    assert {o["level"] for o in objs} >= {"INFO", "WARNING"}
    for line, obj in zip(out, objs, strict=True):
        assert line[:3] == {"INFO": "<6>", "WARNING": "<4>", "ERROR": "<3>"}[obj["level"]]
        assert set(obj) >= {"time", "level", "logger", "message"}
    bad = [o for o in objs if o.get("reason") == "bad_json"]
    assert len(bad) == 1, bad
    assert bad[0]["level"] == "WARNING" and bad[0]["count"] == 1 and isinstance(bad[0]["conn"], int)
    assert bad[0]["message"].startswith(f"malformed frame on socket {bad[0]['conn']}: bad_json")


def test_text_logs_elsewhere_have_no_prefixes(
    redis_server: RedisServer, sim: Simulator, tmp_path: Path
) -> None:
    proc = start(redis_server, sim, tmp_path / "plain.log", journal=False)
    try:
        wait_for(lambda: any("ready" in line for line in lines(proc)), 15, what="the ready line")
        assert proc.terminate() == 0
    finally:
        proc.stop()
    out = lines(proc)
    assert out and not any(line.startswith("<") for line in out)
    assert any(" INFO sidecar: ready: metrics up, Redis connected" in line for line in out)
    assert out[0][:4].isdigit()  # the time first, as before
