"""The link to the image store: the store's bytes are not the core's.

A requestor's ``push_image``, ``list_images``, ``remove_image`` and ``share_image`` go to the
store (:class:`~kiln.hub.actions.StoreRequest`), which answers through
:meth:`StoreLink.store_reply`; a push's data goes to it on a stream like any other
(:class:`~kiln.hub.actions.PushFrame`, within the credit it grants through
:meth:`StoreLink.store_grant`). A provider's ``want`` for a ``create`` of a stored image starts
the store sending blobs (:class:`~kiln.hub.actions.ServeBlobs`) on the create's stream, within
the credit the provider grants (:meth:`StoreLink.serve_credit`), through
:meth:`StoreLink.serve_data`. Both streams are held to the flow control of every other
(:mod:`kiln.hub.flow`).

A layer of :class:`~kiln.hub.core.HubCore` (see :mod:`kiln.hub.base`).
"""

from __future__ import annotations

from kiln.hub.actions import Action, ServeBlobs
from kiln.hub.base import PROGRESS_BYTES
from kiln.hub.flow import HUB, Route
from kiln.hub.metering import Metering
from kiln.hub.peers import Peer, Pending
from kiln.protocol import frames
from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import UsageError
from kiln.protocol.frames import FrameKind
from kiln.protocol.messages import Done, Error, ImageInfo, ImageList, ImagePushed, RentProgress, Want, clip


class StoreLink(Metering):
    """What passes between the core and the image store."""

    def _want(self, p: Peer, hub_id: int, pending: Pending, want: Want) -> None:
        """Provider ``p`` lacks these blobs of the stored image it is asked to create: send them."""
        if pending.routes or pending.stored is None or p.minor < 1:
            self._error(p, None, ErrorCode.OUT_OF_ORDER, f"'want' fits only once the create {hub_id} of a stored image")
            return
        sizes = {blob.digest: blob for blob in pending.stored.blobs}
        route = Route(HUB, hub_id, p.id, hub_id, upload=True)
        p.receives[hub_id] = route
        pending.routes.append(route)
        blobs = [sizes.get(digest) for digest in want.blobs]
        if len(set(want.blobs)) != len(want.blobs) or None in blobs:
            self._send_binary(
                p.id, frames.encode(FrameKind.ABORT, hub_id, b"want names blobs not in the image, or twice")
            )
            self._close_route(route)
            return
        wanted = tuple(blob for blob in blobs if blob is not None)
        pending.total = sum(blob.size for blob in wanted)
        self._out.append(ServeBlobs(p.id, hub_id, wanted))
        self.tallies.pulls += 1
        self._progress(pending, p)

    def serve_data(self, peer: int, stream: int, data: bytes) -> list[Action]:
        """The store sends one DATA frame of a blob to provider ``peer`` (within the credit it was given)."""
        route, q = self._served(peer, stream)
        if route is None or q is None:
            return []
        if not self.flow.spend(route):
            raise UsageError(f"the store sent on stream {stream} without credit")
        self._send_binary(q.id, frames.encode(FrameKind.DATA, stream, data))
        self.tallies.pull_bytes += len(data)
        pending = q.pending.get(stream)
        if pending is not None:
            pending.sent += len(data)
            if pending.sent - pending.told >= PROGRESS_BYTES:
                self._progress(pending, q)
        return self._flush()

    def serve_end(self, peer: int, stream: int, error: str | None = None) -> list[Action]:
        """The store sent every blob (or, with ``error``, gives up: the provider's create fails)."""
        route, q = self._served(peer, stream)
        if route is None or q is None:
            return []
        kind, payload = (FrameKind.END, b"") if error is None else (FrameKind.ABORT, clip(error, 200).encode())
        self._send_binary(q.id, frames.encode(kind, stream, payload))
        self._close_route(route)
        pending = q.pending.get(stream)
        if pending is not None and error is None:
            self._progress(pending, q)
        return self._flush()

    def serve_credit(self, peer: int, stream: int) -> int | None:
        """DATA frames the store may send on ``stream`` to provider ``peer`` now (None: the stream
        is over, stop). Once it is 0, wait for :class:`~kiln.hub.actions.ServeCredit`."""
        route, _ = self._served(peer, stream)
        return None if route is None else route.credit

    def _served(self, peer: int, stream: int) -> tuple[Route | None, Peer | None]:
        q = self.peers.get(peer)
        route = q.receives.get(stream) if q is not None else None
        if route is None or route.requestor != HUB or route.ended:
            return None, None
        return route, q

    def _progress(self, pending: Pending, provider: Peer) -> None:
        """Tell the rent's requestor how far its image has loaded (if it speaks 1.1); the create's
        deadline counts afresh (a big image may take longer than the timeout, if it moves)."""
        pending.told = pending.sent
        pending.deadline = self._monotonic() + self.create_timeout
        requestor = self.peers.get(pending.requestor) if pending.requestor is not None else None
        if requestor is None or pending.r_id is None or requestor.minor < 1:
            return
        self._send(
            requestor.id,
            RentProgress(
                type="rent_progress",
                re=pending.r_id,
                provider=provider.name,
                image=pending.image,
                done=pending.sent,
                total=pending.total,
            ),
        )

    def store_grant(self, peer: int, request: int, chunks: int) -> list[Action]:
        """The store lets a push's requestor send ``chunks`` more DATA frames."""
        p = self.peers.get(peer)
        route = p.sends.get(request) if p is not None else None
        if route is not None and route.push and not route.ended:
            self.flow.grant(route, chunks)
        return self._flush()

    def store_reply(self, peer: int, reply: Want | ImagePushed | ImageList | Done | Error) -> list[Action]:
        """The store answers a request of ``peer``'s (a final reply ends it)."""
        p = self.peers.get(peer)
        if p is None or reply.re is None or p.open.get(reply.re) != (HUB, 0):
            return []
        if not isinstance(reply, Want):
            del p.open[reply.re]
            route = p.sends.get(reply.re)
            if route is not None and route.push:
                del p.sends[reply.re]
                self._close_route(route)
        if isinstance(reply, ImagePushed):
            self.tallies.pushes += 1
        if p.minor < 4 and isinstance(reply, ImagePushed):
            reply = reply.model_copy(update={"image": _before_owners(reply.image)})
        elif p.minor < 4 and isinstance(reply, ImageList):
            reply = reply.model_copy(update={"images": [_before_owners(i) for i in reply.images]})
        self._send(peer, reply)
        return self._flush()


def _before_owners(info: ImageInfo) -> ImageInfo:
    """``info`` as a requestor of protocol 1.3 or older reads it: without the fields of 1.4."""
    return info.model_copy(update={"owners": None, "shared": None, "public": None})
