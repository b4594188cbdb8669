"""Images as ``docker save`` writes them: read an archive's index, stream its blobs, save one.

A ``docker save`` archive is a tar holding ``manifest.json`` (for each image: its config
file, its tags, its layer files, base first), the config (JSON; its sha256 is Docker's image
id) and each layer as an uncompressed tar (whose sha256 is the config's
``rootfs.diff_ids[i]``). Docker before 25 writes ``<id>/layer.tar`` and ``<hex>.json``;
later Dockers write the OCI layout, ``blobs/sha256/<hex>``. Both name their files in
``manifest.json``, which is all this module reads::

    archive = await asyncio.to_thread(read_archive, "wordcount.tar")
    archive.manifest          # what ``push_image`` sends
    async for chunk in archive.blob_chunks(archive.manifest.layers[0].digest):
        ...

Nothing here needs docker-py: :func:`docker_save` runs the ``docker`` command.
:func:`push_archive` (behind :meth:`kiln.Requestor.push_image`) sends an archive's image to
the hub's store: only the blobs the hub's ``want`` names, in its order, within credit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from kiln.connection import Connection
from kiln.protocol.errors import ImageError, KilnError, RemoteProtocolError, UsageError
from kiln.protocol.messages import (
    MAX_LAYERS,
    MAX_TAGS,
    TAG_PATTERN,
    Blob,
    ImageInfo,
    ImagePushed,
    Manifest,
    PushImage,
    Want,
)
from kiln.protocol.session import Interim

READ_BYTES: Final = 256 * 1024
MAX_INDEX_BYTES: Final = 16 * 2**20
"""The largest ``manifest.json`` or config read into memory (real ones are a few KiB)."""
_DIGEST: Final = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG: Final = re.compile(TAG_PATTERN)
_COMPRESSED: Final = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"BZh": "bzip2", b"\xfd7zXZ": "xz"}


@dataclass(frozen=True, slots=True)
class Extent:
    """Where a blob's bytes lie in the archive file."""

    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class ImageArchive:
    """One image in a ``docker save`` archive: its manifest, its tags, where each blob lies.

    Get one from :func:`read_archive`; read blobs with :meth:`blob_chunks`.
    """

    path: Path
    manifest: Manifest
    tags: tuple[str, ...]
    extents: dict[str, Extent]
    """By digest: the config's and each layer's bytes in the file."""

    @property
    def digest(self) -> str:
        """The image's digest: ``sha256:`` + Docker's image id."""
        return self.manifest.config.digest

    @property
    def size(self) -> int:
        """The bytes of its config and layers (a layer listed twice counts once)."""
        blobs = {b.digest: b.size for b in [self.manifest.config, *self.manifest.layers]}
        return sum(blobs.values())

    async def blob_chunks(self, digest: str, chunk: int = READ_BYTES) -> AsyncIterator[bytes]:
        """The bytes of blob ``digest``, read from the file in chunks of at most ``chunk`` bytes.

        Raises :class:`ImageError` when the file changed under us (it ends early).
        """
        extent = self.extents.get(digest)
        if extent is None:
            raise ImageError(f"{self.path} holds no blob {digest}")
        try:
            handle = await asyncio.to_thread(self.path.open, "rb")
        except OSError as e:
            raise ImageError(f"cannot read {self.path}: {e.strerror or e}") from e
        try:
            done = 0
            while done < extent.size:
                want = min(chunk, extent.size - done)
                data = await asyncio.to_thread(os.pread, handle.fileno(), want, extent.offset + done)
                if not data:
                    raise ImageError(f"{self.path} ended inside blob {digest}: did the file change?")
                done += len(data)
                yield data
        finally:
            handle.close()


