"""The hub's image store, spoken to by raw WebSocket clients over a real port (no Docker).

Images here are made up (a config naming layers that are tars of one file of random bytes):
the store checks digests, sizes, that the config describes the layers, and what the layers'
tar headers say they expand to; not what the files hold.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from kiln.hub import catalog as hub_catalog
from kiln.hub.io import store as hub_store
from kiln.hub.io.blobs import BlobStore
from kiln.hub.io.server import start
from kiln.hub.io.state import HubState
from kiln.protocol import frames
from kiln.protocol.frames import FrameKind
from tests.images import noise_layer as noise
from tests.images import sparse_layer

HELLO = {"type": "hello", "version": "1.1", "role": "requestor", "name": "pusher"}
CHUNK = 256 * 1024


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class FakeImage:
    config: bytes
    layers: list[bytes]

    @classmethod
    def make(cls, *layers: bytes, arch: str = "amd64") -> FakeImage:
        config = {
            "architecture": arch,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [digest(layer) for layer in layers]},
        }
        return cls(json.dumps(config).encode(), list(layers))

    @property
    def digest(self) -> str:
        return digest(self.config)

    def manifest(self) -> dict[str, Any]:
        return {
            "config": {"digest": digest(self.config), "size": len(self.config)},
            "layers": [{"digest": digest(layer), "size": len(layer)} for layer in self.layers],
        }

    def blob(self, wanted: str) -> bytes:
        return next(b for b in [self.config, *self.layers] if digest(b) == wanted)

    @property
    def size(self) -> int:
        return len(self.config) + sum(map(len, self.layers))


@asynccontextmanager
async def hub(data_dir: Path, limit: int = 2**30, **options: Any) -> AsyncIterator[str]:
    async with start("127.0.0.1", 0, data_dir=data_dir, store_limit=limit, **options) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


@asynccontextmanager
async def requestor(
    url: str, version: str = "1.1", token: str | None = None, name: str = "pusher"
) -> AsyncIterator[ClientConnection]:
    async with connect(url, subprotocols=["kiln.v1"]) as ws:  # type: ignore[list-item]
        hello = {**HELLO, "version": version, "name": name}
        await ws.send(json.dumps(hello if token is None else {**hello, "token": token}))
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        yield ws


async def recv(ws: ClientConnection) -> dict[str, Any]:
    message = json.loads(await ws.recv())
    assert isinstance(message, dict)
    return message


async def push(
    ws: ClientConnection,
    image: FakeImage,
    tags: list[str] | None = None,
    *,
    id_: int = 1,
    tamper: dict[str, bytes] | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """Push ``image`` as a client must; ``tamper`` replaces a blob's bytes. The blobs wanted, and the final reply."""
    await ws.send(json.dumps({"type": "push_image", "id": id_, "manifest": image.manifest(), "tags": tags or []}))
    reply = await recv(ws)
    if reply["type"] != "want":
        return [], reply
    wanted = reply["blobs"]
    data = b"".join((tamper or {}).get(d, image.blob(d)) for d in wanted)
    credit = 0
    sent = 0
    while sent < len(data):
        while credit == 0:
            message = await recv(ws)
            if message["type"] != "credit":
                return wanted, message
            credit += message["chunks"]
        await ws.send(frames.encode(FrameKind.DATA, id_, data[sent : sent + CHUNK]))
        sent += CHUNK
        credit -= 1
    await ws.send(frames.encode(FrameKind.END, id_))
    while (message := await recv(ws))["type"] == "credit":
        pass
    return wanted, message


def stored_files(data_dir: Path) -> tuple[set[str], list[str]]:
    blobs = {f"sha256:{p.name}" for p in (data_dir / "blobs" / "sha256").iterdir()}
    return blobs, sorted(p.name for p in (data_dir / "tmp").iterdir())


