"""Production is wss://: the real sidecar over TLS for a minute of load and subscribe churn.

The simulator serves the market channel with a self-signed certificate made for this test; the
sidecar trusts it through websocket-client's ``WEBSOCKET_CLIENT_CA_BUNDLE``. Reading and writing
the same SSL object from two threads used to drop sockets at random (spurious EOF, bad record
MAC): here every socket must survive the whole run, as counted by both ends.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest
import redis
from pmsim import Simulator

from devkit.procs import SidecarProcess
from devkit.redis_server import RedisServer
from devkit.scrape import Samples, scrape, total
from devkit.truth import truth_top
from devkit.wait import wait_for

pytestmark = pytest.mark.integration

P = "pm:"
RUN_S = 60.0
CHURN_EVERY_S = 0.25
TLS_SIM_SEED = 11


def by_label(samples: Samples, name: str) -> dict[str, float]:
    return {dict(labels).get("reason", ""): v for labels, v in samples.get(name, {}).items() if v}


def live_and_true(r: redis.Redis, sim: Simulator, tokens: list[str]) -> list[str]:
    """Tokens whose hash is not live at the simulator's true top (empty when all are)."""
    wrong = []
    for token in tokens:
        q = r.hgetall(P + "quote:" + token)
        if (q.get("status"), q.get("bid"), q.get("bid_size"), q.get("ask"), q.get("ask_size")) != (
            "live",
            *truth_top(sim, token),
        ):
            wrong.append(token)
    return wrong


@pytest.mark.timeout(RUN_S + 90)
def test_wss_survives_a_minute_of_load_and_churn(
    redis_server: RedisServer, tls_sim: Simulator, tls_sidecar: Callable[..., SidecarProcess]
) -> None:
    sim = tls_sim
    assert sim.ws_url.startswith("wss://")
    for _ in range(30):
        sim.add_market()
    pool = sim.tokens()
    rng = random.Random(5)
    desired = set(rng.sample(pool, 40))
    r = redis_server.client()
    r.sadd(P + "desired", *desired)
    proc = tls_sidecar(
        max_tokens_per_conn=5,
        desired_poll_s=0.2,
        # Text PINGs 50 times a second per socket: writes on the SSL object while it is being
        # read at full speed, which is what used to corrupt it.
        ping_interval_s=0.02,
    )
    try:
        wait_for(lambda: not live_and_true(r, sim, sorted(desired)), 20, what="all desired tokens live")
        sim.start_activity(600.0)  # every token in the pool, desired or not: siblings leak too
        start = scrape(proc)
        end_at = time.monotonic() + RUN_S
        swaps = 0
        while time.monotonic() < end_at:
            # Subscribe churn: two tokens out, two others in, on the sockets already open.
            gone = rng.sample(sorted(desired), 2)
            new = rng.sample(sorted(set(pool) - desired), 2)
            desired.difference_update(gone)
            desired.update(new)
            with r.pipeline(transaction=True) as pipe:
                pipe.srem(P + "desired", *gone)
                pipe.sadd(P + "desired", *new)
                pipe.publish(P + "desired:changed", "1")
                pipe.execute()
            swaps += 1
            assert proc.proc.poll() is None, proc.log()[-3000:]
            time.sleep(CHURN_EVERY_S)  # pacing of the churn, not a stand-in for a condition
        sim.stop_activity()
        final = sorted(desired)
        wait_for(lambda: not live_and_true(r, sim, final), 20, what="every desired token live at the truth")
        end = scrape(proc)
    finally:
        log = proc.log()
        killed_at = time.monotonic()
        proc.stop()

    assert swaps >= RUN_S / CHURN_EVERY_S * 0.8
    # Load: thousands of frames crossed the TLS sockets while they were being written to.
    frames = total(end, "pm_sidecar_frames_total") - total(start, "pm_sidecar_frames_total")
    assert frames >= 0.5 * 600 * RUN_S, frames
    assert (
        total(end, "pm_sidecar_subscribes_total") - total(start, "pm_sidecar_subscribes_total") >= 2 * swaps
    )
    # Zero unexpected disconnects, counted by the sidecar ...
    assert by_label(end, "pm_sidecar_reconnects_total") == {}, log[-4000:]
    assert by_label(end, "pm_sidecar_connect_failures_total") == {}, log[-4000:]
    # ... and by the exchange: every connection it ever accepted was still open when the run ended
    # (the sidecar was killed after the last scrape), none closed abnormally.
    conns = sim.connections()
    assert len(conns) == total(end, "pm_sidecar_connects_total") >= 8
    early_closes = [
        (c.id, c.close_code) for c in conns if c.closed_at is not None and c.closed_at < killed_at
    ]
    assert early_closes == []
    assert sim.violations == []
    assert "Traceback" not in log
