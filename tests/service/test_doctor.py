"""``kiln doctor``: one line per check of what a provider needs here, exit 1 when one fails.
It fails with a clear line (and what to do) when Docker is unreachable, the hub is, or the token is
wrong; it passes on a machine with Docker (tests/docker/test_doctor_passes.py)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiln.hub.io.server import start
from kiln.hub.io.state import HubState

CHECKS = ["docker", "root", "loop devices", "mkfs.ext4", "cpu accounting", "agent", "disk", "hub"]


@dataclass
class Hub:
    url: str
    token: str
    """A provider credential's."""


@asynccontextmanager
async def running_hub(data_dir: Path) -> AsyncIterator[Hub]:
    """An in-process hub in ``data_dir`` that holds a provider credential."""
    with HubState.in_dir(data_dir) as state:
        token = state.create("provider", "doctor-p1")[1]
    async with start("127.0.0.1", 0, data_dir=data_dir) as server:
        yield Hub(f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}", token)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    async with running_hub(tmp_path / "hub") as running:
        yield running


def doctor(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    return subprocess.run(
        [sys.executable, "-m", "kiln.cli", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **env},
        check=False,
    )


def lines(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Each check's line, by the check's name."""
    assert "Traceback" not in done.stderr, done.stderr
    found = {}
    for line in done.stdout.splitlines():
        status, rest = line.split(" ", 1)
        check = next(c for c in CHECKS if rest.strip().startswith(c))
        found[check] = f"{status} {rest.strip()[len(check) :].strip()}"
    assert list(found) == CHECKS, done.stdout
    return found


async def test_doctor_fails_with_a_clear_line_when_docker_is_unreachable(tmp_path: Path) -> None:
    done = await asyncio.to_thread(doctor, "--data-dir", str(tmp_path), DOCKER_HOST="unix:///nonexistent.sock")
    found = lines(done)
    assert done.returncode == 1
    assert found["docker"].startswith("FAIL cannot reach the Docker engine at unix:///nonexistent.sock: ")
    assert found["docker"].endswith("; do: start it (systemctl start docker), or point DOCKER_HOST at it")
    assert found["hub"].startswith("skip no hub given"), "no hub anywhere: not dialled, not a failure"


async def test_doctor_fails_with_a_clear_line_when_the_hub_is_unreachable_or_refuses_the_token(
    hub: Hub, tmp_path: Path
) -> None:
    unreachable = await asyncio.to_thread(doctor, "--data-dir", str(tmp_path), KILN_HUB="ws://127.0.0.1:1")
    assert unreachable.returncode == 1
    assert lines(unreachable)["hub"].startswith("FAIL cannot reach the hub at ws://127.0.0.1:1: ")
    assert lines(unreachable)["hub"].endswith("; do: start the hub, or check --hub (and --ca for a wss:// hub)")
    wrong = await asyncio.to_thread(doctor, "--hub", hub.url, "--token", "not-it", "--data-dir", str(tmp_path))
    assert wrong.returncode == 1
    assert lines(wrong)["hub"] == (
        f"FAIL {hub.url}: the hub refused us: unknown or revoked token; do: give the token of a credential the hub "
        "holds (kiln token create --role provider --name N)"
    )
    as_json = json.loads((await asyncio.to_thread(doctor, "--hub", hub.url, "--json", KILN_TOKEN="not-it")).stdout)
    assert as_json["ok"] is False
    [checked] = [c for c in as_json["checks"] if c["check"] == "hub"]
    assert checked["status"] == "fail" and "unknown or revoked token" in checked["found"] and checked["fix"]


async def test_doctor_checks_each_hub_given(hub: Hub, tmp_path: Path) -> None:
    hubs = f"ws://127.0.0.1:1,{hub.url}"
    done = await asyncio.to_thread(doctor, "--json", "--data-dir", str(tmp_path), KILN_HUB=hubs, KILN_TOKEN=hub.token)
    checked = [c for c in json.loads(done.stdout)["checks"] if c["check"] == "hub"]
    assert [c["status"] for c in checked] == ["fail", "ok"], checked
    assert checked[0]["found"].startswith("cannot reach the hub at ws://127.0.0.1:1: ")
    assert checked[1]["found"].startswith(f"{hub.url} answered; the token is a live provider credential's")
