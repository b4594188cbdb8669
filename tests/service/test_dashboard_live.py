"""The dashboard's live feed (/api/live) on a real hub with simulated providers: a page follows the
hub within a second or two, the Overview's history comes in full and then as it grows, a requestor
credential sees only its own activities, and what the feed bounds (a query that is not one, more
than 64 dashboards) is closed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import kiln
from kiln.hub import views
from kiln.hub.io import live as hub_live
from kiln.hub.io import server as hub_server
from kiln.hub.io.live import MAX_VIEWERS, MAX_VIEWERS_EACH, MIN_GAP
from kiln.hub.io.server import start
from kiln.hub.io.state import HubState
from kiln.testing.simulated import simulated_providers

pytestmark = pytest.mark.timeout(60)

SHARED = "shared-t0ken"
IMAGE = "kiln-busybox:latest"


@dataclass
class Hub:
    url: str  # ws://127.0.0.1:PORT
    tokens: dict[str, str]
    data_dir: Path

    def live(self, name: str) -> Any:
        """The live feed as ``name``'s credential (or the shared token) shows it."""
        token = self.tokens.get(name, SHARED)
        return connect(f"{self.url}/api/live", additional_headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
async def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Hub]:
    monkeypatch.setattr(hub_server, "REVOCATION_CHECK", 0.1)
    with HubState.in_dir(tmp_path) as state:
        tokens = {name: state.create("requestor", name)[1] for name in ("alice", "bob")}
    async with start("127.0.0.1", 0, token=SHARED, data_dir=tmp_path) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield Hub(f"ws://127.0.0.1:{port}", tokens, tmp_path)


async def next_of(ws: ClientConnection, kind: str, seconds: float = 5) -> dict[str, Any]:
    """The next message of type ``kind`` (those before it skipped)."""
    async with asyncio.timeout(seconds):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == kind:
                return dict(message)


async def page_where(ws: ClientConnection, test: Any, seconds: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(seconds):
        while not test(page := await next_of(ws, "page", seconds)):
            pass
    return page


async def test_a_page_follows_the_hub(hub: Hub) -> None:
    async with hub.live("admin") as ws:
        hello = await next_of(ws, "hello")
        assert hello["admin"] is True and abs(hello["now"] - time.time()) < 5
        await ws.send(json.dumps({"page": "providers"}))
        assert (await next_of(ws, "page"))["total"] == 0
        async with simulated_providers(hub.url, 3, token=SHARED, prefix="live"):
            joined = time.monotonic()
            shown = await page_where(ws, lambda page: page["total"] == 3, seconds=2)
            print(f"3 providers shown {time.monotonic() - joined:.2f} s after they joined")
            assert [row["name"] for row in shown["rows"]] == ["live-00000", "live-00001", "live-00002"]
            await ws.send(json.dumps({"page": "overview"}))
            overview = await next_of(ws, "page")
            assert overview["page"] == "overview" and overview["providers"] == 3
            history = await next_of(ws, "history")
            assert history["reset"] is True and history["rows"], "the hub sampled itself when it started"
            assert len(history["rows"][0]) == 1 + len(history["series"])
            await ws.send(json.dumps({"page": "events"}))
            events = await page_where(ws, lambda page: page["page"] == "events")
            assert {row["name"] for row in events["rows"] if row["kind"] == "join"} >= {"live-00000"}


async def test_a_requestor_credential_sees_its_own_activities_only(hub: Hub) -> None:
    async with (
        simulated_providers(hub.url, 2, token=SHARED, prefix="p"),
        kiln.connect(hub.url, token=hub.tokens["alice"], name="alice") as alice,
        hub.live("alice") as mine,
        hub.live("bob") as theirs,
        hub.live("admin") as everyone,
    ):
        for ws in (mine, theirs, everyone):
            await ws.send(json.dumps({"page": "activities"}))
            assert (await next_of(ws, "page"))["rows"] == []
        activity = await alice.rent(IMAGE, kiln.Demand(cpus=1, memory="64MiB"))
        for ws in (mine, everyone):
            shown = await page_where(ws, lambda page: page["rows"], seconds=2)
            assert [row["id"] for row in shown["rows"]] == [activity.id]
        with pytest.raises(TimeoutError):  # nothing changed for bob: nothing is sent
            await next_of(theirs, "page", 1.2)
        await activity.release()
        assert (await page_where(mine, lambda page: not page["rows"], seconds=2))["matched"] == 0


@pytest.mark.parametrize(
    "query", [b"{", b'{"page": "secrets"}', b'{"page": "jobs", "job": "' + b"j" * 300 + b'"}', b"x" * 5000]
)
async def test_a_query_that_is_not_one_closes_the_feed(hub: Hub, query: bytes) -> None:
    async with hub.live("admin") as ws:
        await ws.send(query.decode())
        with pytest.raises(ConnectionClosed):
            await drain(ws)
        assert ws.close_code in (1008, 1009), ws.close_code


async def test_a_dashboard_asking_as_fast_as_it_reads_gets_a_page_every_min_gap(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []

    def counted(*args: Any) -> dict[str, Any]:
        made.append(args[2].filter)
        return views.page(*args)

    monkeypatch.setattr(hub_live, "page", counted)
    async with hub.live("admin") as ws:
        await next_of(ws, "hello")
        began = time.monotonic()
        asked = 0
        while time.monotonic() - began < 0.5:  # each query a new filter: a pass over the providers
            await ws.send(json.dumps({"page": "providers", "filter": f"f{asked}"}))
            await page_where(ws, lambda page, f=f"f{asked}": page["filter"] == f)
            asked += 1
        took = time.monotonic() - began
        print(f"{asked} queries answered in {took:.2f} s, {len(made)} pages made")
        assert len(made) <= took / MIN_GAP + 2, "a page at most every MIN_GAP seconds, however fast it asks"


async def drain(ws: ClientConnection) -> None:
    """Read until the connection closes (which raises)."""
    while True:
        await ws.recv()


async def test_at_most_64_dashboards_at_once(hub: Hub) -> None:
    opened = [await hub.live("admin") for _ in range(MAX_VIEWERS)]
    try:
        for ws in opened:
            await next_of(ws, "hello")
        async with hub.live("admin") as one_more:
            with pytest.raises(ConnectionClosed):
                await one_more.recv()
            assert one_more.close_code == 1013
    finally:
        for ws in opened:
            await ws.close()


async def test_one_credentials_dashboards_leave_room_for_the_others(hub: Hub) -> None:
    opened = [await hub.live("alice") for _ in range(MAX_VIEWERS_EACH)]
    try:
        for ws in opened:
            await next_of(ws, "hello")
        async with hub.live("alice") as one_more, hub.live("bob") as bob:
            with pytest.raises(ConnectionClosed):
                await one_more.recv()
            assert one_more.close_code == 1013
            assert (await next_of(bob, "hello"))["name"] == "bob"
    finally:
        for ws in opened:
            await ws.close()


async def test_a_revoked_credential_closes_its_dashboard(hub: Hub) -> None:
    async with hub.live("alice") as alice, hub.live("bob") as bob:
        await next_of(alice, "hello")
        with HubState.in_dir(hub.data_dir) as state:
            state.revoke("alice")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(drain(alice), 5)
        assert alice.close_code == 4002
        await bob.send(json.dumps({"page": "events"}))
        assert (await next_of(bob, "page"))["page"] == "events"
