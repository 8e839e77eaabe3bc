"""Helpers for the alert and dashboard tests: the Prometheus tools, the rules, a real scrape.

``promtool`` and ``prometheus`` come from Debian's ``prometheus`` package. Locally a missing one
skips its tests; with ``SIDECAR_TEST_REQUIRE_PROMETHEUS=1`` (as in CI) it fails them, so CI can
never go green by skipping.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from pmsim import Simulator
from prometheus_client.parser import text_string_to_metric_families

from devkit import REPO
from devkit.procs import SidecarProcess
from devkit.redis_server import RedisServer
from tests.integration.common import start_live

PROM_DIR = REPO / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
OPERATIONS = REPO / "docs" / "operations.md"
P = "pm:"


def require_binary(name: str) -> str:
    """Path of a Prometheus tool, or skip (fail when SIDECAR_TEST_REQUIRE_PROMETHEUS=1)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("SIDECAR_TEST_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"{name} is required (SIDECAR_TEST_REQUIRE_PROMETHEUS=1) but not installed")
        pytest.skip(f"{name} not installed (Debian: apt-get install prometheus)")
    return path


@dataclass(frozen=True)
class AlertRule:
    name: str
    expr: str
    for_: str | None
    labels: dict[str, str]
    annotations: dict[str, str]


def load_rules(path: Path = ALERTS) -> list[AlertRule]:
    doc = yaml.safe_load(path.read_text())
    return [
        AlertRule(
            name=r["alert"],
            expr=str(r["expr"]),
            for_=r.get("for"),
            labels=dict(r.get("labels") or {}),
            annotations=dict(r.get("annotations") or {}),
        )
        for group in doc["groups"]
        for r in group["rules"]
        if "alert" in r
    ]


def exported_names(text: str) -> set[str]:
    """Every series name a query can select from this scrape: the samples present, and for each
    declared family the names its samples take (a labelled counter with no value yet is declared
    by HELP/TYPE but has no sample)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def start_live_sidecar(
    redis_server: RedisServer, sim: Simulator, sidecar: Callable[..., SidecarProcess], **overrides: Any
) -> tuple[SidecarProcess, list[str]]:
    """One market's tokens desired, the real sidecar started, every token live in Redis."""
    tokens, _, proc = start_live(redis_server, sim, sidecar, 1, timeout=15, **overrides)
    return proc, tokens