async def test_push_stores_each_blob_once_and_a_second_push_moves_nothing(tmp_path: Path) -> None:
    base, app, other = noise(700_000), noise(5_000), noise(3_000)
    first, second = FakeImage.make(base, app), FakeImage.make(base, other)
    async with hub(tmp_path) as url, requestor(url) as ws:
        wanted, reply = await push(ws, first, ["app:1"])
        assert wanted == [first.digest, digest(base), digest(app)], "config first, then layers base first"
        assert reply["type"] == "image_pushed", reply
        assert reply["image"]["digest"] == first.digest
        assert reply["image"]["tags"] == ["app:1"]
        assert (reply["sent"], reply["skipped"]) == (first.size, 0)

        wanted, reply = await push(ws, first, ["app:latest"], id_=2)
        assert wanted == [] and reply["type"] == "image_pushed"
        assert (reply["sent"], reply["skipped"]) == (0, first.size)
        assert reply["image"]["tags"] == ["app:1", "app:latest"]

        wanted, reply = await push(ws, second, ["other:1"], id_=3)
        assert wanted == [second.digest, digest(other)], "the shared base layer is not sent again"
        assert reply["skipped"] == len(base)

        await ws.send(json.dumps({"type": "list_images", "id": 4}))
        listing = await recv(ws)
        assert listing["type"] == "image_list"
        assert {i["digest"] for i in listing["images"]} == {first.digest, second.digest}
        assert listing["used"] == len(base) + len(app) + len(other) + len(first.config) + len(second.config)
    blobs, tmp = stored_files(tmp_path)
    assert blobs == {first.digest, second.digest, digest(base), digest(app), digest(other)}
    assert tmp == []


async def test_the_store_survives_a_hub_restart(tmp_path: Path) -> None:
    image = FakeImage.make(noise(10_000))
    async with hub(tmp_path) as url, requestor(url) as ws:
        assert (await push(ws, image, ["keep:1"]))[1]["type"] == "image_pushed"
    async with hub(tmp_path) as url, requestor(url) as ws:
        wanted, reply = await push(ws, image)
        assert wanted == [] and reply["type"] == "image_pushed"
        assert reply["image"]["tags"] == ["keep:1"]
        await ws.send(json.dumps({"type": "remove_image", "id": 5, "image": "keep:1"}))
        assert (await recv(ws))["type"] == "done"
        await ws.send(json.dumps({"type": "remove_image", "id": 6, "image": "keep:1"}))
        assert (await recv(ws))["code"] == "image_not_found"
    assert stored_files(tmp_path) == (set(), [])


async def test_a_corrupt_blob_is_refused_and_a_retry_resumes(tmp_path: Path) -> None:
    good, bad = noise(300_000), noise(300_000)
    image = FakeImage.make(good, bad)
    async with hub(tmp_path) as url, requestor(url) as ws:
        flipped = bytes([bad[0] ^ 1]) + bad[1:]
        _, reply = await push(ws, image, tamper={digest(bad): flipped})
        assert reply["code"] == "image_corrupt", reply
        assert digest(bad) in reply["message"]
        blobs, tmp = stored_files(tmp_path)
        assert blobs == {image.digest, digest(good)} and tmp == [], "verified blobs stay; nothing partial"

        wanted, reply = await push(ws, image, id_=2)
        assert wanted == [digest(bad)], "the retry sends only what was not verified"
        assert reply["type"] == "image_pushed"


async def test_short_and_long_blobs_and_a_lying_config_fail_cleanly(tmp_path: Path) -> None:
    layer = noise(50_000)
    image = FakeImage.make(layer)
    async with hub(tmp_path) as url, requestor(url) as ws:
        _, reply = await push(ws, image, tamper={digest(layer): layer[:-10]})
        assert reply["code"] == "image_corrupt" and "short" in reply["message"], reply
        _, reply = await push(ws, image, id_=2, tamper={digest(layer): layer + b"extra"})
        assert reply["code"] == "image_corrupt" and "more bytes" in reply["message"], reply

        liar = FakeImage(image.config, [noise(100)])  # the config names another layer
        _, reply = await push(ws, liar, id_=3)
        assert reply["code"] == "bad_image" and "layers" in reply["message"], reply

        not_json = FakeImage(b"not json", [])
        _, reply = await push(ws, not_json, id_=4)
        assert reply["code"] == "bad_image", reply

        await ws.send(json.dumps({"type": "push_image", "id": 5, "manifest": image.manifest(), "tags": ["Bad:Tag"]}))
        assert (await recv(ws))["code"] == "bad_message"
    _, tmp = stored_files(tmp_path)
    assert tmp == []


