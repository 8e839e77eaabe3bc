"""Prometheus metrics and the /metrics, /healthz, /readyz endpoint (one port, 127.0.0.1 default).

Engine counters are read at scrape time from a typed :class:`Snapshot` (the engine's
:class:`~sidecar.core.report.Report` and the shell's own figures) the runtime refreshes every
second, so the hot path never touches a metrics lock. Histograms are observed by the shell where the time
is measured. No per-token labels: cardinality stays bounded however many tokens are desired.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from sidecar.core.engine import Report
from sidecar.core.stats import Stat
from sidecar.core.status import LIVE, PENDING
from sidecar.core.venue import VenueState

log = logging.getLogger("sidecar.shell.metrics")

NS = "pm_sidecar"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What /metrics shows, refreshed by the runtime once a second (the hot path never touches a
    metrics lock). ``loop_at`` None: the loop has not run yet (no lag to show)."""

    engine_report: Report | None = None  # None until the engine's first report
    loop_at: float | None = None
    version: str = ""
    epoch: str = ""
    inbox_lag: float = 0.0  # worst frame receive -> processed delay over the last second
    redis_up: bool = False
    backlog: int = 0
    redis_errors: dict[str, int] = field(default_factory=dict)  # by component

    @property
    def report(self) -> Report:
        """The engine's report, or an empty one (no tokens, health 1.0) before the first."""
        return self.engine_report if self.engine_report is not None else _NO_REPORT


_NO_REPORT = Report()

# engine counter -> (metric name, help, label name or None)
COUNTERS: dict[Stat, tuple[str, str, str | None]] = {
    Stat.RECONNECTS: ("reconnects", "Socket reconnects and replacements by reason.", "reason"),
    Stat.CONNECTS: ("connects", "Sockets that completed the WebSocket handshake.", None),
    Stat.CONNECT_FAILURES: ("connect_failures", "Failed socket handshakes by reason.", "reason"),
    Stat.FRAMES: ("frames", "Frames received by kind.", "kind"),
    Stat.EVENTS: ("events", "Market events received by event_type (filtered: not ours).", "type"),
    Stat.PARSE_ERRORS: ("parse_errors", "Malformed frames or events by reason.", "reason"),
    Stat.CONTROL: ("control_frames", "Non-JSON text frames by text.", "text"),
    Stat.SUBSCRIBES: ("subscribes", "Token subscriptions sent.", None),
    Stat.REDRIVES: ("redrives", "Token unsubscribe+subscribe redrives by reason.", "reason"),
    Stat.MOVES: ("token_moves", "Tokens moved to a fresh socket after failing to confirm.", None),
    Stat.PROBES: ("silence_probes", "Silence probes of quiet sockets by result.", "result"),
    Stat.BBO_MISMATCH: (
        "bbo_mismatches",
        "Server best_bid/best_ask disagreeing with the local book for longer than the grace.",
        None,
    ),
    Stat.BBO_SETTLED: (
        "bbo_settled",
        "Disagreements with the server's best prices (or crossed books) that settled within the grace.",
        None,
    ),
    Stat.TICK_SIZE_CHANGE: ("tick_size_changes", "tick_size_change events by outcome.", "result"),
    Stat.REST_RESEED: ("rest_reseeds", "REST books for resyncing tokens by result.", "result"),
    Stat.CROSSED_BOOKS: ("crossed_books", "Updates that left a book crossed.", None),
    Stat.REST: ("rest_requests", "REST book requests by result.", "result"),
    Stat.REST_CONFIRM: ("rest_confirms", "Quiet-token REST confirmations by result.", "result"),
    Stat.MARKET_POLLS: ("market_polls", "Markets asked about over REST (market state) by result.", "result"),
}


class EngineCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot], alive_until: Callable[[], float | None]) -> None:
        self._snapshot = snapshot
        self._alive_until = alive_until

    def collect(self) -> Iterable[Any]:
        snap = self._snapshot()
        report = snap.report
        stats = report.stats
        families: dict[Stat, CounterMetricFamily] = {}
        for key, (name, doc, label) in COUNTERS.items():
            families[key] = CounterMetricFamily(f"{NS}_{name}", doc, labels=[label] if label else [])
        for key, (_, _, label) in COUNTERS.items():
            if label is None and (key, "") not in stats:
                families[key].add_metric([], 0)  # unlabelled counters always have a sample
        for (key, label_value), value in stats.items():
            fam = families.get(key)
            if fam is None:
                continue  # not exported (Stat.ILLEGAL_TRANSITIONS: a bug, logged)
            fam.add_metric([label_value] if COUNTERS[key][2] else [], value)
        # the "unknown" event type has its own family too, for alerting
        unknown = CounterMetricFamily(f"{NS}_unknown_events", "Events with an unknown event_type.")
        unknown.add_metric([], stats.get((Stat.EVENTS, "unknown"), 0))
        yield from families.values()
        yield unknown

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{NS}_{name}", doc, value=value)

        tokens = GaugeMetricFamily(f"{NS}_tokens", "Desired tokens by quote status.", labels=["status"])
        for status, count in report.statuses.items():
            tokens.add_metric([status], count)
        yield tokens
        sockets = GaugeMetricFamily(f"{NS}_sockets", "Sockets by state.", labels=["state"])
        for state, count in report.sockets.items():
            sockets.add_metric([state], count)
        yield sockets
        venue = GaugeMetricFamily(
            f"{NS}_venue_state", "1 for the venue's state (up, degraded, down), else 0.", labels=["state"]
        )
        for state in VenueState:
            venue.add_metric([state.value], 1.0 if report.venue is state else 0.0)
        yield venue
        yield gauge("desired_tokens", "Valid tokens in the desired set (after the cap).", report.desired)
        yield gauge("live_tokens", "Tokens whose quote is live.", report.statuses.get(LIVE, 0))
        yield gauge(
            "pending_tokens",
            "Tokens subscribed but not yet confirmed by data.",
            report.statuses.get(PENDING, 0),
        )
        yield gauge(
            "no_data_tokens",
            "Pending tokens that never delivered data despite redrives and a move (retried slowly).",
            report.no_data,
        )
        yield gauge(
            "quote_health",
            "Share of desired tokens with a live (or resolved) quote.",
            report.quote_health,
        )
        yield gauge(
            "desired_invalid_entries",
            "Desired-set entries that are not token ids.",
            report.invalid_desired,
        )
        yield gauge(
            "desired_over_cap", "Valid desired tokens ignored over SIDECAR_MAX_TOKENS.", report.capped_desired
        )
        yield gauge(
            "oldest_live_quote_age_seconds",
            "Age of the oldest exchange confirmation among live quotes.",
            report.oldest_live_age,
        )
        yield gauge(
            "redis_up", "1 when the quote writer is connected to Redis.", 1.0 if snap.redis_up else 0.0
        )
        yield gauge("writer_backlog_tokens", "Tokens waiting to be written to Redis.", snap.backlog)
        yield gauge(
            "inbox_lag_seconds",
            "Worst frame receive-to-processed delay in the engine loop over the last second.",
            snap.inbox_lag,
        )
        yield gauge(
            "loop_lag_seconds",
            "Seconds since the engine loop last ran.",
            0.0 if snap.loop_at is None else max(0.0, time.monotonic() - snap.loop_at),
        )
        # Read from the writer at scrape time, not from the 1 s snapshot: a second-old view would
        # dip to 0 before every heartbeat with a short SIDECAR_ALIVE_TTL_S.
        alive_until = self._alive_until()
        yield gauge(
            "alive_key_ttl_seconds",
            "Seconds until the alive key this process last wrote expires (0: gone or never written).",
            0.0 if alive_until is None else max(0.0, alive_until - time.monotonic()),
        )
        ages = GaugeMetricFamily(
            f"{NS}_socket_last_data_age_seconds",
            "Seconds since market data on each shard's socket.",
            labels=["shard"],
        )
        for shard_id, age in report.socket_ages.items():
            ages.add_metric([str(shard_id)], age)
        yield ages
        redis_errors = CounterMetricFamily(
            f"{NS}_redis_errors", "Redis errors by component.", labels=["component"]
        )
        for component, count in snap.redis_errors.items():
            redis_errors.add_metric([component], count)
        yield redis_errors
        info = InfoMetricFamily(f"{NS}_build", "Version and run epoch.")
        info.add_metric([], {"version": snap.version, "epoch": snap.epoch})
        yield info


class Metrics:
    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        alive_until: Callable[[], float | None] = lambda: None,
    ) -> None:
        """``alive_until``: monotonic time the alive key last written expires (None: not written)."""
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(EngineCollector(snapshot, alive_until))
        self.confirm_latency = Histogram(
            f"{NS}_confirm_latency_seconds",
            "Subscribe sent to first event for the token.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80),
            registry=self.registry,
        )
        self.redis_write_latency = Histogram(
            f"{NS}_redis_write_latency_seconds",
            "Duration of one pipelined quote flush.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.receive_to_redis = Histogram(
            f"{NS}_receive_to_redis_seconds",
            "Frame received on the socket to quote written and published.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.exchange_to_redis = Histogram(
            f"{NS}_exchange_to_redis_seconds",
            "Exchange event timestamp to quote written (includes clock skew).",
            buckets=(*LATENCY_BUCKETS, 30.0, 60.0),
            registry=self.registry,
        )
        self.flush_size = Histogram(
            f"{NS}_redis_flush_tokens",
            "Token writes per pipelined flush.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
            registry=self.registry,
        )


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(
    metrics: Metrics,
    addr: str,
    port: int,
    health: Callable[[], tuple[bool, dict[str, Any]]],
    ready: Callable[[], tuple[bool, dict[str, Any]]],
) -> tuple[_Server, threading.Thread]:
    prom_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok, detail = (health if path == "/healthz" else ready)()
            body = json.dumps({"ok": ok, **detail}).encode()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        if path in ("/metrics", "/"):
            return prom_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    server = make_server(addr, port, app, _Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, thread
