"""``--json``: every command that prints a table or a record prints instead exactly one JSON
document on stdout (the notes stay on stderr), with the Python SDK's records field for field:
sizes in bytes, times in Unix seconds. Against a real hub on a real port."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kiln.hub.io.server import start
from kiln.hub.io.state import HubState
from tests.unit.test_images import BASE, TOP, entries_of, write_tar


def kiln_json(*args: str) -> Any:
    """What ``kiln ARGS --json`` prints: it must be one JSON document and nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    argv = [sys.executable, "-m", "kiln.cli", *args, "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout)  # one document: json.loads refuses anything after it


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """A hub with credentials: its URL and an admin's token."""
    with HubState.in_dir(tmp_path) as state:
        admin = state.create("admin", "ops")[1]
    async with start("127.0.0.1", 0, data_dir=tmp_path) as server:
        yield f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}", admin


async def test_the_hubs_records_as_json(hub: tuple[str, str], tmp_path: Path) -> None:
    url, admin = hub
    dial = ("--hub", url, "--token", admin)
    archive = write_tar(tmp_path / "image.tar", entries_of([BASE, TOP], "oci", tags=["wordcount:1"]))
    pushed = await asyncio.to_thread(kiln_json, "image", "push", "--file", str(archive), "--tag", "wc:latest", *dial)
    assert sorted(pushed["tags"]) == ["wc:latest", "wordcount:1"]
    assert (pushed["layers"], pushed["layers_skipped"], pushed["skipped_bytes"]) == (2, 0, 0)
    assert pushed["size"] == pushed["sent_bytes"] > len(BASE) + len(TOP), "bytes, the config's too"
    assert pushed["info"]["digest"] == pushed["digest"] and pushed["digest"].startswith("sha256:")
    assert abs(pushed["info"]["pushed"] - time.time()) < 60, "times in Unix seconds"

    listed = await asyncio.to_thread(kiln_json, "image", "ls", *dial)
    assert set(listed) == {"images", "used", "limit"}
    [image] = listed["images"]
    assert (image["digest"], image["size"], image["tags"]) == (pushed["digest"], pushed["size"], pushed["tags"])
    # The store counts each layer at the larger of its tar and its files once extracted (4 KiB blocks).
    assert listed["limit"] == 20 * 2**30 and pushed["size"] <= listed["used"] < pushed["size"] + 16 * 4096

    market = await asyncio.to_thread(kiln_json, "market", *dial)
    assert market == {"providers": []}
    activities = await asyncio.to_thread(kiln_json, "activities", "--all", *dial)
    assert activities == {"activities": []}

    removed = await asyncio.to_thread(kiln_json, "image", "rm", "wc:latest", *dial)
    assert removed == {"removed": "wc:latest"}
    assert (await asyncio.to_thread(kiln_json, "image", "ls", *dial))["images"] == []


def test_credentials_and_usage_as_json(tmp_path: Path) -> None:
    data = ("--data-dir", str(tmp_path))
    created = kiln_json("token", "create", "--role", "provider", "--name", "p1", *data)
    assert set(created) == {"id", "role", "name", "created", "revoked", "token"}
    assert (created["role"], created["name"], created["revoked"]) == ("provider", "p1", None)
    assert created["token"].startswith("kiln_") and abs(created["created"] - time.time()) < 60
    listed = kiln_json("token", "ls", *data)
    assert listed == {"credentials": [{k: v for k, v in created.items() if k != "token"}]}, "never a token"
    revoked = kiln_json("token", "revoke", "p1", *data)
    assert (revoked["id"], revoked["role"]) == (created["id"], "provider") and revoked["revoked"] >= created["created"]
    assert kiln_json("usage", *data) == {"by": "requestor", "totals": []}
    assert kiln_json("usage", "--by", "provider", *data) == {"by": "provider", "totals": []}
