"""The images creates run: found in Docker, loaded from the hub's store, or pulled; kept within a budget.

A ``create`` without a manifest may name only an image the provider offers (the operator's
rule, :mod:`kiln_provider.offering`); with ``--pull``, one Docker lacks is pulled from its
registry. A ``create`` that brings a ``manifest`` (the hub stores the image, protocol 1.1)
for an image Docker lacks asks the hub for the blobs Docker lacks (``want``), which come on
the create's stream and go straight into ``docker load``
(:class:`~kiln_provider.image_archive.LoadArchive`, metered against the budget on the way).
One image loads (or pulls) once at a time; creates of it meanwhile wait for that load.

What was loaded or pulled is recorded (:mod:`kiln_provider.image_cache`) and evicted, least
recently used first, past the ``--image-cache`` budget; never an image a container uses or a
create is about to (:meth:`ImageSupply.image_for` pins it until its block ends)::

    supply = ImageSupply(config, adapter, pools, tallies)
    await supply.tidy()                                    # at start
    async with supply.image_for(create, receive) as (image, received):
        ...                                                # make the container
    await supply.used(image.id)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeAlias

from kiln.connection import Incoming
from kiln.protocol.messages import Blob, Create
from kiln.protocol.sizes import format_size
from kiln_provider.config import ProviderConfig
from kiln_provider.docker_adapter import DockerAdapter, ImageFacts
from kiln_provider.errors import DockerFailed, ImageMissing, ImageTooLarge
from kiln_provider.image_archive import LoadArchive, held_layers, wanted
from kiln_provider.image_cache import ImageCache, default_data_dir, write_atomically
from kiln_provider.metrics import Tallies
from kiln_provider.offering import Allowed
from kiln_provider.threads import Pools, chunks_for_thread, next_chunk

log = logging.getLogger("kiln.provider")

Receive: TypeAlias = Callable[[list[str]], Awaitable[Incoming]]
"""Asks the hub for these blobs (a ``want`` reply to the create) and returns the stream they come on."""


class ImageSupply:
    """The images of one provider's creates, and its record of those it loaded."""

    def __init__(self, config: ProviderConfig, adapter: DockerAdapter, pools: Pools, tallies: Tallies) -> None:
        """``tallies``: where the images loaded and pulled, and the bytes received, are counted."""
        self.config = config
        self.adapter = adapter
        self.pools = pools
        self.tallies = tallies
        self.cache = ImageCache.open(config.data_dir or default_data_dir(config.name), config.image_cache)
        self.allowed = Allowed(config.images)
        self.changed = asyncio.Event()
        """Set when an image was loaded, pulled or evicted: what to offer may have changed."""
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._pinned: Counter[str] = Counter()  # images creates are about to use: never evicted
        self._loading = 0  # bytes of the image cache's budget that loads in progress hold
        self._evicting = asyncio.Lock()
        self._saving = asyncio.Lock()

    async def offered(self) -> tuple[list[str], list[str]]:
        """What to offer now: (the allowed images' names, the ids loaded from the store that are here)."""
        return self.allowed.offer(await self.pools.lifecycle_call(self.adapter.images), self.cache.loaded)

    async def tidy(self) -> None:
        """At start: forget recorded images Docker no longer holds, then evict past the budget."""
        for image_id in list(self.cache.images):
            if await self.pools.lifecycle_call(self.adapter.image, image_id) is None:
                self.cache.forget(image_id)
        await self._evict()

    async def used(self, image_id: str) -> None:
        """A container was made of ``image_id``: if it is one of the recorded, it was used last."""
        if self.cache.touch(image_id):
            await self._save()

    @contextlib.asynccontextmanager
    async def image_for(self, message: Create, receive: Receive) -> AsyncIterator[tuple[ImageFacts, int | None]]:
        """The create's image, in Docker (loaded from the hub's blobs, which ``receive`` asks
        for, or pulled, if need be), and the image bytes received for it; never evicted until
        the block ends."""
        self._pinned[message.image] += 1
        pinned = [message.image]
        try:
            if message.manifest is not None:
                self._pinned[message.manifest.config.digest] += 1
                pinned.append(message.manifest.config.digest)
                image, received = await self._provide(message, receive)
            else:
                image, received = await self._local_or_pulled(message.image), None
            self._pinned[image.id] += 1
            pinned.append(image.id)
            yield image, received
        finally:
            self._pinned.subtract(pinned)
            self._pinned += Counter()  # drops what fell to zero

    async def _local_or_pulled(self, ref: str) -> ImageFacts:
        """The image a create without a manifest names: one this provider offers, or (``--pull``)
        one Docker lacks, pulled. An image on the host that it does not offer is never run (nor
        its tag pulled over): it is missing, in the same words."""
        missing = ImageMissing(
            f"provider {self.config.name!r} does not offer the image {ref!r} (its operator allows images with "
            "--images or the label org.kiln.offer=<its name>; started with --pull it pulls what Docker lacks)"
        )
        found = await self.pools.lifecycle_call(self.adapter.image, ref)
        if found is not None:
            if self.allowed.lets_run(ref, found.local, self.cache.loaded):
                return found
            raise missing
        if not self.config.pull:
            raise missing
        async with self._lock(ref):
            found = await self.pools.lifecycle_call(self.adapter.image, ref)
            if found is not None:  # pulled by another create meanwhile, or put there by someone else
                if self.allowed.lets_run(ref, found.local, self.cache.loaded):
                    return found
                raise missing
            before = {image.id for image in await self.pools.lifecycle_call(self.adapter.images)}
            log.info("pulling %s", ref)
            started = time.monotonic()
            pulled = await self.pools.transfer_call(self.adapter.pull, ref)
            self.tallies.image_pulls["registry"] += 1
            log.info("pulled %s (%s) in %.1f s", ref, pulled.id[:19], time.monotonic() - started)
            if pulled.id not in before:  # an image that was here already (under another tag) is not ours
                await self._loaded(pulled, pulled=True)
            return pulled

    async def _provide(self, message: Create, receive: Receive) -> tuple[ImageFacts, int]:
        """Make Docker hold the image of a create that brings a manifest: (it, bytes received)."""
        assert message.manifest is not None
        image_id = message.manifest.config.digest
        if (found := await self.pools.lifecycle_call(self.adapter.image, image_id)) is not None:
            return found, 0
        # One load per image: a second create waits for it, then finds the image (or, if
        # that load failed, loads it itself).
        async with self._lock(image_id):
            if (found := await self.pools.lifecycle_call(self.adapter.image, image_id)) is not None:
                return found, 0
            return await self._load(message, receive)

    @contextlib.asynccontextmanager
    async def _lock(self, image: str) -> AsyncIterator[None]:
        """Held while ``image`` is loaded or pulled; gone once no create waits for it."""
        lock, users = self._locks.get(image, (asyncio.Lock(), 0))
        self._locks[image] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[image]
            if users == 1:
                del self._locks[image]
            else:
                self._locks[image] = (lock, users - 1)

    async def _load(self, message: Create, receive: Receive) -> tuple[ImageFacts, int]:
        """Ask the hub for the blobs Docker lacks (``want``) and feed them to ``docker load``."""
        manifest = message.manifest
        assert manifest is not None
        chains = await self.pools.lifecycle_call(self.adapter.layer_chains)
        held = held_layers([layer.digest for layer in manifest.layers], chains)
        blobs = wanted(manifest, held)
        declared = sum(layer.expanded or 0 for layer in blobs[1:])  # the hub's measure (1.4), if it sent one
        # Loads at once share the budget: each holds what the hub declared (its layers may not
        # pass it) and may extract at most what the others leave.
        room = self.cache.budget - self._loading
        if declared > room:
            loading = f" ({format_size(self._loading)} of it held by loads in progress)" if self._loading else ""
            raise ImageTooLarge(
                f"provider {self.config.name!r} keeps {format_size(self.cache.budget)} of images{loading}; this one "
                f"takes {format_size(declared)} once extracted"
            )
        self._loading += declared
        try:
            return await self._load_within(message, receive, blobs, held, room)
        finally:
            self._loading -= declared

    async def _load_within(
        self, message: Create, receive: Receive, blobs: list[Blob], held: int, room: int
    ) -> tuple[ImageFacts, int]:
        """:meth:`_load` once the image's room is held: ``room`` bytes at most are extracted."""
        manifest = message.manifest
        assert manifest is not None
        incoming = await receive([blob.digest for blob in blobs])
        idle = self.config.stream_idle_timeout
        total = sum(blob.size for blob in blobs)
        log.info(
            "activity %s: loading %s, %d bytes in %d blobs (%d layers here already)",
            message.activity,
            manifest.config.digest[:19],
            total,
            len(blobs),
            held,
        )
        started = time.monotonic()
        # Credit is granted (and the data invited) only now; until its first chunk comes, the
        # load holds no thread and no Docker connection.
        first = await next_chunk(incoming, idle, "image")
        # Metered again on the way in: whatever the hub said, no more than the cache budget is extracted.
        chunks = chunks_for_thread(first, incoming, idle, "image", asyncio.get_running_loop())
        archive = LoadArchive(manifest, blobs, chunks, limit=room)
        try:
            await self.pools.transfer_call(self.adapter.load, archive)
        finally:
            self.tallies.image_pull_bytes += archive.received
        self.tallies.image_pulls["hub"] += 1
        image = await self.pools.lifecycle_call(self.adapter.image, manifest.config.digest)
        if image is None:
            raise DockerFailed(f"docker load took the image {manifest.config.digest} but Docker does not hold it")
        seconds = time.monotonic() - started
        log.info(
            "loaded %s: %d bytes in %.1f s (%.0f MB/s)",
            image.id[:19],
            archive.received,
            seconds,
            archive.received / 1e6 / max(seconds, 1e-3),
        )
        await self._loaded(image, archive.expanded)
        return image, archive.received

    async def _loaded(self, image: ImageFacts, expanded: int = 0, *, pulled: bool = False) -> None:
        """Record an image loaded for requestors (from the hub's store, or ``pulled``), at the larger
        of Docker's size for it and what its layers were metered to take; make room for it, and offer it."""
        self.cache.add(image.id, max(image.size, expanded), image.tags, pulled=pulled)
        self.changed.set()
        await self._evict()

    async def _evict(self) -> None:
        """Remove recorded images, least recently used first, until they fit the budget; never one
        a container uses or a create is about to. Saves the record."""
        async with self._evicting:
            in_use = await self.pools.lifecycle_call(self.adapter.images_in_use)
            for image_id in self.cache.victims(in_use, keep=set(self._pinned)):
                recorded = self.cache.images[image_id]
                found = await self.pools.lifecycle_call(self.adapter.image, image_id)
                if found is None:
                    self.cache.forget(image_id)  # removed by someone else
                elif not set(found.tags) <= set(recorded.tags):
                    tags = ", ".join(found.tags)
                    log.info("image %s was tagged %s here: the operator's now, not evicted", image_id[:19], tags)
                    self.cache.forget(image_id)
                elif await self.pools.lifecycle_call(self.adapter.remove_image, image_id, found.tags):
                    last_used = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(recorded.last_used))
                    log.info("evicted image %s (%d bytes, last used %s)", image_id[:19], recorded.size, last_used)
                    self.cache.forget(image_id)
                    self.changed.set()
            await self._save()
        if self.cache.total > self.cache.budget:
            log.warning(
                "the images loaded here take %d bytes, past the budget of %d: the rest are in use",
                self.cache.total,
                self.cache.budget,
            )

    async def _save(self) -> None:
        async with self._saving:  # one writer at a time, each writing the record as it is now
            await self.pools.lifecycle_call(write_atomically, self.cache.path, self.cache.snapshot())
