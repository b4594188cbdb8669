"""A job's market terms, budget, costs and verification against the in-memory market of
test_scheduling.py (no hub, no Docker): what each rent carries, the stop when the budget is
spent, the hub's cost captures in events and summary, and the verdicts of a verified job."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

import pytest

import kiln
from kiln.protocol.errors import error_from_code
from kiln.protocol.messages import Cost
from tests.service.test_scheduling import FakeActivity, FakeMarket, Recorded, square

pytestmark = pytest.mark.timeout(30)


async def test_every_rent_carries_the_jobs_terms_and_deny_joins_the_excluded() -> None:
    market = FakeMarket(["p1", "p2", "p3"])
    job = Recorded(
        market,
        square,
        6,
        max_providers=2,
        strategy="cheapest",
        allow=["p1", "p2", "p3"],
        deny=["p3"],
        min_reputation=0.5,
        max_duration=600,
        budget=5,
    )
    assert await job.run() == [n * n for n in range(6)]
    assert market.terms and all(
        terms
        == {
            "max_duration": 600,
            "budget": 5,
            "strategy": "cheapest",
            "allow": ["p1", "p2", "p3"],
            "min_reputation": 0.5,
        }
        for terms in market.terms
    )
    assert {a.provider for a in market.rented} <= {"p1", "p2"}, "a denied provider is never rented"


async def test_a_job_without_terms_rents_as_before() -> None:
    market = FakeMarket(["p1", "p2"])
    await Recorded(market, square, 3).run()
    assert market.terms and all(terms == {} for terms in market.terms)


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"budget": -1}, "budget"),
        ({"budget": "lots"}, "budget"),
        ({"strategy": "random"}, "strategy"),
        ({"allow": "p1"}, "allow"),
        ({"allow": []}, "allow"),
        ({"deny": "p1"}, "deny"),
        ({"min_reputation": 1.5}, "min_reputation"),
        ({"max_duration": 0}, "max_duration"),
        ({"verify": kiln.Redundant(3), "max_providers": 2}, "max_providers"),
        ({"verify": 2}, "verify"),
    ],
)
def test_wrong_terms_are_refused_before_anything_is_rented(options: dict[str, Any], complaint: str) -> None:
    market = FakeMarket(["p1"])
    with pytest.raises(kiln.UsageError, match=complaint):
        Recorded(market, square, 3, **options)
    assert market.rented == []


async def test_a_spent_budget_stops_the_job_and_the_rest_fails_with_budget_exceeded() -> None:
    market = FakeMarket(["p1", "p2", "p3"], budget=1)
    ran = 0

    async def slow(act: kiln.Activity, n: int) -> int:
        nonlocal ran
        await asyncio.sleep(0.01)
        ran += 1
        if ran > 3:  # the hub ends the activity: its hold ran out, and the budget cannot top it up
            raise kiln.ProviderLost("the hub ended the activity: the budget is spent", kiln.ErrorCode.BUDGET_EXCEEDED)
        return n

    job = Recorded(market, slow, 10, max_providers=3, budget=1)
    with pytest.raises(kiln.BudgetExceeded, match="budget") as caught:
        await job.run()
    assert caught.value.code == kiln.ErrorCode.BUDGET_EXCEEDED
    assert len(market.rented) == 1, "no rent after the refusal"
    assert market.live == [], "what ran finished and was released"
    done = job.kinds("task_done")
    assert len(done) == 3, "the activity held went on until the hub ended it"
    assert job.summary.succeeded == len(done) and job.summary.failed == 1


async def test_with_return_exceptions_every_task_not_done_fails_with_the_budget() -> None:
    market = FakeMarket(["p1", "p2"], budget=1)

    async def one_each(act: kiln.Activity, n: int) -> int:
        await asyncio.sleep(0.01)
        if n == 0:
            raise kiln.ProviderLost("the hub ended the activity: the budget is spent", kiln.ErrorCode.BUDGET_EXCEEDED)
        return n

    job = Recorded(market, one_each, 4, max_providers=2, budget=1, return_exceptions=True)
    results: list[object] = list(await job.run())
    failed = [r for r in results if isinstance(r, kiln.TaskFailed)]
    assert failed, results
    assert all(isinstance(r.__cause__, kiln.BudgetExceeded) for r in failed)
    assert all("the job's budget is spent" in str(r) for r in failed)
    assert job.summary.succeeded + job.summary.failed == 4
    assert job.summary.failed_providers == set(), "a spent budget is nobody's failure"


@dataclass
class Charging:
    """Reports a capture for an activity as the hub would, after each task and at its release."""

    market: FakeMarket
    micro_per_task: int = 10_000

    async def worker(self, act: kiln.Activity, n: int) -> int:
        fake = cast(FakeActivity, act)
        await asyncio.sleep(0)
        seq = fake.cost.seq + 1 if fake.cost is not None else 1
        due = seq * self.micro_per_task
        charge(fake, Cost(type="cost", activity=fake.id, seq=seq, due=due, seconds=seq, cpu_seconds=0))
        return n


def charge(fake: FakeActivity, cost: Cost) -> None:
    fake.cost = cost
    if fake.on_cost is not None:
        fake.on_cost(cast(kiln.Activity, fake), cost)


async def test_cost_events_and_what_the_job_spent_per_provider() -> None:
    market = FakeMarket(["p1", "p2"])
    charging = Charging(market)
    job = Recorded(market, charging.worker, 6, max_providers=2)
    await job.run()
    costs = job.kinds("cost")
    assert len(costs) == 6
    assert all(e.activity is not None and e.due is not None and e.provider for e in costs)
    last = {e.activity: e.due for e in costs}
    assert job.summary.spent == pytest.approx(sum(d for d in last.values() if d is not None))
    by_provider = job.summary.spent_by_provider
    assert set(by_provider) == {a.provider for a in market.rented}
    assert sum(by_provider.values()) == pytest.approx(job.summary.spent) == 0.06
    assert any(line.startswith("spent 0.06 credits") for line in job.summary.lines())


async def test_a_verified_job_reports_each_losing_run_and_never_uses_its_result() -> None:
    market = FakeMarket(["good1", "liar", "good2"])

    async def worker(act: kiln.Activity, n: int) -> int:
        await asyncio.sleep(0.001)
        return -1 if act.provider == "liar" else n * n

    job = Recorded(market, worker, 8, max_providers=3, verify=kiln.Redundant(2))
    assert await job.run() == [n * n for n in range(8)]
    summary = job.summary
    assert summary.verified == 8 and set(summary.lost_by) <= {"liar"}
    provider_of = {a.id: a.provider for a in market.rented}
    assert len(market.verdicts) == summary.lost_by["liar"] == len(job.kinds("task_disputed"))
    for lost, agreed in market.verdicts:
        assert provider_of[lost] == "liar"
        assert len(agreed) == 2 and all(provider_of[a] != "liar" for a in agreed)
    assert market.most_of_a_group_on_one_provider == 1


async def test_a_task_whose_runs_all_disagree_fails_disputed() -> None:
    market = FakeMarket(["p1", "p2", "p3"])

    async def worker(act: kiln.Activity, n: int) -> int:
        await asyncio.sleep(0.001)
        return len(act.provider) * 10 + int(act.provider[-1])  # every provider answers differently

    job = Recorded(market, worker, 1, max_providers=3, verify=kiln.Redundant(2))
    with pytest.raises(kiln.TaskFailed, match="disputed") as caught:
        await job.run()
    assert isinstance(caught.value.__cause__, kiln.KilnError)
    assert market.verdicts == [], "no majority, no verdict"
    assert job.summary.disputed == 1


async def test_a_spot_check_of_every_task_runs_each_twice() -> None:
    market = FakeMarket(["p1", "p2"])
    job = Recorded(market, square, 5, max_providers=2, verify=kiln.SpotCheck(1.0))
    assert await job.run() == [n * n for n in range(5)]
    assert job.summary.verified == 5 and job.summary.attempts == 10


async def test_a_copy_with_no_second_provider_ends_the_job_after_start_timeout() -> None:
    market = FakeMarket(["p1"])
    job = Recorded(market, square, 1, max_providers=2, verify=kiln.Redundant(2), start_timeout=0.2)
    with pytest.raises(kiln.TaskFailed, match="no provider is left"):
        await job.run()
    assert market.live == []


async def test_a_tie_break_with_two_slots_gives_an_activity_up_for_a_third_provider() -> None:
    market = FakeMarket(["good1", "liar", "good2"])

    async def worker(act: kiln.Activity, n: int) -> int:
        await asyncio.sleep(0.001)
        return -1 if act.provider == "liar" else n

    job = Recorded(market, worker, 4, max_providers=2, verify=kiln.Redundant(2))
    assert await job.run() == [0, 1, 2, 3]
    assert market.live == [] and market.most_of_a_group_on_one_provider == 1
    provider_of = {a.id: a.provider for a in market.rented}
    assert market.verdicts and all(provider_of[lost] == "liar" for lost, _ in market.verdicts)
    assert {a.provider for a in market.rented} == {"good1", "liar", "good2"}


# A command the hub cuts by ending its activity (the job's budget, the requestor's funds, the
# rent's max_duration): activity_lost comes first, then the command fails `cancelled` (the
# provider halts it as it destroys the container). The attempt counts as the end it was.


def cut(act: kiln.Activity, code: kiln.ErrorCode, why: str) -> kiln.KilnError:
    """The hub ends ``act`` under a command: its activity_lost, then the command's error."""
    cast(FakeActivity, act).lost = error_from_code(code, why)
    return error_from_code(kiln.ErrorCode.CANCELLED, "exec cancelled")


