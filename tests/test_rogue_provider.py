"""A provider that lies, seen from the requestor: a real hub, a simulated provider serving
downloads that do not match what it announced. The requestor takes no more than it asked for,
writes nothing half-done, and answers with a Kiln error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import kiln
from kiln.testing import LocalCluster
from kiln.testing.simulated import Served, simulated_providers
from tests.test_folders import archive

pytestmark = pytest.mark.timeout(60)

MiB = 2**20
FILES = {
    "/out/liar": Served("file", b"x" * (3 * MiB), announced=5),
    "/out/short": Served("file", b"only ten b", announced=100),
    "/out/honest": Served("file", b"y" * (3 * MiB)),
    "/out/folder": Served("dir", archive(("folder/a", "file", b"1"), ("folder/b", "file", b"2"))),
    "/out/crafted": Served("dir", archive(("folder/l", "sym", "l"), ("folder/l/x", "file", b"1"))),
    "/out/escape": Served("dir", archive(("folder/../../x", "file", b"1"))),
}


@pytest.fixture
async def act(tmp_path: Path) -> AsyncIterator[kiln.Activity]:
    with LocalCluster(tmp_path.parent / f"{tmp_path.name}-logs") as cluster:
        url = cluster.start_hub()
        async with (
            simulated_providers(url, 1, files=FILES),
            kiln.connect(url) as requestor,
            requestor.rent("kiln-busybox:latest") as rented,
        ):
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
