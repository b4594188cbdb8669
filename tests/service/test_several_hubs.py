"""Clients given several hubs: the requestor SDK and the command line join the first hub that
answers, and a requestor whose hub is SIGKILLed dials the next one. Real hub processes (SQLite,
each its own data folder: two markets here, as no database joins them) and simulated providers.
The order of dials by itself: tests/unit/test_hub_ring.py; a real provider moving between hubs:
tests/docker/test_provider_hubs.py."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import kiln
from kiln.testing import LocalCluster
from kiln.testing.simulated import simulated_providers

pytestmark = pytest.mark.timeout(120)

IMAGE = "kiln-busybox:latest"


def dead_hub() -> str:
    """The URL of a hub that is gone: a loopback port nothing listens on any more."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def hubs(tmp_path: Path) -> Iterator[tuple[LocalCluster, LocalCluster]]:
    """Two hub processes, each with its own data folder and log folder."""
    with LocalCluster(tmp_path / "a") as a, LocalCluster(tmp_path / "b") as b:
        a.start_hub("--grace", "30")
        b.start_hub("--grace", "30")
        yield a, b


async def test_a_requestor_joins_the_first_hub_that_answers(hubs: tuple[LocalCluster, LocalCluster]) -> None:
    _, b = hubs
    dead, also_dead = dead_hub(), dead_hub()
    for given in ([dead, b.url], f"{dead},{b.url}"):
        async with kiln.connect(given, name="two") as requestor:
            assert requestor.url == b.url
            assert await requestor.market() == []
    with pytest.raises(kiln.ConnectionLost) as caught:
        await kiln.connect([dead, also_dead])
    said = caught.value.message
    assert said.startswith(f"no hub answered: cannot reach the hub at {dead}: "), said
    assert f"; cannot reach the hub at {also_dead}: " in said
    with pytest.raises(kiln.UsageError, match="'http://b:7465' is not a hub URL"):
        await kiln.connect([b.url, "http://b:7465"])
    with pytest.raises(kiln.UsageError, match=f"a CA or TLS context is for a wss:// hub, and {b.url} is not one"):
        await kiln.connect(["wss://127.0.0.1:1", b.url], ssl=ssl.create_default_context())


async def test_a_requestor_whose_hub_is_killed_goes_on_on_the_next(hubs: tuple[LocalCluster, LocalCluster]) -> None:
    a, b = hubs
    async with (
        simulated_providers(b.url, 1, cpus=2, prefix="on-b"),
        kiln.connect([a.url, b.url], name="mover") as requestor,
    ):
        assert requestor.url == a.url
        assert await requestor.market() == [], "hub a has no provider"
        assert a.hub is not None
        killed = time.monotonic()
        a.hub.stop(signal.SIGKILL)
        while requestor.url != b.url or requestor.reconnecting:
            assert time.monotonic() - killed < 20 and requestor.gone is None, "not moved in time"
            await asyncio.sleep(0.02)
        print(f"\nmoved from the killed hub to the next in {time.monotonic() - killed:.2f} s")
        providers = await requestor.market()
        assert [p.name for p in providers] == ["on-b-00000"]
        activity = await requestor.rent(IMAGE)
        assert (await activity.run(["true"])).exit_code == 0
        await activity.release()


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    run = [sys.executable, "-m", "kiln.cli", *args]
    return subprocess.run(run, capture_output=True, text=True, timeout=30, env={**base, **env}, check=False)


async def test_the_command_line_takes_repeated_hubs_or_a_list_in_kiln_hub(
    hubs: tuple[LocalCluster, LocalCluster],
) -> None:
    _, b = hubs
    dead = dead_hub()
    flags = await asyncio.to_thread(cli, "market", "--hub", dead, "--hub", b.url, env={})
    assert (flags.returncode, flags.stdout, flags.stderr) == (0, "no providers\n", "")
    variable = await asyncio.to_thread(cli, "market", env={"KILN_HUB": f"{dead},{b.url}"})
    assert (variable.returncode, variable.stdout, variable.stderr) == (0, "no providers\n", "")
    none = await asyncio.to_thread(cli, "market", env={"KILN_HUB": f"{dead},{dead_hub()}"})
    assert none.returncode == 1 and none.stderr.startswith(f"kiln: no hub answered: cannot reach the hub at {dead}")
    bad = await asyncio.to_thread(cli, "market", "--hub", b.url, "--hub", "tcp://b:7465", env={})
    assert bad.returncode == 2 and "kiln market: --hub: 'tcp://b:7465' is not a hub URL" in bad.stderr
