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

An image from the hub's store that a provider lacks is loaded before the container starts:
the job emits ``image_loading`` events as the bytes go, and its summary counts the bytes
each provider pulled.

The worker (and ``setup``, ``teardown``) must be async callables (:func:`is_async_callable`):
anything else is refused with a :class:`~kiln.UsageError` before anything is rented. An
exception a worker raises is the task's :class:`TaskFailed` ``__cause__``, its type and
message in the TaskFailed's message.

Use :meth:`kiln.Requestor.map` / :meth:`kiln.Requestor.map_unordered`, or make a
:class:`Job` to follow its :meth:`Job.events` and read its :attr:`Job.summary`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, Protocol, TypedDict, TypeVar

from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import (
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
from kiln.protocol.messages import MAX_EXCLUDE, Demand, User
from kiln.protocol.sizes import format_size
from kiln.requestor.activity import Activity

T = TypeVar("T")
R = TypeVar("R")

Worker = Callable[[Activity, T], Awaitable[R]]
Hook = Callable[[Activity], Awaitable[None]]
RentProgressHandler = Callable[[str, str, int, int], None]
"""Called as a provider loads a rent's image: ``(provider, image, done, total)`` in bytes."""

EVENT_BUFFER: Final = 1024
RENT_RETRY_SECONDS: Final = 0.5
MAX_PROVIDER_FAILURES: Final = 2
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
    ) -> Awaitable[Activity]: ...

    async def reconnected(self) -> bool:
        """Wait out a reconnect: True when the connection is back, False when it is gone for good."""
        ...


class RetryTask(KilnError):
    """Raise from a worker to have the task tried again (on another provider if possible)."""

    default_code = ErrorCode.INTERNAL


class TaskTimeout(KilnError):
    """An attempt ran past the job's ``task_timeout``; the task is tried again."""

    default_code = ErrorCode.TIMEOUT


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


