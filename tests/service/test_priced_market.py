"""The priced market end to end: a real hub on a real port with a ledger (credentials in its
database, credits granted), simulated providers at prices, and the SDK renting from them.

What issue 20 says will be checked: prices listed, caps, ``cheapest``, ``allow`` and ``deny``;
no credits, no container; a job's budget never overspent; a bill that is the price applied to
what was measured, with no CPU billed beyond what was sold; a lying provider caught by
``Redundant(2)``, paid nothing for what it lied about, and passed over by ``strategy="reputation"``.
The hub captures every half second here (``HubCore(capture_interval=)``) instead of every minute."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import kiln
from kiln.hub.core import HubCore
from kiln.hub.io.server import start
from kiln.hub.io.state import HubState
from kiln.protocol.messages import Cost, Create, Transaction
from kiln.protocol.money import MICRO, to_micro
from kiln.protocol.session import Event, Requested
from kiln.testing.simulated import LIE, SimulatedProvider, simulated_providers

pytestmark = pytest.mark.timeout(60)

SHARED = "shared-t0ken"  # what the simulated providers join with
IMAGE = "kiln-busybox:latest"
CAPTURE_INTERVAL = 0.5


@dataclass
class Hub:
    url: str
    data_dir: Path
    alice: str  # a requestor credential with credits
    bob: str  # a requestor credential with none
    admin: str


@asynccontextmanager
async def priced_hub(tmp_path: Path, credits: float = 1000) -> AsyncIterator[Hub]:
    """A private hub keeping a ledger, capturing every :data:`CAPTURE_INTERVAL` seconds; alice has ``credits``."""
    with HubState.in_dir(tmp_path) as state:
        tokens = [state.create("requestor", name)[1] for name in ("alice", "bob")] + [state.create("admin")[1]]
        state.grant("alice", to_micro(credits))
    core = HubCore(token=SHARED, capture_interval=CAPTURE_INTERVAL)
    async with start("127.0.0.1", 0, token=SHARED, data_dir=tmp_path, core=core) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield Hub(f"ws://127.0.0.1:{port}", tmp_path, *tokens)


def kiln_cli(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "kiln.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def ledger_checks(data_dir: Path) -> None:
    checked = kiln_cli("ledger", "check", "--data-dir", str(data_dir))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("the ledger balances:"), checked.stdout


def captured(transactions: list[Transaction], activity: str | None = None) -> int:
    """What the captures among ``transactions`` (of ``activity``, or all) took from holds."""
    return sum(
        -e.amount
        for t in transactions
        if t.kind == "capture" and (activity is None or t.activity == activity)
        for e in t.entries
        if e.account.startswith("hold:")
    )


async def settled(requestor: kiln.Requestor) -> kiln.Balance:
    """The requestor's balance once nothing is held for it any more (its activities' ends are settled)."""
    async with asyncio.timeout(10):
        while True:
            balance = await requestor.balance()
            if not balance.held_micro:
                return balance
            await asyncio.sleep(0.1)


# --- 1. prices, caps, strategies, allow and deny ---------------------------------------------

CHEAP_SMALL = kiln.Price(start=0.001, cpu_hour=0.01, env_hour=0.01)  # offers 1 CPU only
PRICES = [
    kiln.Price(start=0.05, cpu_hour=1, env_hour=0.1),
    kiln.Price(start=0.01, cpu_hour=0.2, env_hour=0.05),
    kiln.Price(start=0.02, cpu_hour=0.5, env_hour=0.05),
]


async def test_prices_are_listed_capped_and_chosen_by_cheapest_allow_and_deny(tmp_path: Path) -> None:
    async with (
        priced_hub(tmp_path) as hub,
        simulated_providers(hub.url, 1, prefix="small", cpus=1, price=CHEAP_SMALL, token=SHARED) as [small],
        simulated_providers(hub.url, 3, prefix="big", price=lambda i: PRICES[i], token=SHARED) as big,
        kiln.connect(hub.url, token=hub.alice) as requestor,
    ):
        listed = {p.name: p.price for p in await requestor.market()}
        assert listed == {small: CHEAP_SMALL, **dict(zip(big, PRICES, strict=True))}

        with pytest.raises(
            kiln.NoMatch,
            match=r"^no provider within the demand.s max_price start=0\.001,cpu-hour=9,env-hour=9 offers 2 CPUs",
        ):
            await requestor.rent(IMAGE, kiln.Demand(cpus=2, max_price=kiln.Price(start=0.001, cpu_hour=9, env_hour=9)))

        two = kiln.Demand(cpus=2, memory="256MiB")
        async with requestor.rent(IMAGE, two, strategy="cheapest") as act:
            assert act.provider == big[1], "the cheapest that fits: the cheaper one has 1 CPU"
        async with requestor.rent(IMAGE, kiln.Demand(cpus=1), strategy="cheapest") as act:
            assert act.provider == small, "the cheapest of all, when it fits"
        capped = kiln.Demand(cpus=2, max_price=kiln.Price(start=0.02, cpu_hour=0.5, env_hour=0.05))
        async with requestor.rent(IMAGE, capped, strategy="cheapest", deny=[big[1]]) as act:
            assert act.provider == big[2], "the next cheapest within the cap"
        with pytest.raises(kiln.NoMatch):
            await requestor.rent(IMAGE, capped, strategy="cheapest", deny=[big[1], big[2]])
        for _ in range(3):
            async with requestor.rent(IMAGE, two, strategy="cheapest", allow=[big[0]]) as act:
                assert act.provider == big[0], "allow admits only those named, however dear"
        with pytest.raises(kiln.NoMatch):
            await requestor.rent(IMAGE, capped, allow=[big[0]])  # the one allowed is above the cap
        with pytest.raises(kiln.NoMatch):
            await requestor.rent(IMAGE, two, allow=["nobody"])
        await settled(requestor)
    ledger_checks(tmp_path)


# --- 2. no credits, no container ---------------------------------------------------------


async def test_a_requestor_without_credits_is_refused_before_any_container_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creates: list[str] = []
    on_event = SimulatedProvider.on_event

    def counting(self: SimulatedProvider, event: Event) -> None:
        if isinstance(event, Requested) and isinstance(event.message, Create):
            creates.append(self.name)
        on_event(self, event)

    monkeypatch.setattr(SimulatedProvider, "on_event", counting)
    async with (
        priced_hub(tmp_path) as hub,
        simulated_providers(hub.url, 3, price=kiln.Price(start=0.01, env_hour=0.1), token=SHARED),
        kiln.connect(hub.url, token=hub.bob) as bob,
    ):
        for terms in ({}, {"strategy": "cheapest"}, {"max_duration": 1}):
            with pytest.raises(kiln.InsufficientFunds, match="requestor:2 has 0 available") as refused:
                await bob.rent(IMAGE, kiln.Demand(cpus=1), **terms)
            assert refused.value.code == "insufficient_funds"
        with pytest.raises(kiln.InsufficientFunds):
            await bob.map(true_worker, range(3), image=IMAGE, progress=False)
        assert creates == [], "no create reached a provider"
        assert bob.activities == []
        balance = await bob.balance()
        assert (balance.available_micro, balance.held_micro, balance.spent_micro) == (0, 0, 0)
        assert (await bob.ledger()).transactions == []
        async with kiln.connect(hub.url, token=hub.admin) as admin:
            assert await admin.list_activities(all=True) == []
    with HubState.in_dir(tmp_path) as state:
        assert state.usage() == []
    ledger_checks(tmp_path)


async def true_worker(act: kiln.Activity, n: int) -> int:
    await act.run(["true"])
    return n


# --- 3. a job's budget ---------------------------------------------------------------------

BUDGET = 5.0
# A start fee of 2 and a little wall time: a 10 s rent holds 2.02; a third cannot hold 60 s (2.12)
# of what 5 leaves after two. The two held work on until their max_duration ends them (about 20
# tasks each), and then nothing more can be rented: 60 tasks cost more than the budget.
BUDGET_PRICE = kiln.Price(start=2, env_hour=7.2)


async def slow_worker(act: kiln.Activity, n: int) -> int:
    await act.run(["true"])
    await asyncio.sleep(0.5)
    return n


async def test_a_jobs_budget_is_never_overspent_and_the_job_ends_in_budget_exceeded(tmp_path: Path) -> None:
    events: list[kiln.JobEvent] = []
    async with (
        priced_hub(tmp_path, credits=100) as hub,
        simulated_providers(hub.url, 3, price=BUDGET_PRICE, token=SHARED),
        kiln.connect(hub.url, token=hub.alice) as requestor,
    ):
        started = time.monotonic()
        with pytest.raises(kiln.BudgetExceeded, match="budget"):
            await requestor.map(
                slow_worker,
                range(60),
                image=IMAGE,
                budget=BUDGET,
                max_providers=3,
                max_duration=10,
                demand=kiln.Demand(cpus=1),
                on_event=events.append,
                progress=False,
            )
        assert time.monotonic() - started < 20, "the job stops once the activities held end and no other can be"
        balance = await settled(requestor)
        listed = await requestor.ledger(limit=1000)
        assert listed.matched == len(listed.transactions)
        spent = captured(listed.transactions)
        assert 2 * BUDGET_PRICE.start <= spent <= to_micro(BUDGET), spent
        assert balance.spent_micro == spent
        assert balance.available_micro == to_micro(100) - spent, "what was not captured came back"
        holds = [t for t in listed.transactions if t.kind == "hold"]
        assert sum(e.amount for t in holds for e in t.entries if e.amount > 0) <= to_micro(BUDGET)
        costs = [e for e in events if e.kind == "cost"]
        assert costs, "the job heard what its activities cost"
    ledger_checks(tmp_path)


# --- 4. the bill -------------------------------------------------------------------------

# Dear enough that the rates, not the start fee, make the bill: a credit a second held, and
# two a CPU second used.
METERED = kiln.Price(start=0.5, cpu_hour=7200, env_hour=3600)
CPU_RATE, ENV_RATE = 2.0, 1.0  # credits per second


async def test_a_bill_is_the_price_of_what_was_measured_and_no_cpu_beyond_what_was_sold(tmp_path: Path) -> None:
    async with (
        priced_hub(tmp_path) as hub,
        simulated_providers(hub.url, 1, prefix="honest", price=METERED, cpu_per_second=0.5, token=SHARED) as [honest],
        simulated_providers(hub.url, 1, prefix="greedy", price=METERED, cpu_per_second=3, token=SHARED) as [greedy],
        kiln.connect(hub.url, token=hub.alice) as requestor,
    ):
        activities: dict[str, str] = {}
        costs: dict[str, list[Cost]] = {}
        for name in (honest, greedy):
            act = await requestor.rent(IMAGE, kiln.Demand(cpus=1), allow=[name], max_duration=60)
            heard = costs[name] = []
            final = asyncio.Event()

            def hear(_: kiln.Activity, cost: Cost, heard: list[Cost] = heard, final: asyncio.Event = final) -> None:
                heard.append(cost)
                if cost.final:
                    final.set()

            act.on_cost = hear
            activities[name] = act.id
            await asyncio.sleep(2.5)
            await act.release()
            await asyncio.wait_for(final.wait(), 5)
        await settled(requestor)
        listed = (await requestor.ledger(limit=1000)).transactions

    with HubState.in_dir(tmp_path) as state:
        usage = {row["activity"]: row for row in state.usage()}
        earned = {name: state.balance(f"provider:{name}") for name in (honest, greedy)}
    for name, cpu_used in ((honest, 0.5), (greedy, 1.0)):
        activity = activities[name]
        row = usage[activity]
        seconds = row["ended"] - row["started"]
        assert 2.4 < seconds < 4, row
        bill = captured(listed, activity) / MICRO
        expected = METERED.start / MICRO + cpu_used * seconds * CPU_RATE + seconds * ENV_RATE
        assert bill == pytest.approx(expected, rel=0.01), (name, row, bill)
        assert earned[name] == captured(listed, activity), "the provider got it all (no fee)"
        heard = costs[name]
        assert len(heard) >= 3, "a capture every half second while it ran"
        assert [c.seq for c in heard] == sorted({c.seq for c in heard}) and heard[-1].final
        assert heard[-1].due == captured(listed, activity)
        assert all(c.cpu_seconds <= c.seconds * 1 + 1e-6 for c in heard), "never more CPU than 1 CPU x wall"
    row = usage[activities[greedy]]
    seconds = row["ended"] - row["started"]
    assert row["cpu_seconds"] == pytest.approx(3 * seconds, rel=0.05), "it did report 3 CPU seconds a second"
    as_told = METERED.start / MICRO + 3 * seconds * CPU_RATE + seconds * ENV_RATE
    assert captured(listed, activities[greedy]) / MICRO < 0.75 * as_told, "not paid for the CPU it did not sell"
    ledger_checks(tmp_path)


# --- 5. a liar caught, not paid, and passed over -------------------------------------------


async def echo(act: kiln.Activity, n: int) -> tuple[int, str]:
    result = await act.run(["echo", str(n)])
    return n, result.stdout


async def test_a_lying_provider_is_caught_unpaid_and_passed_over_by_reputation(tmp_path: Path) -> None:
    price = kiln.Price(start=0.01, env_hour=36)
    async with (
        priced_hub(tmp_path) as hub,
        simulated_providers(hub.url, 2, prefix="honest", price=price, token=SHARED) as honest,
        simulated_providers(hub.url, 1, prefix="liar", price=price, lie=True, token=SHARED) as [liar],
        kiln.connect(hub.url, token=hub.alice) as requestor,
    ):
        job: kiln.Job[int, tuple[int, str]] = requestor.job(
            echo, range(8), image=IMAGE, max_providers=3, verify=kiln.Redundant(2)
        )
        results = await job.run()
        assert results == [(n, "") for n in range(8)], "no result of the liar's is used"
        assert LIE.strip() not in repr(results)
        assert job.summary.lost_by.get(liar, 0) >= 1 and set(job.summary.lost_by) == {liar}

        scores: dict[str, Any] = {p.name: p.reputation for p in await requestor.market()}
        assert scores[liar] < min(scores[name] for name in honest), scores
        chosen = [await requestor.rent(IMAGE, strategy="reputation", group="g") for _ in honest]
        assert sorted(act.provider for act in chosen) == sorted(honest), "the liar comes last"
        for act in chosen:
            await act.release()
        async with requestor.rent(IMAGE, strategy="reputation") as act:
            assert act.provider != liar
        await settled(requestor)
        listed = (await requestor.ledger(limit=1000)).transactions
        assert any(t.kind == "reverse" for t in listed), "what was paid for a losing run came back"

    with HubState.in_dir(tmp_path) as state:
        liar_paid = state.balance(f"provider:{liar}")
        honest_paid = [state.balance(f"provider:{name}") for name in honest]
    assert liar_paid == 0, f"the liar kept {liar_paid} micro-credits for activities that lost verdicts"
    assert all(paid > 0 for paid in honest_paid)
    ledger_checks(tmp_path)
