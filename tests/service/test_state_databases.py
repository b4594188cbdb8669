"""The hub's state behaves alike on both its databases: every scenario here runs on a SQLite file
and on a PostgreSQL database of its own (the ``postgres_url`` fixture, a real server).

Then what only several hubs sharing one database do (migration 5, :mod:`kiln.hub.io.seat`): slots,
heartbeats by the database's clock, a provider claimed by one live hub at a time, a dead hub's
sessions and leases adopted once, even by two hubs racing for them. A hub is aged by moving its
``seen`` back in the database rather than by sleeping through :data:`DEAD_AFTER`.
(The unit tier's tests of the state, SQLite only: tests/unit/test_hub_state.py, test_hub_books.py.)
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from kiln.hub.io.sql import Database, open_database
from kiln.hub.io.state import DAY, DEAD_AFTER, FILE_NAME, MAX_HUBS, MIGRATIONS, SCHEMA_VERSION, HubState
from kiln.hub.ledger import HUB, MINT, Post, hold_account, provider_account, requestor_account
from kiln.hub.records import (
    Adopted,
    Destroying,
    EndLease,
    EndSession,
    LeaseRecord,
    SaveBudget,
    SaveLease,
    SaveOffer,
    SaveReputation,
    SaveSession,
    SessionRecord,
)
from kiln.protocol.errors import KilnError, UsageError
from kiln.protocol.messages import Price, Resources

PRICE = Price.micro(start=10_000, cpu_hour=200_000, env_hour=50_000)
ONE = Resources(cpus=1, memory=2**30, storage=0)
ALICE = SessionRecord("s1", "alice", 1, b"\x01" * 32)
BOB = SessionRecord("s2", "bob", None, b"\x02" * 32)

Where = Path | str
Open = Callable[..., HubState]
T = TypeVar("T")
X = TypeVar("X")


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    """Where a hub's state lives: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / FILE_NAME
    url: str = request.getfixturevalue("postgres_url")
    return url


