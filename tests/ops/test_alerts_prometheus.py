"""The alert rules in a real Prometheus, scraping the real sidecar (issue 12, item 4).

Prometheus (Debian's package) runs on a free loopback port with a throwaway config and data dir,
scrapes the sidecar every second and evaluates a copy of deploy/prometheus/alerts.yml in which
every `for:` is 2 s. Then: the exchange refuses the sidecar (sockets dropped, handshakes
rejected) -> PmSidecarQuoteHealthLow and PmSidecarVenueDown fire; the exchange back -> they
resolve; the sidecar SIGKILLed -> PmSidecarDown fires; the sidecar restarted -> it resolves.
"""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from devkit.net import free_port
from devkit.procs import ChildProcess
from devkit.wait import wait_for
from tests.ops.prom_helpers import ALERTS, P, load_rules, require_binary, start_live_sidecar

FOR = "2s"
JOB = "pm-sidecar"


def short_for_rules(dest: Path) -> Path:
    """alerts.yml with every `for:` rewritten to FOR (the expressions untouched)."""
    text, n = re.subn(r"(?m)^(\s+for:\s*)\S+\s*$", rf"\g<1>{FOR}", ALERTS.read_text())
    assert n == len(load_rules()), "every alert must have exactly one for: line"
    dest.write_text(text)
    return dest


