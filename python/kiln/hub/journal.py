"""What happened at the hub lately, as a feed: joins, leaves, losses, refusals, revocations.

:class:`Journal` is a bounded ring of :class:`Event` the core (:class:`~kiln.hub.core.HubCore`,
as ``core.journal``) writes where it sees each; a reader (the dashboard's Events page) takes
what came since the last event it saw (:meth:`Journal.since`) or the latest few
(:meth:`Journal.last`). Past its size the oldest events are forgotten. Events are immutable,
so a reader may keep them. The text an event carries (a name, a reason) may come from a peer:
show it escaped. Nothing here reads a clock (the core stamps each event) or does I/O.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, replace
from typing import Final, Literal, TypeAlias

from kiln.protocol.messages import clip

EVENTS: Final = 1000
"""Events a journal keeps unless told."""
DETAIL: Final = 300
"""Characters an event's detail keeps (a peer's text is clipped to it)."""
FOLD_WINDOW: Final = 60.0
"""Seconds within which a refusal like the latest event is folded into it (see :meth:`Journal.add`)."""

Kind: TypeAlias = Literal["join", "leave", "loss", "refusal", "revocation"]
"""What an event tells: a peer welcomed (``join``); a peer gone on purpose (``leave``); a peer
gone without saying so, or activities lost (``loss``); a connection turned away at its hello
(``refusal``); a connected peer closed because its credential was revoked (``revocation``)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened: ``seq`` numbers events from 1 (never reused), ``at`` is the hub's
    wall clock; ``role`` and ``name`` say whom it is about (``None`` and ``""`` when a hello was
    refused before either was known), ``detail`` how, and ``credential`` the credential it
    concerns (a requestor credential's holder may see the events naming it; ``None``: none)."""

    seq: int
    at: float
    kind: Kind
    role: Literal["requestor", "provider"] | None
    name: str
    detail: str
    credential: int | None = None
    repeats: int = 1
    """How many times it happened: refusals alike in a row are one event (:meth:`Journal.add`)."""


class Journal:
    """A ring of the latest ``size`` events (oldest first)."""

    def __init__(self, size: int = EVENTS) -> None:
        if size < 1:
            raise ValueError("a journal keeps at least one event")
        self._events: deque[Event] = deque(maxlen=size)
        self._seq = itertools.count(1)

    def add(
        self,
        at: float,
        kind: Kind,
        role: Literal["requestor", "provider"] | None,
        name: str,
        detail: str,
        credential: int | None = None,
    ) -> Event:
        """Note an event (``detail`` clipped to :data:`DETAIL` characters); it is returned.

        A refusal with the same code (the detail's first word) as the latest event, a refusal
        too, within :data:`FOLD_WINDOW` seconds of it, is folded into it: that event is counted
        once more (``repeats``) and takes this one's time, name and detail, keeping its ``seq``.
        So a flood of connections turned away leaves one event, not a feed emptied of the rest.
        """
        latest = self._events[-1] if self._events else None
        if (
            kind == "refusal"
            and latest is not None
            and latest.kind == "refusal"
            and latest.detail.split(":", 1)[0] == detail.split(":", 1)[0]
            and 0 <= at - latest.at <= FOLD_WINDOW
        ):
            event = replace(latest, at=at, role=role, name=clip(name, DETAIL), detail=clip(detail, DETAIL))
            event = replace(event, repeats=latest.repeats + 1)
            self._events[-1] = event
            return event
        event = Event(next(self._seq), at, kind, role, clip(name, DETAIL), clip(detail, DETAIL), credential)
        self._events.append(event)
        return event

    @property
    def seq(self) -> int:
        """The ``seq`` of the latest event (0: none yet): pass it to :meth:`since` next time."""
        return self._events[-1].seq if self._events else 0

    def since(self, seq: int) -> list[Event]:
        """The events after ``seq``, oldest first (those still kept: a reader that fell behind
        more than the journal's size misses the ones between)."""
        if not self._events or seq >= self._events[-1].seq:
            return []
        first = self._events[0].seq
        start = max(seq - first + 1, 0)
        return list(itertools.islice(self._events, start, None))

    def last(self, n: int) -> list[Event]:
        """The latest ``n`` events, oldest first."""
        if n <= 0:
            return []
        start = max(len(self._events) - n, 0)
        return list(itertools.islice(self._events, start, None))

    def __len__(self) -> int:
        return len(self._events)
