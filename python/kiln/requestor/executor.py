"""Split, run, combine: farm a worker over many inputs on rented activities.

:class:`Job` rents up to ``max_providers`` activities, one per provider, and feeds each
one task after another (a container per activity, not per task). ``setup(act)`` runs
once per activity before its first task, ``teardown(act)`` before its release.

Placement is the hub's: every rent of a job names the job's group, and the hub keeps a
group's activities on distinct providers, so a job costs one round trip per rent however
many providers are connected.

Failures: an attempt whose provider is lost, that runs past ``task_timeout``, or whose
worker raises :class:`RetryTask` is tried again, at most ``retries`` more times, on another
provider when one is available. A lost provider, or one that cannot start the job's
containers, is the provider's failure. A failure the worker raises (RetryTask, a timeout)
is the task's, until the task succeeds on another provider: then it was the provider's.
A provider that fails twice in a job gets no more of its tasks. Any other exception
from the worker, or a task out of attempts, ends the job with :class:`TaskFailed` (or, with
``return_exceptions=True``, that TaskFailed is the task's result); so does a task no
provider is left to run. However the job ends — done, failed, cancelled — every activity
it rented is released.

Verification (``verify=Redundant(2)`` or ``SpotCheck(0.1)``): a task runs on several
providers and its result is the one that enough of them agree on (see
:mod:`kiln.requestor.scheduling`); for each run that lost, the job reports a verdict to the
hub (:meth:`kiln.Requestor.report_verdict`), emits ``task_disputed``, and never uses that
run's result. The summary counts the tasks ``verified`` and ``disputed``, and ``lost_by``
provider.

The market (protocol 1.5): ``budget`` (credits) caps what the job's group ever spends at the
hub; ``strategy``, ``allow``, ``deny``, ``min_reputation`` and ``max_duration`` go with every
rent (see :meth:`kiln.Requestor.rent`). When the hub refuses a rent because the budget
cannot hold another activity, or ends an activity because it ran out, the job rents nothing
more: the activities it holds go on taking its tasks (each is covered by its own hold) until
the hub ends them or the tasks run out, and once none is held the tasks not done fail with
:class:`~kiln.BudgetExceeded` (the job raises it, or each is a TaskFailed caused by it with
``return_exceptions``). The hub's captures come as ``cost`` events, and the summary's
``spent`` and ``spent_by_provider`` add them up.

An image from the hub's store that a provider lacks is loaded before the container starts:
the job emits ``image_loading`` events as the bytes go, and its summary counts the bytes
each provider pulled.

Every attempt is recorded (:attr:`Job.attempts`: its task, provider, activity, times, outcome,
reason and bytes moved), and :meth:`Job.report` draws them as an HTML timeline
(:mod:`kiln.requestor.report`). A hub that welcomed the requestor at 1.6 hears of each attempt
as it starts and as it ends (``task`` reports, sent without waiting: they never slow or fail
the job), for its dashboard.

The worker (and ``setup``, ``teardown``) must be async callables (:func:`is_async_callable`):
anything else is refused with a :class:`~kiln.UsageError` before anything is rented. An
exception a worker raises is the task's :class:`TaskFailed` ``__cause__``, its type and
message in the TaskFailed's message.

The rules above live in :mod:`kiln.requestor.scheduling`, a pure core (no ``await``, no
clock) that js-client/src/scheduling.js mirrors and the job vectors hold together; this
module is the asyncio around it: it rents, runs workers, keeps time, waits, and tells the
core what happened. The items are read as slots free up, so a generator of a million items
runs in bounded memory, and results wait in a bounded buffer (``RESULT_BUFFER``).

Use :meth:`kiln.Requestor.map` / :meth:`kiln.Requestor.map_unordered`, or make a
:class:`Job` to follow its :meth:`Job.events` and read its :attr:`Job.summary`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, Literal, Protocol, TypedDict, TypeVar, cast

from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import (
    BudgetExceeded,
    ConnectionClosed,
    ConnectionLost,
    ContainerFailed,
    ImageCorrupt,
    ImageNotFound,
    KilnError,
    NoMatch,
    ProviderLost,
    UsageError,
)
from kiln.protocol.messages import MAX_EXCLUDE, Cost, Demand, TaskState, User
from kiln.protocol.money import MICRO, format_credits
from kiln.requestor.activity import Activity
from kiln.requestor.report import Attempt, AttemptOutcome, Timeline, render_html
from kiln.requestor.scheduling import (
    INTERRUPTED,
    Dispute,
    EventKind,
    Failure,
    Outcome,
    Redundant,
    Scheduler,
    SpotCheck,
    Task,
    Verify,
)
from kiln.requestor.scheduling import JobSummary as JobSummary  # re-exported: kiln.JobSummary
from kiln.requestor.terms import market_terms

T = TypeVar("T")
R = TypeVar("R")

Worker = Callable[[Activity, T], Awaitable[R]]
Hook = Callable[[Activity], Awaitable[None]]
RentProgressHandler = Callable[[str, str, int, int], None]
"""Called as a provider loads a rent's image: ``(provider, image, done, total)`` in bytes."""

