"""A real provider process loading images the hub sends it (protocol 1.1), against a hub the
test plays by hand (tests/scripted_hub.py): ``create`` with a manifest, ``want``, the blobs
within the provider's credit, ``done``; two creates of one image; a corrupt blob; the cache
of loaded images and its eviction; ``--pull`` from a local registry."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kiln.testing import LocalCluster
from kiln_provider.docker_adapter import DockerAdapter
from kiln_provider.image_archive import wanted
from tests.conftest import containers_of
from tests.images import SavedImage, build, has, image_of, noise_layer, remove, save, sparse_layer
from tests.scripted_hub import Provider, ScriptedHub, scripted_hub

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

MIB = 2**20
RESOURCES = {"cpus": 0.5, "memory": 64 * MIB}


@pytest.fixture
async def hub() -> AsyncIterator[ScriptedHub]:
    async with scripted_hub() as h:
        yield h


@pytest.fixture
def processes(tmp_path: Path, images: list[str]) -> Iterator[LocalCluster]:
    """Provider processes; stopped (their containers gone) before the test's images are removed."""
    cluster = LocalCluster(tmp_path / "logs", suffix=f"-{secrets.token_hex(3)}")
    yield cluster
    cluster.stop()
    for name in cluster.providers:
        if ids := containers_of(name):
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)


@pytest.fixture
def child_image(tmp_path: Path, images: list[str], busybox_image: str) -> SavedImage:
    """An image FROM busybox (so it can run ``sleep``) with a layer of its own, saved and removed."""
    return _child(tmp_path, images, busybox_image)


def _child(tmp_path: Path, images: list[str], base: str) -> SavedImage:
    image_id = build(tmp_path, base=base, size=64 * 1024)
    images.append(image_id)
    saved = save(image_id, tmp_path)
    remove(image_id)
    assert not has(image_id)
    return saved


async def start(hub: ScriptedHub, cluster: LocalCluster, *extra: str, name: str = "p") -> tuple[str, Provider]:
    cluster.url = hub.url
    full = cluster.start_provider(name, "--stream-idle-timeout", "3", *extra, cpus=1, memory="1GiB", wait=False)
    return full, await hub.provider()


def create(request: int, image: SavedImage, activity: str | None = None) -> dict[str, Any]:
    return {
        "type": "create",
        "id": request,
        "activity": activity or f"a{request}",
        "image": image.id,
        "resources": RESOURCES,
        "manifest": image.manifest.model_dump(),
    }


async def serve_want(provider: Provider, image: SavedImage, want: dict[str, Any], corrupt: bool = False) -> None:
    blobs = [image.blobs[digest] for digest in want["blobs"]]
    data = bytearray(b"".join(blobs))
    if corrupt:
        data[-1] ^= 1
    await provider.send_data(want["re"], bytes(data))


def expected_want(image: SavedImage, held: int) -> list[str]:
    return [blob.digest for blob in wanted(image.manifest, held)]


