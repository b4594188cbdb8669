"""Jobs as the hub sees them: each group's rents and the attempts of its tasks, for the dashboard.

A job is the rents a requestor's session makes under one ``group``. The hub learns of its
tasks from the requestor's ``task`` notifications (1.6, :class:`~kiln.protocol.messages.TaskReport`):
an attempt started on one of its activities, or ended (``done``, ``retried``, ``failed``).
:class:`Jobs` (the core's ``core.jobs``) keeps one :class:`JobRecord` per job, each with its
latest attempts (:class:`Attempt`), timed by the hub's clock as the reports come. A group seen
only in rents (a requestor whose SDK sends no reports) still has a record: its rents and cost.

Everything is bounded, whatever requestors send: at most :data:`MAX_JOBS` jobs (the least
recently updated forgotten first), :data:`MAX_ATTEMPTS` attempts a job (its oldest forgotten
first; its counts go on) and :data:`MAX_ALL_ATTEMPTS` in all. The bounds guard the hub's memory,
not fairness: a requestor naming ever new groups pushes the others' jobs out sooner. Nothing here
reads a clock or does I/O; each report costs O(1) (but the rare eviction of whole jobs).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from kiln.protocol.messages import TaskState

MAX_JOBS: Final = 256
"""Jobs kept; past that the least recently updated is forgotten."""
MAX_ATTEMPTS: Final = 10_000
"""Attempts kept for one job; past that its oldest are forgotten (its counts go on)."""
MAX_ALL_ATTEMPTS: Final = 50_000
"""Attempts kept for all jobs together; past that the least recently updated jobs are forgotten
(at most about 30 MiB, each attempt with a reason of the longest)."""


@dataclass(slots=True)
class Attempt:
    """One attempt of one task: where it ran (``activity`` and its ``provider``; ``None`` and
    ``""`` when it never reached one), when (the hub's clock: ``end`` ``None`` while it runs), its
    ``state`` (``started``, then ``done``, ``retried`` or ``failed``), why it ended (``reason``, the
    requestor's text: show it escaped) and the ``bytes`` it moved, as the requestor reported."""

    task: int
    attempt: int
    activity: str | None
    provider: str
    start: float
    end: float | None
    state: TaskState
    reason: str | None = None
    bytes: int = 0


@dataclass(slots=True)
class JobRecord:
    """One job: the ``group`` its requestor's rents name, whose it is (``credential``, the
    ``requestor``'s name), when it was first and last heard of (the hub's clock), its attempts'
    counts (``done``, ``failed``, ``retried`` in all; ``running`` now), the activities ``rented``
    for it, the micro-credits captured for them (``cost``) and its latest :attr:`attempts`."""

    group: str
    session: str
    credential: int | None
    requestor: str
    first: float
    last: float
    done: int = 0
    failed: int = 0
    retried: int = 0
    running: int = 0
    rented: int = 0
    cost: int = 0
    attempts: deque[Attempt] = field(default_factory=deque)
    """Its latest attempts, oldest first, each as last reported (at most :data:`MAX_ATTEMPTS`)."""
    _index: dict[tuple[int, int], Attempt] = field(default_factory=dict, repr=False)


class Jobs:
    """The records of the latest jobs, least recently updated first."""

    def __init__(
        self, max_jobs: int = MAX_JOBS, max_attempts: int = MAX_ATTEMPTS, max_all: int = MAX_ALL_ATTEMPTS
    ) -> None:
        if max_jobs < 1 or max_attempts < 1 or max_all < max_attempts:
            raise ValueError("keep at least one job and one attempt, and in all at least a job's attempts")
        self.max_jobs = max_jobs
        self.max_attempts = max_attempts
        self.max_all = max_all
        self._records: OrderedDict[tuple[str, str], JobRecord] = OrderedDict()
        self._attempts = 0  # attempts kept in all

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[JobRecord]:
        """The records, least recently updated first."""
        return iter(self._records.values())

    def get(self, session: str, group: str) -> JobRecord | None:
        """The record of the job ``group`` of requestor session ``session``, if kept."""
        return self._records.get((session, group))

    def rented(self, session: str, group: str, credential: int | None, requestor: str, at: float) -> None:
        """An activity was rented for the job (the rent's ``group``)."""
        record = self._touch(session, group, credential, requestor, at)
        record.rented += 1

    def charged(self, session: str, group: str, amount: int) -> None:
        """``amount`` micro-credits were captured for an activity of the job (if its record is kept)."""
        record = self._records.get((session, group))
        if record is not None:
            record.cost += amount

    def report(
        self,
        session: str,
        group: str,
        credential: int | None,
        requestor: str,
        at: float,
        *,
        task: int,
        attempt: int,
        state: TaskState,
        activity: str | None,
        provider: str,
        reason: str | None,
        size: int,
    ) -> None:
        """A ``task`` notification of the job, at ``at`` (``provider``: its activity's, or ``""``).

        A start opens an attempt; an end closes the attempt it names (one it never heard start
        begins and ends at ``at``); a second end of the same attempt is ignored."""
        record = self._touch(session, group, credential, requestor, at)
        key = (task, attempt)
        known = record._index.get(key)
        if known is None:
            end = None if state == "started" else at
            known = Attempt(task, attempt, activity, provider, at, end, state, reason, size)
            self._add(record, key, known)
            self._count(record, state, 1)
            return
        if known.state != "started":
            return  # ended already
        if state == "started":  # heard again: where it runs now
            known.activity, known.provider = activity or known.activity, provider or known.provider
            return
        self._count(record, "started", -1)
        self._count(record, state, 1)
        known.end, known.state, known.reason, known.bytes = at, state, reason, size
        if activity is not None:
            known.activity, known.provider = activity, provider

    def _touch(self, session: str, group: str, credential: int | None, requestor: str, at: float) -> JobRecord:
        """The job's record, made if new, as the most recently updated."""
        key = (session, group)
        record = self._records.get(key)
        if record is None:
            if len(self._records) >= self.max_jobs:
                self._forget(next(iter(self._records)))
            record = self._records[key] = JobRecord(group, session, credential, requestor, at, at)
        else:
            self._records.move_to_end(key)
            record.last = at
            record.requestor = requestor  # a session resumed under another name is the same job
        return record

    def _add(self, record: JobRecord, key: tuple[int, int], attempt: Attempt) -> None:
        if len(record.attempts) >= self.max_attempts:
            old = record.attempts.popleft()
            del record._index[(old.task, old.attempt)]
            self._attempts -= 1
            if old.state == "started":
                record.running -= 1
        record.attempts.append(attempt)
        record._index[key] = attempt
        self._attempts += 1
        while self._attempts > self.max_all:  # the record just touched is the last one forgotten
            self._forget(next(iter(self._records)))

    def _forget(self, key: tuple[str, str]) -> None:
        record = self._records.pop(key)
        self._attempts -= len(record.attempts)

    @staticmethod
    def _count(record: JobRecord, state: TaskState, by: int) -> None:
        if state == "started":
            record.running += by
        elif state == "done":
            record.done += by
        elif state == "retried":
            record.retried += by
        else:
            record.failed += by
