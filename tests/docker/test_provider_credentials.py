"""Credentials end to end: a hub process, provider processes with their tokens, real containers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

import kiln
from kiln.testing.cluster import Process
from tests.conftest import IMAGE, Cluster

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


def token(cluster: Cluster, *args: str) -> str:
    argv = [sys.executable, "-m", "kiln.cli", "token", *args, "--data-dir", str(cluster.logs / "hub-data")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.splitlines()[-1]


def ended(process: Process, timeout: float = 60.0) -> tuple[int, str]:
    process.popen.wait(timeout=timeout)
    return process.popen.returncode, process.output()


def impostor(cluster: Cluster, name: str, *args: str) -> Process:
    """Another provider process under ``name`` (not one the cluster tracks: it must not be welcomed)."""
    label, data_dir = f"impostor-{time.monotonic_ns()}", str(cluster.logs / "impostor.data")
    return cluster.spawn(label, "provider", "--hub", cluster.url, "--name", name, "--data-dir", data_dir, *args)


async def test_providers_and_requestors_each_join_only_as_their_credential_says(cluster: Cluster) -> None:
    # Credentials made while the hub runs (open until now) take effect at the next hello.
    name = f"p1{cluster.suffix}"
    provider_token = token(cluster, "create", "--role", "provider", "--name", name)
    requestor_token = token(cluster, "create", "--role", "requestor", "--name", f"alice{cluster.suffix}")
    cluster.token = requestor_token
    await asyncio.to_thread(cluster.start_provider, "p1", "--token", provider_token)

    async with (
        kiln.connect(cluster.url, token=requestor_token) as requestor,
        requestor.rent(IMAGE, kiln.Demand(cpus=0.5, memory="128MiB")) as act,
    ):
        assert (await act.run(["echo", "hi"])).stdout == "hi\n"

        # Nobody else takes the connected provider's name: not a requestor's token, not its own credential.
        code, log = await asyncio.to_thread(ended, impostor(cluster, name, "--token", requestor_token))
        assert code == 1
        assert "kiln: the hub refused us: a requestor credential cannot join as a provider" in log
        code, log = await asyncio.to_thread(
            ended, impostor(cluster, name, "--token", provider_token, "--name-wait", "1")
        )
        assert code == 1 and f"another provider named {name!r} is connected" in log
        # A provider token cannot rent.
        dial = ["--hub", cluster.url, "--token", provider_token]
        argv = [sys.executable, "-m", "kiln.cli", "run", *dial, IMAGE, "--", "true"]
        run = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 1
        assert "a provider credential cannot join as a requestor" in run.stderr
        # The activity lives on through all of it.
        assert (await act.run(["echo", "still"])).stdout == "still\n"

        # Revoked: the provider is cut off, is refused when it dials again, and stops; its activity is lost.
        token(cluster, "revoke", name)
        code, log = await asyncio.to_thread(ended, cluster.providers[name])
        assert code == 1 and "kiln: the hub refused us: unknown or revoked token [unauthorized]" in log
        with pytest.raises(kiln.ProviderLost):
            await act.run(["true"])

    # Disconnected, its name is still not anyone's without its credential.
    code, log = await asyncio.to_thread(ended, impostor(cluster, name))
    assert code == 1 and "this hub needs a token in hello and none was given" in log
