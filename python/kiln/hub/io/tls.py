"""The hub's TLS: a server context from a PEM certificate and its key (``kiln hub --tls-cert --tls-key``).

::

    async with start(host, port, ssl=server_context(Path("hub.pem"), Path("hub.key"))) as server:
        ...  # serves wss://

Every mistake in the two files is a :class:`~kiln.protocol.errors.UsageError` naming the
file, found before the hub listens: not at the first client's handshake.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import NoReturn

from kiln.protocol.errors import UsageError


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context presenting ``cert`` (PEM, the server's certificate first,
    then any intermediates) with its unencrypted private ``key`` (PEM).

    Raises :class:`~kiln.protocol.errors.UsageError` for a file that cannot be read, holds
    no certificate or key, an encrypted key, or a key that does not match the certificate.
    """
    for path, what, marker in ((cert, "certificate", "-----BEGIN CERTIFICATE-----"), (key, "key", "PRIVATE KEY-----")):
        try:
            text = path.read_text(errors="replace")
        except OSError as e:
            raise UsageError(f"cannot read the TLS {what} {path}: {e.strerror or e}") from e
        if marker not in text:
            raise UsageError(f"{path} holds no PEM {what} for TLS (no {marker.strip('-')!r} in it)")

    def no_password() -> NoReturn:
        # Without this callback OpenSSL would prompt on the terminal.
        raise UsageError(f"the TLS key {key} is encrypted: give the hub an unencrypted one")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key, password=no_password)
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise UsageError(f"the TLS key {key} does not match the certificate {cert}") from e
        raise UsageError(f"cannot use the TLS certificate {cert} with the key {key}: {e}") from e
    return context
