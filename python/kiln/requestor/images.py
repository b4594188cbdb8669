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

Nothing here needs docker-py: :func:`saving` runs ``docker save`` and reads it as it comes
(:class:`SavedStream`), so that a push from the engine starts before the save ends.
:func:`push_archive` (behind :meth:`kiln.Requestor.push_image`) sends an image (from an
archive or a save) to the hub's store: only the blobs the hub's ``want`` names, in its
order, within credit.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

from kiln.connection import Connection
from kiln.protocol.errors import ImageError, KilnError, RemoteProtocolError, UsageError
from kiln.protocol.layers import pax_records
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
SAVE_READ_BYTES: Final = 1024 * 1024
"""What a push from the engine reads of ``docker save`` at once (and its pipe's size)."""
_F_SETPIPE_SZ: Final = 1031
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


def push_tags(archive: ImageSource, tags: Iterable[str]) -> list[str]:
    """The archive's own tags, then ``tags``, each once; :class:`UsageError` for a bad one."""
    names = list(dict.fromkeys([*archive.tags, *tags]))
    for name in names:
        if not isinstance(name, str) or len(name) > 255 or not _TAG.match(name) or name.startswith("sha256:"):
            raise UsageError(f"not an image tag: {name!r} (write name[:tag], e.g. wordcount:1)")
    if len(names) > MAX_TAGS:
        raise UsageError(f"{len(names)} tags; an image takes at most {MAX_TAGS} in one push")
    return names


async def push_archive(
    conn: Connection, archive: ImageSource, tags: Iterable[str] = (), progress: PushProgress | None = None
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
                async for chunk in archive.blob_chunks(digest, SAVE_READ_BYTES):  # write() cuts it into frames
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
        digest=info.digest,
        tags=tuple(info.tags),
        size=info.size,
        sent_bytes=done.sent,
        skipped_bytes=done.skipped,
        info=info,
        layers=len(manifest.layers),
        layers_skipped=skipped_layers,
    )


# --- pushing straight from the engine: `docker save` streamed --------------------------


class ImageSource(Protocol):
    """What :func:`push_archive` sends from: an image's manifest and tags, and each blob's bytes."""

    @property
    def manifest(self) -> Manifest: ...

    @property
    def tags(self) -> tuple[str, ...]: ...

    def blob_chunks(self, digest: str, chunk: int = READ_BYTES) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True, slots=True)
class EngineImage:
    """An image of the local engine as ``docker image inspect`` tells it, before any save."""

    digest: str
    """``sha256:`` + its id: the config's digest."""
    layers: tuple[str, ...]
    """Its layers' digests (``RootFS.Layers``, the config's diff_ids), base first."""
    tags: tuple[str, ...]


