"""``python -m sidecar.sim`` runs ``python -m pmsim`` (the simulator's own package)."""

from __future__ import annotations

import sys

from pmsim.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