EVENT_BUFFER: Final = 1024
RESULT_BUFFER: Final = 1024
"""Results a job holds for :meth:`Job.results` to take: past this many, no task starts."""
RENT_RETRY_SECONDS: Final = 0.5
MiB: Final = 2**20
TEARDOWN_SECONDS: Final = 60.0

log = logging.getLogger("kiln.executor")


class Renter(Protocol):
    """What a job needs of a requestor: :meth:`kiln.Requestor.rent`."""

    def rent(
        self,
        image: str,
        demand: Demand | None = None,
        *,
        exclude: Iterable[str] = (),
        group: str | None = None,
        on_progress: RentProgressHandler | None = None,
        user: User | None = None,
        max_duration: float | None = None,
        budget: float | str | None = None,
        strategy: str | None = None,
        allow: Iterable[str] | None = None,
        min_reputation: float | None = None,
    ) -> Awaitable[Activity]: ...

    async def reconnected(self) -> bool:
        """Wait out a reconnect: True when the connection is back, False when it is gone for good."""
        ...

    async def report_verdict(self, lost: str, agreed: Sequence[str]) -> None:
        """:meth:`kiln.Requestor.report_verdict`."""
        ...

    def report_task(
        self,
        group: str,
        task: int,
        attempt: int,
        state: TaskState,
        *,
        activity: str | None = None,
        reason: str = "",
        moved: int = 0,
    ) -> None:
        """:meth:`kiln.Requestor.report_task`: never raises, never waits."""
        ...


class RetryTask(KilnError):
    """Raise from a worker to have the task tried again (on another provider if possible)."""

    default_code = ErrorCode.INTERNAL


class TaskTimeout(KilnError):
    """An attempt ran past the job's ``task_timeout``; the task is tried again."""

    default_code = ErrorCode.TIMEOUT


class Disputed(KilnError):
    """A verified task's results disagreed, and no more runs could settle it: its TaskFailed's cause."""

    default_code = ErrorCode.TASK_FAILED


class TaskFailed(KilnError):
    """A task failed for good. ``index`` and ``item`` name it; ``attempts`` holds each attempt's error.

    Its ``__cause__`` is what ended it: the worker's own exception (its type and message are
    in this one's), or the last attempt's error.
    """

    default_code = ErrorCode.TASK_FAILED

    def __init__(self, message: str, index: int, item: Any, attempts: list[BaseException]) -> None:
        super().__init__(message)
        self.index = index
        self.item = item
        self.attempts = attempts


@dataclass(frozen=True, slots=True)
class JobEvent:
    """Something that happened in a job, ``elapsed`` seconds after it started.

    ``image_loading``: ``provider`` loads the job's image, ``bytes_done`` of ``bytes_total``.
    ``cost``: the hub captured ``due`` credits so far for ``activity`` on ``provider``
    (cumulative; ``final`` at its end).
    """

    kind: EventKind
    elapsed: float
    task: int | None = None
    provider: str | None = None
    detail: str = ""
    bytes_done: int | None = None
    bytes_total: int | None = None
    activity: str | None = None
    due: float | None = None
    final: bool = False


