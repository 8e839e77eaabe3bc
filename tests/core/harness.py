"""Helpers for the pure-core unit tests: event builders and a fake shell + exchange for the engine.

:class:`Sim` drives :class:`sidecar.core.engine.Engine` the way ``sidecar.shell.app.Runtime`` does (actions
carried out, ``Close`` answered by ``on_closed(..., "local")``, writes drained after every step),
with a simulated clock. Its fake exchange holds every frame the engine sends to the wire rules
through the simulator's own sans-I/O session (:class:`pmsim.session.Session`: first frame
``type: market``, never a second one, ≤100 ids, no re-subscribe of an id already on the socket, no
unsubscribe of one that is not, PING only after the subscription), adds this engine's habits (no
empty frames, exactly the frames :mod:`pmsim.messages` builds) and can answer PINGs and
subscriptions like the real server. The event builders are thin wrappers of :mod:`pmsim.messages`.
"""

from __future__ import annotations

import random
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
from pmsim import messages
from pmsim.messages import PONG
from pmsim.session import Kind, Session

from sidecar.core.engine import Close, Engine, EngineConfig, Open, QuoteWrite, RestFetch, Send

TS0 = 1_700_000_000_000  # wall clock (ms) at the start of every simulation
T0 = 1000.0  # monotonic clock at the start of every simulation

Level = tuple[str, str]

DEFAULT_BIDS: tuple[Level, ...] = (("0.48", "100"), ("0.49", "200"))  # best level last, as live
DEFAULT_ASKS: tuple[Level, ...] = (("0.52", "300"), ("0.51", "150"))


def tok(i: int) -> str:
    """A realistic 77-digit token id; ids of the same width sort like their numbers."""
    return str(10**76 + i)


def engine_cfg(**overrides: Any) -> EngineConfig:
    base: dict[str, Any] = {
        "max_tokens_per_conn": 200,
        "max_tokens": 5000,
        "ping_interval_s": 10.0,
        "pong_timeout_s": 30.0,
        "connect_spacing_s": 0.0,
        "backoff_min_s": 1.0,
        "backoff_max_s": 8.0,
        "silence_min_s": 5.0,
        "silence_max_s": 120.0,
        "probe_timeout_s": 10.0,
        "confirm_timeout_s": 20.0,
        "redrive_max": 2,
        "quiet_confirm_s": 30.0,
        "rest_enabled": False,
        "unsubscribed_ttl_s": 300,
    }
    base.update(overrides)
    return EngineConfig(**base)


class MaxRandom(random.Random):
    """Backoff always takes the top of its jitter window, so delays are exact; records windows."""

    def __init__(self) -> None:
        super().__init__(0)
        self.windows: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.windows.append((a, b))
        return b


# ---- event builders ----------------------------------------------------------------------------


def top(fields: dict[str, str]) -> tuple[str, str, str, str]:
    """A quote write's top of book: (bid, bid_size, ask, ask_size)."""
    return fields["bid"], fields["bid_size"], fields["ask"], fields["ask_size"]


levels = messages.levels


def book_ev(
    asset: str,
    bids: Iterable[Level] = DEFAULT_BIDS,
    asks: Iterable[Level] = DEFAULT_ASKS,
    ts: int | str = TS0,
    market: str = "0xmarket",
    names: tuple[str, str] = ("bids", "asks"),
    **extra: Any,
) -> dict[str, Any]:
    """A ``book`` (``names=("buys", "sells")``: the older docs' side names); extra fields as given."""
    naming: messages.BookNaming = "buys_sells" if names == ("buys", "sells") else "bids_asks"
    assert names in (("bids", "asks"), ("buys", "sells")), names
    return {**messages.book(asset, market, bids, asks, ts, hash="0xabc", naming=naming), **extra}


def pc_entry(
    asset: str, price: str, size: str, side: str, best_bid: str | None = None, best_ask: str | None = None
) -> dict[str, Any]:
    return messages.price_change_entry(asset, price, size, side, "h", best_bid, best_ask)


