"""Shards (logical sockets with a stable token set) and the physical connections behind them.

A token lives on exactly one shard for as long as it is desired; adding or removing tokens never
moves others. A shard is carried by one connection at a time; a replacement connection takes the
shard over the moment it is created, and the old one only lingers until it can be closed.
"""

from __future__ import annotations

from collections.abc import Iterator

CONNECTING = "connecting"
OPEN = "open"


class Conn:
    __slots__ = (
        "close_reason",
        "data_seen",
        "first_sent",
        "gap_ewma",
        "id",
        "last_data_at",
        "last_ping_at",
        "last_pong_at",
        "opened_at",
        "probe_deadline",
        "probe_token",
        "quiet_mult",
        "retire_at",
        "shard_id",
        "state",
        "subscribed",
    )

    def __init__(self, conn_id: int, shard_id: int) -> None:
        self.id = conn_id
        self.shard_id = shard_id
        self.state = CONNECTING
        self.subscribed: set[str] = set()
        self.first_sent = False
        self.last_data_at = 0.0
        self.last_ping_at = 0.0
        self.last_pong_at = 0.0
        self.opened_at = 0.0
        self.data_seen = False
        self.gap_ewma: float | None = None
        self.quiet_mult = 1.0
        self.probe_token: str | None = None
        self.probe_deadline = 0.0
        self.retire_at = 0.0  # when a replaced socket is closed even if its successor is not up
        self.close_reason = ""


class Shard:
    __slots__ = ("attempts", "conn_id", "id", "next_attempt_at", "rescue", "retiring", "tokens")

    def __init__(self, shard_id: int, now: float, rescue: bool = False) -> None:
        self.id = shard_id
        self.tokens: set[str] = set()
        self.conn_id: int | None = None
        self.retiring: set[int] = set()
        self.attempts = 0
        self.next_attempt_at = now
        self.rescue = rescue


class ShardMap:
    """Stable token → shard assignment under a per-shard cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.shards: dict[int, Shard] = {}
        self._next_id = 0

    def new_shard(self, now: float, rescue: bool = False) -> Shard:
        shard = Shard(self._next_id, now, rescue)
        self._next_id += 1
        self.shards[shard.id] = shard
        return shard

    def assign(self, token: str, now: float, exclude: int | None = None, rescue: bool = False) -> Shard:
        """Lowest-numbered shard with room (rescue shards only for rescued tokens)."""
        for shard in self.shards.values():
            if shard.id != exclude and shard.rescue == rescue and len(shard.tokens) < self.cap:
                shard.tokens.add(token)
                return shard
        shard = self.new_shard(now, rescue)
        shard.tokens.add(token)
        return shard

    def remove(self, token: str, shard_id: int) -> Shard | None:
        shard = self.shards.get(shard_id)
        if shard is not None:
            shard.tokens.discard(token)
        return shard

    def drop(self, shard_id: int) -> None:
        self.shards.pop(shard_id, None)

    def __iter__(self) -> Iterator[Shard]:
        return iter(list(self.shards.values()))

    def __len__(self) -> int:
        return len(self.shards)


def chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
