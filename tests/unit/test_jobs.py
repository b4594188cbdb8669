"""The job scheduling core (kiln.requestor.scheduling), driven by the job vectors both languages
run (js-client/test/unit/jobs.test.js runs the same files): calls in, literal answers and events
out. No event loop, no clock, no sleeps.

What a vector may say beyond the calls' names: ``options.verify`` (``{"redundant": n}`` or
``{"spot_check": p}``) and ``options.chances`` (the values ``chance()`` returns, in order); an
``outcome`` step's ``value`` (the worker's result of an ``ok``); its answer's ``accepted``
(``[provider, activity, value]``, only in a vector with ``verify``) and ``disputes``
(``[[provider, activity, [agreed activities]]]``, when any); the calls ``budget_exceeded``,
``blocked`` and ``avoid`` (its answer sorted); and, with ``verify``, the summary's
``verified``, ``disputed`` and ``lost_by``."""

from __future__ import annotations

import itertools
import json
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kiln.requestor.scheduling import EventKind, Outcome, Redundant, Scheduler, SpotCheck, Task, Verify

ROOT = Path(__file__).resolve().parents[2]
JOBS = sorted((ROOT / "protocol" / "v1" / "vectors" / "jobs").glob("*.json"))

Event = list[Any]


class Run:
    """One vector's scheduler, the tasks it handed out by index, the events since the last call."""

    def __init__(self, vector: dict[str, Any]) -> None:
        count = vector["items"]
        items: Any = list(range(count)) if vector.get("sized", True) else (n for n in range(count))
        options = vector.get("options", {})
        self.verifying = "verify" in options
        chances = iter(options.get("chances", []))
        self.events: list[Event] = []
        self.core: Scheduler[int] = Scheduler(
            items,
            self.emit,
            retries=options.get("retries", 2),
            return_exceptions=options.get("return_exceptions", False),
            verify=verification(options.get("verify")),
            chance=lambda: next(chances),
        )
        self.tasks: dict[int, Task[int]] = {}

    def emit(self, kind: EventKind, task: int | None, provider: str | None, detail: str) -> None:
        self.events.append([kind, task, provider, detail])

    def call(self, step: dict[str, Any]) -> Any:
        core, call = self.core, step["call"]
        if call == "slots":
            return core.slots(step["max_providers"])
        if call == "wants_activity":
            return core.wants_activity()
        if call == "too_many_banned":
            return core.too_many_banned()
        if call == "may_serve":
            return core.may_serve(step["provider"])
        if call == "hold":
            return core.hold(step["slot"], step["provider"], step["activity"])
        if call == "free":
            return core.free(step["slot"], step["activity"])
        if call == "provider_failed":
            return core.provider_failed(step["provider"])
        if call == "ban":
            return core.ban(step["provider"], step["why"])
        if call == "stop":
            return core.stop()
        if call == "budget_exceeded":
            return core.budget_exceeded()
        if call == "blocked":
            return core.blocked()
        if call == "avoid":
            return sorted(core.avoid())
        if call == "abandon":
            return core.abandon()
        if call == "next_task":
            task = core.next_task(step["provider"])
            if task is None:
                return None
            self.tasks[task.index] = task
            return task.index
        if call == "start":
            return core.start(self.tasks[step["task"]], step["provider"])
        if call == "outcome":
            error = step.get("error")
            verdict = core.outcome(
                self.tasks[step["task"]], step["provider"], step["outcome"], error, error or "", step.get("value")
            )
            answer: dict[str, Any] = {"keep": verdict.keep}
            if self.verifying and verdict.accepted is not None:
                accepted = verdict.accepted
                answer["accepted"] = [accepted.provider, accepted.activity, accepted.value]
            if verdict.disputes:
                answer["disputes"] = [[d.provider, d.activity, list(d.agreed)] for d in verdict.disputes]
            if verdict.failure is not None:
                answer |= {"failed": verdict.failure.message, "ends_job": verdict.failure.ends_job}
            return answer
        if call == "nowhere_to_run":
            return core.nowhere_to_run(step["why"])
        if call == "never_ran":
            return core.never_ran()
        if call == "strand":
            failures = []
            for failure in core.strand(step["error"], step["error"]):
                failures.append([failure.task.index, failure.message, failure.ends_job])
                if failure.ends_job:
                    break
            return failures
        if call == "state":
            return {
                "finished": core.finished,
                "stopped": core.stopped,
                "read": core.read,
                "total": core.total,
                "running": core.running,
                "holding": core.holding,
                "banned": sorted(core.banned),
            }
        raise AssertionError(f"unknown call {call!r}")

    def step(self, step: dict[str, Any]) -> dict[str, Any]:
        """What a step did, as the vectors write it: its answer and its events."""
        self.events = []
        returned = self.call(step)
        return {"returns": returned, "events": self.events}

    def summary(self) -> dict[str, Any]:
        s = self.core.summary
        summary = {
            "tasks": s.tasks,
            "succeeded": s.succeeded,
            "failed": s.failed,
            "attempts": s.attempts,
            "retries": s.retries,
            "tasks_per_provider": dict(sorted(s.tasks_per_provider.items())),
        }
        if self.verifying:
            summary |= {"verified": s.verified, "disputed": s.disputed, "lost_by": dict(sorted(s.lost_by.items()))}
        return summary


def verification(options: dict[str, Any] | None) -> Verify | None:
    """A vector's ``verify`` option: ``{"redundant": n}`` or ``{"spot_check": p}``."""
    if options is None:
        return None
    if "redundant" in options:
        return Redundant(options["redundant"])
    return SpotCheck(options["spot_check"])