def pc_ev(entries: Sequence[dict[str, Any]], ts: int | str = TS0, market: str = "0xmarket") -> dict[str, Any]:
    """A price_change in the schema live since 2025-09-15."""
    return messages.price_change(market, entries, ts)


def legacy_pc_ev(asset: str, changes: Sequence[tuple[str, str, str]], ts: int | str = TS0) -> dict[str, Any]:
    """The legacy per-asset schema; ``changes`` are (price, side, size)."""
    return messages.legacy_price_change(asset, "0xmarket", changes, ts, "0xabc")


def trade_ev(asset: str, price: str, size: str, side: str, ts: int | str = TS0) -> dict[str, Any]:
    return messages.last_trade_price(asset, "0xmarket", price, size, side, ts)


encode = messages.encode


# ---- the fake shell + exchange -------------------------------------------------------------------


class WireError(AssertionError):
    pass


class Sim:
    def __init__(
        self,
        cfg: EngineConfig | None = None,
        *,
        rng: random.Random | None = None,
        seed: int = 7,
        epoch: str = "epoch-1",
        auto_open: bool = True,
        answer_ping: bool = True,
        answer_subscribe: bool = False,
    ) -> None:
        self.now = T0
        self.engine = Engine(cfg or engine_cfg(), epoch, self.now, TS0, rng or random.Random(seed))
        self.auto_open = auto_open
        self.answer_ping = answer_ping
        self.answer_subscribe = answer_subscribe
        self.mute: set[str] = set()  # tokens the exchange never sends a snapshot for
        self.server_books: dict[str, tuple[tuple[Level, ...], tuple[Level, ...]]] = {}
        self.actions: list[tuple[float, Any]] = []
        self.writes: list[tuple[float, QuoteWrite]] = []
        self.sent: dict[int, list[str]] = defaultdict(list)
        self.send_log: list[tuple[float, int, str]] = []
        self.sessions: dict[int, Session] = {}  # the exchange side of each open socket
        self.first_seen: set[int] = set()
        self.open_conns: set[int] = set()
        self.ever_opened: set[int] = set()
        self.inbox: deque[tuple[int, bytes]] = deque()
        self.rest_requests: list[RestFetch] = []
        self.book_extra: dict[str, Any] = {}  # fields every snapshot carries (reference data)

    # -- clock
    @property
    def wall_ms(self) -> int:
        return TS0 + round((self.now - T0) * 1000)

    def advance(self, dt: float) -> None:
        self.now += dt

    def tick(self) -> list[QuoteWrite]:
        self.engine.tick(self.now, self.wall_ms)
        return self.pump()

    def tick_at(self, t: float) -> list[QuoteWrite]:
        """Set the clock to ``t`` (absolute, exact) and tick."""
        assert t >= self.now
        self.now = t
        return self.tick()

    def step(self, dt: float) -> list[QuoteWrite]:
        self.advance(dt)
        return self.tick()

    def run_for(self, seconds: float, step: float = 1.0) -> list[QuoteWrite]:
        """Tick every ``step`` seconds for ``seconds`` (clock values computed, never accumulated)."""
        start = self.now
        out: list[QuoteWrite] = []
        for k in range(1, round(seconds / step) + 1):
            out += self.tick_at(start + k * step)
        return out

    # -- inputs
    def desired(self, members: Iterable[Any]) -> list[QuoteWrite]:
        self.engine.set_desired(members, self.now, self.wall_ms)
        return self.pump()

    def frame(self, conn_id: int, *events: Any) -> list[QuoteWrite]:
        self.engine.on_frame(conn_id, encode(*events), self.now, self.wall_ms)
        return self.pump()

    def raw(self, conn_id: int, data: bytes | str) -> list[QuoteWrite]:
        self.engine.on_frame(conn_id, data, self.now, self.wall_ms)
        return self.pump()

    def close_from_server(self, conn_id: int, reason: str = "close_1006") -> list[QuoteWrite]:
        self.open_conns.discard(conn_id)
        self.sessions.pop(conn_id, None)
        self.engine.on_closed(conn_id, reason, self.now)
        return self.pump()

    def rest(self, request_id: int, books: list[Any] | None) -> list[QuoteWrite]:
        self.engine.on_rest_books(request_id, books, self.now, self.wall_ms)
        return self.pump()

    # -- the shell
    def pump(self) -> list[QuoteWrite]:
        while True:
            actions = self.engine.take_actions()
            for action in actions:
                self._carry_out(action)
            if not actions and not self.inbox:
                break
            while self.inbox:
                conn_id, data = self.inbox.popleft()
                if conn_id in self.open_conns:
                    self.engine.on_frame(conn_id, data, self.now, self.wall_ms)
        writes = self.engine.take_writes(self.now, self.wall_ms)
        self.writes += [(self.now, w) for w in writes]
        return writes

    def _carry_out(self, action: Any) -> None:
        self.actions.append((self.now, action))
        if isinstance(action, Open):
            if action.conn_id in self.ever_opened:
                raise WireError(f"conn id {action.conn_id} opened twice")
            self.ever_opened.add(action.conn_id)
            if self.auto_open:
                self.open_conns.add(action.conn_id)
                self.engine.on_open(action.conn_id, self.now)
        elif isinstance(action, Send):
            self._check_send(action)
        elif isinstance(action, Close):
            was_open = action.conn_id in self.open_conns
            self.open_conns.discard(action.conn_id)
            self.sessions.pop(action.conn_id, None)
            self.inbox = deque(item for item in self.inbox if item[0] != action.conn_id)
            if was_open or action.conn_id in self.ever_opened:
                self.engine.on_closed(action.conn_id, "local", self.now)
        elif isinstance(action, RestFetch):
            self.rest_requests.append(action)

    def connect(self, conn_id: int) -> list[QuoteWrite]:
        """Complete a socket opened with ``auto_open=False``."""
        self.open_conns.add(conn_id)
        self.engine.on_open(conn_id, self.now)
        return self.pump()

    def _check_send(self, action: Send) -> None:
        """Hold each frame to the exchange's own rules (its session), then to this engine's habits."""
        conn, text = action.conn_id, action.text
        if conn not in self.open_conns:
            raise WireError(f"send on a socket that is not open: {conn} {text[:80]}")
        self.sent[conn].append(text)
        self.send_log.append((self.now, conn, text))
        session = self.sessions.setdefault(conn, Session())
        if text != "PING":
            self._check_engine_frame(conn, text, session.greeted)
        reply = session.receive(text)
        if reply.violations or reply.close is not None:
            raise WireError(f"socket {conn}: {'; '.join(reply.violations) or reply.close}")
        if reply.kind is Kind.SUBSCRIPTION:
            self.first_seen.add(conn)
        if reply.answer == PONG and self.answer_ping:
            self.inbox.append((conn, PONG.encode()))
        if self.answer_subscribe and reply.dump:
            snapshots = [self.snapshot(t) for t in reply.added if t not in self.mute]
            if snapshots:
                self.inbox.append((conn, encode(*snapshots)))

    @staticmethod
    def _check_engine_frame(conn: int, text: str, greeted: bool) -> None:
        """Beyond the wire rules: the engine sends exactly the frames pmsim.messages builds, never
        empty, the subscription always with initial_dump and custom features on."""
        obj = orjson.loads(text)
        ids = obj.get("assets_ids") if isinstance(obj, dict) else None
        if not isinstance(ids, list) or not ids:
            raise WireError(f"frame without ids on socket {conn}: {text[:120]}")
        if not greeted:
            expected = messages.subscription(ids)
        else:
            expected = messages.operation(obj.get("operation"), ids)
        if obj != expected:
            raise WireError(f"bad frame on socket {conn}: {text[:120]}")

    @property
    def server_subs(self) -> defaultdict[int, set[str]]:
        """The tokens each open socket is subscribed to, as the exchange's session holds them."""
        return defaultdict(set, {conn: session.subscribed for conn, session in self.sessions.items()})

    def snapshot(self, token: str) -> dict[str, Any]:
        bids, asks = self.server_books.get(token, (DEFAULT_BIDS, DEFAULT_ASKS))
        return book_ev(token, bids, asks, ts=self.wall_ms, **self.book_extra)

    # -- queries
    def opens(self, since: int = 0) -> list[Open]:
        return [a for _, a in self.actions[since:] if isinstance(a, Open)]

    def closes(self, since: int = 0) -> list[Close]:
        return [a for _, a in self.actions[since:] if isinstance(a, Close)]

    def sends(self, since: int = 0) -> list[Send]:
        return [a for _, a in self.actions[since:] if isinstance(a, Send)]

    def mark(self) -> int:
        """Index into the action log, for ``since=``."""
        return len(self.actions)

    def ops(self, since: int = 0, conn_id: int | None = None) -> list[tuple[int, str, list[str]]]:
        """Subscription frames sent as (conn, op, ids); the first frame's op is ``market``."""
        out = []
        for send in self.sends(since):
            if send.text == "PING" or (conn_id is not None and send.conn_id != conn_id):
                continue
            obj = orjson.loads(send.text)
            out.append((send.conn_id, obj.get("operation", obj.get("type")), obj["assets_ids"]))
        return out

    def conn_of(self, token: str) -> int:
        st = self.engine.tokens[token]
        conn_id = self.engine.shards.shards[st.shard_id].conn_id
        assert conn_id is not None, f"token {token} has no socket"
        return conn_id

    def status(self, token: str) -> str:
        return self.engine.tokens[token].status

    def token_writes(self, token: str, publish: bool | None = True) -> list[QuoteWrite]:
        return [w for _, w in self.writes if w.token == token and (publish is None or w.publish == publish)]

    def last(self, token: str) -> dict[str, str]:
        return self.token_writes(token)[-1].fields

    def stat(self, name: str, label: str = "") -> int:
        return self.engine.stats[name, label]

    def start_live(self, tokens: Sequence[str]) -> list[QuoteWrite]:
        """Desire ``tokens``, open their sockets, deliver a snapshot each: every token live."""
        self.desired(tokens)
        self.tick()
        by_conn: dict[int, list[str]] = defaultdict(list)
        for token in tokens:
            by_conn[self.conn_of(token)].append(token)
        writes: list[QuoteWrite] = []
        for conn_id, toks in by_conn.items():
            writes += self.frame(conn_id, *[self.snapshot(t) for t in toks])
        for token in tokens:
            assert self.status(token) == "live", (token, self.status(token))
        return writes


