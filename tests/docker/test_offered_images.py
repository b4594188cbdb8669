"""A provider offers only the images its operator allows (``--images`` patterns, the
``org.kiln.offer=<name>`` label) and those it loaded for Kiln; nothing else on its Docker engine
can be rented.

Found by a hostile test (issue 18, defect 6): a provider offered every image on its engine,
other software's and untagged ones by digest, and a requestor could run any of them.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

import kiln
from kiln_provider.docker_adapter import DockerAdapter
from tests.conftest import Cluster
from tests.docker.test_provider_images import RESOURCES, create
from tests.images import build, remove, save
from tests.scripted_hub import scripted_hub

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]


async def test_only_allowed_images_are_offered_and_rented(
    cluster: Cluster, tmp_path: Path, images: list[str], busybox_image: str
) -> None:
    stamp = secrets.token_hex(4)
    # Other software's images on the provider's host: tagged, and untagged (listed by digest).
    other_tag = f"kiln-other-{stamp}:1"
    other = build(tmp_path, tag=other_tag, offer=False)
    untagged = build(tmp_path, offer=False)
    # Built FROM kiln-busybox on the host (a tenant's image, say): it inherits the label, which
    # names kiln-busybox, not it.
    child_tag = f"kiln-child-{stamp}:1"
    child = build(tmp_path, base=busybox_image, tag=child_tag, offer=False)
    allowed_tag = f"kiln-allowed-{stamp}:1"
    allowed = build(tmp_path, tag=allowed_tag, offer=False)
    images.extend([other_tag, other, untagged, child_tag, child, allowed_tag, allowed])
    name = await asyncio.to_thread(cluster.start_provider, "p", "--images", f"kiln-allowed-{stamp}:*")
    busybox = DockerAdapter("test").image(busybox_image)
    assert busybox is not None
    async with kiln.connect(cluster.url) as requestor:
        (info,) = await requestor.market()
        assert info.name == name
        offered = set(info.images)
        assert {allowed_tag, allowed, busybox_image, busybox.id} <= offered, "allowed: by pattern, by label"
        assert not {other_tag, other, untagged, child_tag, child} & offered, offered
        for ref in (other_tag, other, untagged, child_tag, child):
            with pytest.raises(kiln.ImageNotFound, match=r"does not offer|no provider offers"):
                await requestor.rent(ref)
        async with requestor.rent(allowed_tag) as act:
            assert len(await act.download_bytes("/data/f0")) == 4096
        async with requestor.rent(allowed) as act:  # by its id too
            assert act.cached


@pytest.mark.parametrize("version", ["1.3", "1.4"])
async def test_an_image_loaded_from_the_store_runs_only_from_a_create_with_its_manifest(
    tmp_path: Path, images: list[str], busybox_image: str, version: str
) -> None:
    # A hub that lets a requestor name a stored image it may not rent (by id, with no manifest)
    # finds it missing: what a provider loaded from the store is the store's to hand out.
    child = build(tmp_path, base=busybox_image, size=64 * 1024)  # carries busybox's offer label
    images.append(child)
    saved = save(child, tmp_path)
    remove(child)
    cluster = Cluster(tmp_path / "logs", suffix=f"-{secrets.token_hex(3)}")
    async with scripted_hub(version) as hub:
        cluster.url = hub.url
        try:
            await asyncio.to_thread(cluster.start_provider, "p", cpus=1, memory="1GiB", wait=False)
            provider = await hub.provider()
            await provider.send(create(1, saved))
            want = await provider.receive(timeout=30)
            await provider.send_data(1, b"".join(saved.blobs[digest] for digest in want["blobs"]))
            assert (await provider.receive(timeout=60))["type"] == "done"
            await provider.wait_offer(saved.id)
            offer = provider.raw_offers[-1]
            if version == "1.4":  # apart: the hub hands it only to those the store lets rent it
                assert offer["cached"] == [saved.id] and saved.id not in offer["images"], offer
            else:  # a hub before 1.4 knows only images
                assert saved.id in offer["images"] and "cached" not in offer, offer
            await provider.send(
                {"type": "create", "id": 2, "activity": "a2", "image": saved.id, "resources": RESOURCES}
            )
            refused = await provider.receive(timeout=30)
            assert refused["code"] == "image_not_found" and "does not offer" in refused["message"], refused
            await provider.send(create(3, saved))
            assert await provider.receive(timeout=30) == {"type": "done", "re": 3, "bytes": 0}
        finally:
            await asyncio.to_thread(cluster.stop)
