"""Sessions: hello and welcome, a requestor's session resumed after its connection dropped,
and what the hub takes back after a restart.

A requestor whose connection ends keeps its activities for ``grace`` seconds (its open
requests are cancelled, its streams aborted): a ``hello`` carrying the ``resume`` secret of
its last ``welcome`` takes them over under the new peer id. After a restart
(:meth:`Sessions.restore`) each session is held as if its requestor had just left, and each
of its leases is *absent* until its provider dials again and reports it (requests on it are
parked meanwhile).

A layer of :class:`~kiln.hub.core.HubCore` (see :mod:`kiln.hub.base`).
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Sequence

from kiln.hub.access import Admitted, Credential, admit
from kiln.hub.actions import Action, Close, PushCancelled
from kiln.hub.base import (
    credential_id,
    secret_digest,
    shown,
)
from kiln.hub.flow import Route
from kiln.hub.ledger import requestor_account
from kiln.hub.peers import ABSENT, Lease, Peer
from kiln.hub.ports import Ports
from kiln.hub.records import Adopted, EndSession, LeaseRecord, MeterRecord, SaveSession, SessionRecord
from kiln.protocol import frames
from kiln.protocol.codes import (
    CLOSE_HANDSHAKE,
    CLOSE_NAME_TAKEN,
    CLOSE_RESUMED,
    CLOSE_TOO_MANY,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNSUPPORTED_VERSION,
    CloseCode,
    ErrorCode,
)
from kiln.protocol.frames import FrameKind
from kiln.protocol.messages import (
    MAJOR_VERSION,
    MINOR_VERSION,
    PROTOCOL_VERSION,
    ActivityLost,
    Cancel,
    Connect,
    Done,
    Download,
    Error,
    Exec,
    Hello,
    Message,
    Release,
    Upload,
    Welcome,
    clip,
)


class Sessions(Ports):
    """Who a peer is, and what outlives its connection (and the hub's)."""

    def restore(
        self, sessions: list[SessionRecord], leases: list[LeaseRecord], meters: Sequence[MeterRecord] = ()
    ) -> list[Action]:
        """Take back what the last run of the hub wrote down (:meth:`kiln.hub.io.state.HubState.load`,
        and the ``meters`` of priced leases: :meth:`~kiln.hub.io.state.HubState.meters`).

        Call once, before any peer connects. Each session is held for the grace period, as if
        its requestor had just left; its leases are absent until their providers report them.
        A restored lease's meter goes on from its last capture (the next one's key follows it);
        that of a lease not restored is settled now: captured, and its hold's rest released.
        """
        held, taken = self._take_back(sessions, leases, meters)
        if sessions:
            self._log(
                "info",
                f"restored {held} sessions holding {taken} activities on "
                f"{len(self._absent)} providers; waiting {self.grace:g} s for them",
            )
        return self._flush()

    def _adopt(self, adopted: Adopted, why: str) -> None:
        """Take over sessions a dead hub held (:mod:`kiln.hub.cluster`), as a restart takes back its own."""
        held, taken = self._take_back(adopted.sessions, adopted.leases, adopted.meters)
        if held:
            self._log("info", f"adopted {held} sessions holding {taken} activities from a hub gone ({why})")

    def _take_back(
        self, sessions: list[SessionRecord], leases: list[LeaseRecord], meters: Sequence[MeterRecord]
    ) -> tuple[int, int]:
        """Hold ``sessions`` for the grace period, their ``leases`` absent until their providers
        report them; how many sessions and leases were taken."""
        accounts: dict[str, str] = {}
        until = self._monotonic() + self.grace
        self._absent_until = max(self._absent_until, until)
        held: dict[str, Peer] = {}
        for record in sessions:
            if record.secret in self._sessions:
                continue  # held here already
            credential = None if record.credential is None else Credential(record.credential, "requestor", None)
            self._held_ids -= 1
            old = Peer(
                id=self._held_ids,
                role="requestor",
                name=record.name,
                credential=credential,
                minor=MINOR_VERSION,
                secret=record.secret,
                session=record.id,
                saved=True,
            )
            held[record.id] = old
            self._held[old.id] = (old, until)
            self._sessions[old.secret] = old.id
        taken = [lr for lr in leases if lr.session in held and lr.id not in self.activities]
        for lr in taken:
            owner = held[lr.session]
            lease = Lease(
                lr.id,
                owner.id,
                ABSENT,
                lr.resources,
                group=lr.group,
                state="absent",
                image=lr.image,
                provider_name=lr.provider,
                requestor_name=owner.name,
                credential=credential_id(owner),
                started=lr.started,
                saved=True,
            )
            self.activities[lease.id] = lease
            owner.activities.add(lease.id)
            self._absent.setdefault(lr.provider, set()).add(lease.id)
            lease.max_duration = lr.max_duration
            if lr.max_duration is not None:
                self._expire_at(lease.id, lr.started + lr.max_duration)
            if owner.credential is not None:
                accounts[lease.id] = requestor_account(owner.credential.id)
            if lease.image is not None:
                self.catalog.use(lease.image, self._clock())
        self._restore_meters(leases, meters, accounts)
        return len(held), len(taken)

    def _handshake(self, p: Peer, message: Message) -> None:
        if not isinstance(message, Hello):
            self._refuse(p, ErrorCode.OUT_OF_ORDER, f"expected hello, got {message.type!r}", CLOSE_HANDSHAKE)
            return
        claimed = (message.role, message.name)
        major = int(message.version.split(".")[0])
        if major != MAJOR_VERSION:
            text = f"this hub speaks protocol version {PROTOCOL_VERSION} (major {MAJOR_VERSION}), not {message.version}"
            self._refuse(p, ErrorCode.UNSUPPORTED_VERSION, text, CLOSE_UNSUPPORTED_VERSION, claimed=claimed)
            return
        verdict = admit(message, self.token, self.credentials)
        if not isinstance(verdict, Admitted):
            self._refuse(p, ErrorCode.UNAUTHORIZED, verdict.message, CLOSE_UNAUTHORIZED, claimed=claimed)
            return
        if message.role == "requestor" and message.resume is not None and not self._adopted(p, message.resume):
            return
        known = self.peers.get(self.providers.get(message.name, 0)) if message.role == "provider" else None
        if known is not None and known.hub is None:
            text = f"a provider named {message.name!r} is already connected"
            self._refuse(p, ErrorCode.NAME_TAKEN, text, CLOSE_NAME_TAKEN, claimed=claimed)
            return
        if verdict.credential is not None and self._per_credential[verdict.credential.id] >= self.per_credential:
            text = f"credential {verdict.credential.id} holds {self.per_credential} connections already (the most)"
            self._refuse(p, ErrorCode.TOO_MANY, text, CLOSE_TOO_MANY, claimed=claimed)
            return
        if message.role == "provider" and self.cluster is not None:
            if not self.cluster.claim_provider(message.name):
                text = f"a provider named {message.name!r} is connected to another hub"
                self._refuse(p, ErrorCode.NAME_TAKEN, text, CLOSE_NAME_TAKEN, claimed=claimed)
                return
            if known is not None:  # sold here from its old hub until now: its leases wait for this connection
                self._forget_remote(known, "connected to this hub now")
            self.number(p)
            p.running = list(message.activities or ())
        p.role = message.role
        p.name = message.name
        p.credential = verdict.credential
        if p.credential is not None:
            self._per_credential[p.credential.id] += 1
        p.minor = min(MINOR_VERSION, int(message.version.split(".")[1]))
        if p.role == "provider":
            self.providers[p.name] = p.id
            self._joined[p.id] = self._monotonic()
            self.reputation.connected(p.name)
        resumable = p.role == "requestor" and p.minor >= 2
        resumed = self._resume(p, message.resume) if resumable and message.resume is not None else None
        if p.role == "requestor" and not p.session:
            p.session = secrets.token_hex(8)
        secret = secrets.token_urlsafe(24) if resumable and self.grace > 0 else None
        if secret is not None:
            p.secret = secret_digest(secret)
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
        self.tallies.joins[p.role] += 1
        back = f", resuming {len(resumed)} activities" if resumed else ""
        software = message.software or "unnamed software"
        self._note("join", p.role, p.name, f"{software}, protocol 1.{p.minor}{back}", credential_id(p))
        if p.role == "provider":
            self._reconcile(p, message.activities if p.minor >= 3 and message.activities is not None else [])

    def _adopted(self, p: Peer, secret: str) -> bool:
        """Adopt the session ``secret`` resumes if a dead hub of the database held it (True: go on).
        While a hub that holds it is not found dead yet, the hello is closed with 1013, and the
        requestor dials again (its session is neither lost nor held twice)."""
        key = secret_digest(secret)
        if self.cluster is None or key in self._sessions:
            return True
        adopted = self.cluster.adopt_session(key)
        if adopted is not None and adopted.elsewhere:
            self._out.append(Close(p.id, CloseCode.TRY_AGAIN, "another hub holds this session: try again"))
            return False
        if adopted is not None:
            self._adopt(adopted, "its requestor resumed it here")
            self._found_here(adopted)
        return True

    def _found_here(self, adopted: Adopted) -> None:
        """Adopted leases on providers connected to this hub are back at once if their provider runs
        them (links created them: :attr:`Peer.running`), lost if not: no hello will report them."""
        for name in sorted({lr.provider for lr in adopted.leases}):
            peer = self.providers.get(name)
            p = self.peers.get(peer) if peer is not None else None
            if p is not None and p.hub is None and name in self._absent:
                self._reconcile(p, [a for a in p.running if a in self._absent[name]])

    def _reconcile(self, p: Peer, running: list[str]) -> None:
        """Provider ``p`` (dialling again) still runs ``running``: take back the leases the hub
        held for it since a restart (or adopted from a hub gone), and have it destroy what nobody holds."""
        # A provider of another hub runs others' activities too: that hub (or their own) keeps or ends them.
        remote = p.hub is not None
        unknown = [activity for activity in dict.fromkeys(running) if activity not in self.activities]
        elsewhere: frozenset[str] = frozenset()
        if unknown and self.cluster is not None and not remote:
            adopted = self.cluster.adopt_leases(p.name, unknown)
            self._adopt(adopted, f"provider {shown(p.name)} runs their activities")
            elsewhere = adopted.elsewhere
        absent = self._absent.pop(p.name, set())
        kept = 0
        for activity_id in dict.fromkeys(running):
            lease = self.activities.get(activity_id)
            if lease is None or activity_id not in absent:
                # Nobody was told of it, or its lease ended while the hub was away: not to be kept.
                if not remote and activity_id not in elsewhere:
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

    def _unpark(self, lease: Lease, message: Exec | Upload | Download | Connect | Release) -> None:
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
        self.reputation.lost(lease.provider_name)
        self._drop_activity(lease)
        self._lost([lease], f"({why})")
        owner = self.peers.get(lease.requestor)
        if owner is None:
            return
        self._send(
            owner.id,
            ActivityLost(type="activity_lost", activity=lease.id, code=ErrorCode.PROVIDER_LOST, reason=clip(why)),
        )
        for message in lease.parked:
            if owner.open.pop(message.id, None) is None:
                continue
            self._held_stream(owner, message.id)
            if isinstance(message, Release):
                self._send(owner.id, Done(type="done", re=message.id))  # the container is gone with it
            else:
                self._send(
                    owner.id, Error(type="error", re=message.id, code=ErrorCode.PROVIDER_LOST, message=clip(why))
                )
        lease.parked.clear()

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
        key = secret_digest(secret)
        old_id = self._sessions.get(key)
        owner = self.peers.get(old_id) if old_id is not None else None
        if owner is None and old_id is not None:
            owner = self._held[old_id][0]
        if owner is not None and credential_id(owner) != credential_id(p):
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

    def _park(self, p: Peer, lease: Lease, message: Exec | Upload | Download | Connect | Release) -> None:
        """The provider of ``lease`` has not dialled again since the hub restarted: ``message``
        waits for it (bounded by max_pending and max_streams, and by the grace period, which
        loses the lease). A stream the requestor sends on is held open meanwhile without
        credit, so its END or ABORT, which need none, is kept for when the request goes on."""
        inward = isinstance(message, Upload | Connect) or (isinstance(message, Exec) and message.stdin)
        outward = isinstance(message, Download | Connect) or (isinstance(message, Exec) and message.stream)
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

    def _requestor_gone(self, p: Peer, *, ended: bool = False) -> None:
        self._sessions.pop(p.secret, None)
        hold = bool(p.secret) and bool(p.activities) and not ended
        if hold:
            self._log(
                "info", f"requestor {shown(p.name)} left; holding {len(p.activities)} activities for {self.grace:g} s"
            )
        else:
            self._log("info", f"requestor {shown(p.name)} left; destroying {len(p.activities)} activities")
        for request, route in p.sends.items():
            if route.push:
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
            # Its connections to others' activities (a sibling session's: connect) end with it.
            for provider, hub_id in p.open.values():
                pending = self.peers[provider].pending.get(hub_id) if provider in self.peers else None
                if pending is not None and pending.kind == "connect":
                    self._send(provider, Cancel(type="cancel", target=hub_id))
            self._withdraw_session(p.session)
            self._destroy_ready(self._leases(p))
            if p.saved:
                self._out.append(EndSession(p.session))
            return
        # The activities stay; what ran in them for this connection has nowhere to report.
        for provider, hub_id in p.open.values():
            pending = self.peers[provider].pending.get(hub_id) if provider in self.peers else None
            if pending is not None and pending.kind in ("exec", "upload", "download", "connect"):
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

    def _expire_sessions(self, now: float) -> None:
        """Destroy what the requestors that did not come back in time held, and the absent leases
        whose providers did not come back within the grace period of the hub's restart."""
        for old in [old for old, until in self._held.values() if until <= now]:
            del self._held[old.id]
            self._sessions.pop(old.secret, None)
            leases = self._leases(old)
            self._log(
                "info",
                f"requestor {shown(old.name)} did not come back within {self.grace:g} s; "
                f"destroying {len(leases)} activities",
            )
            self._withdraw_session(old.session)
            self._destroy_ready(leases)
            if old.saved:
                self._out.append(EndSession(old.session))
        if self._absent and self._absent_until <= now:
            for name, absent in sorted(self._absent.items()):
                why = f"provider {name!r} did not come back within {self.grace:g} s of the hub's restart"
                self._log("warning", f"{why}; {len(absent)} activities lost")
                connected = self.peers.get(self.providers.get(name, ABSENT))
                for activity_id in sorted(absent):
                    if (lease := self.activities.get(activity_id)) is not None:
                        self._lose(lease, why)
                        if connected is not None:  # adopted from a hub gone, it never said it was back
                            self._send_destroy(connected, activity_id, None, None)
            self._absent.clear()
