"""The image store two real hubs share through one PostgreSQL database (kiln.hub.io.shared): an
image pushed through one is listed and rented through the other, whose provider pulls blobs that
hub fetched from the first (digest checked), and a removal travels back.

The peers are raw WebSocket clients speaking kiln.v1 (a provider that pulls, as tests/unit/
test_hub_images.py drives the core); the images are made up (tests/service/test_hub_store.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from kiln.hub.io.state import HubState
from kiln.protocol import frames
from kiln.protocol.frames import FrameKind
from tests.images import noise_layer as noise
from tests.service.test_hub_store import FakeImage, digest, hub, push, recv, requestor

pytestmark = pytest.mark.timeout(60)

SEEN_WITHIN = 10.0
"""Seconds a hub may take to see what another changed (it reads every second)."""


@asynccontextmanager
async def two_hubs(tmp_path: Path, postgres_url: str) -> AsyncIterator[tuple[str, str]]:
    """Hubs A and B on one database, each with its own data folder; their URLs."""
    async with hub(tmp_path / "a", db=postgres_url) as a, hub(tmp_path / "b", db=postgres_url) as b:
        yield a, b


async def until(check: Callable[[], Awaitable[bool]], what: str) -> float:
    """Wait until ``check`` holds (at most :data:`SEEN_WITHIN` seconds); the seconds it took."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < SEEN_WITHIN, f"not within {SEEN_WITHIN:g} s: {what}"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def listed(ws: ClientConnection) -> set[str]:
    await ws.send(json.dumps({"type": "list_images", "id": 90}))
    reply = await recv(ws)
    assert reply["type"] == "image_list", reply
    return {image["digest"] for image in reply["images"]}


async def tags(ws: ClientConnection) -> dict[str, list[str]]:
    await ws.send(json.dumps({"type": "list_images", "id": 92}))
    return {image["digest"]: image["tags"] for image in (await recv(ws))["images"]}


@asynccontextmanager
async def provider(url: str, name: str = "p1") -> AsyncIterator[ClientConnection]:
    """A provider that pulls (1.1), offering room for any stored image."""
    async with connect(url, subprotocols=["kiln.v1"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "hello", "version": "1.1", "role": "provider", "name": name}))
        assert (await recv(ws))["type"] == "welcome"
        resources = {"cpus": 4, "memory": 4 * 2**30, "storage": 2**36}
        await ws.send(json.dumps({"type": "offer", "id": 1, "resources": resources, "arch": "amd64", "images": []}))
        assert await recv(ws) == {"type": "done", "re": 1}
        yield ws


async def pull(ws: ClientConnection) -> tuple[dict[str, Any], bytes, FrameKind, bytes]:
    """The provider takes the next create, wants every blob of its manifest and reads them: the
    create, the bytes that came, and how the stream ended (END, or ABORT with its reason)."""
    create = await recv(ws)
    assert create["type"] == "create", create
    manifest = create["manifest"]
    wanted = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
    stream = create["id"]
    await ws.send(json.dumps({"type": "want", "re": stream, "blobs": wanted}))
    await ws.send(json.dumps({"type": "credit", "stream": stream, "chunks": 16}))
    got = bytearray()
    while True:
        data = await ws.recv()
        if isinstance(data, str):
            continue  # nothing else is asked of it meanwhile
        frame = frames.decode(data, 2**22)
        assert frame.stream == stream
        if frame.kind is FrameKind.DATA:
            got += frame.payload
            await ws.send(json.dumps({"type": "credit", "stream": stream, "chunks": 1}))
            continue
        return create, bytes(got), frame.kind, bytes(frame.payload)


async def rent(ws: ClientConnection, image: str, id_: int = 1) -> None:
    await ws.send(json.dumps({"type": "rent", "id": id_, "image": image, "demand": {}}))


