"""TLS: a hub serving wss:// with a certificate of a CA made for the test (``tests/tls.py``);
every client that trusts that CA gets in, every other one refuses the hub and says why.

In-process hubs for the SDK's errors; hub processes for the command line. Providers (``--ca``)
and a command run through a TLS hub: tests/docker/test_tls_providers.py.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

import kiln
from kiln.cli import main
from kiln.connection import client_context, tls_options
from kiln.hub.io.server import start
from kiln.hub.io.tls import server_context
from kiln.testing import LocalCluster
from tests.tls import Certificates

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def serve(tmp_path: Path, context: ssl.SSLContext | None) -> AsyncIterator[str]:
    async with start("127.0.0.1", 0, data_dir=tmp_path / "hub", ssl=context) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"{'ws' if context is None else 'wss'}://127.0.0.1:{port}"


@pytest.fixture
async def hub(tmp_path: Path, tls: Certificates) -> AsyncIterator[str]:
    """An in-process hub serving wss:// with the test CA's certificate."""
    async with serve(tmp_path, server_context(tls.cert, tls.key)) as url:
        yield url


@pytest.fixture
async def plain_hub(tmp_path: Path) -> AsyncIterator[str]:
    async with serve(tmp_path, None) as url:
        yield url


# --- the hub's certificate and key --------------------------------------------------------


def test_a_hub_context_serves_tls_1_2_and_later(tls: Certificates) -> None:
    assert server_context(tls.cert, tls.key).minimum_version == ssl.TLSVersion.TLSv1_2


def test_bad_tls_files_are_refused_with_the_file_named(tls: Certificates, tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(tls.key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted)],
        check=True,
        capture_output=True,
    )
    cases = [
        (tmp_path / "missing.pem", tls.key, "cannot read the TLS certificate"),
        (tls.cert, tmp_path / "missing.key", "cannot read the TLS key"),
        (tls.key, tls.key, "holds no PEM certificate"),
        (tls.cert, tls.cert, "holds no PEM key"),
        (tls.cert, tls.other_key, "does not match the certificate"),
        (tls.cert, encrypted, "is encrypted"),
    ]
    for cert, key, expected in cases:
        with pytest.raises(kiln.UsageError, match=expected):
            server_context(cert, key)


def test_kiln_hub_takes_both_tls_files_or_neither(tls: Certificates, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hub", "--port", "0", "--tls-cert", str(tls.cert)]) == 2  # a usage error: nothing ran
    assert "give both --tls-cert and --tls-key" in capsys.readouterr().err
    assert main(["hub", "--port", "0", "--tls-cert", str(tls.cert), "--tls-key", str(tls.other_key)]) == 1
    assert "does not match the certificate" in capsys.readouterr().err


async def test_a_silent_tls_handshake_is_cut_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tls: Certificates
) -> None:
    from kiln.hub.io import server as hub_server

    monkeypatch.setattr(hub_server, "OPEN_TIMEOUT", 0.3)
    async with serve(tmp_path, server_context(tls.cert, tls.key)) as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
        try:
            started = time.monotonic()
            async with asyncio.timeout(5):
                assert await reader.read() == b""  # closed by the hub, not by our timeout
            assert time.monotonic() - started < 3
        finally:
            writer.close()
            await writer.wait_closed()


# --- the Python client ----------------------------------------------------------------------


async def test_a_client_trusting_the_ca_gets_in(hub: str, tls: Certificates) -> None:
    async with kiln.connect(hub, ssl=tls.context()) as requestor:
        assert await requestor.market() == []
    async with kiln.connect(hub, ssl=str(tls.ca)) as requestor:  # the CA's file will do
        assert await requestor.market() == []


@pytest.mark.parametrize("trust", ["system", "other"])
async def test_a_client_without_the_ca_refuses_the_hub(hub: str, tls: Certificates, trust: str) -> None:
    context = ssl.create_default_context() if trust == "system" else ssl.create_default_context(cafile=tls.other_ca)
    with pytest.raises(kiln.ConnectionLost, match="presented a certificate that is not trusted") as refused:
        async with kiln.connect(hub, ssl=context):
            pass
    assert "--ca FILE" in refused.value.message
    assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)
    with pytest.raises(kiln.ConnectionLost, match="not trusted"):
        async with kiln.connect(hub):  # the system's trust store: the test CA is not in it
            pass


async def test_a_certificate_for_another_address_is_refused(hub: str, tls: Certificates) -> None:
    with pytest.raises(kiln.ConnectionLost, match="presented a certificate for another address"):
        async with kiln.connect(hub.replace("127.0.0.1", "localhost"), ssl=tls.context()):
            pass


async def test_a_plain_client_of_a_tls_hub_is_told_to_use_wss(hub: str) -> None:
    plain = hub.replace("wss://", "ws://")
    with pytest.raises(kiln.ConnectionLost, match=r"cannot reach the hub at ws://.*a hub that serves TLS has a wss://"):
        async with kiln.connect(plain):
            pass


async def test_a_tls_client_of_a_plain_hub_is_told_to_use_ws(plain_hub: str, tls: Certificates) -> None:
    with pytest.raises(kiln.ConnectionLost, match=r"does the hub serve TLS\? a hub without --tls-cert has a ws://"):
        async with kiln.connect(plain_hub.replace("ws://", "wss://"), ssl=tls.context()):
            pass


async def test_a_ca_is_for_wss_only_and_must_be_a_certificate(plain_hub: str, tls: Certificates) -> None:
    with pytest.raises(kiln.UsageError, match="is for a wss:// hub"):
        async with kiln.connect(plain_hub, ssl=tls.context()):
            pass
    with pytest.raises(kiln.UsageError, match="holds no PEM certificate of a CA"):
        client_context(tls.key)
    with pytest.raises(kiln.UsageError, match="cannot read the CA certificate"):
        tls_options("wss://127.0.0.1:1", str(tls.ca) + ".missing")
    assert tls_options("ws://127.0.0.1:1") == {}
    made = tls_options("wss://127.0.0.1:1")["ssl"]
    assert made.verify_mode == ssl.CERT_REQUIRED and made.check_hostname
    assert made.minimum_version == ssl.TLSVersion.TLSv1_2


# --- the command line ------------------------------------------------------------------------


def kiln_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiln.cli", *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_kiln_hub_serves_wss_and_kiln_market_trusts_its_ca(tmp_path: Path, tls: Certificates) -> None:
    with LocalCluster(tmp_path, ca=tls.ca) as cluster:
        url = cluster.start_hub(*tls.hub_args())
        assert url.startswith("wss://127.0.0.1:")
        trusted = kiln_cli("market", "--hub", url, "--ca", str(tls.ca))
        assert (trusted.returncode, trusted.stdout) == (0, "no providers\n"), trusted.stderr
        refused = kiln_cli("market", "--hub", url)
        assert refused.returncode == 1
        assert "presented a certificate that is not trusted" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
        other = ["--hub", url, "--ca", str(tls.other_ca)]
        for command in (["run", *other, "kiln-busybox:latest", "--", "true"], ["image", "ls", *other]):
            refused = kiln_cli(*command)
            assert refused.returncode == 1 and "not trusted" in refused.stderr, refused.stderr
        assert cluster.hub is not None and "Traceback" not in cluster.hub.output()
