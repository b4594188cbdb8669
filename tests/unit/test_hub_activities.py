"""Listing activities (1.3), in the hub's core: a requestor sees its own, an admin everyone's,
and an admin still touches only its own. Literal messages, a fake credential store, no sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kiln.hub.access import Credential
from kiln.hub.actions import Send
from kiln.hub.catalog import Catalog, Tenant
from kiln.hub.core import HubCore
from kiln.hub.records import LeaseRecord, SessionRecord
from kiln.protocol.messages import MAX_LISTED, Resources
from tests.hubcore import FakeCredentials, HubHarness
from tests.unit.test_hub_images import blob, image

MiB = 2**20
NOW = 1_700_000_000.0
CREDENTIALS = {
    "prov-p1": Credential(1, "provider", "p1"),
    "prov-p2": Credential(2, "provider", "p2"),
    "alice": Credential(3, "requestor", None),
    "bob": Credential(4, "requestor", None),
    "adm": Credential(5, "admin", "ops"),
}


def hub_of(catalog: Catalog | None = None, **options: Any) -> HubHarness:
    """A core with credentials (and the shared token ``shared``) on a clock the test moves."""
    if "token" not in options:
        options |= {"token": "shared", "credentials": FakeCredentials(live=dict(CREDENTIALS))}
    return HubHarness(version="1.3", activity_ids="a{:02}", now=NOW, frames=False, catalog=catalog, **options)


def enter(hub: HubHarness, role: str, name: str, token: str, version: str | None = None, **offer: Any) -> int:
    """A peer joined with ``token``; a provider offers 8 CPUs and 8 GiB (or ``resources``)."""
    peer = hub.join(role, name, token=token, version=version)
    if role == "provider":
        hub.offer(peer, cpus=8, memory=8 * 2**30, **offer)
    return peer


def create(hub: HubHarness, requestor: int, rid: int, **more: Any) -> dict[str, Any]:
    """A rent of 64 MiB, left being created: the create it sent its provider."""
    return hub.create(requestor, rid, memory=64 * MiB, **more)[1]


def rent(hub: HubHarness, requestor: int, rid: int, provider: int, **more: Any) -> str:
    return hub.rent(requestor, rid, provider, memory=64 * MiB, **more)


def listed(hub: HubHarness, peer: int, rid: int = 90, **query: Any) -> dict[str, Any]:
    [(to, reply)] = hub.send(peer, {"type": "activities", "id": rid, **query})
    assert to == peer
    return dict(reply)


def ids(reply: dict[str, Any]) -> list[str]:
    return [a["id"] for a in reply["activities"]]


@pytest.fixture
def hub() -> HubHarness:
    return hub_of()


def test_a_requestor_lists_only_its_own(hub: HubHarness) -> None:
    p1 = enter(hub, "provider", "p1", "prov-p1")
    alice, bob = enter(hub, "requestor", "alice", "alice"), enter(hub, "requestor", "bob", "bob")
    mine = rent(hub, alice, 1, p1, group="job-1")
    theirs = rent(hub, bob, 1, p1)
    create(hub, alice, 2)  # still being created
    reply = listed(hub, alice)
    assert reply == {
        "type": "activity_list",
        "re": 90,
        "matched": 2,
        "activities": [
            {
                "id": mine,
                "requestor": "alice",
                "credential": 3,
                "provider": "p1",
                "state": "ready",
                "group": "job-1",
                "started": NOW,
                "image": "img:1",
                "resources": {"cpus": 1, "memory": 64 * MiB, "storage": 256 * MiB},
            },
            {
                "id": "a03",
                "requestor": "alice",
                "credential": 3,
                "provider": "p1",
                "state": "creating",
                "image": "img:1",
                "resources": {"cpus": 1, "memory": 64 * MiB, "storage": 256 * MiB},
            },
        ],
    }
    assert ids(listed(hub, bob)) == [theirs]
    assert ids(listed(hub, bob, all=False, limit=1)) == [theirs]
    assert listed(hub, enter(hub, "requestor", "carol", "shared")) == {
        "type": "activity_list",
        "re": 90,
        "activities": [],
        "matched": 0,
    }


@pytest.mark.parametrize("token", ["alice", "shared", None])
def test_listing_every_activity_needs_an_admin_credential(token: str | None) -> None:
    # With no token: an open hub, no credential at all, so no admin either.
    hub = hub_of() if token is not None else hub_of(token=None)
    p1 = enter(hub, "provider", "p1", "prov-p1")
    requestor = enter(hub, "requestor", "r", token or "")
    other = enter(hub, "requestor", "bob", "bob" if token is not None else "")
    activity = rent(hub, other, 1, p1)
    before = dict(hub.core.activities)
    reply = listed(hub, requestor, 7, all=True)
    assert (reply["type"], reply["re"], reply["code"]) == ("error", 7, "unauthorized")
    assert "admin credential" in reply["message"]
    # Nothing else changed: the session goes on, the other's activity is untouched and still not its.
    assert hub.core.activities == before and hub.core.activities[activity].state == "ready"
    assert listed(hub, requestor, 7)["activities"] == []
    assert hub.send(requestor, {"type": "release", "id": 8, "activity": activity})[0][1]["code"] == "unknown_activity"


def test_an_admin_lists_every_activity_in_every_state() -> None:
    catalog = Catalog(2**30)
    stored = image(catalog, blob("layer", 10), tags=("app:1",), tenant=Tenant(3))  # alice's
    hub = hub_of(catalog)
    # A session the last run of the hub held: its activity is absent until provider p2 dials again.
    held = SessionRecord("s-old", "dave", 4, b"\x01" * 32)
    hub.core.restore(
        [held],
        [LeaseRecord("a00", "s-old", "p2", Resources(cpus=2, memory=128 * MiB), "job-9", stored.digest, NOW - 50)],
    )
    p1 = enter(hub, "provider", "p1", "prov-p1", images=[stored.digest])
    alice, bob = enter(hub, "requestor", "alice", "alice"), enter(hub, "requestor", "bob", "bob")
    admin = enter(hub, "requestor", "ops-console", "adm")
    ready = rent(hub, alice, 1, p1, image="app:1")  # a stored image, named by its tag: listed by digest
    hub.now += 10
    going = rent(hub, bob, 1, p1, cpus=0.5)
    [(_, destroy)] = hub.send(bob, {"type": "release", "id": 2, "activity": going})
    assert destroy["type"] == "destroy"  # not answered yet: being destroyed
    create(hub, alice, 3, group="job-2")
    resources = {"cpus": 1, "memory": 64 * MiB, "storage": 256 * MiB}  # the default, given and reserved
    reply = listed(hub, admin, all=True)
    assert reply == {
        "type": "activity_list",
        "re": 90,
        "matched": 4,
        "activities": [
            {
                "id": "a00",
                "requestor": "dave",
                "credential": 4,
                "provider": "p2",
                "state": "absent",
                "group": "job-9",
                "started": NOW - 50,
                "image": stored.digest,
                "resources": {"cpus": 2, "memory": 128 * MiB, "storage": 0},
            },
            {
                "id": ready,
                "requestor": "alice",
                "credential": 3,
                "provider": "p1",
                "state": "ready",
                "started": NOW,
                "image": stored.digest,
                "resources": resources,
            },
            {
                "id": going,
                "requestor": "bob",
                "credential": 4,
                "provider": "p1",
                "state": "destroying",
                "started": NOW + 10,
                "image": "img:1",
                "resources": {**resources, "cpus": 0.5},
            },
            {
                "id": "a03",
                "requestor": "alice",
                "credential": 3,
                "provider": "p1",
                "state": "creating",
                "group": "job-2",
                "image": "img:1",
                "resources": resources,
            },
        ],
    }
    assert listed(hub, admin) == {"type": "activity_list", "re": 90, "activities": [], "matched": 0}, "its own: none"


def test_the_list_is_bounded_by_limit_and_matched_counts_all(hub: HubHarness) -> None:
    p1 = enter(hub, "provider", "p1", "prov-p1")
    alice, admin = enter(hub, "requestor", "alice", "alice"), enter(hub, "requestor", "ops", "adm")
    rented = [rent(hub, alice, rid, p1, cpus=0.25) for rid in range(1, 6)]
    mine = rent(hub, admin, 1, p1, cpus=0.25)
    every = listed(hub, admin, all=True, limit=2)
    assert (ids(every), every["matched"]) == (rented[:2], 6)
    assert (ids(listed(hub, admin, all=True)), listed(hub, admin, all=True)["matched"]) == ([*rented, mine], 6)
    own = listed(hub, alice, limit=3)
    assert (ids(own), own["matched"]) == (rented[:3], 5)
    [(_, refused)] = hub.send(admin, {"type": "activities", "id": 5, "all": True, "limit": MAX_LISTED + 1})
    assert (refused["re"], refused["code"]) == (5, "bad_message")


def test_a_requestor_that_resumes_under_another_name_is_listed_under_it(hub: HubHarness) -> None:
    p1 = enter(hub, "provider", "p1", "prov-p1")
    first, [(_, welcome)] = hub.hello("requestor", "alice", token="alice")
    activity = rent(hub, first, 1, p1)
    hub.core.disconnect(first, "dropped")
    admin = enter(hub, "requestor", "ops", "adm")
    assert listed(hub, admin, all=True)["activities"][0]["requestor"] == "alice", "held for its requestor"
    hub.hello("requestor", "alice-2", token="alice", resume=welcome["resume"])
    [entry] = listed(hub, admin, all=True)["activities"]
    assert (entry["id"], entry["requestor"]) == (activity, "alice-2")


def test_an_admin_cannot_touch_anothers_activity(hub: HubHarness) -> None:
    p1 = enter(hub, "provider", "p1", "prov-p1")
    alice, admin = enter(hub, "requestor", "alice", "alice"), enter(hub, "requestor", "ops", "adm")
    theirs = rent(hub, alice, 1, p1)
    assert ids(listed(hub, admin, all=True)) == [theirs]
    requests: list[dict[str, Any]] = [
        {"type": "release", "activity": theirs},
        {"type": "exec", "activity": theirs, "argv": ["true"]},
        {"type": "upload", "activity": theirs, "path": "/golem/input/x", "size": 1},
        {"type": "download", "activity": theirs, "path": "/golem/output", "window": 4},
    ]
    for rid, request in enumerate(requests, start=10):
        [(to, error)] = hub.send(admin, {**request, "id": rid})
        assert (to, error["re"], error["code"]) == (admin, rid, "unknown_activity"), request
    assert hub.core.activities[theirs].state == "ready"
    # Its owner still can.
    [(to, destroy)] = hub.send(alice, {"type": "release", "id": 2, "activity": theirs})
    assert (to, destroy["type"]) == (p1, "destroy")


def test_a_listing_never_outgrows_one_message() -> None:
    limits = HubCore().limits.model_copy(update={"max_message_bytes": 16 * 1024})
    hub = hub_of(limits_=limits)
    p1 = enter(hub, "provider", "p" * 64, "shared")
    admin = enter(hub, "requestor", "\N{GRINNING FACE}" * 64, "adm")
    for rid in range(1, 101):
        rent(hub, admin, rid, p1, image="registry.example:5000/" + "i" * 200, cpus=0.01)
    [sent] = hub.core.receive_text(admin, json.dumps({"type": "activities", "id": 900, "all": True}))
    assert isinstance(sent, Send) and len(sent.data) <= 16 * 1024
    reply = json.loads(sent.data)
    assert reply["matched"] == 100 and 0 < len(reply["activities"]) < 100
