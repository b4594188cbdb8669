"""What a hub asks of the hubs it shares a database with (``kiln hub --db postgresql://...``).

Each hub holds the connections of some providers and the sessions of some requestors; the
database says which (:class:`kiln.hub.io.state.HubState` answers, its heartbeat kept by
:mod:`kiln.hub.io.seat`). The core asks at three moments, and the database decides:

* a provider says hello: the hub takes its connection, unless a live hub holds it (a provider
  is connected to one hub at a time, as to one hub alone: a second hello is refused until the
  first connection is over);
* a requestor resumes a session this hub does not hold: the hub adopts it if a dead hub held it;
* a provider dials again with activities this hub does not know: the sessions holding them are
  adopted from a dead hub, as a restart takes back its own.

A hub alone (SQLite, the default) has none of this: its core is given no :class:`Cluster`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from kiln.hub.records import Adopted


class Cluster(Protocol):
    """The hub's seat in the shared database."""

    def claim_provider(self, name: str) -> bool:
        """Take the connection of provider ``name``; False when a live hub holds it."""
        ...

    def release_provider(self, name: str) -> None:
        """Provider ``name`` left this hub."""
        ...

    def adopt_session(self, secret: bytes) -> Adopted | None:
        """The session whose resume secret has this sha256, if a dead hub (or none) held it."""
        ...

    def adopt_leases(self, provider: str, activities: Collection[str]) -> Adopted:
        """The sessions a dead hub held that hold any of ``activities`` on ``provider``."""
        ...