def read_archive(path: str | os.PathLike[str]) -> ImageArchive:
    """Index the ``docker save`` archive at ``path`` (blocking: run it in a thread).

    Reads only the tar headers, ``manifest.json`` and the config. Raises
    :class:`~kiln.protocol.errors.ImageError` when the file is not such an archive, holds
    other than exactly one image, or its config and layers disagree;
    :class:`~kiln.protocol.errors.UsageError` when it cannot be read at all.
    """
    source = Path(path)
    try:
        handle = source.open("rb")
    except OSError as e:
        raise UsageError(f"cannot read {source}: {e.strerror or e}") from e
    with handle:
        magic = handle.read(6)
        for prefix, kind in _COMPRESSED.items():
            if magic.startswith(prefix):
                raise ImageError(f"not a docker save archive: {source} is {kind}-compressed; decompress it first")
        handle.seek(0)
        try:
            with tarfile.open(fileobj=handle, mode="r:") as tar:
                members = {_normal(m.name): m for m in tar.getmembers()}
        except (tarfile.TarError, EOFError) as e:
            raise ImageError(f"not a docker save archive: {source} is not a tar file ({e})") from e
        return _Index(source, handle, members, os.fstat(handle.fileno()).st_size).image()


class _Index:
    """The members of one archive, and the checks every lookup makes."""

    def __init__(self, source: Path, handle: Any, members: dict[str, tarfile.TarInfo], size: int) -> None:
        self.source = source
        self.handle = handle
        self.members = members
        self.size = size

    def fail(self, why: str) -> ImageError:
        return ImageError(f"not a docker save archive: {self.source}: {why}")

    def member(self, name: object, what: str) -> tarfile.TarInfo:
        """The regular file ``name`` (a link to one inside the archive is followed, as Docker
        writes a layer that recurs in an image's chain)."""
        if not isinstance(name, str) or not name:
            raise self.fail(f"{what} is not named by a file name")
        key = _normal(name)
        if key.startswith("../") or key == ".." or name.startswith("/"):
            raise self.fail(f"{what} {name!r} lies outside the archive")
        found = self.members.get(key)
        if found is None:
            raise self.fail(f"{what} {name!r} is missing")
        if found.issym() or found.islnk():
            target = found.linkname if found.islnk() else posixpath.join(posixpath.dirname(key), found.linkname)
            target_key = _normal(target)
            if found.linkname.startswith("/") or target_key.startswith("../") or target_key == "..":
                raise self.fail(f"{what} {name!r} is a link to {found.linkname!r}, outside the archive")
            linked = self.members.get(target_key)
            if linked is None or not linked.isreg():
                raise self.fail(f"{what} {name!r} is a link to {found.linkname!r}, not to a file in the archive")
            found = linked
        elif not found.isreg():
            raise self.fail(f"{what} {name!r} is not a regular file")
        if found.offset_data + found.size > self.size:
            raise self.fail(f"{what} {name!r} is cut short: the file ends inside it")
        return found

    def read(self, member: tarfile.TarInfo, what: str) -> bytes:
        if member.size > MAX_INDEX_BYTES:
            raise self.fail(f"{what} {member.name!r} is {member.size} bytes, more than any docker save writes")
        self.handle.seek(member.offset_data)
        data: bytes = self.handle.read(member.size)
        if len(data) != member.size:
            raise self.fail(f"{what} {member.name!r} is cut short")
        return data

    def json(self, member: tarfile.TarInfo, what: str) -> Any:
        try:
            return orjson.loads(self.read(member, what))
        except orjson.JSONDecodeError as e:
            raise self.fail(f"{what} {member.name!r} is not JSON ({e})") from e

    def image(self) -> ImageArchive:
        entries = self.json(self.member("manifest.json", "manifest.json"), "manifest.json")
        if not isinstance(entries, list):
            raise self.fail("manifest.json is not a list of images")
        if len(entries) != 1:
            raise self.fail(f"manifest.json lists {len(entries)} images; save exactly one (docker save IMAGE)")
        entry = entries[0]
        if not isinstance(entry, dict):
            raise self.fail("manifest.json's image is not an object")
        config_member = self.member(entry.get("Config"), "the config")
        config_bytes = self.read(config_member, "the config")
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        try:
            config = orjson.loads(config_bytes)
        except orjson.JSONDecodeError as e:
            raise self.fail(f"the config {config_member.name!r} is not JSON ({e})") from e
        layers = entry.get("Layers")
        if not isinstance(layers, list):
            raise self.fail("manifest.json's image lists no Layers")
        if len(layers) > MAX_LAYERS:
            raise ImageError(f"{self.source}: the image has {len(layers)} layers; Kiln takes at most {MAX_LAYERS}")
        rootfs = config.get("rootfs") if isinstance(config, dict) else None
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or not all(isinstance(d, str) and _DIGEST.match(d) for d in diff_ids):
            raise ImageError(f"{self.source}: the config has no rootfs.diff_ids (sha256 digests)")
        if len(diff_ids) != len(layers):
            raise ImageError(
                f"{self.source}: the config names {len(diff_ids)} layers (rootfs.diff_ids) "
                f"but manifest.json lists {len(layers)}"
            )
        extents = {config_digest: Extent(config_member.offset_data, config_member.size)}
        blobs: list[Blob] = []
        for i, (name, digest) in enumerate(zip(layers, diff_ids, strict=True)):
            member = self.member(name, f"layer {i + 1}")
            self.check_uncompressed(member, f"layer {i + 1}")
            known = extents.setdefault(digest, Extent(member.offset_data, member.size))
            if known.size != member.size:
                raise ImageError(f"{self.source}: layer {digest} appears twice with different sizes")
            blobs.append(Blob(digest=digest, size=member.size))
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise self.fail("manifest.json's RepoTags is not a list of names")
        manifest = Manifest(config=Blob(digest=config_digest, size=config_member.size), layers=blobs)
        return ImageArchive(self.source, manifest, tuple(tags), extents)

    def check_uncompressed(self, member: tarfile.TarInfo, what: str) -> None:
        # Docker's containerd image store saves layers as pulled (compressed); Kiln moves
        # layers as Docker loads them, uncompressed, named by their diff_ids.
        self.handle.seek(member.offset_data)
        magic = self.handle.read(6)
        for prefix, kind in _COMPRESSED.items():
            if magic.startswith(prefix):
                raise ImageError(
                    f"{self.source}: {what} ({member.name!r}) is {kind}-compressed; Kiln needs the uncompressed "
                    "layers the config's diff_ids name (save it with a Docker that does not use the containerd store)"
                )


