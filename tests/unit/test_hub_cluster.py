"""What one hub writes to the database for the others (kiln.hub.cluster): read back as it was written."""

from __future__ import annotations

from kiln.hub.cluster import offer_of, offer_text
from kiln.protocol.messages import Offer, Price, Resources


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
