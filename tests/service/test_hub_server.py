"""A real hub on a real port, spoken to by raw WebSocket clients."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import kiln
from kiln.hub.io.server import start
from kiln.protocol.codes import CLOSE_HANDSHAKE, CLOSE_UNAUTHORIZED, CLOSE_UNSUPPORTED_VERSION

HELLO = {"type": "hello", "version": "1.0", "role": "requestor", "name": "raw"}


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[str]:
    async with start("127.0.0.1", 0, token="t0ken", data_dir=tmp_path) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


async def send(ws: ClientConnection, message: dict[str, Any] | str) -> dict[str, Any]:
    await ws.send(message if isinstance(message, str) else json.dumps(message))
    reply = json.loads(await ws.recv())
    assert isinstance(reply, dict)
    return reply


async def joined(url: str) -> ClientConnection:
    ws = await connect(url, subprotocols=["kiln.v1"])  # type: ignore[list-item]
    welcome = await send(ws, {**HELLO, "token": "t0ken"})
    assert welcome["type"] == "welcome", welcome
    return ws


async def test_subprotocol_and_welcome(hub: str) -> None:
    async with connect(hub, subprotocols=["kiln.v1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "kiln.v1"
        welcome = await send(ws, {**HELLO, "token": "t0ken"})
        assert welcome["version"] == "1.0"
        assert welcome["limits"]["chunk_bytes"] == 256 * 1024


async def test_wrong_version_gets_an_error_then_a_close(hub: str) -> None:
    async with connect(hub) as ws:
        error = await send(ws, {**HELLO, "version": "3.1", "token": "t0ken"})
        assert error["code"] == "unsupported_version"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CLOSE_UNSUPPORTED_VERSION


async def test_bad_token_and_junk_before_hello(hub: str) -> None:
    async with connect(hub) as ws:
        assert (await send(ws, HELLO))["code"] == "unauthorized"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_UNAUTHORIZED
    async with connect(hub) as ws:
        assert (await send(ws, "garbage"))["code"] == "bad_json"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_HANDSHAKE


async def test_bad_input_is_answered_and_the_hub_serves_on(hub: str) -> None:
    bystander = await joined(hub)
    ws = await joined(hub)
    try:
        early_offer = json.dumps({"type": "offer", "id": 2, "resources": {"cpus": 1, "memory": 1}, "arch": "x"})
        cases: list[tuple[str, str]] = [
            ("{not json", "bad_json"),
            (json.dumps({"type": "fly", "id": 1}), "unknown_type"),
            (json.dumps({"type": "market", "id": "1"}), "bad_message"),
            (early_offer, "out_of_order"),
            (json.dumps({"type": "exec", "id": 3, "activity": "nope", "argv": ["true"]}), "unknown_activity"),
            (json.dumps({"type": "upload", "id": 4, "activity": "x", "path": "/../etc", "size": 1}), "bad_path"),
            (json.dumps({"type": "market", "id": 5, "pad": "x" * (2 * 2**20)}), "message_too_large"),
        ]
        for frame, code in cases:
            reply = await send(ws, frame)
            assert (reply["type"], reply["code"]) == ("error", code), frame[:80]
        await ws.send(b"\x09\x00")
        assert json.loads(await ws.recv())["code"] == "bad_frame"
        assert (await send(ws, {"type": "market", "id": 9}))["type"] == "market_info"
        assert (await send(bystander, {"type": "market", "id": 1}))["type"] == "market_info"
    finally:
        await ws.close()
        await bystander.close()


async def test_a_frame_over_the_hard_limit_closes_only_that_peer(hub: str) -> None:
    bystander = await joined(hub)
    ws = await joined(hub)
    await ws.send(b"\x00" * (5 * 2**20))
    with pytest.raises(ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert (await send(bystander, {"type": "market", "id": 1}))["type"] == "market_info"
    await bystander.close()


async def test_python_client_reports_hub_refusals(hub: str) -> None:
    with pytest.raises(kiln.Unauthorized):
        async with kiln.connect(hub, token="wrong"):
            pass
    with pytest.raises(kiln.ConnectionClosed):
        async with kiln.connect("ws://127.0.0.1:1"):
            pass
    async with kiln.connect(hub, token="t0ken") as requestor:
        with pytest.raises(kiln.NoMatch, match="no provider is connected"):
            await requestor.rent("kiln-busybox:latest")
        with pytest.raises(kiln.UsageError):
            await requestor.rent("kiln-busybox:latest", kiln.Demand(memory="lots"))


async def test_a_silent_peer_is_closed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from kiln.hub.io import server as hub_server

    monkeypatch.setattr(hub_server, "HELLO_TIMEOUT", 0.2)
    async with start("127.0.0.1", 0, data_dir=tmp_path) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (CLOSE_HANDSHAKE, "no hello within 0.2 s")
