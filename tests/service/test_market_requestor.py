"""The requestor SDK against a hub of protocol 1.5 played by the test (a WebSocket server that
answers by hand, as a ledger hub would): what a rent with market terms puts on the wire, the
price and hold of what it rented, the hub's cost captures (the final one after the release),
verdicts, the ledger's refusals, and a job that stops when its budget is spent."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

import kiln
from kiln.protocol.messages import PROTOCOL_NAME, Cost
from tests.scripted_hub import LIMITS

pytestmark = pytest.mark.timeout(30)

START = 10_000
"""The start fee of every provider of this hub, in micro-credits: all an activity costs here."""


@dataclass
class LedgerHub:
    """Rents on distinct providers at a start fee; ``rents_held`` rents, then budget_exceeded."""

    version: str = "1.5"
    rents_held: int = 1000
    poor: bool = False
    """Refuse every rent: insufficient_funds."""
    cost_after_done: bool = True
    """A release's final cost comes after its done (else before it)."""
    rents: list[dict[str, Any]] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def handle(self, ws: ServerConnection) -> None:
        hello = json.loads(await ws.recv())
        assert hello["role"] == "requestor", hello
        welcome = {"type": "welcome", "version": self.version, "session": "r1", "software": "ledger", "limits": LIMITS}
        await ws.send(json.dumps(welcome))
        with contextlib.suppress(ConnectionClosed):
            async for text in ws:
                await self.answer(ws, json.loads(text))

    async def answer(self, ws: ServerConnection, message: dict[str, Any]) -> None:
        kind, number = message["type"], message.get("id")

        async def send(reply: dict[str, Any]) -> None:
            await ws.send(json.dumps(reply))

        if kind == "rent":
            self.rents.append(message)
            if self.poor:
                await send({"type": "error", "re": number, "code": "insufficient_funds", "message": "0 available"})
            elif len(self.rents) > self.rents_held:
                text = "the group's budget has 0.005 credits left, and an activity holds 0.01"
                await send({"type": "error", "re": number, "code": "budget_exceeded", "message": text})
            else:
                n = len(self.rents)
                price = {"start": START, "cpu_hour": 0, "env_hour": 0}
                resources = {"cpus": 1, "memory": 2**28}
                rented = {"activity": f"a{n}", "provider": f"p{n}", "cached": True, "resources": resources}
                await send({"type": "rented", "re": number, **rented, "price": price, "hold": START})
        elif kind == "exec":
            result = {"exit_code": 0, "timed_out": False, "stdout": "", "stderr": "", "duration": 0.0}
            await send({"type": "exec_result", "re": number, **result})
        elif kind == "release":
            cost = {"type": "cost", "activity": message["activity"], "seq": 1, "due": START, "seconds": 1.0}
            cost |= {"cpu_seconds": 0.0, "final": True}
            if not self.cost_after_done:
                await send(cost)
            await send({"type": "done", "re": number})
            if self.cost_after_done:
                await asyncio.sleep(0.05)  # the requestor has forgotten the activity by then
                await send(cost)
        elif kind == "verdict":
            self.verdicts.append(message)
            await send({"type": "done", "re": number})
        else:
            await send({"type": "error", "re": number, "code": "out_of_order", "message": f"no {kind} here"})


@contextlib.asynccontextmanager
async def ledger_hub(**options: Any) -> AsyncIterator[LedgerHub]:
    hub = LedgerHub(**options)
    async with serve(hub.handle, "127.0.0.1", 0, subprotocols=[Subprotocol(PROTOCOL_NAME)]) as server:
        hub.url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
        yield hub


