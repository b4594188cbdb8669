"""The ledger in the hub's database: posts committed once by key, balances cached and checked,
grants, listings, and what a restart needs to meter leases on (meters, budgets, reputation)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from kiln.hub.io.state import FILE_NAME, MIGRATIONS, SCHEMA_VERSION, HubState
from kiln.hub.ledger import HUB, MINT, Post, hold_account, provider_account, requestor_account
from kiln.hub.records import (
    EndLease,
    EndSession,
    LeaseRecord,
    MeterRecord,
    SaveBudget,
    SaveLease,
    SaveReputation,
    SessionRecord,
)
from kiln.protocol.errors import UsageError
from kiln.protocol.messages import Price, Resources

PRICE = Price.micro(start=10_000, cpu_hour=200_000, env_hour=50_000)
SESSION = SessionRecord("s1", "alice", 1, b"\x01" * 32)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[HubState]:
    now = iter(float(t) for t in range(1000, 100_000))
    with HubState(tmp_path / FILE_NAME, clock=lambda: next(now)) as opened:
        yield opened


def alice(state: HubState, credits: int = 10_000_000) -> str:
    """A requestor credential named alice (id 1) with ``credits`` micro-credits; its account."""
    record, _ = state.create("requestor", "alice")
    assert record.id == 1
    state.grant("alice", credits)
    return requestor_account(record.id)


def hold(activity: str, amount: int, *, key: str | None = None, group: str | None = "g") -> Post:
    return Post(
        key=key or f"hold:{activity}",
        kind="hold",
        time=2000.0,
        entries=((requestor_account(1), -amount), (hold_account(activity), amount)),
        activity=activity,
        session="s1",
        group=group,
    )


def capture(activity: str, seq: int, amount: int, fee: int = 0, *, seconds: float = 60.0, cpu: float = 0.0) -> Post:
    return Post(
        key=f"capture:{activity}:{seq}",
        kind="capture",
        time=2000.0 + seconds,
        entries=((hold_account(activity), -amount), (provider_account("p1"), amount - fee), (HUB, fee)),
        activity=activity,
        seconds=seconds,
        cpu_seconds=cpu,
    )


def release(activity: str, amount: int) -> Post:
    return Post(
        key=f"release:{activity}",
        kind="release",
        time=3000.0,
        entries=((hold_account(activity), -amount), (requestor_account(1), amount)),
        activity=activity,
        session="s1",
        group="g",
    )


def lease(activity: str, *, price: Price | None = PRICE, max_duration: float | None = 600.0) -> SaveLease:
    record = LeaseRecord(activity, "s1", "p1", Resources(cpus=2, memory=2**20), "g", None, 1500.0, price, max_duration)
    return SaveLease(record, SESSION)


def test_a_post_replayed_is_posted_once(state: HubState) -> None:
    account = alice(state)
    state.apply(hold("a1", 3_000_000))
    state.apply(hold("a1", 3_000_000))  # a replay: the same key
    state.apply(hold("a1", 5_000_000))  # the same key with other amounts: the first stands
    assert state.balance(account) == 7_000_000
    assert state.balance(hold_account("a1")) == 3_000_000
    assert state.balance(MINT) == -10_000_000
    assert state.balance("provider:nobody") == 0
    assert state.ledger_counts() == (2, 3)
    assert state.check() == []


def test_balances_held_and_spent_follow_holds_captures_and_releases(state: HubState) -> None:
    account = alice(state)
    state.apply(lease("a1"))
    state.apply(hold("a1", 3_000_000))
    state.apply(capture("a1", 1, 1_000_000, fee=50_000))
    assert (state.balance(account), state.held(account), state.spent(account)) == (7_000_000, 2_000_000, 1_000_000)
    state.apply(hold("a2", 1_000_000))
    assert state.held(account) == 3_000_000
    state.apply(release("a1", 2_000_000))
    assert (state.balance(account), state.held(account), state.spent(account)) == (8_000_000, 1_000_000, 1_000_000)
    assert state.balance(provider_account("p1")) == 950_000
    assert state.balance(HUB) == 50_000
    reverse = Post(
        key="reverse:a1",
        kind="reverse",
        time=4000.0,
        entries=((provider_account("p1"), -950_000), (HUB, -50_000), (account, 1_000_000)),
        activity="a1",
    )
    state.apply(reverse)
    assert state.spent(account) == 0  # what was reversed came back
    assert state.check() == []


def test_a_grant_goes_to_a_live_requestor_credential_by_name_or_id(state: HubState) -> None:
    account = alice(state, 5_000_000)
    admin, _ = state.create("admin", "root")
    granted = state.grant(f"#{admin.id}", 1)
    assert granted.kind == "grant" and granted.entries == ((MINT, -1), (requestor_account(admin.id), 1))
    assert state.grant("#1", 2_000_000).key != granted.key  # every grant is a transaction of its own
    assert state.balance(account) == 7_000_000
    state.create("provider", "p1")
    for who in ("bob", "p1", "#99", "#x"):
        with pytest.raises(UsageError, match=rf"no live requestor credential is named {who!r}"):
            state.grant(who, 1)
    state.revoke("alice")
    with pytest.raises(UsageError, match="no live requestor credential"):
        state.grant("alice", 1)
    with pytest.raises(UsageError, match="more than 0 credits"):
        state.grant("root", 0)
    assert state.balance(account) == 7_000_000


def test_check_finds_a_tampered_entry_a_tampered_balance_and_a_missing_one(state: HubState) -> None:
    account = alice(state)
    state.apply(hold("a1", 3_000_000))
    assert state.check() == []
    with sqlite3.connect(state.where) as db:
        db.execute("UPDATE ledger_entries SET amount = 4000000 WHERE account = ?", (hold_account("a1"),))
    db.close()
    problems = state.check()
    assert problems == [
        "transaction 2 (hold:a1) does not balance: its entries sum to 1000000",
        "account hold:a1: its cached balance is 3000000, its entries sum to 4000000",
    ]
    with sqlite3.connect(state.where) as db:
        db.execute("UPDATE ledger_entries SET amount = 3000000 WHERE account = ?", (hold_account("a1"),))
        db.execute("UPDATE ledger_balances SET balance = balance + 1 WHERE account = ?", (account,))
    db.close()
    assert state.check() == [f"account {account}: its cached balance is 7000001, its entries sum to 7000000"]
    with sqlite3.connect(state.where) as db:
        db.execute("UPDATE ledger_balances SET balance = 7000000 WHERE account = ?", (account,))
        db.execute("DELETE FROM ledger_balances WHERE account = ?", (MINT,))
        db.execute("INSERT INTO ledger_entries (txn, line, account, amount) VALUES (99, 0, 'x', 0)")
    db.close()
    assert state.check() == [
        "1 entries belong to no transaction (id 99)",
        "account mint has entries summing to -10000000 but no cached balance",
        "account x has entries summing to 0 but no cached balance",
    ]


def test_check_finds_a_requestor_or_a_hold_below_zero(state: HubState) -> None:
    alice(state, 1_000_000)
    state.apply(hold("a1", 3_000_000))
    assert state.check() == ["account requestor:1 is below zero: -2000000"]


def test_a_transaction_a_listing_could_not_show_is_refused_and_writes_nothing(state: HubState) -> None:
    from kiln.protocol.errors import KilnError

    with pytest.raises(KilnError, match="an amount is out of range"):
        state.apply(Post(key="k", kind="grant", time=0.0, entries=((MINT, -(2**63)), ("requestor:1", 2**63))))
    with pytest.raises(KilnError, match="key, kind or number of entries"):
        state.apply(Post(key="k" * 257, kind="grant", time=0.0, entries=()))
    with pytest.raises(KilnError, match="key, kind or number of entries"):
        state.apply(Post(key="k", kind="g" * 33, time=0.0, entries=()))
    with pytest.raises(KilnError, match="key, kind or number of entries"):
        state.apply(Post(key="k", kind="grant", time=0.0, entries=tuple((f"a{n}", 0) for n in range(17))))
    assert state.ledger_counts() == (0, 0)


def test_transactions_are_listed_newest_first_per_account_or_activity(state: HubState) -> None:
    account = alice(state)
    state.apply(hold("a1", 3_000_000))
    state.apply(capture("a1", 1, 1_000_000, fee=10))
    state.apply(hold("a2", 1_000_000))
    listed = state.transactions()
    assert state.count_transactions() == 4
    assert [t.kind for t in listed] == ["hold", "capture", "hold", "grant"]
    assert [t.id for t in listed] == [4, 3, 2, 1]
    [entries] = [t.entries for t in listed if t.kind == "capture"]
    assert [(e.account, e.amount) for e in entries] == [("hold:a1", -1_000_000), ("provider:p1", 999_990), ("hub", 10)]
    # A requestor sees its activities' captures, though its own account has no entry in them.
    assert [t.id for t in state.transactions(account, limit=2)] == [4, 3]
    assert state.count_transactions(account) == 4
    assert state.count_transactions(provider_account("p1")) == 1
    assert [t.id for t in state.transactions(activity="a1")] == [3, 2]
    assert state.transactions("requestor:2") == [] and state.count_transactions("requestor:2") == 0
    assert state.count_transactions(account, activity="a2") == 1


def test_meters_name_live_leases_and_the_holds_left_to_settle(state: HubState) -> None:
    alice(state)
    state.apply(lease("a1"))
    state.apply(hold("a1", 3_000_000))
    state.apply(capture("a1", 1, 100_000, seconds=60, cpu=30))
    state.apply(capture("a1", 2, 50_000, seconds=120, cpu=90))
    state.apply(Post("hold:a1:2", "hold", 2100.0, ((requestor_account(1), -1000), (hold_account("a1"), 1000)), "a1"))
    state.apply(lease("a2", price=None, max_duration=None))  # not metered: no hold
    state.apply(lease("a3"))
    state.apply(hold("a3", 500_000))
    state.apply(EndLease("a3", 1700.0, 42.5))  # ended, neither captured at its end nor released
    state.apply(hold("a4", 200_000, group=None))  # held, but the hub died before rented
    state.apply(lease("a5"))
    state.apply(hold("a5", 100_000))
    state.apply(capture("a5", 1, 100_000))
    state.apply(EndLease("a5", 1800.0, None))  # settled: its hold is empty
    [a1, a3, a4] = state.meters()
    assert a1 == MeterRecord(
        activity="a1",
        start=10_000,
        cpu_hour=200_000,
        env_hour=50_000,
        max_duration=600.0,
        held=3_001_000,
        captured=150_000,
        seq=2,
        cpu_seconds=90.0,
        seconds=120.0,
        requestor="requestor:1",
        session="s1",
        group="g",
        provider="p1",
        cpus=2.0,
        started=1500.0,
        tops=1,
    )
    assert a1.price == PRICE
    # Ended, with the CPU its end measured; its max_duration no longer matters.
    assert a3 == replace(
        a1,
        activity="a3",
        max_duration=None,
        held=500_000,
        captured=0,
        seq=0,
        tops=0,
        seconds=0.0,
        cpu_seconds=42.5,
        ended=1700.0,
    )
    assert (a4.price.free, a4.provider, a4.group, a4.held) == (True, None, None, 200_000)  # nothing is due
    assert (a4.started, a4.ended) == (2000.0, 2000.0)  # when it was held
    state.apply(release("a3", 500_000))
    assert [m.activity for m in state.meters()] == ["a1", "a4"]


def test_a_lease_keeps_its_price_and_max_duration_and_its_usage_row_the_price(state: HubState) -> None:
    state.apply(lease("a1"))
    state.apply(lease("a2", price=None, max_duration=None))
    _, leases = state.load()
    assert [(x.price, x.max_duration) for x in leases] == [(PRICE, 600.0), (None, None)]
    state.apply(EndLease("a1", 1600.0, 1.0))
    with sqlite3.connect(state.where) as db:
        row = db.execute("SELECT price_start, price_cpu_hour, price_env_hour FROM usage").fetchone()
    db.close()
    assert row == (10_000, 200_000, 50_000)


def test_a_budget_keeps_its_first_value_and_counts_what_its_group_committed(state: HubState) -> None:
    alice(state)
    state.apply(lease("a1"))
    state.apply(SaveBudget("s1", "g", 5_000_000))
    state.apply(SaveBudget("s1", "g", 9_000_000))  # a later rent of the group changes nothing
    state.apply(SaveBudget("s1", "h", 1_000_000))
    state.apply(hold("a1", 3_000_000))
    state.apply(capture("a1", 1, 1_000_000))
    state.apply(hold("a2", 1_000_000))
    state.apply(release("a1", 2_000_000))
    state.apply(hold("a9", 7, group="other"))
    assert (state.budget("s1", "g"), state.committed("s1", "g")) == (5_000_000, 2_000_000)
    state.apply(hold("a2", 500, key="hold:a2:1"))  # a top-up
    assert state.committed("s1", "g") == 2_000_500
    assert (state.budget("s1", "h"), state.committed("s1", "h")) == (1_000_000, 0)
    assert (state.budget("s1", "other"), state.committed("s1", "other")) == (None, 7)
    state.apply(EndSession("s1"))
    state.apply(EndLease("a1", 3000.0, None))  # the session goes with its last lease, and its budgets
    assert state.budget("s1", "g") is None


def test_budgets_of_sessions_a_restart_forgets_go(state: HubState) -> None:
    state.apply(SaveBudget("gone", "g", 1))
    state.apply(lease("a1"))
    state.apply(SaveBudget("s1", "g", 2))
    state.load()
    assert (state.budget("gone", "g"), state.budget("s1", "g")) == (None, 2)


def test_reputation_counters_are_saved_replaced_and_loaded(state: HubState) -> None:
    assert state.reputations() == {}
    state.apply(SaveReputation("p1", {"started": 3.0, "lost": 1.0}))
    state.apply(SaveReputation("p2", {}))
    state.apply(SaveReputation("p1", {"started": 4.0, "lost": 1.0, "verdicts_lost": 0.5}))
    with sqlite3.connect(state.where) as db:
        db.execute("INSERT INTO reputation (provider, counters) VALUES ('p3', 'not json')")
    db.close()
    assert state.reputations() == {"p1": {"started": 4.0, "lost": 1.0, "verdicts_lost": 0.5}, "p2": {}}


def test_a_database_of_schema_3_keeps_its_rows_and_gains_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for statements in MIGRATIONS[:3]:
            for statement in statements:
                db.execute(statement)
        db.execute("INSERT INTO schema_version (version) VALUES (3)")
        db.execute("INSERT INTO credentials (role, name, hash, created) VALUES ('requestor', 'alice', '0', 1.0)")
        db.execute("INSERT INTO sessions (id, name, credential, secret) VALUES ('s1', 'alice', 1, ?)", ("01" * 32,))
        db.execute(
            "INSERT INTO activities (id, session, provider, cpus, memory, storage, grp, image, started) "
            "VALUES ('a1', 's1', 'p1', 1, 1024, 0, NULL, NULL, 5.0)"
        )
        db.execute(
            "INSERT INTO usage (activity, requestor, credential, provider, cpus, memory, storage, started, ended, "
            "cpu_seconds) VALUES ('a0', 'alice', 1, 'p1', 1, 1024, 0, 1.0, 2.0, 0.5)"
        )
    db.close()
    with HubState(path) as state:
        assert [c.name for c in state.credentials()] == ["alice"]
        sessions, leases = state.load()
        assert [s.id for s in sessions] == ["s1"]
        assert leases == [LeaseRecord("a1", "s1", "p1", Resources(cpus=1, memory=1024, storage=0), None, None, 5.0)]
        assert [row["activity"] for row in state.usage()] == ["a0"]
        assert state.usage()[0]["price_start"] is None
        state.grant("alice", 1)
        assert state.balance("requestor:1") == 1 and state.check() == []
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    db.close()


def test_a_grant_made_beside_a_running_hub_is_what_the_hub_reads_next(tmp_path: Path) -> None:
    with HubState.in_dir(tmp_path) as hub:
        hub.create("requestor", "alice")
        assert hub.balance("requestor:1") == 0
        with HubState.in_dir(tmp_path) as admin:  # kiln credit grant: another connection, another process
            admin.grant("alice", 3)
        assert hub.balance("requestor:1") == 3
        hub.apply(hold("a1", 2))
        with HubState.in_dir(tmp_path) as admin:
            assert admin.balance("requestor:1") == 1 and admin.check() == []


def test_the_hubs_database_is_the_cores_accounts_and_fails_closed(state: HubState) -> None:
    from kiln.hub.ledger import Accounts

    accounts: Accounts = state  # what the core asks of it (mypy holds the protocol)
    alice(state)
    state.apply(SaveBudget("s1", "g", 5))
    assert accounts.balance("requestor:1") == 10_000_000 and state.budget("s1", "g") == 5
    with sqlite3.connect(state.where) as db:
        db.execute("DROP TABLE ledger_balances")
        db.execute("DROP TABLE budgets")
        db.execute("DROP TABLE ledger_entries")
    db.close()
    # Unreadable: nothing to hold with, a budget with nothing left.
    assert accounts.balance("requestor:1") == 0
    assert state.budget("s1", "g") == 0
    assert state.committed("s1", "g") >= 2**62
