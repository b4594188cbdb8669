"""The dashboard's pages (kiln.hub.views) as each viewer sees them, the hub's last hour
(kiln.hub.history), and the files the dashboard is served from (kiln.hub.dashboard): a core fed
literal messages on a fake clock, no sockets."""

from __future__ import annotations

import math
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

import orjson
import pytest

from kiln.hub.access import Credential, Viewer
from kiln.hub.catalog import Catalog, Tenant
from kiln.hub.history import PUBLIC, SERIES, History, Reading
from kiln.hub.views import (
    MAX_QUERY_BYTES,
    MAX_ROWS,
    PAGES,
    Query,
    history_rows,
    page,
    parse_query,
    reading,
    totals,
)
from tests.hubcore import FakeCredentials, HubHarness
from tests.unit.test_hub_images import blob, image

ROOT = Path(__file__).resolve().parents[2]
MiB = 2**20
GiB = 2**30
NOW = 1_700_000_000.0
CREDENTIALS = {
    "alice": Credential(3, "requestor", "alice"),
    "bob": Credential(4, "requestor", "bob"),
    "adm": Credential(5, "admin", "ops"),
}
ADMIN = Viewer(True, 5, "ops")
ALICE = Viewer(False, 3, "alice")
BOB = Viewer(False, 4, "bob")


@pytest.fixture
def hub() -> HubHarness:
    """Two providers (p1: 8 CPUs, p2: 4), alice renting two activities on them, bob one."""
    hub = HubHarness(
        version="1.6",
        activity_ids="a{}",
        now=NOW,
        frames=False,
        token="shared",
        credentials=FakeCredentials(live=dict(CREDENTIALS)),
    )
    p1, p2 = hub.join("provider", "p1", token="shared"), hub.join("provider", "p2", token="shared")
    hub.offer(p1, cpus=8, memory=8 * GiB)
    hub.offer(p2, cpus=4, memory=4 * GiB)
    alice = hub.join("requestor", "alice", token="alice")
    bob = hub.join("requestor", "bob", token="bob")
    hub.rent(alice, 1, p1, cpus=2, memory=64 * MiB, group="job-a")
    hub.rent(alice, 2, cpus=1, memory=64 * MiB, group="job-a")
    hub.rent(bob, 1, cpus=1, memory=64 * MiB, group="job-b")
    return hub


def shown(hub: HubHarness, viewer: Viewer, query: Query, history: History | None = None) -> dict[str, Any]:
    """The page as the live connection sends it: made, then through JSON."""
    made = page(hub.core, viewer, query, history or History(), NOW)
    return dict(orjson.loads(orjson.dumps(made)))


# --- queries ------------------------------------------------------------------------------------


def test_a_query_names_a_page_and_may_carry_a_filter_and_a_job() -> None:
    assert parse_query(b'{"page": "providers", "filter": "gpu"}') == Query("providers", "gpu")
    assert parse_query('{"page": "jobs", "job": "job-1"}') == Query("jobs", "", "job-1")
    assert [parse_query(orjson.dumps({"page": p})).page for p in PAGES] == list(PAGES)


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"page": "secrets"}',
        b'{"page": "overview", "extra": 1}',
        b'{"page": "providers", "filter": 7}',
        b'{"page": "providers", "filter": "' + b"x" * 101 + b'"}',
        b'{"page": "jobs", "job": "a\\nb"}',
        b'{"page": "jobs", "job": 3}',
        b'{"page": "overview", "filter": "' + b"x" * MAX_QUERY_BYTES + b'"}',
    ],
)
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_query(data)


# --- the pages, per viewer --------------------------------------------------------------------


def test_an_admin_sees_every_activity_and_a_requestor_its_own(hub: HubHarness) -> None:
    everyone = shown(hub, ADMIN, Query("activities"))
    assert sorted(row["id"] for row in everyone["rows"]) == ["a1", "a2", "a3"]
    alices = shown(hub, ALICE, Query("activities"))
    assert sorted(row["id"] for row in alices["rows"]) == ["a1", "a2"]
    assert {row["requestor"] for row in alices["rows"]} == {"alice"}
    assert [row["id"] for row in shown(hub, BOB, Query("activities"))["rows"]] == ["a3"]
    assert shown(hub, Viewer(False), Query("activities"))["rows"] == []  # no credential: nothing
    [a1] = [row for row in everyone["rows"] if row["id"] == "a1"]
    assert a1 | {"started": None} == {
        "id": "a1",
        "requestor": "alice",
        "provider": "p1",
        "image": "img:1",
        "state": "ready",
        "started": None,
        "group": "job-a",
        "cpus": 2.0,
        "memory": 64 * MiB,
        "used_cpus": None,
        "used_memory": None,
    }
    assert [row["id"] for row in shown(hub, ADMIN, Query("activities", "p2"))["rows"]] == ["a2"]
    filtered = shown(hub, ADMIN, Query("activities", "bob"))
    assert [row["id"] for row in filtered["rows"]] == ["a3"] and filtered["matched"] == 1


