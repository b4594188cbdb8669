"""What the hub's image store holds, as plain data: images, their tags and blobs, and the rules
for taking in, using and evicting them. No I/O (the files are :mod:`kiln.hub.store`'s).

An image is Docker's: a config blob whose sha256 is the image id, and layer blobs (uncompressed
tars) whose sha256s the config lists in ``rootfs.diff_ids``. Blobs are shared between images
and stored once. The store keeps within ``limit`` bytes: to make room it drops blobs no image
uses (left by a push that broke off), then the least recently used images no activity uses.

A layer is counted at what it **weighs**: the larger of its tar's size and its expanded size
(:mod:`kiln.protocol.layers`: what its files take once extracted, sparse files whole), since
that is what a provider's disk spends on it. The store limit, ``max_image`` (the most one image
may weigh) and a provider's placement count weights. A layer may expand to more than
``max_expansion`` times its tar only while it stays under :data:`EXPANSION_FLOOR`.

A push holds room only for bytes that arrived: it starts with none (:meth:`Catalog.begin`
refuses at once one that could not fit even if every unused image went), and its room grows
as its data comes (:meth:`Catalog.grow`), which is when images are evicted for it. One tenant
(a credential; a connection for requestors without one) has at most :data:`MAX_PUSHES` pushes
in flight, declaring at most the limit together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

import orjson

from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import ImageCorrupt, ImageError, ImageTooLarge, KilnError, StoreFull
from kiln.protocol.messages import Blob, ImageInfo, Manifest
from kiln.protocol.sizes import format_size

MAX_CONFIG_BYTES: Final = 4 * 2**20
"""The largest image config the hub takes (Docker's are a few KiB)."""
DEFAULT_MAX_IMAGE: Final = 20 * 2**30
"""The most one image may weigh unless ``kiln hub --max-image-size`` says otherwise."""
DEFAULT_MAX_EXPANSION: Final = 32.0
"""How many times its tar's size a layer may expand to (past :data:`EXPANSION_FLOOR`); legit layers
stay near 1 (8 for a tar of nothing but empty files); a sparse-file bomb is in the thousands."""
EXPANSION_FLOOR: Final = 64 * 2**20
"""A layer that expands to no more than this passes whatever its ratio (a tar of a few empty folders)."""
GROW_STEP: Final = 32 * 2**20
"""A push's room grows this far ahead of the bytes that arrived (fewer eviction plans; a bounded overshoot)."""
MAX_PUSHES: Final = 4
"""Pushes one tenant may have in flight at once."""
EXPANDED_SINCE: Final = 4
"""The minor version of the protocol from which a provider's manifests carry ``Blob.expanded``."""
ANYONE: Final = "anyone"
"""The tenant of pushes whose caller names none."""

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
    def expanded(self) -> int:
        """What it takes on a provider's disk: each blob once, at its weight (:func:`weight`)."""
        return sum(map(weight, unique(self.blobs)))

    @cached_property
    def _plain_manifest(self) -> Manifest:
        layers = [layer.model_copy(update={"expanded": None}) for layer in self.manifest.layers]
        return self.manifest.model_copy(update={"layers": layers})

    def manifest_for(self, minor: int) -> Manifest:
        """Its manifest as a provider speaking protocol 1.``minor`` takes it: the layers' expanded
        sizes only from 1.4 (an older provider refuses a field it does not know)."""
        return self.manifest if minor >= EXPANDED_SINCE else self._plain_manifest

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


def weight(blob: Blob) -> int:
    """What a blob counts for: the larger of its size and its expanded size (when known)."""
    return max(blob.size, blob.expanded or 0)


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


@dataclass(eq=False)
class Push:
    """A push in flight: what it declared, and the room it holds (grown as its bytes arrive)."""

    manifest: Manifest
    tenant: str
    declared: int  # bytes of the blobs it is to send
    held: int  # what the image's blobs the store holds already weigh
    reserved: int = 0  # room held for bytes that arrived (and up to GROW_STEP ahead), not yet stored


class Catalog:
    """The images and blobs of one store, within ``limit`` bytes (weights: see the module's docstring)."""

    def __init__(
        self, limit: int, max_image: int = DEFAULT_MAX_IMAGE, max_expansion: float = DEFAULT_MAX_EXPANSION
    ) -> None:
        self.limit = limit
        self.max_image = max_image
        self.max_expansion = max_expansion
        self.blobs: dict[str, int] = {}  # digest -> size, verified and on disk
        self.expanded: dict[str, int] = {}  # digest -> expanded size, of the blobs that are tar layers
        self.images: dict[str, StoredImage] = {}  # image id -> image
        self.tags: dict[str, str] = {}  # tag -> image id
        self._pinned: dict[str, int] = {}  # blobs a push in flight counts on, and how many pushes
        self._reserved = 0  # room held by pushes in flight for bytes not yet stored
        self._pushes: list[Push] = []

    # --- reading -----------------------------------------------------------------------

    @property
    def used(self) -> int:
        """What the stored blobs weigh."""
        return sum(max(size, self.expanded.get(digest, 0)) for digest, size in self.blobs.items())

    def weight_of(self, digest: str) -> int:
        return max(self.blobs.get(digest, 0), self.expanded.get(digest, 0))

    def measured(self, manifest: Manifest) -> Manifest:
        """``manifest`` with each stored layer's expanded size as the hub measured it (a requestor's
        own ``expanded`` is dropped: never trusted)."""
        config = manifest.config.model_copy(update={"expanded": None})
        layers = [layer.model_copy(update={"expanded": self.expanded.get(layer.digest)}) for layer in manifest.layers]
        return manifest.model_copy(update={"config": config, "layers": layers})

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
        """ImageError unless ``manifest`` could be an image: blobs declared with sane sizes, the layers
        held already tars."""
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
        for layer in manifest.layers:
            if layer.digest in self.blobs and layer.digest not in self.expanded:
                raise ImageCorrupt(f"blob {layer.digest}, stored here, is not a tar: it cannot be a layer")

    def begin(self, manifest: Manifest, tenant: str = ANYONE) -> tuple[list[Blob], Push]:
        """Start taking in ``manifest`` for ``tenant``: the blobs to send, and the push (pass it to
        :meth:`grow` as bytes arrive, :meth:`add_blob`, and :meth:`end` once it is over).

        Pins the blobs the push counts on and holds no room yet. Refuses (StoreFull) a push that
        could not fit even if every image no activity or push uses went, ImageTooLarge one whose
        blobs alone weigh more than ``max_image``, and ``too_many`` a tenant's push past its bounds.
        """
        self.check(manifest)
        wanted = self.missing(manifest)
        declared = sum(blob.size for blob in wanted)
        mine = [push for push in self._pushes if push.tenant == tenant]
        if len(mine) >= MAX_PUSHES:
            raise KilnError(
                f"{len(mine)} pushes of yours are in flight already (at most {MAX_PUSHES})", ErrorCode.TOO_MANY
            )
        if mine and declared + sum(push.declared for push in mine) > self.limit:
            raise KilnError(
                f"your pushes in flight would declare {format_size(declared + sum(p.declared for p in mine))}, "
                f"more than the store's {format_size(self.limit)}",
                ErrorCode.TOO_MANY,
            )
        held = sum(
            self.weight_of(blob.digest)
            for blob in unique([manifest.config, *manifest.layers])
            if blob.digest in self.blobs
        )
        if held + declared > self.max_image:
            raise ImageTooLarge(
                f"the image weighs at least {format_size(held + declared)}, more than the "
                f"{format_size(self.max_image)} one image may take here"
            )
        for blob in unique([manifest.config, *manifest.layers]):
            self._pinned[blob.digest] = self._pinned.get(blob.digest, 0) + 1
        push = Push(manifest, tenant, declared, held)
        try:
            self._plan_room(declared)  # refused now rather than after the bytes came
        except StoreFull:
            self._unpin(manifest)
            raise
        self._pushes.append(push)
        return wanted, push

    def grow(self, push: Push, need: int) -> list[str]:
        """``push`` has ``need`` bytes (its blob in progress, at its weight so far) not yet stored:
        make sure it holds that much room; the blobs to delete to make it (evicted now). StoreFull
        (and nothing changed) if they cannot be made."""
        if need <= push.reserved:
            return []
        target = max(need, min(need + GROW_STEP, push.declared))
        evicted = self._make_room(target - push.reserved)
        self._reserved += target - push.reserved
        push.reserved = target
        return evicted

    def check_layer(self, push: Push, blob: Blob, expanded: int) -> None:
        """ImageTooLarge if the layer ``blob`` of ``push``, expanded to ``expanded`` so far (its
        meter's count), expands absurdly or takes the image past ``max_image``."""
        if expanded > EXPANSION_FLOOR and expanded > self.max_expansion * blob.size:
            raise ImageTooLarge(
                f"layer {blob.digest} of {format_size(blob.size)} expands to at least {format_size(expanded)}, "
                f"more than {self.max_expansion:g} times its size (a sparse-file bomb?)"
            )
        total = push.held + max(expanded, blob.size)
        if total > self.max_image:
            raise ImageTooLarge(
                f"the image takes at least {format_size(total)} once its layers are extracted, more than the "
                f"{format_size(self.max_image)} one image may take here"
            )

    def end(self, push: Push) -> None:
        """``push`` is over (stored or not): unpin its blobs and free the room it held."""
        self._reserved = max(self._reserved - push.reserved, 0)
        push.reserved = 0
        if push in self._pushes:
            self._pushes.remove(push)
        self._unpin(push.manifest)

    def _unpin(self, manifest: Manifest) -> None:
        for blob in unique([manifest.config, *manifest.layers]):
            left = self._pinned.get(blob.digest, 0) - 1
            if left > 0:
                self._pinned[blob.digest] = left
            else:
                self._pinned.pop(blob.digest, None)

    def add_blob(self, blob: Blob, expanded: int | None = None, push: Push | None = None) -> None:
        """A blob is verified and on disk; ``expanded`` is its layer's expanded size (None: not a tar).
        What it weighs moves from ``push``'s room to the store's use."""
        self.blobs[blob.digest] = blob.size
        if expanded is not None:
            self.expanded[blob.digest] = expanded
        if push is not None:
            stored = self.weight_of(blob.digest)
            freed = min(push.reserved, stored)
            push.reserved -= freed
            self._reserved = max(self._reserved - freed, 0)
            push.held += stored

    def add_image(self, manifest: Manifest, config: bytes, tags: Iterable[str], now: float) -> StoredImage:
        """Record the image whose blobs are all stored, under ``tags`` (taken from any image that had them).

        ``config`` is read only for an image not stored yet (pass ``b""`` for one that is)."""
        missing = self.missing(manifest)
        if missing:
            raise ImageError(f"{len(missing)} blobs of the image were never sent, e.g. {missing[0].digest}")
        image = self.images.get(manifest.config.digest)
        if image is None:
            arch, os_ = read_config(manifest, config)
            image = StoredImage(self.measured(manifest), arch, os_, pushed=now)
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
            self.expanded.pop(digest, None)
        return gone

    def _make_room(self, need: int) -> list[str]:
        """Blobs to delete so that ``need`` more bytes fit (dropped from the catalog now); StoreFull
        (and nothing changed) if they cannot."""
        gone, victims = self._plan_room(need)
        for digest in gone:
            del self.blobs[digest]
            self.expanded.pop(digest, None)
        for image in victims:
            gone += self.remove(image.digest)
        return gone

    def _plan_room(self, need: int) -> tuple[list[str], list[StoredImage]]:
        """What to drop so that ``need`` more bytes fit: blobs no image uses, then the least
        recently used images that no activity runs and no push counts on. StoreFull if even all
        of them would not do."""
        if self.used + self._reserved + need <= self.limit:
            return [], []
        refs: dict[str, int] = {}
        for image in self.images.values():
            for blob in unique(image.blobs):
                refs[blob.digest] = refs.get(blob.digest, 0) + 1
        free = self.limit - self.used - self._reserved
        gone = [d for d in self.blobs if d not in refs and d not in self._pinned]
        free += sum(self.weight_of(d) for d in gone)
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
                    free += self.weight_of(blob.digest)
        if free < need:
            raise StoreFull(
                f"the store cannot make room for {format_size(need)}: {format_size(self.used + self._reserved)} of "
                f"its {format_size(self.limit)} is held by images in use or being pushed"
            )
        return gone, victims
