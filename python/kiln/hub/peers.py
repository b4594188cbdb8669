"""What the hub's core knows of each connection, lease and request in flight.

:class:`Peer` is one connection (a requestor or a provider), :class:`Lease` one activity,
:class:`Pending` a request the hub sent a provider and awaits the reply to, and
:class:`Route` one stream, one way, between a requestor and a provider (or the image
store; see :mod:`kiln.hub.flow`). Plain data: :class:`~kiln.hub.core.HubCore` keeps them consistent.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Final, Literal

from kiln.hub.access import Credential
from kiln.hub.catalog import StoredImage
from kiln.hub.flow import Route
from kiln.protocol.codes import ErrorCode
from kiln.protocol.messages import MAX_ID, Connect, Download, Exec, Offer, Price, Release, Resources, Upload

NONE: Final = Resources(cpus=0, memory=0, storage=0)
ABSENT: Final = -1
"""The provider of a lease whose provider has not dialled again since the hub restarted; in a
requestor's open requests, a request that waits for such a lease."""


@dataclass(slots=True)
class Pending:
    """A request the hub sent to a provider and awaits the reply to."""

    kind: Literal["create", "destroy", "exec", "upload", "download", "meter", "connect"]
    activity: str
    requestor: int | None
    r_id: int | None
    deadline: float = math.inf  # a create or destroy not answered by then: the provider is stuck
    asked: float = 0.0  # a create: when its rent came (the monotonic clock), to time the rent
    routes: list[Route] = field(default_factory=list)  # its streams: at most one each way
    cancelled: bool = False
    # a create of a stored image: the image, the name the requestor gave it, the bytes sent and told
    stored: StoredImage | None = None
    image: str = ""
    total: int = 0
    sent: int = 0
    told: int = 0


@dataclass(slots=True)
class Lease:
    """An activity as the hub keeps it: whose it is, where it runs, the capacity it holds."""

    id: str
    requestor: int
    provider: int
    resources: Resources
    cached: bool = False
    group: str | None = None
    state: Literal["creating", "ready", "destroying", "absent"] = "creating"
    image: str | None = None  # the digest of a stored image it runs
    provider_name: str = ""
    requestor_name: str = ""
    credential: int | None = None  # the credential its requestor joined with
    named_image: str | None = None  # the image its rent named, when not the store's (not kept through a restart)
    started: float = 0.0  # when it became ready (the clock's time)
    max_duration: float | None = None  # seconds its rent may hold it: the hub ends it then (1.5)
    saved: bool = False  # written to the hub's state (once its requestor was told of it)
    parked: list[Exec | Upload | Download | Connect | Release] = field(default_factory=list)  # absent: waiting for it
    # what its container uses, as its provider last reported (1.6 usage; None: not reported yet):
    # CPU seconds in all, memory bytes now, and the cores it used between its last two reports
    cpu_seconds: float | None = None
    memory: int | None = None
    cpu_rate: float | None = None
    sampled: float = 0.0  # when the last report came (the monotonic clock)


@dataclass(slots=True)
class Peer:
    id: int
    role: Literal["requestor", "provider"] | None = None
    name: str = ""
    credential: Credential | None = None  # the credential it joined with, if any
    minor: int = 0  # the minor protocol version spoken with this peer
    price: Price | None = None  # provider: the price of its last offer (None: free)
    activities: set[str] = field(default_factory=set)
    # requestor: for each group of its rents, how many live leases it holds on each provider peer
    groups: dict[str, Counter[int]] = field(default_factory=dict)
    # requestor: its open request ids -> (provider peer, hub id) once forwarded
    open: dict[int, tuple[int, int]] = field(default_factory=dict)
    # provider: the hub's requests awaiting a reply, by hub id
    pending: dict[int, Pending] = field(default_factory=dict)
    # the streams this peer sends on, and those it receives on, by the id it knows them under
    # (a requestor's pushes among those it sends on)
    sends: dict[int, Route] = field(default_factory=dict)
    receives: dict[int, Route] = field(default_factory=dict)
    next_id: int = 1
    id_step: int = 1  # provider: its hub ids step by this much (kiln.hub.cluster.ID_STEP with several hubs)
    # provider: the hub that holds its connection, when not this one (several hubs: kiln.hub.cluster),
    # and which connection of it the link to that hub last reached (its hub's id and peer id)
    hub: str | None = None
    incarnation: str = ""
    running: list[str] = field(default_factory=list)  # provider: the activities its hello said it runs
    offer: Offer | None = None  # a provider of another hub: its offer as the database has it
    elsewhere: Resources = field(default_factory=lambda: NONE)  # provider: what other hubs hold of it
    # requestor: the sha256 of the resume secret its welcome carried (empty: none), and the
    # id of its session (kept by the connections that resume it)
    secret: bytes = b""
    session: str = ""
    saved: bool = False  # its session is in the hub's state
    refused: ErrorCode | None = None  # why its hello (or its credential) was refused

    def streams(self) -> int:
        """The requests of this peer's that hold a stream (either way, or both)."""
        return len(self.sends.keys() | self.receives.keys())

    def new_id(self) -> int:
        value = self.next_id
        self.next_id = value + self.id_step if value <= MAX_ID - self.id_step else value % self.id_step or self.id_step
        return value
