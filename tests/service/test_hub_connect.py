"""``connect`` (1.7) through a real hub on a real port, to a simulated provider's echo server, spoken
to by raw WebSocket clients: bytes both ways, a half-close, who may connect, the bounds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from kiln.hub.io.server import start
from kiln.hub.io.state import HubState
from kiln.protocol import frames, limits
from kiln.protocol.frames import FrameKind
from kiln.testing.simulated import REFUSED_PORT, SimulatedProvider, simulated

IMAGE = "kiln-busybox:latest"


@dataclass
class Hub:
    url: str
    tokens: dict[str, str]
    provider: SimulatedProvider


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    with HubState.in_dir(tmp_path) as state:
        named = [("provider", "sim-00000"), ("provider", "old"), ("requestor", "alice"), ("requestor", "bob")]
        tokens = {name: state.create(role, name)[1] for role, name in named}  # type: ignore[arg-type]
    async with start("127.0.0.1", 0, data_dir=tmp_path) as server:
        url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
        async with simulated(url, 1, token=tokens["sim-00000"]) as [provider]:
            yield Hub(url, tokens, provider)


class Raw:
    """A raw session: JSON messages and binary frames as they come."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def join(cls, url: str, role: str, name: str, token: str | None = None, version: str = "1.7") -> Raw:
        ws = await connect(url, subprotocols=["kiln.v1"])  # type: ignore[list-item]
        raw = cls(ws)
        hello = {"type": "hello", "version": version, "role": role, "name": name}
        welcome = await raw.ask(hello if token is None else {**hello, "token": token})
        assert welcome["type"] == "welcome", welcome
        return raw

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.send(message)
        return await self.message()

    async def message(self) -> dict[str, Any]:
        data = await asyncio.wait_for(self.ws.recv(), 5)
        assert isinstance(data, str), f"a binary frame where a message was due: {data!r}"
        answer = json.loads(data)
        assert isinstance(answer, dict)
        return answer

    async def frame(self) -> frames.Frame:
        data = await asyncio.wait_for(self.ws.recv(), 5)
        assert isinstance(data, bytes), f"a message where a frame was due: {data!r}"
        return frames.decode(data, limits.CHUNK_BYTES)

    async def rent(self, **fields: Any) -> str:
        rented = await self.ask({"type": "rent", "id": 1, "image": IMAGE, "demand": {}, **fields})
        assert rented["type"] == "rented", rented
        activity = rented["activity"]
        assert isinstance(activity, str)
        return activity


async def carries(provider: SimulatedProvider, count: int) -> None:
    """Wait (a second at most) until ``provider`` carries ``count`` connections."""
    for _ in range(100):
        if provider.carrying == count:
            return
        await asyncio.sleep(0.01)
    assert provider.carrying == count


async def test_echo_with_a_half_close(hub: Hub) -> None:
    alice = await Raw.join(hub.url, "requestor", "alice", hub.tokens["alice"])
    activity = await alice.rent()
    await alice.send({"type": "connect", "id": 2, "activity": activity, "port": 8080, "window": 4})
    credit = await alice.message()  # the provider's first credit: connected
    assert credit == {"type": "credit", "stream": 2, "chunks": limits.WINDOW_CHUNKS}, credit
    sent = [b"hello", b" ", b"world" * 1000]
    for chunk in sent:
        await alice.ws.send(frames.encode(FrameKind.DATA, 2, chunk))
    await alice.ws.send(frames.encode(FrameKind.END, 2))  # half-close: the echo still answers
    echoed = b""
    while len(echoed) < sum(map(len, sent)):
        frame = await alice.frame()
        assert (frame.kind, frame.stream) == (FrameKind.DATA, 2)
        echoed += frame.payload
    assert echoed == b"".join(sent)
    end = await alice.frame()
    assert (end.kind, end.stream) == (FrameKind.END, 2)
    done = await alice.message()
    assert done == {"type": "done", "re": 2, "bytes": len(echoed)}, done
    refused = await alice.ask({"type": "connect", "id": 3, "activity": activity, "port": REFUSED_PORT})
    assert (refused["code"], refused["re"]) == ("connection_refused", 3), refused
    await alice.ws.close()


