"""The ledger through a crash: a priced ``map`` of 60 tasks on three providers that charge
(``--price start=0.01,cpu-hour=0.20,env-hour=0.05``), the hub capturing every second
(``--capture-interval 1``) with a 5 % fee, SIGKILLed and started again on the same data
directory mid-job. Real hub and provider processes, real containers.

Afterwards every result is right; ``kiln ledger check`` exits 0; each activity's captures
are numbered 1..n with no gap and no repeat, never more than was held, and add up to what
its usage row says it owed (start + CPU + wall time, within 1 %, in fact within 2
micro-credits); every hold is spent or released; and what was granted is all accounted for:
the requestor's balance + what is still held + what the providers and the hub got. The test
prints what happened."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kiln
from kiln.hub.io.books import price_of
from kiln.hub.io.state import HubState
from kiln.protocol.money import MICRO, billable_cpu, due
from kiln.requestor.executor import JobEvent
from tests.conftest import IMAGE, Cluster

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

TASKS = 60
SHARED = "ledger-chaos-shared-token"  # what the providers and the cluster's probes join with
PRICE = "start=0.01,cpu-hour=0.20,env-hour=0.05"
GRANTED = 100 * MICRO


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kiln.cli", *args], capture_output=True, text=True, timeout=60)


def ledger_rows(data: Path) -> list[tuple[int, str, str, float, str | None, float | None, float | None, str, int]]:
    """Every entry of every transaction, read straight from hub.db (read-only, beside the running hub)."""
    with sqlite3.connect(f"file:{data / 'hub.db'}?mode=ro", uri=True) as db:
        return db.execute(
            "SELECT t.id, t.key, t.kind, t.time, t.activity, t.seconds, t.cpu_seconds, e.account, e.amount "
            "FROM ledger_transactions t JOIN ledger_entries e ON e.txn = t.id ORDER BY t.id, e.line"
        ).fetchall()


@pytest.mark.hub_args("--grace", "30", "--token", SHARED, "--capture-interval", "1", "--fee", "0.05")
async def test_the_ledger_holds_and_nothing_is_charged_twice_when_the_hub_is_killed_mid_job(
    cluster: Cluster,
) -> None:
    data = cluster.logs / "hub-data"
    made = cli("token", "create", "--role", "requestor", "--name", "alice", "--data-dir", str(data))
    assert made.returncode == 0, made.stderr
    alice = made.stdout.strip()
    granted = cli("credit", "grant", "alice", str(GRANTED // MICRO), "--data-dir", str(data))
    assert granted.returncode == 0, granted.stderr
    cluster.token = SHARED
    names = {f"p{n}{cluster.suffix}" for n in (1, 2, 3)}
    for name in ("p1", "p2", "p3"):
        await asyncio.to_thread(cluster.start_provider, name, "--token", SHARED, "--price", PRICE, wait=False)
    await asyncio.to_thread(cluster.wait_for_providers, names)

    events: list[JobEvent] = []
    done: collections.Counter[int] = collections.Counter()
    third_done = asyncio.Event()
    kill: dict[str, float] = {}

    def on_event(event: JobEvent) -> None:
        events.append(event)
        if event.kind == "task_done" and event.task is not None:
            done[event.task] += 1
            if sum(done.values()) >= TASKS // 3:
                third_done.set()

    async def square(act: kiln.Activity, x: int) -> int:
        result = await act.run(["sh", "-c", f"sleep 0.4; echo $(({x} * {x}))"], timeout=30)
        return int(result.stdout)

    async def kill_the_hub() -> None:
        await third_done.wait()
        await asyncio.sleep(1.5)  # into an interval: captures were made, the next is due
        kill["at"] = time.time()
        await asyncio.to_thread(cluster.restart_hub, pause=0.5)
        kill["back"] = time.time()

    started = time.monotonic()
    async with kiln.connect(cluster.url, name="alice", token=alice) as requestor, asyncio.TaskGroup() as tg:
        killer = tg.create_task(kill_the_hub())
        demand = kiln.Demand(cpus=0.5, memory="64MiB")
        results = await requestor.map(
            square, range(TASKS), image=IMAGE, demand=demand, max_providers=3, retries=8, on_event=on_event
        )
        took = time.monotonic() - started
        assert killer.done(), "the hub was killed before the job ended"
        balance = await requestor.balance()
    assert results == [x * x for x in range(TASKS)], "every result right"
    assert set(done.values()) == {1}, "no task counted done twice"

    # The requestor is gone: every activity ends, is captured one last time and its hold released.
    deadline = time.monotonic() + 30
    while True:
        rows = ledger_rows(data)
        holds = collections.Counter[str]()
        for *_, account, amount in rows:
            if account.startswith("hold:"):
                holds[account] += amount
        if holds and not any(holds.values()):
            break
        assert time.monotonic() < deadline, f"holds left: {+holds}"
        await asyncio.sleep(0.2)

    checked = cli("ledger", "check", "--json", "--data-dir", str(data))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] and report["problems"] == []

    # Per activity: its holds, its captures (in order), its release.
    held: collections.Counter[str] = collections.Counter()
    captures: dict[str, list[tuple[int, str, float, int, float, float]]] = collections.defaultdict(list)
    kinds: collections.Counter[str] = collections.Counter()
    seen: set[int] = set()
    for txn, key, kind, when, activity, seconds, cpu, account, amount in rows:
        if txn not in seen:
            seen.add(txn)
            kinds[kind] += 1
        if activity is None or account != f"hold:{activity}":
            continue
        if kind == "hold":
            held[activity] += amount
        elif kind == "capture":
            assert seconds is not None and cpu is not None
            captures[activity].append((txn, key, when, -amount, seconds, cpu))
    keys = [key for txn, key, kind, *_ in rows if kind == "capture"]
    assert len(set(keys)) == kinds["capture"], "a capture key posted once"

    with HubState.in_dir(data) as state:
        usage = [row for row in state.usage() if row["requestor"] == "alice"]
        assert {row["activity"] for row in usage} == set(held), "a usage row per activity held for"
        for row in usage:
            activity = row["activity"]
            mine = captures[activity]
            assert [key for _, key, *_ in mine] == [f"capture:{activity}:{n}" for n in range(1, len(mine) + 1)]
            assert all(a[4] < b[4] for a, b in itertools.pairwise(mine)), "each capture bills more time"
            captured = sum(amount for _, _, _, amount, _, _ in mine)
            assert 0 < captured <= held[activity]
            price = price_of((row["price_start"], row["price_cpu_hour"], row["price_env_hour"]))
            assert price is not None
            wall = row["ended"] - row["started"]
            assert row["cpu_seconds"] is not None, "the provider measured its container's CPU"
            owed = due(price, wall, billable_cpu(row["cpu_seconds"], row["cpus"], wall))
            assert abs(captured - owed) <= owed / 100, (activity, captured, owed)
            assert abs(captured - owed) <= 2, f"{activity}: captured {captured}, owed {owed} micro-credits"
        credential = state.tenant("alice")
        assert credential is not None
        account = f"requestor:{credential.id}"
        available = state.balance(account)
        still_held = state.held(account)
        providers = {name: state.balance(f"provider:{name}") for name in sorted(names)}
        fee = state.balance("hub")
        spent = state.spent(account)
    assert still_held == 0
    assert available + still_held + sum(providers.values()) + fee == GRANTED, "every credit granted accounted for"
    assert spent == sum(providers.values()) + fee == sum(amount for m in captures.values() for *_, amount, _, _ in m)
    assert fee == sum(amount * 50_000 // MICRO for m in captures.values() for *_, amount, _, _ in m)

    # The kill fell mid-activity, with captures on both sides of it.
    spanning = [row for row in usage if row["started"] < kill["at"] and row["ended"] > kill["back"]]
    before = sum(1 for m in captures.values() for c in m if c[2] < kill["at"])
    after = sum(1 for m in captures.values() for c in m if c[2] > kill["back"])
    assert spanning, "an activity held through the kill"
    assert before >= 3 and after >= 3, (before, after)
    finals = {e.activity: e.due for e in events if e.kind == "cost" and e.final and e.activity is not None}
    for activity, told in finals.items():
        assert told is not None and round(told * MICRO) == sum(c[3] for c in captures[activity])
    job = collections.Counter(e.kind for e in events)
    print(
        f"\n  ledger chaos: {TASKS} tasks in {took:.1f} s on {len(usage)} activities, {len(spanning)} through "
        f"the kill; {job['task_retry']} retries; transactions {dict(kinds)}; captures {before} before the kill, "
        f"{after} after; spent {spent / MICRO:.6f} of {GRANTED / MICRO:g} credits (providers "
        f"{ {n: v / MICRO for n, v in providers.items()} }, hub fee {fee / MICRO:.6f}); balance told "
        f"{balance.available:.6f} available; {len(finals)} final cost events"
    )
