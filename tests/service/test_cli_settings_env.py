"""``kiln market`` against a real hub, told where and how to join only by the environment or a
token file (the settings by themselves: tests/unit/test_cli_settings.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kiln.hub.io.server import start
from tests.unit.test_cli_settings import SHARED, write


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KILN_HUB", "KILN_TOKEN", "KILN_CA"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[str]:
    async with start("127.0.0.1", 0, token=SHARED, data_dir=tmp_path / "hub") as server:
        yield f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"


def kiln(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    return subprocess.run(
        [sys.executable, "-m", "kiln.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**base, **env},
        check=False,
    )


async def test_kiln_market_joins_with_the_environment_or_a_token_file(hub: str, tmp_path: Path) -> None:
    joined = await asyncio.to_thread(kiln, "market", env={"KILN_HUB": hub, "KILN_TOKEN": SHARED})
    assert (joined.returncode, joined.stdout, joined.stderr) == (0, "no providers\n", "")
    wrong = await asyncio.to_thread(kiln, "market", env={"KILN_HUB": hub, "KILN_TOKEN": "wrong"})
    assert wrong.returncode == 1 and wrong.stderr == "kiln: the hub refused us: wrong token [unauthorized]\n"
    token = write(tmp_path / "token", SHARED + "\n")
    env = {"KILN_HUB": hub, "KILN_TOKEN": "wrong"}  # the file given on the command line wins
    from_file = await asyncio.to_thread(kiln, "market", "--token-file", str(token), env=env)
    assert (from_file.returncode, from_file.stdout) == (0, "no providers\n"), from_file.stderr
