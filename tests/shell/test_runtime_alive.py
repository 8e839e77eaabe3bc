"""sidecar.shell.app.Runtime: the alive key follows the loop's own heartbeat (fakeredis, no network).

The loop runs in a thread with its Redis clients on a fake server. Then the loop wedges while
Redis goes away and comes back, so the writer reconnects and rewrites everything: the alive key
must still be gone within SIDECAR_ALIVE_TTL_S of the loop's last heartbeat.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest

import sidecar.shell.app as app
from devkit.wait import wait_for
from sidecar.config import Settings

P = "pm:"
ALIVE = P + "sidecar:alive"
TTL = 2


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeServer:
    fake = fakeredis.FakeServer()

    def make_client(_settings: Settings, **_: Any) -> fakeredis.FakeRedis:
        return fakeredis.FakeRedis(server=fake)

    monkeypatch.setattr(app, "make_client", make_client)
    return fake


@pytest.fixture
def runtime(server: fakeredis.FakeServer) -> Iterator[app.Runtime]:
    settings = Settings(_env_file=None, alive_ttl_s=TTL, rest_enabled=False, write_flush_ms=0)
    rt = app.Runtime(settings)
    rt.writer.start()
    loop = threading.Thread(target=rt._loop, daemon=True)
    loop.start()
    yield rt
    rt._stop.set()
    loop.join(2)
    rt.writer.stop(0.3)


def test_a_wedged_loop_loses_the_alive_key_even_when_the_writer_rewrites(
    server: fakeredis.FakeServer, runtime: app.Runtime
) -> None:
    r = fakeredis.FakeRedis(server=server, decode_responses=True)
    wait_for(lambda: r.get(ALIVE) == runtime.epoch, 3, what="the loop's heartbeat setting the alive key")
    wedge = threading.Event()
    beats: list[float] = []
    real_submit = runtime.writer.submit_summary

    def record(summary: dict[str, str], *args: Any, **kwargs: Any) -> None:
        beats.append(time.monotonic())
        real_submit(summary, *args, **kwargs)

    runtime.writer.submit_summary = record  # type: ignore[method-assign]
    real_tick = runtime.engine.tick

    def tick(now: float, wall_ms: int) -> None:
        wedge.wait(30)  # the loop is stuck here until the test ends
        real_tick(now, wall_ms)

    wait_for(lambda: beats, 3, what="a heartbeat")
    server.connected = False  # Redis goes away: the loop's next summaries fail...
    wait_for(lambda: runtime.writer.errors >= 1, 3, what="a failed summary write")
    runtime.engine.tick = tick  # type: ignore[method-assign]  # ...and the loop wedges
    wait_for(lambda: time.monotonic() - runtime._loop_at > 0.3, 3, what="the loop wedged")
    last_beat = beats[-1]
    try:
        while time.monotonic() < last_beat + 1.0:  # the outage outlasts half the TTL
            time.sleep(0.02)
        flushes = runtime.writer.flushes
        server.connected = True  # Redis is back: the writer rewrites, the old summary included
        wait_for(lambda: runtime.writer.flushes > flushes, 3, what="the writer's rewrite")
        deadline = last_beat + TTL + 0.2
        wait_for(lambda: not r.exists(ALIVE), max(0.05, deadline - time.monotonic()), what="alive gone")
        assert beats[-1] == last_beat, "the wedged loop produced a heartbeat"
    finally:
        wedge.set()
