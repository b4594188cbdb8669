"""Several hubs on one PostgreSQL are one market: a requestor on one hub rents a provider on
another, through a link between the two (kiln.hub.io.links), and the database alone decides who
gets a provider's capacity. Real hubs on real ports, simulated providers (no Docker: the docker
tier moves real bytes through real containers, tests/docker/test_several_hubs.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg

import kiln
from kiln.hub.io.server import start
from kiln.hub.io.state import HubState
from kiln.hub.ledger import Post
from kiln.protocol.errors import KilnError, NoMatch
from kiln.protocol.messages import Demand, Offer, Price, Resources
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


def rows(db: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(db, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


async def test_a_requestor_on_one_hub_rents_a_provider_on_another(postgres_url: str, tmp_path: Path) -> None:
    data = bytes(range(256)) * 12288  # 3 MiB
    provider = SimulatedProvider("far", files={"/out/data": Served("file", data)})
    async with hub(tmp_path, "a", postgres_url) as a, hub(tmp_path, "b", postgres_url) as b:
        await join(provider, b)
        await sold(a, "far")
        async with kiln.connect(a) as r, r.rent(IMAGE, Demand(cpus=1, memory="64MiB")) as act:
            assert act.provider == "far"
            assert (await act.run(["true"])).exit_code == 0
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
