"""A provider stopped with Ctrl-C while it works leaves the hub as SIGTERM has it leave: closed
with 1001 (going away), logged by the hub at INFO, and its requestors told why at once."""

from __future__ import annotations

import asyncio
import signal

import pytest

import kiln
from tests.conftest import IMAGE, Cluster, provider_left

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

SMALL = kiln.Demand(cpus=0.1, memory="32MiB")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_busy_provider_stopped_with_a_signal_leaves_with_1001_logged_at_info(
    cluster: Cluster, sig: signal.Signals
) -> None:
    name = await asyncio.to_thread(cluster.start_provider, "busy", cpus=2, memory="2GiB")
    async with kiln.connect(cluster.url) as requestor:
        output, waiting = await requestor.rent(IMAGE, SMALL), await requestor.rent(IMAGE, SMALL)
        streaming = asyncio.ensure_future(output.run(["sh", "-c", "yes kiln | head -c 1000000000"], timeout=60))
        sleeping = asyncio.ensure_future(waiting.run(["sleep", "60"], timeout=90))
        await asyncio.sleep(1.0)  # output flowing, a command waiting
        process = cluster.providers[name]
        # A terminal's Ctrl-C signals the whole foreground group; the provider is alone in its own.
        process.popen.send_signal(sig)
        outcomes = await asyncio.gather(streaming, sleeping, return_exceptions=True)
        assert await asyncio.to_thread(process.popen.wait, 60) == 0, process.output()[-3000:]
    for outcome in outcomes:
        assert isinstance(outcome, kiln.ProviderLost), outcome
        assert "closed with code 1001 (the provider stops)" in str(outcome), outcome
    left = await provider_left(cluster, name)
    assert " INFO " in left and "1001" in left, left
    assert "Traceback" not in process.output() and "kiln.provider INFO stopped" in process.output()
