"""``pm-sidecar check``: is this host ready to run the sidecar? The first command on a new host.

Checks, in order, each on its own so that one failure does not hide the others: the
configuration (exit 78 when invalid, as ``run``), Redis (version, role, eviction policy,
persistence, the desired set), the metrics port, DNS of the exchange hosts, one market-channel
socket and one REST request. Then it prints what ``run`` would do with the desired set as it is now.

The decisions ("is this maxmemory-policy a problem?") are pure functions of what was read, unit
tested; the I/O around them is thin. Exit codes: 0 no problem (warnings allowed), 1 at least one
problem (one ``FAIL`` line each), 2 bad arguments, 78 invalid configuration.
"""

from __future__ import annotations

import argparse
import math
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis
import websocket

from sidecar import protocol
from sidecar.config import Settings
from sidecar.desired import RESTART_GRACE_S

EX_OK = 0
EX_PROBLEM = 1
EX_USAGE = 2
WS_FIRST_BOOK_NOTE = "no book within the timeout"


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


# ---- pure decisions -----------------------------------------------------------------------------


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
        return fail(
            "redis",
            f"maxmemory-policy {policy} with {limit}: Redis may evict live quote hashes (workers "
            f"lose a quote until its next change) and {prefix}desired (the sidecar unsubscribes "
            "everything after its 60 s hold); use noeviction or a volatile-* policy",
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
        return ok("redis", "role master: writable")
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


def rest_finding(url: str, status: int | None, body: Any, error: str | None, token: str | None) -> Finding:
    if error is not None:
        return fail("rest", f"POST {url}: {error}")
    assert status is not None
    if status == 429 or status >= 500:
        return fail("rest", f"POST {url}: HTTP {status}")
    if token is None:
        # An empty request shows the host answers; the real API may refuse an empty list.
        return ok("rest", f"POST {url}: HTTP {status} (empty request: reachable, no book checked)")
    if status != 200 or not isinstance(body, list):
        return fail("rest", f"POST {url}: HTTP {status}, not a list of books")
    return ok("rest", f"POST {url}: HTTP 200, {len(body)} book(s) for token {short(token)}")


def short(token: str) -> str:
    return token if len(token) <= 16 else f"{token[:6]}…{token[-6:]}"


# ---- thin I/O -----------------------------------------------------------------------------------


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


def probe_ws(url: str, token: str | None, timeout_s: float) -> WsOutcome:
    """Open one socket as ``run`` does, send ``run``'s first frame and a PING, read until done."""
    out = WsOutcome(url, token)
    try:
        ws = websocket.create_connection(
            url, timeout=timeout_s, suppress_origin=True, skip_utf8_validation=True
        )
    except websocket.WebSocketBadStatusException as exc:
        out.error = f"HTTP {exc.status_code} on the handshake"
        return out
    except Exception as exc:  # DNS, refused, TLS, timeout: say which
        out.error = f"{type(exc).__name__}: {exc}"
        return out
    deadline = time.monotonic() + timeout_s
    try:
        ws.send(protocol.subscribe_first([token] if token else []))
        sent = time.monotonic()
        ws.send("PING")
        while time.monotonic() < deadline and not (out.pong and (token is None or out.book)):
            ws.settimeout(max(0.01, deadline - time.monotonic()))
            opcode, data = ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                out.close_code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                out.close_reason = data[2:].decode("utf-8", "replace")
                break
            if data == b"PONG" and not out.pong:
                out.pong, out.pong_ms = True, (time.monotonic() - sent) * 1000.0
            elif token is not None and _has_book(data, token):
                out.book = True
    except websocket.WebSocketTimeoutException:
        pass
    except websocket.WebSocketConnectionClosedException:
        out.close_code = out.close_code or 1006
    except Exception as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    finally:
        ws.close(timeout=0.5)
    return out


def _has_book(data: bytes, token: str) -> bool:
    events = protocol.decode_frame(data)
    if not isinstance(events, list):
        return False
    return any(
        isinstance(e, dict) and e.get("event_type") == "book" and e.get("asset_id") == token for e in events
    )


def probe_rest(base_url: str, token: str | None, timeout_s: float) -> Finding:
    url = base_url.rstrip("/") + "/books"
    body = orjson.dumps([{"token_id": token}] if token else [])
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return rest_finding(url, exc.code, None, None, token)
    except (OSError, ValueError) as exc:
        return rest_finding(url, None, None, f"{type(exc).__name__}: {exc}", token)
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    return rest_finding(url, status, parsed, None, token)


def resolve(area: str, url: str) -> Finding:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)}
    except OSError as exc:
        return fail("dns", f"{area} host {host!r} does not resolve: {exc}")
    return ok("dns", f"{area} host {host} -> {', '.join(sorted(addrs))}")


