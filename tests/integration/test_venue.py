"""A whole-venue outage end to end (issue 13, deliverable 3): the real sidecar, a real redis-server
and the simulator refusing every handshake with 503 after dropping every socket.

500 tokens on 3 sockets (SIDECAR_MAX_TOKENS_PER_CONN=200), the venue down for ``OUTAGE_S`` (60 s,
the issue's figure; ``PM_TEST_VENUE_OUTAGE_S`` shortens it, the behaviour is the same past the
probe backoff's cap of 5 s), then back. Measured and printed: how long until ``venue`` reads
``down``, handshakes during the outage, how long until every token is ``live`` again.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import pytest
import redis
from pmsim import Simulator

from devkit.redis_server import RedisServer
from devkit.scrape import metric
from devkit.wait import wait_for
from tests.integration.common import P, hashes, start_live

pytestmark = pytest.mark.integration

OUTAGE_S = float(os.environ.get("PM_TEST_VENUE_OUTAGE_S", "60"))
MARKETS = 250  # two tokens each: 500 tokens
PER_SOCKET = 200  # three sockets: 200, 200, 100
SPACING = 0.25  # SIDECAR_CONNECT_SPACING_S (default)
SPACING_SEEN = 0.15  # the spacing less thread start-up and connect jitter on a busy machine
DOWN_WITHIN_S = 6.0  # SIDECAR_VENUE_DOWN_AFTER_S (3 s) plus the summary's 1 s period and slack
LIVE_WITHIN_S = 15.0  # the bound for every token after the venue returns
# Before the venue is judged down each socket backs off on its own (a few attempts each in 3 s);
# then one probe every 2.5-5 s once its backoff has grown (from 0.25-0.5 s, doubling).


def max_handshakes(outage_s: float) -> int:
    return 3 * 6 + 6 + int(outage_s / 2.5) + 1


def venue(r: redis.Redis) -> tuple[str | None, str | None]:
    got = r.hmget(P + "sidecar", "venue", "venue_since")
    return got[0], got[1]


def all_with(r: redis.Redis, tokens: list[str], status: str, reason: str) -> bool:
    return all(h.get("status") == status and h.get("reason") == reason for h in hashes(r, tokens))


def lines(proc: Any, text: str) -> list[str]:
    return [line for line in proc.log().splitlines() if text in line]


@pytest.mark.parametrize(
    ("status", "outage_s"),
    [(503, OUTAGE_S), (429, min(OUTAGE_S, 20.0))],  # 429 too (a throttled cut-over), shorter: same path
    ids=["503", "429"],
)
def test_venue_down_for_a_while_then_back(
    redis_server: RedisServer, sim: Simulator, sidecar, status: int, outage_s: float
) -> None:
    tokens, r, proc = start_live(
        redis_server, sim, sidecar, MARKETS, timeout=60, max_tokens_per_conn=PER_SOCKET
    )
    assert len(tokens) == 500
    wait_for(lambda: r.hget(P + "sidecar", "connections_up") == "3", 10, what="3 sockets up")
    assert venue(r)[0] == "up"
    opened_before = {c.id for c in sim.connections()}

    # ---- the venue goes down: every socket dropped, every handshake refused with 503 ----------
    down_at = time.monotonic()
    sim.venue_down(status=status, drop=True)
    wait_for(lambda: venue(r)[0] == "down", DOWN_WITHIN_S, interval=0.05, what="venue down")
    down_seen = time.monotonic() - down_at
    assert venue(r)[1], "venue_since is written when the venue goes down"
    since_down = int(venue(r)[1])
    wait_for(lambda: all_with(r, tokens, "stale", "venue_down"), 5, what="every token stale venue_down")
    wait_for(lambda: metric(proc, "pm_sidecar_venue_state", state="down") == 1, 3, what="metric down")
    assert metric(proc, "pm_sidecar_venue_state", state="up") == 0
    remaining = outage_s - (time.monotonic() - down_at)
    # the outage goes on; nothing changes its verdict meanwhile
    deadline = time.monotonic() + max(0.0, remaining)
    while time.monotonic() < deadline:
        assert venue(r)[0] == "down"
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    attempts = sim.handshake_attempts(during_outage=True)
    assert all_with(r, tokens, "stale", "venue_down")
    assert len(lines(proc, "venue down:")) == 1
    assert lines(proc, "venue up after") == []
    # per-socket connect-failure lines: once a minute per kind, not one per attempt
    assert len(lines(proc, "failed to connect")) <= 2 + int(outage_s / 60), lines(proc, "failed to connect")

    # ---- the venue is back ------------------------------------------------------------------
    up_at = time.monotonic()
    sim.venue_up()
    wait_for(
        lambda: all_with(r, tokens, "live", ""), LIVE_WITHIN_S, interval=0.1, what="every token live again"
    )
    back_in = time.monotonic() - up_at
    wait_for(lambda: venue(r)[0] == "up", 5, what="venue up")
    assert int(venue(r)[1] or 0) > since_down
    wait_for(lambda: metric(proc, "pm_sidecar_venue_state", state="up") == 1, 3, what="metric up")
    assert len(lines(proc, "venue down:")) == 1
    assert len(lines(proc, "venue up after")) == 1

    # the sockets reopened one probe first, then the others paced by the connect spacing
    reopened = sorted(c.opened_at for c in sim.connections() if c.id not in opened_before and c.open)
    assert len(reopened) == 3, reopened
    gaps = [b - a for a, b in itertools.pairwise(reopened)]
    assert min(gaps) >= SPACING_SEEN, f"sockets opened closer than the connect spacing: {gaps}"
    bound = max_handshakes(outage_s)
    assert attempts <= bound, f"{attempts} handshakes in a {outage_s:.0f}s outage"
    assert sim.violations == []
    print(
        f"\nvenue outage {outage_s:.0f}s (HTTP {status}), 500 tokens on 3 sockets: venue down after "
        f"{down_seen:.2f}s, {attempts} handshake attempts during the outage (bound {bound}), every "
        f"token live {back_in:.2f}s after the venue returned, reopen gaps {[round(g, 2) for g in gaps]}"
    )
    assert proc.terminate() == 0
