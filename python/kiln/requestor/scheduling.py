"""The executor's rules without I/O: which task goes where, whose fault a failure is, when a
provider is banned, when a task is tried again and when it has failed for good.

Everything that decides the course of a job lives here (js-client/src/scheduling.js holds the
same rules, and both pass the job vectors of ``protocol/v1/vectors/jobs/``); the executor
(:mod:`kiln.requestor.executor`) only rents, runs workers, keeps time and waits. No clock, no
``await``, no socket: the executor tells the :class:`Scheduler` what happened and does what it
answers.

The rules:

- **Tasks** are read from the items as slots need them (never ahead but one item, to know
  whether there is more): a task is kept while it waits or runs, and nothing of it but
  counters once it is done or failed.
- **Slots** hold one activity each (one per provider; the hub keeps a job's group on distinct
  providers). A slot takes a task that waits for a retry and has not failed on its provider,
  else a fresh item, else a retry no provider the job holds has spared.
- **Blame**: a lost provider, or one that cannot start the job's containers, is the
  provider's failure. A failure the worker raises (``retry``, ``timeout``) is the task's,
  until the task succeeds on another provider: then it was the provider's (its *suspects*).
- **Bans**: a provider that failed the job twice (``MAX_PROVIDER_FAILURES``), or cannot
  start its containers, gets no more of its tasks; rents exclude it.
- **Retries**: a ``retry``, ``timeout`` or ``provider_lost`` attempt is tried again, at most
  ``retries`` more times, before fresh items (on another provider when one is free); an
  attempt cut by a reconnect (``interrupted``) is tried again without counting. Any other
  error fails the task at once.
- A task out of attempts, or with no provider left, has failed for good: the job ends with
  it, or with ``return_exceptions`` it is the task's result.

Where the next rules go: verification (a task run on several providers and the answers
compared, or spot checks) decides in :meth:`Scheduler.outcome` whether a success counts
(``_accept``) and may hand the same task to further slots from :meth:`Scheduler.next_task`;
a budget stop calls :meth:`Scheduler.stop`, after which no attempt starts.

Call order, per slot: :meth:`Scheduler.wants_activity` (rent only when true), then
:meth:`Scheduler.hold` with the activity, :meth:`Scheduler.next_task` /
:meth:`Scheduler.start` / :meth:`Scheduler.outcome` for each task while
:meth:`Scheduler.may_serve`, and :meth:`Scheduler.free` once the activity is released.
After each call, the events it emitted have gone to ``emit``, in order.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import Final, Generic, Literal, TypeVar

from kiln.protocol.messages import MAX_EXCLUDE
from kiln.protocol.sizes import format_size

T = TypeVar("T")

MAX_PROVIDER_FAILURES: Final = 2
"""Failures of the job on one provider that ban it."""

INTERRUPTED: Final = "the connection to the hub dropped and is back"

Outcome = Literal["ok", "retry", "timeout", "provider_lost", "error", "interrupted"]
"""How an attempt ended: ``ok``; the worker asked for a ``retry``; it ran past the job's
``timeout``; its ``provider_lost``; any other ``error`` of the worker; ``interrupted`` by a
reconnect of the requestor's connection (nobody's fault)."""

EventKind = Literal[
    "job_started",
    "rented",
    "released",
    "task_started",
    "task_done",
    "task_retry",
    "task_failed",
    "provider_banned",
    "waiting",
    "image_loading",
    "job_done",
]


@dataclass(slots=True, eq=False)
class Task(Generic[T]):
    """A task while it waits or runs: its item, and each failed attempt's error."""

    index: int
    item: T
    errors: list[object] = field(default_factory=list)
    failed_on: set[str] = field(default_factory=set)
    """Providers where an attempt failed: it goes elsewhere first."""
    suspects: set[str] = field(default_factory=set)
    """Providers where the worker failed it: to blame if it succeeds elsewhere."""


@dataclass(frozen=True, slots=True)
class Failure(Generic[T]):
    """A task failed for good: the executor makes its TaskFailed from this."""

    task: Task[T]
    message: str
    cause: object
    ends_job: bool
    """Without ``return_exceptions`` the first failure ends the job (no attempt starts after it)."""


@dataclass(frozen=True, slots=True)
class Verdict(Generic[T]):
    """What an attempt's outcome decided."""

    keep: bool
    """The activity may take another task (False: its provider was lost, release it)."""
    failure: Failure[T] | None = None


