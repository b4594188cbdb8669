"""Flow control: one mechanism for every stream the hub carries.

A stream (:class:`Route`) runs one way between two ends: a requestor and a provider (an
upload, an exec's stdin or output, a download), a requestor and the image store (a push), or
the image store and a provider (a stored image's blobs). Its receiver grants credit, in DATA
frames (chunks); the hub passes that credit on to the sender only while everything the
senders may still send toward that receiver, and all the hub has queued for it, fits in the
receiver's :class:`Budget`. The rest is *withheld* until the receiver's queue drains
(:meth:`Flow.delivered`). So a slow receiver slows its own streams, and the hub never buffers
past what it promised for it.

A peer's budget is half the buffer the I/O layer keeps for it (the other half is room for
messages). The image store (:data:`HUB`) bounds what it takes by the credit it
grants (:class:`Batch`), and so does the publish listener (:data:`PORTS`), so their budgets
hold no limit of their own.

Credit passed on goes out as a ``credit`` message to a peer, as
:class:`~kiln.hub.actions.ServeCredit` to the store when the store sends, or as
:class:`~kiln.hub.actions.PortCredit` to the publish listener.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from kiln.hub.actions import Action, PortCredit, Send, ServeCredit
from kiln.protocol.frames import FrameKind
from kiln.protocol.messages import Credit, serialize

HUB: Final = 0
"""The peer id that stands for the hub itself: the image store, as the sender of an image's
blobs to a provider and as the receiver of a requestor's push."""
PORTS: Final = -2
"""The peer id that stands for the hub's publish listener (1.7): the requestor of the connects that
carry published ports (:mod:`kiln.hub.io.published`), under the listener's connection ids."""


@dataclass(slots=True)
class Route:
    """One stream, one way: the requestor's leg (its request id) and the provider's leg (the hub's).

    ``upload`` streams go toward the provider (an upload's file, an exec's stdin, a stored
    image's blobs from the store, a push's data to the store), the others toward the requestor
    (a download, an exec's output).
    """

    requestor: int
    r_id: int
    provider: int
    p_id: int
    upload: bool
    credit: int = 0  # DATA frames the sender may still send: passed on to it and unspent
    withheld: int = 0  # credit the receiver granted that waits for room in the receiver's budget
    ended: bool = False
    last: FrameKind | None = None  # how its sender ended it (END or ABORT)
    stalled: float = math.inf  # since when its sender has held no credit (toward a provider; see HubCore.expire)
    watched: bool = False  # in the hub's heap of stalled streams

    @property
    def receiver(self) -> int:
        return self.provider if self.upload else self.requestor

    @property
    def sender(self) -> tuple[int, int]:
        """The sending end and the id it knows the stream under."""
        return (self.requestor, self.r_id) if self.upload else (self.provider, self.p_id)

    @property
    def push(self) -> bool:
        """A requestor's push: its data goes to the image store."""
        return self.upload and self.provider == HUB


@dataclass(slots=True)
class Budget:
    """What the hub lets be in flight toward one receiver."""

    chunks: float
    """How many chunks: credit its senders hold plus frames queued for it (``inf``: no bound)."""
    inbound: int = 0  # credit its senders hold (chunks)
    queued: int = 0  # stream frames toward it not yet written (bytes)
    waiting: list[Route] = field(default_factory=list)  # the streams whose further credit waits for room


