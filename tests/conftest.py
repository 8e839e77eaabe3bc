"""Fixtures for integration tests: a real redis-server, the exchange simulator, the real sidecar.

A missing ``redis-server`` skips integration tests locally but fails them when
``SIDECAR_TEST_REQUIRE_REDIS=1`` (as in CI), so CI can never go green by skipping.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pmsim import Simulator

from tests.helpers import RedisServer, SidecarProcess, sidecar_env


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("SIDECAR_TEST_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is required (SIDECAR_TEST_REQUIRE_REDIS=1) but not installed")
        pytest.skip("redis-server not installed")
    server = RedisServer(binary, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(seed=7)
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def sidecar(
    redis_server: RedisServer, sim: Simulator, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., SidecarProcess]]:
    """Factory: ``sidecar(**setting_overrides)`` starts ``python -m sidecar run`` against them."""
    procs: list[SidecarProcess] = []

    def start(**overrides: Any) -> SidecarProcess:
        env = sidecar_env(redis_server.url, sim.ws_url, sim.rest_url, **overrides)
        proc = SidecarProcess(env, tmp_path / f"sidecar-{len(procs)}.log")
        procs.append(proc)
        return proc

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for proc in procs:
        proc.stop()
        if failed:
            print(f"---- sidecar log {proc.log_path} ----\n{proc.log()[-6000:]}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
