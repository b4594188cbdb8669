"""A CA made for the tests with the ``openssl`` command, and a hub certificate it signed for
``127.0.0.1`` (subjectAltName IP:127.0.0.1); plus a second CA that signed nothing the hub
presents, whose key is also a key that matches no certificate of the hub's."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

DAYS = "2"
NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
"""``openssl req``'s flags for a new P-256 key, written unencrypted."""


@dataclass(frozen=True)
class Certificates:
    ca: Path
    """The test CA's certificate (PEM): what a client trusts."""
    cert: Path
    """The hub's certificate for 127.0.0.1, signed by :attr:`ca`."""
    key: Path
    """The hub certificate's private key, unencrypted."""
    other_ca: Path
    """A CA that signed nothing of the hub's."""
    other_key: Path
    """The other CA's key: a key that does not match :attr:`cert`."""

    def context(self) -> ssl.SSLContext:
        """A client context trusting the test CA (and nothing else)."""
        return ssl.create_default_context(cafile=self.ca)

    def hub_args(self) -> tuple[str, ...]:
        return ("--tls-cert", str(self.cert), "--tls-key", str(self.key))


def _openssl(folder: Path, *args: str) -> None:
    done = subprocess.run(["openssl", *args], cwd=folder, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed:\n{done.stderr}")


def _ca(folder: Path, name: str) -> None:
    files = ("-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", DAYS, "-subj", f"/CN=Kiln test {name}")
    usage = ("-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl(folder, "req", "-x509", *NEW_KEY, *files, *usage, "-addext", "subjectKeyIdentifier=hash")


def make_certificates(folder: Path) -> Certificates:
    """Write a CA, a hub certificate for 127.0.0.1 it signed, and another CA into ``folder``."""
    if shutil.which("openssl") is None:
        pytest.fail("the TLS tests make their CA with the openssl command: apt-get install openssl")
    folder.mkdir(parents=True, exist_ok=True)
    _ca(folder, "ca")
    _ca(folder, "other-ca")
    _openssl(folder, "req", *NEW_KEY, "-keyout", "hub.key", "-out", "hub.csr", "-subj", "/CN=127.0.0.1")
    (folder / "hub.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    signer = ("-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial")
    _openssl(folder, "x509", "-req", "-in", "hub.csr", *signer, "-out", "hub.pem", "-days", DAYS, "-extfile", "hub.ext")
    return Certificates(
        ca=folder / "ca.pem",
        cert=folder / "hub.pem",
        key=folder / "hub.key",
        other_ca=folder / "other-ca.pem",
        other_key=folder / "other-ca.key",
    )
