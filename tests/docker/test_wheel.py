"""The package is the product: `make dist` (for this machine's architecture, into a fresh
folder) builds the sdist and, from it, a platform wheel that carries the static agent; a fresh
venv outside the source tree installs the wheel with `[provider]`, and that venv's `kiln`
runs a hub, a provider (with the agent from the venv) and a command in a container.

Nothing is kept between runs: the build environments, the venv and the agent are made anew
(Zig's cache under ~/.cache/zig is keyed by the compiler's files and the source, so it cannot
hand back a stale agent).
"""

from __future__ import annotations

import os
import platform
import secrets
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kiln.testing import LocalCluster, Process
from kiln_provider.agent_binary import machine_arch
from tests.conftest import IMAGE, started
from tests.elf import MACHINES, read_elf

pytestmark = [pytest.mark.docker, pytest.mark.long, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
ARCH = machine_arch()
AGENT = f"kiln_provider/bin/kiln-agent-{ARCH}"


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float | None = None) -> str:
    """Run ``command``; its output, or a failure that shows the end of it."""
    done = subprocess.run(command, cwd=cwd, env=env, timeout=timeout, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `make dist` builds for this machine's architecture, in a fresh folder."""
    out = tmp_path_factory.mktemp("dist")
    run(["make", "-s", "dist", f"DIST_DIR={out}", f"DIST_ARCHES={ARCH}"], cwd=ROOT)
    return out


def the_one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, f"{pattern} in {folder}: {found}"
    return found[0]


def test_the_wheel_carries_the_static_agent_and_the_license(dist: Path) -> None:
    wheel = the_one(dist, "kiln-*.whl")
    assert wheel.name.endswith(f"-py3-none-manylinux_2_17_{ARCH}.manylinux2014_{ARCH}.musllinux_1_1_{ARCH}.whl")
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo(AGENT)
        assert (info.external_attr >> 16) & 0o111, "the agent is executable once installed"
        elf = read_elf(archive.read(AGENT))
        assert (elf.machine, elf.static) == (MACHINES[ARCH], True)
        names = archive.namelist()
        [license_name] = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert archive.read(license_name) == (ROOT / "LICENSE").read_bytes()
        [wheel_file] = [n for n in names if n.endswith(".dist-info/WHEEL")]
        assert "Root-Is-Purelib: false" in archive.read(wheel_file).decode()
    assert not [n for n in names if n.startswith(("tests/", "agent/"))]
    dashboard = ("index.html", "app.js", "app.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css")
    assert {f"kiln/hub/dashboard/{name}" for name in dashboard} <= set(names), "the hub's dashboard ships in the wheel"


def test_the_sdist_holds_what_a_wheel_is_built_from(dist: Path) -> None:
    with tarfile.open(the_one(dist, "kiln-*.tar.gz")) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    wanted = {"agent/kiln-agent.c", "agent/compile.py", "hatch_build.py", "pyproject.toml", "LICENSE", "README.md"}
    assert wanted <= names
    assert "provider_runtime/kiln_provider/docker_adapter.py" in names
    assert not [n for n in names if n.startswith(("agent/build", "tests/", "js-client/"))], names


def clean_env(venv: Path) -> dict[str, str]:
    """This process's environment without what would point Python at the source tree (or at
    another agent), with the venv's scripts first on the PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "KILN_", "VIRTUAL_ENV"))}
    return {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}


@dataclass
class VenvCluster(LocalCluster):
    """A cluster whose hub and providers are the venv's ``kiln`` script, started in ``logs``."""

    venv: Path = field(default_factory=Path)

    def spawn(self, name: str, *args: str) -> Process:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            argv = [str(self.venv / "bin" / "kiln"), *args]
            popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=clean_env(self.venv), cwd=self.logs
            )
        return Process(name, popen, log)


def test_a_provider_installed_from_the_wheel_runs_a_command(dist: Path, tmp_path: Path, busybox_image: str) -> None:
    venv = tmp_path / "venv"
    env = clean_env(venv)
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=env)
    python = str(venv / "bin" / "python")
    wheel = the_one(dist, "kiln-*.whl")
    run([python, "-m", "pip", "install", "--quiet", f"{wheel}[provider]"], cwd=tmp_path, env=env)
    where = "import kiln, kiln_provider; print(kiln.__file__); print(kiln_provider.__file__)"
    kiln_file, provider_file = run([python, "-c", where], cwd=tmp_path, env=env).split()
    assert Path(kiln_file).is_relative_to(venv) and Path(provider_file).is_relative_to(venv)
    agent = (Path(provider_file).parent / "bin" / f"kiln-agent-{ARCH}").resolve()

    with started(VenvCluster(tmp_path / "logs", venv=venv, suffix=f"-{secrets.token_hex(3)}")) as cluster:
        name = cluster.start_provider("wheel")
        assert f"task containers run the agent {agent}\n" in cluster.providers[name].output()
        hello = ["run", "--hub", cluster.url, IMAGE, "--", "sh", "-c", "echo hello from $(uname -m)"]
        said = run([str(venv / "bin" / "kiln"), *hello], cwd=tmp_path, env=env, timeout=120)
        # kiln doctor from the venv: every check passes, the agent it finds is the venv's.
        doctor = [str(venv / "bin" / "kiln"), "doctor", "--data-dir", str(tmp_path / "doctor")]
        report = run([*doctor, "--hub", cluster.url], cwd=tmp_path, env=env, timeout=60)
        assert "FAIL" not in report and f"ok    agent            {agent} (static, {ARCH})" in report, report
        assert "ok    hub" in report, report
        # ... and with Docker out of reach it says so on one line, and exits 1.
        unreachable = {**env, "DOCKER_HOST": f"unix://{tmp_path / 'no-docker.sock'}"}
        failed = subprocess.run(doctor, cwd=tmp_path, env=unreachable, capture_output=True, text=True, timeout=60)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        [docker_line] = [line for line in failed.stdout.splitlines() if line.startswith("FAIL  docker")]
        assert "cannot reach the Docker engine" in docker_line and "do: " in docker_line
        assert "Traceback" not in failed.stderr
    assert said == f"hello from {platform.machine()}\n"
