"""The hub's whole logic as a state machine with no I/O: frames in, actions out.

Rules that everything affecting the hub's state must follow live here:

* A peer speaks only after ``hello``/``welcome``; the first frame must be ``hello``.
* A requestor sends ``rent``, ``release``, ``market``, ``activities``, ``exec``, ``upload``,
  ``download``, ``credit``, ``cancel``, ``balance``, ``ledger``, ``verdict``, ``task``, ``connect``,
  ``publish``, ``unpublish`` and upload stream frames.
  A provider sends ``offer``, ``credit``, ``usage``, replies to the hub's requests
  and download stream frames. Anything else is ``out_of_order``.
* ``task`` and ``usage`` (1.6) are answered by nothing: what they name that is not the
  sender's (another requestor's activity, an activity the provider does not hold) is dropped.
  They feed what the hub shows (:mod:`kiln.hub.jobs`; each lease's usage), as every entry point
  feeds its counts (:mod:`kiln.hub.tallies`) and its feed of events (:mod:`kiln.hub.journal`).
* Every request a requestor makes on an activity is forwarded to the activity's provider
  under a fresh id of the hub's; the reply comes back under the requestor's id. A peer can
  only name what it owns: another requestor's activity is ``unknown_activity``, a reply to
  a request the hub did not send to *this* provider is ``out_of_order``. A requestor that
  joined with an admin credential may *list* every activity (``activities`` with ``all``),
  but touches only its own, as any other. One exception: a ``connect`` or ``publish`` (1.7) may reach the
  activities of another session of the same credential, and on a hub without credentials any
  session's (so that ``kiln forward`` from a second process reaches a job's containers).
* A stream's data frames are relayed only within the credit its receiver granted, and that
  credit is passed on to senders only while all the stream data toward the receiver fits
  in half the buffer the I/O layer keeps for it: a slow receiver slows its own streams.
  Relayed streams, pushes and the store's blobs are all held to that one mechanism
  (:mod:`kiln.hub.flow`).
* Capacity is reserved when a provider is chosen and released when its container is
  destroyed or its provider is gone.
* A hub with accounts that admits only by credentials charges for priced providers
  (:mod:`kiln.hub.metering`): a rent's worst case is held before its ``create`` goes out, what
  is due is captured every ``capture_interval`` and at every end, after which the hold's rest
  goes back; every movement is a :class:`~kiln.hub.ledger.Post` among the actions, under a key
  that makes a replay harmless.
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
  ``remove_image`` and ``share_image``, and the data of its pushes, go to the store
  (:class:`~kiln.hub.actions.StoreRequest`, :class:`~kiln.hub.actions.PushFrame`), which
  answers through :meth:`HubCore.store_reply` and grants credit through
  :meth:`HubCore.store_grant`. A provider's ``want`` for a ``create`` of a stored image starts
  the store sending blobs (:class:`~kiln.hub.actions.ServeBlobs`) on the create's stream,
  within the credit the provider grants (:meth:`HubCore.serve_credit`), through
  :meth:`HubCore.serve_data` (:mod:`kiln.hub.store_link`).
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

The core is built in layers, one module per concern (:mod:`kiln.hub.base` lists them); this
module holds the entry points and the dispatch of each frame to the layer that handles it.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TypeAlias

from kiln.hub.access import Credentials
from kiln.hub.actions import Action, Close, PushCancelled, StoreRequest
from kiln.hub.base import (
    CREATE_TIMEOUT,
    CREDIT_TIMEOUT,
    DESTROY_TIMEOUT,
    GRACE,
    MAX_ACTIVITIES,
    PER_CREDENTIAL,
    PROGRESS_BYTES,
    credential_id,
    shown,
)
from kiln.hub.catalog import Catalog
from kiln.hub.cluster import Cluster, offer_text
from kiln.hub.deadlines import HEAP_FLOOR, Deadlines
from kiln.hub.flow import HUB, Flow, Route
from kiln.hub.jobs import Jobs
from kiln.hub.journal import EVENTS, Journal
from kiln.hub.leases import not_found, not_stored
from kiln.hub.ledger import CAPTURE_INTERVAL, HOLD_WINDOW, MIN_HOLD, PPM, Accounts, Ledger
from kiln.hub.market import Market
from kiln.hub.peers import ABSENT, NONE, Peer
from kiln.hub.publications import Publications
from kiln.hub.records import SaveOffer
from kiln.hub.reputation import Reputation
from kiln.hub.sessions import Sessions
from kiln.hub.tallies import NO_HELLO, Tallies
from kiln.protocol import frames, limits
from kiln.protocol.codes import (
    CLOSE_UNRESPONSIVE,
    ErrorCode,
)
from kiln.protocol.errors import RemoteProtocolError, UsageError
from kiln.protocol.messages import (
    MINOR_VERSION,
    ActivitiesQuery,
    BalanceQuery,
    Cancel,
    Connect,
    Credit,
    Done,
    Download,
    DownloadInfo,
    Error,
    Exec,
    ExecResult,
    LedgerQuery,
    Limits,
    ListImages,
    MarketQuery,
    Message,
    Offer,
    Publish,
    PushImage,
    Release,
    RemoveImage,
    Rent,
    Resources,
    ShareImage,
    TaskReport,
    Unpublish,
    Upload,
    Usage,
    VerdictReport,
    Want,
    parse,
)

__all__ = [
    "CREATE_TIMEOUT",
    "CREDIT_TIMEOUT",
    "DESTROY_TIMEOUT",
    "GRACE",
    "HEAP_FLOOR",
    "MAX_ACTIVITIES",
    "PER_CREDENTIAL",
    "PROGRESS_BYTES",
    "HubCore",
    "not_found",
    "not_stored",
    "shown",
]

REQUESTOR_SENDS = frozenset(
    {"rent", "release", "market", "activities", "exec", "upload", "download", "credit", "cancel"}
    | {"push_image", "list_images", "remove_image", "share_image"}
    | {"balance", "ledger", "verdict", "task"}
    | {"connect", "publish", "unpublish"}
)
PROVIDER_SENDS = frozenset({"offer", "credit", "usage", "done", "error", "exec_result", "download_info", "want"})


StoreAsk: TypeAlias = PushImage | ListImages | RemoveImage | ShareImage
"""The requests a requestor sends to the image store."""
RequestorRequest: TypeAlias = (
    Rent
    | Release
    | MarketQuery
    | ActivitiesQuery
    | Exec
    | Upload
    | Download
    | StoreAsk
    | BalanceQuery
    | LedgerQuery
    | VerdictReport
    | Connect
    | Publish
    | Unpublish
)
"""The requests a requestor may send that open a request of its own (all but ``credit`` and ``cancel``)."""


class HubCore(Sessions):
    """Everything the hub knows: peers, the market, activities and streams in flight."""

    def __init__(
        self,
        *,
        token: str | None = None,
        credentials: Credentials | None = None,
        cluster: Cluster | None = None,
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
        accounts: Accounts | None = None,
        fee_ppm: int = 0,
        capture_interval: float = CAPTURE_INTERVAL,
        hold_window: float = HOLD_WINDOW,
        reputation: Mapping[str, Mapping[str, float]] | None = None,
        events: int = EVENTS,
        publish_base: str | None = None,
    ) -> None:
        if token == "":
            raise UsageError("an empty token would admit anyone: give a token, or none for an open hub")
        if create_timeout <= 0 or destroy_timeout <= 0 or credit_timeout <= 0 or max_activities < 1:
            raise UsageError("the create, destroy and credit timeouts must be positive, and max_activities at least 1")
        if per_credential < 1:
            raise UsageError("the connections per credential must be at least 1")
        if not 0 <= grace < math.inf:
            raise UsageError("the grace period must be 0 (none) or a number of seconds")
        if not 0 <= fee_ppm <= PPM or capture_interval <= 0 or hold_window < MIN_HOLD:
            raise UsageError(
                f"the fee is 0 to {PPM:,} parts per million, the capture interval positive and the hold window "
                f"at least {MIN_HOLD:g} s"
            )
        self.token = token
        self.credentials = credentials
        self.cluster = cluster
        self.slot = 0
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
        self.catalog = catalog or Catalog(0)
        self._out = []
        self.tallies = Tallies()
        self.journal = Journal(events)
        self.jobs = Jobs()
        self.ledger = Ledger(accounts, fee_ppm=fee_ppm, capture_interval=capture_interval, hold_window=hold_window)
        # Given the counters the hub's state loaded, each change of them is written (SaveReputation).
        self.reputation = Reputation(reputation, self._out.append if reputation is not None else None)
        self.market = Market(self.catalog, self.reputation)
        self._joined = {}
        # Stream bytes in flight toward one receiver: half its buffer (the rest is room for messages).
        self.flow = Flow(self.limits.chunk_bytes, buffer_bytes // 2, self._out.append)
        self.deadlines = Deadlines(credit_timeout, monotonic)
        self.create_timeout = create_timeout
        self.destroy_timeout = destroy_timeout
        self.max_activities = max_activities
        self.grace = grace
        self.per_credential = per_credential
        self.peers = {}
        self.providers = {}
        self.activities = {}
        self._per_credential = Counter()
        self._new_activity_id = new_activity_id
        self._clock = clock
        self._monotonic = monotonic
        self._sessions = {}
        self._held = {}
        self._held_ids = ABSENT  # held sessions' ids count down from there
        self._absent = {}
        self._absent_until = 0.0
        self.published = Publications()
        self.publish_base = publish_base
        self._ports = {}
        self._expiring = {}
        self._expiry = []

    # --- entry points --------------------------------------------------------------

    def connect(self, peer: int) -> None:
        """A new connection: call :meth:`receive_text` with its first frame (its hello) next."""
        self.peers[peer] = Peer(id=peer)
        self.flow.open(peer)

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
        self._relay_frame(p, frame, data)
        return self._flush()

    def expire(self) -> list[Action]:
        """Drop every provider that left a ``create`` or ``destroy`` unanswered past its deadline.

        Call about once a second. A stuck provider (its Docker hung, its process stopped)
        would otherwise hold a rent, and the capacity reserved for it, forever: it is
        closed (4006) and handled as lost, so its requestors hear ``provider_lost`` and
        its capacity leaves the market.
        """
        now = self._monotonic()
        self._meter_tick()
        self._expire_sessions(now)
        self._starved(now)
        self.deadlines.compact(self.peers.values())
        # Only what is due is looked at (see kiln.hub.deadlines).
        while (overdue := self.deadlines.overdue(now, self.peers)) is not None:
            p, late = overdue
            waited = self.create_timeout if late.kind == "create" else self.destroy_timeout
            reason = f"it left a {late.kind} of activity {late.activity} unanswered for {waited:g} s"
            self._out.append(Close(p.id, CLOSE_UNRESPONSIVE, f"unresponsive: {reason}"))
            gone = self.disconnect(p.id, reason)  # flushes: what was queued (the Close first) comes back
            self._out += gone
        return self._flush()

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
        self.flow.close(peer)
        if p.role is not None and p.refused is None:  # a refusal or revocation was noted already
            self._note("leave" if ended or leaving else "loss", p.role, p.name, reason, credential_id(p))
        elif p.role is None and p.refused is None:  # gone before its hello was taken (none came in time)
            self.tallies.refused[NO_HELLO] += 1
        if p.role == "provider":
            del self.providers[p.name]
            self.reputation.disconnected(p.name, self._monotonic() - self._joined.pop(p.id, self._monotonic()))
            self._provider_gone(p, reason, leaving=ended or leaving)
        elif p.role == "requestor":
            self._requestor_gone(p, ended=ended)
        return self._flush()

    # --- providers of other hubs (several hubs on one database: kiln.hub.cluster) ---------------

    def remote(self, peer: int, name: str, hub: str, minor: int, offer: Offer) -> list[Action]:
        """Provider ``name`` is connected to ``hub``, another hub of the database: this hub sells it
        too, as peer ``peer``, whose frames the server carries over a link to that hub. Called
        again when its offer changes, or it moved to another hub. Nothing when it is connected
        here (under another peer)."""
        p = self.peers.get(peer)
        if p is None:
            if name in self.providers:
                return []
            self.connect(peer)
            p = self.peers[peer]
            p.role, p.name, p.minor = "provider", name, min(minor, MINOR_VERSION)
            self.number(p)
            self.providers[name] = peer
        p.hub, p.offer, p.price = hub, offer, offer.price
        self._offered(p, offer)
        return self._flush()

    def remote_linked(self, peer: int, incarnation: str, running: list[str]) -> list[Action]:
        """The link to the hub of remote provider ``peer`` is open, and reaches the provider's
        connection ``incarnation``, which said it runs ``running``: the leases it held here are
        back (all of them when the link reaches the same connection as before)."""
        p = self.peers.get(peer)
        if p is None or p.hub is None:
            return []
        if incarnation == p.incarnation:
            running = sorted(self._absent.get(p.name, ()))
        p.incarnation = incarnation
        self._reconcile(p, running)
        if p.offer is not None:
            self._offered(p, p.offer)
        return self._flush()

    def remote_unlinked(self, peer: int, reason: str) -> list[Action]:
        """The link to remote provider ``peer``'s hub broke: what was asked of it fails, its leases
        are absent until it is linked again within the grace period (or lost)."""
        p = self.peers.get(peer)
        if p is None or p.hub is None:
            return []
        self._provider_gone(p, reason, away=True)
        return self._flush()

    def remote_gone(self, peer: int, reason: str) -> list[Action]:
        """Remote provider ``peer`` is connected to no hub any more (or to this one now): it is no
        longer sold here; its leases wait for it to come back within the grace period."""
        p = self.peers.get(peer)
        if p is not None and p.hub is not None:
            self._forget_remote(p, reason)
        return self._flush()

    def elsewhere(self, provider: str, held: Resources) -> list[Action]:
        """The other hubs of the database hold ``held`` of provider ``provider`` (their leases and
        reservations there): this hub sells only the rest, so that its view matches the database's
        (which alone decides: :meth:`~kiln.hub.cluster.Cluster.reserve`)."""
        p = self.peers.get(self.providers.get(provider, 0))
        if p is None or held == p.elsewhere:
            return []
        if p.id in self.market:
            self.market.held_elsewhere(p.id, p.elsewhere, held)
        p.elsewhere = held
        return []

    def absent(self, provider: str) -> bool:
        """Whether leases wait for provider ``provider`` to be back (after a restart, or its link broke)."""
        return bool(self._absent.get(provider))

    def _offered(self, p: Peer, offer: Offer) -> None:
        """Sell provider ``p`` as ``offer`` says; a provider new to the market holds its leases' capacity."""
        first = p.id not in self.market
        self.market.update(p.id, p.name, offer, pulls=p.minor >= 1, apart=p.minor >= 4)
        if first:
            for activity_id in sorted(p.activities):
                self.market.reserve(p.id, self.activities[activity_id].resources)
            self.market.held_elsewhere(p.id, NONE, p.elsewhere)  # the other hubs' (several hubs)

    def turn_away(self, peer: int, text: str, close: int) -> list[Action]:
        """Refuse ``peer`` before its hello is read (the I/O layer's caps, :mod:`kiln.hub.gate`): ``too_many``
        and ``close``. Call :meth:`disconnect` once its connection has ended, as for any other."""
        p = self.peers.get(peer)
        if p is not None and p.role is None:
            self._refuse(p, ErrorCode.TOO_MANY, text, close)
        return self._flush()

    def _from_requestor(self, p: Peer, message: Message) -> None:
        if message.type not in REQUESTOR_SENDS:
            self._error(
                p, getattr(message, "id", None), ErrorCode.OUT_OF_ORDER, f"a requestor may not send {message.type!r}"
            )
            return
        if isinstance(message, Credit):
            self._credit(p, message)
            return
        if isinstance(message, TaskReport):
            self._task(p, message)
            return
        if isinstance(message, Cancel):
            pushing = p.sends.get(message.target)
            if pushing is not None and pushing.push:
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
        assert isinstance(message, RequestorRequest)
        if message.id in p.open:
            self._error(p, message.id, ErrorCode.DUPLICATE_ID, f"request id {message.id} is already in use")
            return
        if len(p.open) >= self.limits.max_pending:
            self._error(p, message.id, ErrorCode.TOO_MANY, f"more than {self.limits.max_pending} requests open at once")
            return
        if isinstance(message, StoreAsk):
            if isinstance(message, PushImage):
                if p.streams() >= self.limits.max_streams:
                    self._error(p, message.id, ErrorCode.TOO_MANY, f"more than {self.limits.max_streams} streams open")
                    return
                p.sends[message.id] = Route(p.id, message.id, HUB, message.id, upload=True)  # to the store
            p.open[message.id] = (HUB, 0)
            self._out.append(StoreRequest(p.id, message, p.credential))
        elif isinstance(message, MarketQuery):
            self._describe(p, message)
        elif isinstance(message, ActivitiesQuery):
            self._list_activities(p, message)
        elif isinstance(message, Rent):
            self._rent(p, message)
        elif isinstance(message, BalanceQuery):
            self._balance(p, message)
        elif isinstance(message, LedgerQuery):
            self._ledger_list(p, message)
        elif isinstance(message, VerdictReport):
            self._verdict(p, message)
        elif isinstance(message, Unpublish):
            self._unpublish(p, message)
        else:
            activity = self.activities.get(message.activity)
            absent = activity is not None and activity.requestor == p.id and activity.state == "absent"
            if activity is not None and absent and not isinstance(message, Publish):  # a publish needs it ready
                self._park(p, activity, message)
                return
            reaches = isinstance(message, Connect | Publish) and self._reaches(p, activity)
            if activity is None or not (activity.requestor == p.id or reaches) or activity.state != "ready":
                self._error(
                    p, message.id, ErrorCode.UNKNOWN_ACTIVITY, f"no activity {message.activity!r} of yours is ready"
                )
                return
            if isinstance(message, Release):
                self._destroy(activity, p.id, message.id)
            elif isinstance(message, Publish):
                self._publish(p, activity, message)
            else:
                self._forward(p, activity, message)

    def _from_provider(self, p: Peer, message: Message) -> None:
        if message.type not in PROVIDER_SENDS:
            self._error(
                p, getattr(message, "id", None), ErrorCode.OUT_OF_ORDER, f"a provider may not send {message.type!r}"
            )
            return
        if isinstance(message, Offer):
            p.price = message.price
            self._offered(p, message)  # a provider back after a restart holds its activities' capacity already
            if self.cluster is not None:  # the other hubs sell it too
                self._out.append(SaveOffer(p.name, message.resources, offer_text(p.minor, message)))
            self._send(p.id, Done(type="done", re=message.id))
            return
        if isinstance(message, Credit):
            self._credit(p, message)
            return
        if isinstance(message, Usage):
            self._usage(p, message)
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
