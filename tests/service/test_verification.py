"""Verified jobs against a real hub and simulated providers (no Docker), one of which lies: every
command it runs prints a wrong answer. ``verify=Redundant(2)`` keeps its answers out of the
results, reports a verdict against each of its losing runs, and says so in the summary."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

import kiln
from kiln.protocol.messages import TaskState
from kiln.requestor.executor import RentProgressHandler
from kiln.requestor.scheduling import plural
from kiln.testing import LocalCluster
from kiln.testing.simulated import LIE, simulated_providers

pytestmark = pytest.mark.timeout(90)

IMAGE = "kiln-busybox:latest"


class Reporting:
    """A requestor whose verdicts are noted before they go to the hub."""

    def __init__(self, requestor: kiln.Requestor) -> None:
        self.requestor = requestor
        self.verdicts: list[tuple[str, tuple[str, ...]]] = []

    def rent(
        self,
        image: str,
        demand: kiln.Demand | None = None,
        *,
        exclude: Iterable[str] = (),
        group: str | None = None,
        on_progress: RentProgressHandler | None = None,
        user: str | None = None,
        **terms: Any,
    ) -> Awaitable[kiln.Activity]:
        assert user is None
        return self.requestor.rent(image, demand, exclude=exclude, group=group, on_progress=on_progress, **terms)

    async def reconnected(self) -> bool:
        return await self.requestor.reconnected()

    async def report_verdict(self, lost: str, agreed: Sequence[str]) -> None:
        self.verdicts.append((lost, tuple(agreed)))
        await self.requestor.report_verdict(lost, agreed)

    def report_task(self, group: str, task: int, attempt: int, state: TaskState, **details: Any) -> None:
        self.requestor.report_task(group, task, attempt, state, **details)


async def answer(act: kiln.Activity, n: int) -> tuple[int, str]:
    """What the task's command printed: nothing, on an honest simulated provider."""
    result = await act.run(["echo", str(n)])
    return n, result.stdout


async def test_redundant_runs_catch_a_provider_that_lies(tmp_path: Path) -> None:
    with LocalCluster(tmp_path) as cluster:
        url = cluster.start_hub()
        async with (
            simulated_providers(url, 2, prefix="honest") as honest,
            simulated_providers(url, 1, prefix="liar", lie=True) as [liar],
            kiln.connect(url) as requestor,
        ):
            reporting = Reporting(requestor)
            events: list[kiln.JobEvent] = []
            job: kiln.Job[int, tuple[int, str]] = kiln.Job(
                reporting,
                answer,
                range(12),
                image=IMAGE,
                max_providers=3,
                verify=kiln.Redundant(2),
                on_event=events.append,
            )
            results = await job.run()

            assert results == [(n, "") for n in range(12)], "no result of the liar's is used"
            summary = job.summary
            assert (summary.succeeded, summary.failed, summary.verified) == (12, 0, 12)
            assert set(summary.lost_by) == {liar} and summary.lost_by[liar] >= 1
            assert summary.disputed == summary.lost_by[liar]
            assert liar in summary.failed_providers, "two lost verdicts ban the liar"

            on = {e.detail: e.provider for e in events if e.kind == "rented"}  # activity -> provider
            assert len(reporting.verdicts) == summary.lost_by[liar]
            for lost, agreed in reporting.verdicts:
                assert on[lost] == liar, "every verdict names a run of the liar"
                assert len(agreed) == 2 and {on[a] for a in agreed} <= set(honest), "against two honest runs"
            disputed = [e for e in events if e.kind == "task_disputed"]
            assert {e.provider for e in disputed} == {liar}
            assert any(f"lost {plural(summary.lost_by[liar], 'verification')}" in line for line in summary.lines())
            assert LIE.strip() not in repr(results)
            assert requestor.activities == [], "everything the job rented is released"


async def test_an_estimate_is_the_dearest_fitting_worst_case(tmp_path: Path) -> None:
    with LocalCluster(tmp_path) as cluster:
        url = cluster.start_hub()
        async with simulated_providers(url, 2, cpus=2) as _, kiln.connect(url) as requestor:
            demand = kiln.Demand(cpus=1, memory="256MiB")
            assert await requestor.estimate(demand, max_duration=600, activities=3) == 0.0, "free providers"
            with pytest.raises(kiln.NoMatch):
                await requestor.estimate(kiln.Demand(cpus=64), max_duration=600)
            with pytest.raises(kiln.NoMatch):
                await requestor.estimate(demand, max_duration=600, deny=["sim-00000", "sim-00001"])
            with pytest.raises(kiln.UsageError):
                await requestor.estimate(demand, max_duration=-1)
