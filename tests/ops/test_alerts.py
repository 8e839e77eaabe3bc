"""deploy/prometheus/alerts.yml, checked by promtool and against the real sidecar.

- ``promtool check rules`` and ``promtool test rules`` (deploy/prometheus/alerts_test.yml) pass;
- every alert has a `for:`, a severity, a summary and a runbook_url to its section of
  docs/operations.md, and the issue's conditions each have an alert;
- the unit tests can fail: for every alert, its expression replaced by one that never fires makes
  a firing case fail, and by one that always fires makes a quiet case fail;
- ``promtool check metrics`` accepts a real scrape of the running sidecar, and every metric the
  rules use is in it;
- pm_sidecar_alive_key_ttl_seconds (PmSidecarAliveKeyGone) follows the real key in Redis.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from devkit.scrape import scrape, scrape_text
from devkit.wait import wait_for
from tests.ops.prom_helpers import (
    ALERTS,
    ALERTS_TEST,
    OPERATIONS,
    P,
    exported_names,
    load_rules,
    require_binary,
    start_live_sidecar,
)

RULES = load_rules()
NAMES = [r.name for r in RULES]

# The issue's list (12, item 4) -> the alert that covers it.
REQUIRED = {
    "sidecar down": "PmSidecarDown",
    "alive key gone": "PmSidecarAliveKeyGone",
    "quote health below threshold": "PmSidecarQuoteHealthLow",
    "tokens stuck pending": "PmSidecarTokensStuckPending",
    "reconnect storm": "PmSidecarReconnectStorm",
    "zombie sockets replaced": "PmSidecarZombieSockets",
    "parse errors rising": "PmSidecarParseErrors",
    "Redis write errors": "PmSidecarRedisErrors",
    "Redis backlog": "PmSidecarRedisBacklog",
    "Redis unreachable": "PmSidecarRedisDown",
    "loop lag": "PmSidecarLoopWedged",
    "inbox lag": "PmSidecarInboxLag",
    "receive->Redis latency high": "PmSidecarReceiveToRedisSlow",
    "REST failures": "PmSidecarRestFailing",
}

NEVER = "vector(0) > 1"
# Fires from the first evaluation with the labels the cases use, so only a quiet case can catch it.
ALWAYS = 'label_replace(label_replace(vector(1), "job", "pm-sidecar", "", ""), "instance", "sc:9464", "", "")'


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_binary("promtool")


def run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)


# ---- static -------------------------------------------------------------------------------------


def test_promtool_check_rules(promtool: str) -> None:
    out = run([promtool, "check", "rules", str(ALERTS)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in out.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    out = run([promtool, "test", "rules", str(ALERTS_TEST)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_condition_of_the_issue_has_an_alert() -> None:
    missing = {cond: name for cond, name in REQUIRED.items() if name not in NAMES}
    assert missing == {}
    assert len(NAMES) == len(set(NAMES)), "alert names must be unique"


def runbook_sections() -> dict[str, str]:
    """The '### Name' sections under '## Alerts' in docs/operations.md: name -> body."""
    text = OPERATIONS.read_text()
    alerts = text.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    sections: dict[str, str] = {}
    for chunk in alerts.split("\n### ")[1:]:
        title, _, body = chunk.partition("\n")
        sections[title.strip()] = body.strip()
    return sections


@pytest.mark.parametrize("rule", RULES, ids=NAMES)
def test_alert_has_for_severity_summary_and_runbook(rule) -> None:
    assert rule.for_ is not None and re.fullmatch(r"\d+[smh]", rule.for_), rule.for_
    assert rule.labels.get("severity") in ("page", "ticket")
    assert rule.annotations.get("summary")
    assert rule.annotations.get("runbook_url") == f"docs/operations.md#{rule.name.lower()}"
    assert set(rule.annotations) == {"summary", "runbook_url"}  # what alerts_test.yml expects


def test_runbook_has_one_entry_per_alert() -> None:
    sections = runbook_sections()
    assert sorted(sections) == sorted(NAMES)
    for name, body in sections.items():
        # what it means, what to look at (a metric, a command), what to do
        assert len(body.split()) >= 40, f"{name}: runbook entry too short"
        assert "`" in body, f"{name}: runbook entry names nothing to look at"


def metric_names(expr: str) -> set[str]:
    """Every selector in the rules carries a matcher block (job at least): name{...}."""
    return set(re.findall(r"\b([a-z_]+)\{", expr))


@pytest.mark.parametrize("rule", RULES, ids=NAMES)
def test_every_selector_is_ours_and_scoped_to_the_job(rule) -> None:
    selectors = re.findall(r"\b([a-z_]+)\{([^}]*)\}", rule.expr)
    assert selectors
    for name, matchers in selectors:
        assert name == "up" or name.startswith("pm_sidecar_"), name
        assert 'job="pm-sidecar"' in matchers, (name, matchers)


def test_metric_names_are_parsed_from_expressions() -> None:
    by_name = {r.name: metric_names(r.expr) for r in RULES}
    assert by_name["PmSidecarDown"] == {"up"}
    assert by_name["PmSidecarQuoteHealthLow"] == {"pm_sidecar_quote_health", "pm_sidecar_desired_tokens"}
    assert by_name["PmSidecarReceiveToRedisSlow"] == {"pm_sidecar_receive_to_redis_seconds_bucket"}
    assert all(by_name.values())


# ---- the unit tests can fail ----------------------------------------------------------------------


def _cases(firing: bool) -> dict[str, list[dict[str, Any]]]:
    """alerts_test.yml's groups per alert, each reduced to that alert's checks: those expecting it
    to fire at some point (firing) or never (quiet)."""
    doc = yaml.safe_load(ALERTS_TEST.read_text())
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in NAMES}
    for group in doc["tests"]:
        for name in NAMES:
            checks = [c for c in group.get("alert_rule_test", []) if c["alertname"] == name]
            if checks and any(c.get("exp_alerts") for c in checks) == firing:
                out[name].append({**group, "alert_rule_test": checks})
    return out


def _run_mutated(promtool: str, tmp_path: Path, expr: str, cases: dict[str, list[dict[str, Any]]]) -> str:
    """Every alert's expression replaced by ``expr``; the cases run against that; promtool's report."""
    doc = yaml.safe_load(ALERTS.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule["expr"] = expr
    rules = tmp_path / "alerts.yml"
    rules.write_text(yaml.safe_dump(doc))
    tests = tmp_path / "alerts_test.yml"
    head = yaml.safe_load(ALERTS_TEST.read_text())
    groups = [g for name in NAMES for g in cases[name]]
    body = {"rule_files": [str(rules)], "evaluation_interval": head["evaluation_interval"], "tests": groups}
    tests.write_text(yaml.safe_dump(body))
    out = run([promtool, "test", "rules", str(tests)])
    assert out.returncode != 0
    return out.stdout + out.stderr


def _failed_checks(report: str) -> list[tuple[str, str]]:
    """(alertname, the failure text) for each failed check in a promtool report."""
    return [(block.split(",", 1)[0], block) for block in report.split("alertname: ")[1:]]


def test_every_alert_has_firing_and_quiet_cases() -> None:
    for firing in (True, False):
        cases = _cases(firing)
        assert [n for n in NAMES if not cases[n]] == [], (
            f"alerts without {'firing' if firing else 'quiet'} cases"
        )


def test_firing_cases_fail_when_no_alert_ever_fires(promtool: str, tmp_path: Path) -> None:
    report = _run_mutated(promtool, tmp_path, NEVER, _cases(firing=True))
    caught = {name for name, text in _failed_checks(report) if "got:[]" in text}
    assert sorted(set(NAMES) - caught) == []


def test_quiet_cases_fail_when_every_alert_always_fires(promtool: str, tmp_path: Path) -> None:
    report = _run_mutated(promtool, tmp_path, ALWAYS, _cases(firing=False))
    caught = {name for name, text in _failed_checks(report) if "exp:[]" in text}
    assert sorted(set(NAMES) - caught) == []


# ---- against the real sidecar ---------------------------------------------------------------------


@pytest.mark.integration
def test_promtool_check_metrics_accepts_a_real_scrape_with_every_alert_metric(
    promtool: str, redis_server, sim, sidecar
) -> None:
    proc, _ = start_live_sidecar(redis_server, sim, sidecar)
    # the histograms have observations once quotes were written
    wait_for(
        lambda: scrape(proc).get("pm_sidecar_receive_to_redis_seconds_count", {}).get((), 0) > 0,
        5,
        what="a receive->Redis observation",
    )
    text = scrape_text(proc)
    out = run([promtool, "check", "metrics"], stdin=text)
    assert (out.returncode, out.stdout + out.stderr) == (0, "")
    names = exported_names(text)
    used = set().union(*(metric_names(r.expr) for r in RULES)) - {"up"}
    assert sorted(used - names) == []
    assert "pm_sidecar_alive_key_ttl_seconds" in names


@pytest.mark.integration
def test_alive_key_ttl_metric_follows_the_key_in_redis(redis_server, sim, sidecar) -> None:
    ttl = 2
    proc, _ = start_live_sidecar(redis_server, sim, sidecar, alive_ttl_s=ttl)
    r = redis_server.client()

    def metric() -> float:
        return scrape(proc)["pm_sidecar_alive_key_ttl_seconds"][()]

    wait_for(lambda: metric() > 0, 2, what="the first alive-key write")
    key = P + "sidecar:alive"
    gaps: list[float] = []

    def compare() -> bool:
        """Expiry as the metric says vs as Redis says, when no heartbeat renewed the key between
        the two PTTL reads around the scrape."""
        t0, p0 = time.monotonic(), r.pttl(key) / 1000.0
        a, m, b = time.monotonic(), metric(), time.monotonic()
        t2, p2 = time.monotonic(), r.pttl(key) / 1000.0
        assert 0 < m <= ttl
        if abs((t0 + p0) - (t2 + p2)) < 0.02:
            gaps.append((a + b) / 2 + m - (t0 + p0))
        return len(gaps) >= 3

    wait_for(compare, 5, interval=0.1, what="three scrapes between heartbeats")
    assert all(abs(g) < 0.1 for g in gaps), gaps
    # Redis gone: nothing renews the key; the metric reaches 0 when the key expires (within the
    # TTL of the last write, plus the second the snapshot may lag), not at once.
    redis_server.stop()
    gone_at = time.monotonic()
    wait_for(lambda: metric() == 0.0, ttl + 1.5, what="alive key TTL metric to reach 0")
    assert time.monotonic() - gone_at >= 0.5, "the key was written < 1 s ago: it cannot be gone yet"
    redis_server.start()
    # the writer reconnects with backoff (at most 3.2 s after ~4 s of failures) and rewrites it
    wait_for(lambda: metric() > 0, 8, what="alive key TTL metric back after Redis returned")
    assert r.exists(P + "sidecar:alive")
