"""`make demo` runs the bridge too and shows a token's ws_cache.json entry, also on the embedded
fakeredis fallback (no redis-server on PATH)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from devkit import REPO
from devkit.procs import clean_env

pytestmark = pytest.mark.integration


def test_demo_shows_the_bridge_entry_live_zeroed_on_the_drop_and_stops_it_cleanly(tmp_path) -> None:
    env = clean_env()
    env["PATH"] = str(tmp_path)  # no redis-server: the demo must fall back to fakeredis
    done = subprocess.run(
        [sys.executable, "-m", "devkit.demo", "--seconds", "6", "--tokens", "4"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=str(REPO),
        env=env,
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr + out[-3000:]
    assert "redis: embedded fakeredis" in out
    lines = [line.split("] ", 1)[-1] for line in out.splitlines() if "ws_cache.json[" in line]
    live, dropped, stopped = lines[0], lines[1], lines[-1]
    assert re.search(r"best_bid=0\.[0-9]*[1-9].*quote_status=live, sidecar_alive=True$", live), live
    # The bridge reads Redis every 0.2 s and the sidecar reconnects after a 0-1 s jittered backoff:
    # now and then a token is live again before the bridge looked, and the demo says so.
    if "live again before the bridge's next read" not in dropped:
        assert "best_bid=0.0, best_ask=0.0, price=0.0" in dropped and "quote_status=stale" in dropped, dropped
        assert dropped.endswith("sidecar_alive=True (the workers' 'unknown': REST fallback)"), dropped
    assert stopped.startswith("bridge stopped with SIGTERM: exit code 0;"), stopped
    assert stopped.endswith("sidecar_alive=False") and "best_bid=0.0, best_ask=0.0, price=0.0" in stopped
    block = out.split("as the bridge wrote it:\n", 1)[1].split("\n\n", 1)[0]
    entry = json.loads(block)
    assert entry["quote_status"] == "live" and entry["sidecar_alive"] is True
    assert 0 < entry["best_bid"] < entry["best_ask"] < 1
    assert "demo finished" in out
