"""Prices in the market: caps, strategies (cheapest by an index of distinct prices, reputation),
allow and deny lists, a least reputation; and the same through the hub's core."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from kiln.hub import market as market_module
from kiln.hub.market import Market, Rank, Seller, granted
from kiln.hub.records import SaveReputation
from kiln.hub.reputation import Reputation
from kiln.protocol.errors import NoMatch
from kiln.protocol.messages import Demand, Offer, Price, Resources, Strategy
from kiln.protocol.money import within, worst_case
from tests.hubcore import HubHarness

GiB = 2**30


def offer(price: Price | None = None, cpus: float = 2, images: list[str] | None = None) -> Offer:
    resources = Resources(cpus=cpus, memory=2 * GiB, storage=GiB)
    return Offer(type="offer", id=1, resources=resources, arch="amd64", images=images or [], price=price)


def priced_market(*prices: Price | None, reputation: Reputation | None = None) -> Market:
    """Providers p1, p2, ... (peers 1, 2, ...) at these prices."""
    market = Market(reputation=reputation)
    for peer, price in enumerate(prices, start=1):
        market.update(peer, f"p{peer}", offer(price))
    return market


CHEAP = Price(start=0.01, cpu_hour=0.1, env_hour=0.01)
MIDDLE = Price(start=0.02, cpu_hour=0.2, env_hour=0.02)
DEAR = Price(start=0.05, cpu_hour=1.0, env_hour=0.1)


def test_a_cap_below_a_price_passes_its_provider_over() -> None:
    market = priced_market(DEAR, MIDDLE)
    cap = Demand(max_price=Price(start=0.02, cpu_hour=0.5, env_hour=0.05))
    assert market.choose("img", cap) == (2, False)
    market.reserve(2, Resources(cpus=2, memory=GiB))
    with pytest.raises(NoMatch, match="busy"):
        market.choose("img", cap)
    with pytest.raises(NoMatch, match="max_price"):
        market.choose("img", Demand(max_price=Price(start=0.001)))
    one_rate_over = Demand(max_price=Price(start=1, cpu_hour=1, env_hour=0.01))
    with pytest.raises(NoMatch, match="max_price"):
        market.choose("img", one_rate_over, strategy="cheapest")


def test_a_free_provider_is_within_every_cap() -> None:
    market = priced_market(DEAR, None, Price())
    assert (market.price(1), market.price(2), market.price(3), market.price(9)) == (DEAR, None, None, None)
    assert market.choose("img", Demand(max_price=Price()), strategy="cheapest") == (2, False)
    assert market.choose("img", Demand(max_price=Price())) == (2, False)


def test_cheapest_picks_the_cheapest_that_fits() -> None:
    market = priced_market(DEAR, MIDDLE, CHEAP, MIDDLE)
    assert market.choose("img", Demand(), strategy="cheapest") == (3, False)
    assert market.choose("img", Demand()) == (1, False), "least_loaded ignores prices: p1 comes first by name"
    market.reserve(3, Resources(cpus=2, memory=GiB))
    assert market.choose("img", Demand(), strategy="cheapest") == (2, False), "p3 is full: the cheaper p2 or p4"
    market.reserve(2, Resources(cpus=1, memory=GiB))
    assert market.choose("img", Demand(), strategy="cheapest") == (4, False), "equal prices: the least loaded"
    assert market.choose("img", Demand(cpus=2), strategy="cheapest") == (4, False)
    market.reserve(4, Resources(cpus=2, memory=GiB))
    assert market.choose("img", Demand(cpus=1), strategy="cheapest") == (2, False)
    market.release(3, Resources(cpus=2, memory=GiB))
    assert market.choose("img", Demand(), strategy="cheapest") == (3, False), "freed again: the cheapest"


def test_cheapest_weighs_the_expected_duration() -> None:
    starts_high = Price(start=1, env_hour=0.01)
    runs_dear = Price(start=0, env_hour=1)
    market = priced_market(starts_high, runs_dear)
    assert market.choose("img", Demand(), strategy="cheapest", seconds=60) == (2, False)
    assert market.choose("img", Demand(), strategy="cheapest", seconds=86400) == (1, False)
    assert market.choose("img", Demand(), strategy="cheapest") == (2, False), "an hour: 1 against 1.01"


def test_cheapest_prefers_a_holder_of_the_image_at_the_same_cost() -> None:
    market = Market()
    market.update(1, "p1", offer(CHEAP))
    market.update(2, "p2", offer(CHEAP, images=["img:1"]))
    market.update(3, "p3", offer(MIDDLE, images=["img:1"]))
    assert market.choose("img:1", Demand(), strategy="cheapest") == (2, True)
    market.remove(2)
    assert market.choose("img:1", Demand(), strategy="cheapest") == (1, False), "cost before holding"


def test_deny_keeps_a_provider_out_and_allow_keeps_only_those_named() -> None:
    market = priced_market(CHEAP, MIDDLE, DEAR)
    assert market.choose("img", Demand(), exclude={"p3", "p1"}, strategy="cheapest") == (2, False)
    assert market.choose("img", Demand(), allow={"p3", "p2"}) == (2, False)
    assert market.choose("img", Demand(), allow={"p3", "p2"}, strategy="cheapest") == (2, False)
    assert market.choose("img", Demand(), allow={"p3", "p2"}, exclude={"p2"}) == (3, False)
    with pytest.raises(NoMatch, match="allows"):
        market.choose("img", Demand(), allow={"p2", "nobody"}, exclude={"p2"})
    with pytest.raises(NoMatch, match="max_price"):
        market.choose("img", Demand(max_price=CHEAP), allow={"p3"})


def test_reputation_orders_and_a_least_reputation_filters() -> None:
    reputation = Reputation()
    market = priced_market(CHEAP, MIDDLE, DEAR, reputation=reputation)
    for _ in range(5):
        reputation.started("p3")
    reputation.failed_to_start("p1")
    assert reputation.score("p3") > reputation.score("p2") > reputation.score("p1")
    assert market.choose("img", Demand(), strategy="reputation") == (3, False)
    market.reserve(3, Resources(cpus=2, memory=GiB))
    assert market.choose("img", Demand(), strategy="reputation") == (2, False)
    assert market.choose("img", Demand(), strategy="cheapest", min_reputation=0.5) == (2, False), "p1 is below 0.5"
    assert market.choose("img", Demand(), allow={"p1", "p2"}, strategy="reputation") == (2, False)
    with pytest.raises(NoMatch, match=r"reputation of at least 0\.9"):
        market.choose("img", Demand(), min_reputation=0.9)


def test_the_listing_shows_price_and_reputation() -> None:
    reputation = Reputation()
    market = priced_market(CHEAP, None, reputation=reputation)
    reputation.lost("p1")
    p1, p2 = market.describe()[0]
    assert p1.price == CHEAP and p1.reputation == pytest.approx(2 / 6, abs=1e-4)
    assert p2.price is None and p2.reputation == 0.5


def test_cheapest_looks_at_a_few_sellers_of_ten_thousand(monkeypatch: pytest.MonkeyPatch) -> None:
    """The index: only the distinct prices are costed, and only the cheapest's sellers looked at."""
    market = Market()
    prices = [Price.micro(start=1000 * (i + 1), cpu_hour=10_000 * (i + 1), env_hour=10_000) for i in range(10)]
    for peer in range(10_000):
        market.update(peer, f"p{peer:05}", offer(prices[peer % 10], images=["img:1"]))
    cap = Demand(max_price=Price(start=1, cpu_hour=1, env_hour=1))
    market.choose("img:1", cap, strategy="cheapest")  # the order of the distinct prices is made once
    fits, costs = [], []
    real_fits = Seller.fits

    def counted_fits(self: Seller, demand: Demand) -> bool:
        fits.append(self.peer)
        return real_fits(self, demand)

    def counted_cost(*args: Any) -> int:
        costs.append(args)
        return worst_case(*args)

    monkeypatch.setattr(Seller, "fits", counted_fits)
    monkeypatch.setattr(market_module, "worst_case", counted_cost)
    for peer in range(0, 100, 10):  # ten of the cheapest price are busy: they go last in its order
        market.reserve(peer, Resources(cpus=2, memory=GiB))
    fits.clear()
    assert market.choose("img:1", cap, strategy="cheapest") == (100, True), "the cheapest price's least loaded"
    assert len(fits) == 1 and not costs, (len(fits), len(costs))


