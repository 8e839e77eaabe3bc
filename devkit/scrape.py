"""The sidecar's /metrics, parsed properly (never grepped) and summed by name and labels.

Every reader takes a port or anything with a ``metrics_port`` (a ``SidecarProcess``).
"""

from __future__ import annotations

import urllib.request
from typing import Protocol

from prometheus_client.parser import text_string_to_metric_families

from devkit.wait import wait_for

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs
Samples = dict[str, dict[Labels, float]]  # sample name -> {labels: value}


class HasMetrics(Protocol):
    @property
    def metrics_port(self) -> int: ...


Target = int | HasMetrics


def _port(target: Target) -> int:
    return target if isinstance(target, int) else target.metrics_port


def scrape_text(target: Target) -> str:
    """The exposition text as served."""
    with urllib.request.urlopen(f"http://127.0.0.1:{_port(target)}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def scrape(target: Target) -> Samples:
    """Sample name -> {sorted labels: value}."""
    return parse(scrape_text(target))


def families(target: Target) -> set[str]:
    """The metric families declared (also those without a sample yet)."""
    return {f.name for f in text_string_to_metric_families(scrape_text(target))}


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of a sample's values whose labels include ``labels`` (all of them without)."""
    want = set(labels.items())
    return sum(v for k, v in samples.get(name, {}).items() if want <= set(k))


def by_label(samples: Samples, name: str) -> dict[str, float]:
    """A sample's values keyed by its label values joined with commas ("-" for none)."""
    out: dict[str, float] = {}
    for labels, value in samples.get(name, {}).items():
        key = ",".join(v for _, v in labels) or "-"
        out[key] = out.get(key, 0.0) + value
    return out


def metric(target: Target, name: str, **labels: str) -> float:
    """One scrape, one sum: see :func:`total`."""
    return total(scrape(target), name, **labels)


def wait_metric(target: Target, name: str, at_least: float, timeout: float = 5.0, **labels: str) -> None:
    """Metrics come from a snapshot refreshed every second: wait for a value, do not race it."""
    wait_for(
        lambda: metric(target, name, **labels) >= at_least, timeout, interval=0.1, what=f"{name}{labels}"
    )


def hist_buckets(samples: Samples, name: str) -> list[tuple[float, float]]:
    """(le, cumulative count) of a histogram, in order."""
    return sorted((float(dict(k)["le"]), v) for k, v in samples.get(name + "_bucket", {}).items())


def hist_delta(before: Samples, after: Samples, name: str) -> list[tuple[float, float]]:
    """The histogram's buckets over the window between two scrapes."""
    b = dict(hist_buckets(before, name))
    return [(le, v - b.get(le, 0.0)) for le, v in hist_buckets(after, name)]


def hist_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus-style histogram_quantile: linear interpolation inside the bucket."""
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le
