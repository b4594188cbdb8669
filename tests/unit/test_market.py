"""The market's bookkeeping on its own: offers, choices, reservations, listings."""

from __future__ import annotations

import random

import pytest

from kiln.hub.catalog import StoredImage
from kiln.hub.market import FEW_HOLDERS, Market, granted
from kiln.protocol.errors import NoMatch
from kiln.protocol.limits import DEFAULT_STORAGE, MIN_STORAGE
from kiln.protocol.messages import Blob, Demand, Manifest, Offer, Resources

GiB = 2**30


def offer(cpus: float = 2, memory: int = 2 * GiB, images: list[str] | None = None, **labels: str) -> Offer:
    resources = Resources(cpus=cpus, memory=memory, storage=GiB)
    return Offer(type="offer", id=1, resources=resources, arch="amd64", labels=labels, images=images or [])


def test_a_new_offer_keeps_what_is_reserved() -> None:
    market = Market()
    market.update(1, "p1", offer(cpus=4))
    market.reserve(1, Resources(cpus=3, memory=GiB))
    market.update(1, "p1", offer(cpus=4, images=["img:1"]))
    [info], matched = market.describe()
    assert (info.free.cpus, info.free.memory, info.activities, info.images, matched) == (1, GiB, 1, ["img:1"], 1)
    with pytest.raises(NoMatch, match="busy"):
        market.choose("img:1", Demand(cpus=2))
    market.release(1, Resources(cpus=3, memory=GiB))
    market.release(1, Resources(cpus=3, memory=GiB))  # never more free than offered
    [info], _ = market.describe()
    assert (info.free.cpus, info.free.memory, info.activities) == (4, 2 * GiB, 0)
    market.reserve(9, Resources(cpus=1, memory=1))  # a provider that left: nothing to do


