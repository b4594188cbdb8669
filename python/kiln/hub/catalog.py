"""What the hub's image store holds, as plain data: images, their tags and blobs, and the rules
for taking in, using and evicting them. No I/O (the files are :mod:`kiln.hub.store`'s).

An image is Docker's: a config blob whose sha256 is the image id, and layer blobs (uncompressed
tars) whose sha256s the config lists in ``rootfs.diff_ids``. Blobs are shared between images
and stored once. The store keeps within ``limit`` bytes: to make room it drops blobs no image
uses (left by a push that broke off), then the least recently used images no activity uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

import orjson

from kiln.protocol.errors import ImageError, StoreFull
from kiln.protocol.messages import Blob, ImageInfo, Manifest
from kiln.protocol.sizes import format_size

MAX_CONFIG_BYTES: Final = 4 * 2**20
"""The largest image config the hub takes (Docker's are a few KiB)."""

ARCH_ALIASES: Final = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i386": "386", "i686": "386"}
_DIGEST: Final = re.compile(r"^sha256:[0-9a-f]{64}$")


def normalize_arch(arch: str) -> str:
    """Docker's name for a machine architecture (``x86_64`` is ``amd64``)."""
    return ARCH_ALIASES.get(arch, arch)


def normalize_tag(ref: str) -> str:
    """``ref`` with its tag, ``:latest`` when it names none (``wordcount`` is ``wordcount:latest``)."""
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else f"{ref}:latest"


def is_digest(ref: str) -> bool:
    return _DIGEST.match(ref) is not None


@dataclass
class StoredImage:
    """An image in the store."""

    manifest: Manifest
    arch: str
    os: str
    pushed: float
    tags: set[str] = field(default_factory=set)
    last_used: float | None = None
    in_use: int = 0  # activities that run it now (not kept across restarts)

    @property
    def digest(self) -> str:
        return self.manifest.config.digest

    @property
    def blobs(self) -> list[Blob]:
        return [self.manifest.config, *self.manifest.layers]

    @cached_property
    def size(self) -> int:
        """Bytes of its config and layers, each blob counted once (asked per seller on every rent)."""
        return sum(blob.size for blob in unique(self.blobs))

    @cached_property
    def chain_keys(self) -> tuple[tuple[str, int], ...]:
        return tuple(self.chains())

    def chains(self) -> list[tuple[str, int]]:
        """For each prefix of the layers, base first: a key naming that prefix, and its bytes."""
        out: list[tuple[str, int]] = []
        key, total = "", 0
        for layer in self.manifest.layers:
            key = f"{key}>{layer.digest}"
            total += layer.size
            out.append((key, total))
        return out

    def info(self, providers: Iterable[str] = ()) -> ImageInfo:
        return ImageInfo(
            digest=self.digest,
            tags=sorted(self.tags),
            size=self.size,
            layers=len(self.manifest.layers),
            arch=self.arch,
            os=self.os,
            pushed=self.pushed,
            last_used=self.last_used,
            in_use=self.in_use,
            providers=sorted(providers),
        )


def unique(blobs: Iterable[Blob]) -> list[Blob]:
    """``blobs`` with each digest once, in order."""
    seen: set[str] = set()
    out = []
    for blob in blobs:
        if blob.digest not in seen:
            seen.add(blob.digest)
            out.append(blob)
    return out


def read_config(manifest: Manifest, config: bytes) -> tuple[str, str]:
    """The architecture and OS of the image whose config is ``config``; ImageError unless it describes ``manifest``."""
    try:
        data: Any = orjson.loads(config)
    except orjson.JSONDecodeError as e:
        raise ImageError(f"the image config is not JSON: {e}") from e
    rootfs = data.get("rootfs") if isinstance(data, dict) else None
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers" or not isinstance(rootfs.get("diff_ids"), list):
        raise ImageError("the image config has no rootfs of type 'layers' with diff_ids")
    diff_ids = rootfs["diff_ids"]
    layers = [layer.digest for layer in manifest.layers]
    if diff_ids != layers:
        raise ImageError(
            f"the image config lists {len(diff_ids)} layers that are not the {len(layers)} pushed "
            "(each layer must be the uncompressed tar whose sha256 the config names, base first)"
        )
    arch, os_ = data.get("architecture"), data.get("os")
    if not isinstance(arch, str) or not arch or len(arch) > 32 or not isinstance(os_, str) or not os_ or len(os_) > 32:
        raise ImageError("the image config names no architecture or os")
    return normalize_arch(arch), os_


class Catalog:
    """The images and blobs of one store, within ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.blobs: dict[str, int] = {}  # digest -> size, verified and on disk
        self.images: dict[str, StoredImage] = {}  # image id -> image
        self.tags: dict[str, str] = {}  # tag -> image id
        self._pinned: dict[str, int] = {}  # blobs a push in flight counts on, and how many pushes
        self._reserved = 0  # bytes promised to pushes in flight, not yet stored

    # --- reading -----------------------------------------------------------------------

    @property
    def used(self) -> int:
        return sum(self.blobs.values())

    def resolve(self, ref: str) -> StoredImage | None:
        """The stored image ``ref`` names: its digest or one of its tags."""
        if is_digest(ref):
            return self.images.get(ref)
        digest = self.tags.get(normalize_tag(ref))
        return self.images.get(digest) if digest is not None else None

    def missing(self, manifest: Manifest) -> list[Blob]:
        """The blobs of ``manifest`` the store lacks, each once: the config first, then the layers base first."""
        return [blob for blob in unique([manifest.config, *manifest.layers]) if blob.digest not in self.blobs]

    def by_recency(self) -> list[StoredImage]:
        """Every image, most recently used (or pushed) first."""
        return sorted(self.images.values(), key=lambda i: (i.last_used or i.pushed, i.digest), reverse=True)

    # --- a push ------------------------------------------------------------------------------

    def check(self, manifest: Manifest) -> None:
        """ImageError unless ``manifest`` could be an image: blobs declared with sane sizes."""
        if manifest.config.size > MAX_CONFIG_BYTES:
            raise ImageError(
                f"an image config of {format_size(manifest.config.size)} is over {format_size(MAX_CONFIG_BYTES)}"
            )
        sizes: dict[str, int] = {}
        for blob in [manifest.config, *manifest.layers]:
            if sizes.setdefault(blob.digest, blob.size) != blob.size:
                raise ImageError(f"blob {blob.digest} is declared with two sizes")
            known = self.blobs.get(blob.digest)
            if known is not None and known != blob.size:
                raise ImageError(f"blob {blob.digest} has {known} bytes, not {blob.size}")

    def begin(self, manifest: Manifest) -> tuple[list[Blob], list[str]]:
        """Start taking in ``manifest``: the blobs to send, and the blobs to delete to make room.

        Pins the blobs the push counts on (release with :meth:`end`), and reserves room for
        the rest. Raises :class:`StoreFull` when the store cannot make room within its limit.
        """
        self.check(manifest)
        wanted = self.missing(manifest)
        need = sum(blob.size for blob in wanted)
        for blob in unique([manifest.config, *manifest.layers]):
            self._pinned[blob.digest] = self._pinned.get(blob.digest, 0) + 1
        try:
            evicted = self._make_room(need)
        except StoreFull:
            self.end(manifest, need)
            raise
        self._reserved += need
        return wanted, evicted

    def end(self, manifest: Manifest, reserved: int) -> None:
        """A push of ``manifest`` is over (stored or not): unpin its blobs and free what it reserved."""
        self._reserved = max(self._reserved - reserved, 0)
        for blob in unique([manifest.config, *manifest.layers]):
            left = self._pinned.get(blob.digest, 0) - 1
            if left > 0:
                self._pinned[blob.digest] = left
            else:
                self._pinned.pop(blob.digest, None)

    def add_blob(self, blob: Blob) -> None:
        """A blob is verified and on disk."""
        self.blobs[blob.digest] = blob.size

    def add_image(self, manifest: Manifest, config: bytes, tags: Iterable[str], now: float) -> StoredImage:
        """Record the image whose blobs are all stored, under ``tags`` (taken from any image that had them).

        ``config`` is read only for an image not stored yet (pass ``b""`` for one that is)."""
        missing = self.missing(manifest)
        if missing:
            raise ImageError(f"{len(missing)} blobs of the image were never sent, e.g. {missing[0].digest}")
        image = self.images.get(manifest.config.digest)
        if image is None:
            arch, os_ = read_config(manifest, config)
            image = StoredImage(manifest, arch, os_, pushed=now)
            self.images[image.digest] = image
        for tag in map(normalize_tag, tags):
            self.retag(tag, image)
        return image

    def retag(self, tag: str, image: StoredImage) -> StoredImage | None:
        """Point ``tag`` at ``image``; the image it left, if any."""
        old = self.tags.get(tag)
        self.tags[tag] = image.digest
        image.tags.add(tag)
        if old is not None and old != image.digest and old in self.images:
            self.images[old].tags.discard(tag)
            return self.images[old]
        return None

    # --- use and removal ------------------------------------------------------------------------

    def use(self, digest: str, now: float) -> None:
        image = self.images.get(digest)
        if image is not None:
            image.in_use += 1
            image.last_used = now

    def unuse(self, digest: str) -> None:
        image = self.images.get(digest)
        if image is not None:
            image.in_use = max(image.in_use - 1, 0)

    def remove(self, digest: str) -> list[str]:
        """Drop an image; the blobs no other image (nor a push in flight) uses, to delete."""
        image = self.images.pop(digest)
        for tag in image.tags:
            if self.tags.get(tag) == digest:
                del self.tags[tag]
        return self._orphans_of(image)

    def _orphans_of(self, image: StoredImage) -> list[str]:
        used = {blob.digest for other in self.images.values() for blob in other.blobs}
        gone = [b.digest for b in unique(image.blobs) if b.digest not in used and b.digest not in self._pinned]
        for digest in gone:
            self.blobs.pop(digest, None)
        return gone

    def _make_room(self, need: int) -> list[str]:
        """Blobs to delete so that ``need`` more bytes fit; StoreFull (and nothing changed) if they cannot.

        First blobs no image uses, then the least recently used images that no activity
        runs and no push counts on; planned in full before anything is dropped.
        """
        if self.used + self._reserved + need <= self.limit:
            return []
        refs: dict[str, int] = {}
        for image in self.images.values():
            for blob in unique(image.blobs):
                refs[blob.digest] = refs.get(blob.digest, 0) + 1
        free = self.limit - self.used - self._reserved
        gone = [d for d in self.blobs if d not in refs and d not in self._pinned]
        free += sum(self.blobs[d] for d in gone)
        victims: list[StoredImage] = []
        for image in reversed(self.by_recency()):
            if free >= need:
                break
            if image.in_use or any(blob.digest in self._pinned for blob in image.blobs):
                continue
            victims.append(image)
            for blob in unique(image.blobs):
                refs[blob.digest] -= 1
                if refs[blob.digest] == 0 and blob.digest in self.blobs:
                    free += self.blobs[blob.digest]
        if free < need:
            raise StoreFull(
                f"the store cannot make room for {format_size(need)}: {format_size(self.used)} of its "
                f"{format_size(self.limit)} is held by images in use or being pushed"
            )
        for digest in gone:
            del self.blobs[digest]
        for image in victims:
            gone += self.remove(image.digest)
        return gone
