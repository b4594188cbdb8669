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
  else a fresh item, else a retry no provider the job holds (and has not banned) has spared.
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

- **Verification** (``verify``): with :class:`Redundant` ``(n)`` each task runs on ``n``
  distinct providers (never twice on one) and is accepted when ``n`` results agree
  (``agree(a, b)``, default ``==``): the first of them is the task's result. While no value
  has ``n`` agreeing, another copy runs on a new provider, at most ``2n - 1`` runs in all;
  past that the task fails (*disputed*). With :class:`SpotCheck` ``(p)``, after a task's
  first result ``chance() < p`` runs one more copy elsewhere: agreeing, the task is
  accepted (verified); else it goes on as ``Redundant(2)`` (a third run breaks the tie).
  Copies wait with the retries, before fresh items, for a slot whose provider is not
  running the task and has no result of it; when no slot's provider may take any (the job
  is :meth:`~Scheduler.blocked`), slots give their activities up and rent elsewhere. A
  copy's failures follow the retry rules (they count among the task's attempts). Every
  run whose result disagrees with the accepted one *lost*: the verdict names its activity
  and those of the agreeing runs (:class:`Dispute`), it never becomes a result, and it is
  a failure of its provider (two ban it). A result of a task already accepted or failed
  is ignored.
- **Budget**: after :meth:`Scheduler.budget_exceeded` nothing more is rented; the activities
  the job holds go on taking its tasks (each has its own hold), and once none is held,
  :meth:`Scheduler.strand` fails every task not done ("the job's budget is spent").

