"""What one source address and one credential may hold at a real hub on a real port: connections
(all, and those yet to say hello), connections per credential, failed hellos a minute. Each
refusal is ``too_many`` with its own close code; other addresses and credentials go on."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from kiln.hub.core import PER_CREDENTIAL
from kiln.hub.gate import FAILED_HELLOS, Gate, source
from kiln.hub.io.server import raise_open_file_limit, start
from kiln.hub.io.state import HubState
from kiln.protocol.codes import CLOSE_FAILED_HELLOS, CLOSE_TOO_MANY, CLOSE_UNAUTHORIZED

pytestmark = pytest.mark.timeout(120)

SHARED = "shared-t0ken"


@dataclass
class Hub:
    url: str
    requestor: str  # a requestor credential's token


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    with HubState.in_dir(tmp_path) as state:
        token = state.create("requestor", "alice")[1]
    async with start("127.0.0.1", 0, token=SHARED, data_dir=tmp_path, per_address=40, waiting_per_address=20) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield Hub(f"ws://127.0.0.1:{port}", token)


async def dial(url: str, address: str = "127.0.0.1") -> ClientConnection:
    return await connect(url, local_addr=(address, 0), open_timeout=30)


async def hello(ws: ClientConnection, token: str | None = SHARED) -> dict[str, Any]:
    """Say hello on ``ws``: the hub's answer (an error for a hello refused unread, whether or not sent)."""
    message = {"type": "hello", "version": "1.3", "role": "requestor", "name": "r", "token": token}
    with contextlib.suppress(ConnectionClosed):
        await ws.send(json.dumps(message))
    answer: dict[str, Any] = json.loads(await ws.recv())
    return answer


async def closed_with(ws: ClientConnection) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        await ws.recv()  # after the error, nothing but the close
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def refused(ws: ClientConnection, token: str | None = SHARED) -> tuple[str, int]:
    answer = await hello(ws, token)
    assert answer["type"] == "error", answer
    return answer["code"], await closed_with(ws)


async def test_an_address_holds_at_most_its_connections_waiting_to_say_hello(hub: Hub) -> None:
    waiting = [await dial(hub.url, "127.0.0.2") for _ in range(20)]
    one_more = await dial(hub.url, "127.0.0.2")
    assert await refused(one_more) == ("too_many", CLOSE_TOO_MANY)
    elsewhere = await dial(hub.url, "127.0.0.3")
    assert (await hello(elsewhere))["type"] == "welcome", "another address is not held back"
    assert (await hello(waiting[0]))["type"] == "welcome", "those already in may say hello"
    assert (await hello(await dial(hub.url, "127.0.0.2")))["type"] == "welcome", "one said hello: room for one"
    await asyncio.gather(*(ws.close() for ws in [*waiting, elsewhere]))


async def test_an_address_holds_at_most_its_connections(hub: Hub) -> None:
    joined = []
    for _ in range(40):
        ws = await dial(hub.url, "127.0.0.4")
        assert (await hello(ws))["type"] == "welcome"
        joined.append(ws)
    assert await refused(await dial(hub.url, "127.0.0.4")) == ("too_many", CLOSE_TOO_MANY)
    await joined.pop().close()
    await asyncio.sleep(0.1)
    ws = await dial(hub.url, "127.0.0.4")
    assert (await hello(ws))["type"] == "welcome", "one left: room for one"
    await asyncio.gather(*(ws.close() for ws in [*joined, ws]))


async def test_a_credential_holds_at_most_64_connections(tmp_path: Path) -> None:
    raise_open_file_limit()
    with HubState.in_dir(tmp_path) as state:
        alice, bob = state.create("requestor", "alice")[1], state.create("requestor", "bob")[1]
    async with start("127.0.0.1", 0, data_dir=tmp_path) as server:
        url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
        joined = [await dial(url) for _ in range(PER_CREDENTIAL)]
        assert {(await hello(ws, alice))["type"] for ws in joined} == {"welcome"}
        code, close = await refused(await dial(url), alice)
        assert (code, close) == ("too_many", CLOSE_TOO_MANY)
        other = await dial(url)
        assert (await hello(other, bob))["type"] == "welcome", "another credential is not held back"
        await joined.pop().close()
        await asyncio.sleep(0.1)
        again = await dial(url)
        assert (await hello(again, alice))["type"] == "welcome", "one left: room for one"
        await asyncio.gather(*(ws.close() for ws in [*joined, other, again]))


async def test_failed_hellos_from_an_address_are_rate_limited(hub: Hub) -> None:
    for _ in range(FAILED_HELLOS):
        assert await refused(await dial(hub.url, "127.0.0.5"), "wrong") == ("unauthorized", CLOSE_UNAUTHORIZED)
    for token in ("wrong", SHARED, hub.requestor):  # the right tokens too: a guesser learns nothing
        assert await refused(await dial(hub.url, "127.0.0.5"), token) == ("too_many", CLOSE_FAILED_HELLOS)
    ws = await dial(hub.url, "127.0.0.6")
    assert (await hello(ws, hub.requestor))["type"] == "welcome", "another address is not held back"
    await ws.close()
    await asyncio.sleep(60 / FAILED_HELLOS + 0.1)  # 30 a minute: one more after 2 s
    assert (await hello(await dial(hub.url, "127.0.0.5")))["type"] == "welcome"


def test_the_gate_counts_and_refills() -> None:
    now = [0.0]
    gate = Gate(per_address=3, waiting_per_address=2, failed_hellos=60, clock=lambda: now[0])
    assert gate.opened("a") is None and gate.opened("a") is None
    assert "waiting to say hello" in (gate.opened("a") or "")
    gate.closed("a", waiting=True)
    gate.welcomed("a")
    assert gate.opened("a") is None
    assert "too many connections from a (at most 3)" in (gate.opened("a") or "")
    gate.closed("a", waiting=False)  # the one welcomed
    for _ in range(3):
        gate.closed("a", waiting=True)
    assert not gate.connections and not gate.waiting, "nothing is kept of an address that holds nothing"
    for _ in range(60):
        assert gate.refusing("b") is None
        gate.failed("b")
    assert gate.refusing("b") == pytest.approx(1.0)
    now[0] = 0.5
    assert gate.refusing("b") == pytest.approx(0.5)
    now[0] = 1.0
    assert gate.refusing("b") is None


def test_an_address_counts_as_its_ipv4_or_its_ipv6_slash_64() -> None:
    assert source(("192.0.2.7", 4000)) == "192.0.2.7"
    assert source(("2001:db8:1:2:3:4:5:6", 4000, 0, 0)) == source(("2001:db8:1:2::9", 1, 0, 0)) == "2001:db8:1:2::/64"
    assert source(("2001:db8:1:3::9", 1, 0, 0)) != source(("2001:db8:1:2::9", 1, 0, 0))
    assert source(("::ffff:192.0.2.7", 4000, 0, 0)) == "192.0.2.7"
    assert source(None) == source("/run/kiln.sock") == "local"
