"""The agent cross-compiled for both architectures a wheel is built for (agent/compile.py, the
compiler of `make agent`, `make dist` and the wheel's build hook): each a static 64-bit ELF for
its machine, read from its header (the aarch64 one cannot run here). Then the provider's
lookup refuses an agent built for the other machine.

In the tier of real things because the first build for a target on a machine takes about
30 s (Zig builds musl once into ~/.cache/zig); later ones take 0.1 s.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kiln_provider.agent_binary import find_agent, machine_arch
from kiln_provider.errors import DockerFailed
from tests.elf import MACHINES, read_elf

pytestmark = [pytest.mark.docker, pytest.mark.long, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The agent for each architecture, compiled now into a fresh folder."""
    folder = tmp_path_factory.mktemp("agents")
    built = {}
    for arch in MACHINES:
        out = folder / f"kiln-agent-{arch}"
        done = subprocess.run(
            [sys.executable, str(ROOT / "agent" / "compile.py"), "--arch", arch, "-o", str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        built[arch] = out
    return built


@pytest.mark.parametrize("arch", list(MACHINES))
def test_the_agent_is_a_static_elf_for_its_machine(agents: dict[str, Path], arch: str) -> None:
    data = agents[arch].read_bytes()
    elf = read_elf(data)
    assert (elf.bits, elf.machine) == (64, MACHINES[arch])
    assert elf.static, f"the {arch} agent asks for a program interpreter: {elf.segments}"
    assert len(data) < 100 * 1024, f"the {arch} agent is {len(data)} bytes"
    print(f"kiln-agent for {arch}: {len(data)} bytes")


def test_the_provider_refuses_an_agent_built_for_another_machine(
    agents: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    here = machine_arch()
    other = next(arch for arch in MACHINES if arch != here)
    monkeypatch.setenv("KILN_AGENT", str(agents[other]))
    with pytest.raises(DockerFailed, match=f"built for {other}, not {here}"):
        find_agent()
    monkeypatch.setenv("KILN_AGENT", str(agents[here]))
    assert find_agent() == str(agents[here].resolve())
