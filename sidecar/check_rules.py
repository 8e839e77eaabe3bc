"""The decisions of ``pm-sidecar check``: pure functions of what was read, no I/O (unit tested).

Each returns a :class:`Finding` (``ok``, ``WARN`` or ``FAIL`` with one line of text); ``check``
does the reading and prints them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sidecar.config import Settings
from sidecar.core import protocol
from sidecar.shell.desired import RESTART_GRACE_S

EX_OK = 0
EX_PROBLEM = 1
EX_USAGE = 2


class Level(Enum):
    OK = "ok"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    level: Level
    area: str  # config, redis, metrics, dns, ws, rest
    text: str

    def line(self) -> str:
        return f"{self.level.value:<4} {self.area}: {self.text}"


def ok(area: str, text: str) -> Finding:
    return Finding(Level.OK, area, text)


def warn(area: str, text: str) -> Finding:
    return Finding(Level.WARN, area, text)


def fail(area: str, text: str) -> Finding:
    return Finding(Level.FAIL, area, text)


def exit_code(findings: Iterable[Finding]) -> int:
    return EX_PROBLEM if any(f.level is Level.FAIL for f in findings) else EX_OK


def eviction_finding(policy: str, maxmemory: int, prefix: str) -> Finding:
    """What Redis may evict under memory pressure, for the sidecar's keys.

    Only the alive key (``P sidecar:alive``) and removed tokens' hashes carry a TTL; the live quote
    hashes, ``P sidecar`` and ``P desired`` do not. With ``maxmemory`` 0 nothing is ever evicted.
    """
    if maxmemory <= 0:
        if policy.startswith("allkeys"):
            return warn(
                "redis",
                f"maxmemory-policy {policy} with no maxmemory: nothing is evicted now, but once a "
                f"maxmemory is set it may evict live quote hashes and {prefix}desired",
            )
        return ok("redis", f"maxmemory unlimited (policy {policy}): nothing is evicted")
    limit = f"maxmemory {maxmemory} bytes"
    if policy.startswith("allkeys"):
        # A warning (issue 12), not a failure: nothing is evicted until memory is full.
        return warn(
            "redis",
            f"maxmemory-policy {policy} with {limit}: once memory is full Redis may evict any key, "
            "including live quote hashes (a worker finds no quote for that token until the sidecar "
            f"next writes it) and {prefix}desired (read as empty while Redis stays up: every token "
            "unsubscribed at once until the scheduler writes it again); noeviction or a volatile-* "
            "policy keeps them",
        )
    if policy.startswith("volatile"):
        return warn(
            "redis",
            f"maxmemory-policy {policy} with {limit}: only keys with a TTL can go, i.e. removed "
            f"tokens' hashes and {prefix}sidecar:alive (workers would see the sidecar down for up "
            "to 1 s until it is rewritten); live quotes and the desired set are safe",
        )
    if policy == "noeviction":
        return ok(
            "redis",
            f"maxmemory-policy noeviction with {limit}: nothing is evicted; when full, writes "
            "fail (counted in pm_sidecar_redis_write_errors_total) until memory is freed",
        )
    return warn("redis", f"unknown maxmemory-policy {policy!r} with {limit}")


def persistence_finding(save: str | None, aof: bool, prefix: str) -> Finding:
    """The desired set is the scheduler's; only persistence keeps it across a Redis restart."""
    if aof:
        return ok("redis", "persistence: AOF on; the desired set survives a Redis restart")
    if save is None:
        return warn(
            "redis",
            "persistence unknown (CONFIG GET save refused) and AOF off: if Redis restarts empty, "
            f"{prefix}desired is gone and the sidecar keeps its last set only {RESTART_GRACE_S:.0f} s "
            "for the scheduler to rewrite it",
        )
    if save.strip():
        return ok(
            "redis", f"persistence: RDB snapshots (save {save.strip()}); writes since the last one are lost"
        )
    return warn(
        "redis",
        f"no persistence (RDB and AOF off): after a Redis restart {prefix}desired is gone; the "
        f"sidecar keeps its last set {RESTART_GRACE_S:.0f} s, then unsubscribes everything unless "
        "the scheduler rewrites it",
    )


def role_finding(role: str, replica_read_only: bool) -> Finding:
    if role == "master":
        return ok("redis", "role master (not a replica)")
    if replica_read_only:
        return fail("redis", f"role {role} and read-only: every quote write would fail; point at the primary")
    return warn("redis", f"role {role} (writable replica): quotes written here are lost on resync")


@dataclass(frozen=True)
class Plan:
    """What ``run`` would do with the desired set as it is now (the engine's own rules)."""

    valid: int  # valid token ids taken (after the SIDECAR_MAX_TOKENS cap)
    invalid: int  # members that are not token ids: ignored
    capped: int  # valid ids over SIDECAR_MAX_TOKENS: ignored
    sockets: int
    first_token: str | None  # the token the socket check subscribes to

    @classmethod
    def from_members(cls, members: Iterable[bytes | str], max_tokens: int, per_conn: int) -> Plan:
        valid: set[str] = set()
        invalid = 0
        for raw in members:
            value = (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw).strip()
            if protocol.is_token_id(value):
                valid.add(value)
            else:
                invalid += 1
        taken = min(len(valid), max_tokens)
        return cls(
            valid=taken,
            invalid=invalid,
            capped=len(valid) - taken,
            sockets=math.ceil(taken / per_conn),
            first_token=min(valid) if valid else None,
        )


