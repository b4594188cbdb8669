"""The requestor's side of the market, pure: a rent's terms as a caller writes them, the
verification options, a custom agreement, the errors of the ledger's codes, an activity's
cost captures and what a job's summary says it spent."""

from __future__ import annotations

import random
from typing import Any

import pytest

import kiln
from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import error_from_code
from kiln.protocol.messages import Cost, Price, Rented, Resources
from kiln.requestor.activity import Activity
from kiln.requestor.scheduling import JobSummary, Redundant, Scheduler, SpotCheck, Task
from kiln.requestor.terms import Terms, market_terms


def test_terms_as_written_become_the_rents_fields() -> None:
    terms = market_terms(
        max_duration=600, budget="2.5", strategy="cheapest", allow=["p2", "p1", "p2"], min_reputation=0.8
    )
    assert terms == Terms(
        max_duration=600.0, budget=2_500_000, strategy="cheapest", allow=("p1", "p2"), min_reputation=0.8
    )
    assert terms.fields() == {
        "max_duration": 600.0,
        "budget": 2_500_000,
        "strategy": "cheapest",
        "allow": ["p1", "p2"],
        "min_reputation": 0.8,
    }
    assert market_terms().fields() == {}, "no terms: a rent an older hub knows"
    assert market_terms(budget=0.000001).budget == 1


@pytest.mark.parametrize(
    ("terms", "complaint"),
    [
        ({"max_duration": 0}, "max_duration"),
        ({"max_duration": float("inf")}, "max_duration"),
        ({"max_duration": True}, "max_duration"),
        ({"budget": -0.5}, "budget"),
        ({"budget": 0.0000001}, "finer than a micro-credit"),
        ({"budget": "five"}, "budget"),
        ({"strategy": "fastest"}, "strategy is one of least_loaded, cheapest, reputation"),
        ({"allow": "p1"}, "allow"),
        ({"allow": []}, "allow"),
        ({"min_reputation": -0.1}, "min_reputation"),
        ({"min_reputation": 2}, "min_reputation"),
    ],
)
def test_a_wrong_term_is_the_callers_error(terms: dict[str, Any], complaint: str) -> None:
    with pytest.raises(kiln.UsageError, match=complaint):
        market_terms(**terms)


@pytest.mark.parametrize("wrong", [Redundant, SpotCheck])
def test_verification_options_are_checked(wrong: type[Redundant] | type[SpotCheck]) -> None:
    with pytest.raises(kiln.UsageError):
        wrong(1 if wrong is Redundant else 1.5)  # type: ignore[arg-type]
    with pytest.raises(kiln.UsageError):
        wrong(True)


def test_redundant_and_spot_check_ask_for_as_many_slots_as_runs() -> None:
    def slots(verify: Redundant | SpotCheck | None, tasks: int, most: int) -> int:
        return Scheduler(range(tasks), lambda *event: None, verify=verify).slots(most)

    assert (slots(None, 2, 8), slots(Redundant(3), 2, 8), slots(SpotCheck(0.1), 1, 8), slots(SpotCheck(0), 1, 8)) == (
        2,
        6,
        2,
        1,
    )
    assert kiln.Redundant is Redundant and kiln.SpotCheck is SpotCheck


def test_a_custom_agreement_accepts_results_equal_by_its_measure() -> None:
    events: list[tuple[str, int | None, str | None, str]] = []
    core: Scheduler[int] = Scheduler(
        range(1),
        lambda *event: events.append(event),
        verify=Redundant(2, agree=lambda a, b: abs(a - b) < 0.01),
    )
    core.hold(0, "p1", "a1")
    core.hold(1, "p2", "a2")
    first = core.next_task("p1")
    assert first is not None and core.next_task("p1") is None, "never two runs of a task on one provider"
    core.start(first, "p1")
    copy = core.next_task("p2")
    assert copy is first
    core.start(copy, "p2")
    assert core.outcome(first, "p1", "ok", value=1.0).accepted is None
    verdict = core.outcome(copy, "p2", "ok", value=1.001)
    assert verdict.accepted is not None and (verdict.accepted.value, verdict.accepted.activity) == (1.0, "a1")
    assert verdict.disputes == ()
    assert core.finished and core.summary.verified == 1