# ---- engine test helpers (shared by the engine's part tests) -------------------------------------

LIVE_BOOK = Path(__file__).resolve().parent / "data" / "book_live_2024.json"  # a captured book


def subscribed_ids(s: Sim) -> list[str]:
    """Every id the engine subscribed so far (first frame and later subscribe operations)."""
    return [i for _, op, ids in s.ops() if op in ("market", "subscribe") for i in ids]


def by_token(writes: list[QuoteWrite]) -> dict[str, QuoteWrite]:
    out = {w.token: w for w in writes}
    assert len(out) == len(writes), "more than one write per token in one batch"
    return out


def total(s: Sim, name: str) -> int:
    """A counter summed over its labels."""
    return sum(v for (n, _), v in s.engine.stats.items() if n == name)


def live_from(w: QuoteWrite) -> tuple[str, str, tuple[str, str, str, str]]:
    """A write's (status, source, top of book): ``== ("live", "rest", (...))`` in one assert."""
    return w.fields["status"], w.fields["source"], top(w.fields)


# A token that never gets a first event, as its pending reasons show it: two redrives on its socket,
# a move to another socket, two redrives there, then no_data.
NO_FIRST_EVENT_REASONS = [
    "subscribing",
    "no_first_event_redrive_1",
    "no_first_event_redrive_2",
    "no_first_event_moved",
    "no_first_event_redrive_1",
    "no_first_event_redrive_2",
    "no_data",
]
