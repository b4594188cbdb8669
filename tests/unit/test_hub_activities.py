"""Listing activities (1.3), in the hub's core: a requestor sees its own, an admin everyone's,
and an admin still touches only its own. Literal messages, a fake credential store, no sockets."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from kiln.hub.access import Credential
from kiln.hub.actions import Send
from kiln.hub.catalog import Catalog, Tenant
from kiln.hub.core import HubCore
from kiln.hub.records import LeaseRecord, SessionRecord
from kiln.protocol.messages import MAX_LISTED, Resources
from tests.unit.test_hub_access import FakeCredentials
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


class Hub:
    """A core with credentials (and the shared token ``shared``) on a clock the test moves."""

    def __init__(self, catalog: Catalog | None = None) -> None:
        ids = itertools.count(1)
        self.now = NOW
        self.core = HubCore(token="shared", credentials=FakeCredentials(live=dict(CREDENTIALS)), catalog=catalog,
                            new_activity_id=lambda: f"a{next(ids):02}", clock=lambda: self.now)  # fmt: skip
        self.peers = itertools.count(1)

    def send(self, peer: int, message: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
        actions = self.core.receive_text(peer, json.dumps(message).encode())
        return [(a.peer, json.loads(a.data)) for a in actions if isinstance(a, Send) and not a.binary]

    def join(self, role: str, name: str, token: str, version: str = "1.3", **offer: Any) -> int:
        peer = next(self.peers)
        self.core.connect(peer)
        [(_, welcome)] = self.send(peer, {"type": "hello", "version": version, "role": role, "name": name,
                                          "token": token})  # fmt: skip
        assert welcome["type"] == "welcome", welcome
        if role == "provider":
            resources = {"cpus": 8, "memory": 8 * 2**30, "storage": 2**40}
            done = self.send(peer, {"type": "offer", "id": 1, "resources": resources, "arch": "amd64", **offer})
            assert done == [(peer, {"type": "done", "re": 1})]
        return peer

    def create(self, requestor: int, rid: int, *, image: str = "img:1", cpus: float = 1, **more: Any) -> dict[str, Any]:
        """A rent, left being created: the create it sent its provider."""
        rent = {"type": "rent", "id": rid, "image": image, "demand": {"cpus": cpus, "memory": 64 * MiB}, **more}
        [(_, create)] = self.send(requestor, rent)
        assert create["type"] == "create", create
        return create

    def rent(self, requestor: int, rid: int, provider: int, **more: Any) -> str:
        create = self.create(requestor, rid, **more)
        [(_, rented)] = self.send(provider, {"type": "done", "re": create["id"]})
        assert rented["type"] == "rented", rented
        return str(rented["activity"])

    def listed(self, peer: int, rid: int = 90, **query: Any) -> dict[str, Any]:
        [(to, reply)] = self.send(peer, {"type": "activities", "id": rid, **query})
        assert to == peer
        return reply


def ids(reply: dict[str, Any]) -> list[str]:
    return [a["id"] for a in reply["activities"]]


@pytest.fixture
def hub() -> Hub:
    return Hub()


def test_a_requestor_lists_only_its_own(hub: Hub) -> None:
    p1 = hub.join("provider", "p1", "prov-p1")
    alice, bob = hub.join("requestor", "alice", "alice"), hub.join("requestor", "bob", "bob")
    mine = hub.rent(alice, 1, p1, group="job-1")
    theirs = hub.rent(bob, 1, p1)
    hub.create(alice, 2)  # still being created
    reply = hub.listed(alice)
    assert reply == {"type": "activity_list", "re": 90, "matched": 2, "activities": [
        {"id": mine, "requestor": "alice", "credential": 3, "provider": "p1", "state": "ready", "group": "job-1",
         "started": NOW, "image": "img:1", "resources": {"cpus": 1, "memory": 64 * MiB, "storage": 256 * MiB}},
        {"id": "a03", "requestor": "alice", "credential": 3, "provider": "p1", "state": "creating", "image": "img:1",
         "resources": {"cpus": 1, "memory": 64 * MiB, "storage": 256 * MiB}},
    ]}  # fmt: skip
    assert ids(hub.listed(bob)) == [theirs]
    assert ids(hub.listed(bob, all=False, limit=1)) == [theirs]
    assert hub.listed(hub.join("requestor", "carol", "shared")) == {"type": "activity_list", "re": 90,
                                                                    "activities": [], "matched": 0}  # fmt: skip


@pytest.mark.parametrize("token", ["alice", "shared", None])
def test_listing_every_activity_needs_an_admin_credential(token: str | None) -> None:
    hub = Hub()
    if token is None:
        hub.core = HubCore()  # an open hub: no credential at all, so no admin either
    p1 = hub.join("provider", "p1", "prov-p1")
    requestor = hub.join("requestor", "r", token or "")
    other = hub.join("requestor", "bob", "bob" if token is not None else "")
    activity = hub.rent(other, 1, p1)
    before = dict(hub.core.activities)
    reply = hub.listed(requestor, 7, all=True)
    assert (reply["type"], reply["re"], reply["code"]) == ("error", 7, "unauthorized")
    assert "admin credential" in reply["message"]
    # Nothing else changed: the session goes on, the other's activity is untouched and still not its.
    assert hub.core.activities == before and hub.core.activities[activity].state == "ready"
    assert hub.listed(requestor, 7)["activities"] == []
    assert hub.send(requestor, {"type": "release", "id": 8, "activity": activity})[0][1]["code"] == "unknown_activity"


def test_an_admin_lists_every_activity_in_every_state() -> None:
    catalog = Catalog(2**30)
    stored = image(catalog, blob("layer", 10), tags=("app:1",), tenant=Tenant(3))  # alice's
    hub = Hub(catalog)
    # A session the last run of the hub held: its activity is absent until provider p2 dials again.
    held = SessionRecord("s-old", "dave", 4, b"\x01" * 32)
    hub.core.restore([held], [LeaseRecord("a00", "s-old", "p2", Resources(cpus=2, memory=128 * MiB), "job-9",
                                          stored.digest, NOW - 50)])  # fmt: skip
    p1 = hub.join("provider", "p1", "prov-p1", images=[stored.digest])
    alice, bob = hub.join("requestor", "alice", "alice"), hub.join("requestor", "bob", "bob")
    admin = hub.join("requestor", "ops-console", "adm")
    ready = hub.rent(alice, 1, p1, image="app:1")  # a stored image, named by its tag: listed by digest
    hub.now += 10
    going = hub.rent(bob, 1, p1, cpus=0.5)
    [(_, destroy)] = hub.send(bob, {"type": "release", "id": 2, "activity": going})
    assert destroy["type"] == "destroy"  # not answered yet: being destroyed
    hub.create(alice, 3, group="job-2")
    resources = {"cpus": 1, "memory": 64 * MiB, "storage": 256 * MiB}  # the default, given and reserved
    reply = hub.listed(admin, all=True)
    assert reply == {"type": "activity_list", "re": 90, "matched": 4, "activities": [
        {"id": "a00", "requestor": "dave", "credential": 4, "provider": "p2", "state": "absent", "group": "job-9",
         "started": NOW - 50, "image": stored.digest, "resources": {"cpus": 2, "memory": 128 * MiB, "storage": 0}},
        {"id": ready, "requestor": "alice", "credential": 3, "provider": "p1", "state": "ready", "started": NOW,
         "image": stored.digest, "resources": resources},
        {"id": going, "requestor": "bob", "credential": 4, "provider": "p1", "state": "destroying", "started": NOW + 10,
         "image": "img:1", "resources": {**resources, "cpus": 0.5}},
        {"id": "a03", "requestor": "alice", "credential": 3, "provider": "p1", "state": "creating", "group": "job-2",
         "image": "img:1", "resources": resources},
    ]}  # fmt: skip
    assert hub.listed(admin) == {"type": "activity_list", "re": 90, "activities": [], "matched": 0}, "its own: none"


def test_the_list_is_bounded_by_limit_and_matched_counts_all(hub: Hub) -> None:
    p1 = hub.join("provider", "p1", "prov-p1")
    alice, admin = hub.join("requestor", "alice", "alice"), hub.join("requestor", "ops", "adm")
    rented = [hub.rent(alice, rid, p1, cpus=0.25) for rid in range(1, 6)]
    mine = hub.rent(admin, 1, p1, cpus=0.25)
    every = hub.listed(admin, all=True, limit=2)
    assert (ids(every), every["matched"]) == (rented[:2], 6)
    assert (ids(hub.listed(admin, all=True)), hub.listed(admin, all=True)["matched"]) == ([*rented, mine], 6)
    own = hub.listed(alice, limit=3)
    assert (ids(own), own["matched"]) == (rented[:3], 5)
    [(_, refused)] = hub.send(admin, {"type": "activities", "id": 5, "all": True, "limit": MAX_LISTED + 1})
    assert (refused["re"], refused["code"]) == (5, "bad_message")


def test_a_requestor_that_resumes_under_another_name_is_listed_under_it(hub: Hub) -> None:
    p1 = hub.join("provider", "p1", "prov-p1")
    first = next(hub.peers)
    hub.core.connect(first)
    [(_, welcome)] = hub.send(first, {"type": "hello", "version": "1.3", "role": "requestor", "name": "alice",
                                      "token": "alice"})  # fmt: skip
    activity = hub.rent(first, 1, p1)
    hub.core.disconnect(first, "dropped")
    admin = hub.join("requestor", "ops", "adm")
    assert hub.listed(admin, all=True)["activities"][0]["requestor"] == "alice", "held for its requestor"
    again = next(hub.peers)
    hub.core.connect(again)
    hub.send(again, {"type": "hello", "version": "1.3", "role": "requestor", "name": "alice-2", "token": "alice",
                     "resume": welcome["resume"]})  # fmt: skip
    [listed] = hub.listed(admin, all=True)["activities"]
    assert (listed["id"], listed["requestor"]) == (activity, "alice-2")


def test_an_admin_cannot_touch_anothers_activity(hub: Hub) -> None:
    p1 = hub.join("provider", "p1", "prov-p1")
    alice, admin = hub.join("requestor", "alice", "alice"), hub.join("requestor", "ops", "adm")
    theirs = hub.rent(alice, 1, p1)
    assert ids(hub.listed(admin, all=True)) == [theirs]
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
    core = HubCore(token="shared", credentials=FakeCredentials(live=dict(CREDENTIALS)), limits_=limits)
    hub = Hub()
    hub.core = core
    p1 = hub.join("provider", "p" * 64, "shared")
    admin = hub.join("requestor", "\N{GRINNING FACE}" * 64, "adm")
    for rid in range(1, 101):
        hub.rent(admin, rid, p1, image="registry.example:5000/" + "i" * 200, cpus=0.01)
    [sent] = core.receive_text(admin, json.dumps({"type": "activities", "id": 900, "all": True}))
    assert isinstance(sent, Send) and len(sent.data) <= 16 * 1024
    reply = json.loads(sent.data)
    assert reply["matched"] == 100 and 0 < len(reply["activities"]) < 100
