"""The ledger's commands: ``kiln credit grant``, ``kiln ledger [check]`` on a hub's data folder,
``kiln balance`` and the SDK's ``balance()`` / ``ledger()`` over the wire (against a hub played
by the test, which answers the 1.5 requests as the protocol says), ``kiln hub --fee``."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

import kiln
from kiln.hub.io.server import start
from kiln.hub.io.state import FILE_NAME, HubState
from kiln.hub.ledger import Post
from kiln.protocol.errors import UnsupportedVersion, UsageError
from kiln.protocol.messages import PROTOCOL_NAME
from kiln.requestor.client import Balance
from tests.scripted_hub import LIMITS


def kiln_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    argv = [sys.executable, "-m", "kiln.cli", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done


TRANSACTION = {
    "id": 7,
    "key": "capture:a1:1",
    "kind": "capture",
    "time": 1000.5,
    "activity": "a1",
    "entries": [{"account": "hold:a1", "amount": -1500}, {"account": "provider:p1", "amount": 1500}],
}


@dataclass
class PlayedHub:
    """A hub that welcomes one requestor with ``version`` and answers ``balance`` and ``ledger``."""

    version: str
    url: str = ""
    asked: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, ws: ServerConnection) -> None:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello" and hello["role"] == "requestor", hello
        welcome = {"type": "welcome", "version": self.version, "session": "s1", "software": "played", "limits": LIMITS}
        await ws.send(json.dumps(welcome))
        try:
            async for frame in ws:
                message = json.loads(frame)
                self.asked.append(message)
                if message["type"] == "balance":
                    reply = {"account": "requestor:3", "available": 2_500_000, "held": 750_000, "spent": 1}
                    await ws.send(json.dumps({"type": "balance_info", "re": message["id"], **reply}))
                elif message["type"] == "ledger":
                    listed = {"transactions": [TRANSACTION], "matched": 12}
                    await ws.send(json.dumps({"type": "ledger_list", "re": message["id"], **listed}))
        except ConnectionClosed:
            pass


async def played(version: str) -> AsyncIterator[PlayedHub]:
    hub = PlayedHub(version)
    async with serve(hub.handle, "127.0.0.1", 0, subprotocols=[Subprotocol(PROTOCOL_NAME)]) as server:
        hub.url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
        yield hub


@pytest.fixture
async def hub() -> AsyncIterator[PlayedHub]:
    async for h in played("1.5"):
        yield h


@pytest.fixture
async def older_hub() -> AsyncIterator[PlayedHub]:
    async for h in played("1.4"):
        yield h


async def test_the_sdk_asks_the_hub_for_its_balance_and_ledger(hub: PlayedHub) -> None:
    async with kiln.connect(hub.url, reconnect=False) as requestor:
        balance = await requestor.balance()
        listed = await requestor.ledger("hub", limit=5)
        everything = await requestor.ledger()
        with pytest.raises(UsageError, match=r"cannot list the ledger: .*limit"):
            await requestor.ledger(limit=0)
    assert balance == Balance("requestor:3", 2.5, 0.75, 0.000001, 2_500_000, 750_000, 1)
    assert listed.matched == 12
    [t] = listed.transactions
    assert (t.id, t.kind, t.activity, [(e.account, e.amount) for e in t.entries]) == (
        7,
        "capture",
        "a1",
        [("hold:a1", -1500), ("provider:p1", 1500)],
    )
    assert everything.transactions == listed.transactions
    asked = [{k: v for k, v in m.items() if k != "id"} for m in hub.asked if m["type"] != "release"]
    assert asked == [
        {"type": "balance"},
        {"type": "ledger", "account": "hub", "limit": 5},
        {"type": "ledger", "limit": 100},
    ]


async def test_an_older_hub_is_not_asked(older_hub: PlayedHub) -> None:
    async with kiln.connect(older_hub.url, reconnect=False) as requestor:
        with pytest.raises(UnsupportedVersion, match=r"needs protocol 1\.5"):
            await requestor.balance()
        with pytest.raises(UnsupportedVersion, match=r"needs protocol 1\.5"):
            await requestor.ledger()
    assert older_hub.asked == []


async def test_kiln_balance_shows_the_account(hub: PlayedHub) -> None:
    shown = await asyncio.to_thread(kiln_cli, "balance", "--hub", hub.url)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "account    requestor:3",
        "available  2.5 credits",
        "held       0.75 credits (for live activities)",
        "spent      0.000001 credits",
    ]
    as_json = await asyncio.to_thread(kiln_cli, "balance", "--hub", hub.url, "--json")
    assert json.loads(as_json.stdout) == {
        "account": "requestor:3",
        "available": 2.5,
        "held": 0.75,
        "spent": 0.000001,
        "available_micro": 2_500_000,
        "held_micro": 750_000,
        "spent_micro": 1,
    }


def test_credits_are_granted_listed_and_checked(tmp_path: Path) -> None:
    data = ("--data-dir", str(tmp_path))
    assert kiln_cli("token", "create", "--role", "requestor", "--name", "alice", *data).returncode == 0
    granted = kiln_cli("credit", "grant", "alice", "5", *data)
    assert granted.returncode == 0, granted.stderr
    assert granted.stdout == "granted 5 credits to alice (requestor:1): balance 5\n"
    again = json.loads(kiln_cli("credit", "grant", "#1", "0.25", *data, "--json").stdout)
    assert (again["account"], again["granted"], again["balance"]) == ("requestor:1", 250_000, 5_250_000)
    with HubState.in_dir(tmp_path) as state:
        hold = ((("requestor:1", -1_000_000), ("hold:a1", 1_000_000)), "a1")
        state.apply(Post("hold:a1", "hold", 2000.0, *hold))

    table = kiln_cli("ledger", *data)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "TIME", "KIND", "ACTIVITY", "ACCOUNT", "AMOUNT"]
    assert lines[1].split()[0] == "3"  # then the time, in the local time zone
    assert lines[1].split()[-4:] == ["hold", "a1", "requestor:1", "-1"]
    assert lines[2].split() == ["hold:a1", "+1"]
    assert lines[3].split()[-4:] == ["grant", "-", "mint", "-0.25"]
    assert lines[-1] == "3 transactions; amounts in credits"
    mine = kiln_cli("ledger", "--account", "requestor:1", "--limit", "1", *data)
    assert mine.stdout.splitlines()[-1] == "3 transactions (the latest 1; --limit shows more); amounts in credits"
    listed = json.loads(kiln_cli("ledger", "--activity", "a1", "--json", *data).stdout)
    assert listed["matched"] == 1 and listed["transactions"][0]["key"] == "hold:a1"

    checked = kiln_cli("ledger", "check", *data)
    assert (checked.returncode, checked.stdout) == (0, "the ledger balances: 3 transactions, 3 accounts checked\n")
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        db.execute("UPDATE ledger_balances SET balance = 9 WHERE account = 'hold:a1'")
    db.close()
    checked = kiln_cli("ledger", "check", *data)
    assert checked.returncode == 1
    assert checked.stdout.splitlines() == [
        "account hold:a1: its cached balance is 9, its entries sum to 1000000",
        "1 problems: 3 transactions, 3 accounts checked",
    ]
    as_json = kiln_cli("ledger", *data, "check", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {
        "ok": False,
        "problems": ["account hold:a1: its cached balance is 9, its entries sum to 1000000"],
        "transactions": 3,
        "accounts": 3,
    }


def test_a_bad_grant_is_refused_in_one_line(tmp_path: Path) -> None:
    data = ("--data-dir", str(tmp_path))
    kiln_cli("token", "create", "--role", "provider", "--name", "p1", *data)
    for who in ("bob", "p1"):
        refused = kiln_cli("credit", "grant", who, "5", *data)
        assert refused.returncode == 1
        assert refused.stderr.startswith(f"kiln: no live requestor credential is named {who!r}")
    for amount, why in (("0", "more than 0"), ("0.0000001", "finer than a micro-credit"), ("x", "not 'x'")):
        refused = kiln_cli("credit", "grant", "bob", amount, *data)
        assert refused.returncode == 2 and why in refused.stderr, refused.stderr
    assert kiln_cli("ledger", "--data-dir", str(tmp_path / "none")).returncode == 1  # no hub data there
    with HubState.in_dir(tmp_path) as state:
        assert state.ledger_counts() == (0, 0)


async def test_a_hub_serves_with_a_fee_and_refuses_one_of_a_whole_payment(tmp_path: Path) -> None:
    async with start("127.0.0.1", 0, data_dir=tmp_path, fee_ppm=50_000) as server:
        assert server.sockets
    refused = await asyncio.to_thread(kiln_cli, "hub", "--fee", "1", "--data-dir", str(tmp_path))
    assert refused.returncode == 2 and "--fee: a fee is a fraction of each payment below 1" in refused.stderr


async def test_kiln_balance_at_a_real_hub_shows_what_was_granted(tmp_path: Path) -> None:
    with HubState.in_dir(tmp_path) as state:
        _, token = state.create("requestor", "alice")
    granted = await asyncio.to_thread(kiln_cli, "credit", "grant", "alice", "2.5", "--data-dir", str(tmp_path))
    assert granted.returncode == 0, granted.stderr
    async with start("127.0.0.1", 0, data_dir=tmp_path) as server:
        url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
        shown = await asyncio.to_thread(kiln_cli, "balance", "--hub", url, "--token", token, "--json")
        async with kiln.connect(url, token=token, reconnect=False) as requestor:
            listed = await requestor.ledger()
    assert shown.returncode == 0, shown.stderr
    account = json.loads(shown.stdout)
    assert (account["account"], account["available_micro"], account["held_micro"]) == ("requestor:1", 2_500_000, 0)
    assert [(t.kind, [(e.account, e.amount) for e in t.entries]) for t in listed.transactions] == [
        ("grant", [("mint", -2_500_000), ("requestor:1", 2_500_000)])
    ]
