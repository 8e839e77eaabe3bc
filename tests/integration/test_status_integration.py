"""``pm-sidecar status`` against a real redis-server, the running sidecar and the simulator, and
``status --watch`` in a real terminal (tmux)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from pmsim import Simulator

from devkit.procs import SidecarProcess
from devkit.redis_server import RedisServer
from devkit.wait import wait_for
from sidecar import status_view as view
from sidecar.client import QuoteClient

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
P = "pm:"
PM_SIDECAR = Path(sys.executable).parent / "pm-sidecar"


def run_status(redis_url: str, *extra: str, script: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env["SIDECAR_REDIS_URL"] = redis_url
    cmd = [str(PM_SIDECAR)] if script else [sys.executable, "-m", "sidecar"]
    return subprocess.run(
        [*cmd, "status", *extra], env=env, cwd=REPO, capture_output=True, text=True, timeout=20
    )


def num(text: str) -> float | None:
    return float(text) if text else None


def test_status_shows_the_hashes_then_not_alive_then_no_redis(
    redis_server: RedisServer, sim: Simulator, sidecar: Callable[..., SidecarProcess]
) -> None:
    markets = [sim.add_market() for _ in range(3)]
    tokens = [t for m in markets for t in sim.markets()[m]]
    client = QuoteClient(redis_server.url)
    client.set_wanted(tokens)
    proc = sidecar()
    r = redis_server.client()
    wait_for(
        lambda: all(q is not None and q.live for q in client.get_many(tokens).values()), 15, what="all live"
    )
    wait_for(lambda: r.hget(P + "sidecar", "live") == str(len(tokens)), 5, what="summary counts them")

    done = run_status(redis_server.url, "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    hashes = {t: r.hgetall(P + "quote:" + t) for t in tokens}
    summary = r.hgetall(P + "sidecar")
    side = out["sidecar"]
    assert side["alive"] is True and side["alive_epoch"] == r.get(P + "sidecar:alive") == summary["epoch"]
    for name in ("desired", "live", "pending", "stale", "resyncing", "connections", "connections_up"):
        assert side[name] == int(summary[name]), name
    assert side["quote_health"] == float(summary["quote_health"]) == 1.0
    assert sorted(t["token"] for t in out["tokens"]) == sorted(tokens)
    for row in out["tokens"]:
        h = hashes[row["token"]]
        assert (row["status"], row["reason"], row["source"], row["epoch"]) == (
            h["status"],
            h["reason"],
            h["source"],
            h["epoch"],
        )
        assert (row["bid"], row["ask"]) == (num(h["bid"]), num(h["ask"]))
        assert (row["bid_size"], row["ask_size"]) == (num(h["bid_size"]), num(h["ask_size"]))
        assert row["seq"] == int(h["seq"]) and row["updated_at"] == int(h["updated_at"])
        truth = sim.truth(row["token"])
        assert (h["bid"], h["ask"]) == (truth.bid, truth.ask)

    done = run_status(redis_server.url, script=True)  # the installed pm-sidecar entry point
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"ALIVE  epoch {summary['epoch']}  up ")
    assert lines[1].startswith(f"health 1.0000  sockets 1/1  desired {len(tokens)}  live {len(tokens)}  ")
    rows = {cells[0]: cells for cells in (line.split() for line in lines[4:])}
    assert len(rows) == len(tokens) and all(len(line) <= 100 for line in lines)
    for token in tokens:
        h = hashes[token]
        cells = rows[view.short_token(token)]
        assert cells[1:4] == [h["status"], h["bid"], h["ask"]]
        assert cells[-1] == h["seq"][-6:]

    assert proc.terminate() == 0  # SIGTERM: clean stop, alive key deleted
    done = run_status(redis_server.url, "--json")
    assert done.returncode == 1, done.stderr
    out = json.loads(done.stdout)
    assert out["sidecar"]["alive"] is False and out["sidecar"]["alive_epoch"] is None
    assert {t["status"] for t in out["tokens"]} == {"stale"}
    assert {t["reason"] for t in out["tokens"]} == {"sidecar_stopped"}
    done = run_status(redis_server.url)
    assert done.returncode == 1 and done.stdout.startswith("NOT ALIVE  (no P sidecar:alive key)")

    redis_server.stop()
    started = time.monotonic()
    done = run_status(redis_server.url)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"pm-sidecar status: cannot reach Redis at {redis_server.url}: ")
    assert time.monotonic() - started < 10  # refused at once; the client's timeouts are 2 s
    client.close()
    r.close()


def test_wrong_typed_keys_are_problems_and_only_unreachable_redis_is_exit_2(
    redis_server: RedisServer,
) -> None:
    """WRONGTYPE on ``P desired`` / ``P sidecar`` is a PROBLEM line with exit 0/1 by the alive
    key; an authentication failure (NOAUTH) is exit 2, like a refused connection."""
    r = redis_server.client()
    r.set(P + "desired", "not a set")
    r.rpush(P + "sidecar", "not a hash")
    r.set(P + "sidecar:alive", "epoch-1", ex=30)
    done = run_status(redis_server.url, "--json")
    assert (done.returncode, done.stderr) == (0, "")
    out = json.loads(done.stdout)
    assert out["problems"] == [
        f"{P}sidecar is a list, not a hash (summary not shown)",
        f"{P}desired is a string, not a set (the sidecar keeps its last set; no tokens shown)",
    ]
    assert out["sidecar"] == {"alive": True, "alive_epoch": "epoch-1"} and out["tokens"] == []
    r.delete(P + "sidecar:alive")
    done = run_status(redis_server.url)
    assert (done.returncode, done.stderr) == (1, "")
    assert f"PROBLEM: {P}desired is a string, not a set" in done.stdout

    r.config_set("requirepass", "s3cret")
    done = run_status(redis_server.url)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"pm-sidecar status: cannot reach Redis at {redis_server.url}: ")
    assert "auth" in done.stderr.lower()
    r.close()


# ---- --watch in a real terminal ------------------------------------------------------------------


class Tmux:
    """A private tmux server (its own socket) running one command in a 100x30 pane."""

    def __init__(self, tmp: Path) -> None:
        self.socket = str(tmp / "tmux.sock")

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=10,
            env={**os.environ, "TERM": "xterm-256color"},
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def pane(self) -> list[str]:
        return self("capture-pane", "-p", "-t", "w").splitlines()

    def pane_with(self, text: str) -> list[str] | None:
        """The pane's lines when one of them contains ``text`` (for ``wait_for``)."""
        lines = self.pane()
        return lines if any(text in line for line in lines) else None

    def var(self, name: str) -> str:
        return self("display-message", "-p", "-t", "w", f"#{{{name}}}").strip()


