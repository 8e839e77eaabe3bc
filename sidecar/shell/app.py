"""The runtime: one loop thread owns the engine; everything else posts into its inbox.

Socket readers, the desired-set reader and the REST client only post typed messages
(``sidecar.shell.inbox``); the loop applies them to the engine in arrival order, runs its timers,
carries out its actions and hands quote writes to the Redis writer. This loop is also what feeds
the systemd watchdog and, with its summary heartbeat, the alive key (the writer never extends it
past the latest heartbeat), so a wedged loop is visible to systemd and to every worker.
"""

from __future__ import annotations

import faulthandler
import logging
import queue
import signal
import threading
import time
import uuid
from typing import Any, assert_never

import redis

from sidecar import __version__, logs
from sidecar.config import Settings
from sidecar.core.engine import Close, Engine, EngineConfig, MarketFetch, Open, RestFetch, Send
from sidecar.core.stats import Stat
from sidecar.core.status import LIVE, PENDING, RESYNCING, STALE
from sidecar.shell import allocator, readback
from sidecar.shell.connection import SocketRunner
from sidecar.shell.desired import DesiredReader
from sidecar.shell.inbox import (
    ConnectFailed,
    DesiredChanged,
    FrameReceived,
    InboxMessage,
    MarketAnswer,
    RestAnswer,
    SocketClosed,
    SocketOpened,
    Wake,
)
from sidecar.shell.metrics import Metrics, Snapshot, serve
from sidecar.shell.redisconn import make_client
from sidecar.shell.rest import RestClient
from sidecar.shell.writer import QuoteWriter
from sidecar.systemd import Notifier

log = logging.getLogger("sidecar")

