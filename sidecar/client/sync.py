"""``QuoteClient``: what a worker and the scheduler need from the sidecar's Redis keys.

Every read that returns a quote reads the alive key in the same round trip, so a quote cannot
be judged without knowing whether the sidecar that wrote it still runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import redis

from sidecar.client.base import (
    DEFAULT_PREFIX,
    DEFAULT_URL,
    ClientBase,
    redact,
    split_reads,
)
from sidecar.client.follow import Follower
from sidecar.client.follow_state import text
from sidecar.client.quote import LIVE, Quote, check_tokens, quote_from_fields

__all__ = ["DEFAULT_PREFIX", "DEFAULT_URL", "QuoteClient", "redact"]


class QuoteClient(ClientBase):
    """Read quotes and manage the desired set (``P desired``) in the sidecar's Redis.

    ``redis_url`` is ``redis://``, ``rediss://`` (TLS) or ``unix://``; or pass an existing
    ``redis.Redis`` as ``redis`` (decoded or not). Thread-safe for ``get``/``get_many``/
    ``want``...; each :meth:`follow` iterator is for one thread.
    """

    def __init__(
        self,
        redis_url: str = DEFAULT_URL,
        prefix: str = DEFAULT_PREFIX,
        *,
        redis: redis.Redis | None = None,
        password: str | None = None,
        ssl_ca_certs: str | None = None,
    ) -> None:
        super().__init__(redis_url, prefix, redis=redis, password=password, ssl_ca_certs=ssl_ca_certs)
        self._followers: list[Follower] = []
        self._followers_lock = threading.Lock()  # follow()/wait_live() may run on many threads

    def _open(self, redis_url: str, options: dict[str, Any]) -> Any:
        return _redis_from_url(redis_url, options)

    # ---- quotes ---------------------------------------------------------------------------------

    def read_raw(self, tokens: list[str]) -> tuple[str | None, list[dict[str, str]]]:
        """The alive key and each token's hash, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        self._queue_reads(pipe, tokens)
        return split_reads(pipe.execute())

    def alive_epoch(self) -> str | None:
        """The running sidecar's epoch (``P sidecar:alive``), ``None`` when it is not running."""
        value = self.redis.get(self.alive_key)
        return None if value is None else text(value)

    def get(self, token: str) -> Quote | None:
        """The token's quote, or ``None`` when the sidecar has no hash for it.

        Raises ``redis.RedisError`` when Redis cannot be reached (treat as no quote).
        """
        (token,) = check_tokens(token)
        return self.get_many([token])[token]

    def get_many(self, tokens: Iterable[str]) -> dict[str, Quote | None]:
        """Quotes of several tokens in one round trip, keyed by token (``None``: no hash)."""
        wanted = list(dict.fromkeys(check_tokens(tokens)))
        alive, hashes = self.read_raw(wanted)
        now_s = time.time()
        return {t: quote_from_fields(t, h, alive, now_s) for t, h in zip(wanted, hashes, strict=True)}

    def is_fresh(self, token: str, max_age_s: float) -> bool:
        """True only when the quote is usable now: alive, live, confirmed within ``max_age_s``.

        False, not an exception, when Redis cannot be reached: nothing vouches for the quote.
        """
        try:
            quote = self.get(token)
        except redis.RedisError:
            return False
        return quote is not None and quote.usable(max_age_s)

    def wait_live(self, token: str, timeout_s: float) -> Quote | None:
        """Block until the token is ``live`` and its sidecar alive; ``None`` after ``timeout_s``.

        Woken by the token's pub/sub channel; the hash and alive key are re-read a few times a
        second as well (the alive key is not published).
        """
        (token,) = check_tokens(token)
        deadline = time.monotonic() + timeout_s
        with self.follow([token], reconcile_s=0.25) as follower:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                quote = follower.poll(left)
                if quote is not None and quote.alive and quote.status == LIVE:
                    return quote

    def follow(self, tokens: Iterable[str], *, reconcile_s: float = 1.0) -> Follower:
        """An iterator of quote changes for ``tokens`` (see :class:`Follower`)."""
        follower = Follower(self, list(dict.fromkeys(check_tokens(tokens))), reconcile_s)
        with self._followers_lock:
            self._followers = [f for f in self._followers if not f.closed]
            self._followers.append(follower)
        return follower

    # ---- desired set (the scheduler's side) -------------------------------------------------------

    def want(self, tokens: Iterable[str] | str) -> None:
        """Add tokens to ``P desired`` and nudge the sidecar."""
        valid = check_tokens(tokens)
        if valid:
            self._change_desired(lambda pipe: pipe.sadd(self.desired_key, *valid))

    def unwant(self, tokens: Iterable[str] | str) -> None:
        """Remove tokens from ``P desired`` and nudge the sidecar."""
        valid = check_tokens(tokens)
        if valid:
            self._change_desired(lambda pipe: pipe.srem(self.desired_key, *valid))

    def set_wanted(self, tokens: Iterable[str] | str) -> None:
        """Replace the whole desired set atomically (an empty iterable empties it)."""
        valid = check_tokens(tokens)

        def replace(pipe: Any) -> None:
            pipe.delete(self.desired_key)
            if valid:
                pipe.sadd(self.desired_key, *valid)

        self._change_desired(replace)

    def wanted(self) -> set[str]:
        """The current desired set."""
        return {text(m) for m in self.redis.smembers(self.desired_key)}

    def _change_desired(self, change: Any) -> None:
        pipe = self.redis.pipeline(transaction=True)
        change(pipe)
        pipe.publish(self.desired_channel, "1")
        pipe.execute()

    # ---- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """End every follower of this client and, if the client made it, its connection pool."""
        with self._followers_lock:
            followers, self._followers = self._followers, []
        for follower in followers:
            follower.close()
        if self._owns:
            self.redis.close()

    def __enter__(self) -> QuoteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _redis_from_url(url: str, options: dict[str, Any]) -> Any:
    return redis.Redis.from_url(url, **options)
