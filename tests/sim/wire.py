"""Helpers for the simulator's socket tests: a raw client and the tiniest correct client book.

Negative checks ("nothing was sent") use an in-band marker instead of waiting: a connection's
frames leave in queue order, so if the answer to a PING is the next frame, nothing was queued
before it. Only half-open (which answers nothing) needs a bounded timeout.
"""

from __future__ import annotations

import json
import struct
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import websocket
from pmsim import Simulator, Top, canon

from devkit.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
HEX40 = set("0123456789abcdef")

__all__ = [
    "HEX40",
    "ROOT",
    "Client",
    "LocalBook",
    "best_of",
    "conn_id_for",
    "http",
    "two_token_market",
    "wait_for",
]


class Client:
    """A thin raw client: what the sidecar's transport does, minus everything clever."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.ws = websocket.create_connection(url, skip_utf8_validation=True, timeout=timeout)

    def send(self, payload: Any) -> None:
        self.ws.send(payload if isinstance(payload, str) else orjson.dumps(payload).decode())

    def subscribe(self, ids: list[Any], **extra: Any) -> None:
        self.send({"type": "market", "assets_ids": ids, **extra})

    def op(self, operation: str, ids: list[str]) -> None:
        self.send({"operation": operation, "assets_ids": ids})

    def recv(self, timeout: float = 5.0) -> str:
        self.ws.settimeout(timeout)
        text = self.ws.recv()
        assert isinstance(text, str), f"the market channel sends text frames only, got {text!r}"
        return text

    def recv_json(self, timeout: float = 5.0) -> Any:
        text = self.recv(timeout)
        assert text.startswith(("{", "[")), f"expected JSON, got {text!r}"
        return orjson.loads(text)

    def recv_close(self, timeout: float = 5.0) -> tuple[int, str]:
        """Read until the server's close frame; return (code, reason)."""
        self.ws.settimeout(timeout)
        while True:
            opcode, frame = self.ws.recv_data_frame(True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                data = frame.data
                return struct.unpack("!H", data[:2])[0], data[2:].decode()

    def assert_nothing_queued(self) -> None:
        """PING must be answered by the very next frame: proves nothing else was sent before it."""
        self.send("PING")
        assert self.recv() == "PONG"

    def close(self) -> None:
        self.ws.close(timeout=0.5)


def two_token_market(sim: Simulator) -> tuple[str, str, str]:
    market = sim.add_market()
    a, b = sim.markets()[market]
    return market, a, b


def conn_id_for(sim: Simulator, token: str) -> int:
    info = sim.conn_for(token)
    assert info is not None, f"no open connection subscribed to {token}"
    return info.id


def best_of(levels: list[dict[str, str]], side: str) -> str:
    prices = [Decimal(level["price"]) for level in levels]
    if not prices:
        return ""
    return canon(max(prices) if side == "bid" else min(prices))


class LocalBook:
    """The tiniest correct client book: replace on `book`, set-or-remove on price_change."""

    def __init__(self, assets: set[str]) -> None:
        self.assets = assets
        self.bids: dict[str, dict[str, str]] = {}
        self.asks: dict[str, dict[str, str]] = {}
        self.events = 0

    def top(self, asset: str) -> Top:
        bids, asks = self.bids[asset], self.asks[asset]
        bb = max(bids, key=Decimal) if bids else ""
        ba = min(asks, key=Decimal) if asks else ""
        return Top(bb, bids.get(bb, ""), ba, asks.get(ba, ""))

    def apply_frame(self, text: str) -> None:
        msg = orjson.loads(text)
        for event in msg if isinstance(msg, list) else [msg]:
            self.apply(event)

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["event_type"]
        if kind == "book":
            asset = event["asset_id"]
            assert asset in self.assets, "book for an asset this socket did not subscribe"
            self.bids[asset] = {lv["price"]: lv["size"] for lv in event.get("bids", event.get("buys", []))}
            self.asks[asset] = {lv["price"]: lv["size"] for lv in event.get("asks", event.get("sells", []))}
        elif kind == "price_change":
            for entry in event["price_changes"]:
                asset = entry["asset_id"]
                if asset not in self.assets:
                    continue  # sibling leak: filter, as the sidecar must
                levels = self.bids[asset] if entry["side"] == "BUY" else self.asks[asset]
                if entry["size"] == "0":
                    levels.pop(entry["price"], None)
                else:
                    levels[entry["price"]] = entry["size"]
                top = self.top(asset)
                assert (entry["best_bid"], entry["best_ask"]) == (top.bid or "0", top.ask or "1")
                self.events += 1
        for asset in self.bids:
            top = self.top(asset)
            if top.bid and top.ask:
                assert Decimal(top.bid) < Decimal(top.ask), f"crossed book {top}"


def http(url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
