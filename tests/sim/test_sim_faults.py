"""Injected faults over real sockets: mutes, zombies, half-open sockets, drops, closes, slow sockets."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import websocket
from pmsim import Simulator

from tests.sim.wire import Client, conn_id_for, two_token_market, wait_for


def test_mute_until_redrive(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    _, b, _ = two_token_market(sim)
    sim.mute(a, subscribes=1)
    c = connect()
    c.subscribe([a, b])
    assert [book["asset_id"] for book in c.recv_json()] == [b]
    sim.price_change([(a, "BUY", sim.truth(a).bid, "9")])
    c.assert_nothing_queued()
    assert sim.connections()[0].muted == {a}
    c.op("unsubscribe", [a])
    c.op("subscribe", [a])
    snapshot = c.recv_json()
    assert [book["asset_id"] for book in snapshot] == [a] and snapshot[0]["bids"][-1]["size"] == "9"
    sim.price_change([(a, "BUY", sim.truth(a).bid, "10")])
    assert c.recv_json()["price_changes"][0]["size"] == "10"
    assert sim.violations == []


def test_mute_forever_and_unmute(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    sim.mute(a)
    c = connect()
    c.subscribe([a])
    c.assert_nothing_queued()
    c.op("unsubscribe", [a])
    c.op("subscribe", [a])
    c.assert_nothing_queued()
    sim.unmute(a)
    c.op("unsubscribe", [a])
    c.op("subscribe", [a])
    assert c.recv_json()[0]["asset_id"] == a


def test_zombie_answers_ping_but_sends_no_data(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    _, b, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a])
    c.recv_json()
    sim.zombie(1)
    before = sim.truth(a)
    sim.price_change([(a, "BUY", before.bid, "0")])
    c.assert_nothing_queued()
    c.op("subscribe", [b])
    c.assert_nothing_queued()  # not even the snapshot for a new subscription
    assert sim.truth(a) != before
    c.ws.ping("zz")  # protocol-level pings are answered too
    c.ws.settimeout(5)
    assert c.ws.recv_data_frame(True)[0] == websocket.ABNF.OPCODE_PONG
    info = sim.connections()[0]
    assert info.mode == "zombie" and info.open and info.subscribed == {a, b} and info.ws_pings == 1


def relay_only_socket(sim: Simulator, connect: Callable[[], Client]) -> tuple[str, Client]:
    """A custom-feature socket on a fresh token, its snapshot read, then made relay_only."""
    _, a, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a], custom_feature_enabled=True)
    c.recv_json()
    sim.relay_only(1)
    return a, c


def test_relay_only_sends_broadcasts_but_not_its_own_data(
    sim: Simulator, connect: Callable[[], Client]
) -> None:
    a, c = relay_only_socket(sim, connect)
    sim.price_change([(a, "BUY", sim.truth(a).bid, "0")])
    new_id = sim.new_market()
    announced = c.recv_json()
    assert (announced["event_type"], announced["market"]) == ("new_market", new_id)
    c.assert_nothing_queued()  # the price change for its own token never came; PINGs answered
    assert sim.connections()[0].mode == "relay_only"
    sim.zombie(1)  # a plain zombie withholds broadcasts too
    sim.new_market()
    c.assert_nothing_queued()


def test_zombie_drops_data_already_queued(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a], initial_dump=False)
    c.assert_nothing_queued()
    sim.slow(1, 0.05)
    for size in ("1", "2", "3"):
        sim.price_change([(a, "BUY", sim.truth(a).bid, size)])
    sim.zombie(1)
    c.assert_nothing_queued()


def test_half_open_sends_nothing_and_keeps_socket(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    c = connect()
    c.subscribe([a])
    c.recv_json()
    sim.half_open(1)
    sim.price_change([(a, "BUY", sim.truth(a).bid, "0")])
    c.send("PING")
    c.ws.ping("zz")
    c.ws.settimeout(0.5)  # bounded: a half-open peer is, by definition, silence
    with pytest.raises(websocket.WebSocketTimeoutException):
        c.ws.recv_data_frame(True)  # would also return a protocol pong
    info = sim.connections()[0]
    assert info.open and info.mode == "half_open" and info.pings == 0


def test_drop_aborts_without_close_frame(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    c1, c2 = connect(), connect()
    for c in (c1, c2):
        c.subscribe([a])
        c.recv_json()
    sim.drop(1)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionResetError)):
        c1.recv()
    info = sim.connections()[0]
    assert not info.open and info.close_code == 1006 and info.closed_at is not None
    assert conn_id_for(sim, a) == 2
    c2.assert_nothing_queued()
    sim.drop()
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionResetError)):
        c2.recv()
    assert sim.conn_for(a) is None


def test_clean_close_with_code(sim: Simulator, connect: Callable[[], Client]) -> None:
    c = connect()
    c.subscribe([], initial_dump=False)
    wait_for(lambda: sim.connections())
    sim.close(1, 1011, "going down")
    assert c.recv_close() == (1011, "going down")
    info = wait_for(lambda: [i for i in sim.connections() if not i.open], what="closed")[0]
    assert info.close_code == 1011


def test_slow_connection_does_not_block_others(sim: Simulator, connect: Callable[[], Client]) -> None:
    _, a, _ = two_token_market(sim)
    slow_c, fast_c = connect(), connect()
    for c in (slow_c, fast_c):
        c.subscribe([a], initial_dump=False)
    wait_for(lambda: len(sim.connections()) == 2 and all(i.subscribed for i in sim.connections()))
    sim.slow(1, 0.03)
    bid = sim.truth(a).bid
    for i in range(20):
        sim.price_change([(a, "BUY", bid, str(i + 1))])
    sizes = [fast_c.recv_json()["price_changes"][0]["size"] for _ in range(20)]
    assert sizes == [str(i + 1) for i in range(20)]
    assert sim.sent_frames(1) < 15  # the slow one is still far behind
    assert [slow_c.recv_json()["price_changes"][0]["size"] for _ in range(20)] == sizes


def test_broadcasts_keep_a_relay_only_socket_talking_without_its_data(
    sim: Simulator, connect: Callable[[], Client]
) -> None:
    a, c = relay_only_socket(sim, connect)
    before = len(sim.markets())
    sim.start_activity(200.0, [a])
    sim.start_broadcasts(0.05)
    try:
        kinds = [c.recv_json()["event_type"] for _ in range(5)]
    finally:
        sim.stop_broadcasts()
        sim.stop_activity()
    assert kinds == ["new_market"] * 5
    assert len(sim.markets()) >= before + 5
    assert sim.conn(1).open and sim.conn(1).mode == "relay_only"


def test_broadcasts_need_a_running_simulator_and_a_positive_interval() -> None:
    s = Simulator()
    with pytest.raises(RuntimeError):
        s.start_broadcasts(1.0)
    with pytest.raises(ValueError):
        s.start_broadcasts(0)
