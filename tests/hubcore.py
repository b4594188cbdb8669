"""One harness for the hub's core: a :class:`~kiln.hub.core.HubCore` on a fake clock, fed
literal messages, with everything it does recorded. No sockets, no threads, no sleeps.

    hub = HubHarness()
    p = hub.join("provider", "p1")
    hub.offer(p)
    r = hub.join("requestor", "r1")
    activity = hub.rent(r, 7)
    hub.expire(after=61)  # the clock moves only when told

What the core sends comes back from each call as ``(peer, message)`` pairs: a text frame as
its JSON, a binary frame as its bytes (only text frames with ``frames=False``). Closes,
log lines and every other action (the store's, the changes to write) are kept in
:attr:`HubHarness.closed`, :attr:`HubHarness.logs` and :attr:`HubHarness.actions`; with a
``state`` (:class:`~kiln.hub.io.state.HubState`) the changes are also written to it, in order.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kiln.hub.access import Credential
from kiln.hub.actions import Action, Close, Log, Send
from kiln.hub.core import HubCore
from kiln.hub.io.state import HubState
from kiln.hub.records import Change

GiB = 2**30
MiB = 2**20
START = 1000.0
"""Where the fake clock starts (both the wall clock and the monotonic one, unless told)."""
OFFER = {"cpus": 2, "memory": 2 * GiB, "storage": 2**40}
"""What a provider offers unless told."""


@dataclass
class FakeCredentials:
    """A credential store of tokens by value; ``ever`` says whether the hub holds (or held) any."""

    live: dict[str, Credential] = field(default_factory=dict)
    bound_names: set[str] = field(default_factory=set)
    ever: bool = True

    def required(self) -> bool:
        return self.ever

    def find(self, token: str) -> Credential | None:
        return self.live.get(token)

    def bound(self, name: str) -> bool:
        return name in self.bound_names


class HubHarness:
    """A hub core on a fake clock (``now``; ``wall`` apart when set), driven with literal messages.

    ``version`` is the protocol version a peer says in its hello unless told; ``activity_ids``
    formats the ids of new activities (``"a{}"``: a1, a2, ...); ``frames``: whether binary frames
    come back from calls, or only messages. Any other keyword goes to :class:`HubCore`.
    """

    def __init__(
        self,
        *,
        version: str = "1.2",
        activity_ids: str = "a{}",
        now: float = START,
        wall: float | None = None,
        frames: bool = True,
        state: HubState | None = None,
        **options: Any,
    ) -> None:
        self.now = now
        self.wall = wall
        self.version = version
        self.frames = frames
        self._state = state
        ids = itertools.count(1)
        self.core = HubCore(
            clock=lambda: self.now if self.wall is None else self.wall,
            monotonic=lambda: self.now,
            new_activity_id=lambda: activity_ids.format(next(ids)),
            **options,
        )
        self.closed: list[Close] = []
        self.logs: list[str] = []
        self.actions: list[Any] = []  # Any: a test looks at the fields of the kind it expects
        """Every action that is neither a frame, a close nor a log line (store actions, changes)."""
        self.events: list[Any] = []
        """Changes and the messages sent, in the order the I/O layer would carry them out."""
        self._peers = itertools.count(1)
        if state is not None:
            self.take(self.core.restore(*state.load()))

    @property
    def state(self) -> HubState:
        """The database the core's changes are written to (a harness made with one)."""
        assert self._state is not None, "a harness made without a state"
        return self._state

    # --- driving the core -------------------------------------------------------------------

    def take(self, actions: Iterable[Action]) -> list[tuple[int, Any]]:
        """Record ``actions``; the frames among them, as ``(peer, message)``."""
        out: list[tuple[int, Any]] = []
        for action in actions:
            if isinstance(action, Send) and action.binary:
                if self.frames:
                    out.append((action.peer, action.data))
            elif isinstance(action, Send):
                message = json.loads(action.data)
                out.append((action.peer, message))
                self.events.append((action.peer, message))
            elif isinstance(action, Close):
                self.closed.append(action)
            elif isinstance(action, Log):
                self.logs.append(action.text)
            else:
                self.actions.append(action)
                if isinstance(action, Change):
                    self.events.append(action)
                    if self._state is not None:
                        self._state.apply(action)
        return out

    def send(self, peer: int, message: dict[str, Any] | bytes | str) -> list[tuple[int, Any]]:
        """A text frame from ``peer`` (a dict is sent as its JSON)."""
        data = json.dumps(message) if isinstance(message, dict) else message
        return self.take(self.core.receive_text(peer, data))

    def binary(self, peer: int, data: bytes) -> list[tuple[int, Any]]:
        """A binary (stream) frame from ``peer``."""
        return self.take(self.core.receive_binary(peer, data))

    def leave(self, peer: int, reason: str = "test", **how: bool) -> list[tuple[int, Any]]:
        """``peer``'s connection ends (``ended``, ``leaving``: see :meth:`HubCore.disconnect`)."""
        return self.take(self.core.disconnect(peer, reason, **how))

    def expire(self, after: float = 0.0) -> list[tuple[int, Any]]:
        """Move the clock ``after`` seconds on, then let the core look at what is due."""
        self.now += after
        return self.take(self.core.expire())

    def close_code(self, peer: int) -> int | None:
        """The code ``peer`` was last closed with (None: not closed)."""
        codes = [c.code for c in self.closed if c.peer == peer]
        return codes[-1] if codes else None

    # --- peers ----------------------------------------------------------------------------------

    def hello(
        self, role: str, name: str, *, peer: int | None = None, version: str | None = None, **fields: Any
    ) -> tuple[int, list[tuple[int, Any]]]:
        """A new connection says hello (``peer``: its id, else the next free one); its id and the answers."""
        peer = next(p for p in self._peers if p not in self.core.peers) if peer is None else peer
        self.core.connect(peer)
        hello = {"type": "hello", "version": version or self.version, "role": role, "name": name, **fields}
        return peer, self.send(peer, hello)

    def join(self, role: str, name: str, *, peer: int | None = None, version: str | None = None, **fields: Any) -> int:
        """A peer that says hello and is welcomed; its id."""
        peer, out = self.hello(role, name, peer=peer, version=version, **fields)
        assert out and out[0][1]["type"] == "welcome", out
        return peer

    def welcome(self, role: str, name: str, *, peer: int | None = None, **fields: Any) -> dict[str, Any]:
        """What a peer that says hello and is welcomed is told."""
        _, out = self.hello(role, name, peer=peer, **fields)
        assert out and out[0][1]["type"] == "welcome", out
        return dict(out[0][1])

    def offer(self, peer: int, *, images: list[str] | None = None, **more: Any) -> None:
        """Provider ``peer`` offers :data:`OFFER` (or what ``cpus``, ``memory``, ``storage`` say) and ``images``."""
        resources = {key: more.pop(key, value) for key, value in OFFER.items()}
        offer = {"type": "offer", "id": 1, "resources": resources, "arch": "amd64", "images": images or [], **more}
        assert self.send(peer, offer) == [(peer, {"type": "done", "re": 1})]

    def provider(self, name: str, *, peer: int | None = None, **offer: Any) -> int:
        """A provider joined and offering (see :meth:`offer`); its id."""
        version = offer.pop("version", None)
        peer = self.join("provider", name, peer=peer, version=version)
        self.offer(peer, **offer)
        return peer

    # --- activities ---------------------------------------------------------------------------------

    def create(
        self, requestor: int, rid: int, *, image: str = "img:1", cpus: float = 1, memory: int = 256 * MiB, **more: Any
    ) -> tuple[int, dict[str, Any]]:
        """A rent, left being created: the provider it went to, and the create it was sent."""
        rent = {"type": "rent", "id": rid, "image": image, "demand": {"cpus": cpus, "memory": memory}, **more}
        [(provider, create)] = self.send(requestor, rent)
        assert create["type"] == "create", create
        return provider, create

    def rent(self, requestor: int, rid: int, provider: int | None = None, **more: Any) -> str:
        """A rent its provider (``provider``, if given) creates at once: the new activity's id."""
        to, create = self.create(requestor, rid, **more)
        assert provider is None or to == provider, (to, provider)
        [(back, rented)] = self.send(to, {"type": "done", "re": create["id"]})
        assert back == requestor and rented["type"] == "rented" and rented["re"] == rid, rented
        return str(rented["activity"])

    def free_cpus(self, peer: int) -> float:
        """The CPUs the market's first provider has free, as requestor ``peer`` asks."""
        [(_, info)] = self.send(peer, {"type": "market", "id": 1})
        return float(info["providers"][0]["free"]["cpus"])
