"""``kiln doctor`` passes on this machine (Docker, root, loop devices, the agent) against a real
hub with a provider's credential. Its failures: tests/service/test_doctor.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.service.test_doctor import CHECKS, Hub, doctor, lines, running_hub

pytestmark = pytest.mark.docker


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    async with running_hub(tmp_path / "hub") as running:
        yield running


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
