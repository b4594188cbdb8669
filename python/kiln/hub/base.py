"""What every part of the hub's core shares: what it knows, and how it writes its actions.

The core (:class:`~kiln.hub.core.HubCore`) is one object built in layers, each in a module
named for its concern, each using only the ones below it:

* :mod:`kiln.hub.base` (this module): the state (peers, activities, the market, the store's
  catalog, what the hub counted and saw: :mod:`kiln.hub.tallies`, :mod:`kiln.hub.journal`,
  :mod:`kiln.hub.jobs`), the outbox of actions and the helpers that fill it;
* :mod:`kiln.hub.leases`: renting, the market and activities listed, destroying;
* :mod:`kiln.hub.relay`: requests and their replies relayed under translated ids, stream frames
  within credit (:mod:`kiln.hub.flow`), what a provider's departure ends;
* :mod:`kiln.hub.metering`: priced activities metered and charged (:mod:`kiln.hub.ledger`), ended
  at their ``max_duration``; the ``balance``, ``ledger`` and ``verdict`` requests;
* :mod:`kiln.hub.store_link`: the image store's requests, pushes and blobs served to providers;
* :mod:`kiln.hub.ports`: published ports (1.7), and the connects the hub opens itself to carry them;
* :mod:`kiln.hub.sessions`: hello and welcome, resuming a session, the hub's restart;
* :mod:`kiln.hub.core`: the entry points the I/O layer calls, and dispatch.

Alongside, not layers: :mod:`kiln.hub.flow` (one flow-control mechanism for every stream) and
:mod:`kiln.hub.deadlines` (when the hub gives up waiting).
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Final, Literal, TypeVar

import orjson
from pydantic import BaseModel

from kiln.hub.access import Credentials
from kiln.hub.actions import Action, Close, Log, Send, Withdrawn
from kiln.hub.catalog import Catalog
from kiln.hub.cluster import ID_STEP, Cluster
from kiln.hub.deadlines import Deadlines
from kiln.hub.flow import Flow
from kiln.hub.jobs import Jobs
from kiln.hub.journal import Journal, Kind
from kiln.hub.ledger import HUB, Ended, Ledger, Post
from kiln.hub.market import Market
from kiln.hub.peers import Lease, Peer
from kiln.hub.publications import Publications
from kiln.hub.records import EndLease, SessionRecord
from kiln.hub.reputation import Reputation
from kiln.hub.tallies import Tallies
from kiln.protocol.codes import CLOSE_HANDSHAKE, ErrorCode
from kiln.protocol.errors import RemoteProtocolError
from kiln.protocol.messages import Cost, Error, Limits, Message, clip, serialize

M = TypeVar("M", bound=BaseModel)

GRACE: Final = 60.0
"""Seconds a requestor's activities outlive its connection, waiting for it to come back (``hello.resume``)."""
CREATE_TIMEOUT: Final = 120.0
"""Seconds a provider may take to answer a ``create`` (counted afresh whenever its image moves)."""
DESTROY_TIMEOUT: Final = 60.0
"""Seconds a provider may take to answer a ``destroy``."""
CREDIT_TIMEOUT: Final = 120.0
"""Seconds a provider may leave a requestor's stream toward it (an upload, an exec's stdin) without credit."""
MAX_ACTIVITIES: Final = 1024
"""Activities one requestor connection may hold at once (being created, running or being released)."""
PER_CREDENTIAL: Final = 64
"""Connections one credential may hold at once (a provider credential holds one: its name's)."""
PROGRESS_BYTES: Final = 4 * 2**20
"""A rent's requestor hears how its image loads at least every this many bytes sent."""
LOST_NAMED: Final = 5
"""Activities a requestor lost at once that the event of their loss names (it counts them all)."""


