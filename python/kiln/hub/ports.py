"""Published ports (1.7): ``publish`` and ``unpublish``, and the connects the hub opens itself to
carry the requests its publish listener (:mod:`kiln.hub.io.published`) takes.

A requestor's ``publish`` (of its own activity, or of another session's of its credential, as
for ``connect``) gets a token and the URL the listener serves it at (:mod:`kiln.hub.publications`).
Each connection the listener takes for a token is carried over a ``connect`` to the port, whose
requestor end is the hub itself (:data:`~kiln.hub.flow.PORTS`), under the listener's id for the
connection: :meth:`Ports.port_open`, then :meth:`Ports.port_send` within the credit the service
grants (:class:`~kiln.hub.actions.PortCredit`), :meth:`Ports.port_grant` as the listener writes
what comes back (:class:`~kiln.hub.actions.PortFrame`), and :meth:`Ports.port_close` when its
client goes. The connect's end is :class:`~kiln.hub.actions.PortClosed`. ``unpublish``, the end
of the activity or of the publishing session withdraw the token
(:class:`~kiln.hub.actions.Withdrawn`): the listener closes what it carries, and answers 404.

A layer of :class:`~kiln.hub.core.HubCore` (see :mod:`kiln.hub.base`).
"""

from __future__ import annotations

from kiln.hub.actions import Action, PortClosed, Withdrawn
from kiln.hub.flow import PORTS, Route
from kiln.hub.peers import Lease, Peer, Pending
from kiln.hub.publications import MAX_PER_SESSION
from kiln.hub.store_link import StoreLink
from kiln.protocol import frames
from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import UsageError
from kiln.protocol.frames import FrameKind
from kiln.protocol.messages import Cancel, Connect, Done, Publish, Published, Unpublish


class Ports(StoreLink):
    """Published ports, and the hub's own connects that carry them."""

    def _publish(self, p: Peer, activity: Lease, message: Publish) -> None:
        q = self.peers[activity.provider]
        if self.publish_base is None:
            self._error(p, message.id, ErrorCode.NOT_PUBLISHED, "this hub has no listener for published ports")
        elif q.minor < 7:
            text = f"the provider of activity {activity.id} speaks protocol 1.{q.minor}: publishing a port needs 1.7"
            self._error(p, message.id, ErrorCode.UNSUPPORTED_VERSION, text)
        elif self.published.count(p.session) >= MAX_PER_SESSION:
            text = f"more than {MAX_PER_SESSION} ports published at once: unpublish some first"
            self._error(p, message.id, ErrorCode.TOO_MANY, text)
        else:
            publication = self.published.add(activity.id, message.port, p.session)
            url = f"{self.publish_base}/s/{publication.token}/"
            self._log("info", f"port {message.port} of activity {activity.id} published for {p.name!r}")
            self._send(p.id, Published(type="published", re=message.id, token=publication.token, url=url))

    def _unpublish(self, p: Peer, message: Unpublish) -> None:
        publication = self.published.get(message.token)
        if publication is None or publication.session != p.session:
            self._error(p, message.id, ErrorCode.NOT_PUBLISHED, "no port of yours is published under that token")
            return
        self._withdraw(message.token)
        self._send(p.id, Done(type="done", re=message.id))

    def _withdraw(self, token: str) -> None:
        if self.published.remove(token) is not None:
            self._out.append(Withdrawn(token))

    def _withdraw_session(self, session: str) -> None:
        """Session ``session`` is over: what it published goes with it."""
        for token in self.published.of_session(session):
            self._withdraw(token)

    # --- the publish listener's entry points ----------------------------------------------------------

    def port_open(self, token: str, conn: int, window: int) -> list[Action]:
        """The listener took connection ``conn`` (an id of its own, 1 to 2**31 - 1) for ``token``: open a connect
        to the published port, ``window`` chunks the first credit out of it. Its first
        :class:`~kiln.hub.actions.PortCredit` says it is open; :class:`~kiln.hub.actions.PortClosed`
        that it failed (the token was withdrawn, or the activity cannot be reached now) or ended."""
        publication = self.published.get(token)
        activity = self.activities.get(publication.activity) if publication is not None else None
        q = self.peers.get(activity.provider) if activity is not None else None
        if conn in self._ports:
            raise UsageError(f"connection {conn} of the publish listener is open already")
        if publication is None or activity is None or q is None or activity.state != "ready" or q.minor < 7:
            self._out.append(PortClosed(conn, "the published port cannot be reached now"))
            return self._flush()
        hub_id = q.new_id()
        pending = q.pending[hub_id] = Pending("connect", activity.id, PORTS, conn)
        inward = Route(PORTS, conn, q.id, hub_id, upload=True)
        outward = Route(PORTS, conn, q.id, hub_id, upload=False)
        q.receives[hub_id], q.sends[hub_id] = inward, outward
        pending.routes += [inward, outward]
        self.deadlines.stall(inward)  # until the provider's first credit says it is connected
        window = self.flow.first(outward, min(window, self.limits.max_window))
        self._ports[conn] = (q.id, hub_id)
        self._send(q.id, Connect(type="connect", id=hub_id, activity=activity.id, port=publication.port, window=window))
        self.tallies.connects += 1
        return self._flush()

    def port_send(self, conn: int, kind: FrameKind, payload: bytes = b"") -> list[Action]:
        """A frame from the client of ``conn`` toward the service: DATA within the credit granted, END
        when the client closed its side, ABORT when it reset."""
        route = self._port_route(conn, upload=True)
        if route is None or route.ended:
            return []
        if kind is FrameKind.DATA:
            if not self.flow.spend(route):
                raise UsageError(f"the publish listener sent on connection {conn} without credit")
            if route.credit == 0:
                self.deadlines.stall(route)
            self.tallies.to_provider_bytes += len(payload)
        else:
            route.ended, route.last = True, kind
        self._send_binary(route.provider, frames.encode(kind, route.p_id, payload))
        return self._flush()

    def port_grant(self, conn: int, chunks: int) -> list[Action]:
        """The listener wrote out ``chunks`` DATA frames of ``conn``'s: the service may send as many more."""
        route = self._port_route(conn, upload=False)
        if route is not None and not route.ended:
            self.flow.grant(route, chunks)
        return self._flush()

    def port_close(self, conn: int) -> list[Action]:
        """The client of ``conn`` is gone (or the listener closed it): the connection is reset, its
        connect cancelled, and the provider's late answer goes to no one."""
        found = self._ports.pop(conn, None)
        q = self.peers.get(found[0]) if found is not None else None
        pending = q.pending.get(found[1]) if q is not None and found is not None else None
        if q is None or found is None or pending is None or pending.requestor != PORTS:
            return []
        for route in pending.routes:
            if route.upload and not route.ended:
                self._send_binary(q.id, frames.encode(FrameKind.ABORT, route.p_id, b"the client went away"))
            self._end_route(route)
        pending.routes = []
        pending.requestor = pending.r_id = None
        self._send(q.id, Cancel(type="cancel", target=found[1]))
        return self._flush()

    def _port_route(self, conn: int, *, upload: bool) -> Route | None:
        found = self._ports.get(conn)
        q = self.peers.get(found[0]) if found is not None else None
        if q is None or found is None:
            return None
        return (q.receives if upload else q.sends).get(found[1])
