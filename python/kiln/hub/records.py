"""What the hub writes down so that a restart loses nothing: sessions, leases, usage, the ledger.

The core (:mod:`kiln.hub.core`) decides; it asks the I/O layer to write by returning one
of the changes below among its actions, *before* the message that tells a peer about it
(write before acknowledging). The I/O layer carries actions out in order, so the row is
committed before that message leaves. :mod:`kiln.hub.io.state` holds the tables; at start
it hands back what they hold (:class:`SessionRecord`, :class:`LeaseRecord`, and for the
ledger :class:`MeterRecord` and the reputation counters) for
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
from kiln.protocol.messages import Price, Resources


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
    price: Price | None = None  # what it costs, when the ledger meters it (micro-credits)
    max_duration: float | None = None  # seconds after which the hub ends it (rent.max_duration)


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
class SaveOffer:
    """Write what provider ``provider`` shares, for the other hubs of the database to sell too
    (several hubs only): ``offer`` is the JSON they take it back from (:func:`kiln.hub.cluster.offer_text`)."""

    provider: str
    resources: Resources
    offer: str


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
    """A provider's reputation counters as they are now (:mod:`kiln.hub.reputation` names them)."""

    provider: str
    counters: dict[str, float]


@dataclass(frozen=True, slots=True)
class MeterRecord:
    """What the ledger holds of one metered activity, for a restart to meter it on (or settle it).

    An activity is metered once a ``hold`` was posted for it. Its price is ``start``,
    ``cpu_hour`` and ``env_hour`` (micro-credits: :attr:`price`). ``held`` is what its holds
    (top-ups included) put in ``hold:<activity>`` minus what releases took out; ``captured``
    what its captures took out (the hold's balance is ``held - captured``); ``seq`` how many
    captures were posted (the next is ``capture:<activity>:<seq + 1>``), ``tops`` how many
    top-ups (the next is ``hold:<activity>:<tops + 1>``); ``seconds`` and ``cpu_seconds`` what
    the last capture billed (0 before the first).

    ``requestor`` is the account its holds came from, ``session`` and ``group`` those they were
    posted for; ``provider``, ``cpus`` and ``started`` are its lease's. ``ended`` is None for a
    live lease (one of :meth:`~kiln.hub.io.state.HubState.load`'s). Otherwise the activity is
    over but its hold still has a balance (the hub died before settling it): settle it as
    ended at ``ended`` (a final capture, then release the rest); its ``cpu_seconds`` are then
    the last its provider measured, when its end recorded them. A hold whose rent never became
    a lease (the hub died before ``rented``) has no ``provider``, a price of 0 and ``ended``
    at its hold: nothing is due, release it all.
    """

    activity: str
    start: int
    cpu_hour: int
    env_hour: int
    max_duration: float | None
    held: int
    captured: int
    seq: int
    cpu_seconds: float
    seconds: float
    requestor: str | None = None
    session: str | None = None
    group: str | None = None
    provider: str | None = None
    cpus: float = 0.0
    started: float | None = None
    ended: float | None = None
    tops: int = 0

    @property
    def price(self) -> Price:
        return Price.micro(self.start, self.cpu_hour, self.env_hour)


Change: TypeAlias = (
    SaveSession | SaveLease | Destroying | EndLease | EndSession | Post | SaveBudget | SaveReputation | SaveOffer
)


@dataclass(frozen=True, slots=True)
class Adopted:
    """Sessions another hub held until it died, taken over by this one (several hubs on one
    database: :mod:`kiln.hub.io.seat`): as a restart loads them, with the meters of their leases."""

    sessions: list[SessionRecord]
    leases: list[LeaseRecord]
    meters: list[MeterRecord]
    elsewhere: frozenset[str] = frozenset()
    """Activities asked about that a live hub holds: neither adopted nor to be destroyed."""
