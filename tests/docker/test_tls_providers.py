"""TLS with providers: a provider with ``--ca`` serving a Python requestor and ``kiln run`` through a
``wss://`` hub, a provider without it kept out (the hub and the clients alone: tests/service/test_tls.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

import kiln
from tests.conftest import Cluster
from tests.service.test_tls import kiln_cli
from tests.tls import Certificates

pytestmark = pytest.mark.docker


# --- providers (Docker) ----------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_a_provider_with_the_ca_serves_through_a_tls_hub(tls_cluster: Cluster, tls: Certificates) -> None:
    name = await asyncio.to_thread(tls_cluster.start_provider, "p1", "--ca", str(tls.ca))
    async with (
        kiln.connect(tls_cluster.url, ssl=tls.context()) as requestor,
        requestor.rent("kiln-busybox:latest", kiln.Demand(cpus=0.5, memory="64MiB")) as act,
    ):
        assert act.provider == name
        result = await act.run(["echo", "over TLS"], timeout=30)
        assert (result.exit_code, result.stdout) == (0, "over TLS\n")
    run = await asyncio.to_thread(
        kiln_cli,
        "run",
        "--hub",
        tls_cluster.url,
        "--ca",
        str(tls.ca),
        "--memory",
        "64MiB",
        "kiln-busybox:latest",
        "--",
        "echo",
        "hi",
    )
    assert (run.returncode, run.stdout) == (0, "hi\n"), run.stderr


@pytest.mark.timeout(120)
async def test_a_provider_without_the_ca_does_not_get_in(tls_cluster: Cluster, tls: Certificates) -> None:
    name = await asyncio.to_thread(tls_cluster.start_provider, "stranger", wait=False)
    provider = tls_cluster.providers[name]
    deadline = time.monotonic() + 20
    while "presented a certificate that is not trusted" not in provider.output():
        assert time.monotonic() < deadline, provider.output()
        assert provider.popen.poll() is None, provider.output()
        await asyncio.sleep(0.2)
    await asyncio.sleep(3)  # it keeps dialling, and keeps failing
    assert provider.popen.poll() is None, provider.output()
    assert provider.output().count("not trusted") == 1, "told once, not at every dial"
    async with kiln.connect(tls_cluster.url, ssl=tls.context()) as requestor:
        assert [p.name for p in await requestor.market()] == []


def test_a_provider_ca_is_for_a_wss_hub(tls: Certificates) -> None:
    refused = kiln_cli("provider", "--hub", "ws://127.0.0.1:1", "--name", "tls-misuse", "--ca", str(tls.ca))
    assert refused.returncode == 1
    assert "is for a wss:// hub" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