def test_the_overview_counts_capacity_and_keeps_the_hubs_counters_to_admins(hub: HubHarness) -> None:
    admin = shown(hub, ADMIN, Query())
    assert admin["providers"] == 2 and admin["activities"] == 3 and admin["requestors"] == 2
    assert admin["cpus"] == {"offered": 12.0, "rented": 4.0, "used": 0.0}
    assert admin["memory"]["offered"] == 12 * GiB and admin["memory"]["rented"] == 3 * 64 * MiB
    assert admin["series"] == list(SERIES) and {"rates", "store", "rents"} <= admin.keys()
    alice = shown(hub, ALICE, Query())
    assert alice["activities"] == 2 and alice["providers"] == 2 and alice["series"] == list(PUBLIC)
    assert "used" not in alice["cpus"] and not {"rates", "store", "rents", "requestors"} & alice.keys()


def test_providers_show_offered_rented_and_to_an_admin_used(hub: HubHarness) -> None:
    admin = shown(hub, ADMIN, Query("providers"))
    assert [row["name"] for row in admin["rows"]] == ["p1", "p2"] and admin["total"] == 2
    p1 = admin["rows"][0]
    assert p1["cpus"] == [8.0, 3.0, 0.0] and p1["memory"] == [8 * GiB, 128 * MiB, 0]  # a1 and a3
    assert p1["activities"] == 2 and p1["price"] == "free" and p1["since"] == round(NOW)
    alice = shown(hub, ALICE, Query("providers"))
    assert alice["rows"][0]["cpus"] == [8.0, 3.0] and alice["used"] is False
    only = shown(hub, ADMIN, Query("providers", "2"))
    assert [row["name"] for row in only["rows"]] == ["p2"] and only["matched"] == 1 and only["total"] == 2


def test_a_page_of_providers_is_bounded() -> None:
    hub = HubHarness(version="1.6", frames=False)
    for i in range(MAX_ROWS + 5):
        hub.provider(f"p{i:04}")
    made = shown(hub, ADMIN, Query("providers"))
    assert len(made["rows"]) == MAX_ROWS and made["matched"] == MAX_ROWS + 5
    assert made["rows"][0]["name"] == "p0000"
    assert len(shown(hub, ADMIN, Query("providers", "p00"))["rows"]) == 100


def test_usage_reported_by_providers_shows_as_used(hub: HubHarness) -> None:
    p1 = hub.core.providers["p1"]
    usage = {"type": "usage", "activities": [{"activity": "a1", "cpu_seconds": 10.0, "memory": 32 * MiB}]}
    hub.send(p1, usage)
    hub.now += 5
    hub.send(p1, usage | {"activities": [{"activity": "a1", "cpu_seconds": 17.5, "memory": 40 * MiB}]})
    sums = totals(hub.core)
    assert math.isclose(sums.used_cpus, 1.5) and sums.used_memory == 40 * MiB
    row = shown(hub, ADMIN, Query("providers"))["rows"][0]
    assert row["cpus"][2] == 1.5 and row["memory"][2] == 40 * MiB
    [a1] = [r for r in shown(hub, ALICE, Query("activities"))["rows"] if r["id"] == "a1"]
    assert a1["used_cpus"] == 1.5 and a1["used_memory"] == 40 * MiB


def test_jobs_show_their_attempts_to_their_requestor_only(hub: HubHarness) -> None:
    alice = next(p.id for p in hub.core.peers.values() if p.name == "alice")
    for task, activity in ((0, "a1"), (1, "a2")):
        hub.send(
            alice,
            {"type": "task", "group": "job-a", "task": task, "attempt": 1, "state": "started", "activity": activity},
        )
    hub.now += 2
    hub.send(alice, {"type": "task", "group": "job-a", "task": 0, "attempt": 1, "state": "done", "activity": "a1"})
    made = shown(hub, ALICE, Query("jobs"))
    [job] = made["jobs"]
    assert job["group"] == "job-a" and job["done"] == 1 and job["running"] == 1
    assert made["job"]["group"] == "job-a"
    attempts = sorted(made["job"]["attempts"])
    assert attempts == [[0, 1, "p1", NOW, NOW + 2, "done", "", 0], [1, 1, "p2", NOW, None, "started", "", 0]]
    bobs = shown(hub, BOB, Query("jobs", job="job-a"))
    assert [j["group"] for j in bobs["jobs"]] == ["job-b"] and bobs["job"] is None
    assert {j["group"] for j in shown(hub, ADMIN, Query("jobs"))["jobs"]} == {"job-a", "job-b"}