async def test_a_push_past_the_limit_fails_and_evicts_only_what_it_must(tmp_path: Path) -> None:
    old, new, huge = (FakeImage.make(noise(n)) for n in (400_000, 400_000, 2_000_000))
    async with hub(tmp_path, limit=1_000_000) as url, requestor(url) as ws:
        assert (await push(ws, old, ["old:1"]))[1]["type"] == "image_pushed"
        assert (await push(ws, new, ["new:1"], id_=2))[1]["type"] == "image_pushed"
        _, reply = await push(ws, huge, id_=3)
        assert reply["code"] == "store_full", reply
        await ws.send(json.dumps({"type": "list_images", "id": 4}))
        assert len((await recv(ws))["images"]) == 2, "a push that cannot fit evicts nothing"

        third = FakeImage.make(noise(400_000))
        assert (await push(ws, third, ["third:1"], id_=5))[1]["type"] == "image_pushed"
        await ws.send(json.dumps({"type": "list_images", "id": 6}))
        kept = {tag for image in (await recv(ws))["images"] for tag in image["tags"]}
        assert kept == {"new:1", "third:1"}, "the least recently used image made room"


async def test_a_push_cut_off_leaves_nothing_partial_and_others_are_served(tmp_path: Path) -> None:
    layer = noise(3 * CHUNK)
    image = FakeImage.make(layer)
    async with hub(tmp_path) as url:
        async with requestor(url) as ws:
            await ws.send(json.dumps({"type": "push_image", "id": 1, "manifest": image.manifest()}))
            assert (await recv(ws))["type"] == "want"
            assert (await recv(ws))["type"] == "credit"
            await ws.send(frames.encode(FrameKind.DATA, 1, image.config))
            await ws.send(frames.encode(FrameKind.DATA, 1, layer[:CHUNK]))
        for _ in range(500):  # the hub verifies what came before the cut, on its own time (10 s under load)
            if image.digest in stored_files(tmp_path)[0]:
                break
            await asyncio.sleep(0.02)
        async with requestor(url) as other:
            wanted, reply = await push(other, image)
            assert wanted == [digest(layer)] and reply["type"] == "image_pushed"
    _, tmp = stored_files(tmp_path)
    assert tmp == []


async def test_a_push_that_stalls_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_store, "PUSH_IDLE_TIMEOUT", 0.3)
    image = FakeImage.make(noise(1000))
    async with hub(tmp_path) as url, requestor(url) as ws:
        assert (await start_push(ws, image, 1))["type"] == "want"
        while (reply := await recv(ws))["type"] == "credit":
            pass
        assert reply["code"] == "transfer_failed" and "nothing" in reply["message"], reply


async def test_a_push_that_trickles_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A byte now and then keeps it from ever being idle; under the rate floor it fails all the same.
    monkeypatch.setattr(hub_store, "PUSH_IDLE_TIMEOUT", 0.5)
    image = FakeImage.make(noise(4000))
    async with hub(tmp_path) as url, requestor(url) as ws:
        assert (await start_push(ws, image, 1))["type"] == "want"
        data = image.config + image.layers[0]
        for n in range(40):
            await ws.send(frames.encode(FrameKind.DATA, 1, data[n : n + 1]))
            await asyncio.sleep(0.05)
            try:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 0.01))
            except TimeoutError:
                continue
            if reply["type"] != "credit":
                break
        assert reply["code"] == "transfer_failed" and "KiB/s" in reply["message"], reply


async def test_a_client_of_protocol_1_0_is_welcomed_at_1_0(tmp_path: Path) -> None:
    async with hub(tmp_path) as url, connect(url) as ws:
        await ws.send(json.dumps({**HELLO, "version": "1.0"}))
        assert json.loads(await ws.recv())["version"] == "1.0"


# --- expansion bombs, and pushes that send nothing ------------------------------------------------

needs_tar = pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar is not installed")


def sparse_bomb(tmp_path: Path) -> bytes:
    return sparse_layer(tmp_path)


async def listing(ws: ClientConnection, id_: int) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "list_images", "id": id_}))
    reply = await recv(ws)
    assert reply["type"] == "image_list", reply
    return reply


@needs_tar
async def test_a_sparse_file_bomb_is_refused_at_push(tmp_path: Path) -> None:
    bomb = sparse_bomb(tmp_path)
    assert len(bomb) <= 10 * 1024
    image = FakeImage.make(bomb)
    async with hub(tmp_path / "hub") as url, requestor(url) as ws:
        _, reply = await push(ws, image, ["bomb:1"])
        assert reply["code"] == "image_too_large", reply
        assert "times its size" in reply["message"] and digest(bomb) in reply["message"], reply
        assert (await listing(ws, 2))["images"] == []
    blobs, tmp = stored_files(tmp_path / "hub")
    assert digest(bomb) not in blobs and tmp == []


