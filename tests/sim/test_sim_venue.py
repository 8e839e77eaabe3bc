"""The whole venue down and back: every socket dropped, handshakes refused with 503/429 (and
Retry-After) until it returns, attempts counted; REST refusals carry Retry-After too."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import websocket
from pmsim import Simulator

from tests.sim.wire import Client, http, two_token_market


def http_headers(url: str) -> tuple[int, dict[str, str], Any]:
    """GET url: (status, headers, JSON body), errors included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def refused(connect: Callable[[], Client]) -> websocket.WebSocketBadStatusException:
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        connect()
    return err.value


def test_venue_down_drops_every_socket_and_refuses_until_up(
    sim: Simulator, connect: Callable[[], Client]
) -> None:
    _, a, b = two_token_market(sim)
    first, second = connect(), connect()
    first.subscribe([a])
    second.subscribe([b])
    first.recv_json()
    second.recv_json()
    assert sim.handshake_attempts() == 2 and not sim.venue_is_down

    sim.venue_down()
    assert sim.venue_is_down
    assert not [c for c in sim.connections() if c.open]  # dropped before venue_down returned
    for client in (first, second):
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            client.recv(timeout=2)
    for _ in range(3):
        err = refused(connect)
        assert err.status_code == 503
        assert (err.resp_headers or {}).get("retry-after") == "1"
    assert sim.handshake_attempts(during_outage=True) == 3
    assert sim.handshake_attempts() == 5
    assert http(f"{sim.rest_url}/book?token_id={a}")[0] == 200  # REST stays up unless asked

    sim.venue_up()
    assert not sim.venue_is_down
    back = connect()
    back.subscribe([a])
    assert back.recv_json()[0]["asset_id"] == a
    assert sim.handshake_attempts() == 6
    assert sim.handshake_attempts(during_outage=True) == 3  # the last outage's count stays readable
    assert [c.open for c in sim.connections()] == [False, False, True]
    assert sim.violations == []


def test_venue_down_with_429_kept_sockets_rest_refusals_and_retry_after(
    sim: Simulator, connect: Callable[[], Client]
) -> None:
    _, a, _ = two_token_market(sim)
    kept = connect()
    kept.subscribe([a])
    kept.recv_json()
    sim.venue_down(429, drop=False, rest=True)
    sim.retry_after(7)
    assert (refused(connect).resp_headers or {}).get("retry-after") == "7"
    status, headers, _ = http_headers(f"{sim.rest_url}/book?token_id={a}")
    assert (status, headers.get("Retry-After")) == (429, "7")
    sim.price_change([(a, "BUY", "0.01", "3")])  # the socket that was not dropped still works
    assert kept.recv_json()["event_type"] == "price_change"
    sim.retry_after(0)
    assert "retry-after" not in (refused(connect).resp_headers or {})
    assert "Retry-After" not in http_headers(f"{sim.rest_url}/book?token_id={a}")[1]
    assert sim.handshake_attempts(during_outage=True) == 2
    sim.venue_down(503, drop=False)  # a new outage restarts the count; REST served again
    assert sim.handshake_attempts(during_outage=True) == 0
    assert http(f"{sim.rest_url}/book?token_id={a}")[0] == 200
    sim.venue_up()
    connect().subscribe([], initial_dump=False)
    with pytest.raises(ValueError):
        sim.venue_down(500)
    with pytest.raises(ValueError):
        sim.retry_after(-1)


def test_rest_fail_and_handshake_rejection_carry_retry_after(
    sim: Simulator, connect: Callable[[], Client]
) -> None:
    _, a, _ = two_token_market(sim)
    sim.rest_fail(429, 1)
    status, headers, _ = http_headers(f"{sim.rest_url}/book?token_id={a}")
    assert (status, headers.get("Retry-After")) == (429, "1")
    sim.rest_fail(503, 1)
    sim.retry_after(3)
    status, headers, _ = http_headers(f"{sim.rest_url}/book?token_id={a}")
    assert (status, headers.get("Retry-After")) == (503, "3")
    sim.rest_fail(500, 1)
    status, headers, _ = http_headers(f"{sim.rest_url}/book?token_id={a}")
    assert status == 500 and "Retry-After" not in headers
    status, headers, _ = http_headers(f"{sim.rest_url}/book?token_id={a}")
    assert status == 200 and "Retry-After" not in headers
    sim.reject_handshakes(503, 1)
    err = refused(connect)
    assert (err.status_code, (err.resp_headers or {}).get("retry-after")) == (503, "3")
