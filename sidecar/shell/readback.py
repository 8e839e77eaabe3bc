"""The start-up read-back: the desired tokens' quote hashes as the previous run left them.

Read once, before the first desired set reaches the engine, so that a token whose market was
already known resolved starts ``resolved`` (``Engine.restore``) instead of ``pending``, and keeps
its market and reference data. Redis being down only costs that head start: the market polls
find the resolution again.
"""

from __future__ import annotations

import logging

import redis

log = logging.getLogger("sidecar.shell.readback")

CHUNK = 1000  # HGETALLs per pipeline round trip


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def read_back(client: redis.Redis, prefix: str) -> dict[str, dict[str, str]]:
    """Token -> its ``P quote:{token}`` fields, for every member of ``P desired`` that has a hash.
    Raises redis.RedisError when Redis cannot answer (the caller starts without it)."""
    members = client.smembers(prefix + "desired")
    tokens = sorted({_text(m).strip() for m in members})
    out: dict[str, dict[str, str]] = {}
    for i in range(0, len(tokens), CHUNK):
        part = tokens[i : i + CHUNK]
        pipe = client.pipeline(transaction=False)
        for token in part:
            pipe.hgetall(f"{prefix}quote:{token}")
        for token, fields in zip(part, pipe.execute(), strict=True):
            if fields:
                out[token] = {_text(k): _text(v) for k, v in fields.items()}
    return out
