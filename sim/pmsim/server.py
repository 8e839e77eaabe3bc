"""Local exchange simulator speaking Polymarket's CLOB market-channel protocol over real sockets.

Integration tests, the demo and the benchmarks run the sidecar against this instead of the live
exchange, so it reproduces the protocol including its refusals and quirks (best level last,
sibling leaks in price_change, "0"/"1" for empty sides, 1008 closes, text control strings) and
adds what the live exchange cannot give: scripted events, injected faults and a view of the truth.

Threading model: all state lives on one asyncio loop in a daemon thread. Every public method is
called from other threads and marshalled onto that loop; it returns once its frames sit in the
per-connection write queues. Each connection has its own queue and writer task, so a slow or
stuck socket never delays the others.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import itertools
import random
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from types import TracebackType
from typing import Any, Literal, TypeVar

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from .book import (
    BUY,
    SELL,
    Book,
    Levels,
    Num,
    Top,
    canon,
    check_price,
    norm_side,
    parse_levels,
    random_levels,
    random_size,
    to_dec,
)
from .rest import RestHooks, RestServer

T = TypeVar("T")
Mode = Literal["normal", "zombie", "half_open", "relay_only"]
# Kind of a queued frame: False control (PONG, ...), True the connection's market data, BROADCAST a
# venue-wide event (new_market) that a relay_only connection still sends.
BROADCAST = 2
Change = tuple[str, str, Num, Num]  # (token, side, price, new total size)

MAX_IDS_PER_FRAME = 100
# price_change(corrupt=...): the unreadable value each field is sent with.
CORRUPTIONS = {"price": "not-a-price", "size": "-3", "side": "HOLD"}
_TOKEN_RE = re.compile(r"[0-9]{1,100}")
_CALL_TIMEOUT_S = 30.0


@dataclass
class ConnInfo:
    """A snapshot of one WebSocket connection, for assertions; copying keeps tests race-free."""

    id: int
    open: bool
    subscribed: set[str]
    received: list[tuple[float, str]]
    pings: int
    opened_at: float
    closed_at: float | None
    close_code: int | None
    custom_features: bool
    mode: str
    path: str = ""
    muted: set[str] = field(default_factory=set)
    ws_pings: int = 0
    sent: int = 0


@dataclass(frozen=True)
class _Close:
    """Queue item: close cleanly after the frames queued before it."""

    code: int
    reason: str


class _SimConnection(ServerConnection):
    """websockets connection that can go deaf (half-open) and counts protocol-level pings."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sim_deaf = False
        self.sim_ws_pings = 0

    def data_received(self, data: bytes) -> None:
        # Half-open: swallow the bytes so websockets neither pongs nor answers a close frame.
        if self.sim_deaf:
            return
        super().data_received(data)

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.sim_ws_pings += 1
        super().process_event(event)

    def send_data(self) -> None:
        super().send_data()
        # Closing handshake done: drop the TCP connection now, as a real front end does, instead
        # of waiting (up to close_timeout) for a client that never closes its socket.
        if (
            self.protocol.close_sent is not None
            and self.protocol.close_rcvd is not None
            and not self.transport.is_closing()
        ):
            self.transport.close()


def _withheld(mode: str, data: int) -> bool:
    """Is a frame of this kind (see BROADCAST) withheld by a connection in this fault mode?"""
    if mode == "half_open":
        return True
    if mode == "zombie":
        return bool(data)
    return mode == "relay_only" and data is True


class _Conn:
    """Server-side state of one connection (lives on the loop)."""

    def __init__(self, conn_id: int, ws: _SimConnection, path: str) -> None:
        self.id = conn_id
        self.ws = ws
        self.path = path
        self.open = True
        self.opened_at = time.monotonic()
        self.closed_at: float | None = None
        self.close_code: int | None = None
        self.server_close_code: int | None = None
        self.subscribed: set[str] = set()
        self.muted: set[str] = set()
        self.received: list[tuple[float, str]] = []
        self.pings = 0
        self.custom = False
        self.mode: Mode = "normal"
        self.delay = 0.0
        self.sent = 0
        self.greeted = False  # the first (subscription) frame has been accepted
        self.queue: deque[tuple[int, bytes | str | _Close]] = deque()
        self.wake = asyncio.Event()
        self.writer: asyncio.Task[None] | None = None

    def info(self) -> ConnInfo:
        return ConnInfo(
            id=self.id,
            open=self.open,
            subscribed=set(self.subscribed),
            received=list(self.received),
            pings=self.pings,
            opened_at=self.opened_at,
            closed_at=self.closed_at,
            close_code=self.close_code,
            custom_features=self.custom,
            mode=self.mode,
            path=self.path,
            muted=set(self.muted),
            ws_pings=self.ws.sim_ws_pings,
            sent=self.sent,
        )


def _ts() -> str:
    return str(time.time_ns() // 1_000_000)


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} chars)"


