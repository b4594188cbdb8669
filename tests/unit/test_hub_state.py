"""The hub's SQLite state: credentials created, listed and revoked, only hashes kept, WAL."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.hub.access import Credential
from kiln.hub.io.state import FILE_NAME, SCHEMA_VERSION, HubState
from kiln.protocol.errors import KilnError, UsageError


@pytest.fixture
def state(tmp_path: Path) -> Iterator[HubState]:
    with HubState.in_dir(tmp_path) as opened:
        yield opened


def test_a_credential_is_created_found_listed_and_revoked(tmp_path: Path) -> None:
    times = iter([100.0, 200.0, 300.0, 400.0])
    with HubState.in_dir(tmp_path / "new" / "dir") as state:
        assert not state.required()
        record, token = state.create("provider", "p1")
        assert token.startswith("kiln_") and len(token) == 5 + 43
        assert state.required()
        assert state.find(token) == record.credential == Credential(record.id, "provider", "p1")
        assert state.find(token + "x") is None
        assert state.bound("p1") and not state.bound("p2")
        admin, admin_token = state.create("admin")
        assert admin_token != token
    state = HubState(tmp_path / "new" / "dir" / FILE_NAME, clock=lambda: next(times))
    _, requestor_token = state.create("requestor", "alice")
    assert [(c.role, c.name, c.revoked) for c in state.credentials()] == [
        ("provider", "p1", None),
        ("admin", None, None),
        ("requestor", "alice", None),
    ]
    assert state.credentials()[2].created == 100.0
    assert state.revoke("alice").revoked == 200.0
    assert state.revoke(str(record.id)).name == "p1"
    assert state.find(requestor_token) is None and state.find(token) is None
    assert state.find(admin_token) == admin.credential
    assert state.revoked([record.id, admin.id, 99]) == {record.id}
    assert state.bound("p1")  # a revoked provider credential keeps its name bound
    state.revoke(str(admin.id))
    assert state.required()  # revoking every credential does not open the hub
    state.close()


def test_only_hashes_are_stored_in_a_private_file(state: HubState) -> None:
    _, token = state.create("requestor", "r")
    state.close()
    assert stat.S_IMODE(Path(state.where).stat().st_mode) == 0o600
    with sqlite3.connect(state.where) as db:
        [(stored,)] = db.execute("SELECT hash FROM credentials").fetchall()
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    db.close()
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    assert token.encode() not in Path(state.where).read_bytes()


def test_bad_requests_are_usage_errors(state: HubState) -> None:
    with pytest.raises(UsageError, match="give --name"):
        state.create("provider")
    with pytest.raises(UsageError, match="role is one of"):
        state.create("root")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="not a name"):
        state.create("requestor", "a\nb")
    state.create("provider", "p1")
    with pytest.raises(UsageError, match="named 'p1' already"):
        state.create("requestor", "p1")
    with pytest.raises(UsageError, match="no credential"):
        state.revoke("p9")
    with pytest.raises(UsageError, match="no credential"):
        state.revoke("7")
    state.revoke("p1")
    with pytest.raises(UsageError, match="revoked already"):
        state.revoke("1")
    record, token = state.create("provider", "p1")  # a name is free again once its credential is revoked
    assert state.find(token) == record.credential
    assert state.revoke("p1").id == record.id


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    HubState.in_dir(tmp_path).close()
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.close()
    with pytest.raises(UsageError, match="newer than this kiln's"):
        HubState.in_dir(tmp_path)
    (tmp_path / "hub.db-dir").mkdir()
    with pytest.raises(KilnError, match="cannot open"):
        HubState(tmp_path / "hub.db-dir")


def test_an_unreadable_database_admits_no_one(state: HubState) -> None:
    _, token = state.create("requestor")
    with sqlite3.connect(state.where) as db:
        db.execute("DROP TABLE credentials")
    db.close()
    assert state.find(token) is None
    assert state.required()
    assert state.bound("anything")
    assert state.revoked([1]) == set()


def test_many_ids_are_asked_about_in_chunks(state: HubState) -> None:
    ids = [state.create("requestor")[0].id for _ in range(3)]
    state.revoke(str(ids[1]))
    assert state.revoked(range(1, 2000)) == {ids[1]}


def test_concurrent_writers_and_a_reader(tmp_path: Path) -> None:
    HubState.in_dir(tmp_path).close()
    tokens: list[str] = []
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            with HubState.in_dir(tmp_path) as mine:
                tokens.extend(mine.create("requestor", f"w{n}-{i}")[1] for i in range(10))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    with HubState.in_dir(tmp_path) as reader:
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            reader.required()
        for t in threads:
            t.join()
        assert errors == []
        assert all(reader.find(t) is not None for t in tokens)
        assert len(reader.credentials()) == 40


def test_the_usage_record_is_rolled_up_per_day_past_its_retention_and_its_totals_stay(tmp_path: Path) -> None:
    from kiln.hub.io.state import DAY
    from kiln.hub.records import EndLease, LeaseRecord, SaveLease, SessionRecord
    from kiln.protocol.messages import Resources

    now = [0.0]
    state = HubState(tmp_path / FILE_NAME, clock=lambda: now[0])
    alice, bob = SessionRecord("s1", "alice", 7, b"\1" * 32), SessionRecord("s2", "bob", None, b"\2" * 32)
    one = Resources(cpus=1, memory=2**30, storage=0)
    n = 0
    for day in range(100):  # on each of 100 days, 30 activities of an hour: alice 20 on p1, bob 10 on p2
        for k in range(30):
            n += 1
            session, provider = (alice, "p1") if k < 20 else (bob, "p2")
            start = day * DAY + k * 60
            state.apply(SaveLease(LeaseRecord(f"a{n}", session.id, provider, one, None, None, start), session))
            state.apply(EndLease(f"a{n}", start + 3600, 1.5))
    before = state.usage_totals(), state.usage_totals("provider")
    assert len(state.usage()) == 3000

    now[0] = 100 * DAY + 5  # the first minutes of day 100: days 0..9 are past 90 days
    assert state.roll_up(90) == 10 * 30
    assert len(state.usage()) == 2700 and min(u["started"] for u in state.usage()) == 10 * DAY
    days = state.usage_days()
    assert len(days) == 10 * 2, "one row per day, requestor and provider"
    assert days[0] == {
        "day": 0,
        "requestor": "alice",
        "credential": 7,
        "provider": "p1",
        "activities": 20,
        "cpu_seconds_rented": 20 * 3600.0,
        "cpu_seconds_used": 20 * 1.5,
        "memory_byte_seconds": 20 * 3600.0 * 2**30,
    }
    assert (state.usage_totals(), state.usage_totals("provider")) == before, "kiln usage sums the same"
    assert state.roll_up(90) == 0, "nothing twice"

    now[0] = 200 * DAY
    assert state.roll_up(0) == 2700 and state.usage() == [] and len(state.usage_days()) == 200
    assert (state.usage_totals(), state.usage_totals("provider")) == before
    state.close()
