"""The core's ledger on the hub's real database (a temporary file): what the core posts is
committed once, a restart reads each meter back from the ledger and goes on where it stopped,
and what a dead hub left unsettled is settled at the end it recorded; ``check`` holds after each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.hub.io.state import HubState
from kiln.hub.ledger import MINT, Post, hold_account, provider_account
from kiln.hub.records import EndLease, SaveLease
from kiln.protocol.money import MICRO, due, worst_case
from tests.hubcore import HubHarness
from tests.unit.test_hub_ledger import PRICED, credentials, provide, run

ALICE = "requestor:7"  # the requestor credential of test_hub_ledger.credentials()


def hub_on(state: HubState, **options: Any) -> HubHarness:
    """A private hub whose database is ``state`` (its accounts too), started from what it holds."""
    options.setdefault("capture_interval", 60.0)
    return HubHarness(version="1.5", credentials=credentials(), state=state, accounts=state, grace=600, **options)


def granted(tmp_path: Path, credits: int = 10 * MICRO) -> HubState:
    state = HubState.in_dir(tmp_path)
    state.apply(Post("grant:alice", "grant", 0.0, ((MINT, -credits), (ALICE, credits))))
    return state


def test_a_priced_activity_is_metered_on_across_a_restart_posting_nothing_twice(tmp_path: Path) -> None:
    state = granted(tmp_path)
    hub = hub_on(state)
    provide(hub, "p1")
    r = hub.join("requestor", "alice", token="req")
    activity = hub.rent(r, 1)
    assert state.balance(hold_account(activity)) == worst_case(PRICED, 1, 3600)
    run(hub, 180, 60, cpu_per_second=1)
    [m] = state.meters()
    assert m.seq == 3
    [(_, info)] = hub.send(r, {"type": "balance", "id": 5})
    assert (info["available"], info["held"], info["spent"]) == (
        10 * MICRO - m.held,
        m.held - m.captured,
        m.captured,
    )
    # The hub dies; the next one starts from the database and meters on.
    again = hub_on(state, now=hub.now)
    p = provide(again, "p1", activities=[activity])
    out = again.expire(after=60)
    [ask] = [m for q, m in out if q == p and m["type"] == "meter"]
    again.send(p, {"type": "done", "re": ask["id"], "cpu_seconds": 240})
    keys = [t.key for t in state.transactions(activity=activity)]
    assert keys == [f"capture:{activity}:{n}" for n in (4, 3, 2, 1)] + [f"hold:{activity}"]
    [meter] = state.meters()
    assert meter.captured == due(PRICED, 240, 240) == state.balance(provider_account("p1"))
    assert state.check() == []
    state.close()


def test_an_activity_that_ended_unsettled_is_settled_at_its_end_after_a_restart(tmp_path: Path) -> None:
    state = granted(tmp_path)
    hub = hub_on(state)
    provide(hub, "p1")
    r = hub.join("requestor", "alice", token="req")
    activity = hub.rent(r, 1)
    run(hub, 120, 60)
    [saved] = [a for a in hub.actions if isinstance(a, SaveLease)]
    # The lease ended 30 s later, 20 CPU seconds used, and the hub died before settling it.
    state.apply(EndLease(activity, saved.lease.started + 150, 20.0))
    [meter] = state.meters()
    assert meter.ended == saved.lease.started + 150 and meter.cpu_seconds == 20.0
    hub_on(state, now=hub.now + 5 * 86400)  # days later: billed up to its end, not up to now
    assert state.balance(provider_account("p1")) == due(PRICED, 150, 20)
    assert state.balance(hold_account(activity)) == 0
    assert state.balance(ALICE) == 10 * MICRO - due(PRICED, 150, 20)
    assert state.meters() == [] and state.check() == []
    state.close()


def test_a_hold_whose_rent_never_became_a_lease_goes_back_whole(tmp_path: Path) -> None:
    state = granted(tmp_path)
    hub = hub_on(state)
    provide(hub, "p1")
    r = hub.join("requestor", "alice", token="req")
    hub.create(r, 1)  # held, create sent; the hub dies before the provider's done
    assert state.balance(ALICE) < 10 * MICRO
    hub_on(state, now=hub.now + 60)
    assert state.balance(ALICE) == 10 * MICRO
    assert state.meters() == [] and state.check() == []
    state.close()


def test_top_ups_go_on_after_a_restart_under_new_keys(tmp_path: Path) -> None:
    state = granted(tmp_path)
    hub = hub_on(state, hold_window=60, capture_interval=10.0)
    provide(hub, "p1")
    r = hub.join("requestor", "alice", token="req")
    activity = hub.rent(r, 1)
    run(hub, 120, 10, cpu_per_second=1)
    tops = [t.key for t in state.transactions(activity=activity) if t.kind == "hold"]
    assert len(tops) >= 2
    [meter] = state.meters()
    assert meter.tops == len(tops) - 1
    again = hub_on(state, now=hub.now, hold_window=60, capture_interval=10.0)
    provide(again, "p1", activities=[activity])
    run(again, 120, 10, cpu_per_second=1, since=120)
    after = [t.key for t in state.transactions(activity=activity) if t.kind == "hold"]
    assert len(after) > len(tops) and len(set(after)) == len(after)
    # Every top-up the core counted was written: what it holds in memory is what the database does.
    [meter] = state.meters()
    assert again.core.ledger.meters[activity].held == meter.held
    assert state.balance(hold_account(activity)) == meter.held - meter.captured >= 0
    assert state.check() == []
    state.close()