@needs_tar
async def test_a_bomb_let_through_is_counted_at_its_expanded_size(tmp_path: Path) -> None:
    """With the ratio lifted, the bomb weighs its 1 GiB: against --max-image-size, the store limit, and in use."""
    bomb = sparse_bomb(tmp_path)
    image = FakeImage.make(bomb)
    lifted = {"max_expansion": 1e9}
    async with hub(tmp_path / "a", 4 * 2**30, max_image_size=512 * 2**20, **lifted) as url, requestor(url) as ws:
        _, reply = await push(ws, image)
        assert reply["code"] == "image_too_large" and "once its layers are extracted" in reply["message"], reply
    async with hub(tmp_path / "b", 512 * 2**20, **lifted) as url, requestor(url) as ws:
        _, reply = await push(ws, image)
        assert reply["code"] == "store_full", reply
    async with hub(tmp_path / "c", 4 * 2**30, **lifted) as url, requestor(url) as ws:
        _, reply = await push(ws, image)
        assert reply["type"] == "image_pushed", reply
        assert (await listing(ws, 2))["used"] >= 2**30
    assert (tmp_path / "c" / "blobs" / "expanded" / digest(bomb)[7:]).read_text() == str(2**30)


async def test_expanded_sizes_are_kept_and_measured_at_start_when_missing(tmp_path: Path) -> None:
    """A store from before expanded sizes were kept has them measured when the hub starts."""
    layer = noise(300_000)
    image = FakeImage.make(layer)
    async with hub(tmp_path) as url, requestor(url) as ws:
        assert (await push(ws, image, ["a:1"]))[1]["type"] == "image_pushed"
        used = (await listing(ws, 2))["used"]
    record = tmp_path / "blobs" / "expanded" / digest(layer)[7:]
    assert int(record.read_text()) == 303_104  # 300,000 bytes in whole 4 KiB blocks
    assert (tmp_path / "blobs" / "expanded" / image.digest[7:]).read_text() == "-", "a config is no tar"
    for path in (tmp_path / "blobs" / "expanded").iterdir():
        path.unlink()
    async with hub(tmp_path) as url, requestor(url) as ws:
        assert (await listing(ws, 1))["used"] == used
        wanted, reply = await push(ws, image, id_=2)
        assert wanted == [] and reply["type"] == "image_pushed"
    assert int(record.read_text()) == 303_104


async def test_a_layer_that_is_no_tar_is_refused(tmp_path: Path) -> None:
    junk = os.urandom(5000)
    async with hub(tmp_path) as url, requestor(url) as ws:
        _, reply = await push(ws, FakeImage.make(junk))
        assert reply["code"] == "image_corrupt" and digest(junk) in reply["message"], reply
    assert stored_files(tmp_path)[1] == []


async def start_push(ws: ClientConnection, image: FakeImage, id_: int) -> dict[str, Any]:
    """Declare a push and send nothing: the hub's first answer (after want, a credit), or its error."""
    await ws.send(json.dumps({"type": "push_image", "id": id_, "manifest": image.manifest()}))
    reply = await recv(ws)
    if reply["type"] == "want":
        assert (await recv(ws))["type"] == "credit"
    return reply


async def test_a_push_that_sends_nothing_evicts_nothing_and_blocks_no_other_tenant(tmp_path: Path) -> None:
    with HubState.in_dir(tmp_path) as state:
        alice, bob = state.create("requestor", "alice")[1], state.create("requestor", "bob")[1]
    old, new, third = (FakeImage.make(noise(400_000)) for _ in range(3))
    async with (
        hub(tmp_path, limit=1_000_000) as url,
        requestor(url, token=alice, name="alice") as a,
        requestor(url, token=bob, name="bob") as b,
    ):
        assert (await push(a, old, ["old:1"]))[1]["type"] == "image_pushed"
        assert (await push(a, new, ["new:1"], id_=2))[1]["type"] == "image_pushed"

        # Bob declares blobs that would need old's room, and sends nothing.
        for n in range(hub_catalog.MAX_PUSHES):
            assert (await start_push(b, FakeImage.make(noise(200_000)), 10 + n))["type"] == "want"
        reply = await start_push(b, FakeImage.make(noise(1000)), 20)
        assert reply["code"] == "too_many", "one tenant's pushes in flight are bounded"
        assert len((await listing(a, 3))["images"]) == 2, "nothing evicted for bytes that never came"

        # Too large to ever fit: refused at once, before any byte.
        reply = await start_push(a, FakeImage.make(noise(1_200_000)), 4)
        assert reply["code"] == "store_full", reply

        # Alice's push still goes through, making room from her own least recently used image.
        assert (await push(a, third, ["third:1"], id_=5))[1]["type"] == "image_pushed"
        kept = {tag for image in (await listing(a, 6))["images"] for tag in image["tags"]}
        assert kept == {"new:1", "third:1"}


