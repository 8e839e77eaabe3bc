"""The exchange's connections: who is subscribed to what, and who gets each message.

Lives on the simulator's event loop. Received frames go through each connection's
:class:`~pmsim.session.Session` (the wire rules); this module carries out its decisions (auto-created
books, snapshots, control answers, mutes) and routes outgoing messages to the right write queues.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

import orjson

from .conns import Conn, Kind, Mode, QueuedClose, SimConnection
from .market import Markets
from .messages import Event
from .session import CloseSocket, Session


class Fanout:
    """Connections by id, subscribers by token, and the fault controls that act on them."""

    def __init__(
        self,
        markets: Markets,
        violation: Callable[[str], None],
        *,
        auto_create: bool,
        strict: bool,
        custom_features: bool,
    ) -> None:
        self.markets = markets
        self.violation = violation
        self.auto_create = auto_create
        self.strict = strict
        self.custom_features = custom_features
        self.conns: dict[int, Conn] = {}
        self.subs: dict[str, set[int]] = {}  # token -> ids of open connections subscribed to it
        self.mute_counts: dict[str, int | None] = {}  # token -> subscriptions left to mute (None: all)
        self._next_id = 0

    # ---- connections

    def accept(self, ws: SimConnection, path: str) -> Conn:
        self._next_id += 1
        session = Session(strict=self.strict, custom_features=self.custom_features)
        conn = Conn(self._next_id, ws, path, session)
        self.conns[conn.id] = conn
        return conn

    def on_frame(self, conn: Conn, text: str, binary: bool) -> CloseSocket | None:
        """Apply the session's decision on one received frame; return a close to perform."""
        reply = conn.session.receive(text, binary)
        for note in reply.violations:
            self.violation(f"conn {conn.id}: {note}")
        for token in reply.added:
            if token not in self.markets.books and self.auto_create:
                self.markets.add_market([token], "0.01", None, True)
            self.subs.setdefault(token, set()).add(conn.id)
            self._apply_mute(conn, token)
        for token in reply.removed:
            self._unindex(conn.id, token)
        if reply.answer is not None:
            conn.enqueue(reply.answer, Kind.CONTROL)
        if reply.dump:
            books = [
                self.markets.book_msg(t)
                for t in reply.added
                if self.markets.has_book(t) and conn.session.receives(t)
            ]
            if books:
                conn.enqueue(orjson.dumps(books))
        return reply.close

    def _apply_mute(self, conn: Conn, token: str) -> None:
        if token not in self.mute_counts:
            return
        conn.session.mute(token)
        left = self.mute_counts[token]
        if left is not None:
            if left <= 1:
                del self.mute_counts[token]
            else:
                self.mute_counts[token] = left - 1

    def _unindex(self, conn_id: int, token: str) -> None:
        subs = self.subs.get(token)
        if subs is not None:
            subs.discard(conn_id)
            if not subs:
                del self.subs[token]

    def mark_closed(self, conn: Conn, code: int | None) -> None:
        if not conn.open:
            return
        conn.open = False
        conn.closed_at = time.monotonic()
        conn.close_code = conn.server_close_code or code or 1006
        for token in conn.session.subscribed:
            self._unindex(conn.id, token)
        conn.queue.clear()
        if conn.writer is not None and conn.writer is not asyncio.current_task():
            conn.writer.cancel()

    def targets(self, conn_id: int | None) -> list[Conn]:
        """The open connection conn_id (or every open one for None)."""
        if conn_id is None:
            return [c for c in self.conns.values() if c.open]
        conn = self.conns.get(conn_id)
        if conn is None:
            raise KeyError(f"unknown connection {conn_id}")
        return [conn] if conn.open else []

    def queued(self, conn_id: int | None) -> int:
        conns = self.conns.values() if conn_id is None else [self.conns[conn_id]]
        return sum(len(c.queue) for c in conns if c.open)

    # ---- routing

    def receivers(self, token: str, custom_only: bool = False) -> list[Conn]:
        """Open connections that get events for token (subscribed, not muted)."""
        conns = (self.conns[cid] for cid in self.subs.get(token, ()))
        return [c for c in conns if c.session.receives(token, custom_only)]

    def send_asset_event(self, token: str, msg: Event, custom_only: bool = False) -> None:
        payload = orjson.dumps(msg)
        for conn in self.receivers(token, custom_only):
            conn.enqueue(payload)

    def send_price_entries(self, market: str, entries: list[Event], ts: str) -> None:
        """One price_change frame of a market's entries to every connection holding any of them."""
        assets = {e["asset_id"] for e in entries}
        msg = {"market": market, "price_changes": entries, "timestamp": ts, "event_type": "price_change"}
        payload = orjson.dumps(msg)
        cids: set[int] = set()
        for asset in assets:
            cids.update(self.subs.get(asset, ()))
        for cid in sorted(cids):
            conn = self.conns[cid]
            shown = conn.session.shown(assets)
            if shown == assets:
                conn.enqueue(payload)
            elif shown:
                visible = [e for e in entries if e["asset_id"] in shown]
                conn.enqueue(orjson.dumps({**msg, "price_changes": visible}))

    def send_to_market_custom(self, tokens: Iterable[str], msg: Event) -> None:
        """A custom-feature event to every connection getting any of tokens, once each."""
        payload = orjson.dumps(msg)
        cids: set[int] = set()
        for token in tokens:
            cids.update(c.id for c in self.receivers(token, custom_only=True))
        for cid in sorted(cids):
            self.conns[cid].enqueue(payload)

    def broadcast(self, msg: Event) -> None:
        """A venue-wide event to every subscribed custom-feature connection."""
        payload = orjson.dumps(msg)
        for conn in self.conns.values():
            if conn.open and conn.session.gets_broadcasts:
                conn.enqueue(payload, Kind.BROADCAST)

    def send_raw(self, data: str | bytes, conn_id: int | None) -> None:
        for conn in self.targets(conn_id):
            conn.enqueue(data, Kind.CONTROL)

    def blast(self, frames: list[bytes | str], conn_id: int | None) -> None:
        for conn in self.targets(conn_id):
            if conn.mode != "normal":
                continue
            conn.queue.extend((Kind.DATA, f) for f in frames)
            conn.wake.set()

    # ---- faults

    def drop(self, conn_id: int | None) -> None:
        for conn in self.targets(conn_id):
            conn.ws.transport.abort()
            self.mark_closed(conn, 1006)

    def close(self, conn_id: int, code: int, reason: str) -> None:
        for conn in self.targets(conn_id):
            conn.queue.append((Kind.CONTROL, QueuedClose(code, reason)))
            conn.wake.set()

    def set_mode(self, conn_id: int, mode: Mode) -> None:
        self.conns[conn_id].set_mode(mode)

    def slow(self, conn_id: int, delay_s: float) -> None:
        self.conns[conn_id].delay = delay_s

    def mute(self, token: str, subscribes: int | None) -> None:
        """The next ``subscribes`` subscriptions of token (None: all) are muted."""
        self.mute_counts[token] = subscribes

    def unmute(self, token: str) -> None:
        self.mute_counts.pop(token, None)

    def find(self, token: str) -> Conn | None:
        """The most recent open connection subscribed to token."""
        cids = self.subs.get(token)
        return self.conns[max(cids)] if cids else None
