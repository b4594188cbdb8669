"""Fixtures that start real things: a hub process on a free port, provider processes on
the real Docker engine, and the busybox test image built FROM scratch.

The tests come in tiers, one folder each: ``unit`` (one process, no network, no real time:
tests/unit/conftest.py holds it to that), ``service`` (real hubs, processes and sockets, no
Docker), ``docker`` (the engine, providers, containers, builds of the agent and the packages)
and ``hostile`` (fuzz, chaos, adversaries, tenants, bounds; some with Docker). The marker
``docker`` says a test needs what the docker tier needs: every test in tests/docker has it,
none in tests/unit or tests/service (checked at collection).

The service, docker and hostile tiers run on several pytest-xdist workers at once (the Makefile),
beside other worktrees' tests on the same Docker engine: whatever a test makes is its own and
named so (a free port, its ``tmp_path``, provider names with a random suffix, images of random
content), and it removes only that, never by a label every test shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from kiln.testing import DEFAULT_IMAGE, LocalCluster
from tests.tls import Certificates, make_certificates

if TYPE_CHECKING:
    from kiln.testing.postgres import LocalPostgres

IMAGE = DEFAULT_IMAGE


Cluster = LocalCluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test's tier agrees with its ``docker`` marker (see the module's docstring), and the
    files marked ``long`` come first.

    The Makefile runs the tiers of real processes on a few pytest-xdist workers, a file to each
    in this order (``--dist loadfile --no-loadscope-reorder``): a build that takes a minute
    starts at once, not when the other workers are nearly done.
    """
    items.sort(key=lambda item: item.get_closest_marker("long") is None)  # stable: files stay in order
    wrong = []
    for item in items:
        tier = item.path.parent.name
        marked = item.get_closest_marker("docker") is not None
        if (tier == "docker" and not marked) or (tier in ("unit", "service") and marked):
            wrong.append(f"{item.nodeid}: {'not ' if not marked else ''}marked docker in tests/{tier}")
    if wrong:
        raise pytest.UsageError("tests in the wrong tier:\n" + "\n".join(wrong))


def containers_of(provider: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=kiln.provider={provider}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


async def provider_left(cluster: Cluster, name: str, seconds: float = 10) -> str:
    """The hub's log line saying provider ``name`` left (waiting up to ``seconds`` for it)."""
    assert cluster.hub is not None
    deadline = time.monotonic() + seconds
    while f"provider {name!r} left" not in cluster.hub.output():
        assert time.monotonic() < deadline, cluster.hub.output()
        await asyncio.sleep(0.05)
    [left] = [line for line in cluster.hub.output().splitlines() if f"provider {name!r} left" in line]
    return left


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="session")
def busybox_image() -> str:
    """The test image, built FROM scratch with Debian's static busybox (no registry needed)."""
    from kiln_provider.docker_adapter import DockerAdapter

    try:
        DockerAdapter("tests").build_busybox_image(IMAGE)
    except Exception as e:  # noqa: BLE001 - turn any failure into one clear message
        pytest.fail(f"cannot build {IMAGE}: is the Docker engine running (scripts/ensure-docker.sh)? {e}")
    return IMAGE


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA made for the tests (openssl) and a hub certificate for 127.0.0.1 it signed."""
    return make_certificates(tmp_path_factory.mktemp("tls"))


@contextlib.contextmanager
def started(c: Cluster, *hub_args: str) -> Iterator[Cluster]:
    """``c`` with its hub started; then every process stopped, and every container and volume of
    its providers removed (those a killed provider left)."""
    from kiln_provider.volume import Volumes

    c.start_hub(*hub_args)
    try:
        yield c
    finally:
        c.stop()
        for name in c.providers:
            ids = containers_of(name)
            if ids:
                subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
        for volumes in c.logs.glob("*.data/volumes"):
            Volumes(volumes).sweep()  # to a fresh object every volume there is a leftover


@pytest.fixture
def cluster(tmp_path: Path, busybox_image: str, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    marker = request.node.get_closest_marker("hub_args")
    with started(Cluster(tmp_path, suffix=f"-{secrets.token_hex(3)}"), *(marker.args if marker else ())) as c:
        yield c


@pytest.fixture
def tls_cluster(tmp_path: Path, busybox_image: str, tls: Certificates) -> Iterator[Cluster]:
    """A cluster whose hub serves wss:// with the test CA's certificate (its probes trust that CA)."""
    with started(Cluster(tmp_path, suffix=f"-{secrets.token_hex(3)}", ca=tls.ca), *tls.hub_args()) as c:
        yield c


@pytest.fixture(scope="session")
def shell_less_image() -> Iterator[str]:
    """An image FROM scratch holding one static program, ``/busybox``: no shell, no ``sleep``, no /bin."""
    name = f"kiln-lone-{os.getpid()}"
    tag = f"{name}:latest"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        dockerfile = f"FROM scratch\nLABEL org.kiln.offer={name}\nCOPY busybox /busybox\n".encode()
        for name, data, mode in (
            ("Dockerfile", dockerfile, 0o644),
            ("busybox", Path("/bin/busybox").read_bytes(), 0o755),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=context.getvalue(), capture_output=True, check=True)
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


@pytest.fixture
def images() -> Iterator[list[str]]:
    """Docker images a test made (ids or tags): removed afterwards, whatever happened."""
    from tests.images import remove

    made: list[str] = []
    yield made
    remove(*made)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """A PostgreSQL server for the whole session (one per pytest-xdist worker), on a free loopback port.

    It needs Debian's ``postgresql`` (``make postgres``): without it the test fails, it is not skipped.
    psycopg is imported here, not at the top: every tier loads this file, few tests use PostgreSQL.
    """
    from kiln.testing.postgres import LocalPostgres, PostgresNotInstalled

    try:
        server = LocalPostgres(tmp_path_factory.mktemp("postgres"))
    except PostgresNotInstalled as e:
        pytest.fail(str(e))
    with server:
        yield server


@pytest.fixture
def postgres_url(postgres: LocalPostgres) -> str:
    """The URL of a fresh, empty database of its own on the session's PostgreSQL server."""
    return postgres.create_database(f"test_{secrets.token_hex(6)}")
