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
``state`` (:class:`~kiln.hub.io.state.HubState`) the changes are also written to it, in order,
and the harness starts from what it holds (leases and their meters); with a ``book``
(:class:`Book`, the core's accounts) the ledger's are posted to it; ``accounts=state`` makes
the database itself the core's accounts.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kiln.hub.access import Credential
from kiln.hub.actions import Action, Close, Log, Send
from kiln.hub.core import HubCore
from kiln.hub.io.state import HubState
from kiln.hub.ledger import MINT, Post, hold_account, requestor_account
from kiln.hub.records import Change, MeterRecord, SaveBudget
from kiln.protocol.messages import Entry, Price, Transaction

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


class Book:
    """An in-memory ledger (:class:`kiln.hub.ledger.Accounts`): the harness applies the core's
    :class:`Post` and :class:`SaveBudget` changes to it, a key posted once whatever its replays."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.replays = 0
        self._keys: set[str] = set()
        self._balances: Counter[str] = Counter()
        self._budgets: dict[tuple[str, str], int] = {}

    def apply(self, change: Post | SaveBudget) -> None:
        if isinstance(change, SaveBudget):
            self._budgets.setdefault((change.session, change.group), change.budget)
            return
        if change.key in self._keys:
            self.replays += 1
            return
        self._keys.add(change.key)
        self.posts.append(change)
        for account, amount in change.entries:
            self._balances[account] += amount

    def grant(self, credential: int, credits_micro: int) -> None:
        account = requestor_account(credential)
        entries = ((MINT, -credits_micro), (account, credits_micro))
        self.apply(Post(f"grant:{len(self.posts)}", "grant", 0.0, entries))

    # --- Accounts -------------------------------------------------------------------------

    def balance(self, account: str) -> int:
        return self._balances[account]

    def transactions(
        self, account: str | None = None, activity: str | None = None, limit: int = 100
    ) -> list[Transaction]:
        found = [
            Transaction(
                id=number,
                key=post.key,
                kind=post.kind,
                time=post.time,
                activity=post.activity,
                entries=[Entry(account=a, amount=x) for a, x in post.entries],
            )
            for number, post in enumerate(self.posts, start=1)
            if (account is None or any(a == account for a, _ in post.entries))
            and (activity is None or post.activity == activity)
        ]
        return found[::-1][:limit]

    def count_transactions(self, account: str | None = None, activity: str | None = None) -> int:
        return len(self.transactions(account, activity, limit=len(self.posts)))

    def budget(self, session: str, group: str) -> int | None:
        return self._budgets.get((session, group))

    def spent(self, account: str) -> int:
        granted = sum(x for p in self.posts if p.kind == "grant" for a, x in p.entries if a == account)
        holds = {p.activity for p in self.posts if p.kind == "hold" and any(a == account for a, _ in p.entries)}
        return granted - self._balances[account] - sum(self._balances[f"hold:{a}"] for a in holds)

    def committed(self, session: str, group: str) -> int:
        total = 0
        for post in self.posts:
            if post.session == session and post.group == group and post.kind in ("hold", "release"):
                total += sum(x for a, x in post.entries if a.startswith("hold:"))
        return total

    # --- what a test looks at --------------------------------------------------------------

    def of(self, kind: str, activity: str | None = None) -> list[Post]:
        return [p for p in self.posts if p.kind == kind and (activity is None or p.activity == activity)]

    def check(self) -> None:
        """Every transaction sums to zero and the balances are their entries' sums."""
        sums: Counter[str] = Counter()
        for post in self.posts:
            assert sum(x for _, x in post.entries) == 0, post
            for account, amount in post.entries:
                sums[account] += amount
        assert +sums == +self._balances and -sums == -self._balances

    def meter(self, activity: str, price: Price, max_duration: float | None = None) -> MeterRecord:
        """The activity's meter as the hub's database would hand it back at a restart."""
        hold = hold_account(activity)
        held = sum(x for p in self.of("hold", activity) for a, x in p.entries if a == hold)
        captures = self.of("capture", activity)
        captured = -sum(x for p in captures for a, x in p.entries if a == hold)
        last = captures[-1] if captures else None
        return MeterRecord(
            activity,
            price.start,
            price.cpu_hour,
            price.env_hour,
            max_duration,
            held,
            captured,
            len(captures),
            last.cpu_seconds or 0.0 if last else 0.0,
            last.seconds or 0.0 if last else 0.0,
        )


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
        book: Book | None = None,
        **options: Any,
    ) -> None:
        self.now = now
        self.wall = wall
        self.version = version
        self.frames = frames
        self._state = state
        self.book = book
        ids = itertools.count(1)
        self.core = HubCore(
            clock=lambda: self.now if self.wall is None else self.wall,
            monotonic=lambda: self.now,
            new_activity_id=lambda: activity_ids.format(next(ids)),
            accounts=options.pop("accounts", book),  # accounts=state: the hub's database is the book
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
            sessions, leases = state.load()
            self.take(self.core.restore(sessions, leases, state.meters()))

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
                    if self.book is not None and isinstance(action, Post | SaveBudget):
                        self.book.apply(action)
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
