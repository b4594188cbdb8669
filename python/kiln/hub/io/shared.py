"""The image store the hubs of one PostgreSQL database share (``kiln hub --db postgresql://...``).

Blobs stay on each hub's disk, content-addressed. What the store holds is written to the
database (its SQL: :mod:`kiln.hub.io.shelf`): each owner's hold on each image, as
:mod:`kiln.hub.io.blobs` records it, and which hub holds which blob. Every :data:`POLL` seconds
each hub reads the rows the others changed into its :class:`~kiln.hub.catalog.Catalog`
(:meth:`~kiln.hub.catalog.Catalog.merge`), so that an image pushed through one hub is listed,
rented, shared and removed through any, under the catalog's rules; a removal or a tag moved
reaches the others the same way.

A blob a provider needs that this hub lacks (an image pushed elsewhere) is fetched
(:meth:`SharedStore.fetch`) from a live hub that holds it: a WebSocket to its
``/hub/blobs/<digest>`` (:mod:`kiln.hub.io.http`) showing this hub's token
(:attr:`~kiln.hub.io.seat.Seat.secret`), which the other finds among the live hubs'. The bytes go
to a temporary file, their size and sha256 checked as a pushed blob's are
(:class:`~kiln.hub.io.blobs.BlobWriter`), then into the store, counted against its limit (evicting
as a push does). Two providers asking for one blob fetch it once. The other end of it is
:meth:`SharedStore.lend`, which streams the file.

A hub alone (SQLite) has none of this: its store is its own, exactly as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Final

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, WebSocketException
from websockets.frames import CloseCode

from kiln.hub.catalog import Catalog, Owner, StoredImage
from kiln.hub.io.blobs import BlobStore, image_from_json, image_to_json, owner_key, owner_of
from kiln.hub.io.connections import HubConnection
from kiln.hub.io.http import BLOBS_PATH
from kiln.hub.io.shelf import Row
from kiln.hub.io.state import HubState
from kiln.protocol.codes import CLOSE_TOO_MANY
from kiln.protocol.errors import ImageCorrupt, KilnError, TransferFailed
from kiln.protocol.messages import Blob

log = logging.getLogger("kiln.hub.io.store")

POLL: Final = 1.0
"""Seconds between two reads of what the other hubs changed."""
OVERLAP: Final = 5.0
"""Seconds each read looks back past the last: a row written with an earlier time may commit after
a later one was read (rows already taken are skipped)."""
LEND_BYTES: Final = 256 * 1024
"""Bytes of a blob in each WebSocket message a hub sends another."""
FETCH_TIMEOUT: Final = 20.0
"""Seconds a fetch may wait for the other hub to answer, or for its next bytes."""
MAX_RECORD: Final = 1024 * 1024
"""The longest record of the shared store a hub reads (a longer one is skipped, logged)."""


class SharedStore:
    """This hub's part in the store of its database: writes what it holds, reads what the others
    hold, fetches blobs it lacks and lends its own. :meth:`open` at start, then :meth:`run`."""

    def __init__(self, state: HubState, store: BlobStore, catalog: Catalog) -> None:
        self.state = state
        self.store = store
        self.catalog = catalog
        self.secret = ""
        """This hub's token for the others (:attr:`~kiln.hub.io.seat.Seat.secret`): set once it joined."""
        self._since: float | None = None  # the database's clock at the last read
        self._rows: dict[tuple[str, str], tuple[float, str | None]] = {}  # (digest, owner) -> changed, record
        self._fetches: dict[str, asyncio.Task[None]] = {}

    # --- the rows ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Take every row of the shared store (the database's word over the files' here, which may be
        older), then write those this hub's files hold that it lacks, and which blobs are here."""
        went, gone = self._take(self.state.shelf_changes(None), everyone=True)
        missing = [
            (image.digest, owner)
            for image in self.catalog.images.values()
            for owner in image.holdings
            if (image.digest, owner_key(owner)) not in self._rows
        ]
        self.publish(missing)
        await self._delete(went, gone)
        self.state.hold_blobs(self.catalog.blobs, only=True)

    async def run(self) -> None:
        """Read what the other hubs changed every :data:`POLL` seconds, until cancelled; a read that
        fails is logged, and the next one tried."""
        failing = False
        while True:
            await asyncio.sleep(POLL)
            try:
                since = None if self._since is None else self._since - OVERLAP
                went, gone = self._take(self.state.shelf_changes(since))
            except self.state.errors as e:
                if not failing:
                    log.error("cannot read the shared image store in %s: %s", self.state.where, e)
                failing = True
                continue
            failing = False
            await self._delete(went, gone)

    def _take(self, read: tuple[float, list[Row]], *, everyone: bool = False) -> tuple[list[str], list[str]]:
        """Merge the rows ``read`` that are new (of other hubs, unless ``everyone``); the images that
        went with their last holder, and the blobs to delete."""
        self._since, rows = read
        went: list[str] = []
        gone: list[str] = []
        for row in rows:
            key = (row.digest, row.owner)
            known = self._rows.get(key)
            self._rows[key] = (row.changed, row.record)
            if (known is not None and known[0] == row.changed) or (row.hub == self.state.hub and not everyone):
                continue
            try:
                owner = owner_of(row.owner)
                if row.record is None:
                    image = self.catalog.images.get(row.digest)
                    if image is not None:  # a record of it with no holdings: the owner's is dropped
                        gone += self.catalog.merge(StoredImage(image.manifest, image.arch, image.os), owner)
                        went += [] if row.digest in self.catalog.images else [row.digest]
                    continue
                if len(row.record) > MAX_RECORD:
                    raise ValueError(f"a record of {len(row.record)} characters")
                record = image_from_json(row.record)
                if record.digest != row.digest or list(record.holdings) != [owner]:
                    raise ValueError("the record is of another image or owner")
                gone += self.catalog.merge(record, owner)
            except (ValueError, KeyError, TypeError, AttributeError, KilnError) as e:
                log.warning("ignoring the unreadable record of %s (owner %s) in the shared store: %s", *key, e)
        return went, gone

    def publish(self, held: Iterable[tuple[str, Owner]]) -> None:
        """Write ``(digest, owner)``'s hold as this hub's catalog has it now (none: dropped)."""
        rows = []
        for digest, owner in held:
            image = self.catalog.images.get(digest)
            record = image_to_json(image, (owner,)).decode() if image is not None and owner in image.holdings else None
            rows.append((digest, owner_key(owner), record))
            self._rows[(digest, owner_key(owner))] = (-1.0, record)  # its next read takes it as this hub's
        if not rows:
            return
        try:
            self.state.shelve(rows)
        except self.state.errors as e:
            log.error("cannot write %d images' records to the shared store in %s: %s", len(rows), self.state.where, e)

    def held(self, digests: Iterable[str]) -> None:
        """This hub stores the blobs ``digests`` now."""
        try:
            self.state.hold_blobs(digests)
        except self.state.errors as e:
            log.error("cannot write the blobs this hub holds to %s: %s", self.state.where, e)

    def deleted(self, digests: Iterable[str]) -> None:
        """The blobs ``digests`` were deleted here (those the catalog holds again are kept)."""
        gone = [digest for digest in digests if digest not in self.catalog.blobs]
        try:
            self.state.drop_blobs(gone)
        except self.state.errors as e:
            log.error("cannot write the blobs this hub deleted to %s: %s", self.state.where, e)

    def evicted(self) -> None:
        """Images were evicted here to make room: one another hub holds every blob of stays known
        (as stored there: :meth:`Catalog.merge`), the others go for every hub."""
        lost = {digest for digest, _ in self._rows if digest not in self.catalog.images}
        records: dict[tuple[str, Owner], StoredImage] = {}
        for (digest, key), (_, record) in self._rows.items():
            if digest in lost and record is not None:
                try:
                    records[(digest, owner_of(key))] = image_from_json(record)
                except (ValueError, KeyError, TypeError, AttributeError, KilnError):
                    continue  # logged when it was read
        if not records:
            return
        images = {digest: image for (digest, _), image in records.items()}
        blobs = {blob.digest for image in images.values() for blob in image.blobs}
        try:
            elsewhere = self.state.blobs_elsewhere(blobs)
        except self.state.errors as e:
            log.error("cannot read which hubs hold the blobs of the images evicted here: %s", e)
            elsewhere = blobs  # kept known: a fetch fails later if no hub has them
        dropped: list[tuple[str, Owner]] = []
        for (digest, owner), image in records.items():
            if all(blob.digest in elsewhere for blob in image.blobs):
                self.catalog.merge(image, owner)
            else:
                dropped.append((digest, owner))
        if dropped:
            log.info("%d images evicted here were stored nowhere else: they are gone", len({d for d, _ in dropped}))
        self.publish(dropped)

    async def _delete(self, images: list[str], blobs: list[str]) -> None:
        """Delete the records of ``images`` and the files of ``blobs``, which went through another hub."""
        if images or blobs:
            await asyncio.to_thread(self._forget, images, blobs)
            self.deleted(blobs)

    def _forget(self, images: list[str], blobs: list[str]) -> None:
        for digest in images:
            self.store.forget(digest)
        self.store.delete(blobs, self.catalog.keeps)

    # --- fetching a blob another hub holds ------------------------------------------------------

    def prefetch(self, blobs: Iterable[Blob]) -> None:
        """Start fetching those of ``blobs`` this hub lacks, side by side (:meth:`fetch` waits for one)."""
        for blob in blobs:
            self._fetching(blob)

    async def fetch(self, blob: Blob) -> None:
        """Make sure ``blob`` is on this hub's disk, fetching it from a live hub that holds it
        (one fetch for every asker); TransferFailed (or StoreFull, ImageCorrupt) if it could not be."""
        task = self._fetching(blob)
        if task is not None:
            await asyncio.shield(task)  # an asker gone (its provider left) stops no one else's fetch

    def _fetching(self, blob: Blob) -> asyncio.Task[None] | None:
        """The fetch of ``blob`` under way, started if need be; None when it is here."""
        if blob.digest in self.catalog.blobs:
            return None
        task = self._fetches.get(blob.digest)
        if task is None:
            task = self._fetches[blob.digest] = asyncio.get_running_loop().create_task(self._fetch(blob))

            def done(t: asyncio.Task[None]) -> None:
                self._fetches.pop(blob.digest, None)
                if not t.cancelled():
                    t.exception()  # told to every asker still there (and logged): none left is fine too

            task.add_done_callback(done)
        return task

    async def close(self) -> None:
        """Stop the fetches under way."""
        for task in list(self._fetches.values()):
            task.cancel()
        await asyncio.gather(*self._fetches.values(), return_exceptions=True)

    async def _fetch(self, blob: Blob) -> None:
        image = next((i for i in self.catalog.images.values() if any(b.digest == blob.digest for b in i.blobs)), None)
        if image is None:
            raise TransferFailed(f"blob {blob.digest} is of no image the hub knows")
        try:
            addresses = self.state.blob_holders(blob.digest)
        except self.state.errors as e:
            raise TransferFailed(f"cannot read which hubs hold blob {blob.digest}: {e}") from e
        if not addresses:
            raise TransferFailed(f"no live hub holds blob {blob.digest} of image {image.digest}")
        failures = []
        for address in addresses:
            try:
                await self._fetch_from(address, image, blob)
            except (OSError, TimeoutError, WebSocketException, TransferFailed, ImageCorrupt) as e:
                log.warning("fetching blob %s from the hub at %s failed: %s", blob.digest, address, e)
                failures.append(f"{address}: {e}")
                continue
            log.info("blob %s (%d bytes) fetched from the hub at %s", blob.digest, blob.size, address)
            return
        raise TransferFailed(f"blob {blob.digest} could not be fetched from another hub ({'; '.join(failures)})")

    async def _fetch_from(self, address: str, image: StoredImage, blob: Blob) -> None:
        """Take ``blob`` from the hub at ``address`` into the store, checked."""
        room = self.catalog.fetching(image, blob)
        writer = self.store.writer(blob, any(layer.digest == blob.digest for layer in image.manifest.layers))
        try:
            async with connect(
                f"{address}{BLOBS_PATH}{blob.digest}",
                additional_headers={"Authorization": f"Bearer {self.secret}"},
                max_size=LEND_BYTES,
                open_timeout=FETCH_TIMEOUT,
                compression=None,
            ) as ws:
                while True:
                    try:
                        async with asyncio.timeout(FETCH_TIMEOUT):
                            data = await ws.recv()
                    except ConnectionClosedOK:
                        break
                    except TimeoutError:
                        raise TransferFailed(f"the hub sent nothing for {FETCH_TIMEOUT:g} s") from None
                    if isinstance(data, str):
                        raise TransferFailed("the hub sent text, not the blob's bytes")
                    await asyncio.to_thread(writer.write, data)
                    if writer.layer:
                        self.catalog.check_layer(room, blob, writer.expanded)
                    await self._evict(self.catalog.grow(room, writer.written, blob.size))
            await self._evict(self.catalog.grow(room, max(writer.written, writer.expanded)))
            self.catalog.pin(room, blob)
            await asyncio.to_thread(writer.finish)
        except BaseException:
            self.catalog.end(room)
            raise
        finally:
            await asyncio.to_thread(writer.discard)
        self.catalog.fetched(blob, writer.measured, room)
        self.held([blob.digest])

    async def _evict(self, digests: list[str]) -> None:
        """Delete the blobs evicted to make room (and say what went)."""
        if digests:
            log.info("evicting %d blobs to make room for a blob fetched from another hub", len(digests))
            await asyncio.to_thread(self.store.evict, digests, self.catalog)
            self.deleted(digests)
            self.evicted()

    # --- lending a blob to another hub ----------------------------------------------------------

    def holds(self, digest: str) -> bool:
        """Whether the blob ``digest`` is on this hub's disk (for :mod:`kiln.hub.io.http` to lend)."""
        return digest in self.catalog.blobs

    async def lend(self, ws: HubConnection, digest: str) -> None:
        """Send the blob ``digest`` to the hub that asked for it (let in by :mod:`kiln.hub.io.http`),
        in messages of :data:`LEND_BYTES` as it reads them, then close (1000; 1011 if it cannot be read)."""
        if ws.refusal is not None:
            await ws.close(CLOSE_TOO_MANY, ws.refusal)
            return
        ws.waiting = False
        ws.gate.welcomed(ws.source)
        try:
            with await asyncio.to_thread(self.store.path(digest).open, "rb") as f:
                while data := await asyncio.to_thread(f.read, LEND_BYTES):
                    await ws.send(data)
        except OSError as e:
            log.warning("lending blob %s to another hub failed: %s", digest, e)
            await ws.close(CloseCode.INTERNAL_ERROR, "the hub could not read the blob")
            return
        except ConnectionClosed:
            return
        await ws.close()
