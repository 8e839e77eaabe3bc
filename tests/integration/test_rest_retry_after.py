"""End to end: the sidecar's REST client obeys the exchange's Retry-After (and no more)."""

from __future__ import annotations

import threading
import time

import pytest

from devkit.wait import wait_for
from tests.integration.common import P, all_match, matches_truth, quote

pytestmark = pytest.mark.integration

RETRY_AFTER_S = 3


def test_a_throttled_request_holds_the_next_one_for_retry_after(redis_server, sim, sidecar) -> None:
    """A 429 with Retry-After: 3 on a reseed: the next REST request (another token's reseed,
    asked for at once) leaves 3 s later, not sooner and not much later."""
    markets = [sim.add_market() for _ in range(2)]
    by_market = sim.markets()
    first, second = by_market[markets[0]][0], by_market[markets[1]][0]
    desired = [t for m in markets for t in by_market[m]]
    r = redis_server.client()
    r.sadd(P + "desired", *desired)
    proc = sidecar()
    wait_for(lambda: all_match(r, sim, desired), 15, what="all desired tokens live and matching truth")

    sim.retry_after(RETRY_AFTER_S)
    sim.rest_fail(429, 1)
    sent = sim.rest_requests
    # A REST reseed at once, answered 429 (the call blocks until the book follows: in a thread,
    # so that the refusal is seen when it happens).
    threading.Thread(
        target=sim.tick_size_change, args=(first, "0.001"), kwargs={"book_delay_s": 0.3}, daemon=True
    ).start()
    wait_for(lambda: sim.rest_requests > sent, 5, interval=0.005, what="the reseed refused with 429")
    refused_at = time.monotonic()
    sim.tick_size_change(second, "0.001", book_delay_s=0.3)  # wants a reseed at once too
    wait_for(lambda: sim.rest_requests > sent + 1, 10, interval=0.005, what="the next REST request")
    waited = time.monotonic() - refused_at
    assert RETRY_AFTER_S - 0.1 <= waited < RETRY_AFTER_S + 1.5, waited

    for token in (first, second):  # both end live at the truth, with the new tick size
        wait_for(
            lambda token=token: quote(r, token).get("tick_size") == "0.001" and matches_truth(r, sim, token),
            10,
            what="live again after the tick size change",
        )
    assert proc.terminate() == 0
