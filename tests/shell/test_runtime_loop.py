"""sidecar.shell.app.Runtime: the loop's dispatch of typed inbox messages, without a network.

First each message type against a recording stand-in for the engine (which method, which
arguments, what the runtime itself does with its sockets). Then the real loop thread with the real
engine, fakeredis for Redis and stand-in socket runners: a desired set opens a socket, the open
socket gets the subscription, a book frame makes the quote `live` in Redis, a lost socket makes it
`stale` and is reopened, a refused connect is dropped, and a stop request wakes an idle loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import orjson
import pytest
from pmsim import messages

import sidecar.shell.app as app
from devkit.wait import wait_for
from sidecar.config import Settings
from sidecar.core.actions import MarketFetch, RestFetch
from sidecar.shell.inbox import (
    ConnectFailed,
    DesiredChanged,
    FrameReceived,
    InboxMessage,
    MarketAnswer,
    RestAnswer,
    SocketClosed,
    SocketOpened,
    Wake,
)

P = "pm:"
TOKEN = "71321045679252212594626385532706912750332728571942532289631379312455583992563"
MARKET = "0x5f65177b394277fd294cd75650044e32ba009a95022d88a0c1d565897d72f8f1"


def settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {"rest_enabled": False, "write_flush_ms": 0, "metrics_port": 0}
    return Settings(_env_file=None, **{**base, **kw})


# ---- each message, against a recording engine ---------------------------------------------------


class RecordingEngine:
    """Stands in for the engine: records every call the runtime makes, by method name."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self.calls.append((name, args))

        return record


class Runner:
    """Stands in for a SocketRunner: records what the runtime asks of it."""

    made: list[Runner] = []

    def __init__(self, conn_id: int, url: str, post: Callable[[InboxMessage], None]) -> None:
        self.conn_id = conn_id
        self.url = url
        self.post = post
        self.started = False
        self.closed = False
        self.sent: list[str] = []
        Runner.made.append(self)

    def start(self) -> None:
        self.started = True

    def send(self, text: str) -> None:
        self.sent.append(text)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def recorded() -> tuple[app.Runtime, RecordingEngine]:
    rt = app.Runtime(settings(redis_url="redis://127.0.0.1:1/0"))
    engine = RecordingEngine()
    rt.engine = engine  # type: ignore[assignment]
    return rt, engine


def test_each_message_reaches_its_engine_method(recorded: tuple[app.Runtime, RecordingEngine]) -> None:
    rt, engine = recorded
    members = frozenset({b"1", b"2"})
    books: list[Any] = [{"asset_id": "1"}]
    rt._handle(SocketOpened(3), 0)
    rt._handle(DesiredChanged(members), 1234)
    rt._handle(RestAnswer(9, books), 1235)
    rt._handle(RestAnswer(10, None), 1236)
    rt._handle(SocketClosed(3, "close_1011"), 0)
    rt._handle(ConnectFailed(4, "http_429", 429), 0)
    rt._handle(ConnectFailed(5, "refused"), 0)
    rt._handle(Wake(), 0)
    names = [(name, args[:2]) for name, args in engine.calls]
    assert names == [
        ("on_open", (3, pytest.approx(time.monotonic(), abs=1.0))),
        ("set_desired", (members, pytest.approx(time.monotonic(), abs=1.0))),
        ("on_rest_books", (9, books)),
        ("on_rest_books", (10, None)),
        ("on_closed", (3, "close_1011")),
        ("on_connect_failed", (4, "http_429")),
        ("on_connect_failed", (5, "refused")),
    ]
    by_name = {name: args for name, args in engine.calls}
    assert by_name["set_desired"][2] == 1234  # the loop turn's wall clock
    assert engine.calls[2][1][3] == 1235
    assert engine.calls[5][1][3] == 429 and engine.calls[6][1][3] is None  # the HTTP status
    assert rt._got_desired, "/readyz waits for the first desired set"


def test_market_polls_go_to_the_rest_worker_and_their_answers_to_the_engine() -> None:
    """MarketFetch is queued on the REST worker (never fetched on the loop); MarketAnswer, whole,
    per-market None or failed, reaches engine.on_market_states with the loop's wall clock."""
    rt = app.Runtime(settings(redis_url="redis://127.0.0.1:1/0", rest_enabled=True))
    asked: list[tuple[str, int, list[str]]] = []

    class Rest:
        def fetch(self, request_id: int, tokens: list[str]) -> None:
            asked.append(("books", request_id, tokens))

        def fetch_markets(self, request_id: int, markets: list[str]) -> None:
            asked.append(("markets", request_id, markets))

    class Engine(RecordingEngine):
        def take_actions(self) -> list[Any]:
            return [MarketFetch(4, [MARKET, "0xb"]), RestFetch(5, [TOKEN])]

    engine = Engine()
    rt.engine = engine  # type: ignore[assignment]
    rt.rest = Rest()  # type: ignore[assignment]
    rt._carry_out()
    assert asked == [("markets", 4, [MARKET, "0xb"]), ("books", 5, [TOKEN])]
    markets: dict[str, Any | None] = {MARKET: {"closed": True}, "0xb": None}
    rt._handle(MarketAnswer(4, markets), 1240)
    rt._handle(MarketAnswer(6, None), 1241)
    assert [(name, args[:2], args[3]) for name, args in engine.calls] == [
        ("on_market_states", (4, markets), 1240),
        ("on_market_states", (6, None), 1241),
    ]