HUB_ENDED: Final = frozenset({ErrorCode.BUDGET_EXCEEDED, ErrorCode.INSUFFICIENT_FUNDS, ErrorCode.EXPIRED})
"""The codes of an ``activity_lost`` by which the hub itself ended an activity (1.5)."""


def _ended_by_hub(activity: Activity) -> ProviderLost | None:
    """The hub ended ``activity`` (``activity_lost`` comes before its requests fail): as ProviderLost."""
    lost = activity.lost
    if lost is None or lost.code not in HUB_ENDED:
        return None
    return ProviderLost(f"activity {activity.id} is gone: {lost.message}", lost.code)


def loading_text(image: str, provider: str, done: int, total: int) -> str:
    """How a loading image reads: ``loading wordcount:1 on p1, 45 of 120 MiB``."""
    return f"loading {image} on {provider}, {done // MiB} of {-(-total // MiB)} MiB"


class JobOptions(TypedDict, total=False):
    """The options of a :class:`Job` besides its worker, items and image."""

    demand: Demand | None
    max_providers: int
    retries: int
    task_timeout: float | None
    start_timeout: float
    setup: Hook | None
    teardown: Hook | None
    return_exceptions: bool
    on_event: Callable[[JobEvent], None] | None
    user: User | None
    budget: float | str | None
    strategy: str | None
    allow: Iterable[str] | None
    deny: Iterable[str]
    min_reputation: float | None
    max_duration: float | None
    verify: Verify | None


@dataclass(slots=True, eq=False)
class _Running:
    """An attempt under way: its number in the timeline, and the activity's bytes moved when it began."""

    started: int
    task: int
    attempt: int
    activity: Activity
    moved: int
    open: bool = True


