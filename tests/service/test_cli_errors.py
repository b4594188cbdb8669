"""No mistake on the command line ends in a traceback: each is one line on stderr and exit 2
(a usage error, nothing ran) or 1 (it ran and failed). And a URL that is not a hub's is the
caller's UsageError in the Python SDK (``kiln.connect``, the provider) as in JavaScript."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import kiln
from kiln.connection import check_hub_url

HUB_URLS = json.loads((Path(__file__).resolve().parents[2] / "protocol/v1/vectors/hub-urls/hub-urls.json").read_text())
"""The hub URLs both SDKs judge alike (js-client/test/unit/connection.test.js reads them too)."""
FORM = HUB_URLS["form"]
BAD_URLS: dict[str, str] = HUB_URLS["bad"]


@pytest.mark.parametrize(("url", "why"), BAD_URLS.items())
async def test_a_url_that_is_not_a_hubs_is_a_usage_error_before_any_dial(url: str, why: str) -> None:
    expected = f"{url!r} is not a hub URL ({why}): {FORM}"
    with pytest.raises(kiln.UsageError) as caught:
        check_hub_url(url)
    assert caught.value.message == expected
    with pytest.raises(kiln.UsageError) as caught:
        async with kiln.connect(url):
            pass
    assert caught.value.message == expected


def test_hub_urls_as_they_are_written_pass() -> None:
    assert HUB_URLS["good"], "vectors of both verdicts"
    for url in HUB_URLS["good"]:
        assert check_hub_url(url) == url
    with pytest.raises(kiln.UsageError, match=f"no hub URL given: {FORM}"):
        check_hub_url("")


@pytest.fixture
def port_in_use() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def kiln_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    argv = [sys.executable, "-m", "kiln.cli", *args]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env={**base, **env}, stdin=subprocess.DEVNULL, check=False
    )


@pytest.mark.timeout(180)
def test_mistakes_on_the_command_line_are_one_line_each_never_a_traceback(tmp_path: Path, port_in_use: int) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder, not a certificate\n")
    (tmp_path / "empty.token").write_text("\n")
    (tmp_path / "not.toml").write_text('name = "p1\n')
    (tmp_path / "unknown.toml").write_text('colour = "blue"\n')
    (tmp_path / "size.toml").write_text('store-limit = "lots"\n')
    data = str(tmp_path / "hub-data")
    nothing = str(tmp_path / "no-hub-data")  # no hub ran there
    nowhere = "ws://127.0.0.1:1"  # nothing listens there
    cases: list[tuple[list[str], dict[str, str], int, str]] = [
        (["market", "--hub", "127.0.0.1:7465"], {}, 2, "no ws:// or wss:// in front"),
        (["market", "--hub", "ws://127.0.0.1:99999"], {}, 2, "its port must be a number from 1 to 65535"),
        (["market"], {"KILN_HUB": "localhost:7465"}, 2, "$KILN_HUB: 'localhost:7465' is not a hub URL"),
        (["market", "--hub", nowhere], {}, 1, "cannot reach the hub at ws://127.0.0.1:1"),
        (["market", "--hub", "wss://127.0.0.1:1", "--ca", "missing.pem"], {}, 2, "--ca: no such file: missing.pem"),
        (["market", "--hub", "wss://127.0.0.1:1", "--ca", str(a_file)], {}, 1, "holds no PEM certificate"),
        (["market", "--hub", nowhere, "--ca", str(a_file)], {}, 1, "is for a wss:// hub"),
        (["market", "--token-file", "missing.token"], {}, 2, "--token-file: no such file: missing.token"),
        (["market", "--token-file", str(tmp_path / "empty.token")], {}, 2, "empty.token is empty"),
        (["market", "--token-file", str(tmp_path)], {}, 2, "is not a file"),
        (["market", "--token", "t", "--token-file", str(a_file)], {}, 2, "not both"),
        (["activities", "--all", "--hub", nowhere], {}, 1, "cannot reach the hub"),
        (["run", "--hub", nowhere, "kiln-busybox:latest"], {}, 2, "give the command after --"),
        (["run", "--hub", nowhere, "kiln-busybox:latest", "--", "true"], {}, 1, "cannot reach the hub"),
        (["run", "--hub", nowhere, "--memory", "lots", "img", "--", "true"], {}, 2, "not a size: 'lots'"),
        (["image", "push", "--hub", nowhere, "--file", "missing.tar"], {}, 1, "no such file: missing.tar"),
        (["image", "push", "--hub", nowhere], {}, 1, "give an image of the local engine (REF) or an archive"),
        (["hub", "--config", "missing.toml"], {}, 2, "no config file missing.toml"),
        (["hub", "--config", str(tmp_path / "not.toml")], {}, 2, "not.toml is not valid TOML"),
        (["hub", "--config", str(tmp_path / "unknown.toml")], {}, 2, "unknown key 'colour'"),
        (["hub", "--config", str(tmp_path / "size.toml")], {}, 2, "store-limit in"),
        (["hub", "--tls-cert", "missing.pem", "--tls-key", "missing.key"], {}, 2, "--tls-cert: no such file"),
        (["hub", "--tls-cert", str(a_file)], {}, 2, "give both --tls-cert and --tls-key"),
        (["hub", "--data-dir", str(a_file)], {}, 2, "--data-dir: " + str(a_file) + " is a file, not a folder"),
        (["hub", "--port", "70000"], {}, 2, "--port: Input should be less than or equal to 65535"),
        (["hub", "--port", str(port_in_use), "--data-dir", data], {}, 1, "the port is taken"),
        (["hub", "--token-file", "missing.token"], {}, 2, "--token-file: no such file"),
        (["provider"], {}, 2, "give --name"),
        (["provider", "--name", "p", "--config", str(tmp_path / "unknown.toml")], {}, 2, "unknown key 'colour'"),
        (["provider", "--name", "p", "--data-dir", str(a_file)], {}, 2, "is a file, not a folder"),
        (["provider", "--name", "p", "--hub", "127.0.0.1:7465"], {}, 2, "no ws:// or wss:// in front"),
        (["token", "create", "--role", "provider", "--data-dir", data], {}, 1, "give --name"),
        (["token", "revoke", "nobody", "--data-dir", nothing], {}, 1, f"no hub data in {nothing}: give the --data-dir"),
        (["token", "ls", "--data-dir", str(a_file)], {}, 1, "is a file, not a folder"),
        (["token", "ls", "--data-dir", nothing], {}, 1, f"no hub data in {nothing}: give the --data-dir the hub runs"),
        (["usage", "--data-dir", "/proc/no-such-folder"], {}, 1, "no hub data in /proc/no-such-folder: give"),
        (["usage"], {"XDG_DATA_HOME": str(tmp_path / "xdg")}, 1, "no hub data in " + str(tmp_path / "xdg")),
        (["doctor", "--hub", "127.0.0.1"], {}, 2, "no ws:// or wss:// in front"),
        (["doctor", "--config", "missing.toml"], {}, 2, "no config file missing.toml"),
        (["service", "print-unit", "database"], {}, 2, "invalid choice: 'database'"),
        (["no-such-command"], {}, 2, "invalid choice: 'no-such-command'"),
        ([], {}, 2, "the following arguments are required: command"),
    ]
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda case: kiln_cli(case[0], case[1]), cases))
    assert not Path(nothing).exists(), "reading a hub's data made none"
    for (args, env, code, text), ran in zip(cases, done, strict=True):
        shown = f"kiln {' '.join(args)} ({env}): {ran.returncode}\n{ran.stderr}"
        assert "Traceback" not in ran.stderr, shown
        assert ran.returncode == code, shown
        assert text in ran.stderr, shown
        # One line says it (argparse adds its usage above its own).
        said = [line for line in ran.stderr.splitlines() if not line.startswith(("usage:", " ", "20"))]
        assert len(said) == 1, shown
