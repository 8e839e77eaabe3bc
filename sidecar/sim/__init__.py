"""Compatibility name for the exchange simulator, which lives in its own package, ``pmsim``.

The simulator is a dev tool installed by ``make install`` (``pip install -e ./sim``); the product never
imports it. ``sidecar.sim`` and ``python -m sidecar.sim`` keep working for scripts written before the move.
"""

from __future__ import annotations

try:
    from pmsim import ConnInfo, Simulator, Top, canon
except ImportError as exc:  # pragma: no cover - only without the dev install
    raise ImportError(
        "the exchange simulator is the pmsim package: run `make install` (pip install -e ./sim)"
    ) from exc

__all__ = ["ConnInfo", "Simulator", "Top", "canon"]
