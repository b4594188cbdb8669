"""A rent with a price cap and ``strategy="cheapest"`` at 10,000 priced providers (goal: median under 5 ms).

    python benchmarks/market.py [--providers 10000] [--prices 20] [--rents 200]

A real hub process on loopback; the providers are simulated in this process (real connections
speaking kiln.v1, answering at once, no Docker), each at one of ``--prices`` distinct linear
prices. Every rent caps the price (half the prices are above the cap) and asks for the cheapest
provider that fits; it is released before the next, so each rent finds the same cheapest price
with one of its providers now busier. Beside it, the same rent with ``least_loaded``, and the
hub's market alone in this process (``Market.choose``, no connection: placement only).
Prints numbers; asserts nothing. On an open hub nothing is held or charged, so only placement
and relay are measured.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import kiln
from kiln.hub.market import Market
from kiln.protocol.messages import Demand, Offer, Price, Release, Rent, Rented, Resources, Strategy
from kiln.testing import LocalCluster
from kiln.testing.simulated import simulated_providers

IMAGE = "kiln-busybox:latest"


def price(i: int, prices: int) -> Price:
    """The ``i``-th provider's price: one of ``prices`` levels, the dearer ones later."""
    level = i % prices + 1
    return Price.micro(start=1000 * level, cpu_hour=20_000 * level, env_hour=5_000 * level)


def cap(prices: int) -> Price:
    """A cap that half the price levels pass."""
    return price(prices // 2 - 1, prices)


def describe(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(len(ordered) * 0.9)]
    return f"median {statistics.median(ordered) * 1000:.2f} ms, p90 {p90 * 1000:.2f} ms"


async def rents(requestor: kiln.Requestor, count: int, demand: Demand, strategy: Strategy) -> list[float]:
    """Rent and release, one at a time: the time from the rent to its ``rented``."""
    conn = await requestor.connected()
    samples = []
    for _ in range(count):
        rent = Rent(type="rent", id=conn.new_id(), image=IMAGE, demand=demand, strategy=strategy)
        started = time.perf_counter()
        rented = await conn.request(rent)
        samples.append(time.perf_counter() - started)
        assert isinstance(rented, Rented)
        await conn.request(Release(type="release", id=conn.new_id(), activity=rented.activity))
    return samples


def in_process(providers: int, prices: int, count: int) -> list[float]:
    """``Market.choose`` alone at ``providers`` sellers, each choice reserved (so the next differs)."""
    market = Market()
    resources = Resources(cpus=4, memory=8 * 2**30, storage=2**40)
    for i in range(providers):
        offer = Offer(type="offer", id=1, resources=resources, arch="amd64", images=[IMAGE], price=price(i, prices))
        market.update(i, f"sim-{i:05}", offer)
    demand = Demand(cpus=1, memory="256MiB", max_price=cap(prices))
    taken = Resources(cpus=1, memory=256 * 2**20, storage=256 * 2**20)
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        peer, _ = market.choose(IMAGE, demand, strategy="cheapest")
        samples.append(time.perf_counter() - started)
        market.reserve(peer, taken)
    return samples


async def measure(url: str, providers: int, prices: int, count: int) -> None:
    demand = Demand(cpus=1, memory="256MiB", max_price=cap(prices))
    joined = time.perf_counter()
    async with simulated_providers(url, providers, price=lambda i: price(i, prices)):
        joining = time.perf_counter() - joined
        async with kiln.connect(url, name="bench") as requestor:
            await rents(requestor, 20, demand, "cheapest")  # warm up
            cheapest = await rents(requestor, count, demand, "cheapest")
            loaded = await rents(requestor, count, demand, "least_loaded")
    print(f"{providers:>6} providers at {prices} distinct prices (joined in {joining:.1f} s)")
    print(f"         rent with a price cap, strategy=cheapest: {describe(cheapest)}")
    print(f"         rent with a price cap, strategy=least_loaded: {describe(loaded)}")
    print(f"         goal: cheapest rent median < 5 ms: {'met' if statistics.median(cheapest) < 0.005 else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", type=int, nargs="+", default=[10_000])
    parser.add_argument("--prices", type=int, default=20)
    parser.add_argument("--rents", type=int, default=200)
    args = parser.parse_args()
    for providers in args.providers:
        alone = describe(in_process(providers, args.prices, args.rents))
        print(f"{providers:>6} sellers: Market.choose alone (a cap, cheapest), in this process: {alone}", flush=True)
        with tempfile.TemporaryDirectory() as logs, LocalCluster(Path(logs)) as cluster:
            # Every simulated provider dials from 127.0.0.1: the hub's cap per address must let them all in.
            url = cluster.start_hub(
                "--max-connections-per-address", str(providers + 100), "--max-waiting-per-address", str(providers + 100)
            )
            asyncio.run(measure(url, providers, args.prices, args.rents))


if __name__ == "__main__":
    main()