def test_events_show_to_an_admin_and_a_requestor_its_own(hub: HubHarness) -> None:
    everything = shown(hub, ADMIN, Query("events"))["rows"]
    assert {(e["kind"], e["name"]) for e in everything} >= {("join", "p1"), ("join", "alice"), ("join", "bob")}
    assert [e["seq"] for e in everything] == sorted((e["seq"] for e in everything), reverse=True)
    alices = shown(hub, ALICE, Query("events"))["rows"]
    assert alices and {e["name"] for e in alices} == {"alice"}
    assert shown(hub, Viewer(False), Query("events"))["rows"] == []


def test_images_show_what_the_viewer_sees_of_the_store() -> None:
    catalog = Catalog(2**30)
    stored = image(catalog, blob("layer", 10), tags=("app:1",), tenant=Tenant(3))  # alice's
    hub = HubHarness(
        version="1.6",
        now=NOW,
        frames=False,
        catalog=catalog,
        token="shared",
        credentials=FakeCredentials(live=dict(CREDENTIALS)),
    )
    alice = hub.join("requestor", "alice", token="alice")
    assert shown(hub, ADMIN, Query("images"))["rows"][0]["holders"] == []
    p1 = hub.join("provider", "p1", token="shared")
    hub.offer(p1, images=[stored.digest])
    hub.rent(alice, 1, p1, image="app:1")
    [row] = shown(hub, ALICE, Query("images"))["rows"]
    assert row == {
        "digest": stored.digest,
        "tags": ["app:1"],
        "size": stored.size,
        "arch": "amd64",
        "pushed": 1.0,
        "last_used": NOW,
        "in_use": 1,
        "holders": ["p1"],
        "held": 1,
    }
    assert shown(hub, ADMIN, Query("images"))["used"] == catalog.used
    assert shown(hub, ALICE, Query("images"))["used"] is None
    assert shown(hub, BOB, Query("images"))["rows"] == []
    [activity] = shown(hub, ALICE, Query("activities", "app"))["rows"]  # shown by its tag, found by it
    assert activity["image"] == "app:1"


# --- history -----------------------------------------------------------------------------------


def reading_of(commands: int = 0, moved: int = 0, providers: int = 1) -> Reading:
    return Reading(providers, 2, 8.0, 3.0, 1.25, commands, moved)


def test_the_history_keeps_rates_of_counters_and_an_hour_of_samples() -> None:
    history = History(step=5, size=3)
    assert history.record(100.0, reading_of(10, 1000)) == [100.0, 1, 2, 8, 3, 1.25, 0, 0]
    assert history.record(102.0, reading_of(20, 2000)) is None  # too soon: not kept
    assert history.record(105.0, reading_of(30, 6000)) == [105.0, 1, 2, 8, 3, 1.25, 4.0, 1000.0]
    history.record(110.0, reading_of(30, 6000, providers=2))
    history.record(115.0, reading_of(30, 6000, providers=3))
    times, providers, *_ = history.columns()
    assert times == [105.0, 110.0, 115.0] and providers == [1, 2, 3]
    assert history.latest()["providers"] == 3 and History().latest()["commands"] == 0
    assert history.columns(("providers",)) == [times, providers]
    with pytest.raises(ValueError, match="step"):
        History(step=0)


def test_a_requestor_gets_the_markets_series_only(hub: HubHarness) -> None:
    history = History(step=5)
    history.record(NOW, reading(hub.core, totals(hub.core)))
    history.record(NOW + 5, reading(hub.core, totals(hub.core)))
    rows = history_rows(history, ADMIN, -math.inf)
    assert len(rows) == 2 and len(rows[0]) == 1 + len(SERIES)
    assert rows[0][1:5] == [2, 3, 12, 4]
    assert history_rows(history, ALICE, NOW) == [[NOW + 5, 2, 12, 4]]
    assert history_rows(history, ALICE, NOW + 5) == []


# --- the files served ---------------------------------------------------------------------------

DASHBOARD = files("kiln.hub.dashboard")


def test_the_page_loads_only_files_of_its_own_and_nothing_inline() -> None:
    """The hub serves it with CSP default-src 'self': no inline script or style, nothing from elsewhere."""
    html = DASHBOARD.joinpath("index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "an inline script"
    assert "<style" not in html and " style=" not in html, "an inline style"
    for url in re.findall(r'(?:src|href)="([^"#]+)"', html):
        if url.startswith("data:"):
            continue
        assert url.startswith("/assets/"), url
        assert DASHBOARD.joinpath(*url.removeprefix("/assets/").split("/")).is_file(), url
    script = DASHBOARD.joinpath("app.js").read_text()
    assert "innerHTML" not in script and "eval(" not in script  # text from peers is shown as text
