"""pm-sidecar: Polymarket market channel to Redis quotes."""

__version__ = "0.1.0"
