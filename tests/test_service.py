"""Kiln as a service: the systemd units ``kiln service print-unit`` prints, whose ExecStart
really starts the hub (and, with Docker, a provider), and stops that count as clean: SIGTERM
or Ctrl-C ends ``kiln hub`` and ``kiln provider`` with exit code 0, and the hub logs a
provider that stopped on purpose at INFO, never as a 1011."""

from __future__ import annotations

import asyncio
import configparser
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kiln.cli.units import kiln_command
from tests.conftest import Cluster, provider_left


def kiln(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kiln.cli", *args], capture_output=True, text=True, timeout=30,
                          check=True)  # fmt: skip


def parsed(text: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd's keys are case-sensitive
    unit.read_string(text)
    return unit


def exec_start(unit: configparser.ConfigParser, **replace: str) -> list[str]:
    line = unit["Service"]["ExecStart"]
    for old, new in replace.items():
        line = line.replace(old, new)
    return shlex.split(line)


def test_the_units_parse_and_run_this_installations_kiln_from_etc_kiln() -> None:
    hub, provider = parsed(kiln("service", "print-unit", "hub").stdout), parsed(kiln("service", "print-unit",
                                                                                     "provider").stdout)  # fmt: skip
    for role, unit in (("hub", hub), ("provider", provider)):
        assert set(unit.sections()) == {"Unit", "Service", "Install"}
        argv = exec_start(unit)
        assert argv[: len(kiln_command())] == kiln_command()
        assert argv[len(kiln_command()) :][:3] == [role, "--config", f"/etc/kiln/{role}.toml"]
        service = unit["Service"]
        assert (service["Restart"], service["KillSignal"], service["RestartPreventExitStatus"]) == (
            "on-failure", "SIGTERM", "2")  # fmt: skip
        assert 10 <= int(service["TimeoutStopSec"]) <= 120
        assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "docker.service" in provider["Unit"]["After"] and provider["Unit"]["Requires"] == "docker.service"
    # The provider's token comes from a file systemd hands it: never on its command line, never in the unit.
    assert provider["Service"]["LoadCredential"] == "token:/etc/kiln/provider.token"
    assert exec_start(provider)[-2:] == ["--token-file", "${CREDENTIALS_DIRECTORY}/token"]
    # Its volumes are loop-mounted for dockerd to see: no mount namespace of its own.
    assert not {"PrivateTmp", "ProtectSystem", "PrivateMounts"} & set(provider["Service"])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_finds_nothing_to_say_about_the_units(tmp_path: Path) -> None:
    for role in ("hub", "provider"):
        path = tmp_path / f"kiln-{role}.service"
        path.write_text(kiln("service", "print-unit", role).stdout)
        verified = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False)
        assert verified.returncode == 0 and verified.stderr == "", verified.stderr


def started(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})  # fmt: skip


def wait_for(log: Path, pattern: str, process: subprocess.Popen[bytes], timeout: float = 30) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if match := re.search(pattern, log.read_text(errors="replace")):
            return match
        assert process.poll() is None, log.read_text()
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} within {timeout:g} s:\n{log.read_text()}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_hub_units_exec_start_serves_and_a_signal_stops_it_with_exit_code_0(tmp_path: Path, sig: int) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f'host = "127.0.0.1"\nport = 0\ndata-dir = "{tmp_path / "hub"}"\nstore-limit = "1GiB"\n')
    argv = exec_start(parsed(kiln("service", "print-unit", "hub").stdout), **{"/etc/kiln/hub.toml": str(config)})
    log = tmp_path / "hub.log"
    hub = started(argv, log)
    try:
        url = wait_for(log, r"listening on (ws://\S+)", hub).group(1)
        assert kiln("market", "--hub", url).stdout == "no providers\n"
        hub.send_signal(sig)
        assert hub.wait(timeout=30) == 0, log.read_text()
    finally:
        if hub.poll() is None:
            hub.kill()
    text = log.read_text()
    assert "kiln.hub INFO stopped" in text and "Traceback" not in text and "ERROR" not in text, text
    assert f"of {2**30}" in text, "the store limit came from the file"


TOKEN = "unit-t0ken"


@pytest.mark.docker
@pytest.mark.timeout(120)
@pytest.mark.hub_args("--token", TOKEN)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_provider_of_the_unit_stopped_with_a_signal_exits_0_and_the_hub_logs_it_at_info(
    cluster: Cluster, tmp_path: Path, sig: int
) -> None:
    cluster.token = TOKEN
    name = f"unit{cluster.suffix}"
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "token").write_text(TOKEN + "\n")  # what LoadCredential hands it
    config = tmp_path / "provider.toml"
    config.write_text(f'hub = "{cluster.url}"\nname = "{name}"\ncpus = 1\nmemory = "512MiB"\n'
                      f'data-dir = "{tmp_path / "provider"}"\nlabel = {{ from = "unit" }}\n')  # fmt: skip
    unit = parsed(kiln("service", "print-unit", "provider").stdout)
    argv = exec_start(unit, **{"/etc/kiln/provider.toml": str(config), "${CREDENTIALS_DIRECTORY}": str(credentials)})
    log = tmp_path / "provider.log"
    provider = started(argv, log)
    try:
        await asyncio.to_thread(cluster.wait_for_providers, {name})
        market = kiln("market", "--hub", cluster.url, "--token", TOKEN, "--label", "from=unit").stdout
        assert market.startswith(name), market
        provider.send_signal(sig)
        assert await asyncio.to_thread(provider.wait, 60) == 0, log.read_text()
    finally:
        if provider.poll() is None:
            provider.kill()
    left = await provider_left(cluster, name)
    assert " INFO " in left and "1011" not in left and "1001" in left, left
    assert "Traceback" not in log.read_text() and "kiln.provider INFO stopped" in log.read_text()
