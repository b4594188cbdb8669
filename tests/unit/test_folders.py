"""Crafted folder archives, as a hostile provider could send them: every one ends in a
TransferFailed or a safe extraction, never an OSError and never a write outside the folder."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.protocol.errors import TransferFailed
from kiln.requestor.folders import extract


def archive(*entries: tuple[str, str, bytes | str]) -> bytes:
    """A tar stream of (name, kind, content or link target) entries; kind: file, dir, sym, hard, fifo."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, value in entries:
            info = tarfile.TarInfo(name)
            data = None
            if kind == "file":
                assert isinstance(value, bytes)
                info.size, data = len(value), io.BytesIO(value)
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind in ("sym", "hard"):
                info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                assert isinstance(value, str)
                info.linkname = value
            else:
                info.type = tarfile.FIFOTYPE
            tar.addfile(info, data)
    return out.getvalue()


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    """The stream in chunks of ``size`` bytes: headers are split across chunks."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def run(data: bytes, dest: Path, chunk: int = 100) -> None:
    chunks = pieces(data, chunk)
    extract(lambda: next(chunks, None), dest)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_a_plain_folder_is_extracted_from_any_chunking(tmp_path: Path) -> None:
    data = archive(
        ("out", "dir", ""),
        ("out/a.txt", "file", b"hello"),
        ("out/sub", "dir", ""),
        ("out/sub/b.txt", "file", b"x" * 3000),
        ("out/sub/link", "sym", "b.txt"),
    )
    for chunk in (1, 7, 512, 100_000):
        dest = tmp_path / f"dest-{chunk}"
        run(data, dest, chunk)
        assert (dest / "a.txt").read_bytes() == b"hello"
        assert (dest / "sub" / "link").read_bytes() == b"x" * 3000


@pytest.mark.parametrize(
    ("name", "entries", "reason"),
    [
        (
            "an entry twice, file then folder",
            [("o/a", "file", b"1"), ("o/a", "dir", ""), ("o/a/b", "file", b"2")],
            "cannot extract",
        ),
        ("a link to itself, then a file through it", [("o/l", "sym", "l"), ("o/l/x", "file", b"1")], "cannot extract"),
        ("a link loop", [("o/a", "sym", "b"), ("o/b", "sym", "a"), ("o/a/x", "file", b"1")], "cannot extract"),
        ("a hard link to nothing", [("o/h", "hard", "o/missing")], "not found"),
        ("a link out", [("o/l", "sym", "/etc")], "outside"),
        ("a link up", [("o/l", "sym", "../..")], "outside"),
        ("a name up", [("o/../../escape", "file", b"1")], "outside"),
        ("an absolute name", [("o/a", "file", b"1"), ("/o/etc/x", "file", b"1")], "has an absolute path"),
        ("a fifo", [("o/f", "fifo", "")], "outside"),
        (
            "a file where a folder stands",
            [("o/d", "dir", ""), ("o/d/x", "file", b"1"), ("o/d", "file", b"2")],
            "cannot extract",
        ),
    ],
)
def test_a_crafted_archive_is_a_transfer_failure(
    tmp_path: Path, name: str, entries: list[tuple[str, str, bytes | str]], reason: str
) -> None:
    dest = tmp_path / "dest"
    outside = set(os.listdir(tmp_path))
    with pytest.raises(TransferFailed, match=reason):
        run(archive(*entries), dest)
    assert set(os.listdir(tmp_path)) - outside <= {"dest"}, f"{name}: wrote outside the destination"
    for path in dest.rglob("*"):
        assert path.is_symlink() or path.resolve().is_relative_to(dest.resolve()), name


def test_a_damaged_archive_is_a_transfer_failure(tmp_path: Path) -> None:
    with pytest.raises(TransferFailed, match="damaged"):
        run(b"\x07" * 1500, tmp_path / "dest")
    good = archive(("o/a", "file", b"x" * 5000))
    with pytest.raises(TransferFailed):
        run(good[:1200], tmp_path / "cut")  # cut inside a file's data


def test_a_long_name_is_fine(tmp_path: Path) -> None:
    long = "d" * 200 + "/" + "f" * 200
    run(archive(("o/" + long, "file", b"ok")), tmp_path / "dest")
    assert (tmp_path / "dest" / long).read_bytes() == b"ok"
