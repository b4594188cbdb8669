"""End to end, the image store of two hub processes on one PostgreSQL database: an image pushed
through hub A runs on a real provider of hub B, which loads it into the real Docker engine from
blobs hub B fetched from hub A (tests/service/test_hub_images_shared.py checks the rules with
raw peers)."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import pytest

import kiln
from tests.conftest import Cluster, started
from tests.docker.test_image_store import SMALL, Built, wordcount  # noqa: F401 - wordcount: a fixture

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


async def test_an_image_pushed_through_one_hub_runs_on_a_provider_of_the_other(
    tmp_path: Path,
    busybox_image: str,
    postgres_url: str,
    wordcount: Built,  # noqa: F811 - the fixture
) -> None:
    suffix = f"-{secrets.token_hex(3)}"
    with (
        started(Cluster(tmp_path / "a", suffix=suffix), "--db", postgres_url) as a,
        started(Cluster(tmp_path / "b", suffix=suffix), "--db", postgres_url) as b,
    ):
        async with kiln.connect(a.url, name="pusher") as pusher:
            pushed = await pusher.push_image(path=wordcount.archive)
        assert pushed.digest == wordcount.digest
        await asyncio.to_thread(b.start_provider, "far", cpus=1, memory="1GiB")
        async with kiln.connect(b.url, name="renter") as requestor:
            started_at = time.monotonic()
            while all(i.digest != wordcount.digest for i in (await requestor.list_images()).images):
                assert time.monotonic() - started_at < 10, "hub B never listed the image pushed to hub A"
                await asyncio.sleep(0.1)
            async with requestor.rent(wordcount.tag, SMALL) as act:
                result = await act.run(["wordcount"], stdin=b"one two three")
                assert (result.exit_code, result.stdout.split()[0]) == (0, "3"), result
                assert not act.cached and act.pulled > 0, "loaded from the blobs hub B fetched"
        fetched = b.hub.output() if b.hub is not None else ""
        assert "fetched from the hub at" in fetched, fetched[-3000:]
