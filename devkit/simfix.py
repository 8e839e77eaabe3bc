"""The exchange simulator serving wss:// with a self-signed certificate, and a sidecar trusting it.

Production is wss://, so the TLS tests and ``soak --tls`` run the same way: a certificate made
for the run, the simulator serving it, the sidecar trusting it through websocket-client's
``WEBSOCKET_CLIENT_CA_BUNDLE``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pmsim import Simulator
from pmsim.tls import SelfSigned

CA_BUNDLE_VAR = "WEBSOCKET_CLIENT_CA_BUNDLE"


@contextmanager
def tls_simulator(cert: SelfSigned, seed: int) -> Iterator[Simulator]:
    """A started simulator serving ``wss://`` with ``cert``; stopped on exit."""
    with Simulator(seed=seed, tls=cert.server_context()) as sim:
        yield sim


def trust(env: dict[str, str], cert: SelfSigned) -> dict[str, str]:
    """Make a sidecar started with ``env`` trust ``cert``; returns ``env``."""
    env[CA_BUNDLE_VAR] = str(cert.cert)
    return env
