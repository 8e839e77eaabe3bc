"""What the blocking and the asyncio clients share: key names, connection options, decoding."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sidecar.client.follow_state import text

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "pm:"
TIMEOUT_S = 2.0  # socket connect/read timeout: a worker must never hang on a dead Redis


def redact(url: str) -> str:
    """The URL without its password (in the user part or a ``?password=`` query), for logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, _ = netloc.rpartition("@")[0].partition(":")
        netloc = f"{user}:***@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    out = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    if not netloc and url.startswith(parts.scheme + "://"):  # unix:///path keeps its slashes
        out = out.replace(":", "://", 1)
    return out


def connection_options(redis_url: str, password: str | None, ssl_ca_certs: str | None) -> dict[str, Any]:
    """redis-py options for a client we create: decoded replies and timeouts that never hang."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": TIMEOUT_S,
        "socket_connect_timeout": TIMEOUT_S,
        "health_check_interval": 10,
    }
    if password is not None:
        options["password"] = password
    if ssl_ca_certs is not None and redis_url.startswith("rediss://"):
        options["ssl_ca_certs"] = ssl_ca_certs
    return options


@dataclass(frozen=True, slots=True)
class EnvSettings:
    """The sidecar's own Redis settings, read only when a caller asks for ``from_env()``."""

    redis_url: str
    prefix: str
    password: str | None
    ssl_ca_certs: str | None

    @classmethod
    def read(cls) -> EnvSettings:
        env = os.environ
        return cls(
            env.get("SIDECAR_REDIS_URL") or DEFAULT_URL,
            env.get("SIDECAR_KEY_PREFIX") or DEFAULT_PREFIX,
            env.get("SIDECAR_REDIS_PASSWORD") or None,
            env.get("SIDECAR_REDIS_TLS_CA_FILE") or None,
        )


class Keys:
    """The Redis key and channel names under one prefix (docs/redis-contract.md)."""

    prefix: str

    def quote_key(self, token: str) -> str:
        return f"{self.prefix}quote:{token}"

    @property
    def alive_key(self) -> str:
        return self.prefix + "sidecar:alive"

    @property
    def desired_key(self) -> str:
        return self.prefix + "desired"

    @property
    def desired_channel(self) -> str:
        return self.prefix + "desired:changed"


def decode_hash(raw: Any) -> dict[str, str]:
    """An HGETALL reply as ``str`` fields, whether the connection decodes responses or not."""
    if not raw:
        return {}
    if isinstance(next(iter(raw)), str):  # a decoding connection (ours): already text
        return raw  # type: ignore[no-any-return]
    return {text(k): text(v) for k, v in raw.items()}


class ClientBase(Keys):
    """What the blocking and the asyncio client share: the connection they own or are given, the
    ``from_env`` rules, ``repr`` without the password, and the one-round-trip quote read."""

    def __init__(
        self,
        redis_url: str = DEFAULT_URL,
        prefix: str = DEFAULT_PREFIX,
        *,
        redis: Any = None,
        password: str | None = None,
        ssl_ca_certs: str | None = None,
    ) -> None:
        """Use ``redis`` (never closed by us) or a new connection from ``redis_url``."""
        self.prefix = prefix
        self._url = redact(redis_url) if redis is None else "<given client>"
        self._owns = redis is None
        if redis is None:
            redis = self._open(redis_url, connection_options(redis_url, password, ssl_ca_certs))
        self.redis: Any = redis

    def _open(self, redis_url: str, options: dict[str, Any]) -> Any:
        """A new connection (pool) of the client's flavour, blocking or asyncio."""
        raise NotImplementedError

    @classmethod
    def from_env(cls, *, redis_url: str | None = None, prefix: str | None = None) -> Self:
        """A client configured like the sidecar: ``SIDECAR_REDIS_URL``, ``SIDECAR_REDIS_PASSWORD``,
        ``SIDECAR_KEY_PREFIX`` (and ``SIDECAR_REDIS_TLS_CA_FILE`` for ``rediss://``).

        ``redis_url``/``prefix`` replace only those two (a command's ``--redis-url``/``--prefix``):
        the password and CA file still come from the environment (a password in the URL wins).
        """
        env = EnvSettings.read()
        return cls(
            env.redis_url if redis_url is None else redis_url,
            env.prefix if prefix is None else prefix,
            password=env.password,
            ssl_ca_certs=env.ssl_ca_certs,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._url!r}, prefix={self.prefix!r})"

    def _queue_reads(self, pipe: Any, tokens: Sequence[str]) -> None:
        """Queue the alive key and each token's hash on a pipeline (read by :func:`split_reads`)."""
        pipe.get(self.alive_key)
        for token in tokens:
            pipe.hgetall(self.quote_key(token))


def split_reads(replies: Sequence[Any]) -> tuple[str | None, list[dict[str, str]]]:
    """The alive key and the hashes from the replies of :meth:`ClientBase._queue_reads`."""
    alive = None if replies[0] is None else text(replies[0])
    return alive, [decode_hash(h) for h in replies[1:]]
