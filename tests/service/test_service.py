"""Kiln as a service: the systemd units ``kiln service print-unit`` prints, whose ExecStart
really starts the hub, and stops that count as clean: SIGTERM or Ctrl-C ends ``kiln hub`` with
exit code 0. The provider's unit (Docker): tests/docker/test_service_provider.py."""

from __future__ import annotations

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


def kiln(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiln.cli", *args], capture_output=True, text=True, timeout=30, check=True
    )


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
    hub, provider = (
        parsed(kiln("service", "print-unit", "hub").stdout),
        parsed(kiln("service", "print-unit", "provider").stdout),
    )
    for role, unit in (("hub", hub), ("provider", provider)):
        assert set(unit.sections()) == {"Unit", "Service", "Install"}
        argv = exec_start(unit)
        assert argv[: len(kiln_command())] == kiln_command()
        assert argv[len(kiln_command()) :][:3] == [role, "--config", f"/etc/kiln/{role}.toml"]
        service = unit["Service"]
        assert (service["Restart"], service["KillSignal"], service["RestartPreventExitStatus"]) == (
            "on-failure",
            "SIGTERM",
            "2",
        )
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
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        )


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
