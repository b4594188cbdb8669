"""Sessions joined through the hub's core in memory: no sockets, no event loop, a fake clock.

Each side is a protocol :class:`~kiln.protocol.session.Session` (a requestor's or a
provider's), the hub is a :class:`~kiln.hub.core.HubCore`; the loopback is the I/O layer
between them, pared down to what moves frames: what a session wants to send goes to the
hub's :meth:`~kiln.hub.core.HubCore.receive_text` or
:meth:`~kiln.hub.core.HubCore.receive_binary`, and the hub's actions are carried out as its
server would (a :class:`~kiln.hub.actions.Send` reaches the peer's session, a binary one is
then reported :meth:`~kiln.hub.core.HubCore.delivered`; a :class:`~kiln.hub.actions.Close`
ends the peer's connection). Time moves only when told (:meth:`Loopback.advance`), which
also runs the hub's deadlines (:meth:`~kiln.hub.core.HubCore.expire`).

What has no place here is kept for the test to look at: the hub's log lines, the changes it
would write to its state, and what it asks of the image store (answer through
:meth:`Loopback.apply` with what :meth:`~kiln.hub.core.HubCore.store_reply` returns)::

    loop = Loopback()
    requestor = loop.join(Session("requestor", "r"))
    provider = loop.join(Session("provider", "p"))
    loop.pump()  # hello and welcome, both ways
    loop.session(provider).request(Offer(...))
    loop.pump()  # then read each session's events_received()

The sessions' events are left for their owner: the loopback only moves frames.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kiln.hub.actions import (
    Action,
    Close,
    Log,
    PortAction,
    PortClosed,
    PortCredit,
    PortFrame,
    Send,
    StoreAction,
    Withdrawn,
)
from kiln.hub.core import HubCore
from kiln.hub.records import Change
from kiln.protocol.session import Outbound, Session


@dataclass
class FakeClock:
    """The hub's two clocks, moved only by :meth:`advance`."""

    monotonic_now: float = 0.0
    wall_at_start: float = 1_750_000_000.0

    def monotonic(self) -> float:
        return self.monotonic_now

    def time(self) -> float:
        return self.wall_at_start + self.monotonic_now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self.monotonic_now += seconds


def default_hub(clock: FakeClock) -> HubCore:
    """An open hub on ``clock`` whose activity ids count up (``a1``, ``a2``, ...)."""
    numbers = itertools.count(1)
    return HubCore(clock=clock.time, monotonic=clock.monotonic, new_activity_id=lambda: f"a{next(numbers)}")


@dataclass
class Loopback:
    """Sessions and a hub core, wired together in memory."""

    clock: FakeClock = field(default_factory=FakeClock)
    hub_factory: Callable[[FakeClock], HubCore] = default_hub
    """Makes the hub on the loopback's clock (pass one to set its limits, grace, credentials...)."""
    logs: list[Log] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    """What the hub would write to its state, in order."""
    store: list[StoreAction] = field(default_factory=list)
    """What the hub asked of its image store (there is none here)."""
    ports: list[PortAction] = field(default_factory=list)
    """What the hub asked of its publish listener (there is none here)."""
    closed: dict[int, tuple[int, str]] = field(default_factory=dict)
    """Peers the hub closed: the close code and reason."""
    record: bool = False
    """Keep every frame a session sent the hub in :attr:`carried` (for tests of what a side sends)."""
    carried: list[tuple[int, Outbound]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.hub = self.hub_factory(self.clock)
        self._sessions: dict[int, Session] = {}
        self._peers = itertools.count(1)
        self._delivered: deque[tuple[int, int]] = deque()

    # --- peers ----------------------------------------------------------------------------

    def join(self, session: Session) -> int:
        """Connect ``session`` to the hub (its ``hello`` goes at the next :meth:`pump`); returns its peer id."""
        peer = next(self._peers)
        self._sessions[peer] = session
        self.hub.connect(peer)
        return peer

    def session(self, peer: int) -> Session:
        return self._sessions[peer]

    def connected(self, peer: int) -> bool:
        return peer in self._sessions

    def lose(self, peer: int, reason: str = "connection lost without a close frame") -> None:
        """The connection of ``peer`` breaks: its session and the hub each learn it."""
        self._drop(peer, reason, reason)
        self.pump()

    def leave(self, peer: int) -> None:
        """``peer`` ends its session (:meth:`Session.close`) and closes its connection with code 1000."""
        session = self._sessions.get(peer)
        if session is None:
            return
        session.close()
        self._drop(peer, "closed by this side", "closed with code 1000", ended=True)
        self.pump()

    # --- moving frames and time ----------------------------------------------------------

    def pump(self) -> None:
        """Carry frames and actions until nothing moves: every session's output to the hub, the
        hub's to the sessions, and each binary frame's delivery back to the hub."""
        moving = True
        while moving:
            moving = False
            for peer, session in list(self._sessions.items()):
                for out in session.data_to_send():
                    moving = True
                    if self.record:
                        self.carried.append((peer, out))
                    if peer not in self._sessions:
                        break  # closed by the hub while this was in flight: nothing more is read
                    receive = self.hub.receive_binary if out.binary else self.hub.receive_text
                    self.apply(receive(peer, out.data))
            while self._delivered:
                moving = True
                self.apply(self.hub.delivered(*self._delivered.popleft()))

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: the hub's deadlines run (:meth:`HubCore.expire`), then :meth:`pump`."""
        self.clock.advance(seconds)
        self.apply(self.hub.expire())
        self.pump()

    def apply(self, actions: Iterable[Action]) -> None:
        """Carry out the hub's actions in order, as its server does."""
        for action in actions:
            if isinstance(action, Send):
                session = self._sessions.get(action.peer)
                if session is None:
                    continue  # its connection is gone: the server drops what was queued for it
                if action.binary:
                    session.receive_binary(action.data)
                    self._delivered.append((action.peer, len(action.data)))
                else:
                    session.receive_text(action.data)
            elif isinstance(action, Close):
                self.closed[action.peer] = (action.code, action.reason)
                said = f"the hub closed it with code {action.code}" + (f" ({action.reason})" if action.reason else "")
                self._drop(action.peer, said, f"closed with code {action.code}")
            elif isinstance(action, Log):
                self.logs.append(action)
            elif isinstance(action, Change):
                self.changes.append(action)
            elif isinstance(action, PortCredit | PortFrame | PortClosed | Withdrawn):
                self.ports.append(action)
            else:
                self.store.append(action)

    def _drop(self, peer: int, told: str, hub_reason: str, *, ended: bool = False) -> None:
        session = self._sessions.pop(peer, None)
        if session is None:
            return
        session.connection_lost(told)
        self.apply(self.hub.disconnect(peer, hub_reason, ended=ended))
