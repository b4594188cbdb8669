"""When the hub gives up waiting: the deadlines of its requests to providers, and stalled streams.

Two heaps, looked at by :meth:`~kiln.hub.core.HubCore.expire` about once a second, so that
only what is due is looked at:

* a ``create`` or ``destroy`` a provider has not answered by its deadline (the provider is
  stuck: it is dropped). Progress pushes a deadline back; the heap keeps the old entry, and
  it is put back at the new deadline when it comes up.
* a stream toward a provider whose sender has held no credit for ``credit_timeout`` (the
  provider never said it is ready for more: the stream is aborted).

Entries for what is gone (answered requests, departed peers, ended streams) stay until they
come up, or until :meth:`Deadlines.compact` rebuilds a heap that holds mostly those.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable
from typing import Final

from kiln.hub.flow import HUB, Route
from kiln.hub.peers import Peer, Pending

HEAP_FLOOR: Final = 1024
"""Entries the heaps of deadlines and stalls may hold before stale ones are swept (at twice the live ones)."""


class Deadlines:
    """The heaps of request deadlines and stalled streams (no clock of its own: ``monotonic`` is read)."""

    def __init__(self, credit_timeout: float, monotonic: Callable[[], float]) -> None:
        self.credit_timeout = credit_timeout
        self._monotonic = monotonic
        self._deadlines: list[tuple[float, int, int]] = []  # heap: (deadline, provider peer, hub id)
        self._stalls: list[tuple[float, int, Route]] = []  # heap: (deadline, tie-breaker, stream toward a provider)
        self._order = itertools.count()
        self._floor = HEAP_FLOOR

    def due(self, pending: Pending, peer: int, hub_id: int, seconds: float) -> None:
        """Provider ``peer`` must answer ``pending`` within ``seconds``."""
        pending.deadline = self._monotonic() + seconds
        heapq.heappush(self._deadlines, (pending.deadline, peer, hub_id))

    def overdue(self, now: float, peers: dict[int, Peer]) -> tuple[Peer, Pending] | None:
        """The next request left unanswered past its deadline, and its provider (None: no more)."""
        while self._deadlines and self._deadlines[0][0] < now:
            _, peer, hub_id = heapq.heappop(self._deadlines)
            p = peers.get(peer)
            late = p.pending.get(hub_id) if p is not None else None
            if p is None or late is None or late.deadline == math.inf:
                continue
            if late.deadline >= now:
                heapq.heappush(self._deadlines, (late.deadline, peer, hub_id))
                continue
            return p, late
        return None

    def stall(self, route: Route, since: float | None = None) -> None:
        """The sender of ``route`` (toward a provider) has no credit left: the provider owes it some."""
        route.stalled = self._monotonic() if since is None else since
        if not route.watched:
            route.watched = True
            heapq.heappush(self._stalls, (route.stalled + self.credit_timeout, next(self._order), route))

    def starved(self, now: float) -> Route | None:
        """The next stream toward a provider that granted it no credit for ``credit_timeout`` (None: no more)."""
        while self._stalls and self._stalls[0][0] <= now:
            _, _, route = heapq.heappop(self._stalls)
            if route.ended or route.stalled == math.inf:
                route.watched = False
                continue
            if route.stalled + self.credit_timeout > now:
                heapq.heappush(self._stalls, (route.stalled + self.credit_timeout, next(self._order), route))
                continue
            route.watched = False
            return route
        return None

    def compact(self, peers: Iterable[Peer]) -> None:
        """Rebuild the heaps once they hold mostly entries for what is gone: a peer that comes
        and goes cannot make them grow without bound."""
        rebuilt = False
        live = list(peers)
        if len(self._deadlines) > 2 * self._floor:
            rebuilt = True
            self._deadlines = [
                (pending.deadline, q.id, hub_id)
                for q in live
                for hub_id, pending in q.pending.items()
                if pending.deadline < math.inf
            ]
            heapq.heapify(self._deadlines)
        if len(self._stalls) > 2 * self._floor:
            rebuilt = True
            for _, _, route in self._stalls:
                route.watched = False
            self._stalls = []
            for q in live:
                for route in q.receives.values():
                    if route.upload and route.requestor != HUB and not route.ended and route.stalled < math.inf:
                        self.stall(route, since=route.stalled)
        if rebuilt:  # the floor follows what is live: measured on stale entries, it would only ever rise
            self._floor = max(HEAP_FLOOR, len(self._deadlines), len(self._stalls))

    @property
    def requests(self) -> int:
        """Entries in the heap of request deadlines (live and stale)."""
        return len(self._deadlines)
