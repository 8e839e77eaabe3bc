"""Redis clients built from settings: password and TLS supported, never logged."""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sidecar.config import Settings


def make_client(settings: Settings, *, timeout_s: float = 5.0, **extra: Any) -> redis.Redis:
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": 2.0,
        "retry_on_timeout": False,
        "client_name": "pm-sidecar",
        # No silent retries of a failed command: callers see the error, back off and retry
        # themselves. (redis-py still silently replaces a pooled connection the server closed;
        # the writer's stamp check, not an error, is what reveals a changed Redis.)
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.redis_password is not None:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if settings.redis_tls_ca_file:
        kwargs["ssl_ca_certs"] = settings.redis_tls_ca_file
    kwargs.update(extra)
    return redis.Redis.from_url(settings.redis_url, **kwargs)
