"""What a plain ``pip install`` of the tree brings, in a fresh virtual environment: the SDK and
the hub, never docker-py (which comes only with the extra ``provider``). It builds the package
and installs its dependencies: the tier of builds. What each role loads: tests/service/test_layering.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.test_layering import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.long, pytest.mark.timeout(300)]


def test_a_plain_install_brings_the_sdk_and_the_hub_without_docker_py(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    python = str(venv / "bin" / "python")
    # A wheel without the agent (whose build tests/docker/test_wheel.py covers): this is about what installs.
    subprocess.run(
        [python, "-m", "pip", "--disable-pip-version-check", "install", "--quiet", str(ROOT)],
        check=True,
        capture_output=True,
        env={**os.environ, "KILN_AGENT_ARCH": "none"},
    )
    listing = "import importlib.metadata as m, json; print(json.dumps([d.metadata['Name'] for d in m.distributions()]))"
    installed = subprocess.run([python, "-c", listing], check=True, capture_output=True, text=True)
    names = {name.lower() for name in json.loads(installed.stdout)}
    assert {"kiln", "websockets", "pydantic", "orjson", "rich"} <= names
    assert not names & {"docker", "requests"}, names
    kiln = venv / "bin" / "kiln"
    hub = subprocess.run([kiln, "--version"], capture_output=True, text=True, check=True)
    assert hub.stdout.startswith("kiln ")
    provider = subprocess.run([kiln, "provider", "--name", "p"], capture_output=True, text=True, check=False)
    assert provider.returncode == 1 and "pip install 'kiln[provider]'" in provider.stderr
