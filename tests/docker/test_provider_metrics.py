"""A real provider's metrics (``--metrics-port``) and its ``usage`` notifications (protocol 1.6):
scraped with prometheus_client's parser while a hub played by hand creates a container of an
image it sends the provider, runs a command in it and destroys it; the provider tells that hub
what the container uses, and once, empty, that it is gone."""

from __future__ import annotations

import asyncio
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kiln.__about__ import __version__
from kiln.protocol.messages import PROTOCOL_VERSION
from tests.conftest import Cluster
from tests.images import build, remove, save
from tests.scripted_hub import Provider, ScriptedHub, scripted_hub

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

MiB = 2**20
NAMES = {
    "kiln_provider_containers",
    "kiln_provider_cpu_seconds_total",
    "kiln_provider_memory_bytes",
    "kiln_provider_volumes",
    "kiln_provider_volume_bytes",
    "kiln_provider_image_cache_bytes",
    'kiln_provider_image_pulls_total{source="hub"}',
    'kiln_provider_image_pulls_total{source="registry"}',
    "kiln_provider_image_pull_bytes_total",
    "kiln_provider_agent_channel_errors_total",
    f'kiln_build_info{{protocol="{PROTOCOL_VERSION}",version="{__version__}"}}',
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
}
"""Samples every scrape has."""


@pytest.fixture
async def hub() -> AsyncIterator[ScriptedHub]:
    async with scripted_hub(version="1.6") as h:
        yield h


async def metrics_url(cluster: Cluster, name: str, timeout: float = 30) -> str:
    """Where the provider serves its metrics, as its log says (it was given port 0)."""
    deadline = time.monotonic() + timeout
    while not (found := re.search(r"serving metrics on (http://\S+)", cluster.providers[name].output())):
        assert time.monotonic() < deadline, cluster.providers[name].output()
        await asyncio.sleep(0.05)
    return found.group(1)


async def scrape(url: str) -> dict[str, float]:
    """Every sample, by name and labels (``name{label="value"}``), as prometheus_client parses it."""

    def get() -> str:
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            return str(response.read().decode())

    text = await asyncio.to_thread(get)
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


async def reply(provider: Provider, usage: list[dict[str, Any]], timeout: float = 60) -> dict[str, Any]:
    """The provider's next message that is not a ``usage`` (those go to ``usage``)."""
    while (message := await provider.receive(timeout)).get("type") == "usage":
        usage.append(message)
    return message


async def test_metrics_move_with_a_container_and_usage_is_sent(
    hub: ScriptedHub, tmp_path: Path, busybox_image: str, images: list[str]
) -> None:
    # An image FROM busybox (it runs sh) with a layer of its own, which the hub sends the provider.
    image_id = build(tmp_path, base=busybox_image, size=64 * 1024)
    images.append(image_id)
    image = save(image_id, tmp_path)
    remove(image_id)
    cluster = Cluster(tmp_path / "logs", suffix=f"-{os.urandom(3).hex()}")
    cluster.url = hub.url
    try:
        name = cluster.start_provider("p", "--metrics-port", "0", cpus=2, memory="1GiB", wait=False)
        provider = await hub.provider()
        url = await metrics_url(cluster, name)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics"), url
        idle = await scrape(url)
        assert idle.keys() >= NAMES, sorted(idle)
        assert idle["kiln_provider_containers"] == 0 and idle["kiln_provider_volumes"] == 0, idle

        usage: list[dict[str, Any]] = []
        resources = {"cpus": 1, "memory": 64 * MiB, "storage": 16 * MiB}
        manifest = image.manifest.model_dump()
        create = {"type": "create", "id": 1, "activity": "a1", "image": image.id, "resources": resources}
        await provider.send(create | {"manifest": manifest})
        want = await reply(provider, usage)
        assert want["type"] == "want", want
        await provider.send_data(1, b"".join(image.blobs[digest] for digest in want["blobs"]))
        done = await reply(provider, usage)
        assert done["type"] == "done" and done["bytes"] > 0, done
        held = await scrape(url)
        assert held["kiln_provider_containers"] == 1 and held["kiln_provider_volumes"] == 1, held
        assert held['kiln_provider_image_pulls_total{source="hub"}'] == 1, held
        assert held["kiln_provider_image_pull_bytes_total"] == done["bytes"], held
        assert held["kiln_provider_image_cache_bytes"] >= 64 * 1024, held
        assert held["kiln_provider_volume_bytes"] > 0 and held["kiln_provider_memory_bytes"] > 0, held

        busy = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"
        await provider.send({"type": "exec", "id": 2, "activity": "a1", "argv": ["sh", "-c", busy], "timeout": 60})
        assert (await reply(provider, usage))["exit_code"] == 0
        busied = await scrape(url)
        assert busied["kiln_provider_cpu_seconds_total"] > held["kiln_provider_cpu_seconds_total"], (held, busied)

        # While it holds a container, a usage every 5 s: wait for one that saw the command's CPU.
        deadline = time.monotonic() + 15
        while not any(u["activities"] and u["activities"][0]["cpu_seconds"] > 0.1 for u in usage):
            assert time.monotonic() < deadline, usage
            usage.append(await provider.receive(timeout=15))
        [entry] = usage[-1]["activities"]
        assert entry["activity"] == "a1" and entry["memory"] > 0, usage[-1]

        await provider.send({"type": "destroy", "id": 3, "activity": "a1"})
        assert (await reply(provider, usage))["type"] == "done"
        # Once empty, at once after the last container went (not at the next 5 s tick).
        gone = await provider.receive(timeout=3)
        assert gone == {"type": "usage", "activities": []}, gone
        after = await scrape(url)
        assert after["kiln_provider_containers"] == 0 and after["kiln_provider_volumes"] == 0, after
        assert after["kiln_provider_cpu_seconds_total"] >= busied["kiln_provider_cpu_seconds_total"], after
        assert after["kiln_provider_agent_channel_errors_total"] == 0, after
        with pytest.raises(TimeoutError):
            await provider.receive(timeout=6)  # nothing more while it holds none
    finally:
        await asyncio.to_thread(cluster.stop)
    with pytest.raises(urllib.error.URLError):
        await scrape(url)  # stopped with the provider
