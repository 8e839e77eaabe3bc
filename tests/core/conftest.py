"""Every core test runs the engine strict: a status change not in the transition table raises."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sidecar.core import status


@pytest.fixture(autouse=True)
def strict_statuses(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(status, "STRICT", True)
    yield