async def test_a_provider_of_1_6_is_unsupported(hub: Hub) -> None:
    old = await Raw.join(hub.url, "provider", "old", hub.tokens["old"], version="1.6")
    offer = {"type": "offer", "id": 1, "resources": {"cpus": 1, "memory": 2**30, "storage": 2**30}, "arch": "amd64"}
    assert (await old.ask({**offer, "images": [IMAGE]}))["type"] == "done"
    alice = await Raw.join(hub.url, "requestor", "alice", hub.tokens["alice"])
    await alice.send({"type": "rent", "id": 1, "image": IMAGE, "demand": {}, "allow": ["old"]})
    create = await old.message()
    assert create["type"] == "create"
    await old.send({"type": "done", "re": create["id"]})
    rented = await alice.message()
    assert rented["provider"] == "old", rented
    error = await alice.ask({"type": "connect", "id": 2, "activity": rented["activity"], "port": 8080})
    assert (error["code"], error["re"]) == ("unsupported_version", 2), error
    assert "1.7" in error["message"]
    await alice.ws.close()
    await old.ws.close()


async def test_who_may_connect(hub: Hub) -> None:
    alice = await Raw.join(hub.url, "requestor", "alice", hub.tokens["alice"])
    activity = await alice.rent()
    # Another session of the same credential (kiln forward from a second process) reaches it.
    sibling = await Raw.join(hub.url, "requestor", "alice-2", hub.tokens["alice"])
    await sibling.send({"type": "connect", "id": 7, "activity": activity, "port": 8080})
    assert (await sibling.message())["type"] == "credit"
    await sibling.ws.send(frames.encode(FrameKind.DATA, 7, b"ping"))
    assert bytes((await sibling.frame()).payload) == b"ping"
    await sibling.ws.send(frames.encode(FrameKind.END, 7))
    assert (await sibling.frame()).kind is FrameKind.END
    assert await sibling.message() == {"type": "done", "re": 7, "bytes": 4}
    # Nor may it do anything else with it.
    refused = await sibling.ask({"type": "exec", "id": 8, "activity": activity, "argv": ["true"]})
    assert refused["code"] == "unknown_activity", refused
    # Another credential's session may not connect to it.
    bob = await Raw.join(hub.url, "requestor", "bob", hub.tokens["bob"])
    refused = await bob.ask({"type": "connect", "id": 3, "activity": activity, "port": 8080})
    assert (refused["code"], refused["re"]) == ("unknown_activity", 3), refused
    # A sibling that leaves ends its connections with it; the activity goes on.
    await sibling.send({"type": "connect", "id": 9, "activity": activity, "port": 8080})
    assert (await sibling.message())["type"] == "credit"
    await sibling.ws.close()
    await carries(hub.provider, 0)
    await alice.send({"type": "connect", "id": 2, "activity": activity, "port": 8080})
    assert (await alice.message())["type"] == "credit"
    await carries(hub.provider, 1)
    for ws in (alice, bob):
        await ws.ws.close()


async def test_streams_are_bounded(hub: Hub) -> None:
    alice = await Raw.join(hub.url, "requestor", "alice", hub.tokens["alice"])
    activity = await alice.rent()
    for n in range(limits.MAX_STREAMS):
        await alice.send({"type": "connect", "id": 10 + n, "activity": activity, "port": 8080})
    await alice.send({"type": "connect", "id": 99, "activity": activity, "port": 8080})
    answers = [await alice.message() for _ in range(limits.MAX_STREAMS + 1)]
    refused = [a for a in answers if a["type"] != "credit"]  # the open connections' first credits, and:
    assert [(a["type"], a["code"], a["re"]) for a in refused] == [("error", "too_many", 99)], refused
    await alice.ws.close()