def _normal(name: str) -> str:
    """A member name as a lookup key: ``./a//b/`` and ``a/b`` are the same member."""
    return posixpath.normpath(name.lstrip("/")) if name not in ("", ".") else "."


@contextlib.asynccontextmanager
async def docker_save(ref: str) -> AsyncIterator[Path]:
    """Save the local Docker engine's image ``ref`` with ``docker save`` to a temporary archive.

    Yields the archive's path; the temporary folder is removed on exit. Raises
    :class:`~kiln.protocol.errors.UsageError` when the ``docker`` command is missing, and
    :class:`~kiln.protocol.errors.ImageError` when the save fails (no such image, no engine).
    """
    if not ref or ref.startswith("-"):
        raise UsageError(f"not an image reference: {ref!r}")
    docker = shutil.which("docker")
    if docker is None:
        raise UsageError("pushing a local image needs the docker command on PATH (or push a file: --file IMAGE.tar)")
    folder = await asyncio.to_thread(tempfile.mkdtemp, prefix="kiln-save-")
    try:
        target = Path(folder) / "image.tar"
        try:
            process = await asyncio.create_subprocess_exec(
                docker, "save", "-o", str(target), ref,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except OSError as e:
            raise UsageError(f"cannot run {docker}: {e.strerror or e}") from e
        try:
            _, stderr = await process.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            said = stderr.decode(errors="replace").strip().splitlines()
            raise ImageError(f"docker save {ref} failed: {said[-1] if said else f'exit code {process.returncode}'}")
        yield target
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)