def fake_sidecar(r: redis.Redis, token: str, bid: str) -> None:
    now_ms = int(time.time() * 1000)
    r.hset(
        P + "sidecar",
        mapping={
            "epoch": "e-watch",
            "version": "test",
            "started_at": str(now_ms - 65_000),
            "heartbeat_at": str(now_ms),
            "desired": "1",
            "live": "1",
            "pending": "0",
            "stale": "0",
            "resyncing": "0",
            "resolved": "0",
            "connections": "1",
            "connections_up": "1",
            "quote_health": "1.0000",
        },
    )
    r.set(P + "sidecar:alive", "e-watch", ex=60)
    r.sadd(P + "desired", token)
    r.hset(
        P + "quote:" + token,
        mapping={
            "bid": bid,
            "ask": "0.61",
            "bid_size": "10",
            "ask_size": "20",
            "updated_at": str(now_ms),
            "seq": str(now_ms * 1000),
            "epoch": "e-watch",
            "status": "live",
            "reason": "",
            "source": "book",
        },
    )


def test_watch_redraws_in_place_in_a_real_terminal_and_ctrl_c_exits_0(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    if shutil.which("tmux") is None:
        if os.environ.get("SIDECAR_TEST_REQUIRE_REDIS") == "1":
            pytest.fail("tmux is required in CI (.ci/run installs it) but not installed")
        pytest.skip("tmux not installed")
    r = redis_server.client()
    token = "7" * 77
    fake_sidecar(r, token, bid="0.41")
    rc_file = tmp_path / "rc"
    command = (
        f"SIDECAR_REDIS_URL={redis_server.url} {sys.executable} -m sidecar status --watch 0.2; "
        f"echo $? > {rc_file}; sleep 30"
    )
    tmux = Tmux(tmp_path)
    tmux("-f", "/dev/null", "new-session", "-d", "-s", "w", "-x", "100", "-y", "30", "-c", str(REPO), command)
    try:
        first = wait_for(lambda: tmux.pane_with("77777..77777 live"), 10, what="the first frame")
        assert tmux.var("alternate_on") == "1"  # drawn on the alternate screen, like top
        assert first[1].startswith("ALIVE  epoch e-watch  up 1m")
        row = next(line for line in first if line.startswith("77777..77777"))
        assert row.split()[2:4] == ["0.41", "0.61"]

        fake_sidecar(r, token, bid="0.43")  # the next frame must show the new bid in place
        second = wait_for(lambda: tmux.pane_with("0.43"), 5, what="a redraw")
        assert second[1].startswith("ALIVE  epoch e-watch")  # same place: redrawn, not appended
        assert second.index(next(line for line in second if "0.43" in line)) == first.index(row)
        assert not any("0.41" in line for line in second)
        assert sum(line.startswith("TOKEN") for line in second) == 1
        assert tmux.var("history_size") == "0"  # no scrollback spam

        tmux("send-keys", "-t", "w", "C-c")
        wait_for(lambda: rc_file.exists() and rc_file.read_text().strip() != "", 5, what="exit after Ctrl-C")
        assert rc_file.read_text().strip() == "0"
        assert tmux.var("alternate_on") == "0"  # the shell's screen is back, without the frames
        assert not any("ALIVE" in line for line in tmux.pane())
    finally:
        subprocess.run(["tmux", "-S", tmux.socket, "kill-server"], capture_output=True, timeout=10)
        r.close()
