"""Local exchange simulator speaking Polymarket's CLOB market-channel protocol over real sockets.

Integration tests, the demo and the benchmarks run the sidecar against this instead of the live
exchange, so it reproduces the protocol including its refusals and quirks (best level last,
sibling leaks in price_change, "0"/"1" for empty sides, 1008 closes, text control strings) and
adds what the live exchange cannot give: scripted events, injected faults and a view of the truth.

:class:`Simulator` is the façade: every control below is marshalled onto the simulator's event
loop (:mod:`pmsim.loopthread`) and returns once its frames sit in the per-connection write
queues. The parts: :mod:`~pmsim.session` (the wire rules, sans I/O), :mod:`~pmsim.market` (the
truth), :mod:`~pmsim.fanout` (connections and routing), :mod:`~pmsim.script` (scripted events),
:mod:`~pmsim.activity` (random activity), :mod:`~pmsim.wsserver` and :mod:`~pmsim.rest` (sockets),
:mod:`~pmsim.state` (each market's reference data and lifecycle); the fault controls are the
:class:`~pmsim.faults.Faults` mixin.
"""

from __future__ import annotations

import random
import ssl
import time
from types import TracebackType
from typing import Any

from websockets.asyncio.server import Server

from .activity import Activity
from .book import BUY, Levels, Num, Top, canon
from .conns import ConnInfo
from .fanout import Fanout
from .faults import Faults
from .ledger import Ledger
from .loopthread import CALL_TIMEOUT_S, LoopThread
from .market import Change, Markets
from .messages import Event
from .rest import RestHooks, RestServer
from .script import Script
from .session import MAX_IDS_PER_FRAME
from .state import MarketInfo
from .wsserver import WsShell

__all__ = ["MAX_IDS_PER_FRAME", "ConnInfo", "MarketInfo", "Simulator"]