# --- pushing an archive to the hub's store ----------------------------------------------

PushProgress = Callable[[int, int, int], None]
"""Called as a push goes: bytes sent so far, bytes to send in all, bytes skipped (the hub has them)."""


@dataclass(frozen=True, slots=True)
class PushedImage:
    """An image the hub now stores: its ``digest`` (``sha256:…``), ``tags`` and ``size``; what
    the push moved (``sent_bytes``) and what the hub held already (``skipped_bytes``, of
    ``layers_skipped`` of the image's ``layers``); ``info`` as the hub lists it."""

    digest: str
    tags: tuple[str, ...]
    size: int
    sent_bytes: int
    skipped_bytes: int
    info: ImageInfo
    layers: int = 0
    layers_skipped: int = 0


def push_tags(archive: ImageArchive, tags: Iterable[str]) -> list[str]:
    """The archive's own tags, then ``tags``, each once; :class:`UsageError` for a bad one."""
    names = list(dict.fromkeys([*archive.tags, *tags]))
    for name in names:
        if not isinstance(name, str) or len(name) > 255 or not _TAG.match(name) or name.startswith("sha256:"):
            raise UsageError(f"not an image tag: {name!r} (write name[:tag], e.g. wordcount:1)")
    if len(names) > MAX_TAGS:
        raise UsageError(f"{len(names)} tags; an image takes at most {MAX_TAGS} in one push")
    return names


async def push_archive(
    conn: Connection, archive: ImageArchive, tags: Iterable[str] = (), progress: PushProgress | None = None
) -> PushedImage:
    """Push ``archive``'s image to the hub's store over ``conn`` (see :meth:`kiln.Requestor.push_image`)."""
    names = push_tags(archive, tags)
    manifest = archive.manifest
    message = PushImage(type="push_image", id=conn.new_id(), manifest=manifest, tags=names)
    wanted: asyncio.Future[Want] = asyncio.get_running_loop().create_future()

    def on_interim(info: Interim) -> None:
        if isinstance(info, Want) and not wanted.done():
            wanted.set_result(info)

    sender, reply = await conn.open_upload(message, on_interim)
    blobs = {b.digest: b.size for b in [manifest.config, *manifest.layers]}
    total = sum(blobs.values())
    skipped_layers = len(manifest.layers)
    try:
        first: list[asyncio.Future[Any]] = [wanted, reply]
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if wanted.done():  # the hub lacks some blobs: send them, in its order
            want = wanted.result()
            unknown = [d for d in want.blobs if d not in blobs]
            if unknown:
                raise RemoteProtocolError(f"the hub wants blob {unknown[0]}, which is not in the image", re=message.id)
            to_send = sum(blobs[d] for d in want.blobs)
            skipped_layers = sum(1 for layer in manifest.layers if layer.digest not in want.blobs)
            sent = 0
            if progress is not None:
                progress(0, to_send, total - to_send)
            for digest in want.blobs:
                async for chunk in archive.blob_chunks(digest, conn.session.limits.chunk_bytes):
                    await sender.write(chunk)
                    sent += len(chunk)
                    if progress is not None:
                        progress(sent, to_send, total - to_send)
            await sender.end()
        done = await reply
        if not wanted.done() and progress is not None:
            progress(0, 0, total)  # the hub held every blob
    except BaseException as e:
        if reply.done():
            _ = reply.cancelled() or reply.exception()  # seen: it is what we raise
        else:
            reply.cancel()
            with contextlib.suppress(KilnError):
                await sender.abort(str(e) or type(e).__name__)
        raise
    assert isinstance(done, ImagePushed)
    info = done.image
    return PushedImage(
        digest=info.digest, tags=tuple(info.tags), size=info.size, sent_bytes=done.sent, skipped_bytes=done.skipped,
        info=info, layers=len(manifest.layers), layers_skipped=skipped_layers,
    )  # fmt: skip
