"""Fixtures of the simulator's socket tests: a started simulator and raw clients closed after."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
from pmsim import Simulator

from tests.sim.wire import Client


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=7) as s:
        yield s


@pytest.fixture
def connect(sim: Simulator) -> Iterator[Callable[[], Client]]:
    clients: list[Client] = []

    def make() -> Client:
        c = Client(sim.ws_url)
        clients.append(c)
        return c

    yield make
    for c in clients:
        with contextlib.suppress(Exception):
            c.close()
