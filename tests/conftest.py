"""Fixtures for integration tests: a real redis-server, the exchange simulator, the real sidecar.

The harness itself is the dev kit (devkit/); these fixtures only tie it to pytest. A missing
``redis-server`` skips integration tests locally but fails them when ``SIDECAR_TEST_REQUIRE_REDIS=1``
(as in CI), so CI can never go green by skipping.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from pmsim import Simulator
from pmsim.tls import SelfSigned, make_self_signed

from devkit.procs import BridgeProcess, SidecarProcess, sidecar_env
from devkit.redis_server import RedisServer
from devkit.simfix import tls_simulator, trust


class Child(Protocol):
    log_path: Path

    def log(self) -> str: ...

    def stop(self) -> Any: ...


@pytest.fixture
def children(request: pytest.FixtureRequest) -> Iterator[list[Child]]:
    """Processes a test started: stopped at teardown, their log tails printed if the test failed."""
    started: list[Child] = []
    yield started
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for child in started:
        child.stop()
        if failed:
            print(f"---- log {child.log_path} ----\n{child.log()[-6000:]}")


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
def cert(tmp_path: Path) -> SelfSigned:
    """A self-signed certificate for 127.0.0.1, its own CA."""
    return make_self_signed(tmp_path / "tls")


@pytest.fixture
def tls_sim(cert: SelfSigned, request: pytest.FixtureRequest) -> Iterator[Simulator]:
    """The simulator serving wss:// with ``cert``; seeded by the test module's ``TLS_SIM_SEED``."""
    with tls_simulator(cert, seed=getattr(request.module, "TLS_SIM_SEED", 7)) as simulator:
        yield simulator


@pytest.fixture
def sidecar(
    redis_server: RedisServer, sim: Simulator, tmp_path: Path, children: list[Child]
) -> Callable[..., SidecarProcess]:
    """Factory: ``sidecar(**setting_overrides)`` starts ``python -m sidecar run`` against them."""

    def start(**overrides: Any) -> SidecarProcess:
        env = sidecar_env(redis_server.url, sim.ws_url, sim.rest_url, **overrides)
        proc = SidecarProcess(env, tmp_path / f"sidecar-{len(children)}.log")
        children.append(proc)
        return proc

    return start


@pytest.fixture
def tls_sidecar(
    redis_server: RedisServer, tls_sim: Simulator, cert: SelfSigned, tmp_path: Path, children: list[Child]
) -> Callable[..., SidecarProcess]:
    """Factory: ``tls_sidecar(**setting_overrides)``, the sidecar against ``tls_sim`` over wss://,
    trusting ``cert``."""

    def start(**overrides: Any) -> SidecarProcess:
        env = trust(sidecar_env(redis_server.url, tls_sim.ws_url, tls_sim.rest_url, **overrides), cert)
        proc = SidecarProcess(env, tmp_path / f"sidecar-{len(children)}.log")
        children.append(proc)
        return proc

    return start


@pytest.fixture
def bridge(redis_server: RedisServer, tmp_path: Path, children: list[Child]) -> Callable[..., BridgeProcess]:
    """Factory: ``bridge(heartbeat_s)`` starts ``python -m sidecar bridge`` writing ws_cache.json,
    with nothing but the Redis URL in its environment."""

    def start(heartbeat_s: float = 30.0) -> BridgeProcess:
        env = {"SIDECAR_REDIS_URL": redis_server.url, "PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}
        proc = BridgeProcess(
            env,
            tmp_path / "ws_cache.json",
            tmp_path / f"bridge-{len(children)}.log",
            ("--heartbeat-s", str(heartbeat_s)),
        )
        children.append(proc)
        return proc

    return start


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