class Simulator:
    """Polymarket market channel (WS) plus REST book endpoints on 127.0.0.1, fully scriptable.

    Use ``start()``/``stop()`` or ``with Simulator() as sim:``. See the module docstring for the
    threading contract.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        ws_port: int = 0,
        rest_port: int = 0,
        seed: int = 0,
        auto_create: bool = True,
        custom_features: bool = True,
        strict: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.tls = tls  # a server context: the market channel is served as wss:// (REST stays http)
        self._ws_port_req = ws_port
        self._rest_port_req = rest_port
        self.auto_create = auto_create
        self.custom_features = custom_features  # server-wide: False ignores custom_feature_enabled
        self.strict = strict
        self._rng = random.Random(seed)
        self._seq = itertools.count(1)

        self._books: dict[str, Book] = {}
        self._markets: dict[str, list[str]] = {}
        self._conns: dict[int, _Conn] = {}
        self._next_conn_id = 0
        self._subs: dict[str, set[int]] = {}
        self._mute: dict[str, int | None] = {}

        self._lock = threading.Lock()  # guards the counters below, shared with HTTP threads
        self._violations: list[str] = []
        self._handshakes = 0
        self._reject: tuple[int, int] = (0, 0)
        self._rest_requests = 0
        self._rest_fail: tuple[int, int] = (0, 0)
        self._rest_delay = 0.0
        self._rest_in_flight = 0

        self._act_rate = 0.0
        self._act_tokens: list[str] | None = None
        self._act_on = False
        self._act_dirty = True
        self._token_rates: dict[str, float] = {}
        self._act_task: asyncio.Task[None] | None = None
        self._bcast_task: asyncio.Task[None] | None = None

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._loop_tid: int | None = None
        self._ws_server: Server | None = None
        self._rest: RestServer | None = None
        self._running = False
        self._stopped = False
        self.ws_port = 0
        self.rest_port = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.tls is not None else "ws"
        return f"{scheme}://{self.host}:{self.ws_port}/ws/market"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"

    def start(self) -> Simulator:
        """Start the loop thread, the WS server and the REST server; return once both listen."""
        if self._loop is not None:
            raise RuntimeError("Simulator.start() called twice")
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._loop_tid = threading.get_ident()
            loop.call_soon(ready.set)
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="sim-loop", daemon=True)
        self._thread.start()
        ready.wait(10)
        try:
            asyncio.run_coroutine_threadsafe(self._startup(), loop).result(_CALL_TIMEOUT_S)
            self._running = True
            hooks = RestHooks(self._rest_begin, self._summaries, self._rest_hold, self._rest_end)
            self._rest = RestServer(self.host, self._rest_port_req, hooks)
        except BaseException:
            self.stop()  # e.g. a port in use: do not leave a loop thread or a listener behind
            raise
        self.rest_port = self._rest.port
        self._rest.start()
        return self

    async def _startup(self) -> None:
        self._ws_server = await serve(
            self._handler,
            self.host,
            self._ws_port_req,
            process_request=self._process_request,
            create_connection=_SimConnection,
            compression=None,  # fast blasts; the sidecar's websocket-client never offers deflate anyway
            ping_interval=None,  # the server sends no keepalive pings of its own: silence is the client's job
            ping_timeout=None,
            close_timeout=2,
            max_size=2**23,
            write_limit=2**18,
            ssl=self.tls,
        )
        self.ws_port = self._ws_server.sockets[0].getsockname()[1]
        if self._act_on:
            self._ensure_activity_task()

    def stop(self) -> None:
        """Close everything (REST, sockets, loop). Idempotent."""
        if self._stopped or self._loop is None:
            self._stopped = True
            return
        self._stopped = True
        if self._rest is not None:
            self._rest.stop()
        loop = self._loop
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(_CALL_TIMEOUT_S)
        finally:
            self._running = False
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(10)

    async def _shutdown(self) -> None:
        """Say 1001 to every socket, give clients a moment to answer, then cut whatever is left."""
        if self._act_task is not None:
            self._act_task.cancel()
        self._stop_broadcasts()
        open_conns = [c for c in self._conns.values() if c.open]
        closers = [
            asyncio.ensure_future(c.ws.close(1001, "server shutting down"))
            for c in open_conns
            if c.mode != "half_open"
        ]
        if closers:
            await asyncio.wait(closers, timeout=0.5)
        for conn in open_conns:
            conn.ws.transport.abort()
        if self._ws_server is not None:
            self._ws_server.close(close_connections=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ws_server.wait_closed(), 3)
        for task in closers:
            task.cancel()
        for conn in open_conns:
            self._mark_closed(conn, conn.ws.close_code or 1006)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn on the loop and wait for it; run inline before start, after stop or on the loop."""
        loop = self._loop
        if loop is None or not self._running or threading.get_ident() == self._loop_tid:
            return fn(*args, **kwargs)
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the calling thread
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(_CALL_TIMEOUT_S)

    def _violation(self, text: str) -> None:
        with self._lock:
            self._violations.append(text)

    # ------------------------------------------------------------------ counters

    @property
    def violations(self) -> list[str]:
        """Protocol violations seen from clients (a copy). Tests assert this stays empty."""
        with self._lock:
            return list(self._violations)

    @property
    def handshakes(self) -> int:
        """WebSocket handshake attempts, rejected ones included."""
        with self._lock:
            return self._handshakes

    @property
    def rest_requests(self) -> int:
        with self._lock:
            return self._rest_requests

    def reject_handshakes(self, status: int, count: int) -> None:
        """Answer the next `count` handshakes with HTTP `status` (e.g. 429) instead of upgrading."""
        with self._lock:
            self._reject = (status, count)

    @property
    def rest_in_flight(self) -> int:
        """REST requests received and not yet answered (see rest_delay)."""
        with self._lock:
            return self._rest_in_flight

    def rest_delay(self, seconds: float) -> None:
        """Hold every REST answer this long after its books were read (0 = answer at once): the
        answer is then older than the socket's events, and Redis can restart while it is in flight."""
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        with self._lock:
            self._rest_delay = float(seconds)

    def rest_fail(self, status: int, count: int) -> None:
        """Fail the next `count` REST requests with `status`."""
        with self._lock:
            self._rest_fail = (status, count)

    # ------------------------------------------------------------------ markets and truth

    def _new_token_id(self) -> str:
        digits = self._rng.randint(70, 77)
        while True:
            tid = str(self._rng.randint(10 ** (digits - 1), 10**digits - 1))
            if tid not in self._books:
                return tid

    def _add_market(
        self, token_ids: list[str] | None, tick_size: Num, market_id: str | None, seed_book: bool
    ) -> str:
        tick = to_dec(tick_size)
        check_price(tick)
        if token_ids is None:
            token_ids = [self._new_token_id(), self._new_token_id()]
        if not token_ids:
            raise ValueError("a market needs at least one token")
        for tid in token_ids:
            if not isinstance(tid, str) or not tid:
                raise ValueError(f"token ids are non-empty strings, got {tid!r}")
            if tid in self._books:
                raise ValueError(f"token {tid} already exists (market {self._books[tid].market})")
        if len(set(token_ids)) != len(token_ids):
            raise ValueError("duplicate token ids")
        if market_id is None:
            market_id = "0x" + format(self._rng.getrandbits(256), "064x")
            while market_id in self._markets:
                market_id = "0x" + format(self._rng.getrandbits(256), "064x")
        elif market_id in self._markets:
            raise ValueError(f"market {market_id} already exists")
        self._markets[market_id] = list(token_ids)
        for tid in token_ids:
            book = Book(asset_id=tid, market=market_id, tick=tick)
            if seed_book:
                bids, asks = random_levels(self._rng, tick)
                book.replace(bids, asks)
                bb = book.best_bid()
                book.last_trade_price = canon(bb) if bb is not None else ""
            self._books[tid] = book
        self._act_dirty = True
        return market_id

    def add_market(
        self,
        token_ids: list[str] | None = None,
        *,
        tick_size: Num = "0.01",
        market_id: str | None = None,
        seed_book: bool = True,
    ) -> str:
        """Create a market (default: two fresh 70-77 digit token ids, seeded books); returns its id."""
        return self._call(self._add_market, token_ids, tick_size, market_id, seed_book)

    def tokens(self) -> list[str]:
        return self._call(lambda: list(self._books))

    def markets(self) -> dict[str, list[str]]:
        """Market id -> its token ids."""
        return self._call(lambda: {m: list(t) for m, t in self._markets.items()})

    def market_of(self, token: str) -> str:
        return self._call(lambda: self._book(token).market)

    def _book(self, token: str) -> Book:
        try:
            return self._books[token]
        except KeyError:
            raise KeyError(f"unknown token {token}") from None

    def truth(self, token: str) -> Top:
        """The simulator's true top of book, as the same strings the frames carry."""
        return self._call(lambda: self._book(token).top())

    def book(self, token: str) -> tuple[Levels, Levels]:
        """(bids, asks), best first on both sides."""
        return self._call(lambda: self._book(token).levels())

    def tick_size(self, token: str) -> str:
        return self._call(lambda: canon(self._book(token).tick))

    # ------------------------------------------------------------------ frames

    def _hash(self, *parts: str) -> str:
        return hashlib.sha1(":".join((*parts, str(next(self._seq)))).encode()).hexdigest()

    def _book_msg(self, book: Book, naming: str = "bids_asks") -> dict[str, Any]:
        bids, asks = book.wire_levels()
        bid_key, ask_key = ("buys", "sells") if naming == "buys_sells" else ("bids", "asks")
        msg: dict[str, Any] = {
            "market": book.market,
            "asset_id": book.asset_id,
            "timestamp": _ts(),
            "hash": "",
            bid_key: bids,
            ask_key: asks,
            "tick_size": canon(book.tick),
            "last_trade_price": book.last_trade_price,
            "event_type": "book",
        }
        # Like the live server: a digest of the summary itself (clients must only use it as a marker).
        msg["hash"] = hashlib.sha1(orjson.dumps(msg)).hexdigest()
        return msg

    def _summary(self, token: str) -> dict[str, Any] | None:
        book = self._books.get(token)
        if book is None:
            return None
        bids, asks = book.wire_levels()
        msg: dict[str, Any] = {
            "market": book.market,
            "asset_id": book.asset_id,
            "timestamp": _ts(),
            "hash": "",
            "bids": bids,
            "asks": asks,
            "min_order_size": "5",
            "tick_size": canon(book.tick),
            "neg_risk": False,
            "last_trade_price": book.last_trade_price,
        }
        msg["hash"] = hashlib.sha1(orjson.dumps(msg)).hexdigest()
        return msg

    def _enqueue(self, conn: _Conn, payload: bytes | str | _Close, data: int = True) -> None:
        if not conn.open or _withheld(conn.mode, data):
            return
        conn.queue.append((data, payload))
        conn.wake.set()

    def _receivers(self, token: str, custom_only: bool = False) -> list[_Conn]:
        """Open connections that should get events for token (subscribed, not muted)."""
        out = []
        for cid in self._subs.get(token, ()):
            conn = self._conns[cid]
            if token in conn.muted or (custom_only and not conn.custom):
                continue
            out.append(conn)
        return out

    def _send_asset_event(self, token: str, msg: dict[str, Any], custom_only: bool = False) -> None:
        payload = orjson.dumps(msg)
        for conn in self._receivers(token, custom_only):
            self._enqueue(conn, payload)

    def _send_book(self, token: str, naming: str = "bids_asks") -> None:
        self._send_asset_event(token, self._book_msg(self._book(token), naming))

    def _bba_msg(self, book: Book) -> dict[str, Any]:
        top = book.top()
        bid = top.bid or "0"
        ask = top.ask or "1"
        return {
            "market": book.market,
            "asset_id": book.asset_id,
            "best_bid": bid,
            "best_ask": ask,
            "spread": canon(to_dec(ask) - to_dec(bid)),
            "timestamp": _ts(),
            "event_type": "best_bid_ask",
        }

    def _auto_bba(self, tokens: Iterable[str]) -> None:
        """Custom-feature connections get best_bid_ask whenever a top price moved."""
        if not self.custom_features:
            return
        for token in tokens:
            self._send_asset_event(token, self._bba_msg(self._book(token)), custom_only=True)

    @staticmethod
    def _prices(book: Book) -> tuple[Decimal | None, Decimal | None]:
        return book.best_bid(), book.best_ask()

    # ------------------------------------------------------------------ scripting

    def send_book(self, token: str) -> None:
        """Send a `book` snapshot of the current truth to the token's subscribers."""
        self._call(self._send_book, token)

    def _set_book(
        self, token: str, bids: list[tuple[Num, Num]], asks: list[tuple[Num, Num]], naming: str
    ) -> None:
        if naming not in ("bids_asks", "buys_sells"):
            raise ValueError(f"naming must be 'bids_asks' or 'buys_sells', got {naming!r}")
        book = self._book(token)
        new_bids, new_asks = parse_levels(bids), parse_levels(asks)
        before = self._prices(book)
        book.replace(new_bids, new_asks)
        self._send_book(token, naming)
        if self._prices(book) != before:
            self._auto_bba([token])

    def set_book(
        self,
        token: str,
        bids: list[tuple[Num, Num]],
        asks: list[tuple[Num, Num]],
        *,
        naming: str = "bids_asks",
    ) -> None:
        """Replace the book and send it; naming="buys_sells" uses the older docs' side names."""
        self._call(self._set_book, token, bids, asks, naming)

    def _apply_changes(self, changes: Iterable[Change]) -> tuple[dict[str, list[dict[str, str]]], list[str]]:
        """Apply level updates in order; return price_change entries per market and moved tokens."""
        by_market: dict[str, list[dict[str, str]]] = {}
        moved: list[str] = []
        parsed = []
        for token, side, price, size in changes:  # validate everything before touching the truth
            book = self._book(token)
            p, s = to_dec(price), to_dec(size)
            check_price(p)
            if s < 0:
                raise ValueError(f"negative size {size!r}")
            parsed.append((book, norm_side(side), p, s))
        ts = _ts()
        for book, side, p, s in parsed:
            before = self._prices(book)
            book.set_level(side, p, s)
            after = self._prices(book)
            top = book.top()
            by_market.setdefault(book.market, []).append(
                {
                    "asset_id": book.asset_id,
                    "price": canon(p),
                    "size": canon(s),
                    "side": side,
                    "hash": self._hash(book.asset_id, ts),
                    "best_bid": top.bid or "0",
                    "best_ask": top.ask or "1",
                }
            )
            if after != before and book.asset_id not in moved:
                moved.append(book.asset_id)
        return by_market, moved

    def _send_price_entries(self, market: str, entries: list[dict[str, str]], ts: str) -> None:
        """One price_change frame of a market's entries to every connection holding any of them."""
        assets = {e["asset_id"] for e in entries}
        msg = {"market": market, "price_changes": entries, "timestamp": ts, "event_type": "price_change"}
        payload = orjson.dumps(msg)
        # The live server sends the whole market's entries to anyone subscribed to any of them.
        cids: set[int] = set()
        for asset in assets:
            cids.update(self._subs.get(asset, ()))
        for cid in sorted(cids):
            conn = self._conns[cid]
            hidden = conn.muted & assets
            if not hidden:
                self._enqueue(conn, payload)
                continue
            if not (conn.subscribed & assets) - hidden:
                continue
            visible = [e for e in entries if e["asset_id"] not in hidden]
            self._enqueue(conn, orjson.dumps({**msg, "price_changes": visible}))

    def _price_change(self, changes: list[Change], corrupt: dict[str, str] | None = None) -> None:
        corrupt = corrupt or {}
        for token, field_name in corrupt.items():
            if field_name not in CORRUPTIONS:
                raise ValueError(f"corrupt field must be one of {sorted(CORRUPTIONS)}, got {field_name!r}")
            if token not in {c[0] for c in changes}:
                raise ValueError(f"corrupt token {token} has no change to corrupt")
        by_market, moved = self._apply_changes(changes)
        for entries in by_market.values():
            for entry in entries:
                bad_field = corrupt.get(entry["asset_id"])
                if bad_field is not None:
                    entry[bad_field] = CORRUPTIONS[bad_field]
        ts = _ts()
        for market, entries in by_market.items():
            self._send_price_entries(market, entries, ts)
        self._auto_bba(moved)

    def price_change(self, changes: list[Change], *, corrupt: dict[str, str] | None = None) -> None:
        """(token, side, price, new total size) updates; one frame per market, siblings leak.

        corrupt={token: "price" | "size" | "side"} sends that token's entries with the field
        unreadable, mixed with the others' good entries in the same frame; the truth still moves
        as the change says (a client that skips the entry has missed a real change).
        """
        self._call(self._price_change, list(changes), dict(corrupt or {}))

    async def _crossing_trade(self, token: str, side: str, price: Num, size: Num, gap_s: float) -> None:
        book = self._book(token)
        taker = norm_side(side)
        limit, want = to_dec(price), to_dec(size)
        check_price(limit)
        if want <= 0:
            raise ValueError(f"size must be positive, got {size!r}")
        maker = SELL if taker == BUY else BUY
        levels = book.side(maker)
        crossing = sorted(p for p in levels if (p <= limit if taker == BUY else p >= limit))
        if taker == SELL:
            crossing.reverse()  # best (highest) bid first
        if not crossing:
            raise ValueError(f"a {taker} at {canon(limit)} does not cross the book of {token}")
        fills: list[tuple[Decimal, Decimal]] = []  # (level price, size taken)
        left = want
        for p in crossing:
            if left <= 0:
                break
            take = min(left, levels[p])
            fills.append((p, take))
            left -= take
        steps: list[tuple[str, Decimal, Decimal]] = []  # (side, price, new total size), in send order
        if left > 0:  # the remainder rests at the limit: locally crossed until the removals arrive
            steps.append((taker, limit, book.side(taker).get(limit, Decimal(0)) + left))
        steps += [(maker, p, levels[p] - take) for p, take in fills]
        before = self._prices(book)
        for step_side, p, new_size in steps:
            book.set_level(step_side, p, new_size)
        top = book.top()  # final: what every message's best_bid/best_ask already says
        book.last_trade_price = canon(fills[-1][0])
        ts = _ts()
        for i, (step_side, p, new_size) in enumerate(steps):
            if i and gap_s > 0:
                await asyncio.sleep(gap_s)
            entry = {
                "asset_id": token,
                "price": canon(p),
                "size": canon(new_size),
                "side": step_side,
                "hash": self._hash(token, ts),
                "best_bid": top.bid or "0",
                "best_ask": top.ask or "1",
            }
            self._send_price_entries(book.market, [entry], ts)
        trade = {
            "asset_id": token,
            "market": book.market,
            "price": canon(fills[-1][0]),
            "size": canon(want - left),
            "side": taker,
            "fee_rate_bps": "0",
            "timestamp": ts,
            "transaction_hash": "0x" + format(self._rng.getrandbits(256), "064x"),
            "event_type": "last_trade_price",
        }
        self._send_asset_event(token, trade)
        if self._prices(book) != before:
            self._auto_bba([token])

    def crossing_trade(self, token: str, side: str, price: Num, size: Num, *, gap_s: float = 0.0) -> None:
        """An aggressive `side` order for `size` up to limit `price`, reported as the live exchange
        reports a crossing trade: one price_change message per touched level, all with one
        timestamp, each already carrying the final best_bid/best_ask. First the resting remainder
        (if any: the book is locally crossed until the removals arrive), then each consumed level
        (removed or reduced), then last_trade_price. gap_s spaces the messages (grace tests)."""
        if self._loop is None or not self._running:
            asyncio.run(self._crossing_trade(token, side, price, size, 0.0))
            return
        coro = self._crossing_trade(token, side, price, size, float(gap_s))
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        fut.result(_CALL_TIMEOUT_S + 10 * gap_s)

    def _price_change_legacy(self, token: str, changes: list[tuple[str, Num, Num]]) -> None:
        book = self._book(token)
        by_market, moved = self._apply_changes([(token, side, price, size) for side, price, size in changes])
        ts = _ts()
        msg = {
            "asset_id": token,
            "market": book.market,
            "changes": [
                {"price": e["price"], "side": e["side"], "size": e["size"]}
                for e in by_market.get(book.market, [])
            ],
            "timestamp": ts,
            "hash": self._hash(token, ts),
            "event_type": "price_change",
        }
        self._send_asset_event(token, msg)
        self._auto_bba(moved)

    def price_change_legacy(self, token: str, changes: list[tuple[str, Num, Num]]) -> None:
        """The pre-2025-09 per-asset form: changes=[(side, price, size)], sent to that asset only."""
        self._call(self._price_change_legacy, token, list(changes))

    def _best_bid_ask(self, token: str) -> None:
        if self.custom_features:
            self._send_asset_event(token, self._bba_msg(self._book(token)), custom_only=True)

    def best_bid_ask(self, token: str) -> None:
        """Send a best_bid_ask event (custom-feature connections only, as the live server does)."""
        self._call(self._best_bid_ask, token)

    async def _tick_size_change(self, token: str, new_tick: Num, book_delay_s: float) -> None:
        book = self._book(token)
        tick = to_dec(new_tick)
        check_price(tick)
        old = canon(book.tick)
        book.tick = tick
        msg = {
            "asset_id": token,
            "market": book.market,
            "old_tick_size": old,
            "new_tick_size": canon(tick),
            "timestamp": _ts(),
            "event_type": "tick_size_change",
        }
        self._send_asset_event(token, msg)
        if book_delay_s > 0:
            await asyncio.sleep(book_delay_s)
        self._send_book(token)

    def tick_size_change(self, token: str, new_tick: Num, *, book_delay_s: float = 0.0) -> None:
        """tick_size_change, then a separate `book` frame (after book_delay_s, before returning)."""
        if self._loop is None or not self._running:
            asyncio.run(self._tick_size_change(token, new_tick, 0.0))
            return
        coro = self._tick_size_change(token, new_tick, book_delay_s)
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        fut.result(_CALL_TIMEOUT_S + book_delay_s)

    def _trade(self, token: str, price: Num, size: Num, side: str) -> None:
        book = self._book(token)
        p = to_dec(price)
        check_price(p)
        book.last_trade_price = canon(p)
        msg = {
            "asset_id": token,
            "market": book.market,
            "price": canon(p),
            "size": canon(size),
            "side": norm_side(side),
            "fee_rate_bps": "0",
            "timestamp": _ts(),
            "transaction_hash": "0x" + format(self._rng.getrandbits(256), "064x"),
            "event_type": "last_trade_price",
        }
        self._send_asset_event(token, msg)
        self._send_book(token)

    def trade(self, token: str, price: Num, size: Num, side: str = BUY) -> None:
        """last_trade_price, then a `book` snapshot. The book itself is left as it is."""
        self._call(self._trade, token, price, size, side)

    def _resolve(self, market_id: str, winning_token: str) -> None:
        tokens = self._markets[market_id]
        if winning_token not in tokens:
            raise ValueError(f"token {winning_token} is not in market {market_id}")
        if not self.custom_features:
            return
        outcomes = ["Yes", "No"] if len(tokens) == 2 else [f"Outcome {i}" for i in range(len(tokens))]
        msg = {
            "id": str(self._rng.randint(100_000, 999_999)),
            "market": market_id,
            "assets_ids": list(tokens),
            "winning_asset_id": winning_token,
            "winning_outcome": outcomes[tokens.index(winning_token)],
            "timestamp": _ts(),
            "event_type": "market_resolved",
        }
        payload = orjson.dumps(msg)
        cids: set[int] = set()
        for token in tokens:
            cids.update(c.id for c in self._receivers(token, custom_only=True))
        for cid in sorted(cids):
            self._enqueue(self._conns[cid], payload)

    def resolve(self, market_id: str, winning_token: str) -> None:
        """market_resolved to custom-feature connections subscribed to any of the market's tokens."""
        self._call(self._resolve, market_id, winning_token)

    def _new_market(
        self,
        token_ids: list[str] | None,
        tick_size: Num,
        market_id: str | None,
        seed_book: bool,
        question: str | None,
    ) -> str:
        market = self._add_market(token_ids, tick_size, market_id, seed_book)
        tokens = self._markets[market]
        if not self.custom_features:
            return market
        slug = f"sim-market-{market[2:10]}"
        msg = {
            "id": str(self._rng.randint(100_000, 999_999)),
            "question": question or f"Will simulated market {market[2:10]} resolve Yes?",
            "market": market,
            "slug": slug,
            "description": "Simulated market.",
            "assets_ids": list(tokens),
            "outcomes": ["Yes", "No"] if len(tokens) == 2 else [f"Outcome {i}" for i in range(len(tokens))],
            "timestamp": _ts(),
            "event_type": "new_market",
        }
        payload = orjson.dumps(msg)
        for conn in self._conns.values():
            if conn.open and conn.custom and conn.greeted:
                self._enqueue(conn, payload, data=BROADCAST)
        return market

    def new_market(
        self,
        token_ids: list[str] | None = None,
        *,
        tick_size: Num = "0.01",
        market_id: str | None = None,
        seed_book: bool = True,
        question: str | None = None,
    ) -> str:
        """add_market plus a new_market event to every custom-feature connection; returns market id."""
        return self._call(self._new_market, token_ids, tick_size, market_id, seed_book, question)

    def _targets(self, conn_id: int | None) -> list[_Conn]:
        if conn_id is None:
            return [c for c in self._conns.values() if c.open]
        conn = self._conns.get(conn_id)
        if conn is None:
            raise KeyError(f"unknown connection {conn_id}")
        return [conn] if conn.open else []

    def _send_raw(self, data: str | bytes, conn_id: int | None) -> None:
        for conn in self._targets(conn_id):
            self._enqueue(conn, data, data=False)

    def send_raw(self, data: str | bytes, conn_id: int | None = None) -> None:
        """A raw text frame (bytes go out unvalidated, for malformed-frame tests) to one or all."""
        self._call(self._send_raw, data, conn_id)

    def _blast(self, frames: list[bytes | str], conn_id: int | None) -> None:
        for conn in self._targets(conn_id):
            if conn.mode != "normal":
                continue
            conn.queue.extend((True, f) for f in frames)
            conn.wake.set()

    def blast(self, frames: list[bytes | str], conn_id: int | None = None) -> None:
        """Queue pre-encoded frames for one connection (or all) without touching the truth."""
        self._call(self._blast, list(frames), conn_id)

    def apply_silently(self, changes: list[Change]) -> None:
        """Update the truth as price_change would, sending nothing (benchmarks encode their own)."""
        self._call(self._apply_changes, list(changes))

    def _queued(self, conn_id: int | None) -> int:
        conns = self._conns.values() if conn_id is None else [self._conns[conn_id]]
        return sum(len(c.queue) for c in conns if c.open)

    def wait_drained(self, conn_id: int | None = None, timeout: float = 10.0) -> bool:
        """Wait until the write queues (of one connection or all) are empty; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._call(self._queued, conn_id):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    # ------------------------------------------------------------------ random activity

    def start_broadcasts(self, interval_s: float) -> None:
        """A new market (and its new_market broadcast) every interval_s: what keeps a relay_only
        socket talking without ever carrying its own tokens' data."""
        if not interval_s > 0:
            raise ValueError("interval_s must be positive")
        if not self._running:
            raise RuntimeError("start the simulator first")
        self._call(self._start_broadcasts, float(interval_s))

    def _start_broadcasts(self, interval_s: float) -> None:
        self._stop_broadcasts()

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_s)
                self._new_market(None, "0.01", None, True, None)

        self._bcast_task = asyncio.get_running_loop().create_task(loop())

    def stop_broadcasts(self) -> None:
        self._call(self._stop_broadcasts)

    def _stop_broadcasts(self) -> None:
        if self._bcast_task is not None:
            self._bcast_task.cancel()
            self._bcast_task = None

    def start_activity(self, events_per_s: float, tokens: list[str] | None = None) -> None:
        """Random-walk price_changes (plus occasional trades) at about events_per_s in total.

        tokens=None means every token, including ones created later.
        """
        self._call(self._start_activity, float(events_per_s), None if tokens is None else list(tokens))

    def _start_activity(self, rate: float, tokens: list[str] | None) -> None:
        self._act_rate = rate
        self._act_tokens = tokens
        self._act_on = True
        self._act_dirty = True
        if self._running or (self._loop is not None and threading.get_ident() == self._loop_tid):
            self._ensure_activity_task()

    def _ensure_activity_task(self) -> None:
        if self._act_task is None or self._act_task.done():
            self._act_task = asyncio.get_running_loop().create_task(self._activity_loop())

    def set_token_rate(self, token: str, events_per_s: float) -> None:
        """Per-token rate override (0 = silent); applies while activity runs."""
        self._call(self._set_token_rate, token, float(events_per_s))

    def _set_token_rate(self, token: str, rate: float) -> None:
        self._token_rates[token] = rate
        self._act_dirty = True

    def stop_activity(self) -> None:
        """Stop random activity; when this returns no further random event will be generated."""
        self._call(self._stop_activity)

    def _stop_activity(self) -> None:
        self._act_on = False
        if self._act_task is not None:
            self._act_task.cancel()
            self._act_task = None

    def _activity_weights(self) -> tuple[list[str], list[float], float]:
        tokens = self._act_tokens if self._act_tokens is not None else list(self._books)
        default = [t for t in tokens if t in self._books and t not in self._token_rates]
        share = self._act_rate / len(default) if default else 0.0
        names: list[str] = []
        cum: list[float] = []
        total = 0.0
        for token in default:
            if share > 0:
                total += share
                names.append(token)
                cum.append(total)
        for token, rate in self._token_rates.items():
            if rate > 0 and token in self._books:
                total += rate
                names.append(token)
                cum.append(total)
        return names, cum, total

    async def _activity_loop(self) -> None:
        """Poisson arrivals over all active tokens; bursts are emitted in one go if the loop lagged."""
        loop = asyncio.get_running_loop()
        names: list[str] = []
        cum: list[float] = []
        total = 0.0
        next_t = loop.time()
        while True:
            if self._act_dirty:
                self._act_dirty = False
                names, cum, total = self._activity_weights()
                if total > 0:
                    next_t = loop.time() + self._rng.expovariate(total)
            if total <= 0:
                await asyncio.sleep(0.05)
                continue
            now = loop.time()
            if next_t > now:
                await asyncio.sleep(min(next_t - now, 0.05))
                continue
            emitted = 0
            while next_t <= now and emitted < 2000:
                token = self._rng.choices(names, cum_weights=cum)[0]
                try:
                    self._random_event(token)
                except Exception as exc:  # keep the market alive; a bug here must not kill activity
                    self._violation(f"simulator activity error on {token}: {exc!r}")
                next_t += self._rng.expovariate(total)
                emitted += 1
            if next_t <= now:
                next_t = now  # far behind: drop the backlog rather than catch up in one burst
            await asyncio.sleep(0)

    def _random_event(self, token: str) -> None:
        """One random book change that keeps bids strictly below asks."""
        book = self._books[token]
        rng = self._rng
        r = rng.random()
        if r < 0.05 and self._random_trade(book):
            return
        changes: list[Change] = []
        side = rng.choice((BUY, SELL))
        levels = book.side(side)
        if r < 0.20 and len(levels) >= 4:
            best = max(levels) if side == BUY else min(levels)
            changes.append((token, side, best, 0))
        elif (r < 0.45 or len(levels) < 4) and len(levels) < 40:
            price = self._random_new_price(book, side)
            if price is not None:
                changes.append((token, side, price, random_size(rng)))
        if not changes:
            other = BUY if side == SELL else SELL
            change = self._random_resize(book, side) or self._random_resize(book, other)
            if change is None:
                return
            changes.append(change)
        if rng.random() < 0.1:
            siblings = [t for t in self._markets[book.market] if t != token]
            if siblings:
                sibling = self._books[rng.choice(siblings)]
                change = self._random_resize(sibling, rng.choice((BUY, SELL)))
                if change is not None:
                    changes.append(change)
        self._price_change(changes)

    def _random_resize(self, book: Book, side: str) -> Change | None:
        levels = book.side(side)
        if not levels:
            return None
        near = sorted(levels, reverse=side == BUY)[:5]
        price = near[min(int(self._rng.expovariate(0.8)), len(near) - 1)]
        return (book.asset_id, side, price, random_size(self._rng))

    def _random_new_price(self, book: Book, side: str) -> Decimal | None:
        tick = book.tick
        n = int(Decimal(1) / tick)
        bb, ba = book.best_bid(), book.best_ask()
        # Integer grid bounds that keep the new level strictly on its own side of the spread.
        max_bid = int((ba / tick).to_integral_value(ROUND_CEILING)) - 1 if ba is not None else n - 1
        min_ask = int((bb / tick).to_integral_value(ROUND_FLOOR)) + 1 if bb is not None else 1
        levels = book.side(side)
        for _ in range(6):
            if side == BUY:
                top = int((bb / tick).to_integral_value(ROUND_FLOOR)) if bb is not None else max_bid
                if self._rng.random() < 0.3 and top < max_bid:
                    idx = self._rng.randint(top + 1, max_bid)
                else:
                    idx = min(top, max_bid) - self._rng.randint(0, 8)
                ok = 1 <= idx <= max_bid
            else:
                top = int((ba / tick).to_integral_value(ROUND_CEILING)) if ba is not None else min_ask
                if self._rng.random() < 0.3 and top > min_ask:
                    idx = self._rng.randint(min_ask, top - 1)
                else:
                    idx = max(top, min_ask) + self._rng.randint(0, 8)
                ok = min_ask <= idx <= n - 1
            price = tick * idx
            if ok and price not in levels:
                return price
        return None

    def _random_trade(self, book: Book) -> bool:
        """Take liquidity at the best level (a price_change), then last_trade_price and a book."""
        taker = self._rng.choice((BUY, SELL))
        maker_side = SELL if taker == BUY else BUY
        levels = book.side(maker_side)
        if not levels:
            return False
        price = min(levels) if maker_side == SELL else max(levels)
        size = levels[price]
        if len(levels) >= 4 and self._rng.random() < 0.3:
            traded = size
        else:
            traded = max(Decimal(1), (size * Decimal(self._rng.randint(1, 50)) / 100).quantize(Decimal(1)))
            traded = min(traded, size)
        self._price_change([(book.asset_id, maker_side, price, size - traded)])
        self._trade(book.asset_id, price, traded, taker)
        return True

    # ------------------------------------------------------------------ faults and introspection

    def connections(self) -> list[ConnInfo]:
        """Snapshots of every connection ever accepted, in id order."""
        return self._call(lambda: [c.info() for c in self._conns.values()])

    def conn(self, conn_id: int) -> ConnInfo:
        return self._call(lambda: self._conns[conn_id].info())

    def conn_for(self, token: str) -> ConnInfo | None:
        """The open connection (most recent) currently subscribed to token."""

        def find() -> ConnInfo | None:
            cids = self._subs.get(token)
            return self._conns[max(cids)].info() if cids else None

        return self._call(find)

    def sent_frames(self, conn_id: int) -> int:
        return self._call(lambda: self._conns[conn_id].sent)

    def _mark_closed(self, conn: _Conn, code: int | None) -> None:
        if not conn.open:
            return
        conn.open = False
        conn.closed_at = time.monotonic()
        conn.close_code = conn.server_close_code or code or 1006
        for token in conn.subscribed:
            subs = self._subs.get(token)
            if subs is not None:
                subs.discard(conn.id)
                if not subs:
                    del self._subs[token]
        conn.queue.clear()
        if conn.writer is not None and conn.writer is not asyncio.current_task():
            conn.writer.cancel()

    def _drop(self, conn_id: int | None) -> None:
        for conn in self._targets(conn_id):
            conn.ws.transport.abort()
            self._mark_closed(conn, 1006)

    def drop(self, conn_id: int | None = None) -> None:
        """Abort the TCP connection (no close frame) of one or all connections."""
        self._call(self._drop, conn_id)

    def _close(self, conn_id: int, code: int, reason: str) -> None:
        for conn in self._targets(conn_id):
            conn.queue.append((False, _Close(code, reason)))
            conn.wake.set()

    def close(self, conn_id: int, code: int = 1011, reason: str = "") -> None:
        """Clean close with a code, after the frames already queued on that connection."""
        self._call(self._close, conn_id, code, reason)

    def _set_mode(self, conn_id: int, mode: Mode) -> None:
        conn = self._conns[conn_id]
        conn.mode = mode
        if mode == "half_open":
            conn.ws.sim_deaf = True
        # Frames already queued are filtered by the writer, which checks the mode before each send.

    def zombie(self, conn_id: int) -> None:
        """Keep answering PING with PONG but never send market data again on this connection."""
        self._call(self._set_mode, conn_id, "zombie")

    def relay_only(self, conn_id: int) -> None:
        """A zombie that still relays venue-wide broadcasts (new_market): PONGs and broadcasts, but
        never this connection's own market data again."""
        self._call(self._set_mode, conn_id, "relay_only")

    def half_open(self, conn_id: int) -> None:
        """Send nothing at all (no PONG, no data, no FIN) and ignore input; the socket stays open."""
        self._call(self._set_mode, conn_id, "half_open")

    def _set_slow(self, conn_id: int, delay_s: float) -> None:
        self._conns[conn_id].delay = delay_s

    def slow(self, conn_id: int, delay_s: float) -> None:
        """Delay every outgoing frame on that connection by delay_s."""
        self._call(self._set_slow, conn_id, float(delay_s))

    def mute(self, token: str, subscribes: int | None = None) -> None:
        """Never send anything for token to the next `subscribes` subscriptions of it (None: all).

        Muting applies per subscription: a muted subscription stays silent until unsubscribed, so
        the client's unsubscribe+subscribe "redrive" is what rescues it once the count is used up.
        """
        if subscribes is not None and subscribes <= 0:
            raise ValueError("subscribes must be positive or None")
        self._call(self._mute.__setitem__, token, subscribes)

    def unmute(self, token: str) -> None:
        """Forget the mute count; subscriptions already muted stay silent until re-subscribed."""
        self._call(self._mute.pop, token, None)

    # ------------------------------------------------------------------ REST hooks

    def _rest_hold(self) -> float:
        with self._lock:
            return self._rest_delay

    def _rest_end(self) -> None:
        with self._lock:
            self._rest_in_flight -= 1

    def _rest_begin(self) -> int | None:
        with self._lock:
            self._rest_requests += 1
            self._rest_in_flight += 1
            status, count = self._rest_fail
            if count > 0:
                self._rest_fail = (status, count - 1)
                return status
        return None

    def _summaries(self, tokens: list[str]) -> list[dict[str, Any] | None]:
        return self._call(lambda: [self._summary(t) for t in tokens])

    # ------------------------------------------------------------------ WebSocket server

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        with self._lock:
            self._handshakes += 1
            status, count = self._reject
            if count > 0:
                self._reject = (status, count - 1)
            else:
                return None
        response = connection.respond(status, f"simulated handshake rejection ({status})\n")
        if status == 429:
            response.headers["Retry-After"] = "1"
        return response

    async def _handler(self, ws: ServerConnection) -> None:
        assert isinstance(ws, _SimConnection)
        self._next_conn_id += 1
        path = ws.request.path if ws.request is not None else ""
        conn = _Conn(self._next_conn_id, ws, path)
        self._conns[conn.id] = conn
        conn.writer = asyncio.get_running_loop().create_task(self._writer(conn))
        try:
            async for message in ws:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                conn.received.append((time.monotonic(), text))
                if conn.mode == "half_open" or not conn.open:
                    continue
                close = self._on_frame(conn, text, isinstance(message, bytes))
                if close is not None:
                    conn.server_close_code = close.code
                    conn.queue.clear()
                    await ws.close(close.code, close.reason)
                    break
        except ConnectionClosed:
            pass
        finally:
            self._mark_closed(conn, ws.close_code)

    async def _writer(self, conn: _Conn) -> None:
        """The single writer of one connection: drains its queue in order, honouring faults."""
        ws = conn.ws
        queue = conn.queue
        try:
            while True:
                if not queue:
                    conn.wake.clear()
                    await conn.wake.wait()
                    continue
                data, payload = queue.popleft()
                if isinstance(payload, _Close):
                    conn.server_close_code = payload.code
                    await ws.close(payload.code, payload.reason)
                    return
                if conn.delay > 0:
                    await asyncio.sleep(conn.delay)
                if _withheld(conn.mode, data):
                    continue
                if conn.delay <= 0 and queue and conn.mode == "normal":
                    await self._write_batch(conn, payload)
                    continue
                await ws.send(payload, text=True)
                conn.sent += 1
        except (ConnectionClosed, OSError):
            pass

    async def _write_batch(self, conn: _Conn, first: bytes | str | _Close) -> None:
        """Frame a run of queued data frames and write them with one drain: blasts need this speed.

        Stops at a queued close; order is kept and fault modes are checked before each batch.
        """
        ws = conn.ws
        queue = conn.queue
        batch = [first]
        while queue and len(batch) < 256 and not isinstance(queue[0][1], _Close):
            batch.append(queue.popleft()[1])
        async with ws.send_context():
            for payload in batch:
                assert not isinstance(payload, _Close)
                ws.protocol.send_text(payload.encode() if isinstance(payload, str) else payload)
        conn.sent += len(batch)

    def _on_frame(self, conn: _Conn, text: str, binary: bool) -> _Close | None:
        """Apply the market channel's rules to one received frame; return a close to perform."""
        where = f"conn {conn.id}"
        if binary:
            self._violation(f"{where}: binary frame {_short(text)!r}")
        if not conn.greeted:
            obj = self._json(text)
            if (
                not isinstance(obj, dict)
                or not isinstance(obj.get("type"), str)
                or obj["type"].lower() != "market"
                or not isinstance(obj.get("assets_ids"), list)
            ):
                self._violation(f"{where}: first frame is not a market subscription: {_short(text)!r}")
                return _Close(1008, "invalid subscription payload")
            if self.strict and len(obj["assets_ids"]) > MAX_IDS_PER_FRAME:
                self._violation(f"{where}: subscription with {len(obj['assets_ids'])} ids (max 100)")
                return _Close(1008, "too many assets")
            conn.greeted = True
            conn.custom = bool(obj.get("custom_feature_enabled", False)) and self.custom_features
            self._subscribe(conn, obj["assets_ids"], bool(obj.get("initial_dump", True)), operation=False)
            return None
        if text == "PING":
            conn.pings += 1
            self._enqueue(conn, "PONG", data=False)
            return None
        obj = self._json(text)
        if not isinstance(obj, dict):
            self._violation(f"{where}: unexpected frame {_short(text)!r}")
            return None
        if "type" in obj:
            self._violation(f"{where}: second subscription frame on the socket: {_short(text)!r}")
            self._enqueue(conn, "INVALID OPERATION", data=False)
            return None
        op = obj.get("operation")
        ids = obj.get("assets_ids")
        op = op.lower() if isinstance(op, str) else None
        if op not in ("subscribe", "unsubscribe") or not isinstance(ids, list):
            self._violation(f"{where}: invalid operation frame {_short(text)!r}")
            self._enqueue(conn, "INVALID OPERATION", data=False)
            return None
        if self.strict and len(ids) > MAX_IDS_PER_FRAME:
            self._violation(f"{where}: {op} with {len(ids)} ids (max 100)")
            return _Close(1008, "too many assets")
        if "custom_feature_enabled" in obj:
            conn.custom = bool(obj["custom_feature_enabled"]) and self.custom_features
        if op == "subscribe":
            self._subscribe(conn, ids, bool(obj.get("initial_dump", True)), operation=True)
        else:
            self._unsubscribe(conn, ids)
        return None

    @staticmethod
    def _json(text: str) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return None

    def _valid_ids(self, conn: _Conn, ids: list[Any]) -> list[str]:
        out: list[str] = []
        seen: set[str] = set()
        for tid in ids:
            if not isinstance(tid, str) or not _TOKEN_RE.fullmatch(tid):
                self._violation(f"conn {conn.id}: invalid asset id {_short(repr(tid))}")
                continue
            if tid in seen:
                self._violation(f"conn {conn.id}: asset {tid} twice in one frame")
                continue
            seen.add(tid)
            out.append(tid)
        return out

    def _subscribe(self, conn: _Conn, ids: list[Any], dump: bool, operation: bool) -> None:
        new: list[str] = []
        for tid in self._valid_ids(conn, ids):
            if tid in conn.subscribed:
                if operation:
                    self._violation(f"conn {conn.id}: re-subscribe of already subscribed asset {tid}")
                continue
            if tid not in self._books and self.auto_create:
                self._add_market([tid], "0.01", None, True)
            conn.subscribed.add(tid)
            self._subs.setdefault(tid, set()).add(conn.id)
            if tid in self._mute:
                conn.muted.add(tid)
                left = self._mute[tid]
                if left is not None:
                    if left <= 1:
                        del self._mute[tid]
                    else:
                        self._mute[tid] = left - 1
            new.append(tid)
        if operation and not new:
            self._enqueue(conn, "NO NEW ASSETS", data=False)
            return
        if dump:
            books = [self._book_msg(self._books[t]) for t in new if t in self._books and t not in conn.muted]
            if books:
                self._enqueue(conn, orjson.dumps(books))

    def _unsubscribe(self, conn: _Conn, ids: list[Any]) -> None:
        for tid in self._valid_ids(conn, ids):
            conn.subscribed.discard(tid)
            conn.muted.discard(tid)
            subs = self._subs.get(tid)
            if subs is not None:
                subs.discard(conn.id)
                if not subs:
                    del self._subs[tid]
