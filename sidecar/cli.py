"""Command line: ``pm-sidecar run`` (alias ``python -m sidecar run``), ``config`` and ``bridge``."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from sidecar import __version__

if TYPE_CHECKING:
    from sidecar.config import Settings

SETTINGS_HELP = """\
All configuration comes from SIDECAR_* environment variables (or a .env file in the working
directory); see .env.example for every setting with its default. The most used:

  SIDECAR_WS_URL              market channel (default wss://ws-subscriptions-clob.polymarket.com/ws/market)
  SIDECAR_REST_URL            REST base for quiet-token confirmation (default https://clob.polymarket.com)
  SIDECAR_REDIS_URL           redis://host:port/db, rediss:// for TLS (default redis://127.0.0.1:6379/0)
  SIDECAR_REDIS_PASSWORD      Redis password (never logged)
  SIDECAR_KEY_PREFIX          prefix P of every Redis key (default pm:)
  SIDECAR_METRICS_ADDR/PORT   /metrics, /healthz, /readyz (default 127.0.0.1:9464)
  SIDECAR_MAX_TOKENS_PER_CONN tokens per socket (default 200)
  SIDECAR_SILENCE_MAX_S       upper bound of a socket's data-silence threshold (default 120)
  SIDECAR_QUIET_CONFIRM_S     REST re-confirmation period of quiet live quotes (default 30)
  SIDECAR_ALIVE_TTL_S         TTL of P sidecar:alive (default 5)

Exit codes: 0 clean stop (SIGTERM/SIGINT), 78 invalid configuration.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pm-sidecar",
        description="Polymarket market-channel sidecar: top-of-book quotes for each desired token, in Redis.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=SETTINGS_HELP,
    )
    parser.add_argument("--version", action="version", version=f"pm-sidecar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser(
        "run",
        help="run the sidecar until SIGTERM/SIGINT",
        description="Run the sidecar: read the desired set from Redis, hold the market-channel sockets, "
        "write quotes to Redis. Stops cleanly on SIGTERM/SIGINT (quotes marked stale, alive key removed).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=SETTINGS_HELP,
    )
    sub.add_parser(
        "config",
        help="validate the configuration and print it (secrets masked)",
        description="Validate SIDECAR_* settings and print the effective configuration; exit 78 if invalid.",
    )
    check = sub.add_parser(
        "check",
        help="check this host before the first run: config, Redis, exchange, REST, metrics port",
        description="Validate the configuration, then check Redis (version, role, eviction policy, "
        "persistence, the desired set), the metrics port, DNS, one market-channel socket and one REST "
        "request, and print what `run` would do. Exit 0: no problem (warnings allowed); 1: one FAIL "
        "line per problem; 2: bad arguments; 78: invalid configuration.",
    )
    check.add_argument("--token", help="token id for the socket and REST checks (default: lowest desired)")
    check.add_argument("--timeout", type=float, default=5.0, metavar="S", help="per network step (default 5)")
    bridge = sub.add_parser(
        "bridge",
        help="keep the legacy ws_cache.json current from Redis (for the maker bot's workers)",
        description="Write the maker bot's ws_cache.json from the sidecar's Redis quotes: an entry per "
        "desired token once seen live, prices 0.0 whenever it is not live or the sidecar is not alive. "
        "Redis from SIDECAR_REDIS_URL, SIDECAR_REDIS_PASSWORD, SIDECAR_KEY_PREFIX. "
        "Stops on SIGTERM/SIGINT (exit 0); exit 78 on a bad argument. See docs/migration.md.",
    )
    bridge.add_argument("--ws-cache", required=True, metavar="PATH", help="the JSON file to keep current")
    bridge.add_argument(
        "--heartbeat-s", type=float, default=30.0, help="rewrite at least this often (default 30)"
    )
    bridge.add_argument(
        "--poll-s", type=float, default=0.2, help="Redis read period, at most 0.4 (default 0.2)"
    )
    from sidecar import status

    status.add_arguments(
        sub.add_parser(
            "status",
            help="show the sidecar and every desired token, from Redis (exit 0 alive, 1 not, 2 no Redis)",
            description="Read the sidecar's Redis keys and show whether it is alive, its summary, and "
            "each desired token worst first. Exit 0 when alive, 1 when not, 2 when Redis cannot be "
            "reached. Redis from SIDECAR_REDIS_URL, SIDECAR_REDIS_PASSWORD, SIDECAR_KEY_PREFIX.",
        )
    )
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "bridge":
        # Imports only the client and the standard library: no pydantic/engine load for the bridge.
        from sidecar.bridge import run as run_bridge

        return run_bridge(args.ws_cache, args.heartbeat_s, args.poll_s)
    if args.command == "status":  # reads Redis only, through sidecar.client
        return status.run(args)
    from sidecar.config import load_settings_or_exit

    settings = load_settings_or_exit()
    if args.command == "config":
        return print_config(settings)
    if args.command == "check":
        from sidecar.check import main as run_check

        return run_check(settings, args)
    from sidecar.shell import allocator
    from sidecar.shell.app import Runtime, configure_logging

    configure_logging(settings.log_level, settings.log_format)
    allocator.tune()
    return Runtime(settings).run()


def print_config(settings: Settings) -> int:
    for name, value in settings.model_dump().items():
        if name == "redis_url":
            value = settings.redis_url_redacted()
        elif name == "redis_password" and value is not None:
            value = "**********"
        print(f"SIDECAR_{name.upper()}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
