"""Two tenants with real images: a hub process whose credentials are made in its own credential
store, a provider process on the real Docker engine, and the SDK and ``kiln image`` as the
tenants. Tenant B may not list, rent, find, remove or share tenant A's private image, by tag or by
digest, even once a provider holds a copy; B's push under A's tag leaves A's tag running A's
image; ``kiln image share --with`` lets B rent it, ``--revoke`` takes that back, ``--public`` lets
everyone. (The same rules without Docker, request by request: tests/hostile/test_tenant_store.py.)"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import secrets
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import kiln
from kiln.hub.io.state import HubState
from tests.conftest import Cluster
from tests.docker.test_image_store import cli, docker

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240)]

SMALL = kiln.Demand(cpus=0.5, memory="128MiB")


@dataclass(frozen=True)
class Owned:
    tag: str
    digest: str
    archive: Path


@dataclass(frozen=True)
class Tenants:
    alice: str
    bob: str
    carol: str


def build(tmp: Path, base: str, owner: str) -> Owned:
    """An image whose /owner says ``owner`` (and a layer no engine holds), saved and gone from the engine."""
    tag = f"kiln-tenant-{secrets.token_hex(4)}:1"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in [
            ("Dockerfile", f"FROM {base}\nCOPY owner nonce /\n".encode()),
            ("owner", owner.encode()),
            ("nonce", secrets.token_bytes(32 * 1024)),
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    docker("build", "-q", "-t", tag, "-", input=context.getvalue())
    digest = docker("image", "inspect", "--format", "{{.Id}}", tag)
    archive = tmp / f"{owner}.tar"
    docker("save", "-o", str(archive), tag)
    docker("rmi", tag)
    return Owned(tag, digest, archive)


@pytest.fixture
def images(tmp_path: Path, busybox_image: str) -> Iterator[tuple[Owned, Owned]]:
    made = build(tmp_path, busybox_image, "alice"), build(tmp_path, busybox_image, "bob")
    try:
        yield made
    finally:
        for image in made:
            subprocess.run(["docker", "rmi", "-f", image.digest], capture_output=True, check=False)


@pytest.fixture
def tenants(cluster: Cluster) -> Tenants:
    """Credentials for alice, bob and carol, and a provider p1 that joins with its own."""
    with HubState.in_dir(cluster.logs / "hub-data") as state:
        alice, bob, carol = (state.create("requestor", name)[1] for name in ("alice", "bob", "carol"))
        provider = state.create("provider", f"p1{cluster.suffix}")[1]
    cluster.token = alice
    cluster.start_provider("p1", "--token", provider, cpus=2, memory="1GiB")
    return Tenants(alice, bob, carol)


async def owner_of(requestor: kiln.Requestor, image: str) -> str:
    async with requestor.rent(image, SMALL) as act:
        return (await act.run(["cat", "/owner"])).stdout


async def refusal(requestor: kiln.Requestor, image: str) -> tuple[str, str]:
    """How a rent of ``image`` fails: its code and message, ``image`` itself masked."""
    with pytest.raises(kiln.KilnError) as failed:
        async with requestor.rent(image, SMALL):
            pass
    return failed.value.code, failed.value.message.replace(image, "<image>")


async def test_a_tenant_cannot_reach_anothers_private_image_until_it_is_shared(
    cluster: Cluster, images: tuple[Owned, Owned], tenants: Tenants
) -> None:
    mine, theirs = images
    never = "sha256:" + hashlib.sha256(b"an image nobody pushed").hexdigest()
    async with kiln.connect(cluster.url, token=tenants.alice) as a, kiln.connect(cluster.url, token=tenants.bob) as b:
        pushed = await a.push_image(path=mine.archive)
        assert pushed.digest == mine.digest and pushed.info.owners == ["alice"]
        assert await owner_of(a, mine.tag) == "alice"  # the provider holds a copy from now on

        # B: not listed, not rentable, not found in the market, not removable, not shareable
        assert all(i.digest != mine.digest for i in (await b.list_images()).images)
        assert await refusal(b, mine.digest) == await refusal(b, never), "A's digest is as absent as no image"
        assert (await refusal(b, mine.digest))[0] == "image_not_found"
        assert (await refusal(b, mine.tag))[0] == "image_not_found", "A's tag is not B's"
        assert await b.market(image=mine.digest) == []
        assert all(mine.digest not in p.images for p in await b.market())
        for ref in (mine.tag, mine.digest):
            with pytest.raises(kiln.ImageNotFound):
                await b.remove_image(ref)
            with pytest.raises(kiln.ImageNotFound):
                await b.share_image(ref, ["bob"])

        # B pushes its own image under A's tag: each tag runs its owner's image
        own = await b.push_image(path=theirs.archive, tags=[mine.tag])
        assert own.sent_bytes == own.size, "B sends every layer it could not read, busybox's too"
        assert await owner_of(b, mine.tag) == "bob"
        assert await owner_of(a, mine.tag) == "alice"
        assert [i.digest for i in (await a.list_images()).images] == [mine.digest]

        share = ["image", "share", mine.tag, "--hub", cluster.url, "--token", tenants.alice]
        done = await asyncio.to_thread(cli, *share, "--with", "bob")
        assert (done.returncode, done.stdout.strip()) == (0, f"shared {mine.tag} with bob"), done.stderr
        assert await owner_of(b, mine.digest) == "alice"
        listed = await asyncio.to_thread(cli, "image", "ls", "--json", "--hub", cluster.url, "--token", tenants.bob)
        seen = {i["digest"]: i for i in json.loads(listed.stdout)["images"]}
        assert seen[mine.digest]["owners"] == ["alice"] and seen[mine.digest]["tags"] == []
        with pytest.raises(kiln.Unauthorized):
            await b.remove_image(mine.digest)

        done = await asyncio.to_thread(cli, *share, "--with", "bob", "--revoke")
        assert done.returncode == 0, done.stderr
        assert await refusal(b, mine.digest) == await refusal(b, never)

        done = await asyncio.to_thread(cli, *share, "--public", "--json")
        assert json.loads(done.stdout) == {"image": mine.tag, "with": [], "public": True, "revoked": False}
        async with kiln.connect(cluster.url, token=tenants.carol) as c:
            assert await owner_of(c, mine.digest) == "alice"
            [public] = [i for i in (await c.list_images()).images if i.digest == mine.digest]
            assert public.public and public.owners == ["alice"]
        listed = await asyncio.to_thread(cli, "image", "ls", "--hub", cluster.url, "--token", tenants.alice)
        row = next(line for line in listed.stdout.splitlines() if mine.digest[7:19] in line)
        assert "alice" in row and "everyone" in row, listed.stdout
        bad = await asyncio.to_thread(cli, *share, "--with", "nobody")
        assert bad.returncode == 1 and "no live requestor credential is named 'nobody'" in bad.stderr, bad.stderr
