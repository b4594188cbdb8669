"""``docker save`` of the engine's own images, streamed: the busybox image read as ``docker image
inspect`` describes it, and an image the engine lacks refused before any save (the archives
built byte by byte: tests/unit/test_images.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

import kiln
from kiln.requestor.images import inspect_engine_image, saving
from tests.unit.test_images import sha

pytestmark = [pytest.mark.docker, pytest.mark.timeout(60)]


async def test_a_streamed_docker_save_of_the_busybox_image_is_as_docker_describes_it(busybox_image: str) -> None:
    inspect = ["docker", "image", "inspect", busybox_image]
    inspected = json.loads((await asyncio.to_thread(subprocess.run, inspect, capture_output=True, check=True)).stdout)
    inspected = inspected[0]
    image = await inspect_engine_image(busybox_image)
    assert image.digest == inspected["Id"]
    assert list(image.layers) == inspected["RootFS"]["Layers"]
    assert busybox_image in image.tags
    async with saving(image) as saved:
        assert [b.digest for b in saved.manifest.layers] == inspected["RootFS"]["Layers"]
        for blob in [saved.manifest.config, *saved.manifest.layers]:
            data = b"".join([chunk async for chunk in saved.blob_chunks(blob.digest, 64 * 1024)])
            assert (sha(data), len(data)) == (blob.digest, blob.size)


async def test_an_image_the_engine_lacks_is_an_image_error_before_any_save() -> None:
    with pytest.raises(kiln.ImageError, match=r"docker image inspect kiln-no-such-image:0 failed: \S") as raised:
        await inspect_engine_image("kiln-no-such-image:0")
    assert raised.value.code == kiln.ErrorCode.BAD_IMAGE