async def test_an_image_pushed_through_one_hub_is_rented_through_the_other(tmp_path: Path, postgres_url: str) -> None:
    base, app = noise(1_500_000), noise(200_000)
    image = FakeImage.make(base, app)
    async with AsyncExitStack() as stack:
        a, b = await stack.enter_async_context(two_hubs(tmp_path, postgres_url))
        on_a = await stack.enter_async_context(requestor(a))
        on_b = await stack.enter_async_context(requestor(b, name="renter"))
        _, pushed = await push(on_a, image, ["app:1"])
        assert pushed["type"] == "image_pushed", pushed

        async def b_lists_it() -> bool:
            return image.digest in await listed(on_b)

        print(f"\nhub B listed the image pushed to hub A after {await until(b_lists_it, 'B lists it'):.2f} s")
        assert not (tmp_path / "b" / "blobs" / "sha256" / image.digest[7:]).exists(), "B holds none of it yet"

        p = await stack.enter_async_context(provider(b))
        started = time.monotonic()
        await rent(on_b, "app:1")
        create, got, end, _ = await pull(p)
        pulled = time.monotonic() - started
        print(f"a provider on B pulled {len(got)} bytes (fetched by B from A) in {pulled * 1000:.0f} ms")
        assert create["image"] == image.digest
        assert end is FrameKind.END
        assert got == image.config + base + app
        await p.send(json.dumps({"type": "done", "re": create["id"], "bytes": len(got)}))
        while (reply := await recv(on_b))["type"] == "rent_progress":
            pass
        assert reply["type"] == "rented", reply
        stored = {f"sha256:{path.name}" for path in (tmp_path / "b" / "blobs" / "sha256").iterdir()}
        assert stored == {image.digest, digest(base), digest(app)}, "B keeps what it fetched, checked"

        # A tag moved through B, and a removal through B (which now holds the blobs too), travel back to A.
        newer = FakeImage.make(noise(20_000))
        assert (await push(on_b, newer, ["app:1"], id_=4))[1]["type"] == "image_pushed"

        async def a_moved_the_tag() -> bool:
            return await tags(on_a) == {image.digest: [], newer.digest: ["app:1"]}

        await until(a_moved_the_tag, "A moves the tag")
        await on_b.send(json.dumps({"type": "remove_image", "id": 5, "image": image.digest}))
        assert (await recv(on_b))["type"] == "done"

        async def a_forgot_it() -> bool:
            return await listed(on_a) == {newer.digest}

        print(f"hub A forgot the image removed through B after {await until(a_forgot_it, 'A forgets it'):.2f} s")
        assert not (tmp_path / "a" / "blobs" / "sha256" / digest(base)[7:]).exists(), "A deleted its blobs"


async def test_a_corrupt_blob_is_refused_and_only_a_live_hubs_token_is_lent_one(
    tmp_path: Path, postgres_url: str
) -> None:
    layer = noise(300_000)
    image = FakeImage.make(layer)
    async with AsyncExitStack() as stack:
        a, b = await stack.enter_async_context(two_hubs(tmp_path, postgres_url))
        on_a = await stack.enter_async_context(requestor(a))
        on_b = await stack.enter_async_context(requestor(b, name="renter"))
        assert (await push(on_a, image, ["bad:1"]))[1]["type"] == "image_pushed"
        on_disk = tmp_path / "a" / "blobs" / "sha256" / digest(layer)[7:]
        flipped = len(layer) // 2  # in the file's data: its tar headers still read well
        on_disk.write_bytes(layer[:flipped] + bytes([layer[flipped] ^ 1]) + layer[flipped + 1 :])

        async def b_lists_it() -> bool:
            return image.digest in await listed(on_b)

        await until(b_lists_it, "B lists it")
        p = await stack.enter_async_context(provider(b))
        await rent(on_b, "bad:1")
        create, _, end, reason = await pull(p)
        assert end is FrameKind.ABORT
        assert digest(layer) in reason.decode() and b"sha256" in reason, reason
        error = {"type": "error", "re": create["id"], "code": "transfer_failed", "message": reason.decode()}
        await p.send(json.dumps(error))
        while (reply := await recv(on_b))["type"] == "rent_progress":
            pass
        assert reply["type"] == "error" and reply["re"] == 1, reply
        print(f"\nthe rent through B failed: {reply['code']}: {reply['message']}")
        blobs = {f"sha256:{path.name}" for path in (tmp_path / "b" / "blobs" / "sha256").iterdir()}
        assert digest(layer) not in blobs, "a blob whose bytes do not match its digest is not kept"
        assert list((tmp_path / "b" / "tmp").iterdir()) == []
        assert image.digest in await listed(on_b), "B serves on"

        # The endpoint: a token no live hub shows is refused; one a live hub shows gets the bytes.
        url = f"{a}/hub/blobs/{image.digest}"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, additional_headers={"Authorization": "Bearer not-a-hub"}):
                pass
        assert refused.value.response.status_code == 401
        with HubState(postgres_url, hub="tester") as tester:
            tester.join("ws://127.0.0.1:9", "tester-secret")
            host, port = a.removeprefix("ws://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                f"GET /hub/blobs/{image.digest} HTTP/1.1\r\nHost: {host}\r\n"
                "Authorization: Bearer tester-secret\r\n\r\n".encode()
            )
            assert (await reader.readline()).startswith(b"HTTP/1.1 426"), "a blob comes over a WebSocket only"
            writer.close()
            got = b""
            async with connect(url, additional_headers={"Authorization": "Bearer tester-secret"}) as ws:
                async for message in ws:
                    assert isinstance(message, bytes)
                    got += message
            assert hashlib.sha256(got).hexdigest() == image.digest[7:]
            with pytest.raises(InvalidStatus) as missing:
                async with connect(
                    f"{a}/hub/blobs/sha256:{'0' * 64}", additional_headers={"Authorization": "Bearer tester-secret"}
                ):
                    pass
            assert missing.value.response.status_code == 404