Call order, per slot: :meth:`Scheduler.wants_activity` (rent only when true, excluding
:meth:`Scheduler.avoid`), then :meth:`Scheduler.hold` with the activity,
:meth:`Scheduler.next_task` / :meth:`Scheduler.start` / :meth:`Scheduler.outcome` for each task while
:meth:`Scheduler.may_serve`, and :meth:`Scheduler.free` once the activity is released.
After each call, the events it emitted have gone to ``emit``, in order.
"""

from __future__ import annotations

import operator
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar

from kiln.protocol.errors import UsageError
from kiln.protocol.messages import MAX_EXCLUDE
from kiln.protocol.money import MICRO, format_credits
from kiln.protocol.sizes import format_size

T = TypeVar("T")

MAX_PROVIDER_FAILURES: Final = 2
"""Failures of the job on one provider that ban it."""

INTERRUPTED: Final = "the connection to the hub dropped and is back"
MAX_REDUNDANCY: Final = 8
"""The most copies :class:`Redundant` asks for (``2n - 1`` runs must fit a verdict's ``agreed``)."""
STRANDED: Final = "no provider is left to run it"
SPENT: Final = "the job's budget is spent"

Agree = Callable[[Any, Any], bool]
"""Whether two results of a task are the same answer."""


@dataclass(frozen=True, slots=True)
class Redundant:
    """Run each task on ``n`` distinct providers; accept a result when ``n`` of them agree
    (``agree(a, b)``, default ``==``), with at most ``2n - 1`` runs (then the task is disputed)."""

    n: int = 2
    agree: Agree | None = None

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or not 2 <= self.n <= MAX_REDUNDANCY:
            raise UsageError(f"Redundant(n) takes n from 2 to {MAX_REDUNDANCY}, not {self.n!r}")

    @property
    def copies(self) -> int:
        """The runs a task needs at the least."""
        return self.n


@dataclass(frozen=True, slots=True)
class SpotCheck:
    """After a task's first result, run it again on another provider with probability ``p``;
    a disagreement is settled as by ``Redundant(2)``."""

    p: float
    agree: Agree | None = None

    def __post_init__(self) -> None:
        if isinstance(self.p, bool) or not isinstance(self.p, int | float) or not 0 <= self.p <= 1:
            raise UsageError(f"SpotCheck(p) takes a probability from 0 to 1, not {self.p!r}")

    @property
    def copies(self) -> int:
        return 2 if self.p > 0 else 1


Verify: TypeAlias = Redundant | SpotCheck

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
    "task_verified",
    "task_disputed",
    "cost",
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
    runs: list[Run] = field(default_factory=list)
    """Its results so far, under verification (in the order they came)."""
    busy: set[str] = field(default_factory=set)
    """Providers running it now or holding a result of it: no copy goes there."""
    wanted: int = 0
    """Attempts to hand out (retries and copies): while above 0, the task waits in the queue."""
    running: int = 0
    needed: int = 1
    """Agreeing results that accept it."""
    settled: bool = False
    """Accepted or failed: any later result of it is ignored."""
    disputed: bool = False


@dataclass(frozen=True, slots=True)
class Run:
    """A successful attempt: where it ran and what it returned."""

    provider: str
    activity: str
    value: Any


@dataclass(frozen=True, slots=True)
class Dispute:
    """A run whose result lost against ``agreed`` (the activities of the accepted result's runs)."""

    provider: str
    activity: str
    agreed: tuple[str, ...]


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
    accepted: Run | None = None
    """The task is done: this run's value is its result."""
    disputes: tuple[Dispute, ...] = ()
    """Runs that lost against the accepted result: report each to the hub."""


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
    verified: int = 0
    """Tasks accepted after their results were compared."""
    disputed: int = 0
    """Tasks whose results disagreed."""
    lost_by: Counter[str] = field(default_factory=Counter)
    """Runs each provider lost against an agreeing majority."""
    spent_micro: Counter[str] = field(default_factory=Counter)
    """What the hub captured for the job's activities, per provider, in micro-credits."""

    @property
    def spent(self) -> float:
        """What the job spent at the hub, in credits (as the hub's ``cost`` messages said)."""
        return sum(self.spent_micro.values()) / MICRO

    @property
    def spent_by_provider(self) -> dict[str, float]:
        """What the job spent on each provider, in credits."""
        return {provider: micro / MICRO for provider, micro in sorted(self.spent_micro.items())}

    def lines(self) -> list[str]:
        lines = [
            f"tasks {self.tasks}: {self.succeeded} done, {self.failed} failed; attempts {self.attempts}, "
            f"retries {self.retries}; wall time {self.wall_seconds:.2f} s",
        ]
        if self.verified or self.disputed:
            lost = ", ".join(f"{p} {n}" for p, n in sorted(self.lost_by.items())) or "none"
            lines.append(f"verified {self.verified}, disputed {self.disputed}; runs lost: {lost}")
        if self.spent_micro:
            lines.append(f"spent {format_credits(sum(self.spent_micro.values()))} credits")
        providers = set(self.tasks_per_provider) | set(self.cpu_seconds) | set(self.pulled)
        providers |= set(self.spent_micro) | set(self.lost_by)
        for provider in sorted(providers):
            lines.append(
                f"  {provider}: {self.tasks_per_provider[provider]} tasks, "
                f"{self.cpu_seconds.get(provider, 0.0):.2f} container CPU-seconds"
                + (f", {format_credits(self.spent_micro[provider])} credits" if self.spent_micro[provider] else "")
                + (f", pulled {format_size(self.pulled[provider])} of image" if self.pulled[provider] else "")
                + (f", lost {plural(self.lost_by[provider], 'verification')}" if self.lost_by[provider] else "")
                + ("  (failed)" if provider in self.failed_providers else "")
            )
        return lines


Emit = Callable[[EventKind, "int | None", "str | None", str], None]
"""Receives each event: ``(kind, task, provider, detail)``."""


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


class Scheduler(Generic[T]):
    """One job's scheduling state. Make one per job; feed it what happens, do what it says."""

    def __init__(
        self,
        items: Iterable[T],
        emit: Emit,
        *,
        retries: int = 2,
        return_exceptions: bool = False,
        verify: Verify | None = None,
        chance: Callable[[], float] = random.random,
    ) -> None:
        self.retries = retries
        self.return_exceptions = return_exceptions
        self.verify = verify
        self._agree: Agree = (verify.agree if verify is not None else None) or operator.eq
        self._chance = chance
        """A float in [0, 1) for each spot check (random; the vectors fix its values)."""
        self._emit = emit
        self.total: int | None = len(items) if isinstance(items, Sized) else None
        """How many tasks the job has, when the items tell (None until a generator runs out)."""
        self.summary = JobSummary(tasks=self.total or 0)
        self._items: Iterator[T] = iter(items)
        self._read = 0
        self._ahead: Task[T] | None = None  # the one item read to know there is more
        self._exhausted = False
        self._retries: deque[Task[T]] = deque()
        """Tasks to try again or to run a copy of, before fresh items; the latest first."""
        self._live = 0  # read and not done nor failed
        self.running = 0
        """Attempts running now."""
        self._held: dict[int, str] = {}  # slot -> provider of the activity it holds
        self._activity_on: dict[str, str] = {}  # provider -> the activity the job holds there
        self._failures: Counter[str] = Counter()
        self.banned: set[str] = set()
        """Providers the job passes over: every rent excludes them."""
        self._last_ban = ""
        self.stopped = False
        """No attempt starts: a task failed and ends the job, or the executor stopped it."""
        self.over_budget = False
        """The job's budget is spent (:meth:`budget_exceeded`)."""

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
        """How many slots to run: one per provider, no more than the runs the tasks need."""
        copies = self.verify.copies if self.verify is not None else 1
        return max_providers if self.total is None else min(max_providers, self.total * copies)

    def wants_activity(self) -> bool:
        """Whether a slot without an activity should rent one: a task waits (or may come)."""
        return not self.stopped and not self.over_budget and (bool(self._retries) or self._peek() is not None)

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
        self._activity_on[provider] = activity
        self._emit("rented", None, provider, activity)

    def free(self, slot: int, activity: str) -> None:
        """``slot`` released its activity: it may rent another."""
        provider = self._held.pop(slot, None)
        if provider is not None and self._activity_on.get(provider) == activity:
            del self._activity_on[provider]
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

    def budget_exceeded(self) -> None:
        """The hub refused a rent, or ended an activity, because the job's budget is spent: nothing
        more is rented, the activities held go on serving; once none is held, :meth:`strand`
        fails the tasks not done."""
        self.over_budget = True

    def blocked(self) -> bool:
        """Nothing the job holds can go on: no attempt runs, and no provider it holds may take a
        task waiting (a copy wants a provider it lacks). Renting is then the only way on."""
        if self.running or self._peek() is not None:
            return False
        holders = self._serving()
        return not any(self._placeable(task, p) for task in self._retries for p in holders)

    def avoid(self) -> set[str]:
        """Providers a new activity would be of no use on: every task waiting has run there or
        runs there (none while a fresh item waits). A blocked slot gives its activity up and
        rents again, excluding these."""
        if not self._retries or self._peek() is not None:
            return set()
        return set.intersection(*(task.busy for task in self._retries))

    # --- tasks --------------------------------------------------------------------------

    def next_task(self, provider: str) -> Task[T] | None:
        """The next task for the activity on ``provider``; None: none for it now (wait for a change).

        One that has not failed there, else a fresh item, else one that failed there when
        no other provider the job holds is a better place.
        """
        if not self.may_serve(provider):
            return None
        for task in self._retries:
            if provider not in task.failed_on and provider not in task.busy:
                return self._take(task, provider)
        fresh = self._peek()
        if fresh is not None:
            self._ahead = None
            if isinstance(self.verify, Redundant):
                fresh.needed = self.verify.n
                self._want(fresh, self.verify.n - 1)
            fresh.busy.add(provider)
            return fresh
        holders = self._serving()
        for task in self._retries:
            if provider not in task.busy and all(p in task.failed_on or p in task.busy for p in holders):
                return self._take(task, provider)
        return None

    def _serving(self) -> set[str]:
        """The providers the job holds that may take tasks (not banned)."""
        return {p for p in self._held.values() if p not in self.banned}

    def _placeable(self, task: Task[T], provider: str) -> bool:
        """Whether ``provider`` may run ``task`` (at all: perhaps where it failed)."""
        return provider not in task.busy

    def _take(self, task: Task[T], provider: str) -> Task[T]:
        task.busy.add(provider)  # handed to it: no copy goes there
        task.wanted -= 1
        if task.wanted == 0:
            self._retries.remove(task)
        return task

    def _want(self, task: Task[T], attempts: int = 1) -> None:
        """Queue ``attempts`` more attempts of ``task`` (a retry, or copies), before fresh items."""
        if task.wanted == 0:
            self._retries.appendleft(task)
        task.wanted += attempts

    def _unqueue(self, task: Task[T]) -> None:
        if task.wanted:
            task.wanted = 0
            self._retries.remove(task)

    def start(self, task: Task[T], provider: str) -> int:
        """An attempt of ``task`` starts on ``provider``; its number (1 for the first)."""
        self.running += 1
        self.summary.attempts += 1
        task.running += 1
        task.busy.add(provider)
        self._emit("task_started", task.index, provider, "")
        return len(task.errors) + len(task.runs) + task.running

    def outcome(
        self,
        task: Task[T],
        provider: str,
        outcome: Outcome,
        error: object = None,
        detail: str = "",
        value: object = None,
    ) -> Verdict[T]:
        """The attempt of ``task`` on ``provider`` ended so: ``ok`` with the worker's ``value``,
        else ``error`` and its ``detail`` (``"Type: message"``). When the answer's ``accepted``
        is set, the task is done and that run's value is its result; report its ``disputes``."""
        self.running -= 1
        task.running -= 1
        task.busy.discard(provider)
        keep = outcome != "provider_lost"
        if task.settled:
            return Verdict(keep=keep)  # a copy of a task accepted or failed meanwhile: it no longer counts
        if outcome == "ok":
            return self._ran(task, Run(provider, self._activity_on.get(provider, ""), value))
        if outcome == "interrupted":
            # Not the task's fault, nor the provider's: tried again, as if never started.
            self._want(task)
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
            self._want(task)
            self._emit("task_retry", task.index, provider, detail)
            return Verdict(keep=keep)
        return Verdict(keep=keep, failure=self._fail(task, error, detail, provider))

    def abandon(self) -> None:
        """An attempt no longer counts (the job ended under it, or its connection did)."""
        self.running -= 1

    def _ran(self, task: Task[T], run: Run) -> Verdict[T]:
        """An attempt succeeded: the task is accepted, or waits for (or gets) more copies, or is disputed."""
        verify = self.verify
        if verify is None:
            self._accept(task, run, ())
            return Verdict(keep=True, accepted=run)
        task.runs.append(run)
        task.busy.add(run.provider)
        if isinstance(verify, SpotCheck) and len(task.runs) == 1 and task.needed == 1:
            if verify.p > 0 and self._chance() < verify.p:
                task.needed = 2
                self._want(task)
                return Verdict(keep=True)
            self._accept(task, run, ())
            return Verdict(keep=True, accepted=run)
        agree = self._agree
        agreeing = [r for r in task.runs if r is run or agree(r.value, run.value)]
        if len(agreeing) < len(task.runs) and not task.disputed:
            task.disputed = True
            self.summary.disputed += 1
        if len(agreeing) >= task.needed:
            first = agreeing[0]
            lost = [r for r in task.runs if r is not first and r not in agreeing and not agree(first.value, r.value)]
            agreed = tuple(r.activity for r in agreeing)
            disputes = tuple(Dispute(r.provider, r.activity, agreed) for r in lost)
            self._accept(task, first, disputes)
            return Verdict(keep=True, accepted=first, disputes=disputes)
        # No value has enough agreeing: run copies until one might, within 2 x needed - 1 runs.
        best = max(sum(1 for s in task.runs if agree(r.value, s.value)) for r in task.runs)
        coming = task.running + task.wanted
        more = min(task.needed - best - coming, 2 * task.needed - 1 - len(task.runs) - coming)
        if more > 0:
            self._want(task, more)
        elif coming == 0:
            why = f"{plural(len(task.runs), 'result')} on distinct providers, and no {task.needed} agree"
            return Verdict(keep=True, failure=self._fail(task, None, why, run.provider, "disputed"))
        return Verdict(keep=True)

    def _accept(self, task: Task[T], run: Run, disputes: tuple[Dispute, ...]) -> None:
        """The task is done: ``run``'s value is its result; the runs ``disputes`` name lost."""
        task.settled = True
        self._unqueue(task)
        self.summary.tasks_per_provider[run.provider] += 1
        for dispute in disputes:
            self.summary.lost_by[dispute.provider] += 1
            against = ", ".join(dispute.agreed)
            self._emit("task_disputed", task.index, dispute.provider, f"{dispute.activity} lost against {against}")
        blamed = task.suspects - {r.provider for r in task.runs} - {run.provider}
        for suspect in sorted(blamed | {d.provider for d in disputes}):
            self.provider_failed(suspect)  # the task is fine: where it failed or disagreed, the provider was not
        if len(task.runs) > 1:
            self.summary.verified += 1
            self._emit("task_verified", task.index, run.provider, f"{plural(task.needed, 'result')} agree")
        self.summary.succeeded += 1
        self._live -= 1
        self._emit("task_done", task.index, run.provider, "")

    def _fail(self, task: Task[T], cause: object, detail: str, provider: str | None, note: str = "") -> Failure[T]:
        task.settled = True
        self._unqueue(task)
        self.summary.failed += 1
        self._live -= 1
        message = (
            f"task {task.index} failed after {plural(len(task.errors) + len(task.runs), 'attempt')}"
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
        return not self.return_exceptions and not any(task.errors or task.runs for task in self._retries)

    def strand(self, cause: object, detail: str) -> Iterator[Failure[T]]:
        """Fail every task waiting (those tried first, then the items left): no provider is
        left to run them, or the job's budget is spent. Lazily: stop at a failure that ends the job."""
        note = SPENT if self.over_budget else STRANDED
        tried = [task for task in self._retries if task.errors or task.runs]
        untried = [task for task in self._retries if not (task.errors or task.runs)]
        for task in tried + untried:
            yield self._fail(task, cause, detail, None, note)
        while (fresh := self._peek()) is not None:
            self._ahead = None
            yield self._fail(fresh, cause, detail, None, note)

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
