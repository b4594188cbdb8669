"""Outbound access (protocol 1.7) from real containers: a provider process with a policy, a hosts
file that maps test names to this machine's loopback, and containers whose commands (busybox
``wget`` and ``nc``) go out through the proxy inside them to a web server of the test's. The
hub is played by the test (tests/scripted_hub.py), so that ``create`` carries ``outbound``
whatever the hub matches; the last test asks a real hub, which must not match a rent with
``outbound`` to a provider that allows none."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import kiln
from kiln.testing import LocalCluster
from tests.conftest import IMAGE, Cluster
from tests.docker.test_provider_connect import stopped_containers
from tests.scripted_hub import Provider, scripted_hub

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]


async def _site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A web server that answers every request with the line it got."""
    line = await reader.readline()
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    body = b"you asked: " + line.strip()
    writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


@dataclass
class Container:
    provider: Provider
    site: int
    """The port of the test's web server on this machine's loopback (site.test and rebound.test)."""
    ids = iter(range(10, 10_000))

    async def run(self, script: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        request = next(self.ids)
        await self.provider.send(
            {"type": "exec", "id": request, "activity": "a1", "argv": ["sh", "-c", script], "env": env or {}}
        )
        result = await self.provider.receive()
        assert result["re"] == request, result
        result["stdout"] = base64.b64decode(result["stdout"]).decode()
        result["stderr"] = base64.b64decode(result["stderr"]).decode()
        return result


@pytest.fixture
async def container(tmp_path: Path, busybox_image: str) -> AsyncIterator[Container]:
    """A container whose rent may reach site.test and rebound.test (both this machine's loopback:
    only site.test may reach it, by the operator's leave) and 10.1.2.3:80, on a provider whose
    policy allows anything under .test."""
    site = await asyncio.start_server(_site, "127.0.0.1", 0)
    port = site.sockets[0].getsockname()[1]
    (tmp_path / "policy").write_text("# test names only\n*.test:*\n10.1.2.3:80\n")
    (tmp_path / "hosts").write_text("127.0.0.1 site.test rebound.test\n")
    cluster = LocalCluster(tmp_path / "logs", suffix=f"-{secrets.token_hex(3)}")
    flags = ["--outbound", str(tmp_path / "policy"), "--hosts", str(tmp_path / "hosts")]
    flags += ["--outbound-private", f"site.test:{port}"]
    try:
        async with scripted_hub("1.7") as hub:
            cluster.url = hub.url
            cluster.start_provider("p", *flags, cpus=1, memory="1GiB", wait=False)
            provider = await hub.provider()
            assert provider.raw_offers[-1]["outbound"] == ["*.test:*", "10.1.2.3:80"]
            rules = [f"site.test:{port}", f"rebound.test:{port}", "10.1.2.3:80"]
            resources = {"cpus": 0.5, "memory": 64 * 2**20}
            create = {"type": "create", "id": 1, "activity": "a1", "image": IMAGE, "resources": resources}
            await provider.send({**create, "outbound": rules})
            assert (await provider.receive())["type"] == "done"
            yield Container(provider, port)
    finally:
        stopped_containers(cluster)
        site.close()


async def test_an_allowed_site_is_reached_through_the_proxy(container: Container) -> None:
    env = await container.run("echo $http_proxy $HTTPS_PROXY $no_proxy")
    assert env["stdout"] == "http://127.0.0.1:3128 http://127.0.0.1:3128 localhost,127.0.0.1\n"
    got = await container.run(f"wget -q -O - http://site.test:{container.site}/hello")
    assert (got["exit_code"], got["stdout"]) == (0, "you asked: GET /hello HTTP/1.1"), got
    # CONNECT, the bytes of the request after it passed on as they are.
    tunnel = f"CONNECT site.test:{container.site} HTTP/1.1\r\n\r\nGET /tunnel HTTP/1.0\r\n\r\n"
    got = await container.run(f"printf '{tunnel}' | nc 127.0.0.1 3128")
    assert got["stdout"].startswith("HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.0 200 OK\r\n"), got
    assert got["stdout"].endswith("you asked: GET /tunnel HTTP/1.0"), got


async def test_other_sites_and_private_addresses_are_refused(container: Container) -> None:
    other = await container.run(f"wget -q -O - http://other.test:{container.site}/")
    assert other["exit_code"] == 1 and "403 Forbidden" in other["stderr"], other
    asked = "printf 'GET http://%s/ HTTP/1.0\\r\\n\\r\\n' {} | nc 127.0.0.1 3128"
    for target, reason in (
        (f"other.test:{container.site}", f"other.test:{container.site} is not among the sites this rent may reach"),
        (f"rebound.test:{container.site}", "rebound.test resolves to 127.0.0.1, a private address"),
        ("10.1.2.3:80", "10.1.2.3 resolves to 10.1.2.3, a private address"),
    ):
        got = await container.run(asked.replace("{}", target))
        assert got["stdout"].startswith("HTTP/1.1 403 Forbidden\r\n"), got
        assert got["stdout"].endswith(f"\r\n\r\n{reason}\n"), got


async def test_a_provider_that_allows_none_gets_no_such_rent(cluster: Cluster) -> None:
    """Needs the hub's matching of ``outbound`` (1.7)."""
    await asyncio.to_thread(cluster.start_provider, "closed", cpus=1, memory="1GiB")
    async with kiln.connect(cluster.url) as requestor:
        with pytest.raises(kiln.NoMatch):
            async with requestor.rent(IMAGE, kiln.Demand(cpus=0.5, memory="64MiB", outbound=["example.org:443"])):
                pass