def test_a_closed_or_failed_socket_leaves_the_runtime(recorded: tuple[app.Runtime, RecordingEngine]) -> None:
    rt, _ = recorded
    post = rt.inbox.put
    rt.sockets = {1: Runner(1, "", post), 2: Runner(2, "", post), 3: Runner(3, "", post)}  # type: ignore[dict-item]
    rt._handle(SocketClosed(1, "eof"), 0)
    rt._handle(ConnectFailed(2, "timeout"), 0)
    rt._handle(SocketOpened(3), 0)
    assert list(rt.sockets) == [3]


def test_a_frame_carries_its_receive_time(recorded: tuple[app.Runtime, RecordingEngine]) -> None:
    rt, engine = recorded
    received = time.monotonic() - 0.25
    rt._handle(FrameReceived(6, b"[]", received), 0)
    ((name, (conn_id, data, now, wall_ms)),) = engine.calls
    assert (name, conn_id, data, now) == ("on_frame", 6, b"[]", received)
    assert abs(wall_ms - (time.time() * 1000 - 250)) < 50


# ---- the real loop, the real engine, fakeredis ---------------------------------------------------


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[app.Runtime, fakeredis.FakeRedis]]:
    server = fakeredis.FakeServer()
    monkeypatch.setattr(app, "make_client", lambda _s, **_kw: fakeredis.FakeRedis(server=server))
    monkeypatch.setattr(app, "SocketRunner", Runner)
    Runner.made = []
    rt = app.Runtime(settings(backoff_min_s=0.05, backoff_max_s=0.1))
    rt.writer.start()
    loop = threading.Thread(target=rt._loop, name="test-loop", daemon=True)
    loop.start()
    yield rt, fakeredis.FakeRedis(server=server, decode_responses=True)
    rt.request_stop()
    loop.join(2)
    rt.writer.stop(0.3)


def book_frame() -> bytes:
    ts = int(time.time() * 1000)
    return messages.encode(messages.book(TOKEN, MARKET, [("0.40", "10")], [("0.60", "12")], ts))


def test_the_loop_takes_a_token_from_desired_to_live_to_stale_and_back_to_a_socket(
    live: tuple[app.Runtime, fakeredis.FakeRedis],
) -> None:
    rt, r = live
    key = P + "quote:" + TOKEN
    rt.inbox.put(DesiredChanged(frozenset({TOKEN.encode()})))
    runner = wait_for(lambda: Runner.made and Runner.made[0], 3, what="a socket opened for the desired set")
    assert runner.started and rt.sockets == {runner.conn_id: runner}
    rt.inbox.put(SocketOpened(runner.conn_id))
    sub = wait_for(lambda: runner.sent and orjson.loads(runner.sent[0]), 3, what="the subscription sent")
    assert TOKEN in sub["assets_ids"]
    rt.inbox.put(FrameReceived(runner.conn_id, book_frame(), time.monotonic()))
    wait_for(lambda: r.hget(key, "status") == "live", 3, what="the quote live in Redis")
    assert (r.hget(key, "bid"), r.hget(key, "ask")) == ("0.40", "0.60")
    rt.inbox.put(SocketClosed(runner.conn_id, "eof"))
    wait_for(lambda: r.hget(key, "status") == "stale", 3, what="the quote stale once its socket is gone")
    again = wait_for(lambda: len(Runner.made) > 1 and Runner.made[1], 3, what="the socket reopened")
    assert runner.conn_id not in rt.sockets and again.started
    rt.inbox.put(ConnectFailed(again.conn_id, "refused"))
    wait_for(lambda: again.conn_id not in rt.sockets, 3, what="the refused socket dropped")
    wait_for(lambda: len(Runner.made) > 2, 3, what="another attempt after the refusal")


def test_a_stop_request_wakes_an_idle_loop_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop sleeps on its inbox between ticks; SIGTERM's handler posts a Wake so the stop does
    not wait for the next tick (stretched here to 10 s so only the Wake can end it in time)."""
    monkeypatch.setattr(app, "TICK_S", 10.0)
    monkeypatch.setattr(app, "make_client", lambda _s, **_kw: fakeredis.FakeRedis())
    rt = app.Runtime(settings())
    loop = threading.Thread(target=rt._loop, name="test-loop", daemon=True)
    loop.start()
    wait_for(lambda: rt._loop_at > 0 and loop.is_alive(), 2, what="the loop running")
    time.sleep(0.1)  # let it block on the empty inbox (nothing to wait for: it is idle by design)
    t0 = time.monotonic()
    rt.request_stop()
    loop.join(3)
    assert not loop.is_alive()
    assert time.monotonic() - t0 < 1.0, "the stop waited for the next tick"
