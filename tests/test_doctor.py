"""``kiln doctor``: one line per check of what a provider needs here, exit 1 when one fails.
It passes on this machine against a real hub with a provider's credential, and fails with a
clear line (and what to do) when Docker is unreachable, the hub is, or the token is wrong."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
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


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    with HubState.in_dir(tmp_path / "hub") as state:
        token = state.create("provider", "doctor-p1")[1]
    async with start("127.0.0.1", 0, data_dir=tmp_path / "hub") as server:
        yield Hub(f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}", token)


def doctor(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    return subprocess.run([sys.executable, "-m", "kiln.cli", "doctor", *args], capture_output=True, text=True,
                          timeout=60, env={**base, **env}, check=False)  # fmt: skip


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


@pytest.mark.docker
async def test_doctor_passes_on_this_machine_against_a_real_hub(hub: Hub, tmp_path: Path) -> None:
    token = tmp_path / "provider.token"
    token.write_text(hub.token + "\n")
    args = ("--hub", hub.url, "--token-file", str(token), "--data-dir", str(tmp_path / "provider"))
    done = await asyncio.to_thread(doctor, *args)
    found = lines(done)
    assert done.returncode == 0, done.stdout
    assert all(line.startswith("ok ") for line in found.values()), done.stdout
    assert found["docker"].startswith("ok Docker ")
    assert "is a live provider credential's" in found["hub"]
    as_json = json.loads((await asyncio.to_thread(doctor, *args, "--json")).stdout)
    assert as_json["ok"] is True and [c["check"] for c in as_json["checks"]] == CHECKS
    assert {c["status"] for c in as_json["checks"]} == {"ok"}
    # A config file says the same as the flags (the provider's own, with keys it does not check).
    config = tmp_path / "provider.toml"
    config.write_text(f'hub = "{hub.url}"\nname = "doctor-p1"\ncpus = 1\ntoken-file = "provider.token"\n')
    assert (await asyncio.to_thread(doctor, "--config", str(config))).returncode == 0


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
