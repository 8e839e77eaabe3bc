"""The real sidecar against the simulator: only a socket's own tokens' events are its data.

A socket that stops sending its own books but keeps relaying venue-wide ``new_market`` broadcasts
(which every socket with custom features receives) must be judged silent like any zombie: its
busy quotes withdrawn within about ``SIDECAR_SILENCE_MIN_S``, the socket replaced after the probe
timeout, and the quotes back at the truth on the new socket.
"""

from __future__ import annotations

import threading
import time

import pytest
from pmsim import Simulator

from devkit.redis_server import RedisServer
from devkit.scrape import wait_metric
from devkit.wait import wait_for
from tests.integration.common import P, all_match

pytestmark = pytest.mark.integration


def test_a_socket_relaying_only_broadcasts_is_replaced_and_its_quotes_withdrawn(
    redis_server: RedisServer, sim: Simulator, sidecar
) -> None:
    r = redis_server.client()
    markets = [sim.add_market() for _ in range(3)]
    tokens = [t for m in markets for t in sim.markets()[m]]
    r.sadd(P + "desired", *tokens)
    silence_min, probe_timeout = 0.5, 1.5
    proc = sidecar(
        silence_min_s=silence_min, silence_max_s=6, probe_timeout_s=probe_timeout, ping_interval_s=0.5
    )
    sim.start_activity(60, tokens)  # about 10 events a second per token: every token is busy

    def status(token: str) -> str | None:
        return r.hget(P + "quote:" + token, "status")

    wait_for(lambda: all(status(t) == "live" for t in tokens), 15, what="live")
    relay = sim.conn_for(tokens[0])
    assert relay is not None and relay.subscribed == set(tokens)
    wait_for(lambda: sim.conn(relay.id).sent >= relay.sent + 100, 10, what="the socket's event-rate norm")

    stop = threading.Event()

    def broadcast() -> None:
        while not stop.wait(0.1):
            sim.new_market()

    broadcaster = threading.Thread(target=broadcast, name="new-market", daemon=True)
    sim.relay_only(relay.id)
    sent_before = sim.conn(relay.id).sent
    started = time.monotonic()
    broadcaster.start()
    withdrawn: dict[str, float] = {}

    def all_withdrawn() -> bool:
        for t in tokens:
            if t not in withdrawn and status(t) != "live":
                withdrawn[t] = time.monotonic() - started
        return len(withdrawn) == len(tokens)

    try:
        # Busy quotes: stale once the socket is past SIDECAR_SILENCE_MIN_S without its own data
        # (plus the loop's 50 ms write cadence), although broadcasts keep arriving every 0.1 s.
        wait_for(all_withdrawn, silence_min + 2.0, interval=0.02, what="every busy quote withdrawn")
        wait_for(
            lambda: (c := sim.conn_for(tokens[0])) is not None and c.id != relay.id,
            silence_min + probe_timeout + 3.0,
            what="a replacement socket",
        )
        replaced = time.monotonic() - started
    finally:
        stop.set()
        broadcaster.join(2)
    assert sim.conn(relay.id).sent >= sent_before + 3, "the relay kept sending broadcasts"
    assert max(withdrawn.values()) < silence_min + 2.0, withdrawn
    assert replaced >= silence_min + probe_timeout - 0.2, "replaced only after the probe went unanswered"
    sim.stop_activity()
    wait_for(lambda: all_match(r, sim, tokens), 10, what="quotes equal the truth on the new socket")
    wait_metric(proc, "pm_sidecar_reconnects_total", 1, reason="silence")
    wait_metric(proc, "pm_sidecar_silence_probes_total", 1, result="failed")
    wait_for(lambda: not sim.conn(relay.id).open, 15, what="the relaying socket closed")
    assert sim.violations == []
    assert proc.terminate() == 0
