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
from typing import Final, Protocol

import orjson
from pydantic import ValidationError

from kiln.hub.ledger import Post
from kiln.hub.records import Adopted
from kiln.protocol.messages import WIRE, Offer, Resources

ID_STEP: Final = 64
"""The ids a hub gives its requests to a provider step by this much from the hub's slot (1 to 63),
so that the provider's hub tells by an id alone which hub a reply or a stream frame is for."""


class Cluster(Protocol):
    """The hub's seat in the shared database."""

    def claim_provider(self, name: str) -> bool:
        """Take the connection of provider ``name``; False when a live hub holds it."""
        ...

    def release_provider(self, name: str) -> None:
        """Provider ``name`` left this hub."""
        ...

    def adopt_session(self, secret: bytes) -> Adopted | None:
        """The session whose resume secret has this sha256, if a dead hub (or none) held it; a live
        hub's: its id in ``elsewhere`` (none adopted); None: no such session."""
        ...

    def adopt_leases(self, provider: str, activities: Collection[str]) -> Adopted:
        """The sessions a dead hub held that hold any of ``activities`` on ``provider``; and which
        of ``activities`` a live hub holds (``Adopted.elsewhere``: not to be destroyed)."""
        ...

    def reserve(self, activity: str, session: str, provider: str, resources: Resources) -> bool:
        """Reserve ``resources`` of ``provider`` for ``activity``: False when the capacity is sold (by any hub)."""
        ...

    def unreserve(self, activity: str) -> None:
        """``activity`` will not be: its reservation goes."""
        ...

    def hold(self, post: Post) -> bool:
        """Commit ``post`` (a hold, or a top-up) unless it would take its requestor's balance below
        zero (other hubs hold from the same balance): whether it was."""
        ...


def offer_text(minor: int, offer: Offer) -> str:
    """A provider's offer as the database keeps it for the other hubs, with its protocol's minor version."""
    return orjson.dumps({"minor": minor, "offer": offer.model_dump(mode="json", exclude_none=True)}).decode()


def offer_of(text: str) -> tuple[int, Offer] | None:
    """The minor version and the offer :func:`offer_text` wrote (None when it cannot be read)."""
    try:
        data = orjson.loads(text)
        return int(data["minor"]), Offer.model_validate(data["offer"], context=WIRE)  # micro-credits
    except (orjson.JSONDecodeError, ValidationError, KeyError, TypeError, ValueError):
        return None