async def test_a_command_cut_when_the_budget_ran_out_stops_the_job_with_budget_exceeded() -> None:
    market = FakeMarket(["p1", "p2", "p3"], budget=1)
    ran = 0

    async def slow(act: kiln.Activity, n: int) -> int:
        nonlocal ran
        await asyncio.sleep(0.01)
        ran += 1
        if ran > 3:
            raise cut(act, kiln.ErrorCode.BUDGET_EXCEEDED, "activity a0 ended: the job's budget is spent")
        return n

    job = Recorded(market, slow, 10, max_providers=3, budget=1)
    with pytest.raises(kiln.BudgetExceeded, match="budget"):
        await job.run()
    assert market.live == []
    assert job.summary.succeeded == 3 and job.summary.failed_providers == set()


async def test_a_command_cut_at_the_rents_max_duration_is_tried_again_as_a_timeout() -> None:
    market = FakeMarket(["p1", "p2"])
    cuts = 0

    async def once_cut(act: kiln.Activity, n: int) -> int:
        nonlocal cuts
        await asyncio.sleep(0.001)
        if n == 0 and cuts == 0:
            cuts += 1
            raise cut(act, kiln.ErrorCode.EXPIRED, "activity a0 reached the max_duration of its rent")
        return n

    job = Recorded(market, once_cut, 4, max_providers=2, max_duration=60)
    assert await job.run() == [0, 1, 2, 3]
    assert job.summary.retries == 1
