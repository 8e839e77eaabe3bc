"""The simulator as a process and a server: REST, start and stop, the CLI, wss://."""

from __future__ import annotations

import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import websocket
from hypothesis import given
from hypothesis import strategies as st
from pmsim import Simulator, canon

from tests.sim.wire import ROOT, Client, best_of, http, two_token_market, wait_for


def test_rest_book_and_books(sim: Simulator) -> None:
    market, a, b = two_token_market(sim)
    status, summary = http(f"{sim.rest_url}/book?token_id={a}")
    assert status == 200 and summary["asset_id"] == a and summary["market"] == market
    assert {"timestamp", "hash", "tick_size", "min_order_size", "neg_risk", "last_trade_price"} <= set(
        summary
    )
    truth = sim.truth(a)
    assert best_of(summary["bids"], "bid") == summary["bids"][-1]["price"] == truth.bid
    assert best_of(summary["asks"], "ask") == summary["asks"][-1]["price"] == truth.ask
    assert http(f"{sim.rest_url}/book?token_id=42") == (
        404,
        {"error": "No orderbook exists for the requested token id"},
    )
    status, books = http(f"{sim.rest_url}/books", [{"token_id": a}, {"token_id": "42"}, {"token_id": b}])
    assert status == 200 and [s["asset_id"] for s in books] == [a, b]
    status, _ = http(f"{sim.rest_url}/books", [{"token_id": a}] * 501)
    assert status == 400
    sim.rest_fail(503, 1)
    assert http(f"{sim.rest_url}/book?token_id={a}")[0] == 503
    assert http(f"{sim.rest_url}/book?token_id={a}")[0] == 200
    assert sim.rest_requests == 6


def test_rest_delay_keeps_an_older_answer_in_flight(sim: Simulator) -> None:
    """For Redis faults during REST confirmations: the answer is read, then held."""
    _, a, _ = two_token_market(sim)
    sim.set_book(a, [("0.40", "10")], [("0.45", "5")])
    sim.rest_delay(0.5)
    got: list[Any] = []
    t0 = time.monotonic()
    thread = threading.Thread(target=lambda: got.append(http(f"{sim.rest_url}/books", [{"token_id": a}])))
    thread.start()
    wait_for(lambda: sim.rest_in_flight == 1, what="the request in flight")
    sim.price_change([(a, "BUY", "0.41", "2")])  # the truth moves while the answer is held
    thread.join(5)
    assert time.monotonic() - t0 >= 0.5
    status, books = got[0]
    assert status == 200 and books[0]["bids"] == [{"price": "0.4", "size": "10"}]  # read before the move
    assert sim.rest_in_flight == 0
    sim.rest_delay(0)
    t0 = time.monotonic()
    assert http(f"{sim.rest_url}/book?token_id={a}")[1]["bids"][-1] == {"price": "0.41", "size": "2"}
    assert time.monotonic() - t0 < 0.5
    with pytest.raises(ValueError):
        sim.rest_delay(-1)


def test_start_failure_cleans_up() -> None:
    with Simulator() as first:
        second = Simulator(ws_port=first.ws_port)
        with pytest.raises(OSError):
            second.start()
        second.stop()  # still idempotent

        def one_loop_left() -> bool:
            return sum(t.name == "sim-loop" for t in threading.enumerate()) == 1

        wait_for(one_loop_left, what="the failed simulator's loop thread to end")


def test_stop_is_idempotent_and_closes_ports() -> None:
    sim = Simulator().start()
    url = sim.ws_url
    c = Client(url)
    c.subscribe([], initial_dump=False)
    wait_for(lambda: sim.connections())
    t0 = time.monotonic()
    sim.stop()
    sim.stop()
    assert time.monotonic() - t0 < 2, "stop() must not wait long for clients that do not answer"
    assert c.recv_close() == (1001, "server shutting down")
    assert sim.connections()[0].open is False
    with pytest.raises(ConnectionRefusedError):
        websocket.create_connection(url, timeout=2)


@contextmanager
def pmsim_cli(*args: str) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    """``python -m pmsim`` on free ports with these flags, its stdout lines in a queue; killed after
    if a test left it running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmsim", "--ws-port", "0", "--rest-port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_cli_serves_wss_with_the_certificate_it_prints(tmp_path: Path) -> None:
    with pmsim_cli("--markets", "1", "--rate", "0", "--tls", str(tmp_path)) as (proc, lines):
        out = [lines.get(timeout=15).split() for _ in range(6)]  # ws_url, rest_url, tokens 2, 2 ids, ca_file
        assert out[0][0] == "ws_url" and out[0][1].startswith("wss://")
        assert out[5] == ["ca_file", str(tmp_path / "cert.pem")]
        ws = websocket.create_connection(out[0][1], sslopt={"ca_certs": out[5][1]}, timeout=5)
        ws.send(orjson.dumps({"type": "market", "assets_ids": [out[3][0]]}).decode())
        assert orjson.loads(ws.recv())[0]["asset_id"] == out[3][0]
        ws.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


def test_cli_prints_urls_and_tokens_and_stops_on_sigint() -> None:
    with pmsim_cli("--markets", "2", "--rate", "20") as (proc, lines):
        ws_key, ws_url = lines.get(timeout=15).split()
        rest_key, rest_url = lines.get(timeout=5).split()
        tok_key, count = lines.get(timeout=5).split()
        tokens = [lines.get(timeout=5) for _ in range(int(count))]
        assert (ws_key, rest_key, tok_key, count) == ("ws_url", "rest_url", "tokens", "4")
        assert all(t.isdigit() and 70 <= len(t) <= 77 for t in tokens)
        c = Client(ws_url)
        c.subscribe(tokens)
        assert len(c.recv_json()) == 4
        assert http(f"{rest_url}/book?token_id={tokens[0]}")[0] == 200
        c.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


def test_wss_serves_the_same_protocol(tmp_path: Path) -> None:
    from pmsim.tls import make_self_signed

    cert = make_self_signed(tmp_path)
    with Simulator(tls=cert.server_context()) as s:
        assert s.ws_url.startswith("wss://127.0.0.1:")
        _, a, _ = two_token_market(s)
        ws = websocket.create_connection(s.ws_url, sslopt={"ca_certs": str(cert.cert)}, timeout=5)
        try:
            ws.send(orjson.dumps({"type": "market", "assets_ids": [a]}).decode())
            book = orjson.loads(ws.recv())[0]
            assert (book["event_type"], book["asset_id"]) == ("book", a)
            ws.send("PING")
            assert ws.recv() == "PONG"
        finally:
            ws.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            websocket.create_connection(s.ws_url, timeout=5)  # the system store does not know it


@given(st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("1e7"), places=4))
def test_canon_is_unique_and_exact(x: Decimal) -> None:
    s = canon(x)
    assert Decimal(s) == x and canon(s) == s and canon(Decimal(s + "000" if "." in s else s)) == s
    assert "e" not in s.lower() and not (s.endswith("0") and "." in s)
