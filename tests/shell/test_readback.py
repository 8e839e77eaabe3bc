"""sidecar.shell.readback: the desired tokens' quote hashes read back at start-up, as text."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from sidecar.shell import readback


def test_reads_every_desired_token_with_a_hash_in_pipelined_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readback, "CHUNK", 3)  # several round trips
    r = fakeredis.FakeRedis()
    tokens = [str(10**76 + i) for i in range(8)]
    r.sadd("pm:desired", *tokens, "no-hash-yet")
    for i, token in enumerate(tokens):
        r.hset(f"pm:quote:{token}", mapping={"status": "resolved" if i % 2 else "live", "market": f"0x{i}"})
    r.hset("pm:quote:not-desired", mapping={"status": "resolved"})
    saved = readback.read_back(r, "pm:")
    assert sorted(saved) == sorted(tokens)  # no hash: nothing; not desired: not read
    assert saved[tokens[1]] == {"status": "resolved", "market": "0x1"}  # str, not bytes
    assert saved[tokens[0]]["status"] == "live"


def test_redis_errors_reach_the_caller() -> None:
    class Down(fakeredis.FakeRedis):
        def smembers(self, name: str) -> set[bytes]:  # type: ignore[override]
            raise redis.ConnectionError("down")

    with pytest.raises(redis.RedisError):
        readback.read_back(Down(), "pm:")