EventKind = Literal[
    "job_started", "rented", "released", "task_started", "task_done", "task_retry", "task_failed",
    "provider_banned", "waiting", "image_loading", "job_done",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class JobEvent:
    """Something that happened in a job, ``elapsed`` seconds after it started.

    ``image_loading``: ``provider`` loads the job's image, ``bytes_done`` of ``bytes_total``.
    """

    kind: EventKind
    elapsed: float
    task: int | None = None
    provider: str | None = None
    detail: str = ""
    bytes_done: int | None = None
    bytes_total: int | None = None


def loading_text(image: str, provider: str, done: int, total: int) -> str:
    """How a loading image reads: ``loading wordcount:1 on p1, 45 of 120 MiB``."""
    return f"loading {image} on {provider}, {done // MiB} of {-(-total // MiB)} MiB"


@dataclass
class JobSummary:
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


@dataclass
class _Task(Generic[T]):
    index: int
    item: T
    errors: list[BaseException] = field(default_factory=list)
    failed_on: set[str] = field(default_factory=set)
    suspects: set[str] = field(default_factory=set)
    """Providers where the worker failed it: to blame if it succeeds elsewhere."""


class Job(Generic[T, R]):
    """One split-run-combine job. Run it once with :meth:`run` or :meth:`results`."""

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
        self._tasks = [_Task(i, item) for i, item in enumerate(items)]
        self.summary = JobSummary(tasks=len(self._tasks))
        self._pending: deque[_Task[T]] = deque(self._tasks)
        self._remaining = len(self._tasks)
        self._running = 0
        self._held: dict[int, str] = {}  # slot -> provider of the activity it holds
        self._failures: Counter[str] = Counter()
        self._banned: set[str] = set()
        self._last_ban = ""
        """Why the job last passed over a provider: told when no provider is left."""
        self._changed = asyncio.Event()
        self._failing = False
        self._started = 0.0
        self._emit_result: Callable[[int, Any], None] = lambda index, value: None
        self._used = False

    # --- following the job ------------------------------------------------------------

    @property
    def total(self) -> int:
        return len(self._tasks)

    @property
    def running(self) -> int:
        return self._running

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
    ) -> None:
        done, total = progress if progress is not None else (None, None)
        event = JobEvent(kind, time.monotonic() - self._started, task, provider, detail, done, total)
        for listener in list(self._listeners):
            listener(event)

    def _loading(self, provider: str, image: str, done: int, total: int) -> None:
        # Named as the job names it (the hub may say the digest).
        self._event("image_loading", provider=provider, detail=loading_text(self.image, provider, done, total),
                    progress=(done, total))  # fmt: skip

    # --- running it ----------------------------------------------------------------------

    async def run(self) -> list[R]:
        """Run the job; the results in input order.

        With ``return_exceptions=True`` a task that failed for good has its
        :class:`TaskFailed` in its place (typed as ``R`` for the common case).
        """
        results: list[Any] = [None] * self.total
        async for index, value in self.results():
            results[index] = value
        return results

    async def results(self) -> AsyncGenerator[tuple[int, R], None]:
        """Run the job, yielding ``(index, result)`` as each task finishes."""
        if self._used:
            raise UsageError("a Job runs once; make a new one")
        self._used = True
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue(maxsize=max(self.total, 1))
        self._emit_result = lambda index, value: queue.put_nowait((index, value))
        # Owned here: awaited on every path out of this generator.
        runner = asyncio.create_task(self._drive(), name="kiln-job")
        received = 0
        try:
            while received < self.total:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, runner}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    runner.result()  # the job ended first: raise its error
                    continue
                received += 1
                yield getter.result()
            await runner
        finally:
            if not runner.done():
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner

    async def _drive(self) -> None:
        self._started = time.monotonic()
        self._event("job_started", detail=f"{self.total} tasks")
        try:
            if self.total:
                async with asyncio.TaskGroup() as tg:
                    for slot in range(min(self.max_providers, self.total)):
                        tg.create_task(self._slot(slot), name=f"kiln-slot-{slot}")
        except BaseExceptionGroup as group:
            error = _first(group)
            raise error from error.__cause__  # out of the group, keeping what caused it
        finally:
            self.summary.wall_seconds = time.monotonic() - self._started
            self.summary.failed_providers = set(self._banned)
            self._event("job_done", detail="\n".join(self.summary.lines()))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _changes(self, timeout: float | None = None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()

    async def _slot(self, slot: int) -> None:
        while self._remaining and not self._failing:
            activity = await self._acquire()
            if activity is None:
                return
            self._held[slot] = activity.provider
            if activity.pulled:
                self.summary.pulled[activity.provider] += activity.pulled
            self._event("rented", provider=activity.provider, detail=activity.id)
            try:
                await self._serve(activity)
            finally:
                await self._release(activity)
                del self._held[slot]
                self._notify()

    async def _acquire(self) -> Activity | None:
        """Rent an activity on a provider this job does not hold yet (None: nothing left to do)."""
        waiting_since = time.monotonic()
        while self._remaining and not self._failing:
            if not self._pending:
                await self._changes()
                continue
            if len(self._banned) > MAX_EXCLUDE:
                self._nowhere_to_run(NoMatch(f"more than {MAX_EXCLUDE} providers failed this job"), waited=False)
                return None
            try:
                return await self.requestor.rent(
                    self.image, self.demand, exclude=self._banned, group=self.group, on_progress=self._loading,
                    user=self.user,
                )  # fmt: skip
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
                self._ban(e.provider, e.message)
            except KilnError as e:
                if not isinstance(e, NoMatch) and not (e.code == ErrorCode.TOO_MANY and self._held):
                    raise
                if self._held:
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

    def _nowhere_to_run(self, reason: NoMatch, *, waited: bool = True) -> None:
        """No provider is left to take the job: its tasks fail, not a misleading NoMatch.

        The tasks already tried fail first, each with its attempts (``TaskFailed``); a job
        none of whose tasks ever ran ends with the NoMatch itself.
        """
        why = f"no provider for this job after {self.start_timeout:g} s: {reason.message}" if waited else reason.message
        if self._banned:
            count = len(self._banned)
            why += f" (this job passed over {count} provider{'s' * (count != 1)} that failed it; {self._last_ban})"
        tried = [task for task in self._pending if task.errors]
        if not self.return_exceptions and not tried:
            raise NoMatch(why) from reason
        for task in [*tried, *(task for task in self._pending if not task.errors)]:
            self._pending.remove(task)
            self._fail(task, NoMatch(why), note="no provider is left to run it")

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
        self._event("released", provider=activity.provider, detail=activity.id)

    async def _serve(self, activity: Activity) -> None:
        provider = activity.provider
        if self.setup is not None:
            try:
                await self.setup(activity)
            except ProviderLost:
                self._provider_failed(provider)
                return
        while (task := await self._next_task(provider)) is not None:
            healthy = await self._attempt(task, activity)
            if not healthy or provider in self._banned or activity.lost is not None:
                return

    async def _next_task(self, provider: str) -> _Task[T] | None:
        """The next task for ``provider``: one that has not failed there, if any other can take it."""
        while self._remaining and provider not in self._banned and not self._failing:
            for task in self._pending:
                if provider not in task.failed_on:
                    self._pending.remove(task)
                    return task
            for task in self._pending:
                # It failed here before, but no other provider of this job is a better place.
                if all(p in task.failed_on for p in self._held.values()):
                    self._pending.remove(task)
                    return task
            await self._changes(RENT_RETRY_SECONDS * 4)
        return None

    async def _attempt(self, task: _Task[T], activity: Activity) -> bool:
        """Run one attempt of ``task``; False when the activity should be given up."""
        provider = activity.provider
        self._running += 1
        self.summary.attempts += 1
        self._event("task_started", task.index, provider)
        error: BaseException
        try:
            async with asyncio.timeout(self.task_timeout):
                value = await self.worker(activity, task.item)
        except TimeoutError:
            error = TaskTimeout(f"attempt ran past task_timeout={self.task_timeout:g} s on {provider}")
        except ConnectionLost:
            if not await self.requestor.reconnected():
                raise  # the hub is gone: nothing to retry on
            # Not the task's fault, nor the provider's: tried again, as if never started.
            self._pending.appendleft(task)
            self._event("task_retry", task.index, provider, "the connection to the hub dropped and is back")
            self._notify()
            return True
        except ConnectionClosed:
            raise  # closed by us: nothing to retry on
        except Exception as e:  # noqa: BLE001 - the worker's own failure is the task's outcome
            error = e
        else:
            self.summary.tasks_per_provider[provider] += 1
            for suspect in task.suspects - {provider}:
                self._provider_failed(suspect)  # the task is fine: where it failed, the provider was not
            self._done(task, value, provider)
            return True
        finally:
            self._running -= 1
        task.errors.append(error)
        if not isinstance(error, ProviderLost | RetryTask | TaskTimeout):
            self._fail(task, error, provider)
            return True
        task.failed_on.add(provider)
        if isinstance(error, ProviderLost):
            self._provider_failed(provider)
        else:
            task.suspects.add(provider)
        self._retry_or_fail(task, error, provider)
        return not isinstance(error, ProviderLost)

    def _done(self, task: _Task[T], value: Any, provider: str) -> None:
        self.summary.succeeded += 1
        self._remaining -= 1
        self._event("task_done", task.index, provider)
        self._emit_result(task.index, value)
        self._notify()

    def _retry_or_fail(self, task: _Task[T], error: BaseException, provider: str) -> None:
        if len(task.errors) <= self.retries:
            self.summary.retries += 1
            self._pending.appendleft(task)
            self._event("task_retry", task.index, provider, f"{type(error).__name__}: {error}")
            self._notify()
            return
        self._fail(task, error, provider)

    def _fail(self, task: _Task[T], error: BaseException, provider: str | None = None, note: str = "") -> None:
        """``task`` failed for good: the job ends with its TaskFailed, or that is its result."""
        self.summary.failed += 1
        self._remaining -= 1
        attempts = len(task.errors)
        failure = TaskFailed(
            f"task {task.index} failed after {attempts} attempt{'s' * (attempts != 1)}"
            + (f" ({note})" if note else "") + f": {type(error).__name__}: {error}",
            task.index, task.item, list(task.errors),
        )  # fmt: skip
        failure.__cause__ = error
        self._event("task_failed", task.index, provider, str(failure))
        self._notify()
        if not self.return_exceptions:
            self._failing = True  # no new rents while the job winds down
            raise failure
        self._emit_result(task.index, failure)

    def _provider_failed(self, provider: str) -> None:
        self._failures[provider] += 1
        if self._failures[provider] >= MAX_PROVIDER_FAILURES:
            self._ban(provider, f"failed {self._failures[provider]} times")

    def _ban(self, provider: str, why: str) -> None:
        if provider not in self._banned:
            self._banned.add(provider)
            self._last_ban = f"the last, {provider}: {why}"
            self._event("provider_banned", provider=provider, detail=why)
            self._notify()


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
