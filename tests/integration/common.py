"""What several integration test modules share: reading quotes back and comparing them with the
simulator's truth, the usual start (tokens desired, sidecar up, all live), a pub/sub listener."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import redis
from pmsim import Simulator

from devkit.procs import SidecarProcess
from devkit.redis_server import RedisServer
from devkit.wait import wait_for

P = "pm:"

# A Lua busy loop: the whole server stalls for ARGV[1] seconds, like DEBUG SLEEP (which Redis 7
# refuses unless enable-debug-command is set).
BUSY_SCRIPT = """
local t0 = redis.call('TIME')
local start = tonumber(t0[1]) + tonumber(t0[2]) / 1e6
while true do
  local t = redis.call('TIME')
  if tonumber(t[1]) + tonumber(t[2]) / 1e6 - start >= tonumber(ARGV[1]) then break end
end
return 1
"""


class QuoteListener:
    """Collects every message on ``pm:quote:*`` and checks, as it goes, that the hash it then
    reads has a seq at least as new (the atomicity promise of the contract)."""

    def __init__(self, server: RedisServer) -> None:
        self.client = server.client()
        self.reader = server.client()
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(P + "quote:*")
        self.messages: list[dict[str, Any]] = []
        self.atomicity_violations: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.pubsub.get_message(timeout=0.1)
            if msg is None:
                continue
            data = orjson.loads(msg["data"])
            self.messages.append(data)
            seq = self.reader.hget(P + "quote:" + data["token"], "seq")
            if seq is None or int(seq) < int(data["seq"]):
                self.atomicity_violations.append(f"{data['token']}: published {data['seq']}, hash {seq}")

    def for_token(self, token: str) -> list[dict[str, Any]]:
        return [m for m in list(self.messages) if m["token"] == token]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.pubsub.close()


def quote(r: redis.Redis, token: str) -> dict[str, str]:
    return r.hgetall(P + "quote:" + token)


def matches_truth(r: redis.Redis, sim: Simulator, token: str, status: str = "live") -> bool:
    q = quote(r, token)
    t = sim.truth(token)
    return (
        q.get("status") == status
        and q.get("bid") == t.bid
        and q.get("bid_size") == t.bid_size
        and q.get("ask") == t.ask
        and q.get("ask_size") == t.ask_size
    )


def all_match(r: redis.Redis, sim: Simulator, tokens: list[str]) -> bool:
    return all(matches_truth(r, sim, t) for t in tokens)


def hashes(r: redis.Redis, tokens: list[str]) -> list[dict[str, str]]:
    pipe = r.pipeline(transaction=False)
    for t in tokens:
        pipe.hgetall(P + "quote:" + t)
    return pipe.execute()


def statuses(r: redis.Redis, tokens: list[str]) -> set[str]:
    pipe = r.pipeline()
    for t in tokens:
        pipe.hget(P + "quote:" + t, "status")
    return set(pipe.execute())


def new_tokens(sim: Simulator, markets: int) -> list[str]:
    """Token ids of `markets` new markets, siblings next to each other."""
    ids = [sim.add_market() for _ in range(markets)]
    by_market = sim.markets()
    return [t for m in ids for t in by_market[m]]


def start_live(
    redis_server: RedisServer,
    sim: Simulator,
    sidecar: Callable[..., SidecarProcess],
    markets: int,
    timeout: float = 10.0,
    **settings: Any,
) -> tuple[list[str], redis.Redis, SidecarProcess]:
    """The tokens of `markets` new markets desired, the sidecar started with `settings`, and every
    quote live and equal to the truth: where most fault tests begin."""
    tokens = new_tokens(sim, markets)
    r = redis_server.client()
    r.sadd(P + "desired", *tokens)
    proc = sidecar(**settings)
    wait_for(lambda: all_match(r, sim, tokens), timeout, what="live")
    return tokens, r, proc


def move_truth(sim: Simulator, token: str, delta: int = 1) -> None:
    """A real top-of-book change (size at the best bid), so 'equal to truth' means 'saw it'."""
    top = sim.truth(token)
    sim.price_change([(token, "BUY", top.bid, str(Decimal(top.bid_size) + delta))])