def plan_lines(s: Settings, plan: Plan | None) -> list[str]:
    """What ``run`` would do, for the operator: sockets, tokens, REST, Redis keys, metrics."""
    p = s.key_prefix
    if plan is None:
        desired = f"{p}desired could not be read: run subscribes nothing until it can"
    else:
        desired = f"{p}desired now: {plan.valid} tokens"
        if plan.invalid or plan.capped:
            desired += f" ({plan.invalid} invalid ids ignored, {plan.capped} over SIDECAR_MAX_TOKENS ignored)"
        desired += (
            f" -> {plan.sockets} socket(s) of at most {s.max_tokens_per_conn} tokens to {s.ws_url}, "
            f"opened {s.connect_spacing_s:g} s apart"
        )
    rest = (
        f"REST {s.rest_url}/books re-confirms tokens quiet for {s.quiet_confirm_s:g} s, "
        f"at most {s.rest_max_rps:g} requests/s"
        if s.rest_enabled
        else "REST disabled: quiet live tokens are never re-confirmed (their updated_at ages)"
    )
    return [
        f"run would: read {desired}",
        f"run would: {rest}",
        f"run would: write {p}quote:{{token}}, {p}sidecar and {p}sidecar:alive (TTL {s.alive_ttl_s} s) "
        f"to {s.redis_url_redacted()}",
        f"run would: serve http://{s.metrics_addr}:{s.metrics_port}/metrics, /healthz, /readyz",
    ]


def ws_finding(outcome: WsOutcome, timeout_s: float) -> list[Finding]:
    """One socket: the handshake, the subscription frame accepted (PONG), and a book if asked."""
    if outcome.error is not None:
        return [fail("ws", f"cannot open {outcome.url}: {outcome.error}")]
    if outcome.close_code is not None and not outcome.pong:
        code = f"{outcome.close_code} {outcome.close_reason}".strip()
        text = f"the exchange closed the socket after the subscription frame: {code}"
        if outcome.token is None:
            # The engine never sends an empty first frame; the real server may refuse one.
            return [
                warn(
                    "ws",
                    f"{text}; the handshake worked, but an empty subscription proves no more: "
                    "add a token to the desired set or pass --token",
                )
            ]
        return [fail("ws", text)]
    if not outcome.pong:
        return [fail("ws", f"no PONG within {timeout_s:g} s after the subscription frame")]
    found = [ok("ws", f"{outcome.url}: socket open, subscription accepted, PONG in {outcome.pong_ms:.0f} ms")]
    if outcome.token is not None:
        if outcome.book:
            found.append(ok("ws", f"book for token {short(outcome.token)} received"))
        else:
            found.append(
                warn(
                    "ws",
                    f"no book for token {short(outcome.token)} within {timeout_s:g} s "
                    "(an inactive token sends none)",
                )
            )
    return found


NOT_JSON: Any = object()  # rest_finding's body when the answer was empty or not JSON


def rest_finding(
    url: str,
    status: int | None,
    body: Any,
    error: str | None,
    token: str | None,
    location: str | None = None,
) -> Finding:
    """One ``POST /books`` (``body``: the parsed JSON answer, or :data:`NOT_JSON`).

    With a token only a JSON list of books is ok. Without one (an empty list, the normal state on
    a new host) no book can be checked, but the answer must still be the CLOB's: a JSON list (what
    the simulator answers), or a JSON 400/422 refusal of the empty list as invalid. A redirect,
    401/403, 404/405, any other 4xx, or a body that is not JSON means ``SIDECAR_REST_URL`` is not
    the CLOB (or something in between refuses us), so ``run``'s re-confirmations would all fail.
    """
    if error is not None:
        return fail("rest", f"POST {url}: {error}")
    assert status is not None
    if status == 429 or status >= 500:
        return fail("rest", f"POST {url}: HTTP {status}")
    wrong = _not_the_clob(status, location)
    if wrong is not None:
        return fail("rest", f"POST {url}: HTTP {status}: {wrong}; check SIDECAR_REST_URL")
    if body is NOT_JSON:
        return fail("rest", f"POST {url}: HTTP {status} with a body that is not JSON: not the CLOB's /books")
    if token is None:
        if status == 200 and isinstance(body, list):
            return ok(
                "rest", f"POST {url}: HTTP 200, a JSON list (empty request: reachable, no book checked)"
            )
        if status in (400, 422) and isinstance(body, dict):
            return ok(
                "rest",
                f"POST {url}: HTTP {status}, a JSON refusal of the empty list "
                "(empty request: reachable, no book checked)",
            )
        return fail("rest", f"POST {url}: HTTP {status}, JSON that is not the CLOB's answer to an empty list")
    if status != 200 or not isinstance(body, list):
        return fail("rest", f"POST {url}: HTTP {status}, not a list of books")
    return ok("rest", f"POST {url}: HTTP 200, {len(body)} book(s) for token {short(token)}")


def _not_the_clob(status: int, location: str | None) -> str | None:
    """Why an HTTP status shows the URL is not the CLOB's ``/books``; ``None`` when it may be."""
    if 300 <= status < 400:
        where = f" to {location}" if location else ""
        return f"redirect{where} (not followed: a POST /books does not survive a redirect)"
    if status in (401, 403):
        return "refused (authentication or a proxy/firewall): the CLOB's /books needs no credentials"
    if status == 404:
        return "no /books here"
    if status == 405:
        return "POST not allowed here"
    if 400 <= status < 500 and status not in (400, 422):
        return "not an answer the CLOB's /books gives"
    return None


def short(token: str) -> str:
    return token if len(token) <= 16 else f"{token[:6]}…{token[-6:]}"


@dataclass
class WsOutcome:
    url: str
    token: str | None
    error: str | None = None
    pong: bool = False
    pong_ms: float = 0.0
    book: bool = False
    close_code: int | None = None
    close_reason: str = ""
