"""A job's timeline: the attempts the executor records (against the in-memory market of
test_scheduling.py), the task reports it sends, the HTML report drawn from them (escaped,
self-contained), and ProgressView writing it at the end."""

from __future__ import annotations

import asyncio
import io
import re
from collections import Counter
from pathlib import Path
from typing import cast

import pytest
from rich.console import Console

import kiln
from kiln.protocol.messages import MAX_REASON
from kiln.requestor.report import Attempt, Timeline, render_html
from kiln.requestor.scheduling import INTERRUPTED, JobSummary
from tests.service.test_scheduling import FakeActivity, FakeMarket, Recorded

pytestmark = pytest.mark.timeout(30)

HOSTILE = "<script>alert('x')</script><img src=x onerror=\"alert(1)\"> & \u2028"


def bars(page: str) -> list[tuple[str, int]]:
    """The Gantt's bars: (outcome, task)."""
    return [(outcome, int(task)) for outcome, task in re.findall(r'<rect class="bar (\w+)" data-task="(\d+)"', page)]


async def picky(act: kiln.Activity, n: int) -> int:
    """Fails every task on ``bad`` (a hostile reason), counts 10 bytes moved per attempt."""
    cast(FakeActivity, act).moved += 10
    await asyncio.sleep(0)
    if act.provider == "bad":
        raise kiln.RetryTask(HOSTILE)
    return n


async def test_every_attempt_is_recorded_with_its_outcome_reason_and_bytes() -> None:
    market = FakeMarket(["bad", "good"])
    job = Recorded(market, picky, 8, max_providers=2, retries=3)
    assert await job.run() == list(range(8))

    attempts = job.attempts
    assert len(attempts) == job.summary.attempts
    assert {a.task for a in attempts if a.outcome == "done"} == set(range(8)), "every task has its done attempt"
    assert all(a.provider == "good" for a in attempts if a.outcome == "done")
    retried = [a for a in attempts if a.outcome == "retried"]
    assert retried and all(a.provider == "bad" and a.reason == f"RetryTask: {HOSTILE}" for a in retried)
    assert len(retried) == job.summary.retries
    assert all(a.bytes == 10 and a.end is not None and 0 <= a.start <= a.end for a in attempts)
    assert [a.start for a in attempts] == sorted(a.start for a in attempts)
    for task in range(8):
        numbers = [a.attempt for a in attempts if a.task == task]
        assert sorted(numbers) == list(range(1, len(numbers) + 1)), "attempts are numbered 1, 2, ..."
    assert {a.activity for a in attempts} <= {a.id for a in market.rented}


async def test_each_attempt_is_reported_to_the_hub_when_it_starts_and_when_it_ends() -> None:
    market = FakeMarket(["bad", "good"])
    job = Recorded(market, picky, 5, max_providers=2, retries=3)
    await job.run()
    started = Counter((task, attempt) for task, attempt, state, _, _ in market.reports if state == "started")
    ended = {
        (task, attempt): (state, reason) for task, attempt, state, _, reason in market.reports if state != "started"
    }
    assert set(started.values()) == {1} and set(started) == set(ended)
    assert {key for key, (state, _) in ended.items() if state == "done"} == {
        (a.task, a.attempt) for a in job.attempts if a.outcome == "done"
    }
    assert {state for state, _ in ended.values()} == {"done", "retried"}
    assert all(reason == f"RetryTask: {HOSTILE}" for state, reason in ended.values() if state == "retried")
    assert all(activity is not None for _, _, _, activity, _ in market.reports)


async def test_a_lost_provider_and_a_failed_task_are_told_apart() -> None:
    market = FakeMarket(["flaky", "steady"])

    async def worker(act: kiln.Activity, n: int) -> int:
        await asyncio.sleep(0)
        if act.provider == "flaky":
            cast(FakeActivity, act).lost = kiln.ProviderLost("gone")
            raise kiln.ProviderLost("flaky vanished mid-task")
        if n == 3:
            raise ValueError("three is wrong")
        return n

    job = Recorded(market, worker, 6, retries=2, return_exceptions=True)
    results: list[object] = list(await job.run())
    assert isinstance(results[3], kiln.TaskFailed)
    outcomes = {(a.provider, a.outcome) for a in job.attempts}
    assert ("flaky", "lost") in outcomes
    [failed] = [a for a in job.attempts if a.outcome == "failed"]
    assert (failed.task, failed.reason) == (3, "ValueError: three is wrong")
    states = {state for _, _, state, _, _ in market.reports}
    assert "failed" in states and "retried" in states, "a lost attempt retried is 'retried' on the wire"


