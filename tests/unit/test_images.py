"""Reading ``docker save`` archives: both layouts built here byte by byte, every way one can be
broken, the ``kiln image`` commands that need no hub (a real ``docker save``:
tests/docker/test_images_engine.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import pytest

import kiln
from kiln.cli import main
from kiln.requestor.images import (
    EngineImage,
    ImageArchive,
    SavedStream,
    TarReader,
    inspect_engine_image,
    push_tags,
    read_archive,
    saving,
)

pytestmark = pytest.mark.timeout(60)

Layout = Literal["legacy", "oci"]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(*files: tuple[str, bytes]) -> bytes:
    """An uncompressed layer tar holding ``files``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def config_of(layers: list[bytes], **extra: Any) -> bytes:
    value = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(x) for x in layers]}}
    return json.dumps({**value, **extra}).encode()


Entry = tuple[str, bytes | None, str | None]
"""A member to write: its name, its bytes (None: a folder), a symlink target (then no bytes)."""


def write_tar(path: Path, entries: list[Entry]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data, link in entries:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def entries_of(
    layers: list[bytes],
    layout: Layout = "legacy",
    *,
    tags: list[str] | None = None,
    config: bytes | None = None,
    manifest: Callable[[list[dict[str, Any]]], Any] = lambda m: m,
) -> list[Entry]:
    """The members ``docker save`` writes for one image of ``layers`` (base first)."""
    config = config if config is not None else config_of(layers)
    entries: list[Entry] = []
    if layout == "legacy":
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        names = []
        for i, data in enumerate(layers):
            folder = hashlib.sha256(f"v1-{i}".encode()).hexdigest()
            entries += [(folder, None, None), (f"{folder}/VERSION", b"1.0", None), (f"{folder}/layer.tar", data, None)]
            names.append(f"{folder}/layer.tar")
        entries.append((config_name, config, None))
    else:
        entries += [("blobs", None, None), ("blobs/sha256", None, None)]
        config_name = "blobs/sha256/" + hashlib.sha256(config).hexdigest()
        names = ["blobs/sha256/" + hashlib.sha256(data).hexdigest() for data in layers]
        entries += [(name, data, None) for name, data in zip(names, layers, strict=True)]
        entries += [(config_name, config, None), ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}', None)]
    index = [{"Config": config_name, "RepoTags": tags if tags is not None else ["wordcount:1"], "Layers": names}]
    entries.append(("manifest.json", json.dumps(manifest(index)).encode(), None))
    return entries


BASE = layer(("bin/sh", b"#!" + b"x" * 3000))
TOP = layer(("app/run", b"print('hi')\n"), ("app/data", os.urandom(5000)))


async def read_blob(archive: ImageArchive, digest: str, chunk: int = 1000) -> bytes:
    parts = [part async for part in archive.blob_chunks(digest, chunk)]
    assert all(len(p) <= chunk for p in parts)
    return b"".join(parts)


@pytest.mark.parametrize("layout", ["legacy", "oci"])
async def test_an_archive_of_either_layout_gives_its_manifest_tags_and_blob_bytes(
    tmp_path: Path, layout: Layout
) -> None:
    path = write_tar(tmp_path / "image.tar", entries_of([BASE, TOP], layout, tags=["wordcount:1", "wc:latest"]))
    archive = read_archive(path)
    config = config_of([BASE, TOP])
    assert archive.digest == archive.manifest.config.digest == sha(config)
    assert archive.manifest.config.size == len(config)
    assert [(b.digest, b.size) for b in archive.manifest.layers] == [(sha(BASE), len(BASE)), (sha(TOP), len(TOP))]
    assert archive.tags == ("wordcount:1", "wc:latest")
    assert archive.size == len(config) + len(BASE) + len(TOP)
    assert await read_blob(archive, sha(config)) == config
    assert await read_blob(archive, sha(BASE)) == BASE
    assert await read_blob(archive, sha(TOP), chunk=4096) == TOP
    with pytest.raises(kiln.ImageError, match="holds no blob"):
        await read_blob(archive, sha(b"other"))


async def test_a_layer_that_recurs_is_a_link_to_its_first_copy_as_docker_writes_it(tmp_path: Path) -> None:
    entries = entries_of([BASE, TOP, BASE])
    second = next(name for name, _, _ in entries if name.endswith("/layer.tar") and name != entries[2][0])
    third = [name for name, _, _ in entries if name.endswith("/layer.tar")][2]
    first_folder = entries[2][0].split("/")[0]
    entries = [(n, d, f"../{first_folder}/layer.tar") if n == third else (n, d, link) for n, d, link in entries]
    assert second != third
    archive = read_archive(write_tar(tmp_path / "image.tar", entries))
    assert [b.digest for b in archive.manifest.layers] == [sha(BASE), sha(TOP), sha(BASE)]
    assert archive.size == len(config_of([BASE, TOP, BASE])) + len(BASE) + len(TOP)
    assert await read_blob(archive, sha(BASE)) == BASE


def test_untagged_images_have_no_tags(tmp_path: Path) -> None:
    archive = read_archive(
        write_tar(tmp_path / "image.tar", entries_of([BASE], manifest=lambda m: [{**m[0], "RepoTags": None}]))
    )
    assert archive.tags == ()


def replace(entries: list[Entry], suffix: str, new: Entry | None) -> list[Entry]:
    """``entries`` with the one named ``*suffix`` replaced by ``new`` (None: left out)."""
    matches = [e for e in entries if e[0].endswith(suffix)]
    assert len(matches) == 1, matches
    return [e for e in entries if e is not matches[0]] + ([new] if new is not None else [])


def config_name(entries: list[Entry]) -> str:
    return next(name for name, _, _ in entries if name.endswith(".json") and name != "manifest.json")


def layer_name(entries: list[Entry], n: int = 0) -> str:
    return [name for name, data, _ in entries if data is not None and name.endswith("layer.tar")][n]


BROKEN: dict[str, tuple[Callable[[list[Entry]], list[Entry]], str]] = {
    "no manifest.json": (lambda e: replace(e, "manifest.json", None), "manifest.json' is missing"),
    "manifest.json not JSON": (
        lambda e: replace(e, "manifest.json", ("manifest.json", b"[{", None)),
        "'manifest.json' is not JSON",
    ),
    "manifest.json a folder": (
        lambda e: replace(e, "manifest.json", ("manifest.json", None, None)),
        "'manifest.json' is not a regular file",
    ),
    "two images": (
        lambda e: replace(e, "manifest.json", ("manifest.json", json.dumps([{}, {}]).encode(), None)),
        "manifest.json lists 2 images; save exactly one",
    ),
    "no images": (
        lambda e: replace(e, "manifest.json", ("manifest.json", b"[]", None)),
        "manifest.json lists 0 images",
    ),
    "a missing layer": (lambda e: replace(e, layer_name(e, 1), None), "layer 2 '.*/layer.tar' is missing"),
    "a missing config": (lambda e: [x for x in e if x[0] != config_name(e)], "the config '.*' is missing"),
    "a layer that is a folder": (
        lambda e: replace(e, layer_name(e), (layer_name(e), None, None)),
        "layer 1 '.*' is not a regular file",
    ),
    "a layer that links outside": (
        lambda e: replace(e, layer_name(e), (layer_name(e), None, "../../etc/passwd")),
        "layer 1 '.*' is a link to '../../etc/passwd', outside the archive",
    ),
    "a layer that links to an absolute path": (
        lambda e: replace(e, layer_name(e), (layer_name(e), None, "/etc/passwd")),
        "outside the archive",
    ),
    "a layer that links to a folder": (
        lambda e: replace(e, layer_name(e), (layer_name(e), None, ".")),
        "not to a file in the archive",
    ),
    "a layer that links to nothing": (
        lambda e: replace(e, layer_name(e), (layer_name(e), None, "nowhere.tar")),
        "not to a file in the archive",
    ),
    "a config that links to the manifest": (
        lambda e: replace(e, config_name(e), (config_name(e), None, "manifest.json")),
        "no rootfs.diff_ids",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_archive_is_an_image_error_saying_what_is_wrong(tmp_path: Path, case: str) -> None:
    change, message = BROKEN[case]
    path = write_tar(tmp_path / "broken.tar", change(entries_of([BASE, TOP])))
    with pytest.raises(kiln.ImageError, match=message) as raised:
        read_archive(path)
    assert raised.value.code == kiln.ErrorCode.BAD_IMAGE


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (config_of([BASE]), r"the config names 1 layers \(rootfs.diff_ids\) but manifest.json lists 2"),
        (config_of([BASE, TOP, TOP]), "names 3 layers"),
        (json.dumps({"os": "linux"}).encode(), "no rootfs.diff_ids"),
        (json.dumps({"rootfs": {"diff_ids": ["md5:x", "md5:y"]}}).encode(), "no rootfs.diff_ids"),
        (b"not json", "the config '.*' is not JSON"),
    ],
)
def test_a_config_that_disagrees_with_the_layers_is_an_image_error(tmp_path: Path, config: bytes, message: str) -> None:
    path = write_tar(tmp_path / "image.tar", entries_of([BASE, TOP], config=config))
    with pytest.raises(kiln.ImageError, match=message):
        read_archive(path)


def test_files_that_are_no_archive_are_image_errors(tmp_path: Path) -> None:
    good = write_tar(tmp_path / "image.tar", entries_of([BASE, TOP]))
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar file at all " * 40)
    with pytest.raises(kiln.ImageError, match=r"not a docker save archive: .*junk\.tar is not a tar file"):
        read_archive(junk)
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    with pytest.raises(kiln.ImageError, match="is not a tar file"):
        read_archive(empty)
    zipped = tmp_path / "image.tar.gz"
    zipped.write_bytes(gzip.compress(good.read_bytes()))
    with pytest.raises(kiln.ImageError, match="gzip-compressed; decompress it first"):
        read_archive(zipped)
    cut = tmp_path / "cut.tar"
    data = good.read_bytes()
    cut.write_bytes(data[: data.index(TOP[:512]) + 1000])  # ends inside the top layer
    with pytest.raises(kiln.ImageError):
        read_archive(cut)
    with pytest.raises(kiln.UsageError, match="cannot read"):
        read_archive(tmp_path / "absent.tar")


def test_a_compressed_layer_is_refused_with_the_reason(tmp_path: Path) -> None:
    squeezed = gzip.compress(TOP)
    entries = entries_of([BASE, squeezed], "oci")
    path = write_tar(tmp_path / "image.tar", entries)
    with pytest.raises(kiln.ImageError, match=r"layer 2 \(.*\) is gzip-compressed; Kiln needs the uncompressed"):
        read_archive(path)


async def test_a_file_that_changes_after_it_was_read_fails_the_blob_read(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "image.tar", entries_of([BASE, TOP]))
    archive = read_archive(path)
    with path.open("r+b") as f:
        f.truncate(archive.extents[sha(TOP)].offset + 100)
    with pytest.raises(kiln.ImageError, match="did the file change"):
        await read_blob(archive, sha(TOP))


def test_push_tags_are_the_archives_then_the_callers_each_once(tmp_path: Path) -> None:
    archive = read_archive(write_tar(tmp_path / "image.tar", entries_of([BASE], tags=["wordcount:1"])))
    assert push_tags(archive, ["wc:2", "wordcount:1", "registry.example:5000/team/wc:v1.2"]) == [
        "wordcount:1",
        "wc:2",
        "registry.example:5000/team/wc:v1.2",
    ]
    for bad in ("Upper:1", "wc:", "sha256:" + "a" * 64, "a b"):
        with pytest.raises(kiln.UsageError, match="not an image tag"):
            push_tags(archive, [bad])
    with pytest.raises(kiln.UsageError, match="at most 16"):
        push_tags(archive, [f"wc:{i}" for i in range(16)])


async def test_without_the_docker_command_saving_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(kiln.UsageError, match="needs the docker command"):
        await inspect_engine_image("wordcount:1")
    with pytest.raises(kiln.UsageError, match="needs the docker command"):
        async with saving(EngineImage(sha(b"c"), (), ())):
            pass


# --- the command line, before any hub is needed ----------------------------------------


def test_kiln_image_push_of_a_broken_file_exits_with_its_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = write_tar(tmp_path / "broken.tar", replace(entries_of([BASE]), "manifest.json", None))
    # No hub listens there: the archive is judged before any is dialled.
    assert main(["image", "push", "--file", str(broken), "--hub", "ws://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "manifest.json' is missing [bad_image]" in err.splitlines()[-1]
    assert main(["image", "push", "--hub", "ws://127.0.0.1:9"]) == 1
    usage = "give an image of the local engine (REF) or an archive (--file F.tar) [bad_message]"
    assert usage in capsys.readouterr().err


def test_kiln_image_keeps_busybox_and_adds_push_ls_rm() -> None:
    from kiln.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["image", "busybox"]).tag == "kiln-busybox:latest"
    push = parser.parse_args(["image", "push", "wc:1", "--hub", "ws://h", "--tag", "a:1", "--tag", "b:2"])
    assert (push.image_command, push.ref, push.file, push.tag, push.hub) == (
        "push",
        "wc:1",
        None,
        ["a:1", "b:2"],
        ["ws://h"],
    )
    assert parser.parse_args(["image", "ls", "--hub", "ws://h", "--token", "t"]).token == "t"
    assert parser.parse_args(["image", "rm", "wc:1"]).ref == "wc:1"


# --- docker save streamed: blobs readable before the save ends ------------------------------


@contextlib.asynccontextmanager
async def saved_stream(
    data: bytes, layers: list[bytes], config: bytes, spool: Any, size: int
) -> AsyncIterator[SavedStream]:
    """A SavedStream over ``data`` as ``docker save`` would write it, read ``size`` bytes at a
    time by its follower thread while the test reads it."""
    pieces = iter([data[at : at + size] for at in range(0, len(data), size)])
    image = EngineImage(sha(config), tuple(sha(x) for x in layers), ("wordcount:1",))
    saved = SavedStream(image, lambda _: next(pieces, b""), spool)
    follower = asyncio.ensure_future(asyncio.to_thread(saved.follow))
    try:
        yield saved
    finally:
        await follower


@pytest.mark.parametrize("layout", ["legacy", "oci"])
@pytest.mark.parametrize("size", [1000, 4096, 1 << 20])
async def test_a_streamed_save_gives_the_manifest_and_every_blob(tmp_path: Path, layout: Layout, size: int) -> None:
    layers = [BASE, TOP, BASE]
    entries = entries_of(layers, layout)
    if layout == "legacy":  # the repeated layer as Docker writes it: a link to its first copy
        names = [name for name, _, _ in entries if name.endswith("/layer.tar")]
        entries = [(n, None, f"../{names[0]}") if n == names[2] else (n, d, link) for n, d, link in entries]
    data = write_tar(tmp_path / "image.tar", entries).read_bytes()
    config = config_of(layers)
    with (tmp_path / "spool").open("w+b") as spool:
        async with saved_stream(data, layers, config, spool, size) as saved:
            manifest = await saved.ready()
            assert manifest.config.digest == sha(config) and manifest.config.size == len(config)
            assert [(b.digest, b.size) for b in manifest.layers] == [(sha(x), len(x)) for x in layers]
            for blob, expected in ((sha(TOP), TOP), (sha(config), config), (sha(BASE), BASE)):
                got = b"".join([chunk async for chunk in saved.blob_chunks(blob, 777)])
                assert got == expected


async def test_a_streamed_save_with_a_layer_the_engine_did_not_list_is_an_image_error(tmp_path: Path) -> None:
    data = write_tar(tmp_path / "image.tar", entries_of([BASE, TOP])).read_bytes()
    with (tmp_path / "spool").open("w+b") as spool:
        async with saved_stream(data, [BASE, layer(("other", b"x"))], config_of([BASE, TOP]), spool, 4096) as saved:
            with pytest.raises(kiln.ImageError, match="does not list"):
                await saved.ready()


async def test_a_streamed_save_cut_short_is_an_image_error(tmp_path: Path) -> None:
    data = write_tar(tmp_path / "image.tar", entries_of([BASE, TOP])).read_bytes()
    with (tmp_path / "spool").open("w+b") as spool:
        async with saved_stream(data[:4000], [BASE, TOP], config_of([BASE, TOP]), spool, 4096) as saved:
            with pytest.raises(kiln.ImageError, match="ended"):
                await saved.ready()


def test_the_tar_reader_takes_pax_sizes_and_long_names() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("x" * 150 + "/layer.tar")  # past ustar's 100 bytes: a PAX path
        info.size = 3
        info.pax_headers = {"comment": "ignored"}
        tar.addfile(info, io.BytesIO(b"abc"))
    reader = TarReader()
    events = [e for at in range(0, len(out.getvalue()), 100) for e in reader.feed(out.getvalue()[at : at + 100])]
    assert events[0] == ("member", "x" * 150 + "/layer.tar", 3, True)
    assert b"".join(e[1] for e in events if e[0] == "data") == b"abc"
    assert events[-1] == ("end",)