class Simulator(Faults):
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
        self._ledger = Ledger()
        self._markets = Markets(random.Random(seed))
        self._fanout = Fanout(
            self._markets,
            self._ledger.violation,
            auto_create=auto_create,
            strict=strict,
            custom_features=custom_features,
        )
        self._script = Script(self._markets, self._fanout, custom_features)
        self._activity = Activity(self._script, self._ledger.violation)
        self._shell = WsShell(self._fanout, self._ledger)
        self._loop = LoopThread()
        self._ws_server: Server | None = None
        self._rest: RestServer | None = None
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
        self._loop.start()
        try:
            self._loop.run_on_loop(self._startup())
            self._loop.running = True
            ledger = self._ledger
            hooks = RestHooks(
                ledger.rest_begin,
                self._summaries,
                ledger.rest_hold,
                ledger.rest_end,
                market=self.market_state,
                retry_after=lambda: ledger.retry_after,
            )
            self._rest = RestServer(self.host, self._rest_port_req, hooks)
        except BaseException:
            self.stop()  # e.g. a port in use: do not leave a loop thread or a listener behind
            raise
        self.rest_port = self._rest.port
        self._rest.start()
        return self

    async def _startup(self) -> None:
        self._ws_server = await self._shell.serve(self.host, self._ws_port_req, self.tls)
        self.ws_port = self._ws_server.sockets[0].getsockname()[1]
        if self._activity.on:
            self._activity.ensure_task()

    def stop(self) -> None:
        """Close everything (REST, sockets, loop). Idempotent."""
        if self._stopped or self._loop.loop is None:
            self._stopped = True
            return
        self._stopped = True
        if self._rest is not None:
            self._rest.stop()
        try:
            self._loop.run_on_loop(self._shutdown())
        finally:
            self._loop.stop()

    async def _shutdown(self) -> None:
        self._activity.stop()
        self._activity.stop_broadcasts()
        await self._shell.shutdown(self._ws_server)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _summaries(self, tokens: list[str]) -> list[Event | None]:
        return self._loop.call(lambda: [self._markets.summary(t) for t in tokens])

    # ------------------------------------------------------------------ markets and truth

    def add_market(
        self,
        token_ids: list[str] | None = None,
        *,
        tick_size: Num | None = "0.01",
        market_id: str | None = None,
        seed_book: bool = True,
    ) -> str:
        """Create a market (default: two fresh 70-77 digit token ids, seeded books); returns its id."""
        return self._loop.call(self._markets.add_market, token_ids, tick_size, market_id, seed_book)

    def tokens(self) -> list[str]:
        return self._loop.call(lambda: list(self._markets.books))

    def markets(self) -> dict[str, list[str]]:
        """Market id -> its token ids."""
        return self._loop.call(lambda: {m: list(t) for m, t in self._markets.markets.items()})

    def market_of(self, token: str) -> str:
        return self._loop.call(lambda: self._markets.book(token).market)

    def truth(self, token: str) -> Top:
        """The simulator's true top of book, as the same strings the frames carry."""
        return self._loop.call(lambda: self._markets.book(token).top())

    def book(self, token: str) -> tuple[Levels, Levels]:
        """(bids, asks), best first on both sides."""
        return self._loop.call(lambda: self._markets.book(token).levels())

    def tick_size(self, token: str) -> str:
        return self._loop.call(lambda: canon(self._markets.book(token).tick))

    def market_info(self, token: str) -> MarketInfo:
        """(tick_size, min_order_size, neg_risk) of the token's market, as the frames carry them."""
        return self._loop.call(self._markets.info, token)

    def market_state(self, market_id: str) -> dict[str, Any] | None:
        """What ``GET /markets/{market_id}`` answers (the CLOB market object), None for unknown."""
        return self._loop.call(self._markets.market_json, market_id)

    def has_book(self, token: str) -> bool:
        """False once the token's market is closed (REST /book 404, no more book frames)."""
        return self._loop.call(self._markets.has_book, token)

    # ------------------------------------------------------------------ scripting

    def send_book(self, token: str) -> None:
        """Send a `book` snapshot of the current truth to the token's subscribers."""
        self._loop.call(self._script.send_book, token)

    def set_book(
        self,
        token: str,
        bids: list[tuple[Num, Num]],
        asks: list[tuple[Num, Num]],
        *,
        naming: str = "bids_asks",
    ) -> None:
        """Replace the book and send it; naming="buys_sells" uses the older docs' side names."""
        self._loop.call(self._script.set_book, token, bids, asks, naming)

    def price_change(self, changes: list[Change], *, corrupt: dict[str, str] | None = None) -> None:
        """(token, side, price, new total size) updates; one frame per market, siblings leak.

        corrupt={token: "price" | "size" | "side"} sends that token's entries with the field
        unreadable, mixed with the others' good entries in the same frame; the truth still moves
        as the change says (a client that skips the entry has missed a real change).
        """
        self._loop.call(self._script.price_change, list(changes), dict(corrupt or {}))

    def crossing_trade(self, token: str, side: str, price: Num, size: Num, *, gap_s: float = 0.0) -> None:
        """An aggressive `side` order for `size` up to limit `price`, reported as the live exchange
        reports a crossing trade: one price_change message per touched level, all with one
        timestamp, each already carrying the final best_bid/best_ask. First the resting remainder
        (if any: the book is locally crossed until the removals arrive), then each consumed level
        (removed or reduced), then last_trade_price. gap_s spaces the messages (grace tests)."""
        gap = float(gap_s) if self._loop.running else 0.0
        self._loop.run(self._script.crossing_trade(token, side, price, size, gap), CALL_TIMEOUT_S + 10 * gap)

    def price_change_legacy(self, token: str, changes: list[tuple[str, Num, Num]]) -> None:
        """The pre-2025-09 per-asset form: changes=[(side, price, size)], sent to that asset only."""
        self._loop.call(self._script.price_change_legacy, token, list(changes))

    def best_bid_ask(self, token: str) -> None:
        """Send a best_bid_ask event (custom-feature connections only, as the live server does)."""
        self._loop.call(self._script.best_bid_ask, token)

    def tick_size_change(self, token: str, new_tick: Num, *, book_delay_s: float = 0.0) -> None:
        """tick_size_change, then a separate `book` frame (after book_delay_s, before returning)."""
        delay = book_delay_s if self._loop.running else 0.0
        self._loop.run(self._script.tick_size_change(token, new_tick, delay), CALL_TIMEOUT_S + delay)

    def trade(self, token: str, price: Num, size: Num, side: str = BUY) -> None:
        """last_trade_price, then a `book` snapshot. The book itself is left as it is."""
        self._loop.call(self._script.trade, token, price, size, side)

    def resolve(self, market_id: str, winning_token: str) -> None:
        """market_resolved to custom-feature connections subscribed to any of the market's tokens.

        Only the announcement: the market stays open in the truth (see resolve_market)."""
        self._loop.call(self._script.resolve, market_id, winning_token)

    def resolve_market(self, market: str, winner: str | None = None, announce: bool = True) -> None:
        """Close the market in the truth: REST /markets says closed (with tokens[].winner when the
        winner is known), /book answers 404, /books leaves its tokens out, no more book frames or
        random activity (scripted events still go out: a late book must not revive a resolved
        token). announce=True also sends market_resolved when the winner is given (the
        event names one: without a winner nothing is sent); announce=False withholds it, as the
        live exchange is reported to do."""
        self._loop.call(self._script.resolve_market, market, winner, announce)

    def new_market(
        self,
        token_ids: list[str] | None = None,
        *,
        tick_size: Num | None = "0.01",
        market_id: str | None = None,
        seed_book: bool = True,
        question: str | None = None,
    ) -> str:
        """add_market plus a new_market event to every custom-feature connection; returns market id."""
        return self._loop.call(self._script.new_market, token_ids, tick_size, market_id, seed_book, question)

    def send_raw(self, data: str | bytes, conn_id: int | None = None) -> None:
        """A raw text frame (bytes go out unvalidated, for malformed-frame tests) to one or all."""
        self._loop.call(self._fanout.send_raw, data, conn_id)

    def blast(self, frames: list[bytes | str], conn_id: int | None = None) -> None:
        """Queue pre-encoded frames for one connection (or all) without touching the truth."""
        self._loop.call(self._fanout.blast, list(frames), conn_id)

    def apply_silently(self, changes: list[Change]) -> None:
        """Update the truth as price_change would, sending nothing (benchmarks encode their own)."""
        self._loop.call(self._markets.apply_changes, list(changes))

    def wait_drained(self, conn_id: int | None = None, timeout: float = 10.0) -> bool:
        """Wait until the write queues (of one connection or all) are empty; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._loop.call(self._fanout.queued, conn_id):
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
        if not self._loop.running:
            raise RuntimeError("start the simulator first")
        self._loop.call(self._activity.start_broadcasts, float(interval_s))

    def stop_broadcasts(self) -> None:
        self._loop.call(self._activity.stop_broadcasts)

    def start_activity(self, events_per_s: float, tokens: list[str] | None = None) -> None:
        """Random-walk price_changes (plus occasional trades) at about events_per_s in total.

        tokens=None means every token, including ones created later.
        """
        self._loop.call(self._start_activity, float(events_per_s), None if tokens is None else list(tokens))

    def _start_activity(self, rate: float, tokens: list[str] | None) -> None:
        self._activity.configure(rate, tokens)
        if self._loop.running or self._loop.on_loop():
            self._activity.ensure_task()

    def set_token_rate(self, token: str, events_per_s: float) -> None:
        """Per-token rate override (0 = silent); applies while activity runs."""
        self._loop.call(self._activity.set_token_rate, token, float(events_per_s))

    def stop_activity(self) -> None:
        """Stop random activity; when this returns no further random event will be generated."""
        self._loop.call(self._activity.stop)
