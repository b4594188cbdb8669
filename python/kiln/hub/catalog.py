"""What the hub's image store holds, as plain data: images, their tags and blobs, and the rules
for taking in, using and evicting them. No I/O (the files are :mod:`kiln.hub.io.blobs`').

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
as its data comes (:meth:`Catalog.grow`), which is when images are evicted for it. One pusher
(a credential; a connection for requestors without one) has at most :data:`MAX_PUSHES` pushes
in flight, declaring at most the limit together.

Images belong to the tenants that pushed them. A tenant (:class:`Tenant`) is the credential a
requestor joined with; requestors without one (an open hub, the shared token) are one tenant,
the *open* one; an admin credential sees and acts on every tenant's images. The rules:

* Each owner of an image holds it in a :class:`Holding`: its tags, and whom it shares the
  image with. Tags live in their owner's namespace: one tenant's ``app:1`` is not another's.
  Two tenants that push the same image (the same config digest) each hold it.
* A tenant *sees* an image it holds, one an owner shared with it, and a public one; an admin
  sees all. What a tenant does not see does not exist for it: :meth:`Catalog.resolve` gives
  ``None`` for it, by tag or by digest, exactly as for an image never pushed.
* Only a holder moves its own tags, shares its holding, or drops it (:meth:`Catalog.disown`);
  an admin may drop an image outright. The image goes when its last holder drops it.
* A push skips a blob only when the pusher could read it already (:meth:`Catalog.wanted`): it
  is a blob of an image the pusher sees, or one the pusher itself sent before (a push broken
  off and tried again). Any other blob is sent in full, even one the store holds for another
  tenant: its bytes are checked and the duplicate dropped, so a push tells nothing about
  what other tenants hold, and nobody obtains a blob by naming its digest.
"""

from __future__ import annotations

from collections.abc import Iterable

from kiln.hub.images import (
    DEFAULT_MAX_EXPANSION,
    DEFAULT_MAX_IMAGE,
    EXPANDED_SINCE,
    EXPANSION_FLOOR,
    GROW_STEP,
    MAX_CONFIG_BYTES,
    MAX_PUSHES,
    OPEN,
    Holding,
    Owner,
    Push,
    StoredImage,
    Tenant,
    is_digest,
    normalize_arch,
    normalize_tag,
    owner_name,
    read_config,
    unique,
    weight,
)
from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import (
    ImageCorrupt,
    ImageError,
    ImageNotFound,
    ImageTooLarge,
    KilnError,
    StoreFull,
    Unauthorized,
)
from kiln.protocol.messages import Blob, Manifest
from kiln.protocol.sizes import format_size