@dataclass
class JobSummary:
    """The numbers of a job: filled in as it runs, complete once it is done."""

    tasks: int = 0
    succeeded: int = 0
    failed: int = 0
    attempts: int = 0
    retries: int = 0
    wall_seconds: float = 0.0
    tasks_per_provider: Counter[str] = field(default_factory=Counter)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    failed_providers: set[str] = field(default_factory=set)
    pulled: Counter[str] = field(default_factory=Counter)
    """The image bytes each provider loaded from the hub's store for the job's rents."""

    def lines(self) -> list[str]:
        lines = [
            f"tasks {self.tasks}: {self.succeeded} done, {self.failed} failed; attempts {self.attempts}, "
            f"retries {self.retries}; wall time {self.wall_seconds:.2f} s",
        ]
        for provider in sorted(set(self.tasks_per_provider) | set(self.cpu_seconds) | set(self.pulled)):
            lines.append(
                f"  {provider}: {self.tasks_per_provider[provider]} tasks, "
                f"{self.cpu_seconds.get(provider, 0.0):.2f} container CPU-seconds"
                + (f", pulled {format_size(self.pulled[provider])} of image" if self.pulled[provider] else "")
                + ("  (failed)" if provider in self.failed_providers else "")
            )
        return lines


Emit = Callable[[EventKind, "int | None", "str | None", str], None]
"""Receives each event: ``(kind, task, provider, detail)``."""


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