TICK_S = 0.05
SUMMARY_S = 1.0
LOG_SUMMARY_S = 60.0  # the summary line in the log (events/s and Redis latency over this period)
DRAIN_MAX = 5000  # items per loop turn before timers get a chance to run
STOP_WRITE_S = 1.2  # the final Redis write's budget: the whole stop stays within 2 s
TRIM_S = 10.0  # malloc_trim period (~0.2 ms each): reconnect waves leave freed pages behind


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        now = time.monotonic()
        wall_ms = int(time.time() * 1000)
        self.epoch = f"{wall_ms:x}-{uuid.uuid4().hex[:8]}"
        self.engine = Engine(EngineConfig.from_settings(settings), self.epoch, now, wall_ms)
        self.inbox: queue.SimpleQueue[InboxMessage] = queue.SimpleQueue()
        self.sockets: dict[int, SocketRunner] = {}
        self._stop = threading.Event()
        self._snapshot = Snapshot(loop_at=now, version=__version__, epoch=self.epoch)
        self.metrics = Metrics(lambda: self._snapshot, lambda: self.writer.alive_until)
        self.writer = QuoteWriter(
            lambda **redis_kwargs: make_client(settings, **redis_kwargs),
            settings.key_prefix,
            settings.alive_ttl_s,
            settings.write_flush_ms,
            self.metrics,
        )
        self.desired = DesiredReader(
            lambda: make_client(settings, timeout_s=max(5.0, settings.desired_poll_s + 5.0)),
            settings.key_prefix,
            settings.desired_poll_s,
            self.inbox.put,
        )
        self.rest = RestClient(settings.rest_url, settings.rest_max_rps, self.inbox.put)
        self.notifier = Notifier()
        self._ready_sent = False
        self._loop_at = now
        self._got_desired = False
        self._inbox_lag = 0.0  # worst frame receive -> processed lag since the last summary
        self._last_log = (now, 0.0, 0.0, 0.0)  # summary line: at, events, flush time sum / count

    # ---- health endpoints ----------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        lag = time.monotonic() - self._loop_at
        redis_ok = self.writer.connected
        return lag < 5.0 and redis_ok, {"loop_lag_s": round(lag, 3), "redis": redis_ok}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        ok, detail = self.health()
        report = self._snapshot.engine_report
        qh = 0.0 if report is None else report.quote_health  # 0 until the first summary
        detail.update(quote_health=qh, threshold=self.settings.ready_quote_health)
        return ok and self._got_desired and qh >= self.settings.ready_quote_health, detail

    # ---- main loop --------------------------------------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        self._stop.set()
        self.inbox.put(Wake())

    def run(self) -> int:
        s = self.settings
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1` dumps every stack
        server, _ = serve(self.metrics, s.metrics_addr, s.metrics_port, self.health, self.ready)
        self.metrics_port = server.server_address[1]
        log.info(
            "pm-sidecar %s epoch %s: exchange %s, redis %s, prefix %r, metrics http://%s:%d/metrics",
            __version__,
            self.epoch,
            s.ws_url,
            s.redis_url_redacted(),
            s.key_prefix,
            s.metrics_addr,
            self.metrics_port,
        )
        self._read_back()  # before the first desired set: resolved tokens start resolved
        self.writer.start()
        self.desired.start()
        if s.rest_enabled:
            self.rest.start()
        try:
            self._loop()
        finally:
            self._shutdown(server)
        return 0

    def _read_back(self) -> None:
        """Hand the desired tokens' quote hashes, as the last run left them, to the engine."""
        try:
            saved = readback.read_back(make_client(self.settings), self.settings.key_prefix)
        except redis.RedisError as exc:
            log.warning("start-up read-back of the quote hashes skipped (Redis: %s)", exc)
            return
        self.engine.restore(saved, time.monotonic(), int(time.time() * 1000))
        resolved = sum(1 for fields in saved.values() if fields.get("status") == "resolved")
        log.info("read back %d quote hashes (%d resolved)", len(saved), resolved)

    def _loop(self) -> None:
        engine = self.engine
        inbox = self.inbox
        clock = time.monotonic
        next_tick = 0.0
        next_summary = 0.0
        next_log = clock() + LOG_SUMMARY_S
        next_trim = clock() + TRIM_S
        watchdog_every = self.notifier.watchdog_interval_s
        next_watchdog = 0.0
        while not self._stop.is_set():
            try:
                item = inbox.get(timeout=TICK_S)
            except queue.Empty:
                item = None
            wall_ms = int(time.time() * 1000)
            if item is not None:
                self._handle(item, wall_ms)
                for _ in range(DRAIN_MAX):
                    try:
                        item = inbox.get_nowait()
                    except queue.Empty:
                        break
                    self._handle(item, wall_ms)
            now = clock()
            self._loop_at = now
            if now >= next_tick:
                next_tick = now + TICK_S
                engine.tick(now, wall_ms)
            self._carry_out()
            self.writer.submit(engine.take_writes(now, wall_ms))
            if now >= next_summary:
                next_summary = now + SUMMARY_S
                self._publish_summary(now, wall_ms)
            if watchdog_every is not None and now >= next_watchdog:
                # Fed from the loop that does the work, at half of WATCHDOG_USEC: a wedged loop
                # stops the pings and systemd restarts us.
                next_watchdog = now + watchdog_every
                self.notifier.watchdog()
            if now >= next_log:
                next_log = now + LOG_SUMMARY_S
                self._log_summary(now)
            if now >= next_trim:
                next_trim = now + TRIM_S
                took = allocator.trim()
                log.debug("malloc_trim took %.1f ms", took * 1000)

    def _handle(self, msg: InboxMessage, wall_ms: int) -> None:
        """Apply one inbox message to the engine. Frames are nearly all of them: tested first."""
        engine = self.engine
        if type(msg) is FrameReceived:
            # updated_at is the frame's receive time (the reader's stamp), not this turn's
            recv_at = msg.recv_at
            lag = time.monotonic() - recv_at
            if lag > self._inbox_lag:
                self._inbox_lag = lag
            engine.on_frame(msg.conn_id, msg.data, recv_at, int(time.time() * 1000 - lag * 1000))
            return
        match msg:
            case SocketOpened(conn_id):
                engine.on_open(conn_id, time.monotonic())
            case SocketClosed(conn_id, reason):
                self.sockets.pop(conn_id, None)
                engine.on_closed(conn_id, reason, time.monotonic())
            case ConnectFailed(conn_id, reason, http_status):
                self.sockets.pop(conn_id, None)
                engine.on_connect_failed(conn_id, reason, time.monotonic(), http_status)
            case DesiredChanged(members):
                self._got_desired = True
                engine.set_desired(members, time.monotonic(), wall_ms)
            case RestAnswer(request_id, books):
                engine.on_rest_books(request_id, books, time.monotonic(), wall_ms)
            case MarketAnswer(request_id, markets):
                engine.on_market_states(request_id, markets, time.monotonic(), wall_ms)
            case Wake():
                pass
            case FrameReceived():  # taken above; listed so that the match is exhaustive
                pass
            case _:
                assert_never(msg)  # mypy: a new message type without a case here

    def _carry_out(self) -> None:
        for action in self.engine.take_actions():
            if isinstance(action, Send):
                runner = self.sockets.get(action.conn_id)
                if runner is not None:
                    runner.send(action.text)
            elif isinstance(action, Open):
                runner = SocketRunner(action.conn_id, self.settings.ws_url, self.inbox.put)
                self.sockets[action.conn_id] = runner
                runner.start()
            elif isinstance(action, Close):
                runner = self.sockets.pop(action.conn_id, None)
                if runner is not None:
                    runner.close()
            elif isinstance(action, RestFetch) and self.settings.rest_enabled:
                self.rest.fetch(action.request_id, action.tokens)
            elif isinstance(action, MarketFetch) and self.settings.rest_enabled:
                self.rest.fetch_markets(action.request_id, action.markets)

    def _publish_summary(self, now: float, wall_ms: int) -> None:
        engine = self.engine
        counts = engine.counts()  # one pass over the tokens for the summary and the metrics
        summary = engine.summary(wall_ms, __version__, counts)
        # The loop's own heartbeat: the only thing that (re)starts the alive key's TTL.
        self.writer.submit_summary(summary, beat_at=now)
        report = engine.report(now, wall_ms, counts)
        for latency in report.confirm_latencies:
            self.metrics.confirm_latency.observe(latency)
        writer = self.writer.snapshot()
        self._snapshot = Snapshot(
            engine_report=report,
            loop_at=now,
            version=__version__,
            epoch=self.epoch,
            inbox_lag=self._inbox_lag,
            redis_up=writer.redis_up,
            backlog=writer.backlog,
            redis_errors={"writer": writer.errors, "desired": self.desired.errors},
        )
        self._inbox_lag = 0.0
        if not self._ready_sent and self.writer.ever_connected.is_set():
            self._ready_sent = True
            self.notifier.ready()
            log.info("ready: metrics up, Redis connected")
        if self.notifier.enabled:
            self.notifier.status(self._status_line())

    def _status_line(self) -> str:
        snap = self._snapshot
        report = snap.report
        statuses = report.statuses
        up = sum(1 for _ in self.sockets)
        return (
            f"desired={report.desired} live={statuses.get(LIVE, 0)} "
            f"pending={statuses.get(PENDING, 0)} stale={statuses.get(STALE, 0)} "
            f"resyncing={statuses.get(RESYNCING, 0)} health={report.quote_health:.3f} "
            f"sockets={up} reconnects={report.stat_total(Stat.RECONNECTS)} "
            f"redis={'up' if snap.redis_up else 'DOWN'} backlog={snap.backlog}"
        )

    def _log_summary(self, now: float) -> None:
        """The minute's summary line: counts, sockets, events/s and mean Redis flush time."""
        snap = self._snapshot
        report = snap.report
        statuses = report.statuses
        events = float(sum(v for (k, _), v in self.engine.stats.items() if k == Stat.EVENTS))
        flush_sum, flush_count = _histogram_totals(self.metrics.redis_write_latency)
        then = self._last_log
        self._last_log = (now, events, flush_sum, flush_count)
        latency = logs.mean_delta(flush_sum, flush_count, then[2], then[3])
        line = logs.MinuteSummary(
            desired=report.desired,
            live=statuses.get(LIVE, 0),
            pending=statuses.get(PENDING, 0),
            stale=statuses.get(STALE, 0),
            resyncing=statuses.get(RESYNCING, 0),
            sockets_up=report.connections_up,
            sockets=report.connections,
            events_per_s=logs.rate(events, then[1], now - then[0]),
            redis_latency_ms=None if latency is None else latency * 1000,
            redis_up=snap.redis_up,
            backlog=snap.backlog,
            quote_health=report.quote_health,
        )
        log.info("%s", line.message(), extra={"fields": line.fields()})

    def _shutdown(self, server: Any) -> None:
        """Stale every quote we can no longer vouch for, drop the alive key, go. Within 2 s, also
        with Redis slow or down: the writer's final transaction fences off anything still in
        flight, so nothing setting `live` or the alive key can land after it."""
        log.info("stopping: marking quotes stale and removing the alive key")
        self.notifier.stopping()
        # serve_forever notices a shutdown only at its next poll (0.5 s): do not wait for it here.
        http_down = threading.Thread(target=server.shutdown, name="metrics-stop", daemon=True)
        http_down.start()
        engine = self.engine
        engine.shutdown()
        now = time.monotonic()
        wall_ms = int(time.time() * 1000)
        self._carry_out()
        self.writer.submit(engine.take_writes(now, wall_ms))
        self.writer.submit_summary(engine.summary(wall_ms, __version__), beat_at=now)
        self.desired.stop()
        self.rest.stop()
        if not self.writer.stop(deadline_s=STOP_WRITE_S):
            log.warning("could not reach Redis while stopping; workers will see the alive key expire")
        for runner in list(self.sockets.values()):
            runner.close()
        http_down.join(0.3)
        server.server_close()


def _histogram_totals(histogram: Any) -> tuple[float, float]:
    """A Prometheus histogram's running (sum, count)."""
    total = count = 0.0
    for metric in histogram.collect():
        for sample in metric.samples:
            if sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
    return total, count


def configure_logging(level: str, fmt: str = "text") -> None:
    """Log to stderr as ``text`` or ``json`` lines; ``<N>`` priority prefixes when stderr is the
    journal (systemd), so ``journalctl -p warning`` works (sidecar.logs)."""
    logs.configure(level, fmt)