def test_the_cost_order_follows_prices_that_come_and_go() -> None:
    market = priced_market(MIDDLE)
    assert market.choose("img", Demand(), strategy="cheapest") == (1, False)
    market.update(2, "p2", offer(CHEAP))
    assert market.choose("img", Demand(), strategy="cheapest") == (2, False)
    market.update(2, "p2", offer(DEAR))  # a new offer at another price
    assert market.choose("img", Demand(), strategy="cheapest") == (1, False)
    market.remove(1)
    assert market.choose("img", Demand(), strategy="cheapest") == (2, False)


# --- through the hub's core -------------------------------------------------------------------------

PRICE = {"start": 10_000, "cpu_hour": 200_000, "env_hour": 50_000}


def test_a_rent_with_a_cap_and_cheapest_through_the_hub() -> None:
    hub = HubHarness(version="1.5")
    dear = hub.provider("dear", price={"start": 1, "cpu_hour": 900_000, "env_hour": 0})
    cheap = hub.provider("cheap", price=PRICE)
    r = hub.join("requestor", "r")
    cap = {"start": 10_000, "cpu_hour": 500_000, "env_hour": 50_000}
    to, _ = hub.create(r, 2, strategy="cheapest")
    assert to == cheap
    rent = {"type": "rent", "id": 3, "image": "img:1", "demand": {"cpus": 1, "max_price": cap}, "exclude": ["cheap"]}
    [(_, refused)] = hub.send(r, rent)
    assert refused["type"] == "error" and refused["code"] == "no_match" and "max_price" in refused["message"]
    allowed = {**rent, "id": 4, "exclude": [], "allow": ["dear"], "demand": {"cpus": 1}}
    [(to, _)] = hub.send(r, allowed)
    assert to == dear
    [(_, info)] = hub.send(r, {"type": "market", "id": 5})
    listed = {p["name"]: p for p in info["providers"]}
    assert listed["cheap"]["price"] == PRICE and listed["cheap"]["reputation"] == 0.5
    old = hub.join("requestor", "old", version="1.4")
    [(_, info)] = hub.send(old, {"type": "market", "id": 1})
    assert all("price" not in p and "reputation" not in p for p in info["providers"]), "1.5's fields to 1.5 only"


