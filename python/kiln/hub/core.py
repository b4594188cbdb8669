"""The hub's whole logic as a state machine with no I/O: frames in, actions out.

Rules that everything affecting the hub's state must follow live here:

* A peer speaks only after ``hello``/``welcome``; the first frame must be ``hello``.
* A requestor sends ``rent``, ``release``, ``market``, ``activities``, ``exec``, ``upload``,
  ``download``, ``credit``, ``cancel`` and upload stream frames. A provider sends ``offer``,
  ``credit``, replies to the hub's requests and download stream frames. Anything else is
  ``out_of_order``.
* Every request a requestor makes on an activity is forwarded to the activity's provider
  under a fresh id of the hub's; the reply comes back under the requestor's id. A peer can
  only name what it owns: another requestor's activity is ``unknown_activity``, a reply to
  a request the hub did not send to *this* provider is ``out_of_order``. A requestor that
  joined with an admin credential may *list* every activity (``activities`` with ``all``),
  but touches only its own, as any other.
* A stream's data frames are relayed only within the credit its receiver granted, and that
  credit is passed on to senders only while all the stream data toward the receiver fits
  in half the buffer the I/O layer keeps for it: a slow receiver slows its own streams.
* Capacity is reserved when a provider is chosen and released when its container is
  destroyed or its provider is gone.
* A requestor whose connection ends keeps its activities for ``grace`` seconds (its open
  requests are cancelled, its streams aborted): a ``hello`` carrying the ``resume`` secret
  of its last ``welcome`` takes them over under the new peer id. Past the grace period
  (:meth:`HubCore.expire`) they are destroyed. The secret is single-use; the hub keeps only
  its sha256.
* What a restart must not lose is written before the peer that relies on it is told
  (:mod:`kiln.hub.records`: a :class:`~kiln.hub.records.Change` among the actions, ahead
  of the message). :meth:`HubCore.restore` takes it back at start: each session is held
  as if its requestor had just left, and each of its leases is *absent* until its
  provider dials again and reports it in ``hello.activities`` (1.3). Requests on an absent
  activity wait (within the requestor's ``max_pending``) and go on once it is back; a
  provider reporting an activity the hub does not hold for it is told to destroy it; one
  that does not report an absent activity, or does not come back within the grace
  period, loses it (``activity_lost``).
* The image store's bytes are not the core's: a requestor's ``push_image``, ``list_images``,
  ``remove_image`` and ``share_image``, and the data of its pushes, go to the store (:class:`StoreRequest`,
  :class:`PushFrame`), which answers through :meth:`HubCore.store_reply` and grants credit
  through :meth:`HubCore.store_grant`. A provider's ``want`` for a ``create`` of a stored
  image starts the store sending blobs (:class:`ServeBlobs`) on the create's stream, within
  the credit the provider grants (:class:`ServeCredit`), through :meth:`HubCore.serve_data`.
* Stored images belong to tenants (:mod:`kiln.hub.catalog`): a ``rent`` or ``market`` names an
  image as its requestor's tenant sees the store. A digest the tenant may not see is as if
  the store lacked it: a rent of a digest goes only to the store or to a provider that offers
  that digest itself, and the digest of a stored image nobody let the tenant see matches, and
  shows in the listed images of, only providers of 1.4 (whose ``images`` are their operators'
  own; a provider of 1.3 lists there copies the store sent it).

Use: the I/O layer calls :meth:`HubCore.connect` for a new connection, then
:meth:`HubCore.receive_text` / :meth:`HubCore.receive_binary` for every frame,
:meth:`HubCore.delivered` once a binary frame toward a peer is written, and
:meth:`HubCore.disconnect` when it ends. Each returns a list of :data:`Action` to carry
out in order: send a frame to a peer, close a peer, or log a line.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import secrets
import time
from collections import Counter
from collections.abc import Callable
from typing import Final, Literal

import orjson

from kiln.hub.access import Admitted, Credential, Credentials, admit
from kiln.hub.actions import (
    Action,
    Close,
    Log,
    PushCancelled,
    PushFrame,
    Send,
    ServeBlobs,
    ServeCredit,
    ServeStop,
    StoreRequest,
)
from kiln.hub.catalog import Catalog, Tenant, is_digest
from kiln.hub.market import Market, granted
from kiln.hub.peers import ABSENT, HUB, Lease, Peer, Pending, Route
from kiln.hub.records import (
    Destroying,
    EndLease,
    EndSession,
    LeaseRecord,
    SaveLease,
    SaveSession,
    SessionRecord,
)
from kiln.protocol import frames, limits
from kiln.protocol.codes import (
    CLOSE_HANDSHAKE,
    CLOSE_NAME_TAKEN,
    CLOSE_RESUMED,
    CLOSE_TOO_MANY,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNRESPONSIVE,
    CLOSE_UNSUPPORTED_VERSION,
    ErrorCode,
)
from kiln.protocol.errors import NoMatch, RemoteProtocolError, UsageError
from kiln.protocol.frames import FrameKind
from kiln.protocol.messages import (
    MAJOR_VERSION,
    MAX_TEXT,
    MINOR_VERSION,
    PROTOCOL_VERSION,
    ActivitiesQuery,
    ActivityInfo,
    ActivityList,
    ActivityLost,
    Cancel,
    Create,
    Credit,
    Destroy,
    Done,
    Download,
    DownloadInfo,
    Error,
    Exec,
    ExecResult,
    Hello,
    ImageInfo,
    ImageList,
    ImagePushed,
    Limits,
    ListImages,
    MarketInfo,
    MarketQuery,
    Message,
    Offer,
    PushImage,
    Release,
    RemoveImage,
    Rent,
    Rented,
    RentProgress,
    Resources,
    ShareImage,
    Upload,
    Want,
    Welcome,
    clip,
    parse,
    serialize,
)

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

HEAP_FLOOR: Final = 1024
"""Entries the heaps of deadlines and stalls may hold before stale ones are swept (at twice the live ones)."""
PROGRESS_BYTES: Final = 4 * 2**20
"""A rent's requestor hears how its image loads at least every this many bytes sent."""


REQUESTOR_SENDS = frozenset(
    {"rent", "release", "market", "activities", "exec", "upload", "download", "credit", "cancel"}
    | {"push_image", "list_images", "remove_image", "share_image"}
)
PROVIDER_SENDS = frozenset({"offer", "credit", "done", "error", "exec_result", "download_info", "want"})


