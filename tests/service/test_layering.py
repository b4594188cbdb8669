"""Packages by role, imports in one direction: what each role loads, what it installs, and the
contract (`lint-imports`) that `make test` runs, shown to catch an import that runs the wrong way."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def loaded_by(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after ``statement``."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def of(modules: set[str], *packages: str) -> set[str]:
    return {m for m in modules if m.split(".")[0] in packages or m.startswith(packages)}


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        (
            "import kiln.hub.core",
            ("kiln.requestor", "kiln.connection", "kiln_provider", "rich", "docker", "websockets"),
        ),
        ("import kiln.hub.io.server", ("kiln.requestor", "kiln.connection", "kiln_provider", "rich", "docker")),
        ("import kiln.protocol.session", ("kiln.hub", "kiln.requestor", "kiln.connection", "websockets", "docker")),
        ("import kiln_provider.runtime", ("kiln.requestor", "kiln.hub", "rich")),
        ("import kiln", ("kiln.requestor", "kiln.hub", "kiln.connection", "kiln_provider", "pydantic", "websockets")),
    ],
)
def test_a_role_loads_nothing_of_the_others(statement: str, forbidden: tuple[str, ...]) -> None:
    assert of(loaded_by(statement), *forbidden) == set()


def test_the_sdk_loads_on_first_use() -> None:
    modules = loaded_by("import kiln; kiln.connect")
    assert "kiln.requestor.client" in modules
    assert of(modules, "kiln.hub", "kiln_provider", "docker") == set()


def test_docker_py_comes_only_with_the_provider_extra() -> None:
    requirements = metadata.requires("kiln") or []
    docker = [r for r in requirements if r.split(";")[0].strip().startswith("docker")]
    assert docker and all("extra ==" in r for r in docker), f"docker-py must come with an extra only: {requirements}"
    assert any("provider" in r for r in docker)
    assert any(r.startswith("websockets") and "extra" not in r for r in requirements)


@pytest.mark.timeout(120)
def test_the_contract_fails_on_an_import_that_runs_the_wrong_way(tmp_path: Path) -> None:
    lint = shutil.which("lint-imports")
    assert lint is not None, "import-linter is installed with kiln[test]"
    for tree in ("python", "provider_runtime"):
        shutil.copytree(ROOT / tree, tmp_path / tree, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'python'}{os.pathsep}{tmp_path / 'provider_runtime'}"}

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([lint, "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)

    kept = check()
    assert kept.returncode == 0, kept.stdout + kept.stderr
    market = tmp_path / "python" / "kiln" / "hub" / "market.py"
    market.write_text(market.read_text() + "\nfrom kiln.requestor.progress import ProgressView  # noqa\n")
    broken = check()
    assert broken.returncode != 0
    assert "kiln.hub.market -> kiln.requestor.progress" in broken.stdout