def test_the_ledgers_codes_raise_their_own_errors_under_the_one_root() -> None:
    funds = error_from_code("insufficient_funds", "1.2 credits available, 3.6 to hold")
    budget = error_from_code("budget_exceeded", "the group's budget has 0.01 left")
    assert isinstance(funds, kiln.InsufficientFunds) and funds.code == ErrorCode.INSUFFICIENT_FUNDS
    assert isinstance(budget, kiln.BudgetExceeded) and budget.code == ErrorCode.BUDGET_EXCEEDED
    assert isinstance(funds, kiln.KilnError) and isinstance(budget, kiln.KilnError)
    assert kiln.BudgetExceeded("spent").code == "budget_exceeded"


class NoLink:
    async def connected(self) -> Any:
        raise AssertionError("nothing is sent")


def test_an_activity_keeps_the_latest_capture_and_tells_each_once() -> None:
    rented = Rented(
        type="rented",
        re=1,
        activity="a1",
        provider="p1",
        cached=True,
        resources=Resources(cpus=1, memory=2**28),
        price=Price(start=0.01, env_hour=0.5),
        hold=510_000,
    )
    activity = Activity(NoLink(), rented)
    assert activity.price is not None and activity.price.start == 10_000 and activity.hold == 510_000
    told: list[int] = []
    activity.on_cost = lambda act, cost: told.append(cost.due)

    def cost(seq: int, due: int, final: bool = False) -> Cost:
        return Cost(type="cost", activity="a1", seq=seq, due=due, seconds=seq * 60.0, cpu_seconds=0, final=final)

    activity.charged(cost(1, 18_333))
    activity.charged(cost(1, 18_333))  # the same twice
    activity.charged(cost(3, 35_000, final=True))
    activity.charged(cost(2, 26_666))  # late, older
    assert told == [18_333, 35_000]
    assert activity.cost is not None and activity.cost.final and activity.cost.due == 35_000


def test_a_summary_counts_credits_exactly_and_names_the_losers() -> None:
    summary = JobSummary(tasks=3, succeeded=3)
    summary.spent_micro["p1"] += 100_001
    summary.spent_micro["p2"] += 200_002
    summary.verified, summary.disputed = 3, 1
    summary.lost_by["liar"] += 1
    assert summary.spent == 0.300003
    assert summary.spent_by_provider == {"p1": 0.100001, "p2": 0.200002}
    lines = summary.lines()
    assert "verified 3, disputed 1; runs lost: liar 1" in lines
    assert "spent 0.300003 credits" in lines
    assert any(line.startswith("  liar:") and "lost 1 verification" in line for line in lines)
    assert any(line.startswith("  p2:") and "0.200002 credits" in line for line in lines)
    summary.spent_micro["p3"] += 1_234_000_000  # exactly, as JavaScript's lines() say it: never rounded
    assert "spent 1234.300003 credits" in summary.lines()
    assert any(line.startswith("  p3:") and "1234 credits" in line for line in summary.lines())


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("n", [2, 3])
def test_verified_jobs_driven_at_random_keep_the_rules(seed: int, n: int) -> None:
    """Attempts end in a random order, some retried; one liar among five providers: every task
    ends accepted with the honest value, never twice on one provider, within 2n - 1 runs."""
    rng = random.Random(seed)
    providers = ["p1", "p2", "p3", "p4", "liar"]
    core: Scheduler[int] = Scheduler(range(12), lambda *event: None, verify=Redundant(n), retries=5)
    for slot, provider in enumerate(providers):
        core.hold(slot, provider, f"a-{provider}")
    running: list[tuple[Task[int], str]] = []
    ran: dict[int, list[str]] = {}
    results: dict[int, int] = {}
    while not core.finished:
        idle = [p for p in providers if p not in {q for _, q in running}]
        for provider in idle:
            if (task := core.next_task(provider)) is not None:
                assert provider not in ran.setdefault(task.index, []), "a task ran twice on one provider"
                ran[task.index].append(provider)
                core.start(task, provider)
                running.append((task, provider))
        assert running, "a verified job that cannot go on"
        task, provider = running.pop(rng.randrange(len(running)))
        if rng.random() < 0.1:
            ran[task.index].remove(provider)  # a retry may come back here, as the rules allow
            verdict = core.outcome(task, provider, "retry", "RetryTask", "RetryTask: flaky")
        else:
            verdict = core.outcome(task, provider, "ok", value=-1 if provider == "liar" else task.index)
        assert verdict.failure is None, verdict.failure
        if verdict.accepted is not None:
            results[task.index] = verdict.accepted.value
            assert all(d.provider == "liar" and len(d.agreed) >= n for d in verdict.disputes)
    assert results == {i: i for i in range(12)}
    assert all(len(set(on)) == len(on) <= 2 * n - 1 for on in ran.values())
    assert core.summary.verified == 12 and set(core.summary.lost_by) <= {"liar"}
