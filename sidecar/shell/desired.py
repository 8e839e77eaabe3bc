"""Reads the autorun scheduler's desired set: every poll interval and at once on a nudge.

The scheduler adds/removes ids in ``P desired`` and may publish on ``P desired:changed`` to skip
the poll delay. This thread only reads; validation and capping happen in the engine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from sidecar.shell.inbox import DesiredChanged, Post

log = logging.getLogger("sidecar.shell.desired")

# After a reconnect, a missing desired key most likely means Redis restarted empty, not that
# the scheduler wants nothing: keep the last set this long for the scheduler to rewrite it.
RESTART_GRACE_S = 60.0


class DesiredReader:
    def __init__(
        self, client_factory: Callable[[], redis.Redis], prefix: str, poll_s: float, post: Post
    ) -> None:
        if not poll_s > 0:  # 0 would spin SMEMBERS against Redis in a busy loop
            raise ValueError(f"poll interval must be positive, got {poll_s!r}")
        self._factory = client_factory
        self._key = prefix + "desired"
        self._channel = prefix + "desired:changed"
        self._poll_s = poll_s
        self._post = post
        self._stop = threading.Event()
        self.errors = 0
        self.wrong_type = False
        self.holding = False
        self._thread = threading.Thread(target=self._run, name="desired-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        backoff = 0.1
        last: frozenset[bytes] | None = None
        connects = 0
        while not self._stop.is_set():
            pubsub = None
            try:
                client = self._factory()
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                connects += 1
                grace_until = time.monotonic() + RESTART_GRACE_S if connects > 1 and last else 0.0
                backoff = 0.1
                while not self._stop.is_set():
                    members = self._read(client)
                    # An empty set does not exist in Redis: "empty" and "vanished" look alike.
                    if members is not None and not members and time.monotonic() < grace_until:
                        if not self.holding:
                            log.warning(
                                "%s vanished after a Redis reconnect: keeping the last %d tokens "
                                "for up to %.0fs until the scheduler rewrites it",
                                self._key,
                                len(last or ()),
                                RESTART_GRACE_S,
                            )
                        self.holding = True
                        members = None
                    if members is not None:
                        self.holding = False
                    if members is not None and members != last:
                        last = members
                        self._post(DesiredChanged(members))
                    # Returns early when the scheduler nudges us; drain bursts of nudges.
                    msg = pubsub.get_message(timeout=self._poll_s)
                    while msg is not None and not self._stop.is_set():
                        msg = pubsub.get_message(timeout=0.0)
            except Exception as exc:  # never let the thread die: the set would freeze for good
                self.errors += 1
                if self.errors == 1 or self.errors % 50 == 0:
                    if isinstance(exc, redis.RedisError):
                        log.warning("desired set: Redis unavailable (%d errors): %s", self.errors, exc)
                    else:
                        log.exception("desired set: unexpected error (%d errors)", self.errors)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        log.debug("pubsub close failed", exc_info=True)

    def _read(self, client: redis.Redis) -> frozenset[bytes] | None:
        try:
            members = client.smembers(self._key)
        except redis.ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            if not self.wrong_type:
                log.error("%s is not a SET; keeping the last good desired set until it is", self._key)
            self.wrong_type = True
            return None
        if self.wrong_type:
            log.info("%s is a SET again", self._key)
        self.wrong_type = False
        return frozenset(members)  # type: ignore[arg-type]
