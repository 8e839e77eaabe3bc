"""``AsyncQuoteClient``: the asyncio twin of :class:`~sidecar.client.QuoteClient`, same names.

Built on ``redis.asyncio``; the follower drives the same :class:`FollowState` as the blocking
one, so the rules (never back in ``seq``, re-read on every re-subscription and every
``reconcile_s``, ``alive=False`` while Redis is unreachable) are one piece of code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import redis
import redis.asyncio as aioredis

from sidecar.client.base import (
    DEFAULT_PREFIX,
    DEFAULT_URL,
    ClientBase,
    split_reads,
)
from sidecar.client.follow_state import FollowState, Step, text
from sidecar.client.quote import LIVE, Quote, check_tokens, quote_from_fields

log = logging.getLogger("sidecar.client")


class AsyncQuoteClient(ClientBase):
    """Read quotes and manage ``P desired`` from asyncio code; see ``QuoteClient`` for the rules."""

    def __init__(
        self,
        redis_url: str = DEFAULT_URL,
        prefix: str = DEFAULT_PREFIX,
        *,
        redis: aioredis.Redis | None = None,
        password: str | None = None,
        ssl_ca_certs: str | None = None,
    ) -> None:
        super().__init__(redis_url, prefix, redis=redis, password=password, ssl_ca_certs=ssl_ca_certs)
        self._followers: list[AsyncFollower] = []

    def _open(self, redis_url: str, options: dict[str, Any]) -> Any:
        return aioredis.Redis.from_url(redis_url, **options)

    async def read_raw(self, tokens: list[str]) -> tuple[str | None, list[dict[str, str]]]:
        """The alive key and each token's hash, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        self._queue_reads(pipe, tokens)
        return split_reads(await pipe.execute())

    async def alive_epoch(self) -> str | None:
        value = await self.redis.get(self.alive_key)
        return None if value is None else text(value)

    async def get(self, token: str) -> Quote | None:
        (token,) = check_tokens(token)
        return (await self.get_many([token]))[token]

    async def get_many(self, tokens: Iterable[str]) -> dict[str, Quote | None]:
        wanted = list(dict.fromkeys(check_tokens(tokens)))
        alive, hashes = await self.read_raw(wanted)
        now_s = time.time()
        return {t: quote_from_fields(t, h, alive, now_s) for t, h in zip(wanted, hashes, strict=True)}

    async def is_fresh(self, token: str, max_age_s: float) -> bool:
        try:
            quote = await self.get(token)
        except redis.RedisError:
            return False
        return quote is not None and quote.usable(max_age_s)

    async def wait_live(self, token: str, timeout_s: float) -> Quote | None:
        (token,) = check_tokens(token)
        deadline = time.monotonic() + timeout_s
        async with self.follow([token], reconcile_s=0.25) as follower:
            while (left := deadline - time.monotonic()) > 0:
                quote = await follower.poll(left)
                if quote is not None and quote.alive and quote.status == LIVE:
                    return quote
        return None

    def follow(self, tokens: Iterable[str], *, reconcile_s: float = 1.0) -> AsyncFollower:
        follower = AsyncFollower(self, list(dict.fromkeys(check_tokens(tokens))), reconcile_s)
        self._followers = [f for f in self._followers if not f.closed]
        self._followers.append(follower)
        return follower

    async def want(self, tokens: Iterable[str] | str) -> None:
        valid = check_tokens(tokens)
        if valid:
            await self._change_desired(lambda pipe: pipe.sadd(self.desired_key, *valid))

    async def unwant(self, tokens: Iterable[str] | str) -> None:
        valid = check_tokens(tokens)
        if valid:
            await self._change_desired(lambda pipe: pipe.srem(self.desired_key, *valid))

    async def set_wanted(self, tokens: Iterable[str] | str) -> None:
        valid = check_tokens(tokens)

        def replace(pipe: Any) -> None:
            pipe.delete(self.desired_key)
            if valid:
                pipe.sadd(self.desired_key, *valid)

        await self._change_desired(replace)

    async def wanted(self) -> set[str]:
        return {text(m) for m in await self.redis.smembers(self.desired_key)}

    async def _change_desired(self, change: Any) -> None:
        pipe = self.redis.pipeline(transaction=True)
        change(pipe)
        pipe.publish(self.desired_channel, "1")
        await pipe.execute()

    async def close(self) -> None:
        for follower in self._followers:
            await follower.aclose()
        self._followers.clear()
        if self._owns:
            await self.redis.aclose()

    async def __aenter__(self) -> AsyncQuoteClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncFollower:
    """``async for quote in client.follow(tokens)``; ``await poll(timeout_s)``; ``aclose()``."""

    def __init__(self, client: AsyncQuoteClient, tokens: list[str], reconcile_s: float) -> None:
        self._state = FollowState(tokens, {client.quote_key(t): t for t in tokens}, reconcile_s)
        self._client = client
        self._pubsub: Any = None
        self._closed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """End the iteration; the connection is freed by the iterating task (or ``aclose``)."""
        self._closed.set()

    async def aclose(self) -> None:
        self._closed.set()
        await self._drop_pubsub()

    def __aiter__(self) -> AsyncIterator[Quote]:
        return self

    async def __anext__(self) -> Quote:
        while True:
            quote = await self.poll(1.0)
            if quote is not None:
                return quote
            if self._closed.is_set():
                raise StopAsyncIteration

    async def __aenter__(self) -> AsyncFollower:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def poll(self, timeout_s: float) -> Quote | None:
        """The next quote that changed, waiting at most ``timeout_s``; ``None`` if none came."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        state = self._state
        while not self._closed.is_set():
            if state.queue:
                return state.queue.popleft()
            nxt = state.next_step(time.monotonic(), deadline, self._pubsub is not None)
            try:
                if nxt.step is Step.SUBSCRIBE:
                    await self._subscribe()
                    continue
                if nxt.step is Step.RECONCILE:
                    await self._reconcile(force=False)
                    continue
                if nxt.step is Step.WAIT:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closed.wait(), nxt.wait_s)
                elif (message := await self._pubsub.get_message(timeout=nxt.wait_s)) is not None:
                    await self._on_message(message)
                    continue
            except redis.RedisError as exc:
                await self._drop_pubsub()
                if state.failed(time.monotonic()):
                    log.warning("Redis unreachable while following quotes (%s): marking them not alive", exc)
                continue
            if time.monotonic() >= deadline:
                return None
        await self._drop_pubsub()
        return None

    async def _subscribe(self) -> None:
        await self._drop_pubsub()
        self._state.subscribing()
        self._pubsub = self._client.redis.pubsub()
        if self._state.channels:
            await self._pubsub.subscribe(*self._state.channels)
        await self._reconcile(force=True)
        self._state.subscribed()

    async def _reconcile(self, force: bool) -> None:
        alive, hashes = await self._client.read_raw(self._state.tokens)
        if self._state.read(alive, hashes, time.monotonic(), time.time(), force):
            log.info("Redis answers again: following %d tokens", len(self._state.tokens))

    async def _on_message(self, message: dict[str, Any]) -> None:
        push = self._state.message(message, time.monotonic())
        if push is None:
            return
        if self._state.needs_alive(push):
            self._state.alive = await self._client.alive_epoch()
        self._state.pushed(push, time.time())

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await pubsub.aclose()