def test_failures_the_hub_sees_lower_a_providers_reputation() -> None:
    hub = HubHarness(version="1.5")
    good = hub.provider("good")
    bad = hub.provider("bad")
    r = hub.join("requestor", "r")
    hub.rent(r, 1, good, exclude=["bad"])
    to, create = hub.create(r, 2, exclude=["good"])
    assert to == bad
    error = {"type": "error", "re": create["id"], "code": "internal", "message": "docker failed"}
    hub.send(bad, error)
    hub.rent(r, 3, bad, exclude=["good"])
    hub.leave(bad)  # with the activity running: lost
    reputation = hub.core.reputation
    assert reputation.counters("bad")["failed"] == 1 and reputation.counters("bad")["lost"] == 1
    assert reputation.counters("good")["started"] == 1
    assert reputation.score("bad") < 0.5 < reputation.score("good")
    hub.provider("bad")  # back under its name: the same record
    assert reputation.counters("bad")["connections"] == 2
    [(to, create)] = hub.send(r, {"type": "rent", "id": 4, "image": "i", "demand": {}, "strategy": "reputation"})
    assert to == good and create["type"] == "create", "the busier provider, but the better reputation"


def test_a_command_past_its_timeout_and_a_create_never_answered_count_against_the_provider() -> None:
    hub = HubHarness(version="1.5", create_timeout=5)
    p = hub.provider("p")
    r = hub.join("requestor", "r")
    activity = hub.rent(r, 1, p)
    command = {"type": "exec", "id": 2, "activity": activity, "argv": ["sleep", "9"], "timeout": 1}
    [(_, forwarded)] = hub.send(r, command)
    result = {"exit_code": -1, "timed_out": True, "stdout": "", "stderr": "", "duration": 1.0}
    [(to, reply)] = hub.send(p, {"type": "exec_result", "re": forwarded["id"], **result})
    assert (to, reply["timed_out"]) == (r, True)
    assert hub.core.reputation.counters("p")["timed_out"] == 1
    hub.create(r, 3)  # never answered: the provider is dropped as unresponsive
    hub.expire(after=6)
    counters = hub.core.reputation.counters("p")
    assert (counters["failed"], counters["lost"], counters["started"]) == (1, 1, 1), counters


