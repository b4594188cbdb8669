"""A hub that restarts loses nothing: the core's changes written to a real database, then a
new core restored from it, as ``kiln hub`` does after a SIGKILL. Peers are played by the test.
(``kiln usage`` reading what a run wrote: tests/service/test_hub_restart.py.)"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from kiln.hub.actions import Send
from kiln.hub.io.state import SCHEMA_VERSION, HubState
from kiln.hub.records import SaveLease, SaveSession
from kiln.protocol import frames
from kiln.protocol.frames import FrameKind
from tests.hubcore import HubHarness

GiB = 2**30
RENT = {"type": "rent", "image": "img:1", "demand": {"cpus": 1, "memory": 2**28}}
OFFER = {"type": "offer", "id": 1, "resources": {"cpus": 4, "memory": 8 * GiB, "storage": 2**40}, "arch": "amd64"}


def run_of(data: Path, *, grace: float = 30, number: int = 1, **options: Any) -> HubHarness:
    """One run of the hub: a core on a clock the test moves (its wall clock from now on), writing
    its changes to the database in ``data`` and restored from what it holds."""
    return HubHarness(
        state=HubState.in_dir(data),
        version="1.3",
        activity_ids=f"a{number}-{{}}",
        wall=time.time(),
        frames=False,
        grace=grace,
        **options,
    )


def provider(run: HubHarness, peer: int, name: str = "p", **fields: Any) -> list[tuple[int, Any]]:
    """A provider dials (``activities``: what it reports it runs) and offers 4 CPUs: what it is told."""
    _, replies = run.hello("provider", name, peer=peer, **fields)
    return replies + run.send(peer, OFFER)


def requestor(run: HubHarness, peer: int, **fields: Any) -> dict[str, Any]:
    """Requestor ``r`` says hello (``resume``, ``token``): its welcome."""
    return run.welcome("requestor", "r", peer=peer, **fields)


def rent(run: HubHarness, peer: int, rid: int, provider: int = 1) -> str:
    return run.rent(peer, rid, provider, memory=2**28)


def free_cpus(run: HubHarness) -> float:
    run.join("requestor", "watcher", peer=98)
    return run.free_cpus(98)


def crash(run: HubHarness) -> None:
    """The process dies: nothing more is written (the database is what it left)."""
    run.state.close()


def exec_(rid: int, activity: str) -> dict[str, Any]:
    return {"type": "exec", "id": rid, "activity": activity, "argv": ["true"]}


@pytest.fixture
def before(tmp_path: Path) -> tuple[HubHarness, str, str, str]:
    """A run with provider 1 (``p``) running two activities of requestor 2; the secret to resume with."""
    run = run_of(tmp_path)
    provider(run, 1)
    secret = requestor(run, 2)["resume"]
    a1, a2 = rent(run, 2, 1), rent(run, 2, 2)
    crash(run)
    return run, secret, a1, a2


def test_the_lease_is_written_before_the_rented_that_tells_of_it(tmp_path: Path) -> None:
    run = run_of(tmp_path)
    provider(run, 1)
    requestor(run, 2)
    activity = rent(run, 2, 1)
    saved = next(i for i, e in enumerate(run.events) if isinstance(e, SaveLease))
    told = next(i for i, e in enumerate(run.events) if isinstance(e, tuple) and e[1]["type"] == "rented")
    assert saved < told
    assert run.events[saved].lease.id == activity and run.events[saved].lease.provider == "p"


def test_a_restarted_hub_hands_the_activities_back(tmp_path: Path, before: tuple[HubHarness, str, str, str]) -> None:
    _, secret, a1, a2 = before
    run = run_of(tmp_path, number=2)
    welcome = requestor(run, 5, resume=secret)
    assert sorted(welcome["resumed"]) == [a1, a2]
    # Its provider is not back yet: a request waits, answered by no one.
    assert run.send(5, exec_(7, a1)) == []
    replies = provider(run, 6, activities=[a1, a2])
    [(to, forwarded)] = [(to, m) for to, m in replies if m["type"] == "exec"]
    assert to == 6 and forwarded["activity"] == a1
    finished = {
        "type": "exec_result",
        "re": forwarded["id"],
        "exit_code": 0,
        "timed_out": False,
        "stdout": "",
        "stderr": "",
        "duration": 0.01,
    }
    [(to, result)] = run.send(6, finished)
    assert (to, result["re"], result["exit_code"]) == (5, 7, 0)
    assert free_cpus(run) == 2, "the two leases hold their capacity again"
    # And it is all a live activity again: released as any other.
    [(_, destroy)] = run.send(5, {"type": "release", "id": 8, "activity": a2})
    [(to, done)] = run.send(6, {"type": "done", "re": destroy["id"], "cpu_seconds": 1.5})
    assert (to, done["type"], done["re"]) == (5, "done", 8)
    usage = run.state.usage()
    assert [(u["activity"], u["provider"], u["requestor"], u["cpu_seconds"]) for u in usage] == [(a2, "p", "r", 1.5)]


def test_the_requestor_may_come_back_after_the_provider(
    tmp_path: Path, before: tuple[HubHarness, str, str, str]
) -> None:
    _, secret, a1, a2 = before
    run = run_of(tmp_path, number=2)
    assert [m["type"] for _, m in provider(run, 6, activities=[a2, a1])] == ["welcome", "done"]
    welcome = requestor(run, 5, resume=secret)
    assert sorted(welcome["resumed"]) == [a1, a2]
    [(to, forwarded)] = run.send(5, exec_(7, a1))
    assert to == 6 and forwarded["type"] == "exec"


def test_what_a_provider_reports_that_nobody_holds_is_destroyed(
    tmp_path: Path, before: tuple[HubHarness, str, str, str]
) -> None:
    _, _, a1, a2 = before
    run = run_of(tmp_path, number=2)
    replies = provider(run, 6, activities=[a1, a2, "stray"])
    [(to, destroy)] = [(to, m) for to, m in replies if m["type"] == "destroy"]
    assert (to, destroy["activity"]) == (6, "stray")
    assert run.send(6, {"type": "done", "re": destroy["id"]}) == []
    assert set(run.core.activities) == {a1, a2}


def test_an_activity_its_provider_does_not_report_is_lost(
    tmp_path: Path, before: tuple[HubHarness, str, str, str]
) -> None:
    _, secret, a1, a2 = before
    run = run_of(tmp_path, number=2)
    requestor(run, 5, resume=secret)
    run.send(5, exec_(7, a2))
    replies = provider(run, 6, activities=[a1])
    lost = [m for to, m in replies if to == 5]
    assert [m["type"] for m in lost] == ["activity_lost", "error"]
    assert lost[0]["activity"] == a2 and lost[0]["code"] == "provider_lost"
    assert (lost[1]["re"], lost[1]["code"]) == (7, "provider_lost")
    assert set(run.core.activities) == {a1}
    assert [u["activity"] for u in run.state.usage()] == [a2], "its usage is recorded, without CPU time"


def test_a_provider_below_1_3_reports_nothing_and_loses_them(
    tmp_path: Path, before: tuple[HubHarness, str, str, str]
) -> None:
    _, _, _, _ = before
    run = run_of(tmp_path, number=2)
    run.hello("provider", "p", peer=6, version="1.2")
    assert run.core.activities == {}


def test_a_provider_that_does_not_come_back_in_time_loses_them(
    tmp_path: Path, before: tuple[HubHarness, str, str, str]
) -> None:
    _, secret, a1, a2 = before
    run = run_of(tmp_path, number=2)
    requestor(run, 5, resume=secret)
    run.send(5, exec_(7, a1))
    run.send(5, {"type": "release", "id": 8, "activity": a2})
    assert run.expire(29) == []
    told = run.expire(2)
    assert sorted(m["type"] for _, m in told) == ["activity_lost", "activity_lost", "done", "error"]
    assert {m.get("re") for _, m in told} == {None, 7, 8}
    assert run.core.activities == {}
    # It comes back later: its containers are nobody's now.
    replies = provider(run, 6, activities=[a1, a2])
    assert sorted(m["activity"] for _, m in replies if m["type"] == "destroy") == [a1, a2]


def test_a_session_not_resumed_in_time_has_its_activities_destroyed(
    tmp_path: Path, before: tuple[HubHarness, str, str, str]
) -> None:
    _, _, a1, a2 = before
    run = run_of(tmp_path, number=2)
    provider(run, 6, activities=[a1, a2])
    destroys = [m for _, m in run.expire(31) if m["type"] == "destroy"]
    assert sorted(m["activity"] for m in destroys) == [a1, a2]
    for destroy in destroys:
        run.send(6, {"type": "done", "re": destroy["id"]})
    assert free_cpus(run) == 4
    again = run_of(tmp_path, number=3)
    assert again.core.activities == {} and sorted(u["activity"] for u in again.state.usage()) == [a1, a2]
    with sqlite3.connect(tmp_path / "hub.db") as db:
        assert db.execute("SELECT COUNT(*) FROM sessions").fetchone() == (0,)


def test_a_provider_cannot_claim_another_providers_activity(
    tmp_path: Path, before: tuple[HubHarness, str, str, str]
) -> None:
    _, secret, a1, _ = before
    run = run_of(tmp_path, number=2)
    replies = provider(run, 6, name="q", activities=[a1])
    [destroy] = [m for _, m in replies if m["type"] == "destroy"]
    run.send(6, {"type": "done", "re": destroy["id"]})
    assert a1 in run.core.activities, "still p's, waiting for p"
    requestor(run, 5, resume=secret)
    provider(run, 7, activities=[a1])
    [(to, _)] = run.send(5, exec_(7, a1))
    assert to == 7


def test_requests_waiting_for_an_absent_activity_are_bounded_and_can_be_cancelled(
    tmp_path: Path, before: tuple[HubHarness, str, str, str]
) -> None:
    _, secret, a1, _ = before
    run = run_of(tmp_path, number=2)
    requestor(run, 5, resume=secret)
    most = run.core.limits.max_pending
    for rid in range(1, most + 1):
        assert run.send(5, exec_(rid, a1)) == []
    [(_, refused)] = run.send(5, exec_(most + 1, a1))
    assert refused["code"] == "too_many"
    [(_, cancelled)] = run.send(5, {"type": "cancel", "target": 1})
    assert (cancelled["re"], cancelled["code"]) == (1, "cancelled")
    replies = provider(run, 6, activities=[a1])
    assert len([m for _, m in replies if m["type"] == "exec"]) == most - 1


def test_what_ended_before_the_restart_is_not_restored(tmp_path: Path) -> None:
    run = run_of(tmp_path)
    provider(run, 1)
    requestor(run, 2)
    released, destroying, kept = rent(run, 2, 1), rent(run, 2, 2), rent(run, 2, 3)
    [(_, destroy)] = run.send(2, {"type": "release", "id": 4, "activity": released})
    run.send(1, {"type": "done", "re": destroy["id"]})
    run.send(2, {"type": "release", "id": 5, "activity": destroying})  # the hub dies before its done
    requestor(run, 3)
    closed = rent(run, 3, 1)
    run.leave(3, ended=True)  # a session its requestor closed itself
    crash(run)
    after = run_of(tmp_path, number=2)
    assert set(after.core.activities) == {kept}
    # Each that ended is in the usage record: the last two as ending when the hub started again.
    usage = {u["activity"]: u for u in after.state.usage()}
    assert set(usage) == {released, destroying, closed}
    assert usage[destroying]["ended"] == usage[closed]["ended"] > usage[released]["ended"] - 60
    replies = provider(after, 6, activities=sorted({released, destroying, kept}))
    assert sorted(m["activity"] for _, m in replies if m["type"] == "destroy") == sorted([released, destroying])


def test_a_resume_after_the_restart_writes_the_new_secret_before_the_welcome(
    tmp_path: Path, before: tuple[HubHarness, str, str, str]
) -> None:
    _, secret, a1, a2 = before
    run = run_of(tmp_path, number=2)
    fresh = requestor(run, 5, resume=secret)["resume"]
    [saved] = [i for i, e in enumerate(run.events) if isinstance(e, SaveSession)]
    [welcomed] = [i for i, e in enumerate(run.events) if isinstance(e, tuple) and e[1]["type"] == "welcome"]
    assert saved < welcomed
    crash(run)
    # A second restart: only the newest secret resumes (the first was spent).
    third = run_of(tmp_path, number=3)
    assert requestor(third, 8, resume=secret).get("resumed") == []
    crash(third)
    fourth = run_of(tmp_path, number=4)
    assert sorted(requestor(fourth, 8, resume=fresh)["resumed"]) == [a1, a2]


def test_a_session_is_resumed_only_by_its_credential_after_a_restart(tmp_path: Path) -> None:
    state = HubState.in_dir(tmp_path)
    _, alice = state.create("requestor", "alice")
    _, bob = state.create("requestor", "bob")
    _, provider_token = state.create("provider", "p")
    run = run_of(tmp_path, credentials=state)
    provider(run, 1, token=provider_token)
    secret = requestor(run, 2, token=alice)["resume"]
    activity = rent(run, 2, 1)
    crash(run)
    again = run_of(tmp_path, number=2, credentials=HubState.in_dir(tmp_path))
    assert requestor(again, 5, token=bob, resume=secret).get("resumed") == []
    assert requestor(again, 6, token=alice, resume=secret)["resumed"] == [activity]


def test_the_schema_grows_from_a_database_of_credentials_only(tmp_path: Path) -> None:
    with HubState.in_dir(tmp_path) as state:
        _, token = state.create("requestor", "alice")
    with sqlite3.connect(tmp_path / "hub.db") as db:  # as the first schema left it
        later = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN ('credentials', 'schema_version')"
        ).fetchall()
        for (table,) in later:
            db.execute(f"DROP TABLE {table}")
        db.execute("UPDATE schema_version SET version = 1")
    with HubState.in_dir(tmp_path) as state:
        assert state.find(token) is not None
        assert state.load() == ([], [])
    with sqlite3.connect(tmp_path / "hub.db") as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_a_stream_opened_while_waiting_keeps_its_end_for_the_provider(
    tmp_path: Path, before: tuple[HubHarness, str, str, str]
) -> None:
    _, secret, a1, _ = before
    run = run_of(tmp_path, number=2)
    requestor(run, 5, resume=secret)
    upload = {"type": "upload", "activity": a1, "path": "/golem/input/empty", "size": 0}
    run.send(5, {**upload, "id": 7})
    run.send(5, {**upload, "id": 8})
    # An empty upload ends at once, before any credit; another is aborted by its requestor.
    assert run.take(run.core.receive_binary(5, frames.encode(FrameKind.END, 7, b""))) == []
    assert run.take(run.core.receive_binary(5, frames.encode(FrameKind.ABORT, 8, b"changed my mind"))) == []
    run.core.connect(6)
    actions = run.core.receive_text(
        6, json.dumps({"type": "hello", "version": "1.3", "role": "provider", "name": "p", "activities": [a1]})
    )
    told = run.take(actions)
    [(to, forwarded)] = [(to, m) for to, m in told if m["type"] == "upload"]
    assert (to, forwarded["path"]) == (6, "/golem/input/empty")
    ends = [frames.decode(a.data, 2**20) for a in actions if isinstance(a, Send) and a.binary]
    assert [(f.kind, f.stream) for f in ends] == [(FrameKind.END, forwarded["id"])]
    [(to, refused)] = [(to, m) for to, m in told if m.get("re") == 8]
    assert (to, refused["code"]) == (5, "cancelled")
