"""Several hubs on one PostgreSQL are one market: a requestor on one hub rents a provider on
another, through a link between the two (kiln.hub.io.links), and the database alone decides who
gets a provider's capacity. Real hubs on real ports, simulated providers (no Docker: the docker
tier moves real bytes through real containers, tests/docker/test_several_hubs.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

import kiln
from kiln.hub.io.server import start
from kiln.hub.io.state import HubState
from kiln.hub.ledger import Post
from kiln.protocol.errors import KilnError, NoMatch
from kiln.protocol.messages import Demand, Offer, Price, Resources
from kiln.testing import LocalCluster
from kiln.testing.simulated import Served, SimulatedProvider

IMAGE = "kiln-busybox:latest"


def offer(cpus: float) -> Offer:
    return Offer(
        type="offer",
        id=1,
        resources=Resources(cpus=cpus, memory=8 * 2**30, storage=2**30),
        arch="amd64",
        images=[IMAGE],
    )


@contextlib.asynccontextmanager
async def hub(tmp_path: Path, name: str, db: str) -> AsyncIterator[str]:
    async with start("127.0.0.1", 0, data_dir=tmp_path / name, db=db, grace=30) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def sold(url: str, provider: str, timeout: float = 5.0, token: str | None = None) -> None:
    """Wait until the hub at ``url`` sells ``provider`` (it learns of another hub's from the database)."""
    async with kiln.connect(url, token=token) as r:
        async with asyncio.timeout(timeout):
            while provider not in {p.name for p in await r.market()}:  # noqa: ASYNC110  # polled over the wire
                await asyncio.sleep(0.05)


async def join(provider: SimulatedProvider, url: str, cpus: float = 2) -> asyncio.Task[None]:
    """Connect ``provider`` to the hub at ``url``; the task that reads its connection."""
    await provider.join(url, offer(cpus))
    assert provider.conn is not None
    return asyncio.create_task(provider.conn.run())


def metrics(url: str) -> str:
    with urllib.request.urlopen(url.replace("ws://", "http://") + "/metrics", timeout=10) as response:
        return str(response.read().decode())


def rows(db: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(db, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


async def test_a_requestor_on_one_hub_rents_a_provider_on_another(postgres_url: str, tmp_path: Path) -> None:
    data = bytes(range(256)) * 12288  # 3 MiB
    provider = SimulatedProvider("far", files={"/out/data": Served("file", data)})
    async with hub(tmp_path, "a", postgres_url) as a, hub(tmp_path, "b", postgres_url) as b:
        await join(provider, b)
        await sold(a, "far")
        scraped = await asyncio.to_thread(metrics, a)
        assert "kiln_providers 0.0" in scraped and "kiln_market_providers 1.0" in scraped  # sold, not connected
        async with kiln.connect(a) as r, r.rent(IMAGE, Demand(cpus=1, memory="64MiB")) as act:
            assert act.provider == "far"
            assert (await act.run(["true"])).exit_code == 0
            async with kiln.connect(b) as watcher, asyncio.timeout(5):  # b sees what a rented of its provider
                while [p.free.cpus for p in await watcher.market()] != [1.0]:  # noqa: ASYNC110  # over the wire
                    await asyncio.sleep(0.05)
            got = tmp_path / "got"
            await act.download_file("/out/data", got)
            assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(data).digest()
            [(name, pending)] = rows(postgres_url, "SELECT provider, pending FROM activities")
            assert (name, pending) == ("far", False)
        assert rows(postgres_url, "SELECT id FROM activities") == []
        await provider.close()


async def test_capacity_is_never_sold_twice_by_several_hubs(postgres_url: str, tmp_path: Path) -> None:
    provider = SimulatedProvider("one")
    async with contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(hub(tmp_path, n, postgres_url)) for n in "abc"]
        await join(provider, urls[1])
        await asyncio.gather(*(sold(url, "one") for url in urls))
        requestors = [await stack.enter_async_context(kiln.connect(url)) for url in urls for _ in range(3)]

        async def rent(r: kiln.Requestor) -> str | None:
            try:
                return (await r.rent(IMAGE, Demand(cpus=1, memory="64MiB"))).id
            except NoMatch:
                return None

        got = await asyncio.gather(*(rent(r) for r in requestors))
        won = [a for a in got if a is not None]
        assert len(won) == 2, got  # 2 CPUs, 9 rents of 1 from 3 hubs at once
        [(cpus, count)] = rows(postgres_url, "SELECT SUM(cpus), COUNT(*) FROM activities WHERE provider = 'one'")
        assert (cpus, count) == (2.0, 2)
    await provider.close()


async def test_a_provider_moving_to_another_hub_keeps_the_leases_of_a_third(postgres_url: str, tmp_path: Path) -> None:
    provider = SimulatedProvider("mover")
    async with hub(tmp_path, "a", postgres_url) as a, hub(tmp_path, "c", postgres_url) as c:
        async with contextlib.AsyncExitStack() as b_stack:
            b = await b_stack.enter_async_context(hub(tmp_path, "b", postgres_url))
            await join(provider, b)
            await sold(a, "mover")
            r = await kiln.connect(a)
            act = await r.rent(IMAGE, Demand(cpus=1, memory="64MiB"))
            assert (await act.run(["true"])).exit_code == 0
        # Hub b stops: the provider dials hub c, listing what it runs; hub a links to it there.
        await join(provider, c)
        async with asyncio.timeout(10):
            while True:
                try:
                    assert (await act.run(["true"])).exit_code == 0
                    break
                except KilnError:
                    await asyncio.sleep(0.1)
        assert rows(postgres_url, "SELECT provider FROM activities") == [("mover",)]
        await act.release()
        await r.close()
    await provider.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_hub_started_again_takes_back_its_leases_on_another_hubs_provider(
    postgres_url: str, tmp_path: Path
) -> None:
    provider = SimulatedProvider("kept")
    port = free_port()
    async with hub(tmp_path, "b", postgres_url) as b:
        await join(provider, b)
        async with start("127.0.0.1", port, data_dir=tmp_path / "a", db=postgres_url, grace=30):
            a = f"ws://127.0.0.1:{port}"
            await sold(a, "kept")
            r = await kiln.connect(a)
            act = await r.rent(IMAGE, Demand(cpus=1, memory="64MiB"))
        # Hub a stopped, and starts again on its folder: its lease on b's provider is back (the
        # provider's hello listed none: b's link says what links created since).
        async with start("127.0.0.1", port, data_dir=tmp_path / "a", db=postgres_url, grace=30):
            assert (await act.run(["true"])).exit_code == 0
            assert act.lost is None and provider.running == {act.id}
            await act.release()
            await r.close()
    await provider.close()


async def test_a_balance_that_covers_one_hold_rents_once_through_two_hubs(postgres_url: str, tmp_path: Path) -> None:
    """A requestor's balance covers one hold: two rents through two hubs, one is refused, and the
    ledger holds (the race itself is decided by the database: the test below)."""
    with HubState(postgres_url) as state:
        _, payer = state.create("requestor", "payer")
        _, seller = state.create("provider", "pricey")
        state.grant("payer", 1_500_000)  # 1.5 credits: one hold of 1 credit, not two
    provider = SimulatedProvider("pricey")
    priced = offer(4).model_copy(update={"price": Price(start=1)})
    async with hub(tmp_path, "a", postgres_url) as a, hub(tmp_path, "b", postgres_url) as b:
        await provider.join(b, priced, seller)
        assert provider.conn is not None
        reader = asyncio.create_task(provider.conn.run())
        async with kiln.connect(a, token=payer) as ra, kiln.connect(b, token=payer) as rb:
            await sold(a, "pricey", token=payer)

            async def rent(r: kiln.Requestor) -> str:
                try:
                    await r.rent(IMAGE, Demand(cpus=1, memory="64MiB"), max_duration=60)
                except KilnError as e:
                    return e.code
                return "rented"

            assert sorted(await asyncio.gather(rent(ra), rent(rb))) == ["insufficient_funds", "rented"]
        with HubState(postgres_url) as state:
            assert state.check() == []
        reader.cancel()
    await provider.close()


def test_the_database_commits_a_hold_only_if_the_balance_covers_it(postgres_url: str) -> None:
    """What decides between two hubs holding from one balance at the same moment: each hold is
    committed with the account's row locked, and refused if it would take the balance below zero."""
    with HubState(postgres_url, hub="a") as a, HubState(postgres_url, hub="b") as b:
        record, _ = a.create("requestor", "payer")
        a.grant("payer", 1_500_000)
        account = f"requestor:{record.id}"

        def hold(activity: str) -> Post:
            return Post(f"hold:{activity}", "hold", 0.0, ((account, -1_000_000), (f"hold:{activity}", 1_000_000)))

        assert a.hold(hold("x"))
        assert not b.hold(hold("y"))  # 0.5 left
        assert (a.balance(account), b.balance("hold:y"), b.check()) == (500_000, 0, [])


async def test_a_link_needs_a_live_hubs_token_and_a_provider_connected_there(postgres_url: str, tmp_path: Path) -> None:
    async with hub(tmp_path, "b", postgres_url) as b:
        url = b + "/hub/link/nobody"
        for headers in ([], [("Authorization", "Bearer kiln_not-a-hub")]):
            with pytest.raises(InvalidStatus) as refused:
                await connect(url, additional_headers=headers, subprotocols=[Subprotocol("kiln.v1")])
            assert refused.value.response.status_code == 401
        with HubState(postgres_url, hub="other") as other:
            other.join("ws://127.0.0.1:1", "the-others-token")
            async with connect(
                url,
                additional_headers=[("Authorization", "Bearer the-others-token")],
                subprotocols=[Subprotocol("kiln.v1")],
            ) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404


async def test_hub_processes_renting_one_provider_at_once_never_sell_it_twice(
    postgres_url: str, tmp_path: Path
) -> None:
    """Three hub processes (each its own event loop: the database alone orders them), twelve rents
    of one CPU at once of a 3-CPU provider: three are granted, and the database agrees."""
    provider = SimulatedProvider("scarce")
    with contextlib.ExitStack() as stack:
        clusters = [stack.enter_context(LocalCluster(tmp_path / n)) for n in "abc"]
        urls = [c.start_hub("--db", postgres_url, "--grace", "30") for c in clusters]
        reader = await join(provider, urls[0], cpus=3)
        await asyncio.gather(*(sold(url, "scarce", timeout=20) for url in urls))
        async with contextlib.AsyncExitStack() as requestors:
            rs = [await requestors.enter_async_context(kiln.connect(url)) for url in urls for _ in range(4)]

            async def rent(r: kiln.Requestor) -> bool:
                try:
                    await r.rent(IMAGE, Demand(cpus=1, memory="64MiB"))
                except NoMatch:
                    return False
                return True

            granted = await asyncio.gather(*(rent(r) for r in rs))
            assert sum(granted) == 3, granted
            [(cpus, count)] = rows(postgres_url, "SELECT SUM(cpus), COUNT(*) FROM activities WHERE provider = 'scarce'")
            assert (cpus, count) == (3.0, 3)
        reader.cancel()
    await provider.close()
