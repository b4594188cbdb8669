"""An image sent blob by blob, turned into the tar ``docker load`` takes: no Docker here.

A hub that stores an image sends a provider the blobs Docker lacks (:func:`wanted`), one
after another on the ``create``'s stream. :class:`LoadArchive` wraps those bytes, as they
come, in the layout of a ``docker save`` archive and checks each blob on the way::

    manifest.json                 names the config and ALL the layers, base first
    blobs/sha256/<config hex>     the config (its digest is the image id)
    blobs/sha256/<layer hex>...   only the layers Docker lacks

Docker 20.10 loads such a tar when the layers left out are already in its layer store
(it looks each layer up by chain id before it opens the file).

Each blob's last piece is held back until the blob's size and sha256 are verified, and the
end of the archive until the stream ended with nothing more: whatever goes wrong, the tar
stops inside a member, Docker reads a truncated archive, and loads nothing.

Each layer is metered on the way too (:class:`~kiln.protocol.layers.TarMeter`, the hub's own):
once what the layers expand to passes ``limit``, or a layer expands past what the hub declared
(``Blob.expanded``, 1.4), the load stops the same way, before Docker extracts anything.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Final

from kiln.protocol.errors import KilnError
from kiln.protocol.layers import TarMeter
from kiln.protocol.messages import Blob, Manifest
from kiln.protocol.sizes import format_size
from kiln_provider.errors import ImageCorrupt, ImageTooLarge, TransferBroken

_BLOCK: Final = tarfile.BLOCKSIZE


def held_layers(chain: Sequence[str], local_chains: Iterable[Sequence[str]]) -> int:
    """How many layers of ``chain`` (diff ids, base first) Docker holds already: the longest
    prefix of it that some local image's chain (``RootFS.Layers``) starts with."""
    best = 0
    for local in local_chains:
        n = 0
        for mine, theirs in zip(chain, local, strict=False):
            if mine != theirs:
                break
            n += 1
        best = max(best, n)
    return best


def wanted(manifest: Manifest, held: int) -> list[Blob]:
    """The blobs to ask for when Docker lacks the image but holds its first ``held`` layers:
    the config, then the other layers base first, each digest once.

    A layer after the held ones is asked for even when one of the held layers has the same
    bytes: Docker keys layers by their chain, and needs the file at that place."""
    seen: set[str] = set()
    blobs = [manifest.config]
    for layer in manifest.layers[held:]:
        if layer.digest not in seen:
            seen.add(layer.digest)
            blobs.append(layer)
    return blobs


def member_name(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def manifest_json(manifest: Manifest) -> bytes:
    """``docker save``'s manifest.json for the image: no tags (a loaded image is known by its id)."""
    entry = {
        "Config": member_name(manifest.config.digest),
        "RepoTags": [],
        "Layers": [member_name(layer.digest) for layer in manifest.layers],
    }
    return json.dumps([entry]).encode()


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info.tobuf(tarfile.PAX_FORMAT)  # PAX: layers may pass tar's 8 GiB size field


def _padding(size: int) -> bytes:
    return bytes(-size % _BLOCK)


class LoadArchive:
    """The tar body for ``docker load``, built from ``chunks``: the ``blobs`` (what :func:`wanted`
    listed) concatenated, in order, then the end of the stream.

    Iterate it once, as a request body (in a thread: ``chunks`` may block). It never raises:
    on a failure it cuts the tar short, inside a member, and keeps the error in :attr:`failure`
    (ImageCorrupt for a blob that does not match, TransferBroken for a stream that ended
    short, or whatever ``chunks`` raised), for the caller to raise once Docker answered.
    :attr:`received` counts the blob bytes taken, :attr:`expanded` what the layers among them
    take once extracted; past ``limit`` the load fails with ImageTooLarge.
    """

    def __init__(
        self,
        manifest: Manifest,
        blobs: Sequence[Blob],
        chunks: Iterator[bytes | memoryview],
        limit: int | None = None,
    ) -> None:
        self.manifest = manifest
        self.blobs = list(blobs)
        self.limit = limit
        self.received = 0
        self.expanded = 0
        self.failure: BaseException | None = None
        self._chunks = chunks
        self._rest = memoryview(b"")
        self._owed = 0  # bytes of the current tar member not yet yielded: 0 at a member boundary

    def __iter__(self) -> Iterator[bytes | memoryview]:
        try:
            yield from self._members()
        except GeneratorExit:
            raise
        except BaseException as e:  # noqa: BLE001 - kept and raised after the request (the body must just end)
            self.failure = e
            if self._owed == 0:
                # At a member boundary a short body would read as a complete archive: end
                # it inside a header instead.
                yield _header("cut", 0)[: _BLOCK // 2]

    def _members(self) -> Iterator[bytes | memoryview]:
        index = manifest_json(self.manifest)
        self._owed = len(index)
        yield _header("manifest.json", len(index))
        yield index + _padding(len(index))
        self._owed = 0
        for number, blob in enumerate(self.blobs):
            held = b""
            last = number == len(self.blobs) - 1
            self._owed = blob.size
            yield _header(member_name(blob.digest), blob.size)
            hasher = hashlib.sha256()
            meter = TarMeter() if blob.digest != self.manifest.config.digest else None
            before = self.expanded
            remaining = blob.size
            while remaining > 0:
                piece = self._take(remaining)
                if piece is None:
                    total = sum(b.size for b in self.blobs)
                    raise TransferBroken(f"the image's blobs ended after {self.received} of {total} bytes")
                hasher.update(piece)
                if meter is not None:
                    self._measure(meter, blob, before, piece, end=remaining == len(piece))
                remaining -= len(piece)
                self.received += len(piece)
                if remaining > 0:
                    self._owed -= len(piece)
                    yield piece  # a view: the request body's chunk is made from it, no copy here
                else:
                    held = bytes(piece)
            got = "sha256:" + hasher.hexdigest()
            if got != blob.digest:
                raise ImageCorrupt(f"blob {blob.digest} ({blob.size} bytes) arrived as {got}")
            # The end of the stream before the last blob's end: more bytes than announced must not load.
            if last and self._take(1) is not None:
                raise TransferBroken("the image's blobs ran past the announced sizes")
            self._owed = 0
            yield held + _padding(blob.size)
        yield bytes(2 * _BLOCK)  # the end of the archive

    def _measure(self, meter: TarMeter, blob: Blob, before: int, piece: memoryview, end: bool) -> None:
        """Feed a layer's piece to its meter; ImageCorrupt or ImageTooLarge as soon as it shows."""
        try:
            meter.feed(piece)
            if end:
                meter.finish()
        except KilnError as e:
            raise ImageCorrupt(f"layer {blob.digest}: {e.message}") from e
        self.expanded = before + meter.expanded
        if blob.expanded is not None and meter.expanded > blob.expanded:
            raise ImageCorrupt(f"layer {blob.digest} expands past the {format_size(blob.expanded)} the hub measured")
        if self.limit is not None and self.expanded > self.limit:
            raise ImageTooLarge(
                f"the image's layers take more than {format_size(self.limit)} once extracted, more than this "
                "provider keeps for images (--image-cache)"
            )

    def _take(self, limit: int) -> memoryview | None:
        """Up to ``limit`` bytes of the stream (never across a chunk), or None at its end."""
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return None
            self._rest = memoryview(chunk)
        piece, self._rest = self._rest[:limit], self._rest[limit:]
        return piece
