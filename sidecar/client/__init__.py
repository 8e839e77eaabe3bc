"""The consumer side of pm-sidecar: read quotes, follow them, and tell the sidecar what to quote.

Needs only ``redis`` (no part of the sidecar's engine, WebSocket, pydantic or Prometheus code)::

    from sidecar.client import QuoteClient

    client = QuoteClient.from_env()               # or QuoteClient("redis://127.0.0.1:6379/0")
    client.want(["7132..."])                      # scheduler: add a token to P desired
    quote = client.wait_live("7132...", 30)       # start gate: live and sidecar alive
    if quote is not None and quote.usable(60):    # worker: alive, live, confirmed < 60 s ago
        print(quote.bid, quote.ask)

``AsyncQuoteClient`` is the asyncio twin with the same names (``await client.get(token)``,
``async for quote in client.follow(tokens)``). The rules behind ``usable`` and the Redis keys:
docs/redis-contract.md.
"""

from sidecar.client.aio import AsyncFollower, AsyncQuoteClient
from sidecar.client.args import add_redis_arguments, client_from_args
from sidecar.client.follow import Follower
from sidecar.client.quote import Quote, check_tokens
from sidecar.client.sync import QuoteClient

__all__ = [
    "AsyncFollower",
    "AsyncQuoteClient",
    "Follower",
    "Quote",
    "QuoteClient",
    "add_redis_arguments",
    "check_tokens",
    "client_from_args",
]