def test_the_sums_over_the_sellers_follow_offers_reservations_and_departures() -> None:
    market = Market()
    market.update(1, "p1", offer(cpus=4))
    market.update(2, "p2", offer(cpus=2, memory=GiB))
    market.reserve(1, Resources(cpus=1.5, memory=GiB, storage=GiB // 2))
    market.update(1, "p1", offer(cpus=8))  # a new offer: what is reserved stays reserved
    market.release(2, Resources(cpus=1, memory=1))  # never more free than offered
    offered, free = market.offered_total, market.free_total
    assert (offered.cpus, offered.memory, offered.storage) == (10, 3 * GiB, 2 * GiB)
    assert (free.cpus, free.memory, free.storage) == (8.5, 2 * GiB, 2 * GiB - GiB // 2)
    market.remove(1)
    market.remove(1)
    assert (offered.cpus, offered.memory, free.cpus, free.memory, free.storage) == (2, GiB, 2, GiB, GiB)
    fractions = {3: 0.1, 4: 0.2, 5: 0.7, 6: 0.3}  # CPUs binary floats cannot hold: no drift once gone
    for n, cpus in fractions.items():
        market.update(n, f"p{n}", offer(cpus=cpus))
        market.reserve(n, Resources(cpus=cpus, memory=1))
    for n in fractions:
        market.remove(n)
    assert (offered.cpus, free.cpus) == (2, 2) and str(offered.cpus) == "2.0"


def test_a_removed_provider_is_no_longer_chosen_or_listed() -> None:
    market = Market()
    market.update(1, "p1", offer(images=["img:1"]))
    market.update(2, "p2", offer(images=["img:1"]))
    market.remove(1)
    market.remove(1)
    assert market.choose("img:1", Demand()) == (2, True)
    assert [p.name for p in market.describe(image="img:1")[0]] == ["p2"]
    assert 1 not in market and len(market) == 1


def test_holders_of_the_image_come_first_then_the_least_loaded() -> None:
    market = Market()
    for peer in range(1, 4):
        market.update(peer, f"p{peer}", offer(images=["img:1"] if peer == 3 else []))
    assert market.choose("img:1", Demand()) == (3, True)
    market.reserve(3, Resources(cpus=2, memory=GiB))
    assert market.choose("img:1", Demand()) == (1, False), "the holder is full: the least loaded other"
    market.reserve(1, Resources(cpus=1, memory=GiB))
    assert market.choose("img:1", Demand()) == (2, False)
    assert market.choose("img:1", Demand(), exclude={"p2"}) == (1, False)
    assert market.choose("img:2", Demand(), avoid={2}) == (1, False)


def test_an_image_many_hold_is_found_in_preference_order() -> None:
    market = Market()
    holders = FEW_HOLDERS + 10
    for peer in range(1, holders + 2):
        market.update(peer, f"p{peer:04}", offer(images=["img:1"] if peer <= holders else []))
    for peer in range(1, holders + 1):
        market.reserve(peer, Resources(cpus=0.5, memory=GiB))
    market.reserve(5, Resources(cpus=1.5, memory=GiB))  # full now
    chosen, cached = market.choose("img:1", Demand(cpus=1))
    assert cached and chosen != 5
    assert market.choose("img:1", Demand(cpus=1), avoid=set(range(1, holders + 1))) == (holders + 1, False)
    assert market.choose("img:1", Demand(cpus=2)) == (holders + 1, False), "no holder has 2 CPUs free"
    market.reserve(holders + 1, Resources(cpus=1, memory=GiB))
    with pytest.raises(NoMatch, match="busy"):
        market.choose("img:1", Demand(cpus=2))


@pytest.mark.parametrize(
    ("demand", "reason"),
    [
        (Demand(cpus=8), "no provider offers 8 CPUs (most offered: 2)"),
        (Demand(memory="4GiB"), "no provider offers 4GiB of memory (most offered: 2GiB)"),
        (Demand(storage="2GiB"), "no provider offers 2GiB of storage (most offered: 1GiB)"),
        (Demand(labels={"zone": "mars"}), "no provider has the label zone=mars"),
        (Demand(cpus=2, labels={"zone": "us"}), "no single provider meets every constraint of the demand at once"),
    ],
)
def test_no_match_names_what_nobody_offers(demand: Demand, reason: str) -> None:
    market = Market()
    market.update(1, "p1", offer(cpus=2, zone="eu"))
    market.update(2, "p2", offer(cpus=1, zone="us"))
    with pytest.raises(NoMatch) as refused:
        market.choose("img:1", demand)
    assert refused.value.message == reason


def test_no_match_when_nobody_is_there_or_everyone_is_excluded() -> None:
    market = Market()
    with pytest.raises(NoMatch, match="no provider is connected"):
        market.choose("img:1", Demand())
    market.update(1, "p1", offer())
    with pytest.raises(NoMatch, match=r"every connected provider \(1\) is excluded"):
        market.choose("img:1", Demand(), exclude={"p1"})


def test_listings_through_the_indexes_match_a_full_scan() -> None:
    rng = random.Random(7)
    market = Market()
    zones, images = ["eu", "us", "ap"], ["a:1", "b:1", "c:1"]
    for peer in range(300):
        labels = {"zone": rng.choice(zones)} | ({"gpu": "yes"} if rng.random() < 0.1 else {})
        resources = Resources(cpus=rng.choice([1, 2, 4]), memory=2 * GiB, storage=GiB)
        held = rng.sample(images, rng.randrange(3))
        offered = Offer(type="offer", id=1, resources=resources, arch="amd64", images=held, labels=labels)
        market.update(peer, f"p{rng.randrange(10**6):06}-{peer}", offered)
        if rng.random() < 0.3:
            market.reserve(peer, Resources(cpus=1, memory=GiB))
    for peer in rng.sample(range(300), 60):  # gone, or offering again with other labels
        if rng.random() < 0.5:
            market.remove(peer)
        else:
            market.update(peer, market._sellers[peer].name, offer(cpus=2, zone="eu"))
    sellers = list(market._sellers.values())
    for _ in range(200):
        image = rng.choice([None, *images])
        labels = rng.choice([{}, {"zone": rng.choice(zones)}, {"gpu": "yes"}, {"zone": "eu", "gpu": "yes"}])
        free = rng.choice([None, Resources(cpus=0, memory=0), Resources(cpus=2, memory=GiB)])
        limit = rng.choice([1, 10, 100, 1000])
        listed, matched = market.describe(image=image, labels=labels, free=free, limit=limit)
        expected = sorted(
            s.name
            for s in sellers
            if (image is None or image in s.images)
            and all(s.offer.labels.get(k) == v for k, v in labels.items())
            and (free is None or s.has_free(free))
        )
        assert (matched, [p.name for p in listed]) == (len(expected), expected[:limit])


def test_a_demand_that_names_no_storage_is_granted_and_checked_at_the_default() -> None:
    market = Market()
    market.update(1, "p1", offer(cpus=64, memory=64 * GiB))  # 1 GiB of storage: four default volumes
    assert granted(Demand()).storage == DEFAULT_STORAGE
    assert granted(Demand(storage=10)).storage == MIN_STORAGE
    assert granted(Demand(storage=GiB)).storage == GiB
    for _ in range(4):
        peer, _ = market.choose("img:1", Demand())
        market.reserve(peer, Resources(cpus=1, memory=GiB, storage=granted(Demand()).storage))
    with pytest.raises(NoMatch, match="busy"):
        market.choose("img:1", Demand())
    [info], _ = market.describe()
    assert info.free.storage == 0
    market.update(2, "p2", offer().model_copy(update={"resources": Resources(cpus=2, memory=GiB, storage=GiB // 8)}))
    with pytest.raises(NoMatch, match="a rent that names no storage is given 256MiB"):
        market.choose("img:1", Demand(), avoid={1})


def test_cached_images_match_only_a_rent_of_the_stored_image() -> None:
    digest = "sha256:" + "c" * 64
    stored = StoredImage(Manifest(config=Blob(digest=digest, size=10), layers=[]), arch="amd64", os="linux")
    market = Market()
    market.update(1, "p1", offer())
    market.update(2, "p2", offer().model_copy(update={"cached": [digest]}), pulls=True)
    # Named by a requestor the store does not let rent it (or after it left the store): not p2's cache.
    assert market.choose(digest, Demand()) == (1, False)
    assert market.describe(image=digest)[1] == 0
    # A rent of the stored image: p2 holds it.
    assert market.choose(digest, Demand(), stored=stored) == (2, True)
    assert [p.name for p in market.describe(image=digest, stored=True)[0]] == ["p2"]
    assert market.holders(digest) == ["p2"]
    [_, info], _ = market.describe()
    assert info.images == [], "cached images are not listed as offered"
    market.remove(2)
    assert market.holders(digest) == []
