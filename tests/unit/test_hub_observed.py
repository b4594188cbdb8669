"""What the hub's core counts and notes for its metrics and dashboard (:mod:`kiln.hub.tallies`,
:mod:`kiln.hub.journal`, :mod:`kiln.hub.jobs`, the ``usage`` kept on leases), driven with literal
messages (:mod:`tests.hubcore`)."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.hub.access import Credential
from kiln.hub.jobs import Jobs
from kiln.hub.journal import Journal
from kiln.hub.tallies import OTHER, RENT_BUCKETS, Tallies
from kiln.protocol import frames
from kiln.protocol.frames import FrameKind
from kiln.protocol.messages import ImagePushed
from tests.hubcore import FakeCredentials, HubHarness
from tests.unit.test_hub_images import LAYER, pulling, push_message, rent_stored
from tests.unit.test_hub_ledger import PRICE, end, priced, run

GiB = 2**30


@pytest.fixture
def hub() -> HubHarness:
    h = HubHarness(version="1.6")
    h.provider("p1", peer=1)
    h.join("requestor", "r1", peer=2)
    return h


def task(hub: HubHarness, peer: int, **fields: Any) -> list[tuple[int, Any]]:
    report = {"type": "task", "group": "job-1", "task": 0, "attempt": 1, "state": "started", **fields}
    return hub.send(peer, report)


# --- jobs ------------------------------------------------------------------------------------------


def test_task_reports_make_a_job_timed_by_the_hub(hub: HubHarness) -> None:
    activity = hub.rent(2, 7, group="job-1")
    assert task(hub, 2, activity=activity) == []  # no reply
    hub.now += 3
    assert task(hub, 2, activity=activity, state="retried", reason="exit 1", bytes=10) == []
    task(hub, 2, attempt=2, activity=activity)
    hub.now += 2
    task(hub, 2, attempt=2, activity=activity, state="done", bytes=20)
    task(hub, 2, task=1, state="failed", reason="no provider")  # never reached an activity
    [job] = hub.core.jobs
    session = hub.core.peers[2].session
    assert hub.core.jobs.get(session, "job-1") is job
    assert (job.group, job.requestor, job.rented) == ("job-1", "r1", 1)
    assert (job.done, job.retried, job.failed, job.running) == (1, 1, 1, 0)
    first, second, third = job.attempts
    assert (first.provider, first.start, first.end, first.state, first.reason, first.bytes) == (
        "p1",
        1000.0,
        1003.0,
        "retried",
        "exit 1",
        10,
    )
    assert (second.attempt, second.start, second.end, second.state) == (2, 1003.0, 1005.0, "done")
    assert (third.task, third.activity, third.provider, third.start, third.end) == (1, None, "", 1005.0, 1005.0)
    assert (job.first, job.last) == (1000.0, 1005.0)


def test_a_running_attempt_counts_as_running(hub: HubHarness) -> None:
    activity = hub.rent(2, 7, group="job-1")
    task(hub, 2, activity=activity)
    task(hub, 2, task=1, activity=activity)
    [job] = hub.core.jobs
    assert job.running == 2
    task(hub, 2, task=1, activity=activity, state="done")
    task(hub, 2, task=1, activity=activity, state="failed")  # a second end of the same attempt
    assert (job.running, job.done, job.failed) == (1, 1, 0)


def test_a_report_naming_another_requestors_activity_is_dropped(hub: HubHarness) -> None:
    other = hub.join("requestor", "r2", peer=3)
    activity = hub.rent(other, 7, group="job-1")
    assert task(hub, 2, activity=activity) == []
    assert task(hub, 2, activity="nosuch") == []
    assert hub.core.jobs.get(hub.core.peers[2].session, "job-1") is None
    [job] = hub.core.jobs
    assert job.requestor == "r2" and not job.attempts  # made by r2's rent, untouched by r1


def test_a_report_on_an_activity_lost_with_its_provider_is_kept(hub: HubHarness) -> None:
    activity = hub.rent(2, 7, group="job-1")
    task(hub, 2, activity=activity)
    hub.leave(1)
    task(hub, 2, activity=activity, state="retried", reason="provider lost")
    [job] = hub.core.jobs
    [attempt] = job.attempts
    assert (attempt.state, attempt.provider) == ("retried", "p1")


def test_a_provider_may_not_report_tasks(hub: HubHarness) -> None:
    [(_, error)] = task(hub, 1)
    assert error["code"] == "out_of_order"


def test_jobs_are_bounded() -> None:
    jobs = Jobs(max_jobs=2, max_attempts=3, max_all=3)
    for n in range(3):
        jobs.report(
            "s",
            f"g{n}",
            None,
            "r",
            float(n),
            task=0,
            attempt=1,
            state="started",
            activity=None,
            provider="",
            reason=None,
            size=0,
        )
    assert [job.group for job in jobs] == ["g1", "g2"]
    for n in range(5):
        jobs.report(
            "s",
            "g2",
            None,
            "r",
            10.0,
            task=n,
            attempt=1,
            state="started",
            activity=None,
            provider="",
            reason=None,
            size=0,
        )
    g2 = jobs.get("s", "g2")
    assert g2 is not None
    assert [a.task for a in g2.attempts] == [2, 3, 4] and g2.running == 3  # the oldest forgotten
    assert [job.group for job in jobs] == ["g2"]  # g1 forgotten: 3 attempts in all at most


# --- usage -----------------------------------------------------------------------------------------


def test_usage_is_kept_on_the_lease_and_summed(hub: HubHarness) -> None:
    a1, a2 = hub.rent(2, 7, memory=GiB), hub.rent(2, 8)
    usage = {"type": "usage", "activities": [{"activity": a1, "cpu_seconds": 10.0, "memory": GiB}]}
    assert hub.send(1, usage) == []
    lease = hub.core.activities[a1]
    assert (lease.cpu_seconds, lease.memory, lease.cpu_rate) == (10.0, GiB, None)
    hub.now += 5
    usage["activities"] = [
        {"activity": a1, "cpu_seconds": 14.0, "memory": GiB // 2},
        {"activity": a2, "cpu_seconds": 1.0, "memory": 100},
        {"activity": "nosuch", "cpu_seconds": 1.0, "memory": 100},
    ]
    hub.send(1, usage)
    assert (lease.cpu_seconds, lease.memory, lease.cpu_rate) == (14.0, GiB // 2, 0.8)
    assert (hub.core.tallies.used_cpus, hub.core.tallies.used_memory) == (0.8, GiB // 2 + 100)
    for peer, destroy in hub.leave(2, ended=True):
        hub.send(peer, {"type": "done", "re": destroy["id"]})
    assert not hub.core.activities
    assert (hub.core.tallies.used_cpus, hub.core.tallies.used_memory) == (0.0, 0)


def test_usage_is_capped_at_what_the_lease_was_granted(hub: HubHarness) -> None:
    activity = hub.rent(2, 7, cpus=0.5, memory=GiB)
    usage = {"type": "usage", "activities": [{"activity": activity, "cpu_seconds": 10.0, "memory": 2**53}]}
    hub.send(1, usage)
    hub.now += 0.001  # a report held up behind the one before comes right after it
    usage["activities"] = [{"activity": activity, "cpu_seconds": 15.0, "memory": 2**53}]
    hub.send(1, usage)
    lease = hub.core.activities[activity]
    assert (lease.cpu_rate, lease.memory) == (0.5, GiB)
    assert (hub.core.tallies.used_cpus, hub.core.tallies.used_memory) == (0.5, GiB)


def test_usage_of_another_providers_activity_is_dropped(hub: HubHarness) -> None:
    activity = hub.rent(2, 7)
    hub.provider("p2", peer=3)
    hub.send(3, {"type": "usage", "activities": [{"activity": activity, "cpu_seconds": 5.0, "memory": 1}]})
    assert hub.core.activities[activity].memory is None
    assert hub.core.tallies.used_memory == 0


# --- journal ---------------------------------------------------------------------------------------


def test_joins_leaves_and_losses_are_noted(hub: HubHarness) -> None:
    hub.leave(2, ended=True)
    hub.leave(1, "connection lost")
    kinds = [(e.seq, e.kind, e.role, e.name) for e in hub.core.journal.since(0)]
    assert kinds == [
        (1, "join", "provider", "p1"),
        (2, "join", "requestor", "r1"),
        (3, "leave", "requestor", "r1"),
        (4, "loss", "provider", "p1"),
    ]
    assert hub.core.journal.since(3)[0].detail == "connection lost"
    assert hub.core.tallies.joins == {"provider": 1, "requestor": 1}


def test_refusals_are_counted_and_noted() -> None:
    hub = HubHarness(version="1.6", token="secret")
    hub.hello("provider", "p1", token="wrong")
    hub.hello("provider", "p1", version="2.0")
    assert hub.core.tallies.refused == {"unauthorized": 1, "unsupported_version": 1}
    first, second = hub.core.journal.last(5)
    assert (first.kind, first.role, first.name) == ("refusal", "provider", "p1")
    assert first.detail.startswith("unauthorized: ")
    assert second.detail.startswith("unsupported_version: ")
    hub.leave(1)
    assert len(hub.core.journal) == 2  # a refused peer's end is not news
    hub.core.connect(9)
    hub.leave(9, "no hello within 10 s")
    assert hub.core.tallies.refused["no_hello"] == 1 and len(hub.core.journal) == 2


def test_the_journal_is_a_bounded_ring() -> None:
    journal = Journal(3)
    for n in range(5):
        journal.add(float(n), "join", "provider", f"p{n}", "")
    assert [e.seq for e in journal.since(0)] == [3, 4, 5]
    assert [e.seq for e in journal.since(4)] == [5]
    assert journal.since(5) == [] and journal.seq == 5
    assert [e.seq for e in journal.last(2)] == [4, 5]
    assert journal.add(9.0, "loss", None, "x" * 1000, "y" * 1000).detail.endswith("…")


def test_a_flood_of_refusals_is_one_event_and_keeps_the_feed() -> None:
    hub = HubHarness(version="1.6", token="secret")
    hub.hello("provider", "p0", token="secret")
    for n in range(2000):
        hub.hello("provider", f"x{n}", token="wrong")
    assert hub.core.tallies.refused["unauthorized"] == 2000
    join, flood = hub.core.journal.last(5)
    assert (join.kind, join.name) == ("join", "p0")  # not pushed out of the ring
    assert (flood.kind, flood.repeats, flood.name) == ("refusal", 2000, "x1999")
    hub.hello("provider", "y", version="2.0")  # another reason: an event of its own
    assert [e.repeats for e in hub.core.journal.last(5)] == [1, 2000, 1]


# --- tallies ---------------------------------------------------------------------------------------


def test_the_rent_histogram_is_cumulative() -> None:
    tallies = Tallies()
    for seconds in (0.0005, 0.001, 0.003, 500.0):
        tallies.rent("ok", seconds)
    histogram = tallies.rent_histogram()
    assert histogram[0] == (RENT_BUCKETS[0], 2)
    assert histogram[2] == (RENT_BUCKETS[2], 3)
    assert histogram[-2] == (RENT_BUCKETS[-1], 3)
    assert histogram[-1] == (float("inf"), 4) and tallies.rent_count == 4
    assert tallies.rent_sum == pytest.approx(500.0045)


def test_rents_are_counted_by_result_and_timed_from_their_arrival(hub: HubHarness) -> None:
    hub.rent(2, 7)
    provider, create = hub.create(2, 8)
    hub.now += 0.02  # the create takes 20 ms
    hub.send(provider, {"type": "error", "re": create["id"], "code": "image_not_found", "message": "no"})
    hub.send(2, {"type": "rent", "id": 9, "image": "x", "demand": {"cpus": 64}})
    provider, create = hub.create(2, 10)
    hub.send(provider, {"type": "error", "re": create["id"], "code": "made_up", "message": "?"})
    hub.create(2, 11)
    hub.leave(1)
    tallies = hub.core.tallies
    assert tallies.rents == {"ok": 1, "image_not_found": 1, "no_match": 1, OTHER: 1, "provider_lost": 1}
    assert tallies.rent_count == 5 and tallies.rent_sum == pytest.approx(0.02)
    assert tallies.rent_histogram()[0] == (RENT_BUCKETS[0], 4)  # all but the one that took 20 ms
    assert tallies.rent_histogram()[4] == (0.025, 5)


def test_commands_and_the_bytes_relayed_are_counted(hub: HubHarness) -> None:
    activity = hub.rent(2, 10)
    for rid, code in ((11, 0), (12, 3)):
        [(_, exec_)] = hub.send(2, {"type": "exec", "id": rid, "activity": activity, "argv": ["true"]})
        result = {"type": "exec_result", "re": exec_["id"], "exit_code": code, "timed_out": False}
        hub.send(1, {**result, "stdout": "", "stderr": "", "duration": 0.1})
    [(_, exec_)] = hub.send(2, {"type": "exec", "id": 13, "activity": activity, "argv": ["true"]})
    hub.send(1, {"type": "error", "re": exec_["id"], "code": "internal", "message": "docker"})
    [(_, exec_)] = hub.send(2, {"type": "exec", "id": 14, "activity": activity, "argv": ["sleep", "9"]})
    hub.send(2, {"type": "cancel", "target": 14})  # asked for: no failure
    hub.send(1, {"type": "error", "re": exec_["id"], "code": "cancelled", "message": "cancelled"})
    [(_, upload)] = hub.send(2, {"type": "upload", "id": 20, "activity": activity, "path": "/in/a", "size": 4})
    hub.send(1, {"type": "credit", "stream": upload["id"], "chunks": 2})
    hub.binary(2, frames.encode(FrameKind.DATA, 20, b"abcd"))
    [(_, download)] = hub.send(2, {"type": "download", "id": 30, "activity": activity, "path": "/o", "window": 1})
    hub.send(1, {"type": "download_info", "re": download["id"], "kind": "file", "size": 3})
    hub.binary(1, frames.encode(FrameKind.DATA, download["id"], b"abc"))
    tallies = hub.core.tallies
    assert (tallies.commands, tallies.command_failures) == (4, 2)
    assert (tallies.to_provider_bytes, tallies.to_requestor_bytes) == (4, 3)


def test_pushes_pulls_and_the_bytes_pulled_are_counted() -> None:
    hub, stored = pulling()
    create = rent_stored(hub, stored)
    hub.send(1, {"type": "want", "re": create, "blobs": [LAYER.digest]})
    hub.send(1, {"type": "credit", "stream": create, "chunks": 2})
    hub.take(hub.core.serve_data(1, create, b"x" * 1000))
    hub.send(2, push_message())
    info = stored.info()
    hub.take(hub.core.store_reply(2, ImagePushed(type="image_pushed", re=3, image=info, sent=1, skipped=0)))
    tallies = hub.core.tallies
    assert (tallies.pulls, tallies.pull_bytes, tallies.pushes) == (1, 1000, 1)


def test_captures_are_counted_for_providers_the_hub_and_the_job() -> None:
    hub, [p], r = priced(fee_ppm=100_000)
    activity = hub.rent(r, 7, p, group="job-1")
    run(hub, 120, 60)
    end(hub, r, activity, 0.0)
    tallies = hub.core.tallies
    assert tallies.captured > 0 and tallies.fees == pytest.approx(tallies.captured / 9, abs=1)
    assert hub.book is not None
    paid = sum(x for post in hub.book.of("capture") for a, x in post.entries if not a.startswith("hold:"))
    assert tallies.captured + tallies.fees == paid >= PRICE["start"]
    [job] = hub.core.jobs
    assert job.cost == paid


def test_activities_lost_with_their_provider_make_one_event_per_requestor(hub: HubHarness) -> None:
    hub.join("requestor", "r2", peer=3)
    hub.rent(2, 7, cpus=0.5)
    hub.rent(2, 8, cpus=0.5)
    other = hub.rent(3, 7, cpus=0.5)
    hub.create(3, 8, cpus=0.5)  # being created: its rent fails, it is not lost
    hub.leave(1, "gone")
    assert hub.core.tallies.lost == 3
    *_, provider, first, second = hub.core.journal.last(3)
    assert (provider.kind, provider.name) == ("loss", "p1")
    assert (first.kind, first.role, first.name, first.detail) == (
        "loss",
        "requestor",
        "r1",
        "2 activities lost with provider p1: a1, a2",
    )
    assert (second.name, second.detail) == ("r2", f"1 activity lost with provider p1: {other}")


def test_a_revoked_credential_is_noted() -> None:
    credentials = FakeCredentials(live={"t": Credential(4, "requestor", None)})
    hub = HubHarness(version="1.6", credentials=credentials)
    hub.join("requestor", "r1", peer=2, token="t")
    hub.take(hub.core.revoked({4}))
    hub.leave(2)
    *_, join, revocation = hub.core.journal.since(0)
    assert (join.kind, join.credential) == ("join", 4)
    assert (revocation.kind, revocation.name, revocation.credential) == ("revocation", "r1", 4)
    assert not hub.core.tallies.refused


def test_an_activity_the_hub_ends_counts_as_lost(hub: HubHarness) -> None:
    activity = hub.rent(2, 7, max_duration=60)
    hub.expire(after=61)
    assert hub.core.tallies.lost == 1
    event = hub.core.journal.last(1)[0]
    assert (event.kind, event.name, event.detail) == (
        "loss",
        "r1",
        f"1 activity lost as the hub ended it (expired): {activity}",
    )