async def test_a_rent_with_terms_its_price_and_hold_its_final_cost_and_a_verdict() -> None:
    async with ledger_hub() as hub, kiln.connect(hub.url, reconnect=False) as requestor:
        demand = kiln.Demand(cpus=1, max_price=kiln.Price(start=0.02))
        activity = await requestor.rent(
            "img",
            demand,
            group="g1",
            budget=1.5,
            strategy="cheapest",
            allow=["p1", "p2"],
            deny=["p9"],
            exclude=["p8"],
            min_reputation=0.5,
            max_duration=600,
        )
        [rent] = hub.rents
        assert rent["demand"]["max_price"] == {"start": 20_000, "cpu_hour": 0, "env_hour": 0}
        terms = {key: rent[key] for key in ("budget", "strategy", "allow", "exclude", "min_reputation", "max_duration")}
        assert terms == {
            "budget": 1_500_000,
            "strategy": "cheapest",
            "allow": ["p1", "p2"],
            "exclude": ["p8", "p9"],
            "min_reputation": 0.5,
            "max_duration": 600.0,
        }
        assert activity.price == kiln.Price(start=0.01) and activity.hold == START
        seen: list[tuple[int, bool]] = []
        charged = asyncio.Event()

        def on_cost(act: kiln.Activity, cost: Cost) -> None:
            seen.append((cost.due, cost.final))
            charged.set()

        activity.on_cost = on_cost
        await activity.release()
        assert requestor.activities == [], "released: the final capture may come after the done, and still counts"
        async with asyncio.timeout(5):
            await charged.wait()
        assert seen == [(START, True)] and activity.cost is not None and activity.cost.final

        await requestor.report_verdict("a1", ["a2", "a3"])
        assert hub.verdicts == [{"type": "verdict", "id": hub.verdicts[0]["id"], "lost": "a1", "agreed": ["a2", "a3"]}]


async def test_a_hub_older_than_1_5_is_sent_no_market_term_and_no_verdict() -> None:
    async with ledger_hub(version="1.4") as hub, kiln.connect(hub.url, reconnect=False) as requestor:
        with pytest.raises(kiln.UnsupportedVersion, match="budget"):
            await requestor.rent("img", group="g1", budget=1)
        with pytest.raises(kiln.UnsupportedVersion, match="max_price"):
            await requestor.rent("img", kiln.Demand(max_price=kiln.Price(cpu_hour=1)))
        with pytest.raises(kiln.UnsupportedVersion):
            await requestor.report_verdict("a1", ["a2", "a3"])
        assert hub.rents == [] and hub.verdicts == []
        await requestor.rent("img", deny=["p3"])  # deny is exclude: any hub knows it
        [rent] = hub.rents
        assert rent["exclude"] == ["p3"] and not {"budget", "strategy", "allow", "max_duration"} & set(rent)


async def test_the_ledgers_refusals_are_their_own_errors() -> None:
    async with ledger_hub(poor=True) as hub, kiln.connect(hub.url, reconnect=False) as requestor:
        with pytest.raises(kiln.InsufficientFunds) as caught:
            await requestor.rent("img")
        assert caught.value.code == kiln.ErrorCode.INSUFFICIENT_FUNDS
    async with ledger_hub(rents_held=0) as hub, kiln.connect(hub.url, reconnect=False) as requestor:
        with pytest.raises(kiln.BudgetExceeded):
            await requestor.rent("img", group="g", budget=0.005)
    with pytest.raises(kiln.UsageError, match="group"):
        requestor.rent("img", budget=1)


async def work(act: kiln.Activity, n: int) -> int:
    await act.run(["true"])
    await asyncio.sleep(0.01)
    return n


async def test_a_job_counts_the_hubs_captures_per_provider() -> None:
    async with ledger_hub(cost_after_done=False) as hub, kiln.connect(hub.url, reconnect=False) as requestor:
        events: list[kiln.JobEvent] = []
        job = requestor.job(work, range(6), image="img", max_providers=2, budget=1, on_event=events.append)
        assert await job.run() == list(range(6))
        assert all(rent["budget"] == 1_000_000 and rent["group"] == job.group for rent in hub.rents)
        costs = [e for e in events if e.kind == "cost"]
        assert len(costs) == 2 and all(e.final and e.due == 0.01 for e in costs)
        assert job.summary.spent == 0.02
        assert job.summary.spent_by_provider == {"p1": 0.01, "p2": 0.01}


async def test_a_job_whose_budget_is_spent_stops_renting_and_the_activities_held_finish_the_work() -> None:
    async with ledger_hub(rents_held=2) as hub, kiln.connect(hub.url, reconnect=False) as requestor:
        job = requestor.job(work, range(20), image="img", max_providers=3, budget=0.025)
        await job.run()
        assert len(hub.rents) == 3, "two rents held, the third refused, and none after it"
        assert job.summary.succeeded == 20 and job.summary.failed == 0, "the two held went on"
        assert requestor.activities == [], "what ran was released"

        # Not a single rent held: nothing runs, and every task fails with the budget.
        results: list[object] = await requestor.map(
            work, range(5), image="img", max_providers=1, budget=0.025, return_exceptions=True, progress=False
        )
        assert all(isinstance(r, kiln.TaskFailed) and isinstance(r.__cause__, kiln.BudgetExceeded) for r in results)
