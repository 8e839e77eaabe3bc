"""Prometheus metrics and the /metrics, /healthz, /readyz endpoint (one port, 127.0.0.1 default).

Engine counters are read at scrape time from a snapshot the runtime refreshes every second, so
the hot path never touches a metrics lock. Histograms are observed by the shell where the time
is measured. No per-token labels: cardinality stays bounded however many tokens are desired.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("sidecar.shell.metrics")

NS = "pm_sidecar"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# engine stats key -> (metric name, help, label name or None)
COUNTERS: dict[str, tuple[str, str, str | None]] = {
    "reconnects": ("reconnects", "Socket reconnects and replacements by reason.", "reason"),
    "connects": ("connects", "Sockets that completed the WebSocket handshake.", None),
    "connect_failures": ("connect_failures", "Failed socket handshakes by reason.", "reason"),
    "frames": ("frames", "Frames received by kind.", "kind"),
    "events": ("events", "Market events received by event_type (filtered: not ours).", "type"),
    "parse_errors": ("parse_errors", "Malformed frames or events by reason.", "reason"),
    "control": ("control_frames", "Non-JSON text frames by text.", "text"),
    "subscribes": ("subscribes", "Token subscriptions sent.", None),
    "redrives": ("redrives", "Token unsubscribe+subscribe redrives by reason.", "reason"),
    "moves": ("token_moves", "Tokens moved to a fresh socket after failing to confirm.", None),
    "probes": ("silence_probes", "Silence probes of quiet sockets by result.", "result"),
    "bbo_mismatch": (
        "bbo_mismatches",
        "Server best_bid/best_ask disagreeing with the local book for longer than the grace.",
        None,
    ),
    "bbo_settled": (
        "bbo_settled",
        "Disagreements with the server's best prices (or crossed books) that settled within the grace.",
        None,
    ),
    "tick_size_change": ("tick_size_changes", "tick_size_change events by outcome.", "result"),
    "rest_reseed": ("rest_reseeds", "REST books for resyncing tokens by result.", "result"),
    "crossed_books": ("crossed_books", "Updates that left a book crossed.", None),
    "rest": ("rest_requests", "REST book requests by result.", "result"),
    "rest_confirm": ("rest_confirms", "Quiet-token REST confirmations by result.", "result"),
}


class EngineCollector(Collector):
    def __init__(
        self, snapshot: Callable[[], dict[str, Any]], alive_until: Callable[[], float | None]
    ) -> None:
        self._snapshot = snapshot
        self._alive_until = alive_until

    def collect(self) -> Iterable[Any]:
        snap = self._snapshot()
        stats: dict[tuple[str, str], int] = snap.get("stats", {})
        families: dict[str, CounterMetricFamily] = {}
        for key, (name, doc, label) in COUNTERS.items():
            families[key] = CounterMetricFamily(f"{NS}_{name}", doc, labels=[label] if label else [])
        for key, (_, _, label) in COUNTERS.items():
            if label is None and (key, "") not in stats:
                families[key].add_metric([], 0)  # unlabelled counters always have a sample
        for (key, label_value), value in stats.items():
            fam = families.get(key)
            if fam is None:
                continue
            fam.add_metric([label_value] if COUNTERS[key][2] else [], value)
        # the "unknown" event type has its own family too, for alerting
        unknown = CounterMetricFamily(f"{NS}_unknown_events", "Events with an unknown event_type.")
        unknown.add_metric([], stats.get(("events", "unknown"), 0))
        yield from families.values()
        yield unknown

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{NS}_{name}", doc, value=value)

        tokens = GaugeMetricFamily(f"{NS}_tokens", "Desired tokens by quote status.", labels=["status"])
        for status, count in snap.get("statuses", {}).items():
            tokens.add_metric([status], count)
        yield tokens
        sockets = GaugeMetricFamily(f"{NS}_sockets", "Sockets by state.", labels=["state"])
        for state, count in snap.get("sockets", {}).items():
            sockets.add_metric([state], count)
        yield sockets
        yield gauge(
            "desired_tokens", "Valid tokens in the desired set (after the cap).", snap.get("desired", 0)
        )
        yield gauge("live_tokens", "Tokens whose quote is live.", snap.get("live", 0))
        yield gauge(
            "pending_tokens", "Tokens subscribed but not yet confirmed by data.", snap.get("pending", 0)
        )
        yield gauge(
            "no_data_tokens",
            "Pending tokens that never delivered data despite redrives and a move (retried slowly).",
            snap.get("no_data", 0),
        )
        yield gauge(
            "quote_health",
            "Share of desired tokens with a live (or resolved) quote.",
            snap.get("quote_health", 1.0),
        )
        yield gauge(
            "desired_invalid_entries",
            "Desired-set entries that are not token ids.",
            snap.get("invalid_desired", 0),
        )
        yield gauge(
            "desired_over_cap", "Valid desired tokens ignored over SIDECAR_MAX_TOKENS.", snap.get("capped", 0)
        )
        yield gauge(
            "oldest_live_quote_age_seconds",
            "Age of the oldest exchange confirmation among live quotes.",
            snap.get("oldest_live_age", 0.0),
        )
        yield gauge(
            "redis_up", "1 when the quote writer is connected to Redis.", 1.0 if snap.get("redis_up") else 0.0
        )
        yield gauge("writer_backlog_tokens", "Tokens waiting to be written to Redis.", snap.get("backlog", 0))
        yield gauge(
            "inbox_lag_seconds",
            "Worst frame receive-to-processed delay in the engine loop over the last second.",
            snap.get("inbox_lag", 0.0),
        )
        yield gauge(
            "loop_lag_seconds",
            "Seconds since the engine loop last ran.",
            max(0.0, time.monotonic() - snap.get("loop_at", time.monotonic())),
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
        for shard_id, age in snap.get("socket_ages", {}).items():
            ages.add_metric([str(shard_id)], age)
        yield ages
        redis_errors = CounterMetricFamily(
            f"{NS}_redis_errors", "Redis errors by component.", labels=["component"]
        )
        for component, count in snap.get("redis_errors", {}).items():
            redis_errors.add_metric([component], count)
        yield redis_errors
        info = InfoMetricFamily(f"{NS}_build", "Version and run epoch.")
        info.add_metric([], {"version": snap.get("version", ""), "epoch": snap.get("epoch", "")})
        yield info


class Metrics:
    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any]],
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