def test_a_timeline_keeps_the_latest_attempts_and_clips_reasons() -> None:
    timeline = Timeline(keep=3)
    for task in range(5):
        started = timeline.start(task, 1, "p1", f"a{task}", float(task))
        timeline.end(started, "done", "x" * 1000, 7, task + 0.5)
    running = timeline.start(9, 2, "p2", "a9", 6.0)
    assert [a.task for a in timeline.attempts] == [2, 3, 4, 9]
    assert timeline.dropped == 2
    assert all(len(a.reason) == MAX_REASON for a in timeline.attempts[:3])
    assert timeline.attempts[-1] == Attempt(9, 2, "p2", "a9", 6.0)
    assert timeline.end(running, "lost", "", 0, 7.0).outcome == "lost"


def test_the_report_is_self_contained_and_escapes_what_providers_say() -> None:
    summary = JobSummary(tasks=3, succeeded=3, attempts=4, retries=1, wall_seconds=2.0)
    attempts = [
        Attempt(0, 1, 'p"1<', "a1", 0.0, 0.5, "retried", HOSTILE, 100),
        Attempt(0, 2, "p2", "a2", 0.6, 1.0, "done", "", 2048),
        Attempt(1, 1, "p2", "a2", 1.0, 1.5, "done"),
        Attempt(2, 1, "p2", "a3", 1.2, None, "running"),  # overlapping: a lane of its own
    ]
    page = render_html("job <1>", summary, attempts)
    assert "<script" not in page and 'onerror="' not in page and "<img" not in page
    assert "&lt;script&gt;" in page and "p&quot;1&lt;" in page and "job &lt;1&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page), "nothing is fetched"
    assert sorted(bars(page)) == [("done", 0), ("done", 1), ("retried", 0), ("running", 2)]
    ys = dict(re.findall(r'data-task="(\d+)" data-attempt="1" x="[\d.]+" y="(\d+)"', page))
    assert ys["1"] != ys["2"], "attempts overlapping on one provider go on separate lanes"
    assert "Retries and why" in page and page.count("<tr data-task=") == 1 + len(attempts)
    assert '<td>p2</td><td class="num">0</td><td class="num">3</td><td class="num">0</td>' in page, "p2's row"


def test_a_report_without_retries_says_so() -> None:
    page = render_html("j", JobSummary(tasks=1, succeeded=1, attempts=1), [Attempt(0, 1, "p", "a", 0.0, 0.1, "done")])
    assert "no retries" in page and bars(page) == [("done", 0)]


async def test_job_report_and_progress_view_write_the_file(tmp_path: Path) -> None:
    market = FakeMarket(["p1", "p2"])
    job = Recorded(market, picky, 4, max_providers=2)
    out = io.StringIO()
    target = tmp_path / "job.html"
    with kiln.ProgressView(job, console=Console(file=out), report=target) as view:
        await job.run()
    assert view.written == target and f"report: {target}" in out.getvalue()
    page = target.read_text()
    assert sorted(task for _, task in bars(page)) == [0, 1, 2, 3]
    assert job.report(tmp_path / "again.html").read_text() == page
    assert job.group in job.report_html()


async def test_a_report_that_cannot_be_written_does_not_hide_the_jobs_result(tmp_path: Path) -> None:
    job = Recorded(FakeMarket(["p1"]), picky, 2)
    with pytest.raises(kiln.UsageError, match="no folder"):
        kiln.ProgressView(job, report=tmp_path / "nowhere" / "job.html")
    (tmp_path / "taken").mkdir()  # a folder where the file should go: the write fails at the end
    out = io.StringIO()
    with kiln.ProgressView(job, console=Console(file=out), report=tmp_path / "taken") as view:
        assert await job.run() == [0, 1]
    assert view.written is None and "could not write the report" in out.getvalue()
    assert "2 attempts of 2 tasks on 1 provider in" in job.report_html()


async def test_an_interrupted_attempt_is_retried_and_says_why() -> None:
    dropped = False

    class Reconnecting(FakeMarket):
        async def reconnected(self) -> bool:
            return True

    market = Reconnecting(["p1"])

    async def worker(act: kiln.Activity, n: int) -> int:
        nonlocal dropped
        if not dropped:
            dropped = True
            raise kiln.ConnectionLost("the hub went away for a moment")
        return n

    job = Recorded(market, worker, 1)
    assert await job.run() == [0]
    assert [(a.outcome, a.reason) for a in job.attempts] == [("retried", INTERRUPTED), ("done", "")]
