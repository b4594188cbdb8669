"""The provider's systemd unit: its ExecStart starts ``kiln provider`` against a real hub and
Docker; SIGTERM or Ctrl-C ends it with exit code 0, and the hub logs it at INFO, never as a 1011.
(The units themselves and the hub's: tests/service/test_service.py.)"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.conftest import Cluster, provider_left
from tests.service.test_service import exec_start, kiln, parsed, started

pytestmark = pytest.mark.docker


TOKEN = "unit-t0ken"


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
    config.write_text(
        f'hub = "{cluster.url}"\nname = "{name}"\ncpus = 1\nmemory = "512MiB"\n'
        f'data-dir = "{tmp_path / "provider"}"\nlabel = {{ from = "unit" }}\n'
    )
    unit = parsed(kiln("service", "print-unit", "provider").stdout)
    argv = exec_start(unit, **{"/etc/kiln/provider.toml": str(config), "${CREDENTIALS_DIRECTORY}": str(credentials)})
    log = tmp_path / "provider.log"
    provider = started(argv, log)
    try:
        await asyncio.to_thread(cluster.wait_for_providers, {name})
        market = kiln("market", "--hub", cluster.url, "--token", TOKEN, "--label", "from=unit").stdout
        assert market.splitlines()[1].startswith(name), market  # under the header
        provider.send_signal(sig)
        assert await asyncio.to_thread(provider.wait, 60) == 0, log.read_text()
    finally:
        if provider.poll() is None:
            provider.kill()
    left = await provider_left(cluster, name)
    assert " INFO " in left and "1011" not in left and "1001" in left, left
    assert "Traceback" not in log.read_text() and "kiln.provider INFO stopped" in log.read_text()