async def test_two_pulls_of_one_image_through_a_hub_that_lacks_it_fetch_each_blob_once(
    tmp_path: Path, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    image = FakeImage.make(noise(2_000_000), noise(100_000))
    async with AsyncExitStack() as stack:
        a, b = await stack.enter_async_context(two_hubs(tmp_path, postgres_url))
        on_a = await stack.enter_async_context(requestor(a))
        on_b = await stack.enter_async_context(requestor(b, name="renter"))
        assert (await push(on_a, image, ["app:2"]))[1]["type"] == "image_pushed"

        async def b_lists_it() -> bool:
            return image.digest in await listed(on_b)

        await until(b_lists_it, "B lists it")
        # One provider on each hub, each with room for one rent: B serves both (its requestor's
        # hub), one of them over the link to hub A.
        providers = [await stack.enter_async_context(provider(url, f"p-{n}")) for n, url in enumerate((a, b))]

        async def b_sells_both() -> bool:
            await on_b.send(json.dumps({"type": "market", "id": 91}))
            return len((await recv(on_b))["providers"]) == 2

        await until(b_sells_both, "B sells both providers")
        caplog.set_level(logging.INFO, "kiln.hub.io.store")
        for id_ in (1, 2):
            await on_b.send(json.dumps({"type": "rent", "id": id_, "image": "app:2", "demand": {"cpus": 4}}))
        pulls = await asyncio.gather(*(pull(p) for p in providers))
        for create, got, end, _ in pulls:
            assert create["image"] == image.digest
            assert end is FrameKind.END and got == image.config + b"".join(image.layers)
        fetched = [r.getMessage() for r in caplog.records if "fetched from the hub at" in r.getMessage()]
        assert len(fetched) == 3, fetched


async def test_a_hub_started_again_takes_what_changed_while_it_was_down(tmp_path: Path, postgres_url: str) -> None:
    kept, removed, pushed = (FakeImage.make(noise(10_000 + n)) for n in range(3))
    async with hub(tmp_path / "a", db=postgres_url) as a, requestor(a) as on_a:
        async with hub(tmp_path / "b", db=postgres_url) as b, requestor(b, name="b") as on_b:
            for n, image in enumerate((kept, removed)):
                assert (await push(on_b, image, [f"b:{n}"], id_=n + 1))[1]["type"] == "image_pushed"

            async def a_lists_both() -> bool:
                return await listed(on_a) == {kept.digest, removed.digest}

            await until(a_lists_both, "A lists B's images")
        # B is down: A removes one of B's images and stores another.
        await on_a.send(json.dumps({"type": "remove_image", "id": 7, "image": removed.digest}))
        assert (await recv(on_a))["type"] == "done"
        assert (await push(on_a, pushed, ["a:1"], id_=8))[1]["type"] == "image_pushed"
        async with hub(tmp_path / "b", db=postgres_url) as b, requestor(b, name="b") as on_b:
            assert await tags(on_b) == {kept.digest: ["b:0"], pushed.digest: ["a:1"]}, "at once, from the database"
        blobs = {f"sha256:{path.name}" for path in (tmp_path / "b" / "blobs" / "sha256").iterdir()}
        assert removed.digest not in blobs and kept.digest in blobs, "what went while it was down is deleted"
        assert not (tmp_path / "b" / "images" / f"{removed.digest[7:]}.json").exists()


async def test_a_tenants_image_stays_its_own_through_every_hub(tmp_path: Path, postgres_url: str) -> None:
    with HubState(postgres_url) as state:
        alice, bob = (state.create("requestor", name)[1] for name in ("alice", "bob"))
    image = FakeImage.make(noise(30_000))
    async with AsyncExitStack() as stack:
        a, b = await stack.enter_async_context(two_hubs(tmp_path, postgres_url))
        alice_a = await stack.enter_async_context(requestor(a, "1.4", token=alice, name="alice"))
        alice_b = await stack.enter_async_context(requestor(b, token=alice, name="alice"))
        bob_b = await stack.enter_async_context(requestor(b, token=bob, name="bob"))
        assert (await push(alice_a, image, ["mine:1"]))[1]["type"] == "image_pushed"

        async def alice_sees_it_on_b() -> bool:
            return await tags(alice_b) == {image.digest: ["mine:1"]}

        await until(alice_sees_it_on_b, "alice sees her image on B")
        assert await listed(bob_b) == set(), "bob sees nothing of it"
        for id_, ref in enumerate((image.digest, "mine:1"), start=1):
            await bob_b.send(json.dumps({"type": "remove_image", "id": id_, "image": ref}))
            assert (await recv(bob_b))["code"] == "image_not_found"
        await rent(bob_b, image.digest, id_=3)
        assert (await recv(bob_b))["code"] == "image_not_found", "as for an image never pushed"

        # Shared through A, it is bob's to see through B too.
        await alice_a.send(json.dumps({"type": "share_image", "id": 4, "image": "mine:1", "to": ["bob"]}))
        assert (await recv(alice_a))["type"] == "done"

        async def bob_sees_it_on_b() -> bool:
            return await listed(bob_b) == {image.digest}

        await until(bob_sees_it_on_b, "bob sees the image shared with him")


async def test_an_image_evicted_from_one_hub_stays_while_another_holds_it(tmp_path: Path, postgres_url: str) -> None:
    both, mine, last = (FakeImage.make(noise(600_000 + n)) for n in range(3))
    async with (
        hub(tmp_path / "a", db=postgres_url) as a,
        hub(tmp_path / "b", 700_000, db=postgres_url) as b,  # room for one image
        requestor(a) as on_a,
        requestor(b, name="b") as on_b,
    ):
        assert (await push(on_a, both, ["both:1"]))[1]["type"] == "image_pushed"
        for id_, image in enumerate((both, mine, last), start=1):  # each push to B evicts the one before
            assert (await push(on_b, image, id_=id_))[1]["type"] == "image_pushed"

            async def a_lists_it() -> bool:
                return image.digest in await listed(on_a)  # noqa: B023 - awaited within the loop

            await until(a_lists_it, "A lists what was pushed to B")
        assert await listed(on_b) == {both.digest, last.digest}, "A still holds one; the other was B's alone"

        async def a_forgot_it() -> bool:
            return await listed(on_a) == {both.digest, last.digest}

        await until(a_forgot_it, "A forgets the image evicted from the only hub that held it")
        blobs = {f"sha256:{path.name}" for path in (tmp_path / "b" / "blobs" / "sha256").iterdir()}
        assert blobs == {last.digest, *(digest(layer) for layer in last.layers)}
