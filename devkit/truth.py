"""The product's two properties, sampled against the simulator while faults happen.

1. A quote that says ``live`` is the exchange's top of book: a token may be ``live`` and differ
   from the simulator's truth for at most ``limit`` seconds (LiveWrongCheck).
2. A token live at the exchange is live in Redis: a token the exchange serves may be non-live in
   Redis for at most ``stuck_limit`` seconds (StuckCheck).

The checks are pure (time and observations passed in) so they are unit tested on their own;
TruthWatch is the thin sampler the integration tests run to feed them every 100 ms from Redis and
the simulator; ``truth_top`` (the simulator's top as wire strings) serves the demo, bench and soak too.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import redis
from pmsim import Simulator

from devkit.redis_server import RedisServer, quiet_client

P = "pm:"
TOP_FIELDS = ("status", "bid", "bid_size", "ask", "ask_size")
# Read with the top: a hash holding any of these without a status is a partial write.
EXTRA_FIELDS = ("seq", "updated_at", "epoch")

Top = tuple[str, str, str, str]  # bid, bid_size, ask, ask_size


def truth_top(sim: Simulator, token: str) -> Top:
    """The simulator's true top of book as (bid, bid_size, ask, ask_size) wire strings."""
    t = sim.truth(token)
    return (t.bid, t.bid_size, t.ask, t.ask_size)


@dataclass(frozen=True)
class Observation:
    """One token in one sample: what Redis said, and the truth read just before and just after."""

    token: str
    status: str | None
    top: tuple[str | None, ...]
    before: Top
    after: Top
    withheld: bool = False  # the exchange deliberately sends nothing for it (muted subscription)
    partial: bool = False  # the hash exists but has no status (a write left half a state)


class LiveWrongCheck:
    """Property 1. A sample is wrong only if the quote is ``live`` and equals neither the truth
    read before nor the one read after the Redis read (so a change in between is not counted
    against the sidecar). Live and wrong on consecutive samples for more than ``limit`` seconds
    is a violation."""

    def __init__(self, tokens: list[str], limit: float) -> None:
        self.limit = limit
        self.not_live = 0
        self.wrong = 0
        self.longest: dict[str, float] = {}
        self.violations: list[str] = []
        self._since: dict[str, float | None] = dict.fromkeys(tokens)

    def observe(self, at: float, obs: Observation) -> None:
        if obs.status != "live":
            self.not_live += 1
            self._since[obs.token] = None
            return
        if tuple(obs.top) in (obs.before, obs.after):
            self._since[obs.token] = None
            return
        self.wrong += 1
        since = self._since[obs.token]
        if since is None:
            self._since[obs.token] = since = at
        wrong_for = at - since
        self.longest[obs.token] = max(self.longest.get(obs.token, 0.0), wrong_for)
        if wrong_for > self.limit:
            self.violations.append(
                f"{obs.token[:12]}… live but wrong for {wrong_for:.2f}s: quote {obs.top} truth {obs.after}"
            )


class StuckCheck:
    """Property 2. A token the exchange serves must not stay non-live in Redis for more than
    ``limit`` seconds.

    Exact about what excuses a non-live quote, and nothing else:
    - the exchange withholding the token (every open subscription of it muted): the sidecar can
      only find out by its first-event patience, so the clock restarts when it is served again;
    - Redis unreadable: nobody can see a quote then, so that time is not counted (the clock
      pauses; the time before and after the outage still adds up).
    A dropped socket, a zombie, a bad entry, a resync or a Redis that came back empty or older are
    the sidecar's to repair and count in full.
    """

    def __init__(self, tokens: list[str], limit: float) -> None:
        self.limit = limit
        self.withheld = 0
        self.longest: dict[str, float] = {}
        self.violations: list[str] = []
        self._stuck: dict[str, float | None] = dict.fromkeys(tokens)  # seconds non-live and served
        self._judged_at: float | None = None  # the previous readable sample
        self._outage = False  # an unreadable sample since then
        self._reported: set[str] = set()

    def unreadable(self, at: float) -> None:
        self._outage = True

    def begin(self, at: float) -> float:
        """Start of a readable sample: the seconds it adds to every open streak."""
        step = 0.0 if self._judged_at is None or self._outage else at - self._judged_at
        self._judged_at = at
        self._outage = False
        return step

    def observe(self, obs: Observation, step: float) -> None:
        token = obs.token
        if obs.withheld:
            self.withheld += 1
            self._stuck[token] = None
            return
        if obs.status == "live":
            self._stuck[token] = None
            return
        stuck = self._stuck[token]
        stuck = 0.0 if stuck is None else stuck + step
        self._stuck[token] = stuck
        self.longest[token] = max(self.longest.get(token, 0.0), stuck)
        if stuck > self.limit and token not in self._reported:
            self._reported.add(token)  # one line per streak is enough to read
            self.violations.append(f"{token[:12]}… served but not live for {stuck:.2f}s ({obs.status})")
        if stuck <= self.limit:
            self._reported.discard(token)

    def worst(self) -> float:
        return max(self.longest.values(), default=0.0)