def record(cluster: LocalCluster, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((cluster.logs / f"{name}.data" / "images.json").read_text())["images"]
    return data


async def test_a_create_loads_what_docker_lacks_then_runs(
    hub: ScriptedHub, processes: LocalCluster, child_image: SavedImage
) -> None:
    name, provider = await start(hub, processes)
    assert child_image.id not in provider.offers[-1]
    await provider.send(create(1, child_image))
    want = await provider.receive()
    # The busybox layer is here: the config and the image's own layer only.
    assert want == {"type": "want", "re": 1, "blobs": expected_want(child_image, 1)}
    await serve_want(provider, child_image, want)
    done = await provider.receive()
    sent = sum(len(child_image.blobs[d]) for d in want["blobs"])
    assert done == {"type": "done", "re": 1, "bytes": sent}
    assert has(child_image.id)
    assert len(containers_of(name)) == 1
    await provider.wait_offer(child_image.id)  # re-offered by id at once
    assert child_image.id in record(processes, name)
    # Docker holds it now: the next create takes nothing.
    await provider.send(create(2, child_image))
    assert await provider.receive() == {"type": "done", "re": 2, "bytes": 0}
    for request, activity in ((3, "a1"), (4, "a2")):
        await provider.send({"type": "destroy", "id": request, "activity": activity})
        assert (await provider.receive())["type"] == "done"
    assert containers_of(name) == []


async def test_two_creates_of_one_image_load_it_once(
    hub: ScriptedHub, processes: LocalCluster, child_image: SavedImage
) -> None:
    _, provider = await start(hub, processes)
    await provider.send(create(1, child_image))
    await provider.send(create(2, child_image))
    want = await provider.receive()
    assert want["type"] == "want"
    await asyncio.sleep(0.5)
    assert provider.messages.empty()  # no second want
    await serve_want(provider, child_image, want)
    replies = {m["re"]: m for m in [await provider.receive(), await provider.receive()]}
    first, second = want["re"], 3 - want["re"]
    assert replies[first]["type"] == replies[second]["type"] == "done"
    assert replies[first]["bytes"] > 0
    assert replies[second]["bytes"] == 0


async def test_a_corrupt_blob_is_image_corrupt_and_the_next_create_tries_again(
    hub: ScriptedHub, processes: LocalCluster, child_image: SavedImage
) -> None:
    _, provider = await start(hub, processes)
    await provider.send(create(1, child_image))
    await provider.send(create(2, child_image))
    want = await provider.receive()
    await serve_want(provider, child_image, want, corrupt=True)
    error = await provider.receive()
    assert error["type"] == "error" and error["re"] == want["re"]
    assert error["code"] == "image_corrupt"
    assert child_image.manifest.layers[-1].digest in error["message"]
    assert not has(child_image.id)
    # The waiting create asks for the image itself.
    retry = await provider.receive()
    assert retry["type"] == "want" and retry["re"] == 3 - want["re"]
    await serve_want(provider, child_image, retry)
    assert (await provider.receive())["type"] == "done"
    assert has(child_image.id)


async def test_a_stalled_image_stream_fails_after_the_idle_timeout(
    hub: ScriptedHub, processes: LocalCluster, child_image: SavedImage
) -> None:
    _, provider = await start(hub, processes)
    await provider.send(create(1, child_image))
    want = await provider.receive()
    config = child_image.blobs[want["blobs"][0]]
    await provider.send_data(1, config, end=False)  # then nothing
    error = await provider.receive(timeout=20)
    assert error["code"] == "transfer_failed"
    assert "no data for 3 s" in error["message"]
    assert not has(child_image.id)


async def test_a_cancelled_create_loads_nothing(
    hub: ScriptedHub, processes: LocalCluster, child_image: SavedImage
) -> None:
    _, provider = await start(hub, processes)
    await provider.send(create(1, child_image))
    await provider.receive()
    await provider.send({"type": "cancel", "target": 1})
    error = await provider.receive(timeout=10)
    assert error["code"] == "cancelled"
    assert not has(child_image.id)


async def test_eviction_keeps_the_budget_and_the_operators_images(
    hub: ScriptedHub, processes: LocalCluster, tmp_path: Path, images: list[str], busybox_image: str
) -> None:
    first, second = _child(tmp_path, images, busybox_image), _child(tmp_path, images, busybox_image)
    # Room for one such image (busybox's 2 MB and 64 KiB of its own), not two.
    name, provider = await start(hub, processes, "--image-cache", "3MiB")
    for request, image in ((1, first), (3, second)):
        await provider.send(create(request, image))
        await serve_want(provider, image, await provider.receive())
        assert (await provider.receive())["type"] == "done"
    # Over the budget, but the first is in use (a1's container): kept.
    assert has(first.id) and has(second.id)
    for request, activity in ((2, "a1"), (4, "a3")):
        await provider.send({"type": "destroy", "id": request, "activity": activity})
        assert (await provider.receive())["type"] == "done"
    # The next load evicts the least recently used image no container uses: the first.
    third = _child(tmp_path, images, busybox_image)
    await provider.send(create(5, third))
    await serve_want(provider, third, await provider.receive())
    assert (await provider.receive())["type"] == "done"
    assert not has(first.id)
    assert not has(second.id)  # also over the budget with the third, and unused
    assert has(third.id)  # just loaded (in use, too)
    assert has(busybox_image)  # the operator's: never recorded, never evicted
    await provider.wait_offer(first.id, present=False)
    assert set(record(processes, name)) == {third.id}


async def test_the_record_survives_a_restart(
    hub: ScriptedHub, processes: LocalCluster, child_image: SavedImage
) -> None:
    name, provider = await start(hub, processes)
    await provider.send(create(1, child_image))
    await serve_want(provider, child_image, await provider.receive())
    assert (await provider.receive())["type"] == "done"
    used = record(processes, name)[child_image.id]["last_used"]
    await asyncio.to_thread(processes.providers[name].stop)
    _, provider = await start(hub, processes)
    assert child_image.id in provider.offers[-1]
    await provider.send(create(1, child_image))
    assert await provider.receive() == {"type": "done", "re": 1, "bytes": 0}
    entry = record(processes, name)[child_image.id]
    assert entry["last_used"] > used  # touched by the create that used it
    assert entry["size"] > 0


async def test_offers_list_images_by_tag_and_by_id(
    hub: ScriptedHub, processes: LocalCluster, busybox_image: str
) -> None:
    _, provider = await start(hub, processes)
    image_id = DockerAdapter("test").image(busybox_image)
    assert image_id is not None
    assert {busybox_image, image_id.id} <= set(provider.offers[-1])


async def test_without_pull_a_missing_image_is_image_not_found(hub: ScriptedHub, processes: LocalCluster) -> None:
    _, provider = await start(hub, processes)
    await provider.send(
        {"type": "create", "id": 1, "activity": "a1", "image": "kiln-no-such:image", "resources": RESOURCES}
    )
    error = await provider.receive()
    assert error["code"] == "image_not_found"
    assert "--pull" in error["message"]


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """Debian's docker-registry on a free loopback port, storing in a temp folder: its address."""
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is not installed (apt-get install docker-registry; scripts/ensure-system.sh)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        "log:\n  level: error\n"
    )
    log = (tmp_path / "registry.log").open("wb")
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, (tmp_path / "registry.log").read_text()
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        log.close()


