"""deploy/grafana: the dashboard's queries use only metrics the real sidecar exports, parse as
PromQL, and reach the provisioned datasource by its pinned uid.

A metric renamed in sidecar/metrics.py (or misspelt in the JSON) would leave a panel silently
empty; this is what catches it.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from devkit import REPO
from devkit.scrape import scrape_text
from tests.ops.prom_helpers import exported_names, require_binary, start_live_sidecar

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "pm-sidecar.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "pm-sidecar.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "pm-sidecar.yml"
METRIC = re.compile(r"\b(pm_sidecar_[a-z0-9_]+|up)\b(?=\s*[{\[)])")
# Grafana's variables, replaced by something PromQL accepts for the syntax check
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$instance": ".*"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # panels nested in collapsed rows
    return out


def queries() -> list[str]:
    exprs = [t["expr"] for p in panels() for t in p.get("targets", [])]
    variables = dashboard().get("templating", {}).get("list", [])
    exprs += [re.sub(r"^label_values\((.*), *\w+\)$", r"\1", v["definition"]) for v in variables]
    return exprs


def metrics_used() -> set[str]:
    return {name for expr in queries() for name in METRIC.findall(expr)}


def test_queries_are_parsed() -> None:
    used = metrics_used()
    assert len(queries()) >= 30
    # one of each shape: a gauge, a counter under rate(), a histogram under histogram_quantile()
    assert {"pm_sidecar_quote_health", "pm_sidecar_reconnects_total"} <= used
    assert "pm_sidecar_receive_to_redis_seconds_bucket" in used
    assert "pm_sidecar_build_info" in used  # the instance variable's query


def test_uids_are_pinned_and_every_query_uses_the_provisioned_datasource() -> None:
    dash = dashboard()
    assert dash["uid"] == "pm-sidecar"
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert source["type"] == "prometheus"
    want = {"type": "prometheus", "uid": source["uid"]}
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == want, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == want, panel["title"]
            assert 'job="pm-sidecar"' in target["expr"], (panel["title"], target["expr"])
    for variable in dash["templating"]["list"]:
        assert variable["datasource"] == want
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_dashboard_provider_points_where_the_readme_installs_the_json() -> None:
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert f"{path}/{DASHBOARD.name}" in (GRAFANA / "README.md").read_text()


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    rules = []
    for i, expr in enumerate(queries()):
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"grafana_query:{i}", "expr": expr})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.integration
def test_every_metric_the_dashboard_queries_is_exported_by_the_running_sidecar(
    redis_server, sim, sidecar
) -> None:
    proc, _ = start_live_sidecar(redis_server, sim, sidecar)
    names = exported_names(scrape_text(proc)) | {"up"}  # up: Prometheus's own
    assert sorted(metrics_used() - names) == []
