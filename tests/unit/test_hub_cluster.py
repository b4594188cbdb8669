"""The core's rules for several hubs on one database (kiln.hub.cluster), against a cluster kept in
memory: what the database decides (a claim, a reservation, an adoption) is given, and the core must
act on it. The database's side of each: tests/service/test_hub_links.py and the state's tests."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from kiln.hub.base import secret_digest
from kiln.hub.cluster import offer_of, offer_text
from kiln.hub.ledger import Post
from kiln.hub.records import Adopted, LeaseRecord, SessionRecord
from kiln.protocol.messages import Offer, Price, Resources
from tests.hubcore import HubHarness

SLOT = 5


@dataclass
class Cluster:
    """The database as the core sees it: who holds what, decided here by the test."""

    taken: set[str] = field(default_factory=set)  # providers a live hub holds
    sold: set[str] = field(default_factory=set)  # providers whose capacity other hubs sold
    held: dict[bytes, str] = field(default_factory=dict)  # resume secrets' sha256 -> a live hub's session
    gone: dict[bytes, Adopted] = field(default_factory=dict)  # resume secrets' sha256 -> a dead hub's session
    dead: dict[str, Adopted] = field(default_factory=dict)  # activity -> what adopting it takes back
    elsewhere: set[str] = field(default_factory=set)  # activities a live hub holds
    reserved: list[str] = field(default_factory=list)
    unreserved: list[str] = field(default_factory=list)

    def claim_provider(self, name: str) -> bool:
        return name not in self.taken

    def release_provider(self, name: str) -> None:
        self.taken.discard(name)

    def adopt_session(self, secret: bytes) -> Adopted | None:
        if secret in self.held:
            return Adopted([], [], [], frozenset({self.held[secret]}))
        return self.gone.pop(secret, None)

    def adopt_leases(self, provider: str, activities: Collection[str]) -> Adopted:
        found = [self.dead.pop(a) for a in activities if a in self.dead]
        sessions = [s for a in found for s in a.sessions]
        leases = [lr for a in found for lr in a.leases]
        return Adopted(sessions, leases, [], frozenset(a for a in activities if a in self.elsewhere))

    def reserve(self, activity: str, session: str, provider: str, resources: Resources) -> bool:
        if provider in self.sold:
            return False
        self.reserved.append(provider)
        return True

    def unreserve(self, activity: str) -> None:
        self.unreserved.append(activity)

    def hold(self, post: Post) -> bool:
        return True


def harness(cluster: Cluster) -> HubHarness:
    hub = HubHarness(cluster=cluster, version="1.6", grace=60)
    hub.core.slot = SLOT
    return hub


def test_a_provider_another_live_hub_holds_is_refused_its_ids_are_this_hubs() -> None:
    cluster = Cluster(taken={"p1"})
    hub = harness(cluster)
    _, out = hub.hello("provider", "p1")
    assert out[0][1]["code"] == "name_taken" and "another hub" in out[0][1]["message"]
    p2 = hub.provider("p2")
    r = hub.join("requestor", "r")
    _, create = hub.create(r, 1)
    assert create["id"] % 64 == SLOT and hub.core.peers[p2].next_id == create["id"] + 64


def test_a_rent_whose_reservation_the_database_refuses_goes_to_the_next_provider() -> None:
    cluster = Cluster(sold={"p1"})
    hub = harness(cluster)
    hub.provider("p1", cpus=8)  # the most free: chosen first, but sold elsewhere
    p2 = hub.provider("p2", cpus=2)
    r = hub.join("requestor", "r")
    to, _ = hub.create(r, 1)
    assert to == p2 and cluster.reserved == ["p2"]
    cluster.sold.add("p2")
    rent = {"type": "rent", "id": 2, "image": "img:1", "demand": {"cpus": 1, "memory": 2**28}}
    [(_, refused)] = hub.send(r, rent)
    assert refused["code"] == "no_match" and "other hubs" in refused["message"]
    [(_, failed)] = hub.send(
        to, {"type": "error", "re": hub.core.peers[r].open[1][1], "code": "internal", "message": "x"}
    )
    assert failed["code"] == "internal" and cluster.unreserved == ["a1"]  # never a lease: its reservation goes


def test_a_resume_of_a_session_a_live_hub_holds_is_closed_to_be_tried_again() -> None:
    cluster = Cluster(held={secret_digest("s3cret"): "s1"})
    hub = harness(cluster)
    peer, out = hub.hello("requestor", "r", resume="s3cret")
    assert out == [] and hub.close_code(peer) == 1013
    assert hub.join("requestor", "r") > 0  # a hello without resume is welcomed


def test_a_provider_back_with_activities_keeps_those_a_live_hub_holds_and_takes_a_dead_hubs() -> None:
    adopted = Adopted(
        [SessionRecord("s9", "r", None, secret_digest("s9"))],
        [LeaseRecord("dead1", "s9", "p1", Resources(cpus=1, memory=1, storage=0), None, None, 0.0)],
        [],
    )
    cluster = Cluster(dead={"dead1": adopted}, elsewhere={"live1"})
    hub = harness(cluster)
    p1 = hub.join("provider", "p1", activities=["dead1", "live1", "nobody"])
    destroyed = [e[1]["activity"] for e in hub.events if isinstance(e, tuple) and e[1]["type"] == "destroy"]
    assert destroyed == ["nobody"]
    assert hub.core.activities["dead1"].state == "ready" and hub.core.activities["dead1"].provider == p1
    r = hub.join("requestor", "r", resume="s9")
    assert r > 0 and hub.core.activities["dead1"].requestor == r


def test_a_session_adopted_from_a_dead_hub_finds_its_leases_on_a_provider_connected_here() -> None:
    """Hub A rented p1 of this hub through a link, then died; its requestor resumes here. p1 runs
    "dead1" (its hello said so while A was alive) and not "dead2": the first is back at once, the
    second lost at once; neither waits for a hello that will not come."""
    resources = Resources(cpus=1, memory=1, storage=0)
    adopted = Adopted(
        [SessionRecord("s9", "r", None, secret_digest("s9"))],
        [LeaseRecord(a, "s9", "p1", resources, None, None, 0.0) for a in ("dead1", "dead2")],
        [],
    )
    cluster = Cluster(elsewhere={"dead1"}, gone={secret_digest("s9"): adopted})
    hub = harness(cluster)
    p1 = hub.join("provider", "p1", activities=["dead1"])  # hub A alive: its activity is kept
    r = hub.join("requestor", "r", resume="s9")
    lease = hub.core.activities["dead1"]
    assert (lease.state, lease.provider, lease.requestor) == ("ready", p1, r)
    assert "dead2" not in hub.core.activities


def offer(cpus: float) -> Offer:
    resources = Resources(cpus=cpus, memory=2**30, storage=2**40)
    return Offer(type="offer", id=1, resources=resources, arch="amd64", images=["img:1"])


def test_a_remote_providers_leases_wait_while_its_link_is_down_and_come_back() -> None:
    hub = harness(Cluster())
    remote = 100
    hub.take(hub.core.remote(remote, "far", "hubB", 6, offer(4)))
    r = hub.join("requestor", "r")
    activity = hub.rent(r, 1, provider=remote)
    hub.take(hub.core.remote_linked(remote, "hubB:7", []))
    hub.take(hub.core.remote_unlinked(remote, "the link broke"))
    lease = hub.core.activities[activity]
    assert (lease.state, lease.provider) == ("absent", -1)
    hub.take(hub.core.remote_linked(remote, "hubB:7", []))  # the same connection: all back
    assert (hub.core.activities[activity].state, hub.core.activities[activity].provider) == ("ready", remote)
    hub.take(hub.core.remote_unlinked(remote, "the link broke"))
    hub.take(hub.core.remote_linked(remote, "hubC:2", ["other"]))  # another connection, without it
    assert activity not in hub.core.activities
    destroyed = [e for e in hub.events if isinstance(e, tuple) and e[1]["type"] == "destroy"]
    assert destroyed == []  # another hub's activity ("other") is its own hub's to keep or end


def test_an_offer_comes_back_from_the_database_as_it_was_with_its_price_in_micro_credits() -> None:
    price = Price(start=0.01, cpu_hour=0.2, env_hour=0.05)
    offer = Offer(
        type="offer",
        id=1,
        resources=Resources(cpus=1, memory=2**30, storage=2**30),
        arch="amd64",
        images=["kiln-busybox:latest"],
        price=price,
    )
    assert offer_of(offer_text(5, offer)) == (5, offer)
    assert (price.start, price.cpu_hour, price.env_hour) == (10_000, 200_000, 50_000)
    assert offer_of("{") is None and offer_of('{"minor": 5}') is None


def test_a_lease_adopted_on_a_provider_no_link_reached_is_destroyed_there_when_the_grace_ends() -> None:
    """A session adopted here holds a lease on a provider of another hub, which it never reached
    within the grace period: the lease is lost, and the provider told to destroy its container (else
    it runs on, its capacity sold again)."""
    lease = LeaseRecord("far1", "s9", "far", Resources(cpus=1, memory=1, storage=0), None, None, 0.0)
    adopted = Adopted([SessionRecord("s9", "r", None, secret_digest("s9"))], [lease], [])
    hub = harness(Cluster(gone={secret_digest("s9"): adopted}))
    remote = 100
    hub.take(hub.core.remote(remote, "far", "hubB", 6, offer(4)))
    hub.join("requestor", "r", resume="s9")
    assert hub.core.activities["far1"].state == "absent"
    hub.expire(61)
    assert "far1" not in hub.core.activities
    destroyed = [(e[0], e[1]["activity"]) for e in hub.events if isinstance(e, tuple) and e[1]["type"] == "destroy"]
    assert destroyed == [(remote, "far1")]