class Clock:
    """The time the state stamps credentials, grants and roll-ups with: moved by the test."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def opened(where: Where, clock: Clock) -> Iterator[Open]:
    """Opens the state at ``where`` as a hub (``hub=``) would; every state opened is closed after the test."""
    states: list[HubState] = []

    def open_(hub: str = "hub") -> HubState:
        states.append(HubState(where, clock=clock, hub=hub))
        return states[-1]

    yield open_
    for state in states:
        state.close()


@pytest.fixture
def state(opened: Open) -> HubState:
    return opened()


def lease(activity: str, session: SessionRecord = ALICE, *, provider: str = "p1", started: float = 1500.0) -> SaveLease:
    record = LeaseRecord(activity, session.id, provider, ONE, "g", "sha256:ab", started, PRICE, 600.0)
    return SaveLease(record, session)


def hold(activity: str, amount: int, *, key: str | None = None) -> Post:
    return Post(
        key=key or f"hold:{activity}",
        kind="hold",
        time=2000.0,
        entries=((requestor_account(1), -amount), (hold_account(activity), amount)),
        activity=activity,
        session="s1",
        group="g",
    )


def capture(activity: str, seq: int, amount: int, fee: int) -> Post:
    return Post(
        key=f"capture:{activity}:{seq}",
        kind="capture",
        time=2060.0,
        entries=((hold_account(activity), -amount), (provider_account("p1"), amount - fee), (HUB, fee)),
        activity=activity,
        seconds=60.0,
        cpu_seconds=12.5,
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


def execute(db: Database, sql: str, args: tuple[object, ...] = ()) -> None:
    """One statement of the test's own, committed (the state's connection, ``?`` marks in both dialects)."""
    with db.write():
        db.execute(sql, args)


# --- one hub: the same behaviour on both databases ----------------------------------------------


def test_a_fresh_database_is_migrated_to_the_latest_schema_and_a_newer_one_is_refused(
    where: Where, opened: Open
) -> None:
    state = opened()
    rows = state.database.execute("SELECT version FROM schema_version").fetchall()
    assert [tuple(row) for row in rows] == [(SCHEMA_VERSION,)]
    tables = {"credentials", "sessions", "activities", "usage", "usage_days", "ledger_transactions"}
    tables |= {"ledger_entries", "ledger_balances", "budgets", "reputation", "hubs", "providers"}
    for table in sorted(tables):
        assert state.database.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
    opened().close()  # opening it again migrates nothing
    execute(state.database, "UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(UsageError, match="newer than this kiln's"):
        HubState(where)


def test_credentials_are_created_found_revoked_and_named(state: HubState, clock: Clock) -> None:
    assert not state.required()
    provider, token = state.create("provider", "p1")
    assert state.required() and token.startswith("kiln_")
    assert state.find(token) == provider.credential and state.find(token + "x") is None
    assert state.bound("p1") and not state.bound("p2")
    clock.now = 2000.0
    alice, alice_token = state.create("requestor", "alice")
    admin, admin_token = state.create("admin")
    assert [(c.id, c.role, c.name, c.created) for c in state.credentials()] == [
        (1, "provider", "p1", 1000.0),
        (2, "requestor", "alice", 2000.0),
        (3, "admin", None, 2000.0),
    ]
    assert state.tenant("alice") == alice.credential == state.tenant("#2")
    assert state.tenant("p1") is None and state.tenant("#1") is None and state.tenant("#9") is None
    assert state.names({1, 2, 3, 4}) == {1: "p1", 2: "alice"}
    with pytest.raises(UsageError, match="named 'alice' already"):
        state.create("requestor", "alice")
    clock.now = 3000.0
    assert state.revoke("alice").revoked == 3000.0
    assert state.revoke("1").name == "p1"
    with pytest.raises(UsageError, match="revoked already"):
        state.revoke("1")
    with pytest.raises(UsageError, match="no credential"):
        state.revoke("nobody")
    assert state.find(alice_token) is None and state.find(token) is None
    assert state.bound("p1"), "a revoked provider credential keeps its name bound"
    assert state.revoked(range(1, 1200)) == {1, 2}
    again, again_token = state.create("requestor", "alice")  # the name is free again
    # (PostgreSQL's identity is not rolled back with the refused insert: ids may skip, never repeat.)
    assert again.id > 3 and state.find(again_token) == again.credential
    assert state.find(admin_token) == admin.credential


def test_every_change_is_applied_and_a_restart_loads_what_is_left(where: Where, opened: Open, clock: Clock) -> None:
    state = opened()
    state.apply(SaveSession(ALICE))
    state.apply(lease("a1"))
    state.apply(lease("a2"))
    state.apply(lease("a3", BOB, provider="p2"))
    state.apply(SaveLease(LeaseRecord("a4", "s2", "p2", ONE, None, None, 1600.0), BOB))  # free, no group
    state.apply(lease("a5"))
    state.apply(SaveBudget("s1", "g", 5_000_000))
    state.apply(SaveBudget("s1", "g", 9_000_000))  # the first stands
    state.apply(SaveBudget("s2", "g", 1))
    state.apply(SaveReputation("p1", {"started": 3.0}))
    state.apply(SaveReputation("p1", {"started": 4.0, "lost": 0.5}))
    state.apply(Destroying("a2"))
    state.apply(EndLease("a1", 2500.0, 1.5))
    state.apply(EndSession("s2"))  # bob's leases are no one's now
    state.close()

    clock.now = 5000.0
    again = opened()
    sessions, leases = again.load()
    assert sessions == [ALICE]
    assert leases == [lease("a5").lease]  # a2 was being destroyed: forgotten, its usage ends now
    assert again.budget("s1", "g") == 5_000_000
    assert again.budget("s2", "g") is None, "bob's session ended: it went with its leases, and its budget"
    assert again.reputations() == {"p1": {"started": 4.0, "lost": 0.5}}
    usage = {row["activity"]: row for row in again.usage()}
    assert sorted(usage) == ["a1", "a2", "a3", "a4"]
    assert (usage["a1"]["ended"], usage["a1"]["cpu_seconds"], usage["a1"]["requestor"]) == (2500.0, 1.5, "alice")
    assert (usage["a2"]["ended"], usage["a2"]["cpu_seconds"]) == (5000.0, None)
    assert (usage["a3"]["requestor"], usage["a3"]["credential"], usage["a3"]["ended"]) == ("bob", None, 5000.0)
    assert (usage["a1"]["price_start"], usage["a4"]["price_start"]) == (10_000, None)
    again.apply(EndSession("s1"))
    again.apply(EndLease("a5", 5100.0, None))
    assert again.load() == ([], []) and again.budget("s1", "g") is None


def test_a_lease_a_restart_hands_back_keeps_every_field(opened: Open) -> None:
    state = opened()
    state.apply(lease("a1"))
    state.apply(
        SaveLease(LeaseRecord("a2", "s1", "p2", Resources(cpus=0.5, memory=1, storage=7), None, None, 9.25), ALICE)
    )
    state.close()
    sessions, leases = opened().load()
    assert sessions == [ALICE]
    assert leases == [
        lease("a1").lease,
        LeaseRecord("a2", "s1", "p2", Resources(cpus=0.5, memory=1, storage=7), None, None, 9.25),
    ]


def test_usage_is_rolled_up_by_whole_utc_days_and_its_totals_stay(state: HubState, clock: Clock) -> None:
    # Ends just before, at, and just after midnight; late in a day (where rounding would move it on).
    ends = [DAY - 0.5, DAY, DAY + 0.5, 2 * DAY - 0.25, 3 * DAY - 1]
    for n, ended in enumerate(ends):
        session = ALICE if n % 2 == 0 else BOB
        state.apply(lease(f"a{n}", session, provider=f"p{n % 2}", started=ended - 3600))
        state.apply(EndLease(f"a{n}", ended, 2.0))
    before = state.usage_totals(), state.usage_totals("provider")
    assert [(t.who, t.credential, t.activities) for t in before[0]] == [("alice", 1, 3), ("bob", None, 2)]
    assert [(t.who, t.credential, t.activities) for t in before[1]] == [("p0", None, 3), ("p1", None, 2)]
    assert before[0][0].cpu_seconds_rented == 3 * 3600.0 and before[0][0].cpu_seconds_used == 6.0
    assert before[0][0].memory_byte_seconds == 3 * 3600.0 * 2**30

    clock.now = 2 * DAY + 100  # a day of retention, counted in whole days: only day 0 goes
    assert state.roll_up(1) == 1
    clock.now = 3 * DAY  # exactly midnight: days 0 and 1 (1 day back, whole days) are past
    assert state.roll_up(1) == 3
    days = state.usage_days()
    assert [(d["day"], d["requestor"], d["provider"], d["activities"]) for d in days] == [
        (0, "alice", "p0", 1),
        (DAY, "alice", "p0", 1),
        (DAY, "bob", "p1", 2),
    ]
    assert all(isinstance(d["day"], int) and isinstance(d["activities"], int) for d in days)
    assert days[2]["cpu_seconds_rented"] == 2 * 3600.0 and days[2]["credential"] is None
    assert [u["activity"] for u in state.usage()] == ["a4"]
    assert (state.usage_totals(), state.usage_totals("provider")) == before
    assert state.roll_up(1) == 0, "nothing twice"
    clock.now = 10 * DAY
    assert state.roll_up(0) == 1 and state.usage() == []
    assert (state.usage_totals(), state.usage_totals("provider")) == before


def test_the_ledger_posts_once_holds_captures_releases_and_checks(state: HubState) -> None:
    state.create("requestor", "alice")
    granted = state.grant("alice", 10_000_000)
    assert granted.entries == ((MINT, -10_000_000), (requestor_account(1), 10_000_000))
    account = requestor_account(1)
    state.apply(lease("a1"))
    state.apply(hold("a1", 3_000_000))
    state.apply(hold("a1", 5_000_000))  # a replay of the key: nothing moves
    state.apply(capture("a1", 1, 1_000_000, fee=50_000))
    state.apply(hold("a1", 1000, key="hold:a1:2"))  # a top-up
    assert (state.balance(account), state.held(account), state.spent(account)) == (6_999_000, 2_001_000, 1_000_000)
    state.apply(release("a1", 2_001_000))
    assert (state.balance(account), state.held(account), state.spent(account)) == (9_000_000, 0, 1_000_000)
    assert (state.balance(provider_account("p1")), state.balance(HUB)) == (950_000, 50_000)
    assert state.committed("s1", "g") == 1_000_000 and state.budget("s1", "g") is None
    listed = state.transactions()
    assert [t.kind for t in listed] == ["release", "hold", "capture", "hold", "grant"]
    ids = [t.id for t in listed]  # newest first (PostgreSQL's ids skip the one a replay drew)
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 5
    assert [(e.account, e.amount) for e in listed[2].entries] == [
        ("hold:a1", -1_000_000),
        ("provider:p1", 950_000),
        ("hub", 50_000),
    ]
    assert [t.id for t in state.transactions(account, limit=2)] == ids[:2]
    assert state.count_transactions(account) == 5 and state.count_transactions(provider_account("p1")) == 1
    assert state.count_transactions(activity="a1") == 4
    assert state.ledger_counts() == (5, 5) and state.check() == []
    with pytest.raises(UsageError, match="no live requestor credential"):
        state.grant("bob", 1)
    with pytest.raises(KilnError, match="out of range"):
        state.apply(Post(key="k", kind="grant", time=0.0, entries=((MINT, -(2**63)), (account, 2**63))))
    assert state.ledger_counts() == (5, 5)


def test_the_ledger_check_finds_what_was_tampered_with(state: HubState) -> None:
    state.create("requestor", "alice")
    state.grant("alice", 10_000_000)
    state.apply(hold("a1", 3_000_000))
    db = state.database
    execute(db, "UPDATE ledger_entries SET amount = 4000000 WHERE account = ?", (hold_account("a1"),))
    assert state.check() == [
        "transaction 2 (hold:a1) does not balance: its entries sum to 1000000",
        "account hold:a1: its cached balance is 3000000, its entries sum to 4000000",
    ]
    execute(db, "UPDATE ledger_entries SET amount = 3000000 WHERE account = ?", (hold_account("a1"),))
    execute(db, "DELETE FROM ledger_balances WHERE account = ?", (MINT,))
    execute(db, "UPDATE ledger_balances SET balance = -1 WHERE account = ?", (hold_account("a1"),))
    assert state.check() == [
        "account hold:a1: its cached balance is -1, its entries sum to 3000000",
        "account mint has entries summing to -10000000 but no cached balance",
        "account hold:a1 is below zero: -1",
    ]


def test_meters_are_those_of_live_leases_and_of_holds_left_to_settle(opened: Open) -> None:
    state = opened()
    state.create("requestor", "alice")
    state.grant("alice", 10_000_000)
    state.apply(lease("a1"))
    state.apply(hold("a1", 3_000_000))
    state.apply(capture("a1", 1, 100_000, fee=0))
    state.apply(lease("a2"))
    state.apply(hold("a2", 500_000))
    state.apply(EndLease("a2", 1700.0, 42.5))  # ended, its hold not settled
    state.close()
    again = opened()
    again.load()
    a1, a2 = again.meters()
    assert (a1.activity, a1.held, a1.captured, a1.seq, a1.ended, a1.provider) == (
        "a1",
        3_000_000,
        100_000,
        1,
        None,
        "p1",
    )
    assert (a1.cpu_seconds, a1.seconds, a1.price, a1.max_duration) == (12.5, 60.0, PRICE, 600.0)
    assert (a2.activity, a2.held, a2.ended, a2.cpu_seconds) == ("a2", 500_000, 1700.0, 42.5)
    assert [m.activity for m in again.meters(["a2"])] == ["a2"] and again.meters([]) == []


# --- several hubs on one database (migration 5) ---------------------------------------------------


def age(state: HubState, hub: str, seconds: float = DEAD_AFTER + 1) -> None:
    """Hub ``hub`` last beat ``seconds`` ago (by the database's clock)."""
    execute(state.database, "UPDATE hubs SET seen = seen - ? WHERE id = ?", (seconds, hub))


def test_hubs_join_with_distinct_slots_and_a_silent_one_is_dead(opened: Open) -> None:
    a, b = opened("aaa"), opened("bbb")
    assert (a.join("ws://127.0.0.1:1", "secret-a"), b.join("ws://127.0.0.1:2", "secret-b")) == (1, 2)
    assert [(hub, address) for hub, address, _ in a.hubs()] == [
        ("aaa", "ws://127.0.0.1:1"),
        ("bbb", "ws://127.0.0.1:2"),
    ]
    assert all(0 <= ago < 1 for _, _, ago in b.hubs())
    assert (b.hub_of("secret-a"), a.hub_of("secret-b"), a.hub_of("secret-c")) == (("aaa", 1), ("bbb", 2), None)
    age(a, "aaa")
    assert [hub for hub, _, _ in b.hubs()] == ["bbb"] and b.hub_of("secret-a") is None
    assert not a.beat(), "it was taken for dead"
    assert b.beat() and [hub for hub, _, _ in b.hubs()] == ["aaa", "bbb"]
    age(a, "aaa")
    c = opened("ccc")
    assert c.join("ws://127.0.0.1:3", "secret-c") == 1, "a dead hub's slot is free again"
    assert not a.beat()  # too late: its row went with its slot
    assert [hub for hub, _, _ in c.hubs()] == ["bbb", "ccc"]
    assert a.join("ws://127.0.0.1:1", "secret-a2") == 3 and a.hub_of("secret-a2") == ("aaa", 3)
    age(a, "bbb", DEAD_AFTER - 2)
    assert b.beat()
    assert [ago < 1 for _, _, ago in a.hubs()] == [True, True, True]
    b.leave()
    assert [hub for hub, _, _ in a.hubs()] == ["aaa", "ccc"]


def test_no_more_hubs_join_than_there_are_slots(opened: Open) -> None:
    first = opened("h1")
    assert first.join("ws://127.0.0.1:1", "s1") == 1
    for slot in range(2, MAX_HUBS + 1):
        execute(
            first.database,
            f"INSERT INTO hubs (id, address, secret, slot, started, seen) VALUES (?, 'ws://x', 'x', ?, 0, "
            f"{first.database.now})",
            (f"h{slot}", slot),
        )
    late = opened("late")
    with pytest.raises(KilnError, match=f"{MAX_HUBS} hubs share"):
        late.join("ws://127.0.0.1:9", "s9")
    age(first, "h7")
    assert late.join("ws://127.0.0.1:9", "s9") == 7


def test_a_provider_is_claimed_by_one_live_hub_at_a_time(opened: Open) -> None:
    a, b = opened("aaa"), opened("bbb")
    a.join("ws://127.0.0.1:1", "sa")
    slot = b.join("ws://127.0.0.1:2", "sb")
    assert a.claim_provider("p1") and a.claim_provider("p1"), "its own reconnect"
    assert not b.claim_provider("p1")
    a.release_provider("p1")
    assert b.claim_provider("p1") and not a.claim_provider("p1")
    b.release_provider("p9")  # none of its own: nothing
    age(a, "bbb")
    assert a.claim_provider("p1"), "taken from a dead hub"
    assert b.claim_provider("p2")
    b.join("ws://127.0.0.1:2", "sb", slot)  # alive, taken for dead: joining again, it keeps its providers
    assert not b.claim_provider("p1")
    a.leave()  # what it held is anyone's at once
    assert b.claim_provider("p1")
    rows = b.database.execute("SELECT name, hub FROM providers ORDER BY name").fetchall()
    assert [tuple(row) for row in rows] == [("p1", "bbb"), ("p2", "bbb")]


def race(hubs: list[X], call: Callable[[X], T]) -> list[T]:
    """``call`` on each hub at once, a thread each (each hub its own connection, as hubs in their
    own processes have): what each returned."""
    barrier = threading.Barrier(len(hubs))
    results: dict[int, T] = {}
    errors: list[BaseException] = []

    def run(n: int) -> None:
        barrier.wait()
        try:
            results[n] = call(hubs[n])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(hubs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return [results[n] for n in range(len(hubs))]


def joined(opened: Open, *ids: str) -> list[HubState]:
    hubs = [opened(hub) for hub in ids]
    for n, hub in enumerate(hubs):
        hub.join(f"ws://127.0.0.1:{n + 1}", f"secret-{hub.hub}")
    return hubs


def test_hubs_racing_for_providers_claim_each_once(opened: Open) -> None:
    hubs = joined(opened, "h1", "h2", "h3")
    names = [f"p{n}" for n in range(30)]
    claimed = race(hubs, lambda hub: {name for name in names if hub.claim_provider(name)})
    assert sorted(name for mine in claimed for name in mine) == sorted(names), "each claimed by one hub"
    held = dict(hubs[0].database.execute("SELECT name, hub FROM providers").fetchall())
    assert all(held[name] == hub.hub for hub, mine in zip(hubs, claimed, strict=True) for name in mine)


def sessions_on(hub: HubState, n: int, *, first: int = 0) -> list[SessionRecord]:
    """``n`` sessions of ``hub``, each holding two leases: ``<session>-x`` on p1, ``<session>-y`` on p2."""
    made = []
    for k in range(first, first + n):
        session = SessionRecord(f"{hub.hub}-s{k}", "alice", 1, bytes([k]) * 32)
        hub.apply(lease(f"{session.id}-x", session, provider="p1"))
        hub.apply(lease(f"{session.id}-y", session, provider="p2"))
        made.append(session)
    return made


def holders(state: HubState) -> dict[str, str | None]:
    """Each session's hub, as the database says."""
    rows = state.database.execute("SELECT id, hub FROM sessions").fetchall()
    return {str(id_): None if hub is None else str(hub) for id_, hub in rows}


def test_a_dead_hubs_sessions_are_adopted_and_a_live_ones_never(opened: Open) -> None:
    a, b, c = joined(opened, "aaa", "bbb", "ccc")
    [s0, s1, s2] = sessions_on(a, 3)
    a.create("requestor", "alice")
    a.grant("alice", 1_000_000)
    a.apply(
        Post(
            "hold:aaa-s0-x",
            "hold",
            2000.0,
            ((requestor_account(1), -500), (hold_account("aaa-s0-x"), 500)),
            "aaa-s0-x",
            "aaa-s0",
            "g",
        )
    )
    a.apply(Destroying("aaa-s2-y"))
    assert b.adopt_session(s0.secret) == Adopted([], [], [], frozenset({"aaa-s0"})), "its hub is alive"
    assert b.adopt_leases("p1", ["aaa-s1-x", "stray"]) == Adopted([], [], [], frozenset({"aaa-s1-x"}))
    assert b.adopt_leases("p1", ["aaa-s1-y"]) == Adopted([], [], []), "it runs on p2: p1's is a stray"
    assert b.load() == ([], []), "another hub's sessions are its own"
    assert holders(b) == {s.id: "aaa" for s in (s0, s1, s2)}
    assert [m.activity for m in a.meters()] == ["aaa-s0-x"]

    age(b, "aaa")
    adopted = b.adopt_session(s0.secret)
    assert adopted is not None
    assert adopted.sessions == [s0] and [x.id for x in adopted.leases] == ["aaa-s0-x", "aaa-s0-y"]
    assert [(m.activity, m.held) for m in adopted.meters] == [("aaa-s0-x", 500)]
    assert b.adopt_session(s0.secret) is None, "its own already"
    assert c.adopt_session(s0.secret) == Adopted([], [], [], frozenset({"aaa-s0"})), "adopted once"
    assert b.adopt_session(b"\xff" * 32) is None
    assert c.adopt_leases("p1", ["aaa-s1-y", "stray"]).sessions == [], "aaa-s1-y runs on p2, not p1"
    by_provider = c.adopt_leases("p2", ["aaa-s1-y", "aaa-s2-y", "stray"])
    assert [s.id for s in by_provider.sessions] == ["aaa-s1", "aaa-s2"]
    assert [x.id for x in by_provider.leases] == ["aaa-s1-x", "aaa-s1-y", "aaa-s2-x", "aaa-s2-y"]
    assert by_provider.meters == []
    assert holders(a) == {"aaa-s0": "bbb", "aaa-s1": "ccc", "aaa-s2": "ccc"}
    assert [m.activity for m in b.meters()] == ["aaa-s0-x"] and c.meters() == []

    # The dead hub comes back (its hub id kept in its data folder): what was adopted stays adopted.
    a.join("ws://127.0.0.1:1", "secret-aaa")
    assert a.load() == ([], []) and a.meters() == []
    assert b.load() == ([s0], adopted.leases)


def test_a_session_is_adopted_once_when_hubs_race_for_it(opened: Open) -> None:
    dead, *live = joined(opened, "dead", "h1", "h2", "h3")
    sessions = sessions_on(dead, 20)
    age(dead, "dead")
    adopted = race(
        live, lambda hub: [a.sessions[0].id for s in sessions if (a := hub.adopt_session(s.secret)) and a.sessions]
    )
    assert sorted(id_ for mine in adopted for id_ in mine) == sorted(s.id for s in sessions)
    by_hub = holders(dead)
    assert all(by_hub[id_] == hub.hub for hub, mine in zip(live, adopted, strict=True) for id_ in mine)


def test_leases_are_adopted_once_when_hubs_race_for_them(opened: Open) -> None:
    dead, *live = joined(opened, "dead", "h1", "h2", "h3")
    sessions = sessions_on(dead, 20)
    age(dead, "dead")
    leases = [f"{s.id}-{end}" for s in sessions for end in "xy"]
    provider = {"x": "p1", "y": "p2"}

    def adopt(hub: HubState) -> list[str]:
        out: list[str] = []
        for end in "xy":  # each hub asks for every lease, as each of the two providers reaches it
            got = hub.adopt_leases(provider[end], [x for x in leases if x.endswith(end)])
            out += [x.id for x in got.leases]
        return out

    adopted = race(live, adopt)
    assert sorted(x for mine in adopted for x in mine) == sorted(leases), "each lease adopted once, with its session"


def test_an_unreadable_database_admits_no_one_and_holds_nothing(state: HubState) -> None:
    _, token = state.create("requestor", "alice")
    state.grant("alice", 5)
    state.apply(SaveBudget("s1", "g", 5))
    for table in ("credentials", "ledger_balances", "budgets", "ledger_entries"):
        execute(state.database, f"DROP TABLE {table}")
    assert state.find(token) is None and state.required() and state.bound("anything")
    assert state.revoked([1]) == set() and state.tenant("alice") is None
    assert state.balance(requestor_account(1)) == 0 and state.budget("s1", "g") == 0
    assert state.committed("s1", "g") >= 2**62


def test_a_hub_whose_connection_was_cut_reconnects_at_its_next_statement(postgres_url: str) -> None:
    import psycopg

    with HubState(postgres_url, hub="aaa") as state:
        _, token = state.create("requestor", "alice")
        state.join("ws://127.0.0.1:1", "secret")
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            cut = (
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database()"
            )
            admin.execute(cut)
            assert state.find(token) is None, "the statement that finds the connection lost fails (closed)"
            assert state.find(token) is not None
            admin.execute(cut)
            with pytest.raises(state.errors):
                state.beat()
            state.beat()
            state.create("requestor", "bob")
        assert [c.name for c in state.credentials()] == ["alice", "bob"] and state.hub_of("secret") == ("aaa", 1)


def test_a_commit_and_a_read_on_each_database(where: Where, opened: Open) -> None:
    """Prints (never asserts) the medians of what a hub asks its database most: a commit (a
    credential saved), an indexed read (a token found), a heartbeat and a provider claimed."""
    [state] = joined(opened, "aaa")
    tokens: list[str] = []

    def median(call: Callable[[int], object], n: int = 300) -> float:
        took = []
        for i in range(n):
            start = time.perf_counter()
            call(i)
            took.append(time.perf_counter() - start)
        return statistics.median(took) * 1000

    commit = median(lambda i: tokens.append(state.create("requestor", f"r{i}")[1]))
    read = median(lambda i: state.find(tokens[i]))
    beat = median(lambda i: state.beat())
    claim = median(lambda i: state.claim_provider(f"p{i}"))
    name = "SQLite" if isinstance(where, Path) else "PostgreSQL"
    print(
        f"\n{name}: a commit {commit:.3f} ms, a read {read:.3f} ms, a heartbeat {beat:.3f} ms, "
        f"a provider claimed {claim:.3f} ms (medians of 300)"
    )


def test_hubs_opening_and_joining_a_fresh_database_at_once_migrate_once_and_take_distinct_slots(
    where: Where, clock: Clock
) -> None:
    def start(n: int) -> int:
        with HubState(where, clock=clock, hub=f"h{n}") as state:
            return state.join(f"ws://127.0.0.1:{n}", f"s{n}")

    slots = race([1, 2, 3, 4], start)
    assert sorted(slots) == [1, 2, 3, 4]
    with HubState(where) as state:
        rows = state.database.execute("SELECT version FROM schema_version").fetchall()
        assert [tuple(row) for row in rows] == [(SCHEMA_VERSION,)]
        assert [hub for hub, _, _ in state.hubs()] == ["h1", "h2", "h3", "h4"]


def test_a_database_of_schema_4_keeps_its_sessions_for_the_hub_that_opens_it_first(where: Where, clock: Clock) -> None:
    old = open_database(where)
    with old.write() as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for statements in MIGRATIONS[:4]:
            for statement in statements:
                db.execute(db.ddl(statement))
        db.execute("INSERT INTO schema_version (version) VALUES (4)")
        db.execute("INSERT INTO sessions (id, name, credential, secret) VALUES ('s1', 'alice', 1, ?)", ("01" * 32,))
        db.execute(
            "INSERT INTO activities (id, session, provider, cpus, memory, storage, started) "
            "VALUES ('a1', 's1', 'p1', 1, 1073741824, 0, 1500)"
        )
    old.close()
    with HubState(where, clock=clock, hub="aaa") as first, HubState(where, clock=clock, hub="bbb") as second:
        assert holders(first) == {"s1": None}  # (written before hubs had ids)
        sessions, leases = first.load()
        assert sessions == [ALICE] and leases == [LeaseRecord("a1", "s1", "p1", ONE, None, None, 1500.0)]
        assert second.load() == ([], []) and holders(second) == {"s1": "aaa"}


def offered(hub: HubState, provider: str, cpus: float) -> None:
    """``hub`` holds ``provider``, which shares ``cpus`` CPUs and 1 GiB a CPU."""
    assert hub.claim_provider(provider)
    resources = Resources(cpus=cpus, memory=int(cpus) * 2**30, storage=0)
    hub.apply(SaveOffer(provider, resources, f'{{"cpus": {cpus}}}'))


def test_what_a_provider_shares_is_seen_by_the_other_hubs(opened: Open) -> None:
    a, b = joined(opened, "aaa", "bbb")
    since, changed = b.providers_changed(0.0)
    assert changed == []
    offered(a, "p1", 4)
    b.apply(SaveOffer("p1", ONE, "{}"))  # not b's: nothing
    since, changed = b.providers_changed(since)
    assert [(row.name, row.hub, row.offer, row.elsewhere.cpus) for row in changed] == [("p1", "aaa", '{"cpus": 4}', 0)]
    assert a.reserve("x", "s1", "p1", ONE)  # a's: what b sees of p1 held elsewhere, not what a sees
    assert [row.elsewhere for row in b.providers_changed(since)[1]] == [ONE]
    assert [row.elsewhere.cpus for row in a.providers_changed(since)[1]] == [0]
    a.unreserve("x")
    a.release_provider("p1")
    assert [(row.name, row.hub, row.elsewhere.cpus) for row in b.providers_changed(since)[1]] == [("p1", None, 0)]
    execute(a.database, "UPDATE providers SET changed = changed - 60")
    assert b.providers_changed(since)[1] == [], "only what changed since (less a little overlap)"


def test_capacity_is_reserved_once_when_hubs_race_for_it(opened: Open) -> None:
    owner, *others = joined(opened, "h0", "h1", "h2", "h3")
    offered(owner, "p1", 4)
    hubs = [owner, *others]

    def rent(hub: HubState) -> list[str]:
        tried = [f"{hub.hub}-r{n}" for n in range(3)]
        return [x for x in tried if hub.reserve(x, "s1", "p1", ONE)]

    reserved = race(hubs, rent)
    won = sorted(x for mine in reserved for x in mine)
    assert len(won) == 4, f"4 CPUs sold once each, not {won}"
    assert not owner.reserve(f"{owner.hub}-more", "s1", "p1", ONE) and not owner.reserve("x", "s1", "nobody", ONE)
    holder = next(hub for hub, mine in zip(hubs, reserved, strict=True) if mine)
    gone = next(x for mine in reserved for x in mine if x.startswith(holder.hub))
    holder.unreserve(gone)
    assert owner.reserve(f"{owner.hub}-more", "s1", "p1", ONE)
    assert not owner.reserve(f"{owner.hub}-two-more", "s1", "p1", Resources(cpus=0.5, memory=1, storage=0)), (
        "no CPU left"
    )

    # A reservation becomes a lease; those a hub reserved but never created go at its restart.
    kept = next(x for x in won if x != gone)
    keeper = next(hub for hub in hubs if kept.startswith(hub.hub))
    keeper.apply(lease(kept, provider="p1"))
    pending = "SELECT id FROM activities WHERE pending ORDER BY id"
    before = {str(row[0]) for row in owner.database.execute(pending).fetchall()}
    assert kept not in before and len(before) == 3
    keeper.load()
    after = {str(row[0]) for row in owner.database.execute(pending).fetchall()}
    assert after == {x for x in before if not x.startswith(keeper.hub)}
    assert keeper.load()[1] == [lease(kept, provider="p1").lease], "the others' reservations are no leases"


def test_what_a_dead_hub_reserved_and_never_created_is_free_again(opened: Open) -> None:
    owner, dead = joined(opened, "own", "dead")
    offered(owner, "p1", 2)
    [session] = sessions_on(dead, 1)  # its leases: 2 CPUs on p1 and p2, the first of p1's two
    assert dead.reserve("never-created", session.id, "p1", ONE)
    assert not owner.reserve("mine", "s9", "p1", ONE), "p1's 2 CPUs are taken"
    age(owner, "dead")
    adopted = owner.adopt_session(session.secret)
    assert adopted is not None and [x.id for x in adopted.leases] == ["dead-s0-x", "dead-s0-y"], "not the reservation"
    assert owner.reserve("mine", "s9", "p1", ONE), "what the dead hub reserved is free again"
    assert not owner.reserve("more", "s9", "p1", ONE)


def test_hubs_rolling_up_at_once_roll_each_row_up_once(opened: Open, clock: Clock) -> None:
    hubs = [opened(f"h{n}") for n in range(3)]
    writer = hubs[0]
    for day in range(20):
        for k in range(50):
            activity = f"a{day}-{k}"
            writer.apply(lease(activity, started=day * DAY + k))
            writer.apply(EndLease(activity, day * DAY + k + 3600, 1.0))
    before = writer.usage_totals()
    clock.now = 30 * DAY
    gone = race(hubs, lambda hub: hub.roll_up(1))  # each hub rolls up every hour
    assert sum(gone) == 1000 and writer.usage() == []
    assert writer.usage_totals() == before, "no day counted twice"


def test_hubs_starting_at_once_record_a_forgotten_lease_once(opened: Open) -> None:
    hubs = [opened(f"h{n}") for n in range(3)]
    for n in range(200):
        hubs[0].apply(lease(f"a{n}", SessionRecord(f"s{n}", "alice", 1, bytes([n % 256]) * 32)))
    execute(hubs[0].database, "DELETE FROM sessions")  # leases no session holds: nobody's, whoever wrote them
    race(hubs, lambda hub: hub.load())
    assert len(hubs[0].usage()) == 200, "each lease forgotten once, its usage recorded once"
