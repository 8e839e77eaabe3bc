"""``--redis-url``/``--prefix`` for a worker script, with the sidecar's own settings as defaults.

A worker run with the sidecar's env file sourced (``set -a; . /etc/pm-sidecar/env; set +a``) then
needs no options at all, and an option given replaces only the URL or the prefix: the password
and the TLS CA file still come from the environment.
"""

from __future__ import annotations

import argparse

from sidecar.client.sync import QuoteClient


def add_redis_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--redis-url`` and ``--prefix`` (both default to the environment, then the built-ins)."""
    parser.add_argument("--redis-url", help="default: SIDECAR_REDIS_URL (with SIDECAR_REDIS_PASSWORD)")
    parser.add_argument("--prefix", help="default: SIDECAR_KEY_PREFIX, else pm:")


def client_from_args(args: argparse.Namespace) -> QuoteClient:
    """``QuoteClient.from_env`` with the options of :func:`add_redis_arguments` (empty: not given).

    For asyncio code: ``AsyncQuoteClient.from_env(redis_url=args.redis_url or None,
    prefix=args.prefix or None)``.
    """
    return QuoteClient.from_env(redis_url=args.redis_url or None, prefix=args.prefix or None)