async def test_pull_fetches_what_docker_lacks_and_records_it(
    hub: ScriptedHub,
    processes: LocalCluster,
    registry: str,
    images: list[str],
    tmp_path: Path,
    busybox_image: str,
) -> None:
    ref = f"{registry}/kiln-test/pull:{secrets.token_hex(4)}"
    image_id = build(tmp_path, base=busybox_image, tag=ref)
    images.append(image_id)
    await asyncio.to_thread(subprocess.run, ["docker", "push", ref], check=True, capture_output=True)
    remove(ref)
    assert not has(image_id)
    name, provider = await start(hub, processes, "--pull")
    await provider.send({"type": "create", "id": 1, "activity": "a1", "image": ref, "resources": RESOURCES})
    done = await provider.receive(timeout=60)
    assert done["type"] == "done", done
    assert has(image_id)
    await provider.wait_offer(ref)
    assert image_id in record(processes, name)
    # A reference no registry holds stays image_not_found.
    await provider.send(
        {"type": "create", "id": 2, "activity": "a2", "image": f"{registry}/kiln-test/none:x", "resources": RESOURCES}
    )
    error = await provider.receive(timeout=60)
    assert error["code"] == "image_not_found"


async def test_a_sparse_bomb_never_reaches_the_providers_disk(
    hub: ScriptedHub, processes: LocalCluster, tmp_path: Path
) -> None:
    """The issue's bomb (1 GiB in a few KiB of tar), sent by a hub that let it through: the provider
    meters it while it streams into docker load and stops before Docker extracts anything."""
    bomb = image_of(sparse_layer(tmp_path))
    name, provider = await start(hub, processes, "--image-cache", "256MiB")
    await provider.send(create(1, bomb))
    want = await provider.receive()
    assert want["type"] == "want", want
    await serve_want(provider, bomb, want)
    error = await provider.receive()
    assert error["type"] == "error" and error["code"] == "image_too_large", error
    assert not has(bomb.id)
    assert (
        bomb.id not in record(processes, name) if (processes.logs / f"{name}.data" / "images.json").exists() else True
    )
    # One the hub measured past the budget is refused before a byte is asked for.
    declared = image_of(sparse_layer(tmp_path), expanded=2**30)
    await provider.send(create(2, declared))
    error = await provider.receive()
    assert error["type"] == "error" and error["code"] == "image_too_large", error


async def test_loads_at_once_share_the_image_cache_budget(
    hub: ScriptedHub, processes: LocalCluster, tmp_path: Path
) -> None:
    """Each load holds what the hub declared its image takes: two that together pass the budget
    are not extracted at once (each alone fits)."""
    first, second = (image_of(noise_layer(1024), expanded=160 * 2**20) for _ in range(2))
    _, provider = await start(hub, processes, "--image-cache", "256MiB")
    await provider.send(create(1, first))
    want = await provider.receive()
    assert want["type"] == "want", want  # the first load now holds 160 MiB, its data not sent yet
    await provider.send(create(2, second))
    error = await provider.receive()
    assert error["code"] == "image_too_large" and "loads in progress" in error["message"], error
    await serve_want(provider, first, want)
    assert (await provider.receive(timeout=60))["type"] == "done"
    await provider.send(create(3, second))  # the first's load is over: room again
    want = await provider.receive()
    assert want["type"] == "want", want
    await serve_want(provider, second, want)
    assert (await provider.receive(timeout=60))["type"] == "done"