def test_a_hub_given_loaded_counters_starts_from_them_and_writes_each_change() -> None:
    loaded = {"p": {"started": 8.0, "lost": 1.0}}
    hub = HubHarness(version="1.5", reputation=loaded)
    before = hub.core.reputation.score("p")
    assert before == Reputation(loaded).score("p") > 0.5, "a restart keeps the record"
    p = hub.provider("p")
    assert not any(isinstance(a, SaveReputation) for a in hub.actions), "a connection alone writes nothing"
    hub.leave(p)
    [last] = [a for a in hub.actions if isinstance(a, SaveReputation)]
    assert last.counters["connected_seconds"] == 0.0 and last.counters["lost"] == 1.0
    assert (last.counters["connections"], last.counters["started"]) == (1.0, 8.0), "written with the next change"
    stateless = HubHarness(version="1.5")
    stateless.leave(stateless.provider("p"))
    assert stateless.core.reputation.counters("p")["connections"] == 1
    assert not any(isinstance(a, SaveReputation) for a in stateless.actions), "no state loaded: nothing to write"


def test_a_stream_the_provider_starves_counts_against_it() -> None:
    hub = HubHarness(version="1.5", credit_timeout=20)
    p = hub.provider("p")
    r = hub.join("requestor", "r")
    activity = hub.rent(r, 1, p)
    upload = {"type": "upload", "id": 2, "activity": activity, "path": "/golem/input/a", "size": 9}
    [(to, _)] = hub.send(r, upload)
    assert to == p
    told = hub.expire(after=21)  # no credit from the provider: aborted
    assert any(m.get("code") == "transfer_failed" for _, m in told if isinstance(m, dict))
    assert hub.core.reputation.counters("p")["transfer_failed"] == 1
    assert hub.core.reputation.score("p") == 0.5, "one start and one failure: neutral again"


def test_the_indexes_by_price_and_by_score_choose_as_a_full_scan_would() -> None:
    """Offers, reservations, departures and reputations at random: each strategy's choice is the
    first by (cost or -score, least loaded) of every seller that fits, found without the scan."""
    rng = random.Random(20)
    reputation = Reputation()
    market = Market(reputation=reputation)
    prices = [Price.micro(start=rng.randrange(0, 5) * 1000, cpu_hour=rng.randrange(0, 3) * 10_000) for _ in range(6)]
    taken = Resources(cpus=1, memory=GiB)
    for step in range(600):
        peer = rng.randrange(10)  # few: prices come and go
        move = rng.random()
        if move < 0.3:
            market.update(peer, f"p{peer:02}", offer(rng.choice([*prices, None])))
        elif move < 0.5 and peer in market:
            market.reserve(peer, taken)
        elif move < 0.6:
            market.release(peer, taken)
        elif move < 0.65:
            market.remove(peer)
        else:
            rng.choice([reputation.started, reputation.lost, reputation.failed_to_start])(f"p{peer:02}")
        demand = Demand(cpus=1, max_price=Price.micro(start=3000, cpu_hour=20_000, env_hour=0))
        assert demand.max_price is not None
        cap = demand.max_price
        sellers = list(market._sellers.values())
        fitting = [s for s in sellers if s.fits(granted(demand)) and within(s.price, cap)]
        strategies: list[tuple[Strategy, Callable[[Seller], tuple[float, Rank]]]] = [
            ("cheapest", lambda s: (worst_case(s.price, 1, 3600), s.rank)),
            ("reputation", lambda s: (-reputation.score(s.name), s.rank)),
        ]
        for strategy, key in strategies:
            expected = min(fitting, key=key).peer if fitting else None
            try:
                chosen: int | None = market.choose("img", demand, strategy=strategy)[0]
            except NoMatch:
                chosen = None
            assert chosen == expected, (step, strategy)


def test_the_cost_order_of_a_new_duration_is_exact_and_costs_no_fraction_per_price(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kiln.hub.market import PriceKey, _worst_cases

    rng = random.Random(20)
    keys = [PriceKey(rng.randrange(10**6), rng.randrange(10**15), rng.randrange(10**9)) for _ in range(300)]
    for cpus, seconds in [(1, 3600.0), (0.3, 0.1), (64, 366 * 86400.0), (2.5, 1e-3), (0.001, 7.77)]:
        assert _worst_cases(keys, cpus, seconds) == [worst_case(key, cpus, seconds) for key in keys]

    def slow(*_: object) -> int:
        raise AssertionError("a Fraction's arithmetic per distinct price")

    monkeypatch.setattr(market_module, "worst_case", slow)  # a rent naming a new duration: integers only
    m = Market()
    for n, key in enumerate(keys[:50]):
        m.update(n + 1, f"p{n}", offer(price=Price.micro(*key)))
    costs = _worst_cases(keys[:50], 1, 123.0)
    best = min(range(50), key=costs.__getitem__)
    assert m.choose("img:1", Demand(cpus=1), strategy="cheapest", seconds=123.0) == (best + 1, False)
