"""Local Polymarket market-channel exchange simulator (WS + REST on loopback) for tests, demo, bench."""

from .book import Top, canon
from .conns import ConnInfo
from .server import Simulator

__all__ = ["ConnInfo", "Simulator", "Top", "canon"]
