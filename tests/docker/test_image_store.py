"""End to end, the image store: push to a real hub process, rent by tag on real provider processes
that load the image from the hub into the real Docker engine, list and remove; the SDK and
``kiln image``. Each test builds an image of its own (``FROM kiln-busybox`` plus a layer no
engine has), saves it and removes it from the engine, so a provider must load it."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import kiln
from tests.conftest import IMAGE, Cluster

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
SMALL = kiln.Demand(cpus=0.5, memory="128MiB")
WORDCOUNT = b'#!/bin/sh\nexec wc -w "$@"\n'


def docker(*args: str, input: bytes | None = None) -> str:
    done = subprocess.run(["docker", *args], input=input, capture_output=True, check=True)
    return done.stdout.decode().strip()


@dataclass(frozen=True)
class Built:
    tag: str
    digest: str
    archive: Path


@pytest.fixture
def wordcount(tmp_path: Path, busybox_image: str) -> Iterator[Built]:
    """A ``wordcount-<random>:1`` image, saved to a file and gone from the engine (by tag and id)."""
    tag = f"kiln-wordcount-{secrets.token_hex(4)}:1"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data, mode in [
            ("Dockerfile", f"FROM {busybox_image}\nCOPY wordcount nonce /usr/local/bin/\n".encode(), 0o644),
            ("wordcount", WORDCOUNT, 0o755),
            ("nonce", secrets.token_bytes(64 * 1024), 0o644),  # a layer no engine holds
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    docker("build", "-q", "-t", tag, "-", input=context.getvalue())
    digest = docker("image", "inspect", "--format", "{{.Id}}", tag)
    archive = tmp_path / "wordcount.tar"
    docker("save", "-o", str(archive), tag)
    docker("rmi", tag)
    try:
        yield Built(tag, digest, archive)
    finally:
        subprocess.run(["docker", "rmi", "-f", digest], capture_output=True, check=False)  # loaded by a provider


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), str(ROOT / "provider_runtime")])}
    return subprocess.run(
        [sys.executable, "-m", "kiln.cli", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


async def start(cluster: Cluster, *names: str) -> list[str]:
    return [await asyncio.to_thread(cluster.start_provider, name, cpus=2, memory="1GiB") for name in names]


async def test_push_then_rent_by_tag_loads_the_image_on_the_provider_once(cluster: Cluster, wordcount: Built) -> None:
    (p1,) = await start(cluster, "p1")
    progress: list[tuple[int, int, int]] = []
    async with kiln.connect(cluster.url) as requestor:
        pushed = await requestor.push_image(path=wordcount.archive, progress=lambda *p: progress.append(p))
        assert pushed.digest == wordcount.digest
        assert pushed.tags == (wordcount.tag,)
        assert pushed.sent_bytes == pushed.size and pushed.skipped_bytes == 0
        assert progress[-1] == (pushed.size, pushed.size, 0)

        again = await requestor.push_image(path=wordcount.archive, tags=["kiln-wc-alias:2"])
        assert (again.sent_bytes, again.skipped_bytes, again.layers_skipped) == (0, pushed.size, again.layers)
        assert set(again.tags) == {wordcount.tag, "kiln-wc-alias:2"}

        listed = await requestor.list_images()
        mine = next(i for i in listed.images if i.digest == wordcount.digest)
        assert set(mine.tags) == {wordcount.tag, "kiln-wc-alias:2"}
        assert mine.size == pushed.size and listed.used >= pushed.size

        loading: list[tuple[str, str, int, int]] = []
        async with requestor.rent(wordcount.tag, SMALL, on_progress=lambda *p: loading.append(p)) as act:
            assert act.provider == p1
            assert not act.cached and act.pulled > 0
            await act.send_bytes(b"one two three", "/golem/input/t.txt")
            result = await act.run(["wordcount", "/golem/input/t.txt"])
            assert result.stdout.split()[0] == "3"
        assert loading and loading[-1][0] == p1
        assert loading[-1][2] == loading[-1][3] > 0

        # Docker holds it now: the next rent (by digest) loads nothing.
        async with requestor.rent(wordcount.digest, SMALL) as act:
            assert act.cached and act.pulled == 0
        assert wordcount.digest in docker("image", "inspect", "--format", "{{.Id}}", wordcount.digest)

        await requestor.remove_image("kiln-wc-alias:2")
        assert all(i.digest != wordcount.digest for i in (await requestor.list_images()).images)
        with pytest.raises(kiln.ImageNotFound):
            await requestor.remove_image(wordcount.tag)


async def test_a_push_sends_only_the_layers_the_hub_lacks(cluster: Cluster, wordcount: Built) -> None:
    from kiln.requestor.images import read_archive

    layers = read_archive(wordcount.archive).manifest.layers
    async with kiln.connect(cluster.url) as requestor:
        base = await requestor.push_image(IMAGE)  # docker save of the engine's busybox
        pushed = await requestor.push_image(path=wordcount.archive)
    assert base.layers == 1
    assert (pushed.layers, pushed.layers_skipped) == (2, 1)
    assert pushed.skipped_bytes == layers[0].size  # busybox's layer, which the hub holds
    assert pushed.sent_bytes == pushed.size - pushed.skipped_bytes


async def test_map_with_a_tag_runs_on_providers_that_load_it(cluster: Cluster, wordcount: Built) -> None:
    await start(cluster, "p1", "p2")

    async def count(act: kiln.Activity, text: str) -> int:
        await act.send_bytes(text.encode(), "/golem/input/t.txt")
        return int((await act.run(["wordcount", "/golem/input/t.txt"])).stdout.split()[0])

    async with kiln.connect(cluster.url) as requestor:
        await requestor.push_image(path=wordcount.archive)
        job = requestor.job(
            count, ["a", "a b", "a b c", "a b c d"] * 3, image=wordcount.tag, demand=SMALL, max_providers=2
        )
        loading = []
        job.subscribe(lambda e: loading.append(e) if e.kind == "image_loading" else None)
        assert await job.run() == [1, 2, 3, 4] * 3
    # One engine serves both providers here: the first load makes the second a cache hit.
    assert sum(job.summary.pulled.values()) > 0
    assert all(e.detail.startswith(f"loading {wordcount.tag} on ") for e in loading)
    assert any("pulled" in line for line in job.summary.lines())


async def test_kiln_image_push_ls_rm(cluster: Cluster, wordcount: Built) -> None:
    pushed = await asyncio.to_thread(
        cli, "image", "push", "--file", str(wordcount.archive), "--hub", cluster.url, "--tag", "kiln-wc-cli:7"
    )
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.splitlines()[-1] == wordcount.digest
    assert "sent " in pushed.stderr and "layers skipped" in pushed.stderr

    engine = await asyncio.to_thread(cli, "image", "push", IMAGE, "--hub", cluster.url)
    assert engine.returncode == 0, engine.stderr
    assert engine.stdout.splitlines()[-1] == docker("image", "inspect", "--format", "{{.Id}}", IMAGE)
    assert "1 of 1 layers skipped" in engine.stderr, "its one layer is wordcount's base, which the hub holds"

    listed = await asyncio.to_thread(cli, "image", "ls", "--hub", cluster.url)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:3] == ["DIGEST", "TAGS", "SIZE"]
    short = wordcount.digest.removeprefix("sha256:")[:12]
    row = next(r for r in rows if r.startswith(short))
    assert wordcount.tag in row and "kiln-wc-cli:7" in row and "never" in row

    removed = await asyncio.to_thread(cli, "image", "rm", "kiln-wc-cli:7", "--hub", cluster.url)
    assert removed.returncode == 0, removed.stderr
    listed = await asyncio.to_thread(cli, "image", "ls", "--hub", cluster.url)
    assert short not in listed.stdout
    again = await asyncio.to_thread(cli, "image", "rm", "kiln-wc-cli:7", "--hub", cluster.url)
    assert again.returncode == 1
    assert "[image_not_found]" in again.stderr

    missing = await asyncio.to_thread(cli, "image", "push", "kiln-no-such-image:0", "--hub", cluster.url)
    assert missing.returncode == 1
    assert "docker image inspect kiln-no-such-image:0 failed" in missing.stderr and "[bad_image]" in missing.stderr


def test_the_archive_digest_is_the_engines_image_id(wordcount: Built) -> None:
    from kiln.requestor.images import read_archive

    archive = read_archive(wordcount.archive)
    assert archive.digest == wordcount.digest
    assert archive.tags == (wordcount.tag,)
    assert len(archive.manifest.layers) == 2
