"""The executor's scheduling against an in-memory market: retries, bans, distinct providers,
joins and cancellation, with no hub and no Docker (test_executor.py runs the real thing)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

import kiln
from kiln.protocol.messages import Cost, Demand, TaskState
from kiln.requestor.executor import Job, JobEvent, RentProgressHandler, Worker

pytestmark = pytest.mark.timeout(30)


@dataclass(eq=False)
class FakeActivity:
    """What a job needs of an activity; workers see it typed as a kiln.Activity."""

    market: FakeMarket
    id: str
    provider: str
    group: str | None
    pulled: int = 0
    lost: kiln.KilnError | None = None
    released: bool = False
    cpu_seconds: float | None = None
    cost: Cost | None = None
    on_cost: Callable[[kiln.Activity, Cost], None] | None = None
    moved: int = 0

    async def release(self) -> None:
        if not self.released:
            self.released = True
            self.cpu_seconds = 0.5
            await asyncio.sleep(0)
            self.market.live.remove(self)


@dataclass
class FakeMarket:
    """Providers by name; rent() keeps a group on distinct providers, as the hub does."""

    providers: list[str]
    lacking_image: set[str] = field(default_factory=set)
    loads: dict[str, int] = field(default_factory=dict)
    """Providers that load the image (from the hub's store) on their first rent: its bytes."""
    load_step: float = 0.0
    """Seconds between two reports of a load's progress."""
    live: list[FakeActivity] = field(default_factory=list)
    rented: list[FakeActivity] = field(default_factory=list)
    most_of_a_group_on_one_provider: int = 0
    users: list[str | None] = field(default_factory=list)
    """The user every rent asked for."""
    max_held: int | None = None
    """As the hub's --max-activities: a rent past this many live activities is too_many."""
    terms: list[dict[str, Any]] = field(default_factory=list)
    """The market terms every rent carried."""
    budget: int | None = None
    """Rents the job's budget holds: past this many, a rent is refused budget_exceeded."""
    verdicts: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    reports: list[tuple[int, int, str, str | None, str]] = field(default_factory=list)
    """The task reports the jobs sent: (task, attempt, state, activity, reason)."""
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def reconnected(self) -> bool:
        return False  # the fake never loses its connection

    async def report_verdict(self, lost: str, agreed: Sequence[str]) -> None:
        await asyncio.sleep(0)
        self.verdicts.append((lost, tuple(agreed)))

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
        self.reports.append((task, attempt, state, activity, reason))

    def rent(
        self,
        image: str,
        demand: Demand | None = None,
        *,
        exclude: Iterable[str] = (),
        group: str | None = None,
        on_progress: RentProgressHandler | None = None,
        user: str | None = None,
        max_duration: float | None = None,
        budget: float | str | None = None,
        strategy: str | None = None,
        allow: Iterable[str] | None = None,
        min_reputation: float | None = None,
    ) -> Awaitable[kiln.Activity]:
        self.users.append(user)
        terms = {"max_duration": max_duration, "budget": budget, "strategy": strategy, "allow": allow}
        self.terms.append({k: v for k, v in (terms | {"min_reputation": min_reputation}).items() if v is not None})
        return self._rent(set(exclude), group, on_progress)

    async def _rent(
        self, exclude: set[str], group: str | None, on_progress: RentProgressHandler | None = None
    ) -> kiln.Activity:
        await asyncio.sleep(0)
        if self.budget is not None and len(self.rented) >= self.budget:
            raise kiln.BudgetExceeded("what is left of the group's budget cannot hold another activity")
        if self.max_held is not None and len(self.live) >= self.max_held:
            raise kiln.RemoteError(f"more than {self.max_held} activities held at once", kiln.ErrorCode.TOO_MANY)
        taken = {a.provider for a in self.live if group is not None and a.group == group}
        able = [p for p in self.providers if p not in exclude and p not in taken]
        if not able:
            raise kiln.NoMatch(f"every connected provider ({len(self.providers)}) is excluded or in the group")
        provider = min(able, key=lambda p: sum(a.provider == p for a in self.live))
        if provider in self.lacking_image:
            raise kiln.ImageNotFound(f"{provider} lacks the image", provider=provider)
        activity = FakeActivity(self, f"a{next(self._ids)}", provider, group, self.loads.pop(provider, 0))
        self.live.append(activity)
        for done in range(0, activity.pulled + 1, max(activity.pulled // 3, 1)) if activity.pulled else ():
            if on_progress is not None:
                on_progress(provider, "sha256:" + "a" * 64, done, activity.pulled)
            await asyncio.sleep(self.load_step)
        self.rented.append(activity)
        per_provider = Counter(a.provider for a in self.live if a.group == group)
        self.most_of_a_group_on_one_provider = max(self.most_of_a_group_on_one_provider, *per_provider.values())
        return cast(kiln.Activity, activity)


class Recorded(Job[int, int]):
    """A job that keeps its events."""

    def __init__(self, market: FakeMarket, worker: Worker[int, int], n: int, **options: Any) -> None:
        self.seen: list[JobEvent] = []
        super().__init__(market, worker, range(n), image="img", on_event=self.seen.append, **options)

    def kinds(self, kind: str) -> list[JobEvent]:
        return [e for e in self.seen if e.kind == kind]


async def square(act: kiln.Activity, n: int) -> int:
    await asyncio.sleep(0.001)
    return n * n


async def test_a_job_spreads_over_distinct_providers_and_releases_everything() -> None:
    market = FakeMarket(["p1", "p2", "p3"])
    made = Recorded(market, square, 30, max_providers=3)
    assert await made.run() == [n * n for n in range(30)]
    assert market.most_of_a_group_on_one_provider == 1
    assert set(made.summary.tasks_per_provider) == {"p1", "p2", "p3"}
    assert market.live == [] and all(a.released for a in market.rented)
    assert made.summary.cpu_seconds == {p: 0.5 for p in ("p1", "p2", "p3")}
    assert (made.seen[0].kind, made.seen[-1].kind) == ("job_started", "job_done")


async def test_a_task_the_worker_fails_everywhere_ends_in_task_failed_and_bans_nobody() -> None:
    market = FakeMarket(["p1", "p2"])

    async def hopeless(act: kiln.Activity, n: int) -> int:
        raise kiln.RetryTask(f"task {n} fails on {act.provider}")

    made = Recorded(market, hopeless, 2, retries=2, start_timeout=20)
    started = time.monotonic()
    with pytest.raises(kiln.TaskFailed) as failed:
        await made.run()
    assert time.monotonic() - started < 5, "no wait for a provider: nothing was banned"
    assert len(failed.value.attempts) == 3
    assert all(isinstance(e, kiln.RetryTask) for e in failed.value.attempts)
    assert made.kinds("provider_banned") == []
    assert market.live == []


async def test_a_worker_failure_blames_the_provider_once_the_task_succeeds_elsewhere() -> None:
    market = FakeMarket(["bad", "good"])
    tried: Counter[str] = Counter()

    async def picky(act: kiln.Activity, n: int) -> int:
        tried[act.provider] += 1
        await asyncio.sleep(0.01)
        if act.provider == "bad":
            raise kiln.RetryTask("wrong answer")
        return n * n

    made = Recorded(market, picky, 20, retries=2)
    assert await made.run() == [n * n for n in range(20)]
    [banned] = made.kinds("provider_banned")
    assert banned.provider == "bad"
    assert made.summary.failed_providers == {"bad"}
    assert made.summary.tasks_per_provider == Counter({"good": 20})
    assert tried["bad"] < 10


async def test_a_lost_provider_is_struck_at_once_and_banned_at_the_second_loss() -> None:
    market = FakeMarket(["flaky", "steady"])

    async def worker(act: kiln.Activity, n: int) -> int:
        await asyncio.sleep(0.005)
        if act.provider == "flaky":
            cast(FakeActivity, act).lost = kiln.ProviderLost("gone")
            raise kiln.ProviderLost("flaky vanished mid-task")
        return n

    made = Recorded(market, worker, 10, retries=3)
    assert await made.run() == list(range(10))
    [banned] = made.kinds("provider_banned")
    assert (banned.provider, banned.detail) == ("flaky", "failed 2 times")
    assert sum(1 for a in market.rented if a.provider == "flaky") == 2, "a lost activity is not reused"


async def test_a_provider_that_cannot_start_the_image_is_banned_at_once() -> None:
    market = FakeMarket(["p1", "p2"], lacking_image={"p1"})
    made = Recorded(market, square, 6, max_providers=2)
    assert await made.run() == [n * n for n in range(6)]
    [banned] = made.kinds("provider_banned")
    assert banned.provider == "p1"
    assert made.summary.tasks_per_provider == Counter({"p2": 6})


async def test_with_no_provider_left_the_tried_task_fails_not_a_no_match() -> None:
    market = FakeMarket(["p1", "p2"])

    async def doomed(act: kiln.Activity, n: int) -> int:
        cast(FakeActivity, act).lost = kiln.ProviderLost("gone")
        raise kiln.ProviderLost(f"{act.provider} vanished")

    made = Recorded(market, doomed, 1, retries=10, start_timeout=0.2)
    with pytest.raises(kiln.TaskFailed, match="no provider is left to run it") as failed:
        await made.run()
    assert len(failed.value.attempts) == 4, "two strikes on each of two providers"
    assert isinstance(failed.value.__cause__, kiln.NoMatch)
    assert made.summary.failed_providers == {"p1", "p2"}


async def test_with_no_provider_left_and_return_exceptions_every_pending_task_gets_its_failure() -> None:
    market = FakeMarket(["p1"], lacking_image={"p1"})
    made = Recorded(market, square, 3, start_timeout=0.2, return_exceptions=True)
    results: list[object] = list(await made.run())
    assert all(isinstance(r, kiln.TaskFailed) and r.attempts == [] for r in results)
    assert made.summary.failed == 3


async def test_a_job_whose_every_provider_lacks_the_image_says_why_it_passed_them_over() -> None:
    made = Recorded(FakeMarket(["p1", "p2"], lacking_image={"p1", "p2"}), square, 3, start_timeout=0.2)
    with pytest.raises(kiln.NoMatch) as failed:
        await made.run()
    assert failed.value.message.startswith("no provider for this job after 0.2 s: every connected provider (2)")
    assert failed.value.message.endswith(
        "(this job passed over 2 providers that failed it; the last, p2: p2 lacks the image)"
    ), failed.value.message


async def test_a_job_with_no_provider_at_all_ends_in_no_match_after_start_timeout() -> None:
    made = Recorded(FakeMarket([]), square, 3, start_timeout=0.2)
    with pytest.raises(kiln.NoMatch, match=r"no provider for this job after 0\.2 s"):
        await made.run()
    assert made.kinds("waiting")


async def test_a_timed_out_attempt_is_retried_on_another_provider() -> None:
    market = FakeMarket(["slow", "fast"])

    async def worker(act: kiln.Activity, n: int) -> int:
        await asyncio.sleep(5 if act.provider == "slow" else 0.001)
        return n

    made = Recorded(market, worker, 4, task_timeout=0.2, max_providers=2)
    assert await made.run() == list(range(4))
    retries = made.kinds("task_retry")
    assert retries and all(e.provider == "slow" and "TaskTimeout" in e.detail for e in retries)


async def test_a_provider_that_joins_mid_job_gets_work() -> None:
    market = FakeMarket(["p1"])

    async def slow(act: kiln.Activity, n: int) -> int:
        await asyncio.sleep(0.02)
        return n

    async def join() -> None:
        await asyncio.sleep(0.1)
        market.providers.append("p2")

    made = Recorded(market, slow, 30, max_providers=2)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(join())
        results = await made.run()
    assert results == list(range(30))
    assert made.summary.tasks_per_provider["p2"] > 0


async def test_cancelling_a_job_releases_every_activity() -> None:
    market = FakeMarket(["p1", "p2"])
    started = asyncio.Event()

    async def hang(act: kiln.Activity, n: int) -> int:
        started.set()
        await asyncio.sleep(60)
        return n

    running = asyncio.create_task(Recorded(market, hang, 5).run())
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert market.rented and market.live == []


async def test_results_come_as_tasks_finish_and_the_summary_adds_up() -> None:
    market = FakeMarket(["p1", "p2"])

    async def worker(act: kiln.Activity, n: int) -> int:
        await asyncio.sleep(0.05 if n == 0 else 0.001)
        return n

    made = Recorded(market, worker, 6)
    order = [index async for index, _ in made.results()]
    assert sorted(order) == list(range(6)) and order[-1] == 0
    summary = made.summary
    assert (summary.tasks, summary.succeeded, summary.failed, summary.attempts, summary.retries) == (6, 6, 0, 6, 0)
    assert summary.lines()[0].startswith("tasks 6: 6 done, 0 failed; attempts 6, retries 0; wall time ")


async def test_a_job_reports_the_image_its_providers_load_and_the_bytes_they_pulled() -> None:
    MiB = 2**20
    market = FakeMarket(["p1", "p2"], loads={"p1": 120 * MiB})
    made = Recorded(market, square, 6, max_providers=2)
    assert await made.run() == [n * n for n in range(6)]
    loading = made.kinds("image_loading")
    assert {e.provider for e in loading} == {"p1"}
    assert loading[0].detail == "loading img on p1, 0 of 120 MiB"
    assert loading[1].detail == "loading img on p1, 40 of 120 MiB"
    assert (loading[-1].bytes_done, loading[-1].bytes_total) == (120 * MiB, 120 * MiB)
    assert made.summary.pulled == Counter({"p1": 120 * MiB})
    p1 = next(line for line in made.summary.lines() if line.startswith("  p1:"))
    assert "pulled 120MiB of image" in p1
    assert "pulled" not in next(line for line in made.summary.lines() if line.startswith("  p2:"))


async def test_the_progress_bar_shows_an_image_loading() -> None:
    import io

    from rich.console import Console

    market = FakeMarket(["p1"], loads={"p1": 120 * 2**20}, load_step=0.3)
    made = Recorded(market, square, 3, max_providers=1)
    screen = io.StringIO()
    with kiln.ProgressView(made, console=Console(file=screen, force_terminal=True, width=200)):
        await made.run()
    shown = screen.getvalue()
    assert "loading img on p1, 40 of 120 MiB" in shown
    assert "pulled 120MiB of image" in shown


async def test_a_job_as_root_rents_every_activity_as_root() -> None:
    market = FakeMarket(["p1", "p2"])
    assert sorted(await Recorded(market, square, 4, user="root").run()) == [0, 1, 4, 9]
    assert market.users and set(market.users) == {"root"}
    await Recorded(market, square, 1).run()
    assert market.users[-1] is None


async def test_a_job_held_to_fewer_activities_than_it_wants_works_with_what_it_has() -> None:
    market = FakeMarket(["p1", "p2", "p3", "p4"], max_held=2)
    job = Recorded(market, square, 12, max_providers=4)
    assert sorted(await job.run()) == [n * n for n in range(12)]
    assert len({a.provider for a in market.rented}) == 2
    empty = FakeMarket(["p1"], max_held=0)
    with pytest.raises(kiln.RemoteError, match="held at once"):
        await Recorded(empty, square, 1).run()


async def test_a_request_lost_while_its_activity_lives_is_tried_again_on_it_and_blames_nobody() -> None:
    """A ProviderLost with no activity_lost before it (a link between hubs broke under the request;
    the hub holds the activity until its provider is back): the attempt is interrupted, the
    provider neither struck nor banned, and the activity kept."""
    market = FakeMarket(["moving"])
    hiccups = iter(range(2))

    async def worker(act: kiln.Activity, n: int) -> int:
        if n % 3 == 0 and next(hiccups, None) is not None:
            raise kiln.ProviderLost("provider 'moving' disconnected: the link to its hub ended")
        return n

    made = Recorded(market, worker, 9, retries=1)
    assert await made.run() == list(range(9))
    assert made.kinds("provider_banned") == [] and made.summary.failed_providers == set()
    assert len(market.rented) == 1, "the activity is kept"