class HubCore:
    """Everything the hub knows: peers, the market, activities and streams in flight."""

    def __init__(
        self,
        *,
        token: str | None = None,
        credentials: Credentials | None = None,
        software: str = "kiln-hub",
        limits_: Limits | None = None,
        buffer_bytes: int = limits.OUTBOX_BYTES,
        new_activity_id: Callable[[], str] = lambda: secrets.token_hex(8),
        catalog: Catalog | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        create_timeout: float = CREATE_TIMEOUT,
        destroy_timeout: float = DESTROY_TIMEOUT,
        max_activities: int = MAX_ACTIVITIES,
        grace: float = GRACE,
        credit_timeout: float = CREDIT_TIMEOUT,
        per_credential: int = PER_CREDENTIAL,
    ) -> None:
        if token == "":
            raise UsageError("an empty token would admit anyone: give a token, or none for an open hub")
        if create_timeout <= 0 or destroy_timeout <= 0 or credit_timeout <= 0 or max_activities < 1:
            raise UsageError("the create, destroy and credit timeouts must be positive, and max_activities at least 1")
        if per_credential < 1:
            raise UsageError("the connections per credential must be at least 1")
        self.per_credential = per_credential
        self._per_credential: Counter[int] = Counter()  # a credential's id -> its welcomed peers
        self.token = token
        """The shared token (``kiln hub --token``): admits any role under any free, unbound name."""
        self.credentials = credentials
        """The credential store, asked at every hello (see :mod:`kiln.hub.access`)."""
        self.software = software
        self.limits = limits_ or Limits(
            max_message_bytes=limits.MAX_MESSAGE_BYTES,
            max_frame_bytes=limits.MAX_FRAME_BYTES,
            chunk_bytes=limits.CHUNK_BYTES,
            max_window=limits.MAX_WINDOW,
            max_pending=limits.MAX_PENDING,
            max_streams=limits.MAX_STREAMS,
            max_output_bytes=limits.MAX_OUTPUT_BYTES,
        )
        self._budget = buffer_bytes // 2
        """Stream bytes the hub lets be in flight toward one receiver (half its buffer: room for messages)."""
        self.catalog = catalog or Catalog(0)
        """The image store's contents (its files are the I/O layer's)."""
        self.market = Market(self.catalog)
        self._clock = clock
        self._monotonic = monotonic
        self.create_timeout = create_timeout
        self.destroy_timeout = destroy_timeout
        self.max_activities = max_activities
        self.peers: dict[int, Peer] = {}
        self.providers: dict[str, int] = {}  # a connected provider's name -> its peer id
        self.activities: dict[str, Lease] = {}
        self._new_activity_id = new_activity_id
        self._out: list[Action] = []
        if not 0 <= grace < math.inf:
            raise UsageError("the grace period must be 0 (none) or a number of seconds")
        self.grace = grace
        self._sessions: dict[bytes, int] = {}  # sha256 of a resume secret -> its requestor's peer id
        self._held: dict[int, tuple[Peer, float]] = {}  # requestors gone, until their grace period ends
        self._deadlines: list[tuple[float, int, int]] = []  # heap: (deadline, provider peer, hub id)
        self.credit_timeout = credit_timeout
        self._stalls: list[tuple[float, int, Route]] = []  # heap: (deadline, tie-breaker, stream toward a provider)
        self._stall_order = itertools.count()
        self._heap_floor = HEAP_FLOOR
        self._absent: dict[str, set[str]] = {}  # since a restart: provider name -> its leases not yet reported
        self._absent_until = 0.0

    # --- entry points --------------------------------------------------------------

    def connect(self, peer: int) -> None:
        self.peers[peer] = Peer(id=peer)

    def restore(self, sessions: list[SessionRecord], leases: list[LeaseRecord]) -> list[Action]:
        """Take back what the last run of the hub wrote down (:meth:`kiln.hub.state.HubState.load`).

        Call once, before any peer connects. Each session is held for the grace period, as if
        its requestor had just left; its leases are absent until their providers report them.
        """
        now = self._monotonic()
        self._absent_until = now + self.grace
        held: dict[str, Peer] = {}
        for number, record in enumerate(sessions, start=2):
            credential = None if record.credential is None else Credential(record.credential, "requestor", None)
            old = Peer(id=-number, role="requestor", name=record.name, credential=credential, minor=MINOR_VERSION,
                       secret=record.secret, session=record.id, saved=True)  # fmt: skip
            held[record.id] = old
            self._held[old.id] = (old, self._absent_until)
            self._sessions[old.secret] = old.id
        for lr in leases:
            owner = held.get(lr.session)
            if owner is None:
                continue
            lease = Lease(lr.id, owner.id, ABSENT, lr.resources, group=lr.group, state="absent", image=lr.image,
                          provider_name=lr.provider, requestor_name=owner.name, credential=_credential_id(owner),
                          started=lr.started, saved=True)  # fmt: skip
            self.activities[lease.id] = lease
            owner.activities.add(lease.id)
            self._absent.setdefault(lr.provider, set()).add(lease.id)
            if lease.image is not None:
                self.catalog.use(lease.image, self._clock())
        if sessions:
            self._log("info", f"restored {len(held)} sessions holding {len(self.activities)} activities on "
                              f"{len(self._absent)} providers; waiting {self.grace:g} s for them")  # fmt: skip
        return self._flush()

    def receive_text(self, peer: int, data: bytes | str) -> list[Action]:
        """Take one text frame from ``peer``."""
        p = self.peers.get(peer)
        if p is None or p.refused is not None:
            return []  # a peer turned away is closing: nothing more of it is taken
        if len(data) > self.limits.max_message_bytes:
            self._error(
                p,
                None,
                ErrorCode.MESSAGE_TOO_LARGE,
                f"message of {len(data)} bytes exceeds the limit of {self.limits.max_message_bytes}",
            )
            return self._flush()
        try:
            message = parse(data)
        except RemoteProtocolError as e:
            self._violation(p, e)
            return self._flush()
        if p.role is None:
            self._handshake(p, message)
        elif p.role == "requestor":
            self._from_requestor(p, message)
        else:
            self._from_provider(p, message)
        return self._flush()

    def receive_binary(self, peer: int, data: bytes) -> list[Action]:
        """Take one binary (stream) frame from ``peer``."""
        p = self.peers.get(peer)
        if p is None or p.refused is not None:
            return []
        try:
            if p.role is None:
                raise RemoteProtocolError("binary frame before hello", ErrorCode.OUT_OF_ORDER)
            frame = frames.decode(data, self.limits.chunk_bytes)
        except RemoteProtocolError as e:
            self._violation(p, e)
            return self._flush()
        if p.role == "requestor" and frame.stream in p.pushes:
            self._push_frame(p, frame.stream, frame.kind, frame.payload)
            return self._flush()
        route = p.sends.get(frame.stream)
        # A requestor's stream id is its request id, so the error can name it; a provider's is
        # the hub's, which the provider cannot match against its own requests.
        re = frame.stream if p.role == "requestor" else None
        if route is None or route.ended:
            self._error(p, re, ErrorCode.UNKNOWN_STREAM, f"no open stream {frame.stream} to send on")
            return self._flush()
        to_requestor = p.role == "provider"
        target, target_id = (route.requestor, route.r_id) if to_requestor else (route.provider, route.p_id)
        if frame.kind is FrameKind.DATA:
            if route.credit <= 0:
                self._error(
                    p,
                    re,
                    ErrorCode.FLOW_CONTROL,
                    f"DATA frame on stream {frame.stream} without credit; the stream is aborted",
                )
                self._close_route(route)
                self._send_binary(target, frames.encode(FrameKind.ABORT, target_id, b"sender broke flow control"))
                return self._flush()
            route.credit -= 1
            self.peers[target].inbound -= 1  # the target is here: a route ends when either side goes
            if route.credit == 0 and route.upload:
                self._stall(route)
        else:
            route.ended = True
            route.last = frame.kind
        if target == ABSENT:
            return self._flush()  # a request waiting for its provider: END or ABORT is told when it goes on
        self._send_binary(target, frames.with_stream(data, target_id))
        return self._flush()

    def expire(self) -> list[Action]:
        """Drop every provider that left a ``create`` or ``destroy`` unanswered past its deadline.

        Call about once a second. A stuck provider (its Docker hung, its process stopped)
        would otherwise hold a rent, and the capacity reserved for it, forever: it is
        closed (4006) and handled as lost, so its requestors hear ``provider_lost`` and
        its capacity leaves the market.
        """
        now = self._monotonic()
        for old in [old for old, until in self._held.values() if until <= now]:
            del self._held[old.id]
            self._sessions.pop(old.secret, None)
            leases = self._leases(old)
            self._log("info", f"requestor {shown(old.name)} did not come back within {self.grace:g} s; "
                              f"destroying {len(leases)} activities")  # fmt: skip
            self._destroy_ready(leases)
            if old.saved:
                self._out.append(EndSession(old.session))
        if self._absent and self._absent_until <= now:
            for name, absent in sorted(self._absent.items()):
                why = f"provider {name!r} did not come back within {self.grace:g} s of the hub's restart"
                self._log("warning", f"{why}; {len(absent)} activities lost")
                for activity_id in sorted(absent):
                    if (lease := self.activities.get(activity_id)) is not None:
                        self._lose(lease, why)
            self._absent.clear()
        self._starved(now)
        self._compact()
        # Only what is due is looked at: a heap of deadlines, each checked against its pending
        # request (answered: dropped; pushed back by progress: put back at its new deadline).
        while self._deadlines and self._deadlines[0][0] < now:
            _, peer, hub_id = heapq.heappop(self._deadlines)
            p = self.peers.get(peer)
            late = p.pending.get(hub_id) if p is not None else None
            if p is None or late is None or late.deadline == math.inf:
                continue
            if late.deadline >= now:
                heapq.heappush(self._deadlines, (late.deadline, peer, hub_id))
                continue
            waited = self.create_timeout if late.kind == "create" else self.destroy_timeout
            reason = f"it left a {late.kind} of activity {late.activity} unanswered for {waited:g} s"
            self._out.append(Close(p.id, CLOSE_UNRESPONSIVE, f"unresponsive: {reason}"))
            gone = self.disconnect(p.id, reason)  # flushes: what was queued (the Close first) comes back
            self._out += gone
        return self._flush()

    def _compact(self) -> None:
        """Rebuild the heaps of deadlines and stalls once they hold mostly entries for what is
        gone (answered requests, departed peers, ended streams): a peer that comes and goes
        cannot make them grow without bound."""
        rebuilt = False
        if len(self._deadlines) > 2 * self._heap_floor:
            rebuilt = True
            self._deadlines = [(pending.deadline, q.id, hub_id) for q in self.peers.values()
                               for hub_id, pending in q.pending.items() if pending.deadline < math.inf]  # fmt: skip
            heapq.heapify(self._deadlines)
        if len(self._stalls) > 2 * self._heap_floor:
            rebuilt = True
            for _, _, route in self._stalls:
                route.watched = False
            self._stalls = []
            for q in self.peers.values():
                for route in q.receives.values():
                    if route.upload and route.requestor != HUB and not route.ended and route.stalled < math.inf:
                        self._stall(route, since=route.stalled)
        if rebuilt:  # the floor follows what is live: measured on stale entries, it would only ever rise
            self._heap_floor = max(HEAP_FLOOR, len(self._deadlines), len(self._stalls))

    def _stall(self, route: Route, since: float | None = None) -> None:
        """The sender of ``route`` (toward a provider) has no credit left: the provider owes it some."""
        route.stalled = self._monotonic() if since is None else since
        if not route.watched:
            route.watched = True
            heapq.heappush(self._stalls, (route.stalled + self.credit_timeout, next(self._stall_order), route))

    def _starved(self, now: float) -> None:
        """Abort each stream toward a provider that granted it no credit for ``credit_timeout``.

        Its request fails at once for the requestor (``transfer_failed``); the provider gets
        ABORT and a ``cancel`` (its task may wait on something else of the container's), and
        its late reply is dropped. Only that request ends: the provider, and everyone else's
        activities on it, go on.
        """
        while self._stalls and self._stalls[0][0] <= now:
            _, _, route = heapq.heappop(self._stalls)
            if route.ended or route.stalled == math.inf:
                route.watched = False
                continue
            if route.stalled + self.credit_timeout > now:
                heapq.heappush(self._stalls, (route.stalled + self.credit_timeout, next(self._stall_order), route))
                continue
            route.watched = False
            q = self.peers.get(route.provider)
            if q is None:
                continue
            why = f"no credit for {self.credit_timeout:g} s"
            self._log("warning", f"provider {shown(q.name)} left stream {route.p_id} without credit: aborted ({why})")
            self._send_binary(q.id, frames.encode(FrameKind.ABORT, route.p_id, why.encode()))
            self._send(q.id, Cancel(type="cancel", target=route.p_id))
            pending = q.pending.get(route.p_id)
            if pending is None:
                self._close_route(route)
                continue
            for each in pending.routes:
                self._end_route(each)
            pending.routes = []
            text = f"provider {q.name!r} granted the stream no credit for {self.credit_timeout:g} s: aborted"
            self._fail_requestor(pending, ErrorCode.TRANSFER_FAILED, text)
            requestor = self.peers.get(pending.requestor) if pending.requestor is not None else None
            if requestor is not None and pending.r_id is not None:
                requestor.open.pop(pending.r_id, None)
            pending.requestor = pending.r_id = None  # its late reply goes to no one

    def _due(self, pending: Pending, peer: int, hub_id: int, seconds: float) -> None:
        """Provider ``peer`` must answer ``pending`` within ``seconds`` (see :meth:`expire`)."""
        pending.deadline = self._monotonic() + seconds
        heapq.heappush(self._deadlines, (pending.deadline, peer, hub_id))

    def disconnect(self, peer: int, reason: str, *, ended: bool = False, leaving: bool = False) -> list[Action]:
        """The connection of ``peer`` is gone: clean up everything it held.

        ``ended``: the peer closed it itself (close code 1000), so a requestor's session ends
        with it; otherwise its activities are held for the grace period. ``leaving``: the
        peer said it goes away on purpose (1000 or 1001, e.g. a provider stopped with
        SIGTERM), which is logged as news, not as a warning.
        """
        p = self.peers.pop(peer, None)
        if p is None:
            return []
        self._uncount(p)
        if p.role == "provider":
            del self.providers[p.name]
            self._provider_gone(p, reason, leaving=ended or leaving)
        elif p.role == "requestor":
            self._requestor_gone(p, ended=ended)
        return self._flush()

    # --- handshake -------------------------------------------------------------------

    def _handshake(self, p: Peer, message: Message) -> None:
        if not isinstance(message, Hello):
            self._refuse(p, ErrorCode.OUT_OF_ORDER, f"expected hello, got {message.type!r}", CLOSE_HANDSHAKE)
            return
        major = int(message.version.split(".")[0])
        if major != MAJOR_VERSION:
            text = f"this hub speaks protocol version {PROTOCOL_VERSION} (major {MAJOR_VERSION}), not {message.version}"
            self._refuse(p, ErrorCode.UNSUPPORTED_VERSION, text, CLOSE_UNSUPPORTED_VERSION)
            return
        verdict = admit(message, self.token, self.credentials)
        if not isinstance(verdict, Admitted):
            self._refuse(p, ErrorCode.UNAUTHORIZED, verdict.message, CLOSE_UNAUTHORIZED)
            return
        if message.role == "provider" and message.name in self.providers:
            text = f"a provider named {message.name!r} is already connected"
            self._refuse(p, ErrorCode.NAME_TAKEN, text, CLOSE_NAME_TAKEN)
            return
        if verdict.credential is not None and self._per_credential[verdict.credential.id] >= self.per_credential:
            text = f"credential {verdict.credential.id} holds {self.per_credential} connections already (the most)"
            self._refuse(p, ErrorCode.TOO_MANY, text, CLOSE_TOO_MANY)
            return
        p.role = message.role
        p.name = message.name
        p.credential = verdict.credential
        if p.credential is not None:
            self._per_credential[p.credential.id] += 1
        p.minor = min(MINOR_VERSION, int(message.version.split(".")[1]))
        if p.role == "provider":
            self.providers[p.name] = p.id
        resumable = p.role == "requestor" and p.minor >= 2
        resumed = self._resume(p, message.resume) if resumable and message.resume is not None else None
        if p.role == "requestor" and not p.session:
            p.session = secrets.token_hex(8)
        secret = secrets.token_urlsafe(24) if resumable and self.grace > 0 else None
        if secret is not None:
            p.secret = _digest(secret)
            self._sessions[p.secret] = p.id
            if p.saved:
                self._out.append(SaveSession(self._session_record(p)))  # before the welcome that carries it
        self._send(
            p.id,
            Welcome(
                type="welcome",
                version=f"{MAJOR_VERSION}.{p.minor}",
                session=f"{p.role[0]}{p.id}",
                software=self.software,
                limits=self.limits,
                resume=secret,
                grace=self.grace if secret is not None else None,
                resumed=resumed,
            ),
        )
        how = "" if p.credential is None else f" with {p.credential.role} credential {p.credential.id}"
        self._log("info", f"{p.role} {shown(p.name)} joined as peer {p.id}{how} ({shown(message.software)})")
        if p.role == "provider":
            self._reconcile(p, message.activities if p.minor >= 3 and message.activities is not None else [])

    def _reconcile(self, p: Peer, running: list[str]) -> None:
        """Provider ``p`` (dialling again) still runs ``running``: take back the leases the hub
        held for it since a restart, and have it destroy what nobody holds."""
        absent = self._absent.pop(p.name, set())
        kept = 0
        for activity_id in dict.fromkeys(running):
            lease = self.activities.get(activity_id)
            if lease is None or activity_id not in absent:
                # Nobody was told of it, or its lease ended while the hub was away: not to be kept.
                self._send_destroy(p, activity_id, None, None)
                continue
            absent.discard(activity_id)
            kept += 1
            lease.provider = p.id
            lease.state = "ready"
            p.activities.add(lease.id)
            owner = self.peers.get(lease.requestor)
            if owner is None and lease.requestor in self._held:
                owner = self._held[lease.requestor][0]
            if owner is not None and lease.group is not None:
                owner.groups.setdefault(lease.group, Counter())[p.id] += 1
            parked, lease.parked = lease.parked, []
            for message in parked:
                self._unpark(lease, message)
        why = f"provider {p.name!r} came back without it"
        for activity_id in sorted(absent):
            if (lease := self.activities.get(activity_id)) is not None:
                self._lose(lease, why)
        if kept or absent:
            self._log("info", f"provider {shown(p.name)} is back: {kept} activities kept, {len(absent)} lost")

    def _unpark(self, lease: Lease, message: Exec | Upload | Download | Release) -> None:
        """Send on a request that waited for ``lease`` to be back (its requestor may have left since)."""
        owner = self.peers.get(lease.requestor)
        if owner is None or owner.open.get(message.id) != (ABSENT, 0):
            return
        del owner.open[message.id]
        held = self._held_stream(owner, message.id)
        if lease.state != "ready":  # released by an earlier request that waited
            self._error(owner, message.id, ErrorCode.UNKNOWN_ACTIVITY, f"no activity {lease.id!r} of yours is ready")
        elif isinstance(message, Release):
            self._destroy(lease, owner.id, message.id)
        elif held is not None and held.ended and held.last is not FrameKind.END:
            self._error(owner, message.id, ErrorCode.CANCELLED, "the stream was aborted before the request went on")
        else:
            self._forward(owner, lease, message)
            route = owner.sends.get(message.id)
            if held is not None and held.last is FrameKind.END and route is not None:
                route.ended = True  # it ended before the provider was back: tell it now
                self._send_binary(route.provider, frames.encode(FrameKind.END, route.p_id, b""))

    def _held_stream(self, p: Peer, request: int) -> Route | None:
        """Take back the stream ``p`` opened for a request that waited for an absent lease."""
        route = p.sends.get(request)
        if route is None or route.provider != ABSENT:
            return None
        del p.sends[request]
        return route

    def _lose(self, lease: Lease, why: str) -> None:
        """An absent lease will not come back: forget it, and tell its requestor (if here) and what waited."""
        self._drop_activity(lease)
        owner = self.peers.get(lease.requestor)
        if owner is None:
            return
        self._send(owner.id, ActivityLost(type="activity_lost", activity=lease.id, code=ErrorCode.PROVIDER_LOST,
                                          reason=clip(why)))  # fmt: skip
        for message in lease.parked:
            if owner.open.pop(message.id, None) is None:
                continue
            self._held_stream(owner, message.id)
            if isinstance(message, Release):
                self._send(owner.id, Done(type="done", re=message.id))  # the container is gone with it
            else:
                self._send(owner.id, Error(type="error", re=message.id, code=ErrorCode.PROVIDER_LOST,
                                           message=clip(why)))  # fmt: skip
        lease.parked.clear()

    def _ended(self, lease: Lease, cpu_seconds: float | None) -> None:
        """The lease is over: its record goes (and its usage is appended)."""
        if lease.saved:
            lease.saved = False
            self._out.append(EndLease(lease.id, self._clock(), cpu_seconds))

    def _session_record(self, p: Peer) -> SessionRecord:
        p.saved = True
        return SessionRecord(p.session, p.name, _credential_id(p), p.secret)

    def credentials_in_use(self) -> set[int]:
        """The ids of the credentials connected peers joined with (for :meth:`revoked`)."""
        return {p.credential.id for p in self.peers.values() if p.credential is not None}

    def revoked(self, ids: set[int]) -> list[Action]:
        """Credentials ``ids`` were revoked: each peer that joined with one gets ``unauthorized`` and is closed.

        Call :meth:`disconnect` for each once its connection has ended, as for any other.
        """
        for p in self.peers.values():
            if p.credential is not None and p.credential.id in ids:
                self._refuse(p, ErrorCode.UNAUTHORIZED, f"credential {p.credential.id} was revoked", CLOSE_UNAUTHORIZED)
                self._uncount(p)
                p.credential = None  # closed once: the next look at revocations passes it over
                self._sessions.pop(p.secret, None)
                p.secret = b""  # nor is its session held for it to resume
        return self._flush()

    def _resume(self, p: Peer, secret: str) -> list[str]:
        """Requestor ``p`` takes over the session ``secret`` names: the ready activities it gets.

        The session's old connection, if the hub has not found it dead yet, is closed first.
        An unknown or spent secret takes nothing: ``p`` starts afresh.
        """
        # Looked up by its sha256: the time a lookup takes tells nothing of the secret itself.
        key = _digest(secret)
        old_id = self._sessions.get(key)
        owner = self.peers.get(old_id) if old_id is not None else None
        if owner is None and old_id is not None:
            owner = self._held[old_id][0]
        if owner is not None and _credential_id(owner) != _credential_id(p):
            self._log("warning", f"requestor {shown(p.name)} gave the resume secret of another credential's session")
            return []
        self._sessions.pop(key, None)
        if old_id is not None and (still := self.peers.pop(old_id, None)) is not None:
            self._uncount(still)
            self._out.append(Close(old_id, CLOSE_RESUMED, "resumed elsewhere"))
            self._requestor_gone(still)
            self._sessions.pop(still.secret, None)
        old = self._held.pop(old_id, (None, 0.0))[0] if old_id is not None else None
        if old is None:
            self._log("info", f"requestor {shown(p.name)} asked to resume a session unknown or expired")
            return []
        p.session, p.saved = old.session, old.saved
        leases = self._leases(old)
        for lease in leases:
            lease.requestor = p.id
            lease.requestor_name = p.name
            p.activities.add(lease.id)
            if lease.group is not None and lease.provider != ABSENT:
                p.groups.setdefault(lease.group, Counter())[lease.provider] += 1
        self._log("info", f"requestor {shown(p.name)} resumed the session of peer {old.id}: {len(leases)} activities")
        # An absent one is back once its provider is: requests on it wait till then.
        return [lease.id for lease in leases if lease.state in ("ready", "absent")]

    def _leases(self, p: Peer) -> list[Lease]:
        """The activities requestor ``p`` still holds (some may have ended while it was away)."""
        found = (self.activities.get(activity_id) for activity_id in sorted(p.activities))
        return [lease for lease in found if lease is not None and lease.requestor == p.id]

    # --- requestor ---------------------------------------------------------------------

    def _from_requestor(self, p: Peer, message: Message) -> None:
        if message.type not in REQUESTOR_SENDS:
            self._error(
                p, getattr(message, "id", None), ErrorCode.OUT_OF_ORDER, f"a requestor may not send {message.type!r}"
            )
            return
        if isinstance(message, Credit):
            self._credit(p, message)
            return
        if isinstance(message, Cancel):
            if message.target in p.pushes:
                self._out.append(PushCancelled(p.id, message.target, answer=True))
                return
            target = p.open.get(message.target)
            if target == (ABSENT, 0):
                self._unwait(p, message.target)
            elif target is not None and target[0] != HUB:  # the store's own requests end on their own
                provider, hub_id = target
                pending = self.peers[provider].pending.get(hub_id)
                if pending is not None and pending.kind == "create":
                    pending.cancelled = True  # destroyed as soon as it exists (see _finish)
                elif pending is not None and pending.kind != "destroy":  # a release always completes
                    self._send(provider, Cancel(type="cancel", target=hub_id))
            return
        assert isinstance(message, Rent | Release | MarketQuery | ActivitiesQuery | Exec | Upload | Download
                          | PushImage | ListImages | RemoveImage | ShareImage)  # fmt: skip
        if message.id in p.open or message.id in p.pushes:
            self._error(p, message.id, ErrorCode.DUPLICATE_ID, f"request id {message.id} is already in use")
            return
        if len(p.open) >= self.limits.max_pending:
            self._error(p, message.id, ErrorCode.TOO_MANY, f"more than {self.limits.max_pending} requests open at once")
            return
        if isinstance(message, PushImage | ListImages | RemoveImage | ShareImage):
            if isinstance(message, PushImage):
                if p.streams() >= self.limits.max_streams:
                    self._error(p, message.id, ErrorCode.TOO_MANY, f"more than {self.limits.max_streams} streams open")
                    return
                p.pushes[message.id] = 0
            p.open[message.id] = (HUB, 0)
            self._out.append(StoreRequest(p.id, message, p.credential))
        elif isinstance(message, MarketQuery):
            self._describe(p, message)
        elif isinstance(message, ActivitiesQuery):
            self._list_activities(p, message)
        elif isinstance(message, Rent):
            self._rent(p, message)
        else:
            activity = self.activities.get(message.activity)
            if activity is not None and activity.requestor == p.id and activity.state == "absent":
                self._park(p, activity, message)
                return
            if activity is None or activity.requestor != p.id or activity.state != "ready":
                self._error(
                    p, message.id, ErrorCode.UNKNOWN_ACTIVITY, f"no activity {message.activity!r} of yours is ready"
                )
                return
            if isinstance(message, Release):
                self._destroy(activity, p.id, message.id)
            else:
                self._forward(p, activity, message)

    def _describe(self, p: Peer, message: MarketQuery) -> None:
        """The market as requestor ``p``'s tenant may see it (see the rules above)."""
        tenant = Tenant.of(p.credential)
        image = message.image
        # A tag of the store names the image by its id, as providers offer it. A stored image
        # the tenant may not see is as if not stored: held only by providers that offer it themselves.
        stored = self.catalog.resolve(image, tenant) if image is not None else None
        image = stored.digest if stored is not None else image
        providers, matched = self.market.describe(
            image=image, labels=message.labels, free=message.free, limit=message.limit, stored=stored is not None,
            hidden=lambda i: self.catalog.hidden(i, tenant),
        )  # fmt: skip
        info = MarketInfo(type="market_info", re=message.id, providers=providers, matched=matched,
                          activities=len(self.activities))  # fmt: skip
        self._send(p.id, info)

    def _list_activities(self, p: Peer, message: ActivitiesQuery) -> None:
        """Requestor ``p``'s own activities, or with ``all`` every one at the hub: an admin's view only."""
        if message.all and (p.credential is None or p.credential.role != "admin"):
            text = "listing every activity at the hub needs an admin credential (kiln token create --role admin)"
            self._error(p, message.id, ErrorCode.UNAUTHORIZED, text)
            return
        leases = [self.activities[key] for key in sorted(self.activities)] if message.all else self._leases(p)
        listed: list[ActivityInfo] = []
        room = self.limits.max_message_bytes - 256  # what the reply may hold besides its entries
        for lease in leases[: message.limit]:
            info = ActivityInfo(id=lease.id, requestor=lease.requestor_name, credential=lease.credential,
                                provider=lease.provider_name, state=lease.state, resources=lease.resources,
                                group=lease.group, started=lease.started or None,
                                image=lease.image or lease.named_image)  # fmt: skip
            room -= len(orjson.dumps(info.model_dump(mode="json", exclude_none=True))) + 1
            if room < 0:
                break  # no more than one message holds: matched tells how many were left out
            listed.append(info)
        self._send(p.id, ActivityList(type="activity_list", re=message.id, activities=listed, matched=len(leases)))

    def _park(self, p: Peer, lease: Lease, message: Exec | Upload | Download | Release) -> None:
        """The provider of ``lease`` has not dialled again since the hub restarted: ``message``
        waits for it (bounded by max_pending and max_streams, and by the grace period, which
        loses the lease). A stream the requestor sends on is held open meanwhile without
        credit, so its END or ABORT, which need none, is kept for when the request goes on."""
        inward = isinstance(message, Upload) or (isinstance(message, Exec) and message.stdin)
        outward = isinstance(message, Download) or (isinstance(message, Exec) and message.stream)
        if (inward or outward) and p.streams() >= self.limits.max_streams:
            self._error(p, message.id, ErrorCode.TOO_MANY, f"more than {self.limits.max_streams} streams open")
            return
        if inward:
            p.sends[message.id] = Route(p.id, message.id, ABSENT, 0, upload=True)
        lease.parked.append(message)
        p.open[message.id] = (ABSENT, 0)

    def _unwait(self, p: Peer, request: int) -> None:
        """Cancel request ``request`` of ``p``'s that waits for an absent lease."""
        del p.open[request]
        self._held_stream(p, request)
        for lease in self._leases(p):
            lease.parked = [m for m in lease.parked if m.id != request]
        self._send(p.id, Error(type="error", re=request, code=ErrorCode.CANCELLED, message="request cancelled"))

    def _rent(self, p: Peer, message: Rent) -> None:
        if len(p.activities) >= self.max_activities:
            text = f"more than {self.max_activities} activities held at once: release some first"
            self._error(p, message.id, ErrorCode.TOO_MANY, text)
            return
        group = p.groups.get(message.group) if message.group is not None else None
        tenant = Tenant.of(p.credential)
        stored = self.catalog.resolve(message.image, tenant)
        # Another tenant's image runs only from a provider that offers it itself (whose offer
        # cannot be a copy of the store's): the same answers whether that tenant stored it or not.
        hidden = self.catalog.hidden(message.image, tenant)
        if stored is None and is_digest(message.image) and not self.market.offered(message.image, apart=hidden):
            # A digest names the image only the store (as this tenant sees it) or a provider's own
            # offer can run.
            self._error(p, message.id, ErrorCode.IMAGE_NOT_FOUND, not_found(message.image))
            return
        try:
            provider, cached = self.market.choose(
                message.image, message.demand, set(message.exclude), group or (), stored,
                root=message.user == "root", apart=hidden,
            )  # fmt: skip
        except NoMatch as e:
            self._error(p, message.id, e.code, e.message)
            return
        d = granted(message.demand)  # the storage its volume will have: reserved, and sent to the provider
        resources = Resources(cpus=d.cpus, memory=d.memory, storage=d.storage)
        q = self.peers[provider]
        activity = Lease(self._new_activity_id(), p.id, provider, resources, cached, message.group,
                         provider_name=q.name, requestor_name=p.name, credential=_credential_id(p))  # fmt: skip
        if stored is not None:
            activity.image = stored.digest
            self.catalog.use(stored.digest, self._clock())
        else:
            activity.named_image = message.image
        self.market.reserve(provider, resources)
        if message.group is not None:
            p.groups.setdefault(message.group, Counter())[provider] += 1
        self.activities[activity.id] = activity
        p.activities.add(activity.id)
        q.activities.add(activity.id)
        hub_id = q.new_id()
        pending = Pending("create", activity.id, p.id, message.id, stored=stored, image=message.image)
        q.pending[hub_id] = pending
        self._due(pending, q.id, hub_id, self.create_timeout)
        p.open[message.id] = (provider, hub_id)
        create = Create(type="create", id=hub_id, activity=activity.id, image=message.image, resources=resources,
                        user=message.user)  # fmt: skip
        if stored is not None:
            manifest = stored.manifest_for(q.minor) if q.minor >= 1 else None
            create = create.model_copy(update={"image": stored.digest, "manifest": manifest})
        self._send(provider, create)

    def _forward(self, p: Peer, activity: Lease, message: Exec | Upload | Download) -> None:
        q = self.peers[activity.provider]
        inward = isinstance(message, Upload) or (isinstance(message, Exec) and message.stdin)
        outward = isinstance(message, Download) or (isinstance(message, Exec) and message.stream)
        if isinstance(message, Exec) and message.streams and q.minor < 2:
            text = f"the provider of activity {activity.id} speaks protocol 1.{q.minor}: an exec's streams need 1.2"
            self._error(p, message.id, ErrorCode.UNSUPPORTED_VERSION, text)
            return
        if (inward or outward) and p.streams() >= self.limits.max_streams:
            self._error(p, message.id, ErrorCode.TOO_MANY, f"more than {self.limits.max_streams} streams open")
            return
        hub_id = q.new_id()
        pending = q.pending[hub_id] = Pending(message.type, activity.id, p.id, message.id)
        if inward:
            route = Route(p.id, message.id, q.id, hub_id, upload=True)
            p.sends[message.id] = q.receives[hub_id] = route
            pending.routes.append(route)
            self._stall(route)  # until the provider's first credit says it is ready
        if outward:
            route = Route(p.id, message.id, q.id, hub_id, upload=False)
            q.sends[hub_id] = p.receives[message.id] = route
            pending.routes.append(route)
            # The first credit rides in the request: at least one chunk of it now, the rest
            # as the requestor's buffer at the hub has room (see _release).
            assert not isinstance(message, Upload)
            window = min(message.window or limits.OUTPUT_WINDOW, self.limits.max_window)
            first = min(window, max(self._room(p), 1))
            route.credit = first
            p.inbound += first
            if window > first:
                self._withhold(p, route, window - first)
            message = message.model_copy(update={"window": first})
        p.open[message.id] = (q.id, hub_id)
        self._send(q.id, message.model_copy(update={"id": hub_id}))

    def _destroy(self, activity: Lease, requestor: int | None, r_id: int | None, *, cancelled: bool = False) -> None:
        self._log("info", f"activity {activity.id}: destroying")
        activity.state = "destroying"
        if activity.saved:
            self._out.append(Destroying(activity.id))
        q = self.peers[activity.provider]
        hub_id = self._send_destroy(q, activity.id, requestor, r_id, cancelled=cancelled)
        owner = self.peers.get(requestor) if requestor is not None else None
        if owner is not None and r_id is not None:
            owner.open[r_id] = (q.id, hub_id)

    def _send_destroy(
        self, q: Peer, activity: str, requestor: int | None, r_id: int | None, *, cancelled: bool = False
    ) -> int:
        """Ask provider ``q`` to destroy ``activity``, within the destroy timeout; returns the hub's request id."""
        hub_id = q.new_id()
        q.pending[hub_id] = Pending("destroy", activity, requestor, r_id, cancelled=cancelled)
        self._due(q.pending[hub_id], q.id, hub_id, self.destroy_timeout)
        self._send(q.id, Destroy(type="destroy", id=hub_id, activity=activity))
        return hub_id

    def _credit(self, p: Peer, message: Credit) -> None:
        route = p.receives.get(message.stream)
        if route is None or route.ended:
            # The stream may have ended while the credit was on its way: not an error.
            return
        if route.credit + route.withheld + message.chunks > self.limits.max_window:
            self._error(
                p,
                None,
                ErrorCode.FLOW_CONTROL,
                f"credit on stream {message.stream} would exceed the window of {self.limits.max_window}",
            )
            return
        self._withhold(p, route, message.chunks)
        self._release(p)

    # --- what the hub buffers toward a receiver ---------------------------------------------
    #
    # A receiver grants credit; the hub passes it on to the sender only while everything
    # the senders may still send toward that receiver, and all it has queued for it, fits
    # in ``buffer_bytes // 2`` (and one chunk a stream more: see _release). The rest waits
    # (``withheld``) until the receiver's queue drains (:meth:`delivered`). So a slow
    # receiver slows its own streams, and the hub never buffers past what it promised for it.

    def _room(self, q: Peer) -> int:
        """Chunks of credit that may still be passed on toward ``q``."""
        chunk = self.limits.chunk_bytes
        return max(self._budget // chunk - q.inbound - math.ceil(q.queued / chunk), 0)

    def _withhold(self, q: Peer, route: Route, chunks: int) -> None:
        if route.withheld == 0:
            q.waiting.append(route)
        route.withheld += chunks

    def _release(self, q: Peer) -> None:
        """Pass on withheld credit toward ``q`` while there is room, oldest first.

        A stream that holds no credit at all gets one chunk even when there is no room:
        senders that sit on credit they do not use (say, uploads never fed) fill the
        receiver's room, and must not stop everyone else's streams. That lets the hub go
        over its promise by at most one chunk a stream.
        """
        room = self._room(q)
        waiting, q.waiting = q.waiting, []
        for route in waiting:
            if route.ended or route.withheld == 0:
                continue
            give = min(route.withheld, room) or (1 if route.credit == 0 else 0)
            room = max(room - give, 0)
            if give:
                route.withheld -= give
                route.credit += give
                route.stalled = math.inf
                q.inbound += give
                sender, stream = (route.requestor, route.r_id) if route.upload else (route.provider, route.p_id)
                if sender == HUB:
                    self._out.append(ServeCredit(route.provider, route.p_id, give))
                else:
                    self._send(sender, Credit(type="credit", stream=stream, chunks=give))
            if route.withheld:
                q.waiting.append(route)

    def _close_route(self, route: Route) -> None:
        """The stream is over: the credit its sender held toward the receiver is free again."""
        if route.ended and route.credit == 0 and route.withheld == 0:
            return
        route.ended = True
        q = self.peers.get(route.receiver)
        if q is not None:
            q.inbound -= route.credit
        route.credit = route.withheld = 0

    def delivered(self, peer: int, size: int) -> list[Action]:
        """``size`` bytes of stream frames toward ``peer`` have been written: its credit may flow again."""
        q = self.peers.get(peer)
        if q is None:
            return []
        q.queued = max(q.queued - size, 0)
        self._release(q)
        return self._flush()

    # --- provider ----------------------------------------------------------------------

    def _from_provider(self, p: Peer, message: Message) -> None:
        if message.type not in PROVIDER_SENDS:
            self._error(
                p, getattr(message, "id", None), ErrorCode.OUT_OF_ORDER, f"a provider may not send {message.type!r}"
            )
            return
        if isinstance(message, Offer):
            first = p.id not in self.market
            self.market.update(p.id, p.name, message, pulls=p.minor >= 1, apart=p.minor >= 4)
            if first:  # a provider back after a restart holds its activities' capacity already
                for activity_id in sorted(p.activities):
                    self.market.reserve(p.id, self.activities[activity_id].resources)
            self._send(p.id, Done(type="done", re=message.id))
            return
        if isinstance(message, Credit):
            self._credit(p, message)
            return
        assert isinstance(message, Done | Error | ExecResult | DownloadInfo | Want)
        if message.re is None:
            self._log("warning", f"provider {shown(p.name)} reports {message.code}: {shown(message.message)}")
            return
        pending = p.pending.get(message.re)
        if pending is None or not _answers(pending.kind, message):
            self._error(p, None, ErrorCode.OUT_OF_ORDER, f"{message.type!r} answers no open request {message.re}")
            return
        if isinstance(message, DownloadInfo):
            self._to_requestor(p, pending, message)
            return
        if isinstance(message, Want):
            self._want(p, message.re, pending, message)
            return
        del p.pending[message.re]
        self._finish(p, pending, message)

    def _finish(self, p: Peer, pending: Pending, reply: Done | Error | ExecResult) -> None:
        requestor = self.peers.get(pending.requestor) if pending.requestor is not None else None
        if requestor is not None and pending.r_id is not None:
            requestor.open.pop(pending.r_id, None)
        for route in pending.routes:
            self._end_route(route)
        activity = self.activities.get(pending.activity)
        if activity is not None and activity.provider != p.id:
            activity = None  # a provider answers only for its own (see _reconcile)
        if pending.kind == "create":
            if activity is None:
                return
            if isinstance(reply, Error):
                self._drop_activity(activity)
                if reply.code == ErrorCode.IMAGE_NOT_FOUND and pending.stored is None:
                    reply = reply.model_copy(update={"message": not_stored(reply.message, pending.image)})
                self._to_requestor(p, pending, reply)
            elif requestor is None or pending.r_id is None or pending.cancelled:
                # The cancelled rent is answered once the container is gone (see the destroy branch).
                self._destroy(activity, requestor.id if requestor else None, pending.r_id, cancelled=True)
            else:
                activity.state = "ready"
                activity.started = self._clock()
                activity.saved = True
                record = LeaseRecord(activity.id, requestor.session, p.name, activity.resources, activity.group,
                                     activity.image, activity.started)  # fmt: skip
                self._out.append(SaveLease(record, self._session_record(requestor)))  # before rented
                self._log("info", f"activity {activity.id} of {shown(requestor.name)} runs on {shown(p.name)}")
                # What the provider fetched says best whether it held the image (its offer may be stale).
                pulled = reply.bytes if isinstance(reply, Done) and pending.stored is not None else None
                cached = activity.cached if pulled is None else pulled == 0
                told = (pulled or 0) if pending.stored is not None and requestor.minor >= 1 else None
                rented = Rented(type="rented", re=pending.r_id, activity=activity.id, provider=p.name,
                                cached=cached, resources=activity.resources, pulled=told)  # fmt: skip
                self._send(requestor.id, rented)
        elif pending.kind == "destroy":
            if isinstance(reply, Error):
                # The container may still run: its capacity stays reserved until the provider goes.
                why = shown(reply.message)
                self._log("warning", f"provider {shown(p.name)} failed to destroy {pending.activity}: {why}")
            elif activity is not None:
                self._drop_activity(activity, reply.cpu_seconds if isinstance(reply, Done) else None)
            if pending.cancelled:
                self._fail_requestor(pending, ErrorCode.CANCELLED, "rent cancelled")
            else:
                self._to_requestor(p, pending, reply)
        else:
            self._to_requestor(p, pending, reply)

    def _end_route(self, route: Route) -> None:
        """A request with a stream ended: forget the stream on both legs, and stop the store sending on it."""
        if route.requestor == HUB and not route.ended:
            self._out.append(ServeStop(route.provider, route.p_id))
        self._close_route(route)
        provider, requestor = self.peers.get(route.provider), self.peers.get(route.requestor)
        if provider is not None:
            (provider.receives if route.upload else provider.sends).pop(route.p_id, None)
        if requestor is not None:
            (requestor.sends if route.upload else requestor.receives).pop(route.r_id, None)

    def _drop_activity(self, activity: Lease, cpu_seconds: float | None = None) -> None:
        self._log("info", f"activity {activity.id} ended; its capacity is free")
        self.activities.pop(activity.id, None)
        self._ended(activity, cpu_seconds)
        self.market.release(activity.provider, activity.resources)
        self._ungroup(activity)
        if activity.image is not None:
            self.catalog.unuse(activity.image)
        for peer in (activity.requestor, activity.provider):
            q = self.peers.get(peer)
            if q is not None:
                q.activities.discard(activity.id)

    def _ungroup(self, activity: Lease) -> None:
        """The lease no longer keeps its group off its provider."""
        owner = self.peers.get(activity.requestor)
        name = activity.group
        group = owner.groups.get(name) if name is not None and owner is not None else None
        if owner is None or name is None or group is None or activity.provider not in group:
            return
        group[activity.provider] -= 1
        if group[activity.provider] <= 0:
            del group[activity.provider]
            if not group:
                del owner.groups[name]

    def _to_requestor(self, p: Peer, pending: Pending, reply: Done | Error | ExecResult | DownloadInfo) -> None:
        """Relay provider ``p``'s reply to the requestor that asked (if still here), under its own id.

        An error names the provider that sent it: the hub says which, whatever the provider claims.
        """
        if pending.r_id is not None and pending.requestor in self.peers:
            update: dict[str, object] = {"re": pending.r_id}
            if isinstance(reply, Error):
                update["provider"] = p.name
            self._send(pending.requestor, reply.model_copy(update=update))

    def _fail_requestor(self, pending: Pending, code: ErrorCode, message: str) -> None:
        if pending.r_id is not None and pending.requestor in self.peers:
            self._send(pending.requestor, Error(type="error", re=pending.r_id, code=code, message=message))

    # --- the image store ------------------------------------------------------------------

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
        self._progress(pending, p)

    def serve_data(self, peer: int, stream: int, data: bytes) -> list[Action]:
        """The store sends one DATA frame of a blob to provider ``peer`` (within the credit it was given)."""
        route, q = self._served(peer, stream)
        if route is None or q is None:
            return []
        if route.credit <= 0:
            raise UsageError(f"the store sent on stream {stream} without credit")
        route.credit -= 1
        q.inbound -= 1
        self._send_binary(q.id, frames.encode(FrameKind.DATA, stream, data))
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
        self._send(requestor.id, RentProgress(type="rent_progress", re=pending.r_id, provider=provider.name,
                                              image=pending.image, done=pending.sent, total=pending.total))  # fmt: skip

    def _push_frame(self, p: Peer, request: int, kind: FrameKind, payload: memoryview) -> None:
        credit = p.pushes[request]
        if credit < 0:
            self._error(p, request, ErrorCode.UNKNOWN_STREAM, f"stream {request} has ended")
            return
        if kind is not FrameKind.DATA:
            p.pushes[request] = -1  # ended: nothing more may come on it
        else:
            if credit == 0:
                self._error(p, request, ErrorCode.FLOW_CONTROL,
                            f"DATA frame on stream {request} without credit; the push is aborted")  # fmt: skip
                p.pushes[request] = -1
                self._out.append(PushFrame(p.id, request, FrameKind.ABORT, b"sender broke flow control"))
                return
            p.pushes[request] = credit - 1
        self._out.append(PushFrame(p.id, request, kind, bytes(payload)))

    def store_grant(self, peer: int, request: int, chunks: int) -> list[Action]:
        """The store lets a push's requestor send ``chunks`` more DATA frames."""
        p = self.peers.get(peer)
        if p is not None and p.pushes.get(request, -1) >= 0:
            p.pushes[request] += chunks
            self._send(peer, Credit(type="credit", stream=request, chunks=chunks))
        return self._flush()

    def store_reply(self, peer: int, reply: Want | ImagePushed | ImageList | Done | Error) -> list[Action]:
        """The store answers a request of ``peer``'s (a final reply ends it)."""
        p = self.peers.get(peer)
        if p is None or reply.re is None or p.open.get(reply.re) != (HUB, 0):
            return []
        if not isinstance(reply, Want):
            del p.open[reply.re]
            p.pushes.pop(reply.re, None)
        if p.minor < 4 and isinstance(reply, ImagePushed):
            reply = reply.model_copy(update={"image": _before_owners(reply.image)})
        elif p.minor < 4 and isinstance(reply, ImageList):
            reply = reply.model_copy(update={"images": [_before_owners(i) for i in reply.images]})
        self._send(peer, reply)
        return self._flush()

    # --- departures ----------------------------------------------------------------------

    def _provider_gone(self, p: Peer, reason: str, *, leaving: bool = False) -> None:
        self._log("info" if leaving else "warning", f"provider {shown(p.name)} left: {shown(reason)}")
        why = f"provider {p.name!r} disconnected: {reason}"
        # activity_lost goes first, so a requestor knows why before its requests fail.
        for activity_id in sorted(p.activities):
            activity = self.activities.pop(activity_id, None)
            if activity is None:
                continue
            self._ended(activity, None)
            self._ungroup(activity)
            if activity.image is not None:
                self.catalog.unuse(activity.image)
            requestor = self.peers.get(activity.requestor)
            if requestor is not None:
                requestor.activities.discard(activity_id)
                if activity.state != "destroying":
                    self._send(
                        requestor.id,
                        ActivityLost(
                            type="activity_lost", activity=activity_id, code=ErrorCode.PROVIDER_LOST, reason=why
                        ),
                    )
        for pending in p.pending.values():
            for route in pending.routes:
                self._end_route(route)
            requestor = self.peers.get(pending.requestor) if pending.requestor is not None else None
            if requestor is None or pending.r_id is None:
                continue
            requestor.open.pop(pending.r_id, None)
            if pending.kind == "destroy" and pending.cancelled:
                self._fail_requestor(pending, ErrorCode.CANCELLED, "rent cancelled")
            elif pending.kind == "destroy":
                self._send(requestor.id, Done(type="done", re=pending.r_id))  # the container went with it
            else:
                self._fail_requestor(pending, ErrorCode.PROVIDER_LOST, why)
        self.market.remove(p.id)

    def _requestor_gone(self, p: Peer, *, ended: bool = False) -> None:
        self._sessions.pop(p.secret, None)
        hold = bool(p.secret) and bool(p.activities) and not ended
        if hold:
            self._log("info", f"requestor {shown(p.name)} left; holding {len(p.activities)} activities "
                              f"for {self.grace:g} s")  # fmt: skip
        else:
            self._log("info", f"requestor {shown(p.name)} left; destroying {len(p.activities)} activities")
        for request in p.pushes:
            self._out.append(PushCancelled(p.id, request, answer=False))
        for route in p.sends.values():
            q = self.peers.get(route.provider)
            if q is not None and not route.ended:
                self._send_binary(q.id, frames.encode(FrameKind.ABORT, route.p_id, b"requestor disconnected"))
            self._close_route(route)
        for route in p.receives.values():
            self._close_route(route)
        for lease in self._leases(p):
            lease.parked.clear()  # waiting for nobody now (answered by no one: p is gone)
        # Replies still owed to this requestor are dropped when they come (see _to_requestor);
        # an activity still being created is destroyed once its create completes (see _finish).
        if not hold:
            self._destroy_ready(self._leases(p))
            if p.saved:
                self._out.append(EndSession(p.session))
            return
        # The activities stay; what ran in them for this connection has nowhere to report.
        for provider, hub_id in p.open.values():
            pending = self.peers[provider].pending.get(hub_id) if provider in self.peers else None
            if pending is not None and pending.kind in ("exec", "upload", "download"):
                self._send(provider, Cancel(type="cancel", target=hub_id))
        self._sessions[p.secret] = p.id
        self._held[p.id] = (p, self._monotonic() + self.grace)

    def _destroy_ready(self, leases: list[Lease]) -> None:
        """Destroy what is ready; forget what is absent (its provider, reporting it, will be told to destroy it)."""
        for lease in leases:
            if lease.state == "ready":
                self._destroy(lease, None, None)
            elif lease.state == "absent":
                self._absent.get(lease.provider_name, set()).discard(lease.id)
                self._drop_activity(lease)

    # --- output ---------------------------------------------------------------------------

    def _log(self, level: Literal["info", "warning"], text: str) -> None:
        self._out.append(Log(level, text))

    def _send(self, peer: int, message: Message) -> None:
        self._out.append(Send(peer, serialize(message)))

    def _send_binary(self, peer: int, data: bytes) -> None:
        q = self.peers.get(peer)
        if q is not None:
            q.queued += len(data)
        self._out.append(Send(peer, data, binary=True))

    def _error(self, p: Peer, re: int | None, code: ErrorCode, message: str) -> None:
        # The text may quote what the peer sent: clipped, so the reply can always be built.
        self._send(p.id, Error(type="error", re=re, code=code, message=clip(message)))

    def _violation(self, p: Peer, e: RemoteProtocolError) -> None:
        """Answer a frame that broke the protocol; before the handshake, also close."""
        if p.role is None:
            self._refuse(p, e.code, e.message, CLOSE_HANDSHAKE, re=e.re)
        else:
            self._error(p, e.re, e.code, e.message)

    def turn_away(self, peer: int, text: str, close: int) -> list[Action]:
        """Refuse ``peer`` before its hello is read (the I/O layer's caps, :mod:`kiln.hub.gate`): ``too_many``
        and ``close``. Call :meth:`disconnect` once its connection has ended, as for any other."""
        p = self.peers.get(peer)
        if p is not None and p.role is None:
            self._refuse(p, ErrorCode.TOO_MANY, text, close)
        return self._flush()

    def _uncount(self, p: Peer) -> None:
        if p.role is not None and p.credential is not None:
            self._per_credential[p.credential.id] -= 1
            if self._per_credential[p.credential.id] <= 0:
                del self._per_credential[p.credential.id]

    def _refuse(self, p: Peer, code: ErrorCode, text: str, close: int, re: int | None = None) -> None:
        """Turn away a peer (not yet welcomed, or whose credential was revoked): an error, a close, a log line."""
        p.refused = code
        self._error(p, re, code, text)
        self._out.append(Close(p.id, close, code.value))
        self._log("warning", f"peer {p.id} refused ({code.value}): {shown(text)}")

    def _flush(self) -> list[Action]:
        out, self._out = self._out, []
        return out


def not_stored(told: str, image: str) -> str:
    """A provider's ``image_not_found`` for an image the hub's store lacks too, with what the
    requestor can do about it (the provider's own text says what its operator could)."""
    hint = (
        f"; the hub's image store does not hold {image!r} either: push it there (kiln image push {image}, "
        "or push_image / pushImage in code), then rent it again"
    )
    return clip(told, MAX_TEXT - len(hint)) + hint


def not_found(image: str) -> str:
    """Why a rent of ``image``, a digest, finds nothing: neither the store (as the requestor sees
    it) nor any provider's offer holds it."""
    return (
        f"the hub's image store holds no image {image!r} for you, and no provider offers it: push it "
        "(kiln image push, or push_image / pushImage in code), or ask its owner to share it (kiln image share)"
    )


def _before_owners(info: ImageInfo) -> ImageInfo:
    """``info`` as a requestor of protocol 1.3 or older reads it: without the fields of 1.4."""
    return info.model_copy(update={"owners": None, "shared": None, "public": None})


def _credential_id(p: Peer) -> int | None:
    return p.credential.id if p.credential is not None else None


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def shown(text: str, limit: int = 200) -> str:
    """A peer's text as a log line may carry it: quoted (newlines and escapes made visible) and clipped."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _answers(kind: str, reply: Done | Error | ExecResult | DownloadInfo | Want) -> bool:
    """Whether ``reply`` is a legal answer to a request of ``kind``."""
    if isinstance(reply, Want):
        return kind == "create"
    if isinstance(reply, ExecResult):
        return kind == "exec"
    if isinstance(reply, DownloadInfo):
        return kind == "download"
    if isinstance(reply, Done):
        return kind != "exec"
    return True