class Scheduler(Generic[T]):
    """One job's scheduling state. Make one per job; feed it what happens, do what it says."""

    def __init__(self, items: Iterable[T], emit: Emit, *, retries: int = 2, return_exceptions: bool = False) -> None:
        self.retries = retries
        self.return_exceptions = return_exceptions
        self._emit = emit
        self.total: int | None = len(items) if isinstance(items, Sized) else None
        """How many tasks the job has, when the items tell (None until a generator runs out)."""
        self.summary = JobSummary(tasks=self.total or 0)
        self._items: Iterator[T] = iter(items)
        self._read = 0
        self._ahead: Task[T] | None = None  # the one item read to know there is more
        self._exhausted = False
        self._retries: deque[Task[T]] = deque()
        """Tasks to try again, before fresh items; the latest first."""
        self._live = 0  # read and not done nor failed
        self.running = 0
        """Attempts running now."""
        self._held: dict[int, str] = {}  # slot -> provider of the activity it holds
        self._failures: Counter[str] = Counter()
        self.banned: set[str] = set()
        """Providers the job passes over: every rent excludes them."""
        self._last_ban = ""
        self.stopped = False
        """No attempt starts: a task failed and ends the job, or the executor stopped it."""

    # --- what the executor asks -------------------------------------------------------

    @property
    def read(self) -> int:
        """Items read from the iterable so far."""
        return self._read

    @property
    def finished(self) -> bool:
        """Every item read, and every task done or failed."""
        return self._exhausted and self._ahead is None and self._live == 0

    def slots(self, max_providers: int) -> int:
        """How many slots to run: one per provider, no more than tasks."""
        return max_providers if self.total is None else min(max_providers, self.total)

    def wants_activity(self) -> bool:
        """Whether a slot without an activity should rent one: a task waits (or may come)."""
        return not self.stopped and (bool(self._retries) or self._peek() is not None)

    def too_many_banned(self) -> bool:
        """More providers banned than a rent can exclude: nowhere is left to run the job."""
        return len(self.banned) > MAX_EXCLUDE

    @property
    def holding(self) -> bool:
        """Whether any slot holds an activity."""
        return bool(self._held)

    def may_serve(self, provider: str) -> bool:
        """Whether the activity on ``provider`` should wait for (or take) another task."""
        return not self.finished and not self.stopped and provider not in self.banned

    # --- slots --------------------------------------------------------------------------

    def hold(self, slot: int, provider: str, activity: str) -> None:
        """``slot`` rented ``activity`` on ``provider``."""
        self._held[slot] = provider
        self._emit("rented", None, provider, activity)

    def free(self, slot: int, activity: str) -> None:
        """``slot`` released its activity: it may rent another."""
        provider = self._held.pop(slot, None)
        self._emit("released", None, provider, activity)

    def provider_failed(self, provider: str) -> None:
        """``provider`` failed the job (lost it, or lost an activity in its setup): two failures ban it."""
        self._failures[provider] += 1
        if self._failures[provider] >= MAX_PROVIDER_FAILURES:
            self.ban(provider, f"failed {self._failures[provider]} times")

    def ban(self, provider: str, why: str) -> None:
        """``provider`` cannot run the job (its image is missing or broken, its containers fail)."""
        if provider not in self.banned:
            self.banned.add(provider)
            self._last_ban = f"the last, {provider}: {why}"
            self._emit("provider_banned", None, provider, why)

    def stop(self) -> None:
        """Start no attempt from now on (the job ends: failed, cancelled, or out of budget)."""
        self.stopped = True

    # --- tasks --------------------------------------------------------------------------

    def next_task(self, provider: str) -> Task[T] | None:
        """The next task for the activity on ``provider``; None: none for it now (wait for a change).

        One that has not failed there, else a fresh item, else one that failed there when
        no other provider the job holds is a better place.
        """
        if not self.may_serve(provider):
            return None
        for task in self._retries:
            if provider not in task.failed_on:
                self._retries.remove(task)
                return task
        fresh = self._peek()
        if fresh is not None:
            self._ahead = None
            return fresh
        holders = self._held.values()
        for task in self._retries:
            if all(p in task.failed_on for p in holders):
                self._retries.remove(task)
                return task
        return None

    def start(self, task: Task[T], provider: str) -> int:
        """An attempt of ``task`` starts on ``provider``; its number (1 for the first)."""
        self.running += 1
        self.summary.attempts += 1
        self._emit("task_started", task.index, provider, "")
        return len(task.errors) + 1

    def outcome(
        self, task: Task[T], provider: str, outcome: Outcome, error: object = None, detail: str = ""
    ) -> Verdict[T]:
        """The attempt of ``task`` on ``provider`` ended so; ``error`` and its ``detail``
        (``"Type: message"``) when it failed. After an ``ok``, hand the task's value on."""
        self.running -= 1
        if outcome == "ok":
            self._accept(task, provider)
            return Verdict(keep=True)
        if outcome == "interrupted":
            # Not the task's fault, nor the provider's: tried again, as if never started.
            self._retries.appendleft(task)
            self._emit("task_retry", task.index, provider, INTERRUPTED)
            return Verdict(keep=True)
        task.errors.append(error)
        if outcome == "error":
            return Verdict(keep=True, failure=self._fail(task, error, detail, provider))
        task.failed_on.add(provider)
        if outcome == "provider_lost":
            self.provider_failed(provider)
        else:
            task.suspects.add(provider)
        if len(task.errors) <= self.retries:
            self.summary.retries += 1
            self._retries.appendleft(task)
            self._emit("task_retry", task.index, provider, detail)
            return Verdict(keep=outcome != "provider_lost")
        return Verdict(keep=outcome != "provider_lost", failure=self._fail(task, error, detail, provider))

    def abandon(self) -> None:
        """An attempt no longer counts (the job ended under it, or its connection did)."""
        self.running -= 1

    def _accept(self, task: Task[T], provider: str) -> None:
        """The task succeeded on ``provider``. (Verification decides here whether it counts.)"""
        self.summary.tasks_per_provider[provider] += 1
        for suspect in sorted(task.suspects - {provider}):
            self.provider_failed(suspect)  # the task is fine: where it failed, the provider was not
        self.summary.succeeded += 1
        self._live -= 1
        self._emit("task_done", task.index, provider, "")

    def _fail(self, task: Task[T], cause: object, detail: str, provider: str | None, note: str = "") -> Failure[T]:
        self.summary.failed += 1
        self._live -= 1
        message = (
            f"task {task.index} failed after {plural(len(task.errors), 'attempt')}"
            + (f" ({note})" if note else "")
            + f": {detail}"
        )
        ends = not self.return_exceptions
        if ends:
            self.stopped = True  # no new rents nor attempts while the job winds down
        self._emit("task_failed", task.index, provider, message)
        return Failure(task, message, cause, ends)

    # --- no provider left ---------------------------------------------------------------

    def nowhere_to_run(self, why: str) -> str:
        """Why no provider is left for the job: ``why`` and the providers the job passed over."""
        if self.banned:
            count = len(self.banned)
            why += f" (this job passed over {plural(count, 'provider')} that failed it; {self._last_ban})"
        return why

    def never_ran(self) -> bool:
        """No task waiting has been tried yet: the job ends with a NoMatch rather than TaskFailed
        (unless ``return_exceptions``, where every task gets its failure)."""
        return not self.return_exceptions and not any(task.errors for task in self._retries)

    def strand(self, cause: object, detail: str) -> Iterator[Failure[T]]:
        """Fail every task waiting (those tried first, then the items left): no provider is
        left to run them. Lazily: stop at a failure that ends the job."""
        tried = [task for task in self._retries if task.errors]
        untried = [task for task in self._retries if not task.errors]
        self._retries.clear()
        for task in tried + untried:
            yield self._fail(task, cause, detail, None, "no provider is left to run it")
        while (fresh := self._peek()) is not None:
            self._ahead = None
            yield self._fail(fresh, cause, detail, None, "no provider is left to run it")

    # --- reading the items --------------------------------------------------------------

    def _peek(self) -> Task[T] | None:
        if self._ahead is None and not self._exhausted:
            try:
                item = next(self._items)
            except StopIteration:
                self._exhausted = True
                self.total = self._read
                self.summary.tasks = self._read
                return None
            self._ahead = Task(self._read, item)
            self._read += 1
            self._live += 1
            if self.total is None:
                self.summary.tasks = self._read
            elif self._read >= self.total:
                self._exhausted = True  # a list's last item: no need to ask for more
        return self._ahead
