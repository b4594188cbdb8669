"""A priced market through a real hub process: simulated providers at three prices are listed with
them, a capped cheapest rent lands on the cheapest that fits, a cap below every price finds none,
and ``kiln market`` shows the PRICE, REPUTATION and OUTBOUND columns; a bad ``--price`` stops a provider at start."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

import kiln
from kiln.protocol.messages import Rent, Rented
from kiln.testing import LocalCluster
from kiln.testing.simulated import simulated_providers

pytestmark = pytest.mark.timeout(120)

IMAGE = "kiln-busybox:latest"
PRICES = [
    kiln.Price(start=0.05, cpu_hour=1, env_hour=0.1),
    kiln.Price(start=0.01, cpu_hour=0.2, env_hour=0.05),
    kiln.Price(start=0.02, cpu_hour=0.5, env_hour=0.05),
]


async def test_priced_providers_are_listed_capped_and_the_cheapest_chosen(tmp_path: Path) -> None:
    with LocalCluster(tmp_path) as cluster:
        url = cluster.start_hub()
        async with (
            simulated_providers(url, 3, price=lambda i: PRICES[i], prefix="priced") as names,
            kiln.connect(url) as requestor,
        ):
            listed = {p.name: p for p in await requestor.market()}
            assert [listed[name].price for name in names] == PRICES
            assert all(p.reputation == 0.5 for p in listed.values())
            cap = kiln.Price(start=0.02, cpu_hour=0.5, env_hour=0.05)
            with pytest.raises(kiln.NoMatch, match="max_price"):
                await requestor.rent(IMAGE, kiln.Demand(cpus=1, max_price=kiln.Price(start=0.001)))
            conn = await requestor.connected()
            demand = kiln.Demand(cpus=1, max_price=cap)
            rent = Rent(type="rent", id=conn.new_id(), image=IMAGE, demand=demand, strategy="cheapest")
            rented = await conn.request(rent)
            assert isinstance(rented, Rented) and rented.provider == names[1]
            excluded = rent.model_copy(update={"id": conn.new_id(), "exclude": [names[1]]})
            second = await conn.request(excluded)
            assert isinstance(second, Rented) and second.provider == names[2], "the next cheapest within the cap"
            shown = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "kiln.cli", "market", "--hub", url],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            header, *rows = shown.stdout.splitlines()
            assert header.split()[:8] == [
                "NAME",
                "CPUS",
                "MEMORY",
                "ACTIVITIES",
                "PRICE",
                "REPUTATION",
                "OUTBOUND",
                "IMAGES",
            ]
            row = next(line for line in rows if line.startswith(names[1]))
            assert "start=0.01,cpu-hour=0.2,env-hour=0.05" in row and "0.6" in row, row  # one started: 3/5


def test_a_bad_price_stops_the_provider_at_start_with_one_clear_line() -> None:
    argv = [sys.executable, "-m", "kiln.cli", "provider", "--name", "p", "--price", "start=0.01,gpu-hour=1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2, done
    assert done.stderr == "kiln provider: --price: a price has no rate 'gpu-hour': it has start, cpu-hour, env-hour\n"
