"""A stored image as the hub's store holds it, its owners and the tenants that see it: plain data.

:class:`StoredImage` is one image (its manifest, architecture and each owner's
:class:`Holding`); :class:`Tenant` is who asks (a credential, the open tenant, an admin);
:class:`Push` a push in flight. The store as a whole, and its rules, are
:class:`~kiln.hub.catalog.Catalog`'s (read its module's docstring).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final, TypeAlias

import orjson

from kiln.hub.access import Credential
from kiln.protocol.errors import (
    ImageError,
)
from kiln.protocol.messages import Blob, ImageInfo, Manifest

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
"""A push's room grows at most this far ahead of the bytes that arrived, and never further ahead
than they are (fewer eviction plans; an overshoot bounded by what was sent)."""
MAX_PUSHES: Final = 4
"""Pushes one pusher (a credential, or a connection without one) may have in flight at once."""
EXPANDED_SINCE: Final = 4
"""The minor version of the protocol from which a provider's manifests carry ``Blob.expanded``."""

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


Owner: TypeAlias = int | None
"""A tenant's key: its credential's id, ``None`` for the open tenant."""


@dataclass(frozen=True, slots=True)
class Tenant:
    """Who asks: the credential a requestor joined with (``id`` ``None``: none, the open tenant)."""

    id: Owner = None
    admin: bool = False

    @classmethod
    def of(cls, credential: Credential | None) -> Tenant:
        if credential is None:
            return OPEN
        return cls(credential.id, credential.role == "admin")


OPEN: Final = Tenant()
"""The tenant of every requestor that joined without a credential."""


@dataclass
class Holding:
    """One owner's hold on an image: when it pushed it, its tags there, whom it shares it with."""

    pushed: float
    tags: set[str] = field(default_factory=set)
    shared: set[Owner] = field(default_factory=set)
    public: bool = False


@dataclass
class StoredImage:
    """An image in the store, and who holds it."""

    manifest: Manifest
    arch: str
    os: str
    holdings: dict[Owner, Holding] = field(default_factory=dict)
    last_used: float | None = None
    in_use: int = 0  # activities that run it now (not kept across restarts)

    @property
    def digest(self) -> str:
        return self.manifest.config.digest

    @property
    def pushed(self) -> float:
        """When it was first pushed (by any owner)."""
        return min((h.pushed for h in self.holdings.values()), default=0.0)

    @property
    def tags(self) -> set[str]:
        """Its tags in every owner's namespace (an admin's view, and the log's)."""
        return {tag for h in self.holdings.values() for tag in h.tags}

    def sees(self, tenant: Tenant) -> bool:
        """Whether ``tenant`` may see (list, rent, read) this image."""
        if tenant.admin or tenant.id in self.holdings:
            return True
        return any(h.public or tenant.id in h.shared for h in self.holdings.values())

    def shown_owners(self, tenant: Tenant) -> list[Owner]:
        """The owners ``tenant`` may know of: itself, those that let it see the image; every one to an admin."""
        return [
            owner
            for owner, h in self.holdings.items()
            if tenant.admin or owner == tenant.id or h.public or tenant.id in h.shared
        ]

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

    def info(
        self, tenant: Tenant = OPEN, providers: Iterable[str] = (), name: Callable[[Owner], str] | None = None
    ) -> ImageInfo:
        """The image as ``tenant`` may see it (``name`` shows an owner; default ``#<id>``, ``#open``).

        Its own holding's tags, shares and push time; an image it does not hold shows no tags.
        How much it is used (``last_used``, ``in_use``, ``providers``) is shown only when every
        other owner lets ``tenant`` see the image: another tenant's use of an image it also
        pushed is that tenant's business.
        """
        name = name or owner_name
        own = self.holdings.get(tenant.id)
        shown = self.shown_owners(tenant)
        if tenant.admin:
            tags, shared = self.tags, {o for h in self.holdings.values() for o in h.shared}
            public = any(h.public for h in self.holdings.values())
        elif own is not None:
            tags, shared, public = own.tags, own.shared, own.public
        else:
            tags, shared, public = set(), set(), any(h.public for h in self.holdings.values())
        told = len(shown) == len(self.holdings)
        theirs = min((self.holdings[o].pushed for o in shown), default=self.pushed)
        pushed = own.pushed if own is not None and not tenant.admin else theirs
        return ImageInfo(
            digest=self.digest,
            tags=sorted(tags),
            size=self.size,
            layers=len(self.manifest.layers),
            arch=self.arch,
            os=self.os,
            pushed=pushed,
            last_used=self.last_used if told else None,
            in_use=self.in_use if told else 0,
            providers=sorted(providers) if told else [],
            owners=sorted(map(name, shown)),
            shared=sorted(map(name, shared)) if tenant.admin or own is not None else None,
            public=public,
        )


def owner_name(owner: Owner) -> str:
    """How an owner is shown without a name for it: ``#<credential id>``, or ``#open``."""
    return "#open" if owner is None else f"#{owner}"


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
    """A push in flight: who sends it, what it declared, and the room it holds (grown as its bytes arrive)."""

    manifest: Manifest
    tenant: Tenant
    pusher: str  # whom the in-flight bounds count it against
    declared: int  # bytes of the blobs it is to send
    held: int  # what the image's blobs the store holds already weigh
    pinned: list[str] = field(default_factory=list)  # the blobs it counts on: held for it, or sent by it
    reserved: int = 0  # room held for bytes that arrived (and a little ahead: Catalog.grow), not yet stored
