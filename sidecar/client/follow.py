"""Following quotes: pub/sub for speed, a periodic re-read for everything pub/sub cannot carry.

Pushes arrive within milliseconds but miss three things: the ``updated_at`` refreshes that are
written and not published, the alive key, and whatever happened while the subscription was
down. So the follower re-reads the hashes and the alive key every ``reconcile_s`` and after every
(re)subscription, and yields whatever differs from what it last yielded. It never goes back in
``seq`` for a token. A dropped connection is re-opened at once; when Redis cannot be reached
after that, it yields every followed token once with ``alive=False``: nothing vouches for those
quotes until Redis answers again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import redis

from sidecar.client.quote import Quote, quote_from_fields

if TYPE_CHECKING:
    from sidecar.client.sync import QuoteClient

log = logging.getLogger("sidecar.client")

WAIT_SLICE_S = 0.05  # longest block in one pub/sub read, so close() from another thread ends it
RETRY_MIN_S = 0.1
RETRY_MAX_S = 2.0


def text(value: Any) -> str:
    """A Redis reply as ``str``, whether the connection decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


class Follower:
    """An iterator of :class:`Quote` for a fixed set of tokens; see the module docstring.

    Iterating blocks until the next change; :meth:`poll` waits at most a given time.
    :meth:`close` (also from another thread) ends the iteration.
    """

    def __init__(self, client: QuoteClient, tokens: list[str], reconcile_s: float) -> None:
        if reconcile_s <= 0:
            raise ValueError("reconcile_s must be > 0")
        self._client = client
        self._tokens = list(dict.fromkeys(tokens))
        self._channels = {client.quote_key(t): t for t in self._tokens}
        self._reconcile_s = reconcile_s
        self._last: dict[str, Quote] = {}
        self._queue: deque[Quote] = deque()
        self._pubsub: redis.client.PubSub | None = None
        self._alive: str | None = None
        self._next_reconcile = 0.0
        self._retry_at = 0.0
        self._retry_s = RETRY_MIN_S
        self._down = False
        self._failures = 0  # consecutive failed attempts; Redis is judged down after two
        self._confirmed: set[str] = set()  # channels whose subscribe confirmation arrived
        self._force = False
        self._polling = False
        self._closed = threading.Event()

    @property
    def tokens(self) -> list[str]:
        return list(self._tokens)

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
        while not self._closed.is_set():
            if self._queue:
                return self._queue.popleft()
            now = time.monotonic()
            try:
                if self._pubsub is None:
                    if now < self._retry_at:
                        self._closed.wait(min(self._retry_at, deadline) - now)
                    else:
                        self._subscribe()
                        continue
                elif now >= self._next_reconcile:
                    self._reconcile(force=self._force)
                    continue
                else:
                    wait = min(WAIT_SLICE_S, self._next_reconcile - now, max(0.0, deadline - now))
                    message = self._pubsub.get_message(timeout=wait)
                    if message is not None:
                        self._on_message(message)
                        continue
            except redis.RedisError as exc:
                self._on_error(exc)
                continue
            if time.monotonic() >= deadline:
                return None
        self._drop_pubsub()
        return None

    # ---- internals ------------------------------------------------------------------------------

    def _subscribe(self) -> None:
        """(Re)subscribe, then read the hashes: nothing changed in between can be missed."""
        self._drop_pubsub()
        self._confirmed.clear()
        pubsub = self._client.redis.pubsub()
        self._pubsub = pubsub
        if self._channels:
            pubsub.subscribe(*self._channels)
        self._reconcile(force=True)
        self._retry_s = RETRY_MIN_S
        self._failures = 0

    def _reconcile(self, force: bool = False) -> None:
        """Re-read every hash and the alive key; queue what differs from what was yielded."""
        alive, hashes = self._client.read_raw(self._tokens)
        if self._down:
            log.info("Redis answers again: following %d tokens", len(self._tokens))
            self._down = False
        self._alive = alive
        self._force = False
        now_s = time.time()
        for token, fields in zip(self._tokens, hashes, strict=True):
            quote = quote_from_fields(token, fields, alive, now_s)
            if quote is not None:
                self._offer(quote, force)
        self._next_reconcile = time.monotonic() + self._reconcile_s

    def _on_message(self, message: Mapping[str, Any]) -> None:
        kind = text(message.get("type", ""))
        token = self._channels.get(text(message.get("channel", "")))
        if token is None:
            return
        if kind == "subscribe":
            channel = text(message.get("channel", ""))
            if channel in self._confirmed:
                # redis-py re-subscribed by itself after a reconnect: what was published while
                # the connection was down is lost. Read the hashes again once the burst of
                # confirmations is through, and yield them all.
                self._force = True
                self._next_reconcile = min(self._next_reconcile, time.monotonic() + WAIT_SLICE_S)
            self._confirmed.add(channel)
            return
        if kind != "message":
            return
        try:
            fields = json.loads(message["data"])
        except (ValueError, TypeError):
            log.warning("unreadable quote message on %s", self._client.quote_key(token))
            return
        if not isinstance(fields, dict):
            return
        fields = {str(k): str(v) for k, v in fields.items()}
        if fields.get("epoch") != self._alive:
            # A message from another run than the alive key we know: a restart. Ask once.
            self._alive = self._client.alive_epoch()
        quote = quote_from_fields(token, fields, self._alive, time.time())
        if quote is not None:
            self._offer(quote, force=False)

    def _offer(self, quote: Quote, force: bool) -> None:
        """Queue ``quote`` unless it is older than, or (unless forced) equal to, the last yielded."""
        last = self._last.get(quote.token)
        if last is not None and (quote.seq < last.seq or (quote == last and not force)):
            return
        self._last[quote.token] = quote
        self._queue.append(quote)

    def _on_error(self, exc: redis.RedisError) -> None:
        self._drop_pubsub()
        self._failures += 1
        if self._failures == 1:
            self._retry_at = 0.0  # a killed connection: reconnect at once before judging Redis
            return
        self._retry_at = time.monotonic() + self._retry_s
        self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
        if self._down:
            return
        self._down = True
        log.warning("Redis unreachable while following quotes (%s): marking them not alive", exc)
        self._alive = None
        for token in self._tokens:
            last = self._last.get(token)
            if last is not None and last.alive:
                self._offer(_not_alive(last), force=True)

    def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()


def _not_alive(quote: Quote) -> Quote:
    """The same quote, no longer vouched for."""
    return replace(quote, alive=False)
