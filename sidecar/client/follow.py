"""The blocking follower: pub/sub for speed, a periodic re-read for what pub/sub cannot carry.

The rules (what is yielded, when it re-reads, never going back in ``seq``, ``alive=False`` while
Redis is unreachable) are in :mod:`sidecar.client.follow_state`; this is the I/O around them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import redis

from sidecar.client.follow_state import FollowState, Step, text
from sidecar.client.quote import Quote

if TYPE_CHECKING:
    from sidecar.client.sync import QuoteClient

log = logging.getLogger("sidecar.client")


class Follower:
    """An iterator of :class:`Quote` changes for a fixed set of tokens.

    Iterating blocks until the next change; :meth:`poll` waits at most a given time.
    :meth:`close` (also from another thread) ends the iteration. One follower is for one thread.
    """

    def __init__(self, client: QuoteClient, tokens: list[str], reconcile_s: float) -> None:
        tokens = list(dict.fromkeys(tokens))
        self._state = FollowState(tokens, {client.quote_key(t): t for t in tokens}, reconcile_s)
        self._client = client
        self._pubsub: redis.client.PubSub | None = None
        self._polling = False
        self._closed = threading.Event()

    @property
    def tokens(self) -> list[str]:
        return list(self._state.tokens)

    def __iter__(self) -> Iterator[Quote]:
        return self

    def __next__(self) -> Quote:
        while True:
            quote = self.poll(1.0)
            if quote is not None:
                return quote
            if self._closed.is_set():
                raise StopIteration

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the iteration (a blocked ``next`` returns within ~50 ms) and free the connection."""
        self._closed.set()
        if not self._polling:
            self._drop_pubsub()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def poll(self, timeout_s: float) -> Quote | None:
        """The next quote that changed, waiting at most ``timeout_s``; ``None`` if none came."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        self._polling = True
        try:
            return self._poll(deadline)
        finally:
            self._polling = False

    def _poll(self, deadline: float) -> Quote | None:
        state = self._state
        while not self._closed.is_set():
            if state.queue:
                return state.queue.popleft()
            nxt = state.next_step(time.monotonic(), deadline, self._pubsub is not None)
            try:
                if nxt.step is Step.SUBSCRIBE:
                    self._subscribe()
                    continue
                if nxt.step is Step.RECONCILE:
                    self._reconcile(force=False)
                    continue
                if nxt.step is Step.WAIT:
                    self._closed.wait(nxt.wait_s)
                elif (message := self._listen(nxt.wait_s)) is not None:
                    self._on_message(message)
                    continue
            except redis.RedisError as exc:
                self._drop_pubsub()
                if state.failed(time.monotonic()):
                    log.warning("Redis unreachable while following quotes (%s): marking them not alive", exc)
                continue
            if time.monotonic() >= deadline:
                return None
        self._drop_pubsub()
        return None

    def _listen(self, timeout_s: float) -> dict[str, object] | None:
        assert self._pubsub is not None  # Step.LISTEN comes only while subscribed
        message: dict[str, object] | None = self._pubsub.get_message(timeout=timeout_s)
        return message

    def _subscribe(self) -> None:
        """(Re)subscribe, then read the hashes: nothing changed in between can be missed."""
        self._drop_pubsub()
        self._state.subscribing()
        pubsub = self._client.redis.pubsub()
        self._pubsub = pubsub
        if self._state.channels:
            pubsub.subscribe(*self._state.channels)
        self._reconcile(force=True)
        self._state.subscribed()

    def _reconcile(self, force: bool) -> None:
        alive, hashes = self._client.read_raw(self._state.tokens)
        if self._state.read(alive, hashes, time.monotonic(), time.time(), force):
            log.info("Redis answers again: following %d tokens", len(self._state.tokens))

    def _on_message(self, message: dict[str, object]) -> None:
        bad = self._state.bad_messages
        push = self._state.message(message, time.monotonic())
        if push is None:
            if self._state.bad_messages > bad and bad % 1000 == 0:  # the first, then every 1000th
                channel = text(message.get("channel"))
                log.warning("unreadable quote message on %s (%d so far)", channel, bad + 1)
            return
        if self._state.needs_alive(push):
            self._state.alive = self._client.alive_epoch()
        self._state.pushed(push, time.time())

    def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()
