"""``sidecar.sim`` (issue 2's name for the simulator) still works in a checkout: the same objects as
``pmsim``, and ``python -m sidecar.sim`` is ``python -m pmsim``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pmsim

import sidecar.sim

ROOT = Path(__file__).resolve().parents[2]


def test_the_alias_exports_the_simulator_itself() -> None:
    assert sidecar.sim.Simulator is pmsim.Simulator
    assert sidecar.sim.canon is pmsim.canon


def test_python_m_sidecar_sim_runs_the_simulator_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sidecar.sim", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "--tls" in out.stdout and "--ws-port" in out.stdout
