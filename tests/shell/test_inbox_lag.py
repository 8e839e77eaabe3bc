"""updated_at is the frame's receive time, and the receive -> processed lag is a metric (issue 9,
item 9). The runtime's frame hand-off is exercised directly, without sockets or Redis."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import generate_latest

from sidecar.config import Settings
from sidecar.shell.app import Runtime
from sidecar.shell.inbox import FrameReceived
from sidecar.shell.metrics import Metrics, Snapshot


class FrameRecorder:
    """Stands in for the engine: records what the runtime hands it."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, Any, float, int]] = []

    def on_frame(self, conn_id: int, data: Any, now: float, wall_ms: int) -> None:
        self.calls.append((conn_id, data, now, wall_ms))


def runtime() -> Runtime:
    return Runtime(Settings(_env_file=None, redis_url="redis://127.0.0.1:1/0", metrics_port=0))


def test_frames_reach_the_engine_with_their_receive_time_not_the_loop_time() -> None:
    rt = runtime()
    rec = FrameRecorder()
    rt.engine = rec  # type: ignore[assignment]
    received = time.monotonic() - 2.0  # the loop gets to the frame 2 s after the reader stamped it
    loop_wall_ms = int(time.time() * 1000)
    rt._handle(FrameReceived(7, b"{}", received), loop_wall_ms)
    ((conn_id, data, now, wall_ms),) = rec.calls
    assert (conn_id, data, now) == (7, b"{}", received)
    assert abs(wall_ms - (loop_wall_ms - 2000)) <= 20  # updated_at is when it arrived


def test_inbox_lag_is_the_worst_lag_since_the_last_summary() -> None:
    rt = runtime()
    rt.engine.on_frame = lambda *a: None  # type: ignore[method-assign]
    wall_ms = int(time.time() * 1000)
    rt._handle(FrameReceived(1, b"{}", time.monotonic() - 0.5), wall_ms)
    rt._handle(FrameReceived(1, b"{}", time.monotonic() - 1.5), wall_ms)
    rt._handle(FrameReceived(1, b"{}", time.monotonic() - 0.2), wall_ms)
    rt._publish_summary(time.monotonic(), wall_ms)
    assert 1.5 <= rt._snapshot.inbox_lag < 1.6
    rt._publish_summary(time.monotonic(), wall_ms)  # nothing since: back to zero
    assert rt._snapshot.inbox_lag == 0.0


def test_inbox_lag_gauge_is_exported() -> None:
    text = generate_latest(Metrics(lambda: Snapshot(inbox_lag=1.25)).registry).decode()
    assert "pm_sidecar_inbox_lag_seconds 1.25\n" in text
    text = generate_latest(Metrics(lambda: Snapshot()).registry).decode()
    assert "pm_sidecar_inbox_lag_seconds 0.0\n" in text
