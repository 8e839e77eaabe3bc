"""AsyncQuoteClient: the same names and rules as QuoteClient, on redis.asyncio.

Against fakeredis for the rules, and one run against a real redis-server for the killed
connection; the rule logic itself is shared with the blocking follower (FollowState).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import fakeredis
import pytest
import redis

from devkit.redis_server import RedisServer
from sidecar.client import AsyncFollower, AsyncQuoteClient, Quote, QuoteClient

A = "1" * 72
B = "2" * 75
T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def fields(seq: int, **over: str) -> dict[str, str]:
    out = {
        "bid": "0.40",
        "ask": "0.42",
        "bid_size": "10",
        "ask_size": "11",
        "seq": str(seq),
        "epoch": "e1",
        "status": "live",
        "reason": "",
        "source": "book",
        "updated_at": str(int(time.time() * 1000)),
    }
    out.update(over)
    return out


async def write(r: Any, token: str, seq: int, publish: bool = True, **over: str) -> None:
    f = fields(seq, **over)
    await r.hset(f"pm:quote:{token}", mapping=f)
    if publish:
        await r.publish(f"pm:quote:{token}", json.dumps({**f, "token": token}))


async def drain(f: AsyncFollower, quiet_s: float = 0.2) -> list[Quote]:
    out = []
    while (q := await f.poll(quiet_s)) is not None:
        out.append(q)
    return out


def with_fake(test: Callable[[AsyncQuoteClient, Any, fakeredis.FakeServer], Awaitable[None]]) -> None:
    async def main() -> None:
        server = fakeredis.FakeServer()
        r = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
        client = AsyncQuoteClient(redis=fakeredis.FakeAsyncRedis(server=server))
        await r.set("pm:sidecar:alive", "e1")
        try:
            await test(client, r, server)
        finally:
            await client.close()

    run(main())


def test_same_public_names_as_the_blocking_client() -> None:
    public = {n for n in dir(QuoteClient) if not n.startswith("_")}
    assert public <= {n for n in dir(AsyncQuoteClient) if not n.startswith("_")}


def test_reads_and_desired_set() -> None:
    async def body(client: AsyncQuoteClient, r: Any, server: fakeredis.FakeServer) -> None:
        await write(r, A, 5, bid="0.33")
        q = await client.get(A)
        assert q is not None and (q.bid, q.seq, q.alive) == (0.33, 5, True)
        assert await client.get_many([A, B]) == {A: q, B: None}
        assert await client.is_fresh(A, 60) and not await client.is_fresh(B, 60)
        nudges = r.pubsub(ignore_subscribe_messages=True)
        await nudges.subscribe("pm:desired:changed")
        await client.want([A, B])
        await client.unwant(B)
        assert await client.wanted() == {A}
        await client.set_wanted([B])
        assert await r.smembers("pm:desired") == {B}
        with pytest.raises(ValueError, match="invalid token id"):
            await client.set_wanted([A, "x"])
        assert await r.smembers("pm:desired") == {B}
        got = []
        deadline = time.monotonic() + 1
        while len(got) < 3 and time.monotonic() < deadline:
            m = await nudges.get_message(timeout=0.05)
            if m is not None:
                got.append(m["channel"])
        assert got == ["pm:desired:changed"] * 3
        await nudges.aclose()
        server.connected = False
        assert await client.is_fresh(A, 60) is False

    with_fake(body)


def test_follow_rules() -> None:
    async def body(client: AsyncQuoteClient, r: Any, server: fakeredis.FakeServer) -> None:
        await write(r, A, 10)
        async with client.follow([A, B], reconcile_s=0.2) as f:
            assert [(q.token, q.seq) for q in await drain(f)] == [(A, 10)]
            await write(r, A, 9)  # older: never yielded
            await write(r, B, 3)
            assert [(q.token, q.seq) for q in await drain(f)] == [(B, 3)]
            await write(r, A, 10, publish=False, updated_at="5")  # unpublished refresh
            assert [(q.token, q.seq, q.updated_at_ms) for q in await drain(f, 0.4)] == [(A, 10, 5)]
            await r.delete("pm:sidecar:alive")
            assert sorted((q.token, q.alive) for q in await drain(f, 0.4)) == [(A, False), (B, False)]
            await r.set("pm:sidecar:alive", "e1")
            assert sorted((q.token, q.alive) for q in await drain(f, 0.4)) == [(A, True), (B, True)]
            server.connected = False
            assert sorted((q.token, q.alive) for q in await drain(f, 0.5)) == [(A, False), (B, False)]
            server.connected = True
            assert sorted((q.token, q.alive) for q in await drain(f, 3.0)) == [(A, True), (B, True)]
        assert f.closed

    with_fake(body)


def test_wait_live_and_async_iteration() -> None:
    async def body(client: AsyncQuoteClient, r: Any, server: fakeredis.FakeServer) -> None:
        await write(r, A, 1, status="pending", bid="", ask="", updated_at="")

        async def later() -> None:
            await asyncio.sleep(0.3)
            await write(r, A, 2)

        task = asyncio.create_task(later())
        t0 = time.monotonic()
        q = await client.wait_live(A, 5)
        assert q is not None and q.seq == 2 and 0.25 <= time.monotonic() - t0 < 0.6
        await task
        assert await client.wait_live(B, 0.3) is None
        f = client.follow([A], reconcile_s=5)
        seen: list[int] = []

        async def consume() -> None:
            async for quote in f:
                seen.append(quote.seq)

        consumer = asyncio.create_task(consume())

        async def until(want: list[int]) -> None:
            deadline = time.monotonic() + 2
            while seen != want and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # yield to the consumer task until it has caught up

        await until([2])
        await write(r, A, 3)
        await until([2, 3])
        f.close()
        await asyncio.wait_for(consumer, 2)
        assert seen == [2, 3]

    with_fake(body)


@pytest.mark.integration
def test_killed_connection_against_real_redis(tmp_path: Path) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed")
    server = RedisServer(binary, tmp_path)
    server.start()

    async def main() -> None:
        r = redis.asyncio.Redis(port=server.port, decode_responses=True)
        await r.set("pm:sidecar:alive", "e1")
        await write(r, A, 10)
        client = AsyncQuoteClient(server.url)
        async with client.follow([A], reconcile_s=30) as f:
            assert [q.seq for q in await drain(f)] == [10]
            assert await r.client_kill_filter(_type="pubsub") == 1
            await write(r, A, 11)  # published while the follower's connection is dead
            q = await f.poll(1.0)
            assert q is not None and (q.seq, q.alive) == (11, True)
        await client.close()
        await r.aclose()

    try:
        run(main())
    finally:
        server.stop()