async def _docker(what: str, *args: str) -> bytes:
    docker = shutil.which("docker")
    if docker is None:
        raise UsageError("pushing a local image needs the docker command on PATH (or push a file: --file IMAGE.tar)")
    try:
        process = await asyncio.create_subprocess_exec(
            docker,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        raise UsageError(f"cannot run {docker}: {e.strerror or e}") from e
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        said = stderr.decode(errors="replace").strip().splitlines()
        raise ImageError(f"{what} failed: {said[-1] if said else f'exit code {process.returncode}'}")
    return stdout


async def inspect_engine_image(ref: str) -> EngineImage:
    """Ask the local engine about image ``ref`` (its id, layers and tags); no bytes are saved.

    Raises :class:`UsageError` when the ``docker`` command is missing, :class:`ImageError` when
    the engine has no such image (or is not running) or describes it oddly.
    """
    if not ref or ref.startswith("-"):
        raise UsageError(f"not an image reference: {ref!r}")
    out = await _docker(f"docker image inspect {ref}", "image", "inspect", "--format", "{{json .}}", ref)
    try:
        facts = orjson.loads(out)
        digest, layers = facts["Id"], facts["RootFS"]["Layers"]
        tags = facts.get("RepoTags") or []
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise ImageError(f"docker image inspect {ref} said something unexpected ({e})") from e
    if not (isinstance(digest, str) and _DIGEST.match(digest)) or not isinstance(layers, list):
        raise ImageError(f"docker image inspect {ref}: no sha256 id or no RootFS.Layers")
    if not all(isinstance(d, str) and _DIGEST.match(d) for d in layers):
        raise ImageError(f"docker image inspect {ref}: its layers are not named by sha256 digests")
    if len(layers) > MAX_LAYERS:
        raise ImageError(f"{ref}: the image has {len(layers)} layers; Kiln takes at most {MAX_LAYERS}")
    return EngineImage(digest, tuple(layers), tuple(t for t in tags if isinstance(t, str)))


class TarReader:
    """The members of a tar as its bytes come (pure: feed bytes, take events).

    :meth:`feed` returns, in order, ``("member", name, size, regular)`` when a member's header
    is complete, ``("data", view)`` for its contents (a regular file's only; a memoryview of
    what was fed, to be used before the next feed), and ``("end",)``
    at the end of the archive. PAX ``path``/``size`` records and GNU long names are applied to
    the member they precede; padding is skipped.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._left = 0  # bytes of the current member's data still to come
        self._pad = 0  # then this much padding
        self._emit = False  # whether the current data is a regular file's (given to the caller)
        self._meta: bytearray | None = None  # collecting a PAX header's or a GNU long name's data
        self._meta_kind = b""
        self._pending: dict[str, str] = {}  # for the next member, from PAX / GNU records
        self.ended = False

    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        events: list[tuple[Any, ...]] = []
        view = memoryview(data)
        at = 0
        while at < len(view) and not self.ended:
            if self._left:
                take = min(self._left, len(view) - at)
                piece = view[at : at + take]
                if self._meta is not None:
                    self._meta += piece
                elif self._emit:
                    events.append(("data", piece))  # a view of ``data``: use it before the next feed
                self._left -= take
                at += take
                if not self._left and self._meta is not None:
                    self._close_meta()
                continue
            if self._pad:
                skip = min(self._pad, len(view) - at)
                self._pad -= skip
                at += skip
                continue
            take = min(tarfile.BLOCKSIZE - len(self._buffer), len(view) - at)
            self._buffer += view[at : at + take]
            at += take
            if len(self._buffer) == tarfile.BLOCKSIZE:
                block, self._buffer = bytes(self._buffer), bytearray()
                events += self._header(block)
        return events

    def _header(self, block: bytes) -> list[tuple[Any, ...]]:
        if block == bytes(tarfile.BLOCKSIZE):
            self.ended = True
            return [("end",)]
        try:
            info = tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
        except tarfile.HeaderError as e:
            raise ImageError(f"docker save wrote something that is not a tar ({e})") from e
        size = info.size
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            if size > MAX_INDEX_BYTES:
                raise ImageError(f"docker save wrote a tar header record of {size} bytes")
            self._meta, self._meta_kind = bytearray(), info.type
            self._left, self._pad = size, -size % tarfile.BLOCKSIZE
            if not size:
                self._close_meta()
            return []
        name = self._pending.pop("path", info.name)
        if "size" in self._pending:
            size = int(self._pending.pop("size"))
        self._pending.clear()
        regular = info.type in tarfile.REGULAR_TYPES
        self._left = size if regular else 0
        self._pad = -self._left % tarfile.BLOCKSIZE
        self._emit = regular
        return [("member", name, self._left, regular)]

    def _close_meta(self) -> None:
        assert self._meta is not None
        data, kind = bytes(self._meta), self._meta_kind
        self._meta = None
        if kind == tarfile.GNUTYPE_LONGNAME:
            self._pending["path"] = data.rstrip(b"\0").decode(errors="surrogateescape")
        elif kind == tarfile.XHDTYPE:
            records = pax_records(data)
            self._pending.update((key, records[key]) for key in ("path", "size") if key in records)


@dataclass
class _Spooled:
    offset: int  # where its bytes start in the spool file
    size: int
    written: int = 0


class SavedStream:
    """``docker save`` of one image, read as it comes and kept in a spool file, each blob
    readable as soon as its bytes are there: what :func:`push_archive` sends from.

    Get one from :func:`saving`, which runs :meth:`follow` in a thread: it reads the save into
    the spool at Docker's pace while the push sends. The push can start before the save ends:
    the manifest (each blob's size) is known once the last blob's tar header arrived, and that
    blob then goes to the hub as Docker writes it. A layer is named by the sha256 of its bytes
    (``<id>/layer.tar``, Docker before 25) or by its file name (``blobs/sha256/<hex>``, the OCI
    layout); the config by its file name (``<id>.json`` or ``blobs/sha256/<id>``).
    """

    def __init__(self, image: EngineImage, read: Callable[[int], bytes], spool: Any) -> None:
        self.image = image
        self._read = read  # blocking: the next bytes of the save, b"" at its end
        self._spool = spool
        self._tar = TarReader()
        self._end = 0  # bytes in the spool
        self._blobs: dict[str, _Spooled] = {}  # by digest: the config and the layers named so far
        self._unnamed: _Spooled | None = None  # a layer.tar still coming: named by its sha256 at its end
        self._hash: Any = None
        self._current: _Spooled | None = None  # the regular member whose data is coming
        self._manifest: Manifest | None = None
        # Between follow() (a thread) and the readers (the event loop):
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._moved = asyncio.Event()
        self.ended = False
        """Whether follow() is over (the save read to its end, or failed: :attr:`failure`)."""
        self.failure: BaseException | None = None

    @property
    def manifest(self) -> Manifest:
        assert self._manifest is not None, "call ready() first"
        return self._manifest

    @property
    def tags(self) -> tuple[str, ...]:
        return self.image.tags

    def follow(self) -> None:
        """Read the save into the spool, to its end (blocking: run it in a thread). Never
        raises: a failure is kept in :attr:`failure` for the readers to raise."""
        try:
            while data := self._read(SAVE_READ_BYTES):
                with self._lock:
                    self._write(data)
                self._loop.call_soon_threadsafe(self._moved.set)
            if not self._tar.ended:
                raise ImageError(f"docker save of {self.image.digest} ended in the middle of its archive")
        except BaseException as e:  # noqa: BLE001 - kept for the readers, who raise it
            self.failure = e
        finally:
            self.ended = True
            self._loop.call_soon_threadsafe(self._moved.set)

    async def ready(self) -> Manifest:
        """Wait until every blob's size is known; the image's manifest."""
        while True:
            self._moved.clear()
            with self._lock:
                manifest = self._known()
            if manifest is not None:
                self._manifest = manifest
                return manifest
            if self.ended:
                if self.failure is not None:
                    raise self.failure
                missing = [d for d in (self.image.digest, *self.image.layers) if d not in self._blobs]
                raise ImageError(f"docker save of {self.image.digest} ended without {missing[0]}")
            await self._moved.wait()

    def _known(self) -> Manifest | None:
        layers = set(self.image.layers)
        unknown = layers - self._blobs.keys()
        if self.image.digest not in self._blobs or len(unknown) > 1:
            return None
        if unknown:  # the layer now coming is the one left: named before its end, checked at it
            if self._unnamed is None:
                return None
            self._blobs[unknown.pop()] = self._unnamed
        blob = self._blobs
        return Manifest(
            config=Blob(digest=self.image.digest, size=blob[self.image.digest].size),
            layers=[Blob(digest=d, size=blob[d].size) for d in self.image.layers],
        )

    def _write(self, data: bytes) -> None:
        """Spool ``data`` and follow the tar (it writes and hashes: in follow()'s thread)."""
        for event in self._tar.feed(data):
            if event[0] == "member":
                self._member(event[1], event[2], event[3])
            elif event[0] == "data":
                piece: memoryview = event[1]
                if self._current is None:
                    continue  # a file not sent (manifest.json, a layer's json)
                os.pwrite(self._spool.fileno(), piece, self._end)
                self._end += len(piece)
                self._current.written += len(piece)
                if self._hash is not None:
                    self._hash.update(piece)
                if self._current.written == self._current.size:
                    self._finish()
            elif event[0] == "end" and self._current is not None:
                raise ImageError("docker save's archive ended inside a file")

    def _member(self, name: str, size: int, regular: bool) -> None:
        self._current = None
        if not regular:
            return
        spooled = _Spooled(self._end, size)
        key = _normal(name)
        digest = self._named(key)
        if digest is not None:
            self._blobs.setdefault(digest, spooled)
        elif posixpath.basename(key) == "layer.tar":
            self._unnamed, self._hash = spooled, hashlib.sha256()
        else:
            return  # manifest.json, repositories, a layer's json and VERSION: not sent
        self._current = spooled
        if not size:
            self._finish()

    def _named(self, key: str) -> str | None:
        hexa = self.image.digest.removeprefix("sha256:")
        if key in (f"{hexa}.json", f"blobs/sha256/{hexa}"):
            return self.image.digest
        if key.startswith("blobs/sha256/") and f"sha256:{key.rsplit('/', 1)[1]}" in self.image.layers:
            return f"sha256:{key.rsplit('/', 1)[1]}"
        return None

    def _finish(self) -> None:
        current, self._current = self._current, None
        if current is None or self._hash is None or current is not self._unnamed:
            return
        digest = "sha256:" + self._hash.hexdigest()
        self._hash, self._unnamed = None, None
        named = [d for d, spooled in self._blobs.items() if spooled is current]
        if named and named[0] != digest:
            raise ImageError(f"docker save wrote layer {named[0]} as bytes whose sha256 is {digest}")
        if digest not in self.image.layers:
            raise ImageError(
                f"docker save wrote a layer ({digest}) that docker image inspect does not list: is it "
                "compressed (Docker's containerd image store)? Kiln needs the uncompressed layers"
            )
        self._blobs.setdefault(digest, current)

    async def blob_chunks(self, digest: str, chunk: int = READ_BYTES) -> AsyncIterator[bytes]:
        """The bytes of blob ``digest``: from the spool, waiting for follow() while they are not there yet."""
        spooled = self._blobs.get(digest)
        if spooled is None:
            raise ImageError(f"docker save of {self.image.digest} holds no blob {digest}")
        done = 0
        while done < spooled.size:
            self._moved.clear()
            with self._lock:
                written = spooled.written
            if done < written:
                want = min(chunk, written - done)
                data = await asyncio.to_thread(os.pread, self._spool.fileno(), want, spooled.offset + done)
                done += len(data)
                yield data
            elif self.ended:
                raise self.failure or ImageError(f"docker save ended inside blob {digest}")
            else:
                await self._moved.wait()


@contextlib.asynccontextmanager
async def saving(image: EngineImage) -> AsyncIterator[SavedStream]:
    """Run ``docker save`` of ``image`` and yield it as a :class:`SavedStream` (its manifest
    ready; the save still read into the spool by a thread); on exit the save is stopped if it
    still runs, and the spool removed.

    Raises :class:`ImageError` when the save fails or writes what the engine did not describe.
    """
    docker = shutil.which("docker")
    if docker is None:
        raise UsageError("pushing a local image needs the docker command on PATH (or push a file: --file IMAGE.tar)")
    spool = await asyncio.to_thread(tempfile.TemporaryFile, prefix="kiln-save-")
    out, into = os.pipe()
    with contextlib.suppress(OSError):  # a wider pipe: fewer, larger reads (Linux; best effort)
        fcntl.fcntl(out, _F_SETPIPE_SZ, SAVE_READ_BYTES)
    try:
        process = await asyncio.create_subprocess_exec(
            docker,
            "save",
            image.digest,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=into,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        for fd in (out, into):
            os.close(fd)
        spool.close()
        raise UsageError(f"cannot run {docker}: {e.strerror or e}") from e
    os.close(into)  # the save holds the only writing end: its end is our EOF
    assert process.stderr is not None
    errors = asyncio.ensure_future(process.stderr.read(64 * 1024))
    saved = SavedStream(image, partial(os.read, out), spool)
    follower = asyncio.ensure_future(asyncio.to_thread(saved.follow))
    try:
        try:
            await saved.ready()
        except ImageError:
            # A save that ended early is the engine's failure, said on its stderr; one still
            # writing is stopped below.
            if saved.ended and (await process.wait()) != 0:
                said = (await errors).decode(errors="replace").strip().splitlines()
                raise ImageError(f"docker save {image.digest} failed: {said[-1] if said else 'no reason'}") from None
            raise
        yield saved
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await process.wait()
        await asyncio.shield(follower)  # ends: the save's end (or kill) is its EOF
        errors.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await errors
        os.close(out)
        await asyncio.to_thread(spool.close)


async def push_engine_image(
    conn: Connection, ref: str, tags: Iterable[str] = (), progress: PushProgress | None = None
) -> PushedImage:
    """Push the local engine's image ``ref`` as ``docker save`` writes it, without waiting for the
    save to end (see :meth:`kiln.Requestor.push_image`)."""
    image = await inspect_engine_image(ref)
    async with saving(image) as saved:
        return await push_archive(conn, saved, tags, progress)
