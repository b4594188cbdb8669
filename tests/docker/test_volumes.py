"""Volumes on this host, without Docker: real ext4 files, real loop mounts (root and loop
devices, like the provider), every one removed in teardown.

The containers that see them are tests/docker/test_docker_adapter.py's.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln_provider.errors import BadPath, NotAFile, TransferBroken, VolumeFailed
from kiln_provider.volume import MIN_SIZE, MOUNTS, Volume, Volumes, under_mounts, volume_name, write_file

pytestmark = [pytest.mark.docker, pytest.mark.timeout(60)]

MIB = 2**20
GIB = 2**30
ME = (65534, 65534)


@pytest.fixture
def volumes(tmp_path: Path) -> Iterator[Volumes]:
    made = Volumes(tmp_path / "volumes")
    yield made
    Volumes(made.root).sweep()  # a fresh object: every volume there is a leftover to it


def mounted(path: Path) -> bool:
    return os.path.ismount(path)


def put(volume: Volume, path: str, data: bytes, owned: tuple[str, ...] = ()) -> int:
    return write_file(volume, path, len(data), 0o644, iter([data]), ME, owned)


def test_make_gives_a_mounted_filesystem_of_the_size(volumes: Volumes) -> None:
    volume = volumes.make("a", 64 * MIB, ["/golem/input", "/golem/work/deep"])
    assert mounted(volume.mount)
    stat = os.statvfs(volume.mount)
    assert 0.95 * 64 * MIB < stat.f_blocks * stat.f_frsize <= 64 * MIB
    assert stat.f_bavail * stat.f_frsize > 0.95 * 64 * MIB  # no blocks kept for root, little bookkeeping
    assert os.stat(volume.file).st_size == 64 * MIB
    assert os.stat(volume.file).st_blocks * 512 < 2 * MIB, "sparse: the disk holds only what is written"
    modes = {p: oct(os.stat(volume.mount / p).st_mode & 0o7777) for p in ("golem", "tmp", "golem/work/deep")}
    assert modes == {"golem": "0o755", "tmp": "0o1777", "golem/work/deep": "0o755"}
    assert sorted(volume.binds.values(), key=str) == [{"bind": top, "mode": "rw"} for top in sorted(MOUNTS)]
    options = next(
        line for line in Path("/proc/self/mountinfo").read_text().splitlines() if f" {volume.mount} " in line
    )
    assert "nodev" in options and "nosuid" in options


def test_sizes_are_whole_blocks_and_at_least_the_minimum(volumes: Volumes) -> None:
    assert volumes.make("tiny", 0).size == MIN_SIZE
    assert volumes.make("odd", 5 * MIB + 123).size == 5 * MIB


def test_remove_unmounts_and_deletes_and_is_idempotent(volumes: Volumes) -> None:
    volume = volumes.make("gone", 16 * MIB)
    volumes.remove("gone")
    assert not mounted(volume.mount)
    assert not volume.mount.exists() and not volume.file.exists()
    volumes.remove("gone")
    volumes.remove("never-made")


def test_remove_detaches_a_busy_volume(volumes: Volumes) -> None:
    volume = volumes.make("busy", 16 * MIB)
    with open(volume.folder("/tmp") / "held", "w") as held:
        volumes.remove("busy")
        assert not mounted(volume.mount)
        held.write("still writable until let go")  # the detached filesystem lives on for its last user
    assert not volume.file.exists()
    assert str(volume.mount) not in Path("/proc/self/mountinfo").read_text()


def test_sweep_removes_an_earlier_runs_volumes_only(volumes: Volumes) -> None:
    earlier = Volumes(volumes.root)
    left = [earlier.make(f"left-{n}", 8 * MIB) for n in range(3)]
    mine = volumes.make("mine", 8 * MIB)
    assert volumes.sweep() == 3
    assert not any(mounted(v.mount) or v.file.exists() for v in left)
    assert mounted(mine.mount)
    assert volumes.sweep() == 0


def test_no_room_is_refused_before_anything_is_made(volumes: Volumes) -> None:
    room = volumes.room()
    with pytest.raises(VolumeFailed) as caught:
        volumes.make("huge", room + GIB)
    assert caught.value.reason == "no_room"
    assert not (volumes.root / "huge.img").exists()


def test_room_counts_what_live_volumes_may_still_fill(volumes: Volumes) -> None:
    before = volumes.room()
    volumes.make("promised", 4 * GIB)
    assert before - volumes.room() > 4 * GIB - 64 * MIB  # sparse, yet promised


def test_bound_keeps_volumes_within_the_offer_and_the_count(volumes: Volumes) -> None:
    volumes.bound(10 * MIB, max_count=3)
    volumes.make("a", 6 * MIB)
    with pytest.raises(VolumeFailed, match="offer of 10485760 bytes has 4194304 left") as caught:
        volumes.make("b", 6 * MIB)
    assert caught.value.reason == "no_room"
    assert not (volumes.root / "b.img").exists()
    volumes.make("b", 2 * MIB)
    volumes.make("c", MIB)
    with pytest.raises(VolumeFailed, match="at most 3 containers") as caught:
        volumes.make("d", MIB)
    assert caught.value.reason == "too_many"
    volumes.remove("a")
    volumes.make("d", 7 * MIB)  # what a removed volume held is free again


def test_check_makes_and_removes_a_probe(volumes: Volumes) -> None:
    volumes.check()
    assert list(volumes.root.iterdir()) == []


def test_check_fails_clearly_where_nothing_can_be_mounted(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(VolumeFailed, match=r"needs root, mkfs\.ext4 and loop devices") as caught:
        Volumes(blocker / "volumes").check()
    assert caught.value.reason == "unavailable"


def test_names_are_readable_and_distinct() -> None:
    assert volume_name("act/1") != volume_name("act-1")
    assert volume_name("act/1").startswith("act-1-")
    assert "/" not in volume_name("../../etc") and not volume_name("..x").startswith(".")
    assert under_mounts("/golem/work") and under_mounts("/tmp") and not under_mounts("/golem/../etc")
    assert not under_mounts("/golemx") and not under_mounts("/etc")


# -- uploads, written on the host ---------------------------------------------------------


def test_write_file_makes_the_file_and_its_folders(volumes: Volumes) -> None:
    volume = volumes.make("w", 16 * MIB, ["/golem/input"])
    assert put(volume, "/golem/input/a/b/c.txt", b"hello", owned=("/golem/input/a",)) == 5
    host = volume.mount / "golem/input/a"
    assert (host / "b/c.txt").read_bytes() == b"hello"
    assert (os.stat(host).st_uid, os.stat(host / "b").st_uid, os.stat(host / "b/c.txt").st_uid) == (65534, 0, 65534)
    assert oct(os.stat(host / "b").st_mode & 0o7777) == "0o755"
    put(volume, "/golem/input/a/b/c.txt", b"again")  # replaces the file
    assert (host / "b/c.txt").read_bytes() == b"again"
    assert [p.name for p in (host / "b").iterdir()] == ["c.txt"], "nothing left aside"


def test_write_file_goes_only_under_the_mounts(volumes: Volumes) -> None:
    volume = volumes.make("w", 16 * MIB)
    for path in ("/etc/passwd", "/golemx/a", "/x"):
        with pytest.raises(BadPath, match="read-only"):
            put(volume, path, b"x")
    with pytest.raises(NotAFile):
        put(volume, "/golem", b"x")


def test_write_file_never_follows_a_link(volumes: Volumes, tmp_path: Path) -> None:
    volume = volumes.make("w", 16 * MIB)
    outside = tmp_path / "outside"
    outside.mkdir()
    (volume.mount / "golem/link").symlink_to(outside)
    with pytest.raises(BadPath, match="do not follow links"):
        put(volume, "/golem/link/x", b"x")
    assert list(outside.iterdir()) == []
    (volume.mount / "golem/file-link").symlink_to(outside / "target")
    put(volume, "/golem/file-link", b"x")  # the link itself is replaced, its target never made
    assert not (outside / "target").exists()
    assert (volume.mount / "golem/file-link").read_bytes() == b"x"


def test_write_file_keeps_a_folder(volumes: Volumes) -> None:
    volume = volumes.make("w", 16 * MIB)
    put(volume, "/golem/keep/me", b"ok")
    with pytest.raises(NotAFile, match="/golem/keep is a folder"):
        put(volume, "/golem/keep", b"no")
    assert (volume.mount / "golem/keep/me").read_bytes() == b"ok"


def test_write_file_past_the_volume_fails_and_leaves_nothing(volumes: Volumes) -> None:
    volume = volumes.make("w", 16 * MIB)
    piece = bytes(MIB)
    with pytest.raises(TransferBroken, match="no space left"):
        write_file(volume, "/tmp/big", 32 * MIB, 0o644, iter([piece] * 32), ME, ())
    assert list((volume.mount / "tmp").iterdir()) == []
    stat = os.statvfs(volume.mount)
    assert stat.f_bavail * stat.f_frsize > 15 * MIB, "the space is free again"


def test_write_file_short_stream_leaves_nothing(volumes: Volumes) -> None:
    volume = volumes.make("w", 16 * MIB)
    with pytest.raises(TransferBroken, match="3 of 10"):
        write_file(volume, "/golem/short", 10, 0o644, iter([b"abc"]), ME, ())
    with pytest.raises(TransferBroken, match="more than"):
        write_file(volume, "/golem/long", 2, 0o644, iter([b"abc"]), ME, ())
    assert list((volume.mount / "golem").iterdir()) == []


def test_write_file_keeps_special_bits_after_the_owner(volumes: Volumes) -> None:
    volume = volumes.make("w", 16 * MIB)
    write_file(volume, "/golem/tool", 1, 0o4755, iter([b"x"]), ME, ())
    stat = os.stat(volume.mount / "golem/tool")
    assert (stat.st_uid, oct(stat.st_mode & 0o7777)) == (65534, "0o4755")


# -- how long it takes ---------------------------------------------------------------------


def test_make_and_remove_are_fast_at_any_size(volumes: Volumes, capsys: pytest.CaptureFixture[str]) -> None:
    timings = {}
    for size in (64 * MIB, GIB, 10 * GIB):
        if size > volumes.room() // 2:
            continue
        made, removed = [], []
        for n in range(5):
            started = time.perf_counter()
            volumes.make(f"t{n}", size)
            made.append(time.perf_counter() - started)
            started = time.perf_counter()
            volumes.remove(f"t{n}")
            removed.append(time.perf_counter() - started)
        timings[size // MIB] = (statistics.median(made), statistics.median(removed))
    with capsys.disabled():
        shown = ", ".join(f"{mib} MiB {m * 1e3:.1f} / {r * 1e3:.1f} ms" for mib, (m, r) in timings.items())
        print(f"\nvolume make / remove, median of 5: {shown}")
    assert all(m < 0.5 for m, _ in timings.values())


def test_mkfs_is_there() -> None:
    assert subprocess.run(["mkfs.ext4", "-V"], capture_output=True).returncode == 0