async def test_a_push_holds_room_only_for_the_bytes_that_arrived_not_for_what_its_headers_claim(
    tmp_path: Path,
) -> None:
    """A layer's first tar header may claim a file as large as the layer is declared: the push
    has sent 512 bytes, and evicts nothing for them; once the layer's bytes came, it does."""
    with HubState.in_dir(tmp_path) as state:
        alice, bob = state.create("requestor", "alice")[1], state.create("requestor", "bob")[1]
    old, new = (FakeImage.make(noise(400_000)) for _ in range(2))
    async with (
        hub(tmp_path, limit=1_000_000) as url,
        requestor(url, token=alice, name="alice") as a,
        requestor(url, token=bob, name="bob") as b,
    ):
        assert (await push(a, old, ["old:1"]))[1]["type"] == "image_pushed"
        assert (await push(a, new, ["new:1"], id_=2))[1]["type"] == "image_pushed"
        claim = FakeImage.make(noise(400_000))
        await b.send(json.dumps({"type": "push_image", "id": 7, "manifest": claim.manifest()}))
        want = await recv(b)
        assert want["type"] == "want" and (await recv(b))["type"] == "credit"
        data = b"".join(claim.blob(d) for d in want["blobs"])
        header_end = len(claim.config) + 512  # the config, then the layer's first header (a 400,000-byte file)
        await b.send(frames.encode(FrameKind.DATA, 7, data[:header_end]))
        await asyncio.sleep(0.5)
        assert len((await listing(a, 3))["images"]) == 2, "nothing evicted for a header's claim"
        for start in range(header_end, len(data), CHUNK):
            await b.send(frames.encode(FrameKind.DATA, 7, data[start : start + CHUNK]))
        await b.send(frames.encode(FrameKind.END, 7))
        while (reply := await recv(b))["type"] == "credit":
            pass
        assert reply["type"] == "image_pushed", reply
        assert [i["tags"] for i in (await listing(a, 4))["images"]] == [["new:1"]], "evicted once the bytes came"


def test_a_blob_evicted_while_a_push_puts_it_back_keeps_its_file(tmp_path: Path) -> None:
    """An eviction's files go in a thread, after the catalog dropped them: by then a push may have
    sent the same blob again (pinned, its file put back). Its file stays."""
    from kiln.protocol.messages import Blob, Manifest

    store = BlobStore(tmp_path)
    catalog = store.open(2**20)
    layer = noise(1000)
    blob = Blob(digest=digest(layer), size=len(layer))
    config = FakeImage.make(layer).config
    manifest = Manifest(config=Blob(digest=digest(config), size=len(config)), layers=[blob])
    _, push = catalog.begin(manifest)
    writer = store.writer(blob, layer=True)
    writer.write(layer)
    catalog.pin(push, blob)  # as the push does once the blob's bytes all came
    writer.finish()
    store.delete([blob.digest], catalog.keeps)  # an eviction's delete, late
    assert store.path(blob.digest).exists()
    catalog.end(push)
    store.delete([blob.digest], catalog.keeps)
    assert not store.path(blob.digest).exists(), "neither stored nor pinned: deleted"


def test_a_blob_writer_discarded_before_its_first_write_ran_leaves_no_file(tmp_path: Path) -> None:
    """A push cancelled while its first write waits for a thread: the discard (in a thread of its
    own) may run first. The write that comes after must make no file (it would stay open, and in tmp/)."""
    from kiln.protocol.errors import Cancelled
    from kiln.protocol.messages import Blob

    store = BlobStore(tmp_path)
    store.open(2**20)
    layer = noise(1000)
    writer = store.writer(Blob(digest=digest(layer), size=len(layer)), layer=True)
    writer.discard()
    with pytest.raises(Cancelled):
        writer.write(layer)
    assert stored_files(tmp_path)[1] == []
