"""What the hub writes down so that a restart loses nothing: sessions, leases, usage.

The core (:mod:`kiln.hub.core`) decides; it asks the I/O layer to write by returning one
of the changes below among its actions, *before* the message that tells a peer about it
(write before acknowledging). The I/O layer carries actions out in order, so the row is
committed before that message leaves. :mod:`kiln.hub.io.state` holds the tables; at start
it hands back what they hold (:class:`SessionRecord`, :class:`LeaseRecord`) for
:meth:`kiln.hub.core.HubCore.restore`.

Only what a peer was told is written: a lease once its ``rented`` is about to go out (an
activity still being created when the hub dies was never the requestor's; its provider
reports it and is told to destroy it), and a session along with its first lease. Every
change is a single row or two, never one per frame or per command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from kiln.hub.ledger import Post
from kiln.protocol.messages import Resources


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A requestor's session: the one thing that outlives its connections."""

    id: str
    name: str
    credential: int | None  # the credential it joined with: only that one may resume it
    secret: bytes  # the sha256 of the resume secret its last welcome carried


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """An activity its requestor was told of: who holds it, where it runs, what it reserves."""

    id: str
    session: str
    provider: str
    resources: Resources
    group: str | None
    image: str | None  # the digest of the stored image it runs
    started: float


@dataclass(frozen=True, slots=True)
class SaveSession:
    """Write the session (new, or with a new resume secret)."""

    session: SessionRecord


@dataclass(frozen=True, slots=True)
class SaveLease:
    """Write the lease, and its session as it is now."""

    lease: LeaseRecord
    session: SessionRecord


@dataclass(frozen=True, slots=True)
class Destroying:
    """The lease is being destroyed: after a restart it is not handed back."""

    activity: str


@dataclass(frozen=True, slots=True)
class EndLease:
    """The lease is over: forget it, and append its usage record."""

    activity: str
    ended: float
    cpu_seconds: float | None  # what its provider measured, when it could


@dataclass(frozen=True, slots=True)
class EndSession:
    """The session is over for good (closed by its requestor, or not resumed in time)."""

    session: str


@dataclass(frozen=True, slots=True)
class SaveBudget:
    """A job's budget, set by the first rent of its group (micro-credits)."""

    session: str
    group: str
    budget: int


@dataclass(frozen=True, slots=True)
class SaveReputation:
    """What the hub observed of a provider (:mod:`kiln.hub.reputation`): every counter, as it is now."""

    provider: str
    counters: dict[str, float]


Change: TypeAlias = SaveSession | SaveLease | Destroying | EndLease | EndSession | Post | SaveBudget | SaveReputation
