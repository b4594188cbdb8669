"""The relay: a requestor's requests on its activities go to their providers under ids of the
hub's, the replies come back under the requestor's; stream frames pass within the credit their
receivers granted (:mod:`kiln.hub.flow`); a provider's departure ends what it held.

A layer of :class:`~kiln.hub.core.HubCore` (see :mod:`kiln.hub.base`).
"""

from __future__ import annotations

from kiln.hub.actions import Action, Close, PortClosed, PortFrame, PushFrame, ServeStop
from kiln.hub.base import shown
from kiln.hub.flow import HUB, PORTS, Route
from kiln.hub.leases import Leases, not_stored
from kiln.hub.peers import ABSENT, Lease, Peer, Pending
from kiln.hub.records import LeaseRecord, SaveLease
from kiln.protocol import frames, limits
from kiln.protocol.codes import CloseCode, ErrorCode
from kiln.protocol.frames import Frame, FrameKind
from kiln.protocol.messages import (
    ActivityLost,
    Cancel,
    Connect,
    Credit,
    Done,
    Download,
    DownloadInfo,
    Error,
    Exec,
    ExecResult,
    Rented,
    Upload,
)


class Relay(Leases):
    """Requests, replies and stream frames between requestors and providers."""

    def _relay_frame(self, p: Peer, frame: Frame, data: bytes) -> None:
        """A stream frame from ``p``: passed on toward the stream's receiver, within its credit."""
        route = p.sends.get(frame.stream)
        # A requestor's stream id is its request id, so the error can name it; a provider's is
        # the hub's, which the provider cannot match against its own requests.
        re = frame.stream if p.role == "requestor" else None
        if route is None or route.ended:
            self._error(p, re, ErrorCode.UNKNOWN_STREAM, f"no open stream {frame.stream} to send on")
            return
        if frame.kind is FrameKind.DATA:
            if not self.flow.spend(route):
                what = "the push" if route.push else "the stream"
                self._error(
                    p,
                    re,
                    ErrorCode.FLOW_CONTROL,
                    f"DATA frame on stream {frame.stream} without credit; {what} is aborted",
                )
                self._close_route(route)
                self._pass_on(route, FrameKind.ABORT, b"sender broke flow control")
                return
            if route.credit == 0 and route.upload and not route.push:
                self.deadlines.stall(route)
            if route.upload and not route.push:
                self.tallies.to_provider_bytes += len(frame.payload)
            elif not route.upload:
                self.tallies.to_requestor_bytes += len(frame.payload)
        else:
            route.ended = True
            route.last = frame.kind
        if route.receiver == ABSENT:
            return  # a request waiting for its provider: END or ABORT is told when it goes on
        self._pass_on(route, frame.kind, frame.payload, data)

    def _pass_on(self, route: Route, kind: FrameKind, payload: bytes | memoryview, data: bytes | None = None) -> None:
        """Write a frame of ``route`` toward its receiver (``data``: the frame as it came, re-addressed)."""
        if route.push:
            self._out.append(PushFrame(route.requestor, route.r_id, kind, bytes(payload)))
            return
        target, target_id = (route.provider, route.p_id) if route.upload else (route.requestor, route.r_id)
        if target == PORTS:
            self._out.append(PortFrame(target_id, kind, bytes(payload)))
        elif data is not None:
            self._send_binary(target, frames.with_stream(data, target_id))
        else:
            self._send_binary(target, frames.encode(kind, target_id, bytes(payload)))

    def _reaches(self, p: Peer, activity: Lease | None) -> bool:
        """Whether requestor ``p`` may reach a port of ``activity`` (``connect``, ``publish``) though
        another session holds it: one of the same credential, or any on a hub without credentials
        (so that ``kiln forward`` from a second process reaches a job's containers)."""
        if activity is None:
            return False
        if self.credentials is None or not self.credentials.required():
            return True
        return p.credential is not None and activity.credential == p.credential.id

    def _forward(self, p: Peer, activity: Lease, message: Exec | Upload | Download | Connect) -> None:
        q = self.peers[activity.provider]
        inward = isinstance(message, Upload | Connect) or (isinstance(message, Exec) and message.stdin)
        outward = isinstance(message, Download | Connect) or (isinstance(message, Exec) and message.stream)
        if isinstance(message, Exec) and message.streams and q.minor < 2:
            text = f"the provider of activity {activity.id} speaks protocol 1.{q.minor}: an exec's streams need 1.2"
            self._error(p, message.id, ErrorCode.UNSUPPORTED_VERSION, text)
            return
        if isinstance(message, Connect) and q.minor < 7:
            text = f"the provider of activity {activity.id} speaks protocol 1.{q.minor}: a connect needs 1.7"
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
            self.deadlines.stall(route)  # until the provider's first credit says it is ready
        if outward:
            route = Route(p.id, message.id, q.id, hub_id, upload=False)
            q.sends[hub_id] = p.receives[message.id] = route
            pending.routes.append(route)
            # The first credit rides in the request: at least one chunk of it now, the rest
            # as the requestor's budget at the hub has room (see Flow.first).
            assert not isinstance(message, Upload)
            window = min(message.window or limits.OUTPUT_WINDOW, self.limits.max_window)
            message = message.model_copy(update={"window": self.flow.first(route, window)})
        p.open[message.id] = (q.id, hub_id)
        self._send(q.id, message, {"id": hub_id})
        if isinstance(message, Exec):
            self.tallies.commands += 1
        elif isinstance(message, Connect):
            self.tallies.connects += 1

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
        self.flow.grant(route, message.chunks)

    def _close_route(self, route: Route) -> None:
        """The stream is over: the credit its sender held toward the receiver is free again."""
        self.flow.end(route)

    def delivered(self, peer: int, size: int) -> list[Action]:
        """``size`` bytes of stream frames toward ``peer`` have been written: its credit may flow again."""
        self.flow.delivered(peer, size)
        return self._flush()

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
                self._rent_answered(reply.code, pending.asked)
                if reply.code not in (ErrorCode.CANCELLED, ErrorCode.IMAGE_NOT_FOUND):  # not the provider's doing
                    self.reputation.failed_to_start(p.name)
                self._drop_activity(activity)
                if reply.code == ErrorCode.IMAGE_NOT_FOUND and pending.stored is None:
                    reply = reply.model_copy(update={"message": not_stored(reply.message, pending.image)})
                self._to_requestor(p, pending, reply)
            elif requestor is None or pending.r_id is None or pending.cancelled:
                # The cancelled rent is answered once the container is gone (see the destroy branch).
                self._rent_answered(ErrorCode.CANCELLED, pending.asked)
                self._destroy(activity, requestor.id if requestor else None, pending.r_id, cancelled=True)
            else:
                activity.state = "ready"
                activity.started = self._clock()
                self.reputation.started(p.name)
                activity.saved = True
                meter = self.ledger.meters.get(activity.id)
                if meter is not None:  # billed from now on
                    meter.started = activity.started
                    self.ledger.schedule(meter, activity.started + self.ledger.capture_interval)
                if activity.max_duration is not None:
                    self._expire_at(activity.id, activity.started + activity.max_duration)
                record = LeaseRecord(
                    activity.id,
                    requestor.session,
                    p.name,
                    activity.resources,
                    activity.group,
                    activity.image,
                    activity.started,
                    price=meter.price if meter is not None else None,
                    max_duration=activity.max_duration,
                )
                self._out.append(SaveLease(record, self._session_record(requestor)))  # before rented
                self._log("info", f"activity {activity.id} of {shown(requestor.name)} runs on {shown(p.name)}")
                # What the provider fetched says best whether it held the image (its offer may be stale).
                pulled = reply.bytes if isinstance(reply, Done) and pending.stored is not None else None
                cached = activity.cached if pulled is None else pulled == 0
                told = (pulled or 0) if pending.stored is not None and requestor.minor >= 1 else None
                rented = Rented(
                    type="rented",
                    re=pending.r_id,
                    activity=activity.id,
                    provider=p.name,
                    cached=cached,
                    resources=activity.resources,
                    pulled=told,
                )
                price = meter.price if meter is not None else p.price  # what it is billed at, not a later offer
                if requestor.minor >= 5 and price is not None:
                    rented = rented.model_copy(update={"price": price, "hold": meter.held if meter else None})
                self._send(requestor.id, rented)
                self._rent_answered(None, pending.asked)
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
        elif pending.kind == "meter":
            if (meter := self.ledger.meters.get(pending.activity)) is not None:
                meter.asking = False
            if activity is not None and activity.state == "ready":
                self._charge(activity, reply.cpu_seconds if isinstance(reply, Done) else None)
        else:
            if isinstance(reply, ExecResult) and reply.timed_out:
                self.reputation.timed_out(p.name)
            failed = (isinstance(reply, Error) and reply.code != ErrorCode.CANCELLED) or (
                isinstance(reply, ExecResult) and reply.exit_code != 0
            )
            if pending.kind == "exec" and failed:
                self.tallies.command_failures += 1
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

    def _to_requestor(self, p: Peer, pending: Pending, reply: Done | Error | ExecResult | DownloadInfo) -> None:
        """Relay provider ``p``'s reply to the requestor that asked (if still here), under its own id.

        An error names the provider that sent it: the hub says which, whatever the provider claims.
        """
        if pending.requestor == PORTS and pending.r_id is not None:
            self._port_ended(pending.r_id, reply.message if isinstance(reply, Error) else None)
        elif pending.r_id is not None and pending.requestor in self.peers:
            update: dict[str, int | str] = {"re": pending.r_id}
            if isinstance(reply, Error):
                update["provider"] = p.name
            self._send(pending.requestor, reply, update)

    def _port_ended(self, conn: int, error: str | None) -> None:
        """The connect that carried the publish listener's connection ``conn`` is over."""
        self._ports.pop(conn, None)
        self._out.append(PortClosed(conn, error))

    def _fail_requestor(self, pending: Pending, code: ErrorCode, message: str) -> None:
        if pending.requestor == PORTS and pending.r_id is not None:
            self._port_ended(pending.r_id, message)
        elif pending.r_id is not None and pending.requestor in self.peers:
            self._send(pending.requestor, Error(type="error", re=pending.r_id, code=code, message=message))

    def _provider_gone(self, p: Peer, reason: str, *, leaving: bool = False, away: bool = False) -> None:
        """Provider ``p`` is gone: what it held is lost, and what was asked of it fails. ``away``: it
        was another hub's, and the link to that hub broke (or the provider is moving to another
        hub): its live leases are absent instead, as after a restart, until it is reached again
        within the grace period (:meth:`~kiln.hub.core.HubCore.remote_linked`)."""
        self._log("info" if leaving else "warning", f"provider {shown(p.name)} left: {shown(reason)}")
        if self.cluster is not None and p.hub is None:
            self.cluster.release_provider(p.name)  # another hub may take it now
        why = f"provider {p.name!r} disconnected: {reason}"
        lost: dict[int, list[Lease]] = {}  # by requestor: one event each, however many it lost
        if away:
            self._absent_until = max(self._absent_until, self._monotonic() + self.grace)
        # activity_lost goes first, so a requestor knows why before its requests fail.
        for activity_id in sorted(p.activities):
            activity = self.activities.get(activity_id)
            if activity is None:
                continue
            if away and activity.state in ("ready", "absent"):
                self._ungroup(activity)
                self.market.release(p.id, activity.resources)
                activity.provider, activity.state = ABSENT, "absent"
                self._absent.setdefault(p.name, set()).add(activity_id)
                continue
            del self.activities[activity_id]
            self._ended(activity, None)
            if activity.state == "creating":
                self.reputation.failed_to_start(p.name)
            elif activity.state in ("ready", "absent"):
                self.reputation.lost(p.name)
                lost.setdefault(activity.requestor, []).append(activity)
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
            if pending.kind == "create":
                self._rent_answered(ErrorCode.PROVIDER_LOST, pending.asked)
            for route in pending.routes:
                self._end_route(route)
            requestor = self.peers.get(pending.requestor) if pending.requestor is not None else None
            if pending.requestor == PORTS:
                self._fail_requestor(pending, ErrorCode.PROVIDER_LOST, why)
            if requestor is None or pending.r_id is None:
                continue
            requestor.open.pop(pending.r_id, None)
            if pending.kind == "destroy" and pending.cancelled:
                self._fail_requestor(pending, ErrorCode.CANCELLED, "rent cancelled")
            elif pending.kind == "destroy":
                self._send(requestor.id, Done(type="done", re=pending.r_id))  # the container went with it
            else:
                self._fail_requestor(pending, ErrorCode.PROVIDER_LOST, why)
        for leases in lost.values():
            self._lost(leases, f"with provider {p.name}")
        for route in [*p.sends.values(), *p.receives.values()]:
            self._end_route(route)
        p.activities.clear()
        p.pending.clear()
        self.market.remove(p.id)

    def _forget_remote(self, p: Peer, reason: str) -> None:
        """Remote provider ``p`` is sold here no more (connected to no hub, or to this one now): its
        leases wait for it to come back within the grace period; its link goes."""
        self._provider_gone(p, reason, away=True)
        del self.peers[p.id]
        self.flow.close(p.id)
        if self.providers.get(p.name) == p.id:
            del self.providers[p.name]
        self._out.append(Close(p.id, CloseCode.GOING_AWAY, reason))

    def _starved(self, now: float) -> None:
        """Abort each stream toward a provider that granted it no credit for the credit timeout.

        Its request fails at once for the requestor (``transfer_failed``); the provider gets
        ABORT and a ``cancel`` (its task may wait on something else of the container's), and
        its late reply is dropped. Only that request ends: the provider, and everyone else's
        activities on it, go on.
        """
        timeout = self.deadlines.credit_timeout
        while (route := self.deadlines.starved(now)) is not None:
            q = self.peers.get(route.provider)
            if q is None:
                continue
            why = f"no credit for {timeout:g} s"
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
            self.reputation.transfer_failed(q.name)
            text = f"provider {q.name!r} granted the stream no credit for {timeout:g} s: aborted"
            self._fail_requestor(pending, ErrorCode.TRANSFER_FAILED, text)
            requestor = self.peers.get(pending.requestor) if pending.requestor is not None else None
            if requestor is not None and pending.r_id is not None:
                requestor.open.pop(pending.r_id, None)
            pending.requestor = pending.r_id = None  # its late reply goes to no one
