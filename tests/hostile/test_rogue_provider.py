"""A provider that lies, seen from the requestor: a real hub, a simulated provider serving
downloads that do not match what it announced. The requestor takes no more than it asked for,
writes nothing half-done, and answers with a Kiln error."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import kiln
from kiln.testing import LocalCluster
from kiln.testing.simulated import Served, simulated_providers
from tests.unit.test_folders import archive

pytestmark = pytest.mark.timeout(60)

MiB = 2**20
ABSOLUTE = f"/tmp/kiln-absolute-{os.getpid()}"
FILES = {
    "/out/liar": Served("file", b"x" * (3 * MiB), announced=5),
    "/out/short": Served("file", b"only ten b", announced=100),
    "/out/honest": Served("file", b"y" * (3 * MiB)),
    "/out/folder": Served("dir", archive(("folder/a", "file", b"1"), ("folder/b", "file", b"2"))),
    "/out/crafted": Served("dir", archive(("folder/l", "sym", "l"), ("folder/l/x", "file", b"1"))),
    "/out/escape": Served("dir", archive(("folder/../../x", "file", b"1"))),
    "/out/absolute": Served("dir", archive(("folder/a", "file", b"1"), (ABSOLUTE, "file", b"1"))),
    "/out/big": Served("file", b"z" * (5 * MiB)),
    "/out/big-folder": Served("dir", archive(*((f"folder/{n}", "file", b"w" * MiB) for n in range(5)))),
}
SMALL = kiln.Demand(cpus=0.5, memory="64MiB", storage="4MiB")


@pytest.fixture
async def requestor(tmp_path: Path) -> AsyncIterator[kiln.Requestor]:
    with LocalCluster(tmp_path.parent / f"{tmp_path.name}-logs") as cluster:
        url = cluster.start_hub()
        async with simulated_providers(url, 1, files=FILES), kiln.connect(url) as connected:
            yield connected


@pytest.fixture
async def act(requestor: kiln.Requestor) -> AsyncIterator[kiln.Activity]:
    async with requestor.rent("kiln-busybox:latest") as rented:
        yield rented


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def test_a_file_longer_than_announced_is_refused_and_nothing_is_written(
    act: kiln.Activity, tmp_path: Path
) -> None:
    with pytest.raises(kiln.TransferFailed, match="more than the 5 bytes it announced"):
        await act.download_file("/out/liar", tmp_path / "got" / "liar")
    assert leftovers(tmp_path / "got") == []
    with pytest.raises(kiln.TransferFailed, match="more than the 5 bytes"):
        await act.download_bytes("/out/liar")


async def test_a_file_shorter_than_announced_is_refused(act: kiln.Activity, tmp_path: Path) -> None:
    with pytest.raises(kiln.TransferFailed, match="sent 10 of the 100 bytes"):
        await act.download_file("/out/short", tmp_path / "short")
    assert leftovers(tmp_path) == []


async def test_max_bytes_bounds_a_download(act: kiln.Activity, tmp_path: Path) -> None:
    with pytest.raises(kiln.UsageError, match="max_bytes"):
        await act.download_file("/out/honest", tmp_path / "honest", max_bytes=MiB)
    with pytest.raises(kiln.UsageError, match="max_bytes"):
        await act.download_file("/out/folder", tmp_path / "folder", max_bytes=100)
    assert (await act.download_file("/out/honest", tmp_path / "honest")).stat().st_size == 3 * MiB
    assert leftovers(tmp_path) == ["folder", "honest"], "the refused folder made its destination, nothing in it"
    assert leftovers(tmp_path / "folder") == []


async def test_crafted_folders_are_transfer_failures(act: kiln.Activity, tmp_path: Path) -> None:
    await act.download_file("/out/folder", tmp_path / "fine")
    assert leftovers(tmp_path / "fine") == ["a", "b"]
    with pytest.raises(kiln.TransferFailed, match="cannot extract"):
        await act.download_file("/out/crafted", tmp_path / "crafted")
    with pytest.raises(kiln.TransferFailed, match="outside"):
        await act.download_file("/out/escape", tmp_path / "escape")
    assert not (tmp_path / "x").exists()
    assert await act.run(["true"]), "the activity still works"


async def test_a_download_takes_at_most_the_storage_rented_by_default(
    requestor: kiln.Requestor, tmp_path: Path
) -> None:
    async with requestor.rent("kiln-busybox:latest", SMALL) as small:
        assert small.resources.storage == 4 * MiB
        with pytest.raises(kiln.DownloadTooLarge, match="holds 5242880 bytes, more than max_bytes=4194304") as caught:
            await small.download_file("/out/big", tmp_path / "big")
        assert caught.value.code == "download_too_large"
        assert isinstance(caught.value, kiln.UsageError)
        with pytest.raises(kiln.DownloadTooLarge, match="larger than max_bytes=4194304"):
            await small.download_file("/out/big-folder", tmp_path / "big-folder")
        assert leftovers(tmp_path) == ["big-folder"] and len(leftovers(tmp_path / "big-folder")) < 5
        # max_bytes raises the bound (or lowers it).
        assert (await small.download_file("/out/big", tmp_path / "big", max_bytes=8 * MiB)).stat().st_size == 5 * MiB
        await small.download_file("/out/big-folder", tmp_path / "all", max_bytes=8 * MiB)
        assert len(leftovers(tmp_path / "all")) == 5
        with pytest.raises(kiln.DownloadTooLarge):
            await small.download_file("/out/honest", tmp_path / "honest", max_bytes=MiB)
    async with requestor.rent("kiln-busybox:latest") as default:
        # A rent that names no storage is given 256 MiB: that is its bound.
        assert default.resources.storage == 256 * MiB
        assert (await default.download_file("/out/big", tmp_path / "big2")).stat().st_size == 5 * MiB


async def test_an_absolute_name_in_a_folder_is_refused(act: kiln.Activity, tmp_path: Path) -> None:
    with pytest.raises(kiln.TransferFailed, match="absolute"):
        await act.download_file("/out/absolute", tmp_path / "absolute")
    for path in (tmp_path / "absolute" / "tmp", Path(ABSOLUTE)):
        assert not await asyncio.to_thread(path.exists), f"{path}: extracted"
