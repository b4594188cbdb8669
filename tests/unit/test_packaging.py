"""What the packages carry, and how a provider finds its agent, checked without building
anything (tests/docker/test_wheel.py builds and installs the wheel, tests/docker/test_npm_package.py packs
and installs the npm tarball, tests/docker/test_agent_build.py cross-compiles the agent)."""

from __future__ import annotations

import json
import struct
import tomllib
from pathlib import Path

import pytest

from kiln_provider.agent_binary import find_agent, machine_arch
from kiln_provider.errors import DockerFailed
from tests.elf import MACHINES

ROOT = Path(__file__).resolve().parents[2]
OTHER = next(arch for arch in MACHINES if arch != machine_arch())
"""An architecture this machine is not: no agent for it is installed or built here."""


def test_the_license_is_mit_in_the_repo_the_wheel_and_the_npm_package() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the Kiln developers\n")
    assert (ROOT / "js-client" / "LICENSE").read_text() == text, "js-client/LICENSE is a copy of LICENSE"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (project["license"], project["license-files"]) == ("MIT", ["LICENSE"])
    package = json.loads((ROOT / "js-client" / "package.json").read_text())
    assert package["license"] == "MIT"
    assert "LICENSE" in package["files"]


def fake_elf(path: Path, machine: int, mode: int = 0o755, *, interpreter: bool = False) -> Path:
    """The first bytes of a 64-bit little-endian ELF for ``machine``: all the lookup reads. With
    ``interpreter``, one program header, PT_INTERP: a dynamically linked binary's."""
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack("<HHI", 2, machine, 1) + bytes(44)
    if interpreter:
        header = header[:32] + struct.pack("<Q", 64) + header[40:54] + struct.pack("<HH", 56, 1) + header[58:64]
        header += struct.pack("<I", 3) + bytes(52)  # p_type PT_INTERP, the rest of the header
    path.write_bytes(header)
    path.chmod(mode)
    return path


def test_kiln_agent_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = fake_elf(tmp_path / "agent", MACHINES[OTHER])
    monkeypatch.setenv("KILN_AGENT", str(tmp_path / "link"))
    (tmp_path / "link").symlink_to(agent)
    assert find_agent(OTHER) == str(agent)


def unfit(path: Path, kind: str) -> Path:
    """Something at ``path`` that cannot be the agent for :data:`OTHER`, of the ``kind`` named."""
    match kind:
        case "not executable":
            fake_elf(path, MACHINES[OTHER], mode=0o644)
        case "a folder":
            path.mkdir()
        case "a script":
            path.write_text("#!/bin/sh\n")
            path.chmod(0o755)
        case "another machine's":
            fake_elf(path, 40)  # EM_ARM
        case "this machine's":
            fake_elf(path, MACHINES[machine_arch()])
        case "dynamic":
            fake_elf(path, MACHINES[OTHER], interpreter=True)
    return path


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("missing", "does not exist"),
        ("not executable", "is not an executable file"),
        ("a folder", "is not an executable file"),
        ("a script", "is not an ELF binary"),
        ("another machine's", f"is built for ELF machine 40, not {OTHER}"),
        ("this machine's", f"is built for {machine_arch()}, not {OTHER}"),
        ("dynamic", "is linked dynamically (it runs in images that have no libc): build it static"),
    ],
)
def test_a_kiln_agent_that_does_not_fit_is_refused_with_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, problem: str
) -> None:
    path = unfit(tmp_path / "agent", kind)
    monkeypatch.setenv("KILN_AGENT", str(path))
    with pytest.raises(DockerFailed) as refused:
        find_agent(OTHER)
    assert str(refused.value) == f"$KILN_AGENT names {path}, which {problem}"


def test_without_an_agent_the_error_names_the_architecture_and_where_it_looked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KILN_AGENT", raising=False)
    with pytest.raises(DockerFailed) as missing:
        find_agent(OTHER)
    message = str(missing.value)
    assert message.startswith(f"no kiln-agent binary for {OTHER}: $KILN_AGENT is not set, ")
    package = ROOT / "provider_runtime" / "kiln_provider" / "bin" / f"kiln-agent-{OTHER}"
    assert f"{package} (from a platform wheel) does not exist" in message
    assert f"{ROOT / 'agent' / 'build' / 'kiln-agent'} (from make agent in a source tree)" in message
    assert f"install kiln from a wheel built for {OTHER}, run `make agent`" in message


def test_an_architecture_without_an_agent_says_which_have_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KILN_AGENT", raising=False)
    with pytest.raises(DockerFailed, match="kiln builds the agent for x86_64 and aarch64 only"):
        find_agent("riscv64")


def test_machine_names_are_those_of_the_agents(monkeypatch: pytest.MonkeyPatch) -> None:
    for machine, arch in (("arm64", "aarch64"), ("AMD64", "x86_64"), ("aarch64", "aarch64"), ("x86_64", "x86_64")):
        monkeypatch.setattr("platform.machine", lambda machine=machine: machine)
        assert machine_arch() == arch
