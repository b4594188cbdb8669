"""Credentials at a real hub on a real port: roles, bound provider names, revocation, an admin's
view of every activity, the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import kiln
from kiln.hub.io import server as hub_server
from kiln.hub.io.server import start
from kiln.hub.io.state import HubState
from kiln.protocol.codes import CLOSE_NAME_TAKEN, CLOSE_UNAUTHORIZED
from kiln.protocol.messages import Exec, Release
from kiln.testing.simulated import simulated_providers

SHARED = "shared-t0ken"
IMAGE = "kiln-busybox:latest"


@dataclass
class Hub:
    url: str
    data_dir: Path
    provider: str  # the token of a provider credential bound to "p1"
    requestor: str
    admin: str


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiln.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
async def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Hub]:
    monkeypatch.setattr(hub_server, "REVOCATION_CHECK", 0.1)
    with HubState.in_dir(tmp_path) as state:
        tokens = [state.create("provider", "p1")[1], state.create("requestor", "alice")[1], state.create("admin")[1]]
    async with start("127.0.0.1", 0, token=SHARED, data_dir=tmp_path) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield Hub(f"ws://127.0.0.1:{port}", tmp_path, *tokens)


async def hello(url: str, role: str, name: str, token: str | None) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await connect(url, subprotocols=["kiln.v1"])  # type: ignore[list-item]
    message = {"type": "hello", "version": "1.2", "role": role, "name": name}
    await ws.send(json.dumps(message if token is None else {**message, "token": token}))
    return ws, json.loads(await ws.recv())


async def closed_with(ws: ClientConnection) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def refused(url: str, role: str, name: str, token: str | None, close: int = CLOSE_UNAUTHORIZED) -> str:
    ws, answer = await hello(url, role, name, token)
    assert answer["type"] == "error", answer
    assert await closed_with(ws) == close
    return f"{answer['code']}: {answer['message']}"


async def welcomed(url: str, role: str, name: str, token: str | None) -> ClientConnection:
    ws, answer = await hello(url, role, name, token)
    assert answer["type"] == "welcome", answer
    return ws


async def test_a_provider_token_cannot_rent(hub: Hub) -> None:
    with pytest.raises(kiln.Unauthorized, match="a provider credential cannot join as a requestor"):
        async with kiln.connect(hub.url, token=hub.provider):
            pass
    assert (await refused(hub.url, "requestor", "p1", hub.provider)).startswith("unauthorized:")
    done = await asyncio.to_thread(cli, "market", "--hub", hub.url, "--token", hub.provider)
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        "kiln: the hub refused us: a provider credential cannot join as a requestor: use a requestor credential "
        "[unauthorized]"
    ), done.stderr


async def test_a_requestor_token_cannot_offer(hub: Hub) -> None:
    for token in (hub.requestor, hub.admin):
        message = await refused(hub.url, "provider", "p1", token)
        assert message.startswith("unauthorized: a ") and "credential cannot join as a provider" in message


async def test_requestor_and_admin_credentials_join_as_requestors(hub: Hub) -> None:
    for token in (hub.requestor, hub.admin, SHARED):
        async with kiln.connect(hub.url, token=token) as requestor:
            assert await requestor.market() == []
    with pytest.raises(kiln.Unauthorized, match="this hub needs a token"):
        async with kiln.connect(hub.url):
            pass


async def test_a_providers_name_is_its_credentials_connected_or_not(hub: Hub) -> None:
    assert "binds the provider name 'p1', not 'p2'" in await refused(hub.url, "provider", "p2", hub.provider)
    provider = await welcomed(hub.url, "provider", "p1", hub.provider)
    # connected: not with the shared token, another credential, nor even its own
    assert "bound to a credential" in await refused(hub.url, "provider", "p1", SHARED)
    assert "cannot join as a provider" in await refused(hub.url, "provider", "p1", hub.requestor)
    assert (await refused(hub.url, "provider", "p1", hub.provider, CLOSE_NAME_TAKEN)).startswith("name_taken:")
    await provider.close()
    await asyncio.sleep(0.1)  # the hub sees it gone
    # disconnected: still not without its credential
    assert "bound to a credential" in await refused(hub.url, "provider", "p1", SHARED)
    assert "unknown or revoked" in await refused(hub.url, "provider", "p1", "kiln_guess")
    assert (await refused(hub.url, "provider", "p1", None)).startswith("unauthorized: this hub needs a token")
    back = await welcomed(hub.url, "provider", "p1", hub.provider)
    await back.close()


async def test_the_shared_token_still_admits_any_role_under_a_free_name(hub: Hub) -> None:
    provider = await welcomed(hub.url, "provider", "p9", SHARED)
    requestor = await welcomed(hub.url, "requestor", "p1", SHARED)
    await requestor.send(json.dumps({"type": "market", "id": 1}))
    assert json.loads(await requestor.recv())["type"] == "market_info"
    await provider.close()
    await requestor.close()


async def test_a_revoked_token_is_cut_off_and_refused(hub: Hub) -> None:
    live = await welcomed(hub.url, "requestor", "r", hub.requestor)
    bystander = await welcomed(hub.url, "requestor", "b", hub.admin)
    done = await asyncio.to_thread(cli, "token", "revoke", "alice", "--data-dir", str(hub.data_dir))
    assert done.returncode == 0 and done.stdout == "revoked requestor credential 2 (alice)\n", done
    error = json.loads(await asyncio.wait_for(live.recv(), 5))
    assert error == {"type": "error", "code": "unauthorized", "message": "credential 2 was revoked"}
    assert await closed_with(live) == CLOSE_UNAUTHORIZED
    assert "unknown or revoked token" in await refused(hub.url, "requestor", "r", hub.requestor)
    await bystander.send(json.dumps({"type": "market", "id": 1}))
    assert json.loads(await bystander.recv())["type"] == "market_info"
    await bystander.close()


async def test_a_credential_created_while_the_hub_runs_is_taken_at_the_next_hello(hub: Hub) -> None:
    done = await asyncio.to_thread(
        cli, "token", "create", "--role", "provider", "--name", "p2", "--data-dir", str(hub.data_dir)
    )
    assert done.returncode == 0, done.stderr
    db = hub.data_dir / "hub.db"
    assert done.stderr == f"created provider credential 4 bound to the name 'p2' in {db}; its token:\n"
    token = done.stdout.splitlines()[-1]
    assert token.startswith("kiln_")
    provider = await welcomed(hub.url, "provider", "p2", token)
    await provider.close()


def test_token_ls_shows_no_secret(tmp_path: Path) -> None:
    made = [
        cli("token", "create", "--role", role, *name, "--data-dir", str(tmp_path))
        for role, name in (("provider", ["--name", "p1"]), ("requestor", []), ("admin", ["--name", "ops"]))
    ]
    assert all(m.returncode == 0 for m in made), made
    tokens = [m.stdout.strip() for m in made]
    assert all(t.startswith("kiln_") and "\n" not in t for t in tokens)
    listed = cli("token", "ls", "--data-dir", str(tmp_path))
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "ROLE", "NAME", "CREATED", "REVOKED"]
    expected = [["1", "provider", "p1"], ["2", "requestor", "-"], ["3", "admin", "ops"]]
    assert [line.split()[:3] for line in lines[1:]] == expected
    assert all(line.endswith("-") for line in lines[1:])
    with HubState.in_dir(tmp_path) as state:
        assert all(state.find(t) is not None for t in tokens)
    for token in tokens:
        assert token not in listed.stdout and token[5:] not in listed.stdout
        assert hashlib.sha256(token.encode()).hexdigest() not in listed.stdout
    refused = cli("token", "create", "--role", "provider", "--data-dir", str(tmp_path))
    assert (refused.returncode, refused.stdout) == (1, "")
    assert "a provider credential binds a provider name: give --name" in refused.stderr


async def test_an_admin_token_lists_every_activity_and_touches_only_its_own(hub: Hub) -> None:
    made = await asyncio.to_thread(
        cli, "token", "create", "--role", "admin", "--name", "ops", "--data-dir", str(hub.data_dir)
    )
    assert made.returncode == 0 and made.stderr.startswith("created admin credential 4 "), made
    admin_token = made.stdout.splitlines()[-1]
    demand = kiln.Demand(cpus=0.5, memory="64MiB")
    async with (
        simulated_providers(hub.url, 2, token=SHARED, prefix="p") as providers,
        kiln.connect(hub.url, token=hub.requestor, name="alice") as alice,
        kiln.connect(hub.url, token=admin_token, name="ops") as admin,
        alice.rent(IMAGE, demand, group="job-1") as first,
        alice.rent(IMAGE, demand, group="job-1") as second,
        admin.rent(IMAGE, demand) as own,
    ):
        mine = sorted([first.id, second.id])
        assert [a.id for a in await alice.list_activities()] == mine
        with pytest.raises(kiln.Unauthorized, match="needs an admin credential"):
            await alice.list_activities(all=True)
        assert [a.id for a in await alice.list_activities(limit=1)] == mine[:1], "and the connection goes on"

        every = await admin.list_activities(all=True)
        assert [a.id for a in every] == sorted([*mine, own.id])
        assert {a.id: a.requestor for a in every} == {first.id: "alice", second.id: "alice", own.id: "ops"}
        assert len({a.credential for a in every}) == 2 and None not in {a.credential for a in every}
        assert {a.provider for a in every if a.group == "job-1"} == set(providers), "a group on distinct providers"
        assert all(a.state == "ready" and a.image == IMAGE and a.started is not None for a in every)
        assert all(a.resources.cpus == 0.5 and a.resources.memory == 64 * 2**20 for a in every)
        assert [a.id for a in await admin.list_activities()] == [own.id]

        # Seeing them lets the admin touch none of them.
        conn = admin.connection
        for request in (
            Release(type="release", id=conn.new_id(), activity=first.id),
            Exec(type="exec", id=conn.new_id(), activity=first.id, argv=["true"]),
        ):
            with pytest.raises(kiln.ActivityError) as refused:
                await conn.request(request)
            assert refused.value.code == "unknown_activity"
        assert (await first.run(["true"])).ok, "its owner still can"

        # The CLI, with the admin's token and with the requestor's.
        listed = await asyncio.to_thread(cli, "activities", "--hub", hub.url, "--token", admin_token, "--all")
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert lines[0].split() == ["ID", "REQUESTOR", "CREDENTIAL", "PROVIDER", "STATE", "CPUS", "MEMORY", "SINCE"]
        rows = [line.split() for line in lines[1:-1]]
        assert [row[:7] for row in rows] == [
            [a.id, a.requestor, str(a.credential), a.provider, "ready", "0.5", "64MiB"] for a in every
        ]
        assert all(" ".join(row[7:]).endswith(" ago") for row in rows), rows
        assert lines[-1] == "3 activities at the hub"
        # Without --all, the CLI's own: a new connection holds none.
        own_only = await asyncio.to_thread(cli, "activities", "--hub", hub.url, "--token", admin_token)
        assert own_only.stdout.startswith("0 activities held by this connection; --all lists"), own_only
        refused_cli = await asyncio.to_thread(cli, "activities", "--hub", hub.url, "--token", hub.requestor, "--all")
        assert refused_cli.returncode == 1 and refused_cli.stderr.strip().endswith("[unauthorized]"), refused_cli
    async with kiln.connect(hub.url, token=admin_token) as admin:
        assert await admin.list_activities(all=True) == [], "released on leaving"
