"""SIDECAR_BBO_GRACE_S: how long a top disagreeing with the exchange's may settle (issue 9, item 4)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sidecar.config import Settings, describe_errors
from sidecar.core.engine import EngineConfig


def test_default_is_one_second_and_reaches_the_engine() -> None:
    s = Settings(_env_file=None)
    assert s.bbo_grace_s == 1.0
    assert EngineConfig.from_settings(s).bbo_grace_s == 1.0
    assert EngineConfig.from_settings(Settings(_env_file=None, bbo_grace_s=0.25)).bbo_grace_s == 0.25


def test_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_BBO_GRACE_S", "0.4")
    assert Settings(_env_file=None).bbo_grace_s == 0.4


@pytest.mark.parametrize("value", ["0", "-0.1", "1.01", "nan", "inf", "soon"])
def test_out_of_range_values_are_rejected_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SIDECAR_BBO_GRACE_S", value)
    with pytest.raises(ValidationError) as exc:
        Settings(_env_file=None)
    (line,) = describe_errors(exc.value)
    assert line.startswith("pm-sidecar: invalid configuration: SIDECAR_BBO_GRACE_S: ")
