"""What a follower yields and when it re-reads: the decisions, without Redis or clocks.

The sync :class:`~sidecar.client.follow.Follower` and the asyncio twin do the I/O around one
``FollowState``; times are passed in (``now`` monotonic seconds, ``now_s`` epoch seconds).

Pushes arrive within milliseconds but miss three things: the ``updated_at`` refreshes that are
written and not published, the alive key, and whatever happened while the subscription was
down. So the follower re-reads the hashes and the alive key every ``reconcile_s`` and after every
(re)subscription, and yields whatever differs from what it last yielded. It never goes back in
``seq`` for a token. A dropped connection is re-opened at once; when Redis cannot be reached
after that, it yields every followed token once with ``alive=False``: nothing vouches for those
quotes until Redis answers again.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from sidecar.client.quote import Quote, quote_from_fields

WAIT_SLICE_S = 0.05  # longest block in one pub/sub read, so close() from another thread ends it
RETRY_MIN_S = 0.1
RETRY_MAX_S = 2.0


def text(value: Any) -> str:
    """A Redis reply as ``str``, whether the connection decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class Push:
    """One quote message from pub/sub, decoded: the token and the hash fields it carries."""

    token: str
    fields: dict[str, str]


class Step(Enum):
    """What a follower does next (see :meth:`FollowState.next_step`)."""

    WAIT = "wait"  # Redis is judged down: wait for the retry time (or the caller's deadline)
    SUBSCRIBE = "subscribe"  # no subscription: make one, then re-read every hash
    RECONCILE = "reconcile"  # the periodic re-read is due
    LISTEN = "listen"  # read pub/sub for at most ``wait_s``


@dataclass(frozen=True, slots=True)
class Next:
    step: Step
    wait_s: float = 0.0  # for WAIT and LISTEN: the longest block


class FollowState:
    """The follower's memory: what it yielded last per token, the alive epoch, the retry clock."""

    def __init__(self, tokens: Sequence[str], channels: Mapping[str, str], reconcile_s: float) -> None:
        if reconcile_s <= 0:
            raise ValueError("reconcile_s must be > 0")
        self.tokens = list(tokens)
        self.channels = dict(channels)  # channel name -> token
        self.reconcile_s = reconcile_s
        self.queue: deque[Quote] = deque()
        self.alive: str | None = None
        self.next_reconcile = 0.0
        self.retry_at = 0.0
        self.down = False
        self.bad_messages = 0  # unreadable quote messages (not JSON objects), skipped
        self._last: dict[str, Quote] = {}
        self._retry_s = RETRY_MIN_S
        self._failures = 0  # consecutive failed attempts; Redis is judged down after two
        self._confirmed: set[str] = set()  # channels whose subscribe confirmation arrived
        self._force = False

    # ---- reads ------------------------------------------------------------------------------------

    def subscribing(self) -> None:
        """A new subscription is about to be made: its confirmations are not re-subscriptions."""
        self._confirmed.clear()

    def subscribed(self) -> None:
        self._retry_s = RETRY_MIN_S
        self._failures = 0

    def reconcile_due(self, now: float) -> bool:
        return now >= self.next_reconcile

    def next_step(self, now: float, deadline: float, subscribed: bool) -> Next:
        """The follower's next I/O, for both followers: they only carry it out."""
        if not subscribed:
            if now < self.retry_at:
                return Next(Step.WAIT, min(self.retry_at, deadline) - now)
            return Next(Step.SUBSCRIBE)
        if self.reconcile_due(now):
            return Next(Step.RECONCILE)
        return Next(Step.LISTEN, min(WAIT_SLICE_S, self.next_reconcile - now, max(0.0, deadline - now)))

    def read(
        self, alive: str | None, hashes: Sequence[Mapping[str, str]], now: float, now_s: float, force: bool
    ) -> bool:
        """The hashes and alive key were re-read; queue what changed. True if Redis was down."""
        was_down, self.down = self.down, False
        self.alive = alive
        force = force or self._force
        self._force = False
        for token, fields in zip(self.tokens, hashes, strict=True):
            quote = quote_from_fields(token, fields, alive, now_s)
            if quote is not None:
                self._offer(quote, force)
        # A token whose hash vanished (Redis flushed or restarted empty) or went back in seq (an
        # older snapshot) yields nothing above, but who vouches for its last quote may have
        # changed: say so, or a worker keeps pricing from a quote of a dead sidecar.
        for token in self.tokens:
            last = self._last.get(token)
            if last is not None and last.alive != (alive is not None and alive == last.epoch):
                self._offer(replace(last, alive=not last.alive), force=True)
        self.next_reconcile = now + self.reconcile_s
        return was_down

    # ---- pushes -----------------------------------------------------------------------------------

    def message(self, message: Mapping[str, Any], now: float) -> Push | None:
        """A pub/sub message; a ``Push`` to judge (see :meth:`needs_alive`) or ``None``."""
        kind = text(message.get("type", ""))
        channel = text(message.get("channel", ""))
        token = self.channels.get(channel)
        if token is None:
            return None
        if kind == "subscribe":
            if channel in self._confirmed:
                # redis-py re-subscribed by itself after a reconnect: what was published while
                # the connection was down is lost. Read the hashes again once the burst of
                # confirmations is through, and yield them all.
                self._force = True
                self.next_reconcile = min(self.next_reconcile, now + WAIT_SLICE_S)
            self._confirmed.add(channel)
            return None
        if kind != "message":
            return None
        try:
            fields = json.loads(message["data"])
        except (ValueError, TypeError, KeyError):
            fields = None
        if not isinstance(fields, dict):
            self.bad_messages += 1
            return None
        return Push(token, {str(k): str(v) for k, v in fields.items()})

    def needs_alive(self, push: Push) -> bool:
        """A message from another run than the alive epoch we know (a restart): ask Redis once."""
        return push.fields.get("epoch") != self.alive

    def pushed(self, push: Push, now_s: float) -> None:
        quote = quote_from_fields(push.token, push.fields, self.alive, now_s)
        if quote is not None:
            self._offer(quote, force=False)

    # ---- failures ---------------------------------------------------------------------------------

    def failed(self, now: float) -> bool:
        """A Redis call failed. True when this makes Redis count as down (log it once)."""
        self._failures += 1
        if self._failures == 1:
            self.retry_at = 0.0  # a killed connection: reconnect at once before judging Redis
            return False
        self.retry_at = now + self._retry_s
        self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
        if self.down:
            return False
        self.down = True
        self.alive = None
        for token in self.tokens:
            last = self._last.get(token)
            if last is not None and last.alive:
                self._offer(replace(last, alive=False), force=True)
        return True

    def _offer(self, quote: Quote, force: bool) -> None:
        """Queue ``quote`` unless it is older than, or (unless forced) equal to, the last yielded."""
        last = self._last.get(quote.token)
        if last is not None and (quote.seq < last.seq or (quote == last and not force)):
            return
        self._last[quote.token] = quote
        self.queue.append(quote)
