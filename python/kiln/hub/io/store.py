"""The image store's service: the tasks that take pushes in, serve blobs to providers, and list,
remove and share images, carrying out the core's store actions (:mod:`kiln.hub.store_link`).
Its files are :mod:`kiln.hub.io.blobs`'; what it holds, and every decision about it, the pure
:class:`~kiln.hub.catalog.Catalog`'s. File work runs on threads, so the hub's event loop never
waits on a disk.

Every request acts as its requestor's tenant (:class:`~kiln.hub.catalog.Tenant`) sees the store:
a list shows what it may see, a remove or share needs an image it holds (or an admin), and a
push sends every blob it could not read already (the catalog's rules).

Each blob is metered as it streams in (:class:`~kiln.protocol.layers.TarMeter`): a layer that
expands past the catalog's bounds fails the push (``image_too_large``) as soon as its headers
say so, and the push's room grows with what arrived, evicting only then.

Flow control is the core's (:mod:`kiln.hub.flow`): a push's credit is granted in batches of
half a window as its frames are taken (:class:`~kiln.hub.flow.Batch`), and blobs go to a
provider only while :meth:`~kiln.hub.core.HubCore.serve_credit` says there is credit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

from kiln.hub.access import Directory
from kiln.hub.actions import (
    Action,
    PushCancelled,
    PushFrame,
    ServeBlobs,
    ServeCredit,
    ServeStop,
    StoreAction,
    StoreRequest,
)
from kiln.hub.catalog import (
    Owner,
    Push,
    StoredImage,
    Tenant,
    owner_name,
)
from kiln.hub.core import HubCore
from kiln.hub.flow import Batch
from kiln.hub.io.blobs import BlobStore
from kiln.hub.io.shared import SharedStore
from kiln.protocol import limits
from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import Cancelled, ImageCorrupt, KilnError, TransferFailed, UsageError
from kiln.protocol.frames import FrameKind
from kiln.protocol.messages import (
    Blob,
    Done,
    Error,
    ImageInfo,
    ImageList,
    ImagePushed,
    ListImages,
    PushImage,
    RemoveImage,
    ShareImage,
    Want,
    clip,
)

log = logging.getLogger("kiln.hub.io.store")

PUSH_IDLE_TIMEOUT: Final = 20.0
"""A push that sends nothing for this long fails (``transfer_failed``) and gives back the room it
held; what it verified stays."""
PUSH_MIN_RATE: Final = 32 * 1024
"""Bytes a second a push must average over each :data:`PUSH_IDLE_TIMEOUT` window, else it fails
(``transfer_failed``): a push that trickles a byte now and then would hold its pins and room for ever."""
SAVE_INTERVAL: Final = 10.0
"""How often the times images were last used are written to disk."""
READ_BYTES: Final = 1024 * 1024
"""Bytes read from a blob file at once, sent as several DATA frames."""


def _tags(image: StoredImage) -> dict[Owner, set[str]]:
    return {owner: set(h.tags) for owner, h in image.holdings.items()}


class _Push:
    """A push in progress: the frames the core passed on, in order."""

    def __init__(self, window: int) -> None:
        self.frames: asyncio.Queue[tuple[FrameKind, bytes]] = asyncio.Queue()  # bounded by the credit granted
        self.credit = Batch(window)  # given back in batches as its frames are taken (window: in chunks)
        self.task: asyncio.Task[None] | None = None
        self.rate_since = asyncio.get_running_loop().time()  # when the current span its rate is measured over began
        self.rate_bytes = 0  # bytes it sent since

    def count(self, received: int) -> None:
        """``received`` bytes came: TransferFailed if, over a whole span of ``PUSH_IDLE_TIMEOUT``, it
        averaged under the floor."""
        self.rate_bytes += received
        now = asyncio.get_running_loop().time()
        if now - self.rate_since < PUSH_IDLE_TIMEOUT:
            return
        if self.rate_bytes < PUSH_MIN_RATE * (now - self.rate_since):
            raise TransferFailed(
                f"the push sent {self.rate_bytes} bytes in {now - self.rate_since:.0f} s, under the "
                f"{PUSH_MIN_RATE // 1024} KiB/s a push must keep up"
            )
        self.rate_since, self.rate_bytes = now, 0


class _Serve:
    """Blobs being sent to a provider (the credit it granted is the core's: :meth:`HubCore.serve_credit`)."""

    def __init__(self) -> None:
        self.more = asyncio.Event()  # set when the provider grants credit
        self.task: asyncio.Task[None] | None = None


class ImageService:
    """Carries out the core's store actions: takes pushes in, serves blobs, lists and removes images."""

    def __init__(
        self,
        core: HubCore,
        store: BlobStore,
        apply: Callable[[list[Action]], None],
        directory: Directory | None = None,
        shared: SharedStore | None = None,
    ) -> None:
        self.core = core
        self.shared = shared
        """The store of the hubs sharing this hub's database, if any: what changes here is written
        there, and a blob a provider needs that is not here is fetched from another hub."""
        self.directory = directory
        """Who the tenants are (the hub's credentials): their names, shown and shared with."""
        self.catalog = core.catalog
        self.store = store
        self._apply = apply
        self._tasks: set[asyncio.Task[None]] = set()
        self._pushes: dict[tuple[int, int], _Push] = {}
        self._serves: dict[tuple[int, int], _Serve] = {}
        self._window = min(limits.WINDOW_CHUNKS, core.limits.max_window)
        self._saved = {digest: image.last_used for digest, image in self.catalog.images.items()}

    def handle(self, action: StoreAction) -> None:
        """Take one action of the core's (from the event loop, in order)."""
        if isinstance(action, StoreRequest):
            key = (action.peer, action.message.id)
            tenant = Tenant.of(action.credential)
            if isinstance(action.message, PushImage):
                push = self._pushes[key] = _Push(self._window)
                # In-flight bounds are per credential; requestors without one (an open hub, the
                # shared token) share no credential, so each connection is bounded on its own.
                credential = action.credential
                pusher = f"credential {credential.id}" if credential is not None else f"peer {action.peer}"
                push.task = self._spawn(
                    self._push(action.peer, action.message, tenant, pusher, push), key, self._pushes
                )
            elif isinstance(action.message, ListImages):
                self._spawn(self._list(action.peer, action.message, tenant))
            elif isinstance(action.message, ShareImage):
                self._spawn(self._share(action.peer, action.message, tenant))
            else:
                self._spawn(self._remove(action.peer, action.message, tenant))
        elif isinstance(action, PushFrame):
            pushing = self._pushes.get((action.peer, action.request))
            if pushing is not None:
                pushing.frames.put_nowait((action.kind, action.payload))
        elif isinstance(action, PushCancelled):
            pushing = self._pushes.get((action.peer, action.request))
            if pushing is not None and pushing.task is not None and action.answer:
                pushing.task.cancel("cancelled")
            elif pushing is not None:
                # Its requestor is gone: what arrived before is still verified and kept.
                pushing.frames.put_nowait((FrameKind.ABORT, b"the requestor disconnected"))
        elif isinstance(action, ServeBlobs):
            key = (action.peer, action.stream)
            serve = self._serves[key] = _Serve()
            serve.task = self._spawn(self._serve(action.peer, action.stream, action.blobs, serve), key, self._serves)
        elif isinstance(action, ServeCredit):
            serving = self._serves.get((action.peer, action.stream))
            if serving is not None:
                serving.more.set()
        elif isinstance(action, ServeStop):
            serving = self._serves.get((action.peer, action.stream))
            if serving is not None and serving.task is not None:
                serving.task.cancel()

    async def run(self) -> None:
        """Write the times images were last used, now and then, until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(SAVE_INTERVAL)
                await asyncio.to_thread(self.store.save, self._on_disk(self._used_since_saved()))
        finally:
            with contextlib.suppress(OSError):
                self.store.save(self._on_disk(self._used_since_saved()))

    def _used_since_saved(self) -> list[StoredImage]:
        """The images used since their record was last written (and marks them written)."""
        changed = [i for i in self.catalog.images.values() if self._saved.get(i.digest) != i.last_used]
        for image in changed:
            self._saved[image.digest] = image.last_used
        return changed

    def _spawn(
        self,
        coro: Coroutine[Any, Any, None],
        key: tuple[int, int] | None = None,
        table: dict[tuple[int, int], Any] | None = None,
    ) -> asyncio.Task[None]:
        """Run ``coro`` as a task the service owns (cancelled and awaited by :meth:`close`)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if table is not None and key is not None:
                table.pop(key, None)

        task.add_done_callback(done)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- requests --------------------------------------------------------------------------

    def _reply(self, peer: int, reply: Want | ImagePushed | ImageList | Done | Error) -> None:
        self._apply(self.core.store_reply(peer, reply))

    def _fail(self, peer: int, request: int, error: KilnError) -> None:
        self._reply(peer, Error(type="error", re=request, code=error.code, message=clip(error.message)))

    def _infos(self, images: list[StoredImage], tenant: Tenant) -> list[ImageInfo]:
        """``images`` as ``tenant`` may see them, each owner shown by its credential's name."""
        ids = {o for i in images for h in i.holdings.values() for o in (*i.holdings, *h.shared) if o is not None}
        names = self.directory.names(ids) if self.directory is not None and ids else {}

        def name(owner: Owner) -> str:
            return owner_name(owner) if owner is None else names.get(owner, owner_name(owner))

        return [i.info(tenant, self.core.market.holders(i.digest), name) for i in images]

    async def _list(self, peer: int, message: ListImages, tenant: Tenant) -> None:
        images = self._infos(self.catalog.by_recency(tenant), tenant)
        used, limit = self.catalog.used_by(tenant), self.catalog.limit
        self._reply(peer, ImageList(type="image_list", re=message.id, images=images, used=used, limit=limit))

    async def _remove(self, peer: int, message: RemoveImage, tenant: Tenant) -> None:
        try:
            image = self.catalog.owned(message.image, tenant, "remove")
        except KilnError as e:
            self._fail(peer, message.id, e)
            return
        owners = list(image.holdings)
        gone = self.catalog.disown(image, tenant)
        if image.digest in self.catalog.images:
            await self._save([image])
            log.info("image %s: tenant %s dropped its hold", image.digest, owner_name(tenant.id))
        else:
            await asyncio.to_thread(self._drop, image.digest, gone)
            log.info("image %s removed (%d blobs deleted)", image.digest, len(gone))
        if self.shared is not None:
            self.shared.publish((image.digest, owner) for owner in owners if owner not in image.holdings)
            self.shared.deleted(gone)
        self._reply(peer, Done(type="done", re=message.id))

    async def _share(self, peer: int, message: ShareImage, tenant: Tenant) -> None:
        try:
            image = self.catalog.owned(message.image, tenant, "share")
            to = [self._tenant(name) for name in message.to]
        except KilnError as e:
            self._fail(peer, message.id, e)
            return
        self.catalog.share(image, tenant, to, public=message.public, revoke=message.revoke)
        await self._save([image])
        if self.shared is not None:  # the holdings share() changed: the tenant's, or an admin's every one
            owners = [tenant.id] if tenant.id in image.holdings else list(image.holdings)
            self.shared.publish((image.digest, owner) for owner in owners)
        log.info(
            "image %s: tenant %s %s %s",
            image.digest,
            owner_name(tenant.id),
            "unshared it with" if message.revoke else "shared it with",
            ", ".join([*message.to, *(["everyone"] if message.public else [])]),
        )
        self._reply(peer, Done(type="done", re=message.id))

    def _tenant(self, name: str) -> Owner:
        """The tenant a share names: a credential's name or ``#<id>``, or ``#open``."""
        if name == owner_name(None):
            return None
        credential = self.directory.tenant(name) if self.directory is not None else None
        if credential is None:
            raise UsageError(
                f"no live requestor credential is named {name!r} (kiln token ls lists them; "
                "#<id> names one by its id, #open the requestors without a credential)"
            )
        return credential.id

    def _drop(self, digest: str, blobs: list[str]) -> None:
        self.store.forget(digest)
        self.store.delete(blobs, self.catalog.keeps)

    async def _push(self, peer: int, message: PushImage, tenant: Tenant, pusher: str, push: _Push) -> None:
        manifest = message.manifest
        try:
            wanted, room = self.catalog.begin(manifest, tenant, pusher)
        except KilnError as e:
            self._fail(peer, message.id, e)
            return
        try:
            if wanted:
                self._reply(peer, Want(type="want", re=message.id, blobs=[blob.digest for blob in wanted]))
                self._apply(self.core.store_grant(peer, message.id, push.credit.window))
                await self._receive(peer, message.id, wanted, push, room)
            # A second push of an image the tenant sees only retags: no disk read. One stored only
            # for others is read like a new one (its refusals must not tell that it is stored).
            known = self.catalog.resolve(manifest.config.digest, tenant) is not None
            config = b"" if known else await asyncio.to_thread(self.store.read_config, manifest.config.digest)
            before = {digest: _tags(image) for digest, image in self.catalog.images.items()}
            image = self.catalog.add_image(manifest, config, message.tags, time.time(), tenant)
            (info,) = self._infos([image], tenant)  # now: a remove may come while the record is written
            changed = [i for i in self.catalog.images.values() if i is image or before.get(i.digest) != _tags(i)]
            await self._save(changed)
            if self.shared is not None:
                self.shared.publish((i.digest, tenant.id) for i in changed)
        except asyncio.CancelledError as e:
            if e.args and e.args[0] == "cancelled":
                self._fail(peer, message.id, Cancelled("push cancelled"))
            raise
        except KilnError as e:
            self._fail(peer, message.id, e)
            return
        except OSError as e:
            log.warning("push of %s failed on disk: %s", manifest.config.digest, e)
            self._fail(peer, message.id, KilnError(f"the hub could not store the image: {e}", ErrorCode.INTERNAL))
            return
        finally:
            self.catalog.end(room)
        sent = sum(blob.size for blob in wanted)
        log.info(
            "image %s stored (%d bytes received, %d held already; %d once extracted)",
            image.digest,
            sent,
            image.size - sent,
            image.expanded,
        )
        pushed = ImagePushed(type="image_pushed", re=message.id, image=info, sent=sent, skipped=image.size - sent)
        self._reply(peer, pushed)

    def _on_disk(self, images: list[StoredImage]) -> list[StoredImage]:
        """Those of ``images`` whose records are kept on disk: all, but with a shared store those
        whose blobs are all here (one another hub stores is the shared store's to keep: a record
        here would lack its blobs)."""
        if self.shared is None:
            return images
        return [image for image in images if not self.catalog.missing(image.manifest)]

    async def _save(self, images: list[StoredImage]) -> None:
        """Write the records of ``images`` to disk (:meth:`_on_disk`)."""
        await asyncio.to_thread(self.store.save, self._on_disk(images))

    async def _receive(self, peer: int, request: int, wanted: list[Blob], push: _Push, room: Push) -> None:
        """Take the wanted blobs off the push's stream, one after another, each metered, verified and
        stored; the push's room grows as its bytes come (evicting then, if need be)."""
        layers = {layer.digest for layer in room.manifest.layers}
        pending = b""
        for blob in wanted:
            writer = self.store.writer(blob, blob.digest in layers)
            try:
                left = blob.size
                while left > 0:
                    if not pending:
                        pending = await self._next_data(peer, request, push, blob, left)
                    piece, pending = pending[:left], pending[left:]
                    await asyncio.to_thread(writer.write, piece)
                    left -= len(piece)
                    if writer.layer:
                        self.catalog.check_layer(room, blob, writer.expanded)
                    # Room for the bytes that came; what the layer's headers say it expands to
                    # only once all of it came (a header alone may claim a file as large as the
                    # layer is declared: that claim evicts nothing).
                    if left:
                        evicted = self.catalog.grow(room, writer.written, blob.size)
                    else:
                        evicted = self.catalog.grow(room, max(writer.written, writer.expanded))
                    if evicted:
                        log.info(
                            "evicting %d blobs to make room for image %s", len(evicted), room.manifest.config.digest
                        )
                        await asyncio.to_thread(self.store.evict, evicted, self.catalog)
                        if self.shared is not None:
                            self.shared.deleted(evicted)
                            self.shared.evicted()
                # Its bytes all came: pinned before they are published, so that no room made for
                # another push meanwhile drops it (deleting the file this writer just put there).
                self.catalog.pin(room, blob)
                await asyncio.to_thread(writer.finish)
            finally:
                await asyncio.to_thread(writer.discard)
            self.catalog.add_blob(blob, writer.measured, room)
            if self.shared is not None:
                self.shared.held([blob.digest])
        if pending:
            raise ImageCorrupt("the push sent more bytes than its wanted blobs hold")
        kind, _ = await self._frame(push)
        if kind is FrameKind.DATA:
            raise ImageCorrupt("the push sent more bytes than its wanted blobs hold")
        if kind is FrameKind.ABORT:
            raise TransferFailed("the requestor aborted the push")

    async def _next_data(self, peer: int, request: int, push: _Push, blob: Blob, left: int) -> bytes:
        kind, payload = await self._frame(push)
        if kind is FrameKind.END:
            raise ImageCorrupt(f"the push ended {left} bytes short of blob {blob.digest}")
        if kind is FrameKind.ABORT:
            raise TransferFailed(f"the requestor aborted the push: {payload.decode(errors='replace')}")
        push.count(len(payload))
        if grant := push.credit.consumed():
            self._apply(self.core.store_grant(peer, request, grant))
        return payload

    @staticmethod
    async def _frame(push: _Push) -> tuple[FrameKind, bytes]:
        try:
            async with asyncio.timeout(PUSH_IDLE_TIMEOUT):
                return await push.frames.get()
        except TimeoutError:
            raise TransferFailed(f"the push sent nothing for {PUSH_IDLE_TIMEOUT:g} s") from None

    # --- serving a provider -------------------------------------------------------------------

    async def _serve(self, peer: int, stream: int, blobs: tuple[Blob, ...], serve: _Serve) -> None:
        chunk = self.core.limits.chunk_bytes
        if self.shared is not None:
            self.shared.prefetch(blobs)  # those another hub holds come side by side; sent in order
        try:
            for blob in blobs:
                if self.shared is not None:
                    await self.shared.fetch(blob)
                with await asyncio.to_thread(self.store.path(blob.digest).open, "rb") as f:
                    while data := await asyncio.to_thread(f.read, READ_BYTES):
                        for start in range(0, len(data), chunk):
                            while (credit := self.core.serve_credit(peer, stream)) == 0:
                                serve.more.clear()
                                await serve.more.wait()
                            if credit is None:
                                return  # the stream is over (its create ended): ServeStop is on its way
                            self._apply(self.core.serve_data(peer, stream, data[start : start + chunk]))
        except OSError as e:
            log.warning("serving blobs on stream %d to peer %d failed: %s", stream, peer, e)
            self._apply(self.core.serve_end(peer, stream, error=f"the hub could not read the image: {e}"))
            return
        except KilnError as e:  # a blob another hub holds could not be fetched
            self._apply(self.core.serve_end(peer, stream, error=e.message))
            return
        self._apply(self.core.serve_end(peer, stream))
