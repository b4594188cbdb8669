"""A web server in a real container answers through ``act.forward`` and through ``kiln forward``
(1.7), end to end: a hub process, a provider process, busybox ``httpd`` listening on the
container's own loopback (the container has no network)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import urllib.request

import pytest

import kiln
from kiln.testing import listening
from tests.conftest import IMAGE, Cluster

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

PAGE = b"<h1>served from a container</h1>\n"


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        return bytes(answer.read())


@pytest.fixture
def one_provider(cluster: Cluster) -> Cluster:
    cluster.start_provider("p1", cpus=2, memory="1GiB")
    return cluster


async def test_a_web_server_in_a_container_answers_through_forward_and_kiln_forward(one_provider: Cluster) -> None:
    cluster = one_provider
    async with kiln.connect(cluster.url) as requestor, requestor.rent(IMAGE, kiln.Demand(cpus=0.5)) as act:
        await act.send_bytes(PAGE, "/golem/www/index.html")
        server = act.stream(["busybox", "httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/golem/www"])
        serving = asyncio.create_task(anext(server))  # it runs until the stream is closed
        try:
            await listening(act, 8080)
            async with await act.forward(8080) as fwd:
                pages = await asyncio.gather(
                    *(asyncio.to_thread(get, f"http://127.0.0.1:{fwd.port}/") for _ in range(4))
                )
                assert pages == [PAGE] * 4

            # Another process, another session of the same requestor (a hub without tokens: any).
            cli = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "kiln.cli", "forward", "--hub", cluster.url, act.id, "8080",
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert cli.stdout is not None
            line = (await asyncio.wait_for(cli.stdout.readline(), 20)).decode()
            assert line.startswith("forwarding 127.0.0.1:") and line.rstrip().endswith(f" -> {act.id}:8080"), line
            local = line.split()[1]
            assert await asyncio.to_thread(get, f"http://{local}/index.html") == PAGE
            cli.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(cli.wait(), 10) == 0
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            await server.aclose()  # the server is killed