def check_redis(s: Settings, timeout_s: float) -> tuple[list[Finding], Plan | None, bool]:
    """Redis findings, the plan from the desired set, and whether a sidecar is alive there now."""
    from sidecar.redisconn import make_client

    client = make_client(s, timeout_s=timeout_s, socket_connect_timeout=timeout_s)
    p = s.key_prefix
    try:
        info: dict[str, Any] = client.info()
        found = [ok("redis", f"{s.redis_url_redacted()}: Redis {info.get('redis_version', '?')}")]
        role = str(info.get("role", "?"))
        replica_ro = True
        if role != "master":
            replica_ro = _config_get(client, "replica-read-only") != "no"
        found.append(role_finding(role, replica_ro))
        found.append(
            eviction_finding(str(info.get("maxmemory_policy", "?")), int(info.get("maxmemory", 0)), p)
        )
        found.append(persistence_finding(_config_get(client, "save"), bool(info.get("aof_enabled")), p))
        plan = None
        kind = client.type(p + "desired")
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind in ("set", "none"):
            plan = Plan.from_members(client.smembers(p + "desired"), s.max_tokens, s.max_tokens_per_conn)  # type: ignore[arg-type]
        else:
            found.append(
                fail("redis", f"{p}desired is a {kind}, not a set: run would keep an empty desired set")
            )
        alive = client.get(p + "sidecar:alive")
        if alive is not None:
            found.append(
                ok(
                    "redis",
                    f"a sidecar is running on this Redis now (epoch {alive.decode(errors='replace')})",
                )
            )
        return found, plan, alive is not None
    except redis.RedisError as exc:
        return (
            [fail("redis", f"cannot use {s.redis_url_redacted()}: {type(exc).__name__}: {exc}")],
            None,
            False,
        )
    finally:
        client.close()


def _config_get(client: redis.Redis, name: str) -> str | None:
    """None when CONFIG is refused (managed Redis often renames or forbids it)."""
    try:
        value = client.config_get(name).get(name)
    except redis.ResponseError:
        return None
    if isinstance(value, bytes):
        value = value.decode()
    return value


def check_metrics_port(s: Settings, sidecar_alive: bool) -> Finding:
    if s.metrics_port == 0:
        return ok("metrics", "SIDECAR_METRICS_PORT=0: any free port, logged at start")
    family = socket.AF_INET6 if ":" in s.metrics_addr else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((s.metrics_addr, s.metrics_port))
    except OSError as exc:
        where = f"{s.metrics_addr}:{s.metrics_port}"
        if sidecar_alive:
            return warn("metrics", f"{where} is taken ({exc.strerror}), probably by the running sidecar")
        return fail("metrics", f"cannot listen on {where}: {exc.strerror}; run would exit")
    return ok("metrics", f"{s.metrics_addr}:{s.metrics_port} is free")


def run_check(s: Settings, token: str | None, timeout_s: float) -> tuple[list[Finding], list[str]]:
    found: list[Finding] = [ok("config", "settings valid")]
    redis_found, plan, alive = check_redis(s, timeout_s)
    found += redis_found
    found.append(check_metrics_port(s, alive))
    chosen = token or (plan.first_token if plan is not None else None)
    found.append(resolve("WebSocket", s.ws_url))
    found += ws_finding(probe_ws(s.ws_url, chosen, timeout_s), timeout_s)
    if s.rest_enabled:
        found.append(resolve("REST", s.rest_url))
        found.append(probe_rest(s.rest_url, chosen, timeout_s))
    else:
        found.append(ok("rest", "SIDECAR_REST_ENABLED=false: not checked"))
    return found, plan_lines(s, plan)


def main(s: Settings, args: argparse.Namespace) -> int:
    if args.token is not None and not protocol.is_token_id(args.token):
        print(f"pm-sidecar check: --token {args.token!r} is not a token id (digits only)", file=sys.stderr)
        return EX_USAGE
    found, plan = run_check(s, args.token, args.timeout)
    for f in found:
        print(f.line(), flush=True)
    for line in plan:
        print(line)
    problems = sum(f.level is Level.FAIL for f in found)
    warnings = sum(f.level is Level.WARN for f in found)
    print(f"check: {problems} problem(s), {warnings} warning(s)")
    return exit_code(found)
