"""sidecar.shell.metrics on its own: every exported family matches docs/operations.md (name, type and
label names), and the HTTP endpoint listens on the configured address only.

The documented table is the contract dashboards and alerts are written against: a family renamed
or a label spelled differently in code (``reasons`` for ``reason``) breaks them silently.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from devkit.net import http_get
from sidecar.core.engine import Report
from sidecar.core.venue import VenueState
from sidecar.shell.metrics import COUNTERS, NS, Metrics, Snapshot, serve

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
ROW = re.compile(r"^\| `([a-z_]+)` \| (gauge|counter|histogram|info) \|([^|]*)\|")


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    """docs/operations.md metrics table: name (without the prefix) -> (type, label names)."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for line in DOCS.read_text().splitlines():
        m = ROW.match(line)
        if m:
            kind = "gauge" if m.group(2) == "info" else m.group(2)  # the text format has no info type
            out[m.group(1)] = (kind, frozenset(re.findall(r"`([a-z_]+)`", m.group(3))))
    return out


def full_snapshot() -> Snapshot:
    """A snapshot in which every labelled family has a sample, so its label names show."""
    stats = {(key, "x" if label else ""): 3 for key, (_, _, label) in COUNTERS.items()}
    report = Report(
        stats=stats, statuses={"live": 2, "pending": 1}, sockets={"open": 1}, socket_ages={0: 0.5}
    )
    return Snapshot(
        engine_report=report, redis_errors={"writer": 1}, version="0.1.0", epoch="e1", loop_at=0.0
    )


def exported(metrics: Metrics) -> dict[str, tuple[str, frozenset[str]]]:
    """What /metrics says: name (documented form) -> (type, label names of its samples)."""
    text = generate_latest(metrics.registry).decode()
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for family in text_string_to_metric_families(text):
        name = family.name.removeprefix(NS + "_")
        kind = family.type
        if name.endswith("_created"):
            continue  # prometheus_client's creation timestamps of the histograms, not ours
        if kind == "counter":
            name += "_total"
        labels = frozenset(k for s in family.samples for k in s.labels if k != "le")
        out[name] = (kind, labels)
    return out


@pytest.fixture
def metrics() -> Metrics:
    m = Metrics(full_snapshot)
    for hist in (
        m.confirm_latency,
        m.redis_write_latency,
        m.receive_to_redis,
        m.exchange_to_redis,
        m.flush_size,
    ):
        hist.observe(0.01)
    return m


def test_docs_table_is_parsed() -> None:
    docs = documented()
    assert docs["reconnects_total"] == ("counter", frozenset({"reason"}))
    assert docs["build_info"] == ("gauge", frozenset({"version", "epoch"}))
    assert len(docs) >= 35


def test_every_family_is_exported_as_documented(metrics: Metrics) -> None:
    assert exported(metrics) == documented()


def test_labelled_counter_values_land_under_their_label(metrics: Metrics) -> None:
    text = generate_latest(metrics.registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[(f"{NS}_reconnects_total", (("reason", "x"),))] == 3
    assert samples[(f"{NS}_connects_total", ())] == 3
    assert samples[(f"{NS}_tokens", (("status", "live"),))] == 2
    assert samples[(f"{NS}_socket_last_data_age_seconds", (("shard", "0"),))] == 0.5


# ---- the HTTP endpoint --------------------------------------------------------------------------


@pytest.fixture
def server(metrics: Metrics) -> Iterator[tuple[str, int]]:
    """Served on 127.0.0.2, a loopback address other than the usual one, on a free port."""
    health = (True, {"detail": "fine"})
    ready = (False, {"quote_health": 0.5})
    srv, thread = serve(metrics, "127.0.0.2", 0, lambda: health, lambda: ready)
    try:
        yield srv.server_address[0], srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def test_listens_on_the_configured_address_only(server: tuple[str, int]) -> None:
    addr, port = server
    assert addr == "127.0.0.2"
    status, body = http_get(f"http://127.0.0.2:{port}/metrics")
    assert status == 200
    assert f"{NS}_quote_health".encode() in body
    # Bound to 0.0.0.0 this would answer on every local address, 127.0.0.1 included.
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_health_endpoints_answer_with_status_and_json(server: tuple[str, int]) -> None:
    _, port = server
    status, body = http_get(f"http://127.0.0.2:{port}/healthz")
    assert (status, json.loads(body)) == (200, {"ok": True, "detail": "fine"})
    status, body = http_get(f"http://127.0.0.2:{port}/readyz")
    assert (status, json.loads(body)) == (503, {"ok": False, "quote_health": 0.5})
    assert http_get(f"http://127.0.0.2:{port}/nope")[0] == 404


def test_venue_state_is_one_for_the_current_state_only() -> None:
    report = Report(venue=VenueState.DOWN)
    m = Metrics(lambda: Snapshot(engine_report=report, redis_errors={}, version="v", epoch="e", loop_at=0.0))
    text = generate_latest(m.registry).decode()
    states = {
        s.labels["state"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == f"{NS}_venue_state"
        for s in f.samples
    }
    assert states == {"up": 0.0, "degraded": 0.0, "down": 1.0}