class TruthWatch(threading.Thread):
    """Samples every token's quote every 100 ms against the simulator's truth (LiveWrongCheck,
    ``limit``) and, given ``stuck_limit``, against the exchange serving it (StuckCheck).

    Also counts partial hashes (a hash without a status): never legitimate, each one a violation.
    """

    def __init__(
        self,
        server: RedisServer,
        sim: Simulator,
        tokens: list[str],
        limit: float = 1.0,
        stuck_limit: float | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.r = quiet_client(server, timeout=0.5)
        self.sim = sim
        self.tokens = tokens
        self.samples = 0
        self.unreadable = 0
        self.partial: list[str] = []
        self.live_wrong = LiveWrongCheck(tokens, limit)
        self.stuck = StuckCheck(tokens, stuck_limit) if stuck_limit is not None else None
        self._halt = threading.Event()
        self.crash: str | None = None

    # The counters the fault test reads, kept under their old names.
    @property
    def not_live(self) -> int:
        return self.live_wrong.not_live

    @property
    def wrong(self) -> int:
        return self.live_wrong.wrong

    @property
    def longest(self) -> dict[str, float]:
        return self.live_wrong.longest

    @property
    def violations(self) -> list[str]:
        return self.live_wrong.violations

    def run(self) -> None:
        try:
            self._watch()
        except BaseException as exc:  # a dead watcher must fail the test, not just stop sampling
            self.crash = repr(exc)
            raise

    def _watch(self) -> None:
        while not self._halt.is_set():
            started = time.monotonic()
            self._sample(started)
            self._halt.wait(max(0.0, 0.1 - (time.monotonic() - started)))

    def _sample(self, started: float) -> None:
        withheld = withheld_tokens(self.sim) if self.stuck is not None else set()
        before = [truth_top(self.sim, t) for t in self.tokens]
        try:
            pipe = self.r.pipeline(transaction=False)
            for t in self.tokens:
                pipe.hmget(P + "quote:" + t, *TOP_FIELDS, *EXTRA_FIELDS)
            rows = pipe.execute()
        except redis.RedisError:
            self.unreadable += 1  # workers cannot read either; judge again once Redis answers
            if self.stuck is not None:
                self.stuck.unreadable(started)
            return
        after = [truth_top(self.sim, t) for t in self.tokens]
        if self.stuck is not None:
            withheld &= withheld_tokens(self.sim)  # withheld for the whole read
        self.samples += 1
        step = self.stuck.begin(started) if self.stuck is not None else 0.0
        n = len(TOP_FIELDS)
        for token, row, t0, t1 in zip(self.tokens, rows, before, after, strict=True):
            status, top, extra = row[0], tuple(row[1:n]), row[n:]
            partial = status is None and any(v is not None for v in (*top, *extra))
            if partial:
                self.partial.append(f"{token[:12]}… hash without a status: {row}")
            obs = Observation(token, status, top, t0, t1, token in withheld, partial)
            self.live_wrong.observe(started, obs)
            if self.stuck is not None:
                self.stuck.observe(obs, step)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        assert not self.is_alive(), "the truth watcher did not stop"
        assert self.crash is None, f"the truth watcher crashed: {self.crash}"


def withheld_tokens(sim: Simulator) -> set[str]:
    """Tokens the exchange deliberately sends nothing for: subscribed on open connections, muted
    on every one of them. A token with no open subscription is not withheld: (re)subscribing it is
    the sidecar's job."""
    served: set[str] = set()
    muted: set[str] = set()
    for conn in sim.connections():
        if not conn.open:
            continue
        muted |= conn.muted & conn.subscribed
        served |= conn.subscribed - conn.muted
    return muted - served
