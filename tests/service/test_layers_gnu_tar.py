"""The tar meter (kiln.protocol.layers) against GNU tar's own output: sparse files in every
format GNU tar writes them (PAX 0.0, 0.1, 1.0, GNU, old GNU with extension blocks), base-256
sizes, and chunks cut anywhere. Python's tarfile and hostile headers: tests/unit/test_layers.py."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from kiln.protocol.layers import BLOCK, DISK_BLOCK
from tests.unit.test_layers import expected, meter

needs_tar = pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar is not installed")


def sparse_tree(root: Path, size: int, holes: int = 1) -> None:
    """``root/bomb``: a sparse file of ``size`` bytes with ``holes`` small written pieces; and a few other entries."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "bomb", "wb") as f:
        f.truncate(size)
        for n in range(holes):
            f.seek(n * (size // max(holes, 1)))
            f.write(b"x" * 100)
    (root / "dir").mkdir(exist_ok=True)
    (root / "dir" / "small").write_bytes(b"hello\n")
    (root / "link").unlink(missing_ok=True)
    (root / "link").symlink_to("dir/small")


def gnu_tar(root: Path, *options: str) -> bytes:
    out = subprocess.run(["tar", "-b1", *options, "-C", str(root), "-cf", "-", "."], check=True, capture_output=True)
    return out.stdout


@needs_tar
@pytest.mark.parametrize(
    "options",
    [
        ("--sparse", "--format=posix"),
        ("--sparse", "--format=posix", "--sparse-version=0.0"),
        ("--sparse", "--format=posix", "--sparse-version=0.1"),
        ("--sparse", "--format=posix", "--sparse-version=1.0"),
        ("--sparse", "--format=gnu"),
        ("--sparse", "--format=oldgnu"),
    ],
)
def test_sparse_files_count_at_their_real_size(tmp_path: Path, options: tuple[str, ...]) -> None:
    sparse_tree(tmp_path / "t", 2**30, holes=9)  # 9 pieces: old GNU needs extension blocks past 4
    data = gnu_tar(tmp_path / "t", *options)
    assert len(data) < 64 * 1024  # the bomb: a few KiB of tar
    size = meter(data)
    assert size == expected(data)
    assert 2**30 <= size < 2**30 + 10 * DISK_BLOCK


@needs_tar
def test_the_issues_bomb(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    with open(tmp_path / "t" / "bomb", "wb") as f:
        f.truncate(2**30)
    data = subprocess.run(
        ["tar", "--sparse", "--format=posix", "-C", str(tmp_path / "t"), "-cf", "-", "bomb"],
        check=True,
        capture_output=True,
    ).stdout
    assert len(data) <= 10 * 1024
    assert meter(data) >= 2**30


@needs_tar
def test_base_256_sizes_of_old_gnu_sparse_files(tmp_path: Path) -> None:
    sparse_tree(tmp_path / "t", 9 * 2**30)  # past the 8 GiB of the octal field: GNU tar writes base-256
    data = gnu_tar(tmp_path / "t", "--sparse", "--format=gnu")
    assert meter(data) == expected(data) >= 9 * 2**30


@needs_tar
def test_chunk_boundaries_everywhere(tmp_path: Path) -> None:
    """Cuts anywhere in a GNU sparse tar (with extension blocks) and in a PAX 1.0 one give the same size."""
    sparse_tree(tmp_path / "t", 2**24, holes=6)
    for options in (("--sparse", "--format=gnu"), ("--sparse", "--format=posix")):
        data = gnu_tar(tmp_path / "t", *options)
        size = meter(data)
        assert size == expected(data)
        # every cut near a block's edge (where headers and data meet), and many inside blocks
        cuts = [c for c in range(len(data) + 1) if c % BLOCK in (0, 1, 2, 100, 510, 511) or c % 61 == 0]
        for cut in cuts:
            assert meter(data, [cut]) == size, (options, cut)
        rng = random.Random(1)
        for _ in range(50):
            assert meter(data, rng.sample(range(len(data)), 10)) == size
