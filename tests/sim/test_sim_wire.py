"""The market channel's subscription rules over real sockets: what a client may send, what it gets back."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import websocket
from pmsim import Simulator

from tests.sim.wire import Client, conn_id_for, two_token_market, wait_for


@pytest.mark.parametrize("first", ["PING", "not json", "{}", '{"type": "user", "assets_ids": []}', "[1, 2]"])
def test_invalid_first_frame_is_closed_with_1008(
    sim: Simulator, connect: Callable[[], Client], first: str
) -> None:
    c = connect()
    c.send(first)
    assert c.recv_close() == (1008, "invalid subscription payload")
    info = wait_for(lambda: [i for i in sim.connections() if not i.open], what="server-side close")[0]
    assert info.close_code == 1008
    assert [text for _, text in info.received] == [first]
    assert len(sim.violations) == 1 and "first frame" in sim.violations[0]


def test_type_is_case_insensitive_and_ping_pong(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    c = connect()
    c.send({"type": "Market", "assets_ids": [a], "initial_dump": False})
    c.assert_nothing_queued()  # initial_dump false: no snapshot before the PONG
    c.send("PING")
    assert c.recv() == "PONG"
    info = sim.connections()[0]
    assert info.pings == 2 and info.subscribed == {a} and info.path == "/ws/market"
    assert sim.violations == []


def test_second_type_frame_is_invalid_operation(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, b = two_token_market(sim)
    c = connect()
    c.subscribe([a], initial_dump=False)
    c.subscribe([b])
    assert c.recv() == "INVALID OPERATION"
    assert sim.connections()[0].subscribed == {a}
    assert any("second subscription" in v for v in sim.violations)


def test_resubscribe_gets_no_new_assets(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a])
    c.recv_json()
    c.op("subscribe", [a])
    assert c.recv() == "NO NEW ASSETS"
    assert sim.violations == [f"conn 1: re-subscribe of already subscribed asset {a}"]


def test_too_many_ids_closes_in_strict_mode(sim: Simulator, connect: Callable[[], Client]) -> None:
    c = connect()
    c.subscribe([str(10**20 + i) for i in range(101)])
    assert c.recv_close() == (1008, "too many assets")
    assert any("101 ids" in v for v in sim.violations)
    c2 = connect()
    c2.subscribe([str(10**20 + i) for i in range(100)], initial_dump=False)
    c2.op("subscribe", [str(10**30 + i) for i in range(101)])
    assert c2.recv_close() == (1008, "too many assets")


def test_non_strict_accepts_big_frames() -> None:
    with Simulator(strict=False) as sim:
        c = Client(sim.ws_url)
        c.subscribe([str(10**20 + i) for i in range(150)])
        assert len(c.recv_json()) == 150
        assert sim.violations == []
        c.close()


def test_invalid_ids_are_ignored_and_recorded(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a, "0xdeadbeef", 12345, "1" * 101])
    frame = c.recv_json()
    assert [book["asset_id"] for book in frame] == [a]
    assert sim.connections()[0].subscribed == {a}
    assert len(sim.violations) == 3


def test_handshake_rejection_with_429(sim: Simulator, connect: Callable[[], Client]) -> None:
    sim.reject_handshakes(429, 2)
    for _ in range(2):
        with pytest.raises(websocket.WebSocketBadStatusException) as err:
            connect()
        assert err.value.status_code == 429
    c = connect()
    c.subscribe([], initial_dump=False)
    c.assert_nothing_queued()
    assert sim.handshakes == 3
    assert [i.id for i in sim.connections()] == [1]


def test_operation_subscribe_and_unsubscribe(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    _, c_tok, _ = two_token_market(sim)
    _, d_tok, _ = two_token_market(sim)
    client = connect()
    client.subscribe([a])
    assert len(client.recv_json()) == 1
    client.op("subscribe", [c_tok, d_tok])
    assert [book["asset_id"] for book in client.recv_json()] == [c_tok, d_tok]
    client.op("unsubscribe", [c_tok])
    wait_for(lambda: sim.connections()[0].subscribed == {a, d_tok}, what="unsubscribe applied")
    top = sim.truth(c_tok)
    sim.price_change([(c_tok, "SELL", top.ask, "777")])
    client.assert_nothing_queued()
    sim.price_change([(d_tok, "SELL", sim.truth(d_tok).ask, "778")])
    assert client.recv_json()["price_changes"][0]["asset_id"] == d_tok
    assert sim.conn_for(c_tok) is None and conn_id_for(sim, d_tok) == 1
    assert sim.violations == []


def test_thousand_tokens_across_five_connections(sim: Simulator, connect: Callable[[], Client]) -> None:
    clients = [connect() for _ in range(5)]
    ids = [[str(10**40 + 1000 * k + i) for i in range(200)] for k in range(5)]
    for client, mine in zip(clients, ids, strict=True):
        client.subscribe(mine[:100])
        client.op("subscribe", mine[100:])
    for client, mine in zip(clients, ids, strict=True):
        got = [book["asset_id"] for _ in range(2) for book in client.recv_json()]
        assert got == mine
    assert len(sim.tokens()) == 1000
    token = ids[3][150]
    assert conn_id_for(sim, token) == 4
    sim.price_change([(token, "BUY", sim.truth(token).bid, "1")])
    assert clients[3].recv_json()["price_changes"][0]["asset_id"] == token
    for client in clients[:3]:
        client.assert_nothing_queued()
    assert sim.violations == []


def test_auto_create_off_leaves_unknown_ids_silent() -> None:
    with Simulator(auto_create=False) as sim:
        c = Client(sim.ws_url)
        c.subscribe(["123"])
        c.assert_nothing_queued()
        assert sim.tokens() == [] and sim.connections()[0].subscribed == {"123"}
        c.close()
