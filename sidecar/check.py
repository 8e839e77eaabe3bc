"""``pm-sidecar check``: is this host ready to run the sidecar? The first command on a new host.

Checks, in order, each on its own so that one failure does not hide the others: the
configuration (exit 78 when invalid, as ``run``), Redis (version, role, eviction policy,
persistence, the desired set), the metrics port, DNS of the exchange hosts, one market-channel
socket and one REST request. Then it prints what ``run`` would do with the desired set as it is now.

The decisions ("is this maxmemory-policy a problem?") are pure functions of what was read, in
``sidecar.check_rules`` (unit tested); this module is the thin I/O around them. Exit codes: 0 no
problem (warnings allowed), 1 at least one problem (one ``FAIL`` line each), 2 bad arguments,
78 invalid configuration.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis
import websocket

from sidecar.check_rules import (
    EX_USAGE,
    NOT_JSON,
    Finding,
    Level,
    Plan,
    WsOutcome,
    eviction_finding,
    exit_code,
    fail,
    ok,
    persistence_finding,
    plan_lines,
    rest_finding,
    role_finding,
    warn,
    ws_finding,
)
from sidecar.config import Settings
from sidecar.core import protocol
from sidecar.shell.http import Budget, HttpClient, RequestFailed

ONE_OFF_RPS = 1000.0  # check sends one request: the budget must not delay it


def probe_ws(url: str, token: str | None, timeout_s: float) -> WsOutcome:
    """Open one socket as ``run`` does, send ``run``'s first frame and a PING, read until done.

    Without a token the subscription carries an empty ``assets_ids``: valid JSON of the right
    shape, which the simulator accepts and the live server may refuse (close 1008). ``run`` never
    sends one, so ``ws_finding`` makes that refusal a warning, not a failure.
    """
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
    """One ``POST /books`` through the sidecar's own HTTP client (redirects reported, not followed)."""
    url = base_url.rstrip("/") + "/books"
    body = orjson.dumps([{"token_id": token}] if token else [])
    client = HttpClient(base_url, Budget(ONE_OFF_RPS), timeout_s)
    try:
        answer = client.request("POST", "/books", body)
    except RequestFailed as exc:
        return rest_finding(url, None, None, str(exc), token)
    finally:
        client.close()
    location = answer.location if not 200 <= answer.status < 300 else None
    return rest_finding(url, answer.status, _json(answer.body), None, token, location)


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return NOT_JSON


def resolve(area: str, url: str) -> Finding:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        addrs = {
            str(info[4][0]) for info in socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
        }
    except OSError as exc:
        return fail("dns", f"{area} host {host!r} does not resolve: {exc}")
    return ok("dns", f"{area} host {host} -> {', '.join(sorted(addrs))}")


def check_redis(s: Settings, timeout_s: float) -> tuple[list[Finding], Plan | None, bool]:
    """Redis findings, the plan from the desired set, and whether a sidecar is alive there now."""
    from sidecar.shell.redisconn import make_client

    client = make_client(s, timeout_s=timeout_s, socket_connect_timeout=timeout_s)
    p = s.key_prefix
    found: list[Finding] = []
    plan = None
    alive = None
    try:
        info: dict[str, Any] = client.info()
        found.append(ok("redis", f"{s.redis_url_redacted()}: Redis {info.get('redis_version', '?')}"))
        role = str(info.get("role", "?"))
        replica_ro = True
        if role != "master":
            replica_ro = _config_get(client, "replica-read-only") != "no"
        found.append(role_finding(role, replica_ro))
        found.append(
            eviction_finding(str(info.get("maxmemory_policy", "?")), int(info.get("maxmemory", 0)), p)
        )
        found.append(persistence_finding(_config_get(client, "save"), bool(info.get("aof_enabled")), p))
        kind = client.type(p + "desired")
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind in ("set", "none"):
            members = client.smembers(p + "desired")
            plan = Plan.from_members(members, s.max_tokens, s.max_tokens_per_conn)
        else:
            found.append(
                fail("redis", f"{p}desired is a {kind}, not a set: run would keep an empty desired set")
            )
        alive = client.get(p + "sidecar:alive")
        if alive is not None:
            epoch = alive if isinstance(alive, str) else alive.decode(errors="replace")
            found.append(ok("redis", f"a sidecar is running on this Redis now (epoch {epoch})"))
        if role == "master":  # a read-only replica is already one FAIL line
            found.append(write_probe(client, p))
    except redis.RedisError as exc:
        found.append(fail("redis", f"cannot use {s.redis_url_redacted()}: {type(exc).__name__}: {exc}"))
    finally:
        client.close()
    return found, plan, alive is not None


def write_probe(client: redis.Redis, prefix: str) -> Finding:
    """The sidecar's kinds of write, in one MULTI/EXEC on keys of its own that are gone at the end.

    Catches an ACL user that may read but not write (or not these commands, or not under the
    prefix) and a server without ``SET ... GET`` (Redis < 6.2), which the writer's stamp needs.
    """
    key = f"{prefix}check:{os.getpid()}"
    pipe = client.pipeline(transaction=True)
    pipe.set(key + ":stamp", "check", px=10_000, get=True)
    pipe.hset(key, mapping={"check": "1"})
    pipe.persist(key)
    pipe.expire(key, 10)
    pipe.publish(key, b"check")
    pipe.delete(key, key + ":stamp")
    try:
        pipe.execute()
    except redis.RedisError as exc:
        return fail(
            "redis",
            f"cannot write as the sidecar does (MULTI/EXEC of SET GET, HSET, PERSIST, EXPIRE, PUBLISH, "
            f"DEL on {key}): {type(exc).__name__}: {exc}",
        )
    return ok("redis", "writes as the sidecar does (MULTI/EXEC of SET GET, HSET, EXPIRE, PUBLISH, DEL)")


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
    # A host that does not resolve is one problem: its connection is not tried as a second one.
    dns = resolve("WebSocket", s.ws_url)
    found.append(dns)
    if dns.level is not Level.FAIL:
        found += ws_finding(probe_ws(s.ws_url, chosen, timeout_s), timeout_s)
    if s.rest_enabled:
        dns = resolve("REST", s.rest_url)
        found.append(dns)
        if dns.level is not Level.FAIL:
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