def load(path: Path) -> dict[str, Any]:
    vector: dict[str, Any] = json.loads(path.read_text())
    return vector


@pytest.mark.parametrize("path", JOBS, ids=[p.stem for p in JOBS])
def test_job_vector(path: Path) -> None:
    vector = load(path)
    run = Run(vector)
    for number, step in enumerate(vector["steps"]):
        did = run.step(step)
        where = f"{path.name} step {number} ({step['call']})"
        assert did["returns"] == step.get("returns"), where
        assert did["events"] == step.get("events", []), where
    assert run.summary() == vector["summary"], path.name


def test_there_are_job_vectors_for_every_rule() -> None:
    names = {p.stem for p in JOBS}
    assert len(names) >= 10, names
    calls = {step["call"] for p in JOBS for step in load(p)["steps"]}
    assert calls >= {"next_task", "start", "outcome", "hold", "free", "strand", "nowhere_to_run", "wants_activity"}
    outcomes = {step["outcome"] for p in JOBS for step in load(p)["steps"] if step["call"] == "outcome"}
    assert outcomes == {"ok", "retry", "timeout", "provider_lost", "error", "interrupted"}


# --- the core beyond the vectors ----------------------------------------------------------


def drive(
    core: Scheduler[int], providers: list[str], fail: Callable[[Task[int], str], Outcome] | None = None
) -> list[int]:
    """Run a job through ``core`` the way the executor would, every attempt at once; the order done."""
    done: list[int] = []
    for slot, provider in enumerate(providers):
        core.hold(slot, provider, f"a{slot}")
    while not core.finished:
        progressed = False
        for provider in providers:
            task = core.next_task(provider)
            if task is None:
                continue
            progressed = True
            core.start(task, provider)
            outcome = fail(task, provider) if fail else "ok"
            verdict = core.outcome(task, provider, outcome, outcome, outcome)
            assert verdict.failure is None
            if outcome == "ok":
                done.append(task.index)
        assert progressed or core.finished, "a job that cannot go on"
    return done


def test_a_generator_is_read_as_slots_need_it_and_nothing_of_a_finished_task_is_kept() -> None:
    read = [0]

    def items() -> Iterator[int]:
        for n in range(50_000):
            read[0] += 1
            yield n

    core: Scheduler[int] = Scheduler(items(), lambda *event: None)
    assert core.total is None and read == [0]
    assert core.wants_activity() and read == [1], "one item read to know there is more"
    core.hold(0, "p1", "a1")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        while (task := core.next_task("p1")) is not None:
            assert read[0] == task.index + 1, "no item read ahead of the one the slot takes"
            core.start(task, "p1")
            core.outcome(task, "p1", "ok")
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 64 * 1024, f"{kept} bytes kept for 50,000 finished tasks"
    assert core.finished
    assert (core.read, core.summary.tasks, core.summary.succeeded) == (50_000, 50_000, 50_000)


def test_a_list_tells_its_total_and_caps_the_slots() -> None:
    core: Scheduler[str] = Scheduler(["a", "b"], lambda *event: None)
    assert (core.total, core.summary.tasks, core.slots(4), core.slots(1)) == (2, 2, 2, 1)
    assert Scheduler(iter("ab"), lambda *event: None).slots(4) == 4


def test_an_error_of_the_items_reaches_the_executor() -> None:
    def broken() -> Iterator[int]:
        yield 1
        raise ValueError("the items broke")

    core: Scheduler[int] = Scheduler(broken(), lambda *event: None)
    core.hold(0, "p1", "a1")
    assert core.next_task("p1") is not None
    with pytest.raises(ValueError, match="the items broke"):
        core.next_task("p1")


def test_a_retry_goes_to_another_provider_and_one_blame_bans_nobody() -> None:
    tried: dict[int, list[str]] = {}

    def fail(task: Task[int], provider: str) -> Outcome:
        tried.setdefault(task.index, []).append(provider)
        return "retry" if task.index < 2 and len(tried[task.index]) == 1 else "ok"

    core: Scheduler[int] = Scheduler(range(30), lambda *event: None)
    done = drive(core, ["p1", "p2", "p3"], fail)
    assert sorted(done) == list(range(30))
    assert tried[0][0] != tried[0][1] and tried[1][0] != tried[1][1]
    assert core.banned == set(), "one blame each: no ban"
    assert (core.summary.retries, core.summary.attempts) == (2, 32)


def test_a_provider_whose_tasks_succeed_elsewhere_is_banned_once() -> None:
    events: list[tuple[str, str | None]] = []
    core: Scheduler[int] = Scheduler(
        range(10), lambda kind, task, provider, detail: events.append((kind, provider)), retries=5
    )
    drive(core, ["bad", "good"], lambda task, provider: "retry" if provider == "bad" else "ok")
    assert [e for e in events if e[0] == "provider_banned"] == [("provider_banned", "bad")]
    assert core.banned == {"bad"} and not core.may_serve("bad")
    assert core.summary.tasks_per_provider == {"good": 10}


def test_a_stopped_job_hands_out_nothing() -> None:
    core: Scheduler[int] = Scheduler(itertools.count(), lambda *event: None)
    core.hold(0, "p1", "a1")
    assert core.next_task("p1") is not None
    core.stop()
    assert (core.next_task("p1"), core.wants_activity(), core.may_serve("p1")) == (None, False, False)
    assert core.read == 1