class Prometheus(ChildProcess):
    """A throwaway Prometheus server: one scrape job for the sidecar, rules evaluated every second."""

    def __init__(self, binary: str, tmp: Path, target_port: int) -> None:
        self.port = free_port()
        rules = short_for_rules(tmp / "rules.yml")
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        argv = [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        super().__init__(argv, dict(os.environ), tmp / "prometheus.log", cwd=tmp)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as resp:
            return json.loads(resp.read()) if path.startswith("/api/") else resp.status

    def ready(self) -> bool:
        assert self.proc.poll() is None, f"prometheus exited:\n{self.log()}"
        try:
            return self.get("/-/ready") == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def alerts(self) -> dict[str, str]:
        """Active alerts of our job: name -> state (pending or firing)."""
        data = self.get("/api/v1/alerts")["data"]["alerts"]
        return {a["labels"]["alertname"]: a["state"] for a in data if a["labels"].get("job") == JOB}

    def alert(self, name: str) -> dict[str, Any] | None:
        data = self.get("/api/v1/alerts")["data"]["alerts"]
        return next((a for a in data if a["labels"]["alertname"] == name), None)

    def last_evaluation(self) -> str:
        (group,) = self.get("/api/v1/rules")["data"]["groups"]
        return str(group["lastEvaluation"])

    def samples(self, query: str) -> float:
        result = self.get(f"/api/v1/query?query={urllib.parse.quote(query)}")["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0

    def up(self) -> float | None:
        result = self.get(f'/api/v1/query?query=up{{job="{JOB}"}}')["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.shutdown(signal.SIGTERM, 10)


def evaluated_since(prom: Prometheus, seen: str) -> Callable[[], bool]:
    return lambda: prom.last_evaluation() != seen


def all_status(r: Any, tokens: list[str], status: str) -> bool:
    return all(r.hget(P + "quote:" + t, "status") == status for t in tokens)


@pytest.fixture
def prometheus_binary() -> str:
    return require_binary("prometheus")


@pytest.fixture
def start_prometheus(
    prometheus_binary: str, tmp_path: Path, children: list[Any]
) -> Callable[[int], Prometheus]:
    def start(target_port: int) -> Prometheus:
        prom_dir = tmp_path / "prometheus"
        prom_dir.mkdir()
        server = Prometheus(prometheus_binary, prom_dir, target_port)
        children.append(server)
        wait_for(server.ready, 20, interval=0.1, what="prometheus /-/ready")
        return server

    return start


def test_short_for_copy_keeps_every_expression() -> None:
    # no Prometheus needed: the copy the end-to-end test loads is the real rules with short for:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        copy = load_rules(short_for_rules(Path(tmp) / "rules.yml"))
    original = load_rules()
    assert [(r.name, r.expr, r.labels, r.annotations) for r in copy] == [
        (r.name, r.expr, r.labels, r.annotations) for r in original
    ]
    assert {r.for_ for r in copy} == {FOR}


@pytest.mark.integration
def test_quote_health_and_down_alerts_fire_and_resolve_in_prometheus(
    redis_server, sim, sidecar, start_prometheus
) -> None:
    metrics_port = free_port()
    settings = {"metrics_port": metrics_port, "backoff_max_s": 1}
    proc, tokens = start_live_sidecar(redis_server, sim, sidecar, **settings)
    r = redis_server.client()
    prom = start_prometheus(metrics_port)
    wait_for(lambda: prom.up() == 1.0, 10, interval=0.2, what="prometheus scraping the sidecar")
    # A healthy sidecar: after 4 scrapes (longer than any for:) and two more rule evaluations,
    # not one of the alerts fires.
    wait_for(
        lambda: prom.samples(f'count_over_time(up{{job="{JOB}"}}[1m])') >= 4,
        10,
        interval=0.2,
        what="four scrapes",
    )
    for _ in range(2):
        wait_for(evaluated_since(prom, prom.last_evaluation()), 5, interval=0.1, what="a rule evaluation")
    assert {n: s for n, s in prom.alerts().items() if s == "firing"} == {}

    # The exchange refuses us: every socket dropped, every handshake rejected.
    sim.reject_handshakes(503, 10**9)
    sim.drop()
    wait_for(lambda: all_status(r, tokens, "stale"), 5, what="tokens stale")
    wait_for(
        lambda: prom.alerts().get("PmSidecarQuoteHealthLow") == "firing",
        15,
        interval=0.2,
        what="PmSidecarQuoteHealthLow firing",
    )
    alert = prom.alert("PmSidecarQuoteHealthLow")
    assert alert is not None
    assert alert["labels"]["severity"] == "page"
    assert float(alert["value"]) == 0.0  # nothing live
    assert alert["annotations"]["runbook_url"] == "docs/operations.md#pmsidecarquotehealthlow"
    assert "PmSidecarDown" not in prom.alerts()  # the process itself is fine
    # every socket refused for SIDECAR_VENUE_DOWN_AFTER_S (3 s): the venue is down, and says so
    wait_for(
        lambda: prom.alerts().get("PmSidecarVenueDown") == "firing",
        15,
        interval=0.2,
        what="PmSidecarVenueDown firing",
    )
    venue_alert = prom.alert("PmSidecarVenueDown")
    assert venue_alert is not None and venue_alert["labels"]["severity"] == "page"

    # The exchange is back: the sidecar reconnects (backoff at most 1 s), the alert resolves.
    sim.reject_handshakes(503, 0)
    wait_for(
        lambda: all(r.hget(P + "quote:" + t, "status") == "live" for t in tokens),
        10,
        what="tokens live again",
    )
    wait_for(
        lambda: "PmSidecarQuoteHealthLow" not in prom.alerts(),
        10,
        interval=0.2,
        what="PmSidecarQuoteHealthLow resolved",
    )
    wait_for(
        lambda: "PmSidecarVenueDown" not in prom.alerts(),
        10,
        interval=0.2,
        what="PmSidecarVenueDown resolved",
    )

    # The sidecar dies without a word.
    old_epoch = r.get(P + "sidecar:alive")
    assert old_epoch
    proc.terminate(signal.SIGKILL)
    wait_for(
        lambda: prom.alerts().get("PmSidecarDown") == "firing", 15, interval=0.2, what="PmSidecarDown firing"
    )
    alert = prom.alert("PmSidecarDown")
    assert alert is not None and alert["labels"]["instance"] == f"127.0.0.1:{metrics_port}"
    assert prom.up() == 0.0

    # Restarted on the same port (as systemd would): it resolves, and everything is quiet again.
    sidecar(**settings)
    wait_for(
        lambda: all(
            r.hget(P + "quote:" + t, "status") == "live" and r.hget(P + "quote:" + t, "epoch") != old_epoch
            for t in tokens
        ),
        10,
        what="live from the new run",
    )
    wait_for(lambda: "PmSidecarDown" not in prom.alerts(), 10, interval=0.2, what="PmSidecarDown resolved")
    assert prom.alerts().get("PmSidecarQuoteHealthLow") != "firing"