class Job(Generic[T, R]):
    """One split-run-combine job. Run it once with :meth:`run` or :meth:`results`.

    The items are read as slots free up (a generator of a million items is fine): the job
    keeps a task while it waits or runs, and nothing of it but counters once it is done.
    """

    def __init__(
        self,
        requestor: Renter,
        worker: Worker[T, R],
        items: Iterable[T],
        *,
        image: str,
        demand: Demand | None = None,
        max_providers: int = 4,
        retries: int = 2,
        task_timeout: float | None = None,
        start_timeout: float = 60.0,
        setup: Hook | None = None,
        teardown: Hook | None = None,
        return_exceptions: bool = False,
        on_event: Callable[[JobEvent], None] | None = None,
        user: User | None = None,
        budget: float | str | None = None,
        strategy: str | None = None,
        allow: Iterable[str] | None = None,
        deny: Iterable[str] = (),
        min_reputation: float | None = None,
        max_duration: float | None = None,
        verify: Verify | None = None,
    ) -> None:
        for role, function in (("worker", worker), ("setup", setup), ("teardown", teardown)):
            if function is not None and not is_async_callable(function):
                raise UsageError(
                    f"the {role} must be an async function (async def {role}(activity, ...), a functools.partial "
                    f"of one, or an object with an async __call__), and {function!r} is not one"
                )
        if max_providers < 1:
            raise UsageError("max_providers must be at least 1")
        if retries < 0:
            raise UsageError("retries cannot be negative")
        if verify is not None and not isinstance(verify, Redundant | SpotCheck):
            raise UsageError(f"verify takes Redundant(n) or SpotCheck(p), not {verify!r}")
        if isinstance(verify, Redundant) and max_providers < verify.n:
            raise UsageError(f"{verify.n} copies of each task need max_providers of {verify.n} at least")
        if isinstance(deny, str):
            raise UsageError("deny takes a list of provider names, not one string")
        # Checked here, before anything is rented; every rent of the job carries them.
        market_terms(
            max_duration=max_duration, budget=budget, strategy=strategy, allow=allow, min_reputation=min_reputation
        )
        terms: dict[str, Any] = {
            "max_duration": max_duration,
            "budget": budget,
            "strategy": strategy,
            "allow": list(allow) if allow is not None else None,
            "min_reputation": min_reputation,
        }
        self._terms = {name: value for name, value in terms.items() if value is not None}
        self.deny = frozenset(deny)
        """Providers the job never rents from (besides those it bans)."""
        self.verify = verify

        self.requestor = requestor
        self.worker = worker
        self.image = image
        self.demand = demand
        self.user: User | None = user
        """``"root"``: the job's commands run as root, on providers that allow it."""
        self.max_providers = max_providers
        self.retries = retries
        self.task_timeout = task_timeout
        self.start_timeout = start_timeout
        self.setup = setup
        self.teardown = teardown
        self.return_exceptions = return_exceptions
        self.group = f"job-{secrets.token_hex(8)}"
        """The hub keeps the job's activities on distinct providers by this name."""
        self._listeners: list[Callable[[JobEvent], None]] = [on_event] if on_event else []
        self._core: Scheduler[T] = Scheduler(
            items, self._scheduled, retries=retries, return_exceptions=return_exceptions, verify=verify
        )
        self._spent: BudgetExceeded | None = None
        """Why the job stopped renting: its budget is spent."""
        self._due: dict[str, int] = {}  # activity -> the latest due the hub captured (micro-credits)
        self.summary = self._core.summary
        self._changed = asyncio.Event()
        self._watching = 0  # tasks waiting in _changes
        self._started = 0.0
        self._emit_result: Callable[[int, Any], None] = lambda index, value: None
        self._undelivered = 0  # results handed to results() and not yet taken
        self._used = False
        self._timeline = Timeline()

    # --- following the job ------------------------------------------------------------

    @property
    def total(self) -> int | None:
        """How many tasks the job has: None while a generator of items has not run out."""
        return self._core.total

    @property
    def running(self) -> int:
        return self._core.running

    @property
    def attempts(self) -> list[Attempt]:
        """Every attempt of the job's tasks so far, by start (the latest 10,000 that ended, and
        those running): task, attempt number, provider, activity, start and end (seconds since
        the job started), outcome, reason, bytes moved. A copy: the job's own record moves on."""
        return self._timeline.attempts

    def report_html(self, title: str | None = None) -> str:
        """The job's report as one self-contained HTML page (see :meth:`report`)."""
        timeline = self._timeline
        return render_html(title or f"Kiln job {self.group}", self.summary, timeline.attempts, dropped=timeline.dropped)

    def report(self, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
        """Write the job's report to ``path`` (an HTML file, made or replaced); returns its path.

        One self-contained page (inline CSS and SVG, nothing fetched, every text escaped): a
        Gantt chart of the attempts on each provider, coloured by outcome (hover a bar for its
        task, times, bytes and reason), the summary (done, failed, retries, spent, elapsed), and
        the retries with why. Call it once the job is done, or while it runs for what happened so far.
        """
        target = Path(path)
        target.write_text(self.report_html(title), encoding="utf-8")
        return target

    def subscribe(self, listener: Callable[[JobEvent], None]) -> None:
        """Call ``listener`` (synchronously, so keep it quick) for every event."""
        self._listeners.append(listener)

    async def events(self) -> AsyncIterator[JobEvent]:
        """The job's events as they happen, until ``job_done``. Start iterating before the job.

        Bounded: a consumer more than 1024 events behind loses the oldest ones.
        """
        buffer: deque[JobEvent] = deque(maxlen=EVENT_BUFFER)
        ready = asyncio.Event()

        def take(event: JobEvent) -> None:
            buffer.append(event)
            ready.set()

        self.subscribe(take)
        try:
            while True:
                while not buffer:
                    ready.clear()
                    await ready.wait()
                event = buffer.popleft()
                yield event
                if event.kind == "job_done":
                    return
        finally:
            self._listeners.remove(take)

    def _event(
        self,
        kind: EventKind,
        task: int | None = None,
        provider: str | None = None,
        detail: str = "",
        progress: tuple[int, int] | None = None,
        cost: Cost | None = None,
    ) -> None:
        if not self._listeners:
            return
        done, total = progress if progress is not None else (None, None)
        event = JobEvent(kind, time.monotonic() - self._started, task, provider, detail, done, total)
        if cost is not None:
            event = dataclasses.replace(event, activity=cost.activity, due=cost.due / MICRO, final=cost.final)
        for listener in list(self._listeners):
            listener(event)

    def _scheduled(self, kind: EventKind, task: int | None, provider: str | None, detail: str) -> None:
        """An event of the scheduling core; anything it decided may let a waiting slot go on."""
        self._event(kind, task, provider, detail)
        self._notify()

    def _charged(self, activity: Activity, cost: Cost) -> None:
        """The hub captured ``cost`` for one of the job's activities: count it, tell the listeners."""
        before = self._due.get(activity.id, 0)
        self._due[activity.id] = max(before, cost.due)
        self.summary.spent_micro[activity.provider] += max(cost.due - before, 0)
        detail = f"{activity.id}: {format_credits(cost.due)} credits" + (" in all" if cost.final else " so far")
        self._event("cost", provider=activity.provider, detail=detail, cost=cost)

    def _loading(self, provider: str, image: str, done: int, total: int) -> None:
        # Named as the job names it (the hub may say the digest).
        detail = loading_text(self.image, provider, done, total)
        self._event("image_loading", provider=provider, detail=detail, progress=(done, total))

    # --- running it ----------------------------------------------------------------------

    async def run(self) -> list[R]:
        """Run the job; the results in input order.

        With ``return_exceptions=True`` a task that failed for good has its
        :class:`TaskFailed` in its place (typed as ``R`` for the common case).
        """
        results: list[Any] = [None] * (self.total or 0)
        async for index, value in self.results():
            if index >= len(results):
                results.extend([None] * (index + 1 - len(results)))
            results[index] = value
        return results

    async def results(self) -> AsyncGenerator[tuple[int, R], None]:
        """Run the job, yielding ``(index, result)`` as each task finishes."""
        if self._used:
            raise UsageError("a Job runs once; make a new one")
        self._used = True
        # Bounded: a slot takes no new task while RESULT_BUFFER results wait here.
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

        def emit(index: int, value: Any) -> None:
            self._undelivered += 1
            queue.put_nowait((index, value))

        self._emit_result = emit
        # Owned here: awaited on every path out of this generator.
        runner = asyncio.create_task(self._drive(), name="kiln-job")
        try:
            while True:
                if queue.empty():
                    if runner.done():
                        break
                    getter = asyncio.ensure_future(queue.get())
                    await asyncio.wait({getter, runner}, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        runner.result()  # the job ended first: raise its error
                        continue
                    result = getter.result()
                else:
                    result = queue.get_nowait()
                self._undelivered -= 1
                if self._undelivered == RESULT_BUFFER - 1:
                    self._notify()
                yield result
            await runner
        finally:
            if not runner.done():
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner

    async def _drive(self) -> None:
        self._started = time.monotonic()
        total = self.total
        self._event("job_started", detail=f"{total} tasks" if total is not None else "tasks as the items come")
        try:
            slots = self._core.slots(self.max_providers)
            if slots:
                async with asyncio.TaskGroup() as tg:
                    for slot in range(slots):
                        tg.create_task(self._slot(slot), name=f"kiln-slot-{slot}")
            if self._spent is not None:
                # Every attempt under way has ended: what is not done fails with the budget.
                for failure in self._core.strand(self._spent, describe(self._spent)):
                    self._failed(failure)
        except BaseExceptionGroup as group:
            error = _first(group)
            raise error from error.__cause__  # out of the group, keeping what caused it
        finally:
            self._core.stop()
            self.summary.wall_seconds = time.monotonic() - self._started
            self.summary.failed_providers = set(self._core.banned)
            self._event("job_done", detail="\n".join(self.summary.lines()))

    def _notify(self) -> None:
        if self._watching:  # else there is no one to wake (and no event to make anew)
            self._changed.set()
            self._changed = asyncio.Event()

    async def _changes(self, timeout: float | None = None) -> None:
        self._watching += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
        finally:
            self._watching -= 1

    async def _slot(self, slot: int) -> None:
        core = self._core
        while not core.finished and not core.stopped:
            activity = await self._acquire()
            if activity is None:
                return
            if activity.pulled:
                self.summary.pulled[activity.provider] += activity.pulled
            activity.on_cost = self._charged
            if activity.cost is not None:  # captured before the job saw the activity
                self._charged(activity, activity.cost)
            core.hold(slot, activity.provider, activity.id)
            try:
                await self._serve(activity)
            finally:
                await self._release(activity)
                core.free(slot, activity.id)

    async def _acquire(self) -> Activity | None:
        """Rent an activity on a provider this job does not hold yet (None: nothing left to do)."""
        core = self._core
        waiting_since = time.monotonic()
        while not core.finished and not core.stopped:
            if core.over_budget:
                return None  # nothing more is rented: the activities held go on
            if not core.wants_activity():
                if not core.finished:
                    await self._changes()
                continue
            if core.too_many_banned():
                self._nowhere_to_run(NoMatch(f"more than {MAX_EXCLUDE} providers failed this job"), waited=False)
                return None
            try:
                return await self.requestor.rent(
                    self.image,
                    self.demand,
                    exclude=core.banned | self.deny | core.avoid(),
                    group=self.group,
                    on_progress=self._loading,
                    user=self.user,
                    **self._terms,
                )
            except BudgetExceeded as e:
                self._out_of_budget(e)
                return None
            except ProviderLost:
                continue  # it vanished while starting our container: try another
            except ConnectionLost:
                if not await self.requestor.reconnected():
                    raise
                continue  # the connection dropped and is back: rent again
            except (ImageNotFound, ImageCorrupt, ContainerFailed) as e:
                if e.provider is None:
                    raise
                # This provider cannot run the job's containers; the others may.
                core.ban(e.provider, e.message)
            except KilnError as e:
                held = core.holding
                if not isinstance(e, NoMatch) and not (e.code == ErrorCode.TOO_MANY and held):
                    raise
                if held and not (isinstance(e, NoMatch) and core.blocked()):
                    # Others are working (or the hub holds us to as many activities as we have):
                    # wait for a provider to join or to be released.
                    await self._changes(RENT_RETRY_SECONDS * 4)
                    continue
                if not isinstance(e, NoMatch):
                    raise
                if time.monotonic() - waiting_since > self.start_timeout:
                    self._nowhere_to_run(e)
                    return None
                self._event("waiting", detail=e.message)
                await self._changes(RENT_RETRY_SECONDS)
        return None

    def _out_of_budget(self, error: BudgetExceeded) -> None:
        """The hub says the job's budget is spent: rent nothing more; the activities held go on, and
        once none is left :meth:`_drive` fails the rest."""
        if self._spent is None:
            self._spent = error
            log.warning("the job's budget is spent: %s", error.message)
        self._core.budget_exceeded()
        self._notify()

    def _nowhere_to_run(self, reason: NoMatch, *, waited: bool = True) -> None:
        """No provider is left to take the job: its tasks fail, not a misleading NoMatch.

        The tasks already tried fail first, each with its attempts (``TaskFailed``); a job
        none of whose tasks ever ran ends with the NoMatch itself.
        """
        why = f"no provider for this job after {self.start_timeout:g} s: {reason.message}" if waited else reason.message
        why = self._core.nowhere_to_run(why)
        if self._core.never_ran():
            raise NoMatch(why) from reason
        cause = NoMatch(why)
        cause.__cause__ = reason
        for failure in self._core.strand(cause, describe(cause)):
            self._failed(failure)

    async def _release(self, activity: Activity) -> None:
        """Tear down (if asked) and release ``activity``; the release happens whatever teardown does."""
        try:
            if self.teardown is not None and activity.lost is None and not activity.released:
                async with asyncio.timeout(TEARDOWN_SECONDS):
                    await self.teardown(activity)
        except Exception as e:  # noqa: BLE001 - a failed teardown must not keep the container alive
            log.warning("teardown on %s failed: %s: %s", activity.provider, type(e).__name__, e)
        finally:
            with contextlib.suppress(KilnError):
                await activity.release()
        if activity.cpu_seconds is not None:
            cpu = self.summary.cpu_seconds
            cpu[activity.provider] = cpu.get(activity.provider, 0.0) + activity.cpu_seconds

    async def _serve(self, activity: Activity) -> None:
        provider = activity.provider
        if self.setup is not None:
            try:
                await self.setup(activity)
            except ProviderLost:
                self._core.provider_failed(provider)
                return
        while (task := await self._next_task(provider)) is not None:
            healthy = await self._attempt(task, activity)
            if not healthy or provider in self._core.banned or activity.lost is not None:
                return

    async def _next_task(self, provider: str) -> Task[T] | None:
        """The next task for ``provider`` (see :meth:`Scheduler.next_task`), once results have room."""
        core = self._core
        while core.may_serve(provider):
            if self._undelivered < RESULT_BUFFER and (task := core.next_task(provider)) is not None:
                return task
            if core.blocked():
                return None  # what waits needs another provider: give this activity up, rent elsewhere
            await self._changes(RENT_RETRY_SECONDS * 4)
        return None

    async def _attempt(self, task: Task[T], activity: Activity) -> bool:
        """Run one attempt of ``task``; False when the activity should be given up."""
        running = self._begin(task, activity)
        try:
            return await self._run(task, activity, running)
        finally:
            if running.open:  # the job ended under it (cancelled, or its connection is gone)
                self._end(running, "lost", "the job ended while it ran", "failed")

    async def _run(self, task: Task[T], activity: Activity, running: _Running) -> bool:
        provider = activity.provider
        core = self._core
        outcome: Outcome
        error: BaseException | None = None
        try:
            if self.task_timeout is None:
                value = await self.worker(activity, task.item)
            else:
                async with asyncio.timeout(self.task_timeout):
                    value = await self.worker(activity, task.item)
        except TimeoutError:
            outcome = "timeout"
            error = TaskTimeout(f"attempt ran past task_timeout={self.task_timeout:g} s on {provider}")
        except ConnectionLost:
            if not await self.requestor.reconnected():
                core.abandon()
                raise  # the hub is gone: nothing to retry on
            outcome = "interrupted"  # not the task's fault, nor the provider's
        except ConnectionClosed:
            core.abandon()
            raise  # closed by us: nothing to retry on
        except ProviderLost as e:
            if activity.lost is None and e.code == ErrorCode.PROVIDER_LOST:
                # The request failed, not the activity (no activity_lost came first): the hub lost its
                # way to the provider for a moment (a link between hubs broke) and holds the activity
                # until the provider is back. Neither the task's fault nor the provider's: again on it.
                outcome = "interrupted"
            else:
                outcome, error = self._lost(activity, e), e
        except RetryTask as e:
            outcome, error = "retry", e
        except Exception as e:  # noqa: BLE001 - the worker's own failure is the task's outcome
            outcome, error = "error", e
            if (ended := _ended_by_hub(activity)) is not None:
                # The hub ended the activity under a command (its budget, funds or max_duration):
                # the command failed with that (cancelled), and counts as the end it was.
                ended.__cause__ = e
                outcome, error = self._lost(activity, ended), ended
        else:
            verdict = core.outcome(task, provider, "ok", value=value)
            self._end(running, "done", "", "done")
            if verdict.accepted is not None:
                self._emit_result(task.index, verdict.accepted.value)
            for dispute in verdict.disputes:
                await self._report(dispute)
            if verdict.failure is not None:
                self._failed(verdict.failure)
            return verdict.keep
        detail = describe(error) if error is not None else ""
        verdict = core.outcome(task, provider, outcome, error, detail)
        state: Literal["retried", "failed"] = "failed" if verdict.failure is not None else "retried"
        lost = isinstance(error, ProviderLost)
        self._end(running, "lost" if lost else state, detail or INTERRUPTED, state)
        if verdict.failure is not None:
            self._failed(verdict.failure)
        return verdict.keep and not lost  # the hub ended it: give it up

    def _begin(self, task: Task[T], activity: Activity) -> _Running:
        """An attempt of ``task`` starts on ``activity``: tell the core, the timeline and the hub."""
        number = self._core.start(task, activity.provider)
        at = time.monotonic() - self._started
        started = self._timeline.start(task.index, number, activity.provider, activity.id, at)
        self.requestor.report_task(self.group, task.index, number, "started", activity=activity.id)
        return _Running(started, task.index, number, activity, activity.moved)

    def _end(self, running: _Running, outcome: AttemptOutcome, reason: str, state: TaskState) -> None:
        """The attempt ``running`` ended so: the timeline and the hub hear it (once)."""
        running.open = False
        moved = running.activity.moved - running.moved
        at = time.monotonic() - self._started
        self._timeline.end(running.started, outcome, reason, moved, at)
        self.requestor.report_task(
            self.group,
            running.task,
            running.attempt,
            state,
            activity=running.activity.id,
            reason=reason,
            moved=moved,
        )

    def _lost(self, activity: Activity, error: ProviderLost) -> Outcome:
        """How an attempt whose activity the hub ended counts: by why it ended."""
        if error.code == ErrorCode.BUDGET_EXCEEDED:
            self._out_of_budget(BudgetExceeded(error.message))
            return "interrupted"  # not the task's fault nor the provider's; it fails with the budget
        if error.code == ErrorCode.INSUFFICIENT_FUNDS:
            return "interrupted"  # the next rent says so, and ends the job
        if error.code == ErrorCode.EXPIRED:
            return "timeout"  # the rent's max_duration: as a task that ran too long
        return "provider_lost"

    async def _report(self, dispute: Dispute) -> None:
        """Tell the hub that ``dispute``'s run lost (it counts against the provider, which is not paid for it)."""
        try:
            await self.requestor.report_verdict(dispute.activity, dispute.agreed)
        except KilnError as e:  # the verdict is the hub's to count; the job's results stand without it
            log.warning("the hub took no verdict on %s (%s): %s", dispute.activity, dispute.provider, e.message)

    def _failed(self, failure: Failure[T]) -> None:
        """A task failed for good: the job ends with its TaskFailed, or that is its result."""
        task = failure.task
        cause = failure.cause if failure.cause is not None else Disputed(failure.message)
        if failure.ends_job and isinstance(cause, BudgetExceeded):
            raise BudgetExceeded(f"{cause.message}; the job stopped: {failure.message}") from cause
        error = TaskFailed(failure.message, task.index, task.item, cast(list[BaseException], list(task.errors)))
        error.__cause__ = cast(BaseException, cause)
        if failure.ends_job:
            raise error
        self._emit_result(task.index, error)


def describe(error: BaseException) -> str:
    """An error as events and messages tell it: ``Type: message``."""
    return f"{type(error).__name__}: {error}"


def is_async_callable(function: object) -> bool:
    """Whether calling ``function`` gives a coroutine: an ``async def`` function or method, a
    :func:`functools.partial` of one, or an object whose ``__call__`` is ``async def``.

    A plain ``def`` (a lambda too) is not, even one that returns an awaitable: wrap what it
    calls with :func:`functools.partial` instead.
    """
    while isinstance(function, functools.partial):
        function = function.func
    if inspect.iscoroutinefunction(function):
        return True
    if inspect.isroutine(function) or inspect.isclass(function) or not callable(function):
        return False
    return inspect.iscoroutinefunction(type(function).__call__)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that ended the job (a TaskFailed over anything it caused elsewhere)."""
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            leaves.append(error)

    walk(group)
    for error in leaves:
        if isinstance(error, TaskFailed):
            return error
    return leaves[0]
