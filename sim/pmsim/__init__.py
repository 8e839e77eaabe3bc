"""Local Polymarket market-channel exchange simulator (WS + REST on loopback) for tests, demo, bench."""

from .book import Top, canon
from .conns import ConnInfo
from .server import Simulator
from .state import MarketInfo

__all__ = ["ConnInfo", "MarketInfo", "Simulator", "Top", "canon"]