__all__ = [
    "DEFAULT_MAX_EXPANSION",
    "DEFAULT_MAX_IMAGE",
    "EXPANDED_SINCE",
    "EXPANSION_FLOOR",
    "GROW_STEP",
    "MAX_CONFIG_BYTES",
    "MAX_PUSHES",
    "OPEN",
    "Catalog",
    "Holding",
    "Owner",
    "Push",
    "StoredImage",
    "Tenant",
    "is_digest",
    "normalize_arch",
    "normalize_tag",
    "owner_name",
    "read_config",
    "unique",
    "weight",
]
# One image, its owners and the tenants live in kiln.hub.images; named here too, with the store.


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
        self.tags: dict[tuple[Owner, str], str] = {}  # (owner, tag) -> image id
        self.senders: dict[str, set[Owner]] = {}  # blob -> the tenants that sent its bytes (since the hub started)
        self._pinned: dict[str, int] = {}  # blobs a push in flight counts on, and how many pushes
        self._reserved = 0  # room held by pushes in flight for bytes not yet stored
        self._pushes: list[Push] = []

    # --- reading -----------------------------------------------------------------------

    @property
    def used(self) -> int:
        """What the stored blobs weigh."""
        return sum(max(size, self.expanded.get(digest, 0)) for digest, size in self.blobs.items())

    def keeps(self, digest: str) -> bool:
        """Whether ``digest``'s file is to stay: stored, or pinned by a push (maybe being put in place).
        Asked from a thread, as files are deleted: one dictionary lookup each, no iteration."""
        return digest in self.blobs or digest in self._pinned

    def weight_of(self, digest: str) -> int:
        return max(self.blobs.get(digest, 0), self.expanded.get(digest, 0))

    def measured(self, manifest: Manifest) -> Manifest:
        """``manifest`` with each stored layer's expanded size as the hub measured it (a requestor's
        own ``expanded`` is dropped: never trusted)."""
        config = manifest.config.model_copy(update={"expanded": None})
        layers = [layer.model_copy(update={"expanded": self.expanded.get(layer.digest)}) for layer in manifest.layers]
        return manifest.model_copy(update={"config": config, "layers": layers})

    def resolve(self, ref: str, tenant: Tenant = OPEN) -> StoredImage | None:
        """The stored image ``ref`` names for ``tenant``: a digest it sees, or a tag of its own
        namespace; ``None`` for anything else, as for an image that was never pushed."""
        if is_digest(ref):
            image = self.images.get(ref)
            return image if image is not None and image.sees(tenant) else None
        digest = self.tags.get((tenant.id, normalize_tag(ref)))
        return self.images.get(digest) if digest is not None else None

    def used_by(self, tenant: Tenant) -> int:
        """The bytes ``tenant`` is told the store holds: its view's blobs, each once (an admin's: all).
        The store's own total would tell a pusher whether its blobs were there before it."""
        if tenant.admin:
            return self.used
        return sum(self.weight_of(digest) for digest in self.readable(tenant) if digest in self.blobs)

    def hidden(self, ref: str, tenant: Tenant) -> bool:
        """Whether ``ref`` is the digest of a stored image ``tenant`` may not see (which must then
        be refused as if nothing had that digest: providers' copies of it came from the store)."""
        image = self.images.get(ref) if is_digest(ref) else None
        return image is not None and not image.sees(tenant)

    def missing(self, manifest: Manifest) -> list[Blob]:
        """The blobs of ``manifest`` the store lacks, each once: the config first, then the layers base first."""
        return [blob for blob in unique([manifest.config, *manifest.layers]) if blob.digest not in self.blobs]

    def readable(self, tenant: Tenant) -> set[str]:
        """The blobs ``tenant`` could read already: those of the images it sees, and those it sent."""
        out = {b.digest for image in self.images.values() if image.sees(tenant) for b in image.blobs}
        out.update(digest for digest, senders in self.senders.items() if tenant.id in senders)
        return out

    def wanted(self, manifest: Manifest, tenant: Tenant, readable: set[str] | None = None) -> list[Blob]:
        """The blobs of ``manifest`` a push by ``tenant`` must send, each once, in order: every blob
        it could not read already (``readable``, when the caller has it), whether the store holds it
        for someone else or not at all."""
        readable = self.readable(tenant) if readable is None else readable
        return [
            b
            for b in unique([manifest.config, *manifest.layers])
            if b.digest not in readable or b.digest not in self.blobs
        ]

    def by_recency(self, tenant: Tenant | None = None) -> list[StoredImage]:
        """Every image (that ``tenant`` sees), most recently used (or pushed) first."""
        images = [i for i in self.images.values() if tenant is None or i.sees(tenant)]
        return sorted(images, key=lambda i: (i.last_used or i.pushed, i.digest), reverse=True)

    # --- a push ------------------------------------------------------------------------------

    def check(self, manifest: Manifest, tenant: Tenant = OPEN, readable: set[str] | None = None) -> None:
        """ImageError unless ``manifest`` could be an image: blobs declared with sane sizes (a
        blob ``tenant`` cannot read, see :meth:`readable`, is judged when its bytes come, as if
        the store lacked it)."""
        if manifest.config.size > MAX_CONFIG_BYTES:
            raise ImageError(
                f"an image config of {format_size(manifest.config.size)} is over {format_size(MAX_CONFIG_BYTES)}"
            )
        sizes: dict[str, int] = {}
        readable = self.readable(tenant) if readable is None else readable
        for blob in [manifest.config, *manifest.layers]:
            if sizes.setdefault(blob.digest, blob.size) != blob.size:
                raise ImageError(f"blob {blob.digest} is declared with two sizes")
            known = self.blobs.get(blob.digest) if blob.digest in readable else None
            if known is not None and known != blob.size:
                raise ImageError(f"blob {blob.digest} has {known} bytes, not {blob.size}")
        for layer in manifest.layers:
            if layer.digest in readable and layer.digest in self.blobs and layer.digest not in self.expanded:
                raise ImageCorrupt(f"blob {layer.digest}, stored here, is not a tar: it cannot be a layer")

    def begin(self, manifest: Manifest, tenant: Tenant = OPEN, pusher: str | None = None) -> tuple[list[Blob], Push]:
        """Start taking in ``manifest`` from ``tenant``: the blobs to send (:meth:`wanted`), and the
        push (pass it to :meth:`grow` as bytes arrive, :meth:`add_blob`, and :meth:`end` once it is
        over). ``pusher`` names whom the in-flight bounds count it against (default: the tenant).

        Pins the blobs the push counts on (those it need not send; the others once they came:
        :meth:`pin`) and holds no room yet. Refuses (StoreFull) a push that could not fit even if
        every image no activity or push uses went (counting every wanted blob, held for another
        tenant or not: the push must fare as if they were not), ImageTooLarge one whose blobs
        alone weigh more than ``max_image``, and ``too_many`` a pusher's push past its bounds.
        """
        readable = self.readable(tenant)  # a walk over every image: once per push
        self.check(manifest, tenant, readable)
        wanted = self.wanted(manifest, tenant, readable)
        declared = sum(blob.size for blob in wanted)
        pusher = pusher if pusher is not None else f"tenant {owner_name(tenant.id)}"
        mine = [push for push in self._pushes if push.pusher == pusher]
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
        wanting = {blob.digest for blob in wanted}
        held = sum(
            self.weight_of(blob.digest)
            for blob in unique([manifest.config, *manifest.layers])
            if blob.digest in self.blobs and blob.digest not in wanting
        )
        if held + declared > self.max_image:
            raise ImageTooLarge(
                f"the image weighs at least {format_size(held + declared)}, more than the "
                f"{format_size(self.max_image)} one image may take here"
            )
        push = Push(manifest, tenant, pusher, declared, held)
        # Only what it counts on now: a wanted blob (one the pusher could not read, maybe held
        # for another tenant) is pinned once its bytes came (:meth:`pin`). Pinned before, its
        # digest alone would keep another tenant's images from eviction, and tell whether they hold it.
        for blob in unique([manifest.config, *manifest.layers]):
            if blob.digest not in wanting:
                self.pin(push, blob)
        try:
            self._plan_room(declared)  # refused now rather than after the bytes came
        except StoreFull:
            self._unpin(push)
            raise
        self._pushes.append(push)
        return wanted, push

    def grow(self, push: Push, need: int, upto: int = 0) -> list[str]:
        """``push`` has ``need`` bytes (its blob in progress: the bytes that came, or once all came,
        its weight) not yet stored: make sure it holds that much room; the blobs to delete to make
        it (evicted now). StoreFull (and nothing changed) if they cannot be made.

        ``upto`` (the blob's declared size while it comes) lets room be held ahead of ``need``,
        toward it: by at most :data:`GROW_STEP`, and never more than came (one byte holds two)."""
        if need <= push.reserved:
            return []
        target = max(need, min(need + min(need, GROW_STEP), upto))
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

    def pin(self, push: Push, blob: Blob) -> None:
        """``push`` counts on ``blob`` (held for it, or all its bytes came): no room made for
        another push drops it, nor an image that has it, until ``push`` ends."""
        if blob.digest not in push.pinned:
            push.pinned.append(blob.digest)
            self._pinned[blob.digest] = self._pinned.get(blob.digest, 0) + 1

    def end(self, push: Push) -> None:
        """``push`` is over (stored or not): unpin its blobs and free the room it held."""
        self._reserved = max(self._reserved - push.reserved, 0)
        push.reserved = 0
        if push in self._pushes:
            self._pushes.remove(push)
        self._unpin(push)

    def _unpin(self, push: Push) -> None:
        for digest in push.pinned:
            left = self._pinned.get(digest, 0) - 1
            if left > 0:
                self._pinned[digest] = left
            else:
                self._pinned.pop(digest, None)
        push.pinned.clear()

    def add_blob(
        self, blob: Blob, expanded: int | None = None, push: Push | None = None, *, sender: Tenant | None = None
    ) -> None:
        """A blob ``push`` sent (or ``sender``; default the open tenant) is verified and on disk;
        ``expanded`` is its layer's expanded size (None: not a tar). What it weighs moves from
        ``push``'s room to the store's use."""
        self.blobs[blob.digest] = blob.size
        if expanded is not None:
            self.expanded[blob.digest] = expanded
        who = push.tenant if push is not None else sender or OPEN
        self.senders.setdefault(blob.digest, set()).add(who.id)
        if push is not None:
            self.pin(push, blob)
            stored = self.weight_of(blob.digest)
            freed = min(push.reserved, stored)
            push.reserved -= freed
            self._reserved = max(self._reserved - freed, 0)
            push.held += stored

    def add_image(
        self, manifest: Manifest, config: bytes, tags: Iterable[str], now: float, tenant: Tenant = OPEN
    ) -> StoredImage:
        """Record that ``tenant`` holds the image whose blobs are all stored, under ``tags`` of its
        namespace (taken from any of its images that had them).

        ``config`` is read only for an image ``tenant`` does not see (pass ``b""`` for one it does):
        one stored for others is judged by its config exactly as if it were not stored, so that a
        push naming another tenant's config with other layers learns nothing of it."""
        missing = self.missing(manifest)
        if missing:
            raise ImageError(f"{len(missing)} blobs of the image were never sent, e.g. {missing[0].digest}")
        image = self.images.get(manifest.config.digest)
        if image is None or not image.sees(tenant):
            arch, os_ = read_config(manifest, config)
            if image is None:
                image = StoredImage(self.measured(manifest), arch, os_)
                self.images[image.digest] = image
        if image.manifest != self.measured(manifest):
            # The layers its config names are the stored image's. A push that names others (to
            # take that image while sending only its config) is no image.
            raise ImageError(f"the image config {image.digest} lists other layers than the push names")
        image.holdings.setdefault(tenant.id, Holding(pushed=now))
        for tag in map(normalize_tag, tags):
            self.retag(tag, image, tenant.id)
        return image

    def retag(self, tag: str, image: StoredImage, owner: Owner) -> StoredImage | None:
        """Point ``tag`` of ``owner``'s namespace at ``image`` (which it holds); the image it left, if any."""
        old = self.tags.get((owner, tag))
        self.tags[(owner, tag)] = image.digest
        image.holdings[owner].tags.add(tag)
        if old is not None and old != image.digest and old in self.images:
            left = self.images[old]
            left.holdings[owner].tags.discard(tag)
            return left
        return None

    # --- images other hubs store (kiln hub --db postgresql://...: kiln.hub.io.shared) -----------

    def merge(self, record: StoredImage, owner: Owner) -> list[str]:
        """Take another hub's word on ``owner``'s hold on an image: ``record``'s holding of
        ``owner`` (none: the owner dropped it) replaces the one here, its tags taken from any image
        that had them here. The image may have none of its blobs here: they are fetched when a
        provider needs them (:meth:`fetching`). What is used here (``in_use``, ``last_used``)
        stays. The blobs to delete (the image went with its last holder)."""
        holding = record.holdings.get(owner)
        image = self.images.get(record.digest)
        if image is None:
            if holding is None:
                return []
            image = self.images[record.digest] = StoredImage(record.manifest, record.arch, record.os)
        old = image.holdings.pop(owner, None)
        for tag in old.tags if old is not None else ():
            if self.tags.get((owner, tag)) == image.digest:
                del self.tags[(owner, tag)]
        if holding is None:
            return [] if image.holdings else self.remove(image.digest)
        tags, holding.tags = holding.tags, set()
        image.holdings[owner] = holding
        for tag in tags:
            self.retag(tag, image, owner)
        return []

    def fetching(self, image: StoredImage, blob: Blob) -> Push:
        """Start taking in ``blob`` of ``image`` from another hub: the room it takes (pass it to
        :meth:`grow` as its bytes arrive and to :meth:`pin` once all came, then :meth:`fetched`,
        or :meth:`end` if it fails). No tenant sends it: it makes none its sender."""
        return Push(image.manifest, OPEN, "another hub", blob.size, 0)

    def fetched(self, blob: Blob, expanded: int | None, room: Push) -> None:
        """``blob`` fetched (:meth:`fetching`) is verified and on disk: stored, its room moved to the
        store's use; ``expanded`` as :meth:`add_blob` takes it."""
        self.blobs[blob.digest] = blob.size
        if expanded is not None:
            self.expanded[blob.digest] = expanded
        self.end(room)

    # --- ownership ------------------------------------------------------------------------------

    def owned(self, ref: str, tenant: Tenant, doing: str) -> StoredImage:
        """The image ``ref`` names for ``tenant``, to ``doing`` it: ImageNotFound when it does not see
        it, Unauthorized when it sees it but neither holds it nor is an admin."""
        image = self.resolve(ref, tenant)
        if image is None:
            raise ImageNotFound(f"the hub stores no image {ref!r}")
        if tenant.id not in image.holdings and not tenant.admin:
            raise Unauthorized(f"only a tenant that pushed image {image.digest} (or an admin) may {doing} it")
        return image

    def disown(self, image: StoredImage, tenant: Tenant) -> list[str]:
        """``tenant`` drops its hold on ``image`` (an admin that holds none drops the image outright);
        the image goes with its last holder. The blobs to delete."""
        if tenant.id in image.holdings:
            holding = image.holdings.pop(tenant.id)
            for tag in holding.tags:
                if self.tags.get((tenant.id, tag)) == image.digest:
                    del self.tags[(tenant.id, tag)]
            if image.holdings:
                return []
        return self.remove(image.digest)

    def share(self, image: StoredImage, tenant: Tenant, to: Iterable[Owner], *, public: bool, revoke: bool) -> None:
        """Share ``tenant``'s holding of ``image`` with the tenants ``to`` (and with ``public``, with
        every tenant), or with ``revoke`` take those shares back. An admin that holds none changes
        every holding."""
        holdings = [image.holdings[tenant.id]] if tenant.id in image.holdings else list(image.holdings.values())
        for holding in holdings:
            if revoke:
                holding.shared.difference_update(to)
            else:
                holding.shared.update(to)
            if public:
                holding.public = not revoke

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
        for owner, holding in image.holdings.items():
            for tag in holding.tags:
                if self.tags.get((owner, tag)) == digest:
                    del self.tags[(owner, tag)]
        return self._orphans_of(image)

    def _orphans_of(self, image: StoredImage) -> list[str]:
        used = {blob.digest for other in self.images.values() for blob in other.blobs}
        gone = [b.digest for b in unique(image.blobs) if b.digest not in used and b.digest not in self._pinned]
        for digest in gone:
            self.blobs.pop(digest, None)
            self.expanded.pop(digest, None)
            self.senders.pop(digest, None)
        return gone

    def _make_room(self, need: int) -> list[str]:
        """Blobs to delete so that ``need`` more bytes fit (dropped from the catalog now); StoreFull
        (and nothing changed) if they cannot."""
        gone, victims = self._plan_room(need)
        for digest in gone:
            del self.blobs[digest]
            self.expanded.pop(digest, None)
            self.senders.pop(digest, None)
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
            if not any(blob.digest in self.blobs for blob in image.blobs):
                continue  # only another hub stores it (see merge): dropping it here frees nothing
            victims.append(image)
            for blob in unique(image.blobs):
                refs[blob.digest] -= 1
                if refs[blob.digest] == 0 and blob.digest in self.blobs:
                    free += self.weight_of(blob.digest)
        if free < need:
            # No figure of what the store holds: it would tell whether other tenants hold a blob.
            raise StoreFull(
                f"the store cannot make room for {format_size(need)}: the rest of its {format_size(self.limit)} "
                "is held by images in use or being pushed"
            )
        return gone, victims