class Flow:
    """The budgets of every receiver, and the credit of every stream toward them.

    Call :meth:`open` when a peer connects and :meth:`close` when it goes; :meth:`grant`
    when a receiver grants credit, :meth:`spend` for each DATA frame, :meth:`queue` for each
    stream frame the hub writes toward a peer and :meth:`delivered` once it is written;
    :meth:`end` when a stream is over. What it has to say goes to ``emit``.
    """

    def __init__(self, chunk_bytes: int, budget_bytes: int, emit: Callable[[Action], None]) -> None:
        self.chunk_bytes = chunk_bytes
        self.budget_chunks = budget_bytes // chunk_bytes
        self._emit = emit
        self.budgets: dict[int, Budget] = {HUB: Budget(math.inf), PORTS: Budget(math.inf)}

    def open(self, peer: int) -> None:
        self.budgets[peer] = Budget(self.budget_chunks)

    def close(self, peer: int) -> None:
        self.budgets.pop(peer, None)

    def room(self, receiver: int) -> int:
        """Chunks of credit that may still be passed on toward ``receiver``."""
        b = self.budgets.get(receiver)
        if b is None:
            return 0
        if b.chunks == math.inf:
            return 2**31
        return max(int(b.chunks) - b.inbound - math.ceil(b.queued / self.chunk_bytes), 0)

    def first(self, route: Route, window: int) -> int:
        """The first credit of a stream whose sender is told it in its request: at least one
        chunk now, the rest of ``window`` as the receiver's budget has room."""
        first = min(window, max(self.room(route.receiver), 1))
        route.credit = first
        self.budgets[route.receiver].inbound += first
        if window > first:
            self._withhold(route, window - first)
        return first

    def grant(self, route: Route, chunks: int) -> None:
        """The receiver of ``route`` lets its sender send ``chunks`` more DATA frames."""
        self._withhold(route, chunks)
        self.release(route.receiver)

    def spend(self, route: Route) -> bool:
        """A DATA frame on ``route``: False if its sender held no credit for it (it broke flow control)."""
        if route.credit <= 0:
            return False
        route.credit -= 1
        b = self.budgets.get(route.receiver)
        if b is not None:
            b.inbound -= 1
        return True

    def queue(self, peer: int, size: int) -> None:
        """``size`` bytes of stream frames toward ``peer`` wait to be written."""
        b = self.budgets.get(peer)
        if b is not None:
            b.queued += size

    def delivered(self, peer: int, size: int) -> None:
        """``size`` bytes of stream frames toward ``peer`` have been written: its credit may flow again."""
        b = self.budgets.get(peer)
        if b is not None:
            b.queued = max(b.queued - size, 0)
            self.release(peer)

    def end(self, route: Route) -> None:
        """The stream is over: the credit its sender held toward the receiver is free again."""
        if route.ended and route.credit == 0 and route.withheld == 0:
            return
        route.ended = True
        b = self.budgets.get(route.receiver)
        if b is not None:
            b.inbound -= route.credit
        route.credit = route.withheld = 0

    def _withhold(self, route: Route, chunks: int) -> None:
        b = self.budgets.get(route.receiver)
        if b is None:
            return
        if route.withheld == 0:
            b.waiting.append(route)
        route.withheld += chunks

    def release(self, receiver: int) -> None:
        """Pass on withheld credit toward ``receiver`` while there is room, oldest first.

        A stream that holds no credit at all gets one chunk even when there is no room:
        senders that sit on credit they do not use (say, uploads never fed) fill the
        receiver's room, and must not stop everyone else's streams. That lets the hub go
        over its promise by at most one chunk a stream.
        """
        b = self.budgets.get(receiver)
        if b is None:
            return
        room = self.room(receiver)
        waiting, b.waiting = b.waiting, []
        for route in waiting:
            if route.ended or route.withheld == 0:
                continue
            give = min(route.withheld, room) or (1 if route.credit == 0 else 0)
            room = max(room - give, 0)
            if give:
                route.withheld -= give
                route.credit += give
                route.stalled = math.inf
                b.inbound += give
                sender, stream = route.sender
                if sender == HUB:
                    self._emit(ServeCredit(route.provider, route.p_id, give))
                elif sender == PORTS:
                    self._emit(PortCredit(stream, give))
                else:
                    self._emit(Send(sender, serialize(Credit(type="credit", stream=stream, chunks=give))))
            if route.withheld:
                b.waiting.append(route)


class Batch:
    """A receiver's credit given back in batches of half its window, as it consumes (the way
    :class:`kiln.connection.Incoming` does): few ``credit`` messages, and its sender never stalls.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self._consumed = 0

    def consumed(self) -> int:
        """One chunk was taken: the credit to give back now (0: none yet)."""
        self._consumed += 1
        if self._consumed * 2 < self.window:
            return 0
        grant, self._consumed = self._consumed, 0
        return grant
