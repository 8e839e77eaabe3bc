"""A throwaway self-signed certificate for the simulator's wss:// endpoint (tests, soak, demo).

Made with the ``openssl`` command line tool so the project needs no extra Python dependency. The
certificate is its own CA: a client trusts it by loading the certificate file as a CA bundle
(websocket-client reads ``WEBSOCKET_CLIENT_CA_BUNDLE``; any OpenSSL client honours
``SSL_CERT_FILE``).
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SelfSigned:
    cert: Path  # PEM certificate, also the CA file a client must trust
    key: Path  # PEM private key (unencrypted)

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def make_self_signed(directory: Path, host: str = "127.0.0.1") -> SelfSigned:
    """Write cert.pem/key.pem for ``host`` (plus localhost) into directory, valid for two days."""
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("the openssl command is needed to make a test certificate")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    san = f"subjectAltName=IP:{host},DNS:localhost" if host[0].isdigit() else f"subjectAltName=DNS:{host}"
    subprocess.run(
        [
            binary,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={host}",
            "-addext",
            san,
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return SelfSigned(cert, key)
