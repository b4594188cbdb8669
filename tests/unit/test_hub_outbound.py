"""Outbound access (1.7) at the hub: a rent goes only to a provider whose policy covers it, the
create carries the rent's rules, and listings and the other hubs of a database see the policies."""

from __future__ import annotations

import pytest

from kiln.hub.cluster import offer_of, offer_text
from kiln.hub.market import Market
from kiln.protocol.errors import NoMatch
from kiln.protocol.messages import Demand, Offer, Resources
from tests.hubcore import HubHarness

GiB = 2**30


def offer(outbound: str | list[str] | None) -> Offer:
    resources = Resources(cpus=2, memory=2 * GiB, storage=GiB)
    return Offer(type="offer", id=1, resources=resources, arch="amd64", outbound=outbound)  # type: ignore[arg-type]


def test_a_rent_goes_only_where_the_policy_covers_every_rule() -> None:
    market = Market()
    market.update(1, "none", offer(None))
    market.update(2, "org", offer(["*.org:443", "example.com:*"]))
    market.update(3, "any", offer("any"))
    market.reserve(3, Resources(cpus=2, memory=1))  # the one that allows anything is busy
    assert market.choose("img", Demand())[0] == 1  # no outbound asked: any provider
    assert market.choose("img", Demand(outbound=["pypi.org:443", "example.com:8443"]))[0] == 2
    with pytest.raises(NoMatch, match="busy"):  # "any" covers it, and is busy
        market.choose("img", Demand(outbound=["pypi.org:80"]))
    market.remove(3)
    with pytest.raises(NoMatch, match=r"outbound policy covers the demand.s outbound access \(pypi\.org:80\)"):
        market.choose("img", Demand(outbound=["pypi.org:80"]))
    with pytest.raises(NoMatch, match=r"^no provider whose outbound policy covers the demand's offers 4 CPUs"):
        market.choose("img", Demand(cpus=4, outbound=["pypi.org:443"]))


def test_the_create_carries_the_rules_and_listings_show_the_policy() -> None:
    hub = HubHarness(version="1.7")
    hub.provider("closed", images=["img:1"])
    open_ = hub.provider("open", images=["img:1"], outbound=["*.example.org:443"])
    requestor = hub.join("requestor", "r1")
    rent = {"type": "rent", "id": 5, "image": "img:1", "demand": {"outbound": ["a.example.org:443"]}}
    [(to, create)] = hub.send(requestor, rent)
    assert (to, create["type"], create["outbound"]) == (open_, "create", ["a.example.org:443"])
    [(_, refused)] = hub.send(requestor, {**rent, "id": 6, "demand": {"outbound": ["example.org:443"]}})
    assert refused["code"] == "no_match" and "outbound" in refused["message"], refused
    [(_, plain)] = hub.send(requestor, {"type": "rent", "id": 7, "image": "img:1", "demand": {}})
    assert "outbound" not in plain, plain  # a rent that asks none: a create that names none
    [(_, listing)] = hub.send(requestor, {"type": "market", "id": 8})
    policies = {info["name"]: info.get("outbound") for info in listing["providers"]}
    assert policies == {"closed": None, "open": ["*.example.org:443"]}
    older = hub.join("requestor", "r0", version="1.6")
    [(_, listing)] = hub.send(older, {"type": "market", "id": 1})
    assert all("outbound" not in info for info in listing["providers"])


def test_other_hubs_of_a_database_read_the_policy() -> None:
    for policy in ("any", ["pypi.org:443"], None):
        read = offer_of(offer_text(7, offer(policy)))
        assert read is not None and read[1].outbound == policy