class CoreBase:
    """The state every layer of the core reads and changes (set up by :class:`~kiln.hub.core.HubCore`)."""

    token: str | None
    """The shared token (``kiln hub --token``): admits any role under any free, unbound name."""
    credentials: Credentials | None
    """The credential store, asked at every hello (see :mod:`kiln.hub.access`)."""
    cluster: Cluster | None
    """The hubs sharing this hub's database, if any (:mod:`kiln.hub.cluster`)."""
    slot: int
    """This hub's slot among the hubs of its database (1 to 63; 0: a hub alone): see :meth:`number`."""
    software: str
    limits: Limits
    catalog: Catalog
    """The image store's contents (its files are the I/O layer's)."""
    market: Market
    ledger: Ledger
    """The meters of priced activities (:mod:`kiln.hub.ledger`): in use only with accounts and credentials."""
    reputation: Reputation
    """What the hub observed of each provider (the market's, for its strategies): the hooks are called
    where the core sees an observation."""
    tallies: Tallies
    """What the hub counted since it started (its metrics): rents and their latency, commands,
    bytes relayed, refusals, joins, pushes and pulls, credits captured, activities lost."""
    journal: Journal
    """The latest joins, leaves, losses, refusals and revocations, as a feed."""
    jobs: Jobs
    """The latest jobs (a session's rents under one group) and their tasks' attempts (1.6 ``task``)."""
    _joined: dict[int, float]  # a provider's peer id -> when its hello was accepted (monotonic)
    flow: Flow
    deadlines: Deadlines
    create_timeout: float
    destroy_timeout: float
    max_activities: int
    grace: float
    per_credential: int
    peers: dict[int, Peer]
    providers: dict[str, int]  # a connected provider's name -> its peer id
    activities: dict[str, Lease]
    _per_credential: Counter[int]  # a credential's id -> its welcomed peers
    _new_activity_id: Callable[[], str]
    _clock: Callable[[], float]
    _monotonic: Callable[[], float]
    _out: list[Action]
    _sessions: dict[bytes, int]  # sha256 of a resume secret -> its requestor's peer id
    _held: dict[int, tuple[Peer, float]]  # requestors gone, until their grace period ends
    _held_ids: int  # the last (negative) id given to a session held with no connection
    _absent: dict[str, set[str]]  # since a restart: provider name -> its leases not yet reported
    _absent_until: float
    published: Publications
    """(1.7) The ports published for browsers, by token."""
    publish_base: str | None
    """(1.7) Where the publish listener serves (``scheme://host:port``; None: no listener, nothing published)."""
    _ports: dict[int, tuple[int, int]]  # the publish listener's connection -> (provider peer, hub id) of its connect
    _expiring: dict[str, float]  # activity -> when its rent's max_duration is reached (the clock's time)
    _expiry: list[tuple[float, str]]  # (when, activity): a heap of _expiring's deadlines (stale ones skipped)

    # --- output ---------------------------------------------------------------------------

    def _log(self, level: Literal["info", "warning"], text: str) -> None:
        self._out.append(Log(level, text))

    def _send(self, peer: int, message: Message, update: Mapping[str, int | str] | None = None) -> None:
        """Send ``message`` to ``peer`` (with ``update``'s fields in place of its own: see :func:`serialize`)."""
        self._out.append(Send(peer, serialize(message, update)))

    def _send_binary(self, peer: int, data: bytes) -> None:
        self.flow.queue(peer, len(data))
        self._out.append(Send(peer, data, binary=True))

    def _fitting(self, entries: Iterable[M]) -> list[M]:
        """The first of ``entries`` that one reply can hold (within ``max_message_bytes``, with room
        for the rest of the reply): a listing's ``matched`` tells how many were left out."""
        room = self.limits.max_message_bytes - 256
        fitting: list[M] = []
        for entry in entries:
            room -= len(orjson.dumps(entry.model_dump(mode="json", exclude_none=True))) + 1
            if room < 0:
                break
            fitting.append(entry)
        return fitting

    def _error(self, p: Peer, re: int | None, code: ErrorCode, message: str) -> None:
        # The text may quote what the peer sent: clipped, so the reply can always be built.
        self._send(p.id, Error(type="error", re=re, code=code, message=clip(message)))

    def _violation(self, p: Peer, e: RemoteProtocolError) -> None:
        """Answer a frame that broke the protocol; before the handshake, also close."""
        if p.role is None:
            self._refuse(p, e.code, e.message, CLOSE_HANDSHAKE, re=e.re)
        else:
            self._error(p, e.re, e.code, e.message)

    def _uncount(self, p: Peer) -> None:
        if p.role is not None and p.credential is not None:
            self._per_credential[p.credential.id] -= 1
            if self._per_credential[p.credential.id] <= 0:
                del self._per_credential[p.credential.id]

    def _refuse(
        self,
        p: Peer,
        code: ErrorCode,
        text: str,
        close: int,
        re: int | None = None,
        claimed: tuple[Literal["requestor", "provider"], str] | None = None,
    ) -> None:
        """Turn away a peer (not yet welcomed, or whose credential was revoked): an error, a close, a log
        line, and the event (``claimed``: the role and name its hello gave, if it got that far)."""
        p.refused = code
        self._error(p, re, code, text)
        self._out.append(Close(p.id, close, code.value))
        self._log("warning", f"peer {p.id} refused ({code.value}): {shown(text)}")
        if p.role is None:
            self.tallies.refused[code.value] += 1
            role, name = claimed or (None, "")
            self._note("refusal", role, name, f"{code.value}: {text}")
        else:
            self._note("revocation", p.role, p.name, text, credential_id(p))

    def _rent_answered(self, result: str | None, since: float) -> None:
        """A rent that came at ``since`` (the monotonic clock) is answered: ``rented`` (``None``) or the
        error code ``result``."""
        self.tallies.rent("ok" if result is None else result, self._monotonic() - since)

    def _lost(self, leases: list[Lease], how: str) -> None:
        """``leases``, all one requestor's, are lost (``how``: with what, or why): counted, and one event."""
        self.tallies.lost += len(leases)
        first = leases[0]
        named = ", ".join(lease.id for lease in leases[:LOST_NAMED]) + ("…" if len(leases) > LOST_NAMED else "")
        detail = f"{len(leases)} activit{'y' if len(leases) == 1 else 'ies'} lost {how}: {named}"
        self._note("loss", "requestor", first.requestor_name, detail, first.credential)

    def _note(
        self,
        kind: Kind,
        role: Literal["requestor", "provider"] | None,
        name: str,
        detail: str,
        credential: int | None = None,
    ) -> None:
        """Add an event to the journal, at the clock's time now."""
        self.journal.add(self._clock(), kind, role, name, detail, credential)

    def _post(self, post: Post) -> None:
        """Write a movement of the ledger; a capture is counted (to providers, to the hub, to its job)."""
        self._out.append(post)
        if post.kind != "capture":
            return
        amount = 0
        for account, value in post.entries:
            if value > 0:
                amount += value
                if account == HUB:
                    self.tallies.fees += value
                else:
                    self.tallies.captured += value
        if post.session is not None and post.group is not None:
            self.jobs.charged(post.session, post.group, amount)

    def _flush(self) -> list[Action]:
        self.ledger.flushed()  # what it held is written before the next balance is asked
        out = list(self._out)
        self._out.clear()  # the same list: the flow's emit appends to it
        return out

    def _ended(self, lease: Lease, cpu_seconds: float | None) -> None:
        """The lease is over: its final capture and the release of its hold (if priced), then its
        record goes (and its usage is appended); its published ports are withdrawn."""
        self._expiring.pop(lease.id, None)
        self._used(lease, None, None)
        for token in self.published.of_activity(lease.id):  # its published ports go with it
            self.published.remove(token)
            self._out.append(Withdrawn(token))
        posts, cost = self.ledger.close(lease.id, self._clock(), cpu_seconds)
        for post in posts:
            self._post(post)
        if cost is not None:
            self._tell_cost(lease, cost)
        owner = self.peers.get(lease.requestor) or self._held.get(lease.requestor, (None, 0.0))[0]
        if owner is not None and lease.state != "creating":
            self.ledger.remember(lease.id, Ended(owner.session, lease.credential, lease.provider_name))
        if lease.saved:
            lease.saved = False
            self._out.append(EndLease(lease.id, self._clock(), cpu_seconds))
        elif self.cluster is not None:
            self.cluster.unreserve(lease.id)  # it never became a lease

    def number(self, p: Peer) -> None:
        """Give provider ``p`` this hub's ids: from its slot, in steps of :data:`~kiln.hub.cluster.ID_STEP`."""
        if self.slot:
            p.next_id, p.id_step = self.slot, ID_STEP

    def _used(self, lease: Lease, cpu_rate: float | None, memory: int | None) -> None:
        """What ``lease``'s container uses now (``None``: unknown, or it ended), in its fields and the totals."""
        tallies = self.tallies
        tallies.used_cpus = max(tallies.used_cpus - (lease.cpu_rate or 0.0) + (cpu_rate or 0.0), 0.0)
        tallies.used_memory += (memory or 0) - (lease.memory or 0)
        if not self.activities:
            tallies.used_cpus = 0.0  # no drift of the float sum survives the last activity
        lease.cpu_rate, lease.memory = cpu_rate, memory

    def _expire_at(self, activity: str, until: float) -> None:
        """``activity`` is ended at ``until`` (its rent's ``max_duration``; the clock's time)."""
        self._expiring[activity] = until
        heapq.heappush(self._expiry, (until, activity))

    def _charge(self, lease: Lease, cpu_seconds: float | None) -> None:
        """Capture what the priced ``lease`` owes by now (``cpu_seconds``: what its provider just
        reported; ``None``: the last known) and, if anything became due, tell what it owes."""
        meter = self.ledger.meters.get(lease.id)
        if meter is None:
            return
        post, cost = self.ledger.capture(meter, self._clock(), cpu_seconds)
        if post is not None:
            self._post(post)
            if cost is not None:
                self._tell_cost(lease, cost)

    def _tell_cost(self, lease: Lease, cost: Cost) -> None:
        """Tell the lease's requestor and provider (those here and speaking 1.5) what it owes so far."""
        for peer in (lease.requestor, lease.provider):
            q = self.peers.get(peer)
            if q is not None and q.minor >= 5:
                self._send(q.id, cost)

    def _session_record(self, p: Peer) -> SessionRecord:
        p.saved = True
        return SessionRecord(p.session, p.name, credential_id(p), p.secret)

    def _leases(self, p: Peer) -> list[Lease]:
        """The activities requestor ``p`` still holds (some may have ended while it was away)."""
        found = (self.activities.get(activity_id) for activity_id in sorted(p.activities))
        return [lease for lease in found if lease is not None and lease.requestor == p.id]


def credential_id(p: Peer) -> int | None:
    return p.credential.id if p.credential is not None else None


def secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def shown(text: str, limit: int = 200) -> str:
    """A peer's text as a log line may carry it: quoted (newlines and escapes made visible) and clipped."""
    return repr(text if len(text) <= limit else text[:limit] + "…")
