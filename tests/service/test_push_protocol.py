"""The requestor's side of the image store against a scripted hub: a real WebSocket server on
port 0 that answers with literal messages, so each rule of a push (only the blobs wanted, in
the hub's order, within the credit granted), a rent's progress and the store's listing are
checked on the wire, before and apart from the hub's own store (test_image_store.py)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

import kiln
from kiln.protocol.frames import HEADER, FrameKind
from kiln.protocol.sizes import format_size
from tests.unit.test_images import BASE, TOP, config_of, entries_of, sha, write_tar

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 1000
LIMITS = {
    "max_message_bytes": 1 << 20,
    "max_frame_bytes": CHUNK + 8,
    "chunk_bytes": CHUNK,
    "max_window": 8,
    "max_pending": 64,
    "max_streams": 8,
    "max_output_bytes": 1 << 20,
}
CONFIG = config_of([BASE, TOP])


class Peer:
    """The hub's end of one connection, for a script to drive."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws

    async def recv(self) -> dict[str, Any]:
        """The next text message (binary frames are not expected here)."""
        data = await self.ws.recv()
        assert isinstance(data, str), f"expected a message, got a frame {bytes(data[:8])!r}"
        message = json.loads(data)
        assert isinstance(message, dict)
        return message

    async def frame(self) -> tuple[FrameKind, int, bytes]:
        data = await self.ws.recv()
        assert isinstance(data, bytes), f"expected a frame, got {data}"
        kind, stream = HEADER.unpack_from(data)
        return FrameKind(kind), stream, data[HEADER.size :]

    async def send(self, **message: Any) -> None:
        await self.ws.send(json.dumps(message))


Script = Callable[[Peer], Awaitable[None]]


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Script], Awaitable[str]]]:
    """Start a hub that welcomes a requestor at 1.1, then plays ``script``; yields its URL."""
    servers: list[Server] = []
    failures: list[BaseException] = []

    async def start(script: Script, version: str = "1.1") -> str:
        async def handler(ws: ServerConnection) -> None:
            peer = Peer(ws)
            hello = await peer.recv()
            assert hello["type"] == "hello"
            await peer.send(type="welcome", version=version, session="r1", software="scripted", limits=LIMITS)
            try:
                await script(peer)
            except BaseException as e:  # reported by the test, not lost in the server
                failures.append(e)
                raise

        server = await serve(handler, "127.0.0.1", 0, subprotocols=["kiln.v1"])  # type: ignore[list-item]
        servers.append(server)
        return f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
    if failures:
        raise failures[0]


def image_info(tags: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "digest": sha(CONFIG),
        "tags": tags,
        "size": len(CONFIG) + len(BASE) + len(TOP),
        "layers": 2,
        "arch": "amd64",
        "os": "linux",
        "pushed": 1000.0,
        **extra,
    }


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return write_tar(tmp_path / "image.tar", entries_of([BASE, TOP], "oci", tags=["wordcount:1"]))


async def receive_blobs(peer: Peer, stream: int, grant: int = 2) -> bytes:
    """Take a stream's DATA frames until END, granting ``grant`` credits at a time."""
    received = bytearray()
    await peer.send(type="credit", stream=stream, chunks=grant)
    held = grant
    while True:
        kind, on, payload = await peer.frame()
        assert on == stream
        if kind == FrameKind.END:
            return bytes(received)
        assert kind == FrameKind.DATA
        assert held > 0, "a DATA frame beyond the credit granted"
        assert len(payload) <= CHUNK
        held -= 1
        received += payload
        if held == 0:
            await peer.send(type="credit", stream=stream, chunks=grant)
            held = grant


async def test_a_push_sends_exactly_the_wanted_blobs_in_the_hubs_order_within_credit(
    scripted: Callable[[Script], Awaitable[str]], archive: Path
) -> None:
    async def hub(peer: Peer) -> None:
        push = await peer.recv()
        assert push["type"] == "push_image"
        assert push["tags"] == ["wordcount:1", "wc:2"]
        assert push["manifest"] == {
            "config": {"digest": sha(CONFIG), "size": len(CONFIG)},
            "layers": [{"digest": sha(BASE), "size": len(BASE)}, {"digest": sha(TOP), "size": len(TOP)}],
        }
        # The hub holds the base layer: it wants the config and the top one, in its own order.
        await peer.send(type="want", re=push["id"], blobs=[sha(TOP), sha(CONFIG)])
        assert await receive_blobs(peer, push["id"]) == TOP + CONFIG
        pushed = image_info(["wordcount:1", "wc:2"])
        await peer.send(
            type="image_pushed", re=push["id"], image=pushed, sent=len(TOP) + len(CONFIG), skipped=len(BASE)
        )
        await peer.ws.wait_closed()

    seen: list[tuple[int, int, int]] = []
    async with kiln.connect(await scripted(hub)) as requestor:
        pushed = await requestor.push_image(path=archive, tags=["wc:2"], progress=lambda *p: seen.append(p))
    assert isinstance(pushed, kiln.PushedImage)
    assert (pushed.digest, pushed.tags, pushed.size) == (sha(CONFIG), ("wordcount:1", "wc:2"), pushed.info.size)
    assert (pushed.sent_bytes, pushed.skipped_bytes) == (len(TOP) + len(CONFIG), len(BASE))
    assert (pushed.layers, pushed.layers_skipped) == (2, 1)
    to_send = len(TOP) + len(CONFIG)
    assert seen[0] == (0, to_send, len(BASE))
    assert seen[-1] == (to_send, to_send, len(BASE))
    assert [s for s, _, _ in seen] == sorted(s for s, _, _ in seen)


async def test_a_push_the_hub_holds_entirely_sends_no_data(
    scripted: Callable[[Script], Awaitable[str]], archive: Path
) -> None:
    async def hub(peer: Peer) -> None:
        push = await peer.recv()
        size = image_info([])["size"]
        await peer.send(type="image_pushed", re=push["id"], image=image_info(["wordcount:1"]), sent=0, skipped=size)
        listing = await peer.recv()  # the next thing the requestor sends is no frame of the push
        assert listing["type"] == "list_images"
        images = [image_info(["wordcount:1"], providers=["p1"])]
        await peer.send(type="image_list", re=listing["id"], images=images, used=size, limit=1 << 30)
        await peer.ws.wait_closed()

    seen: list[tuple[int, int, int]] = []
    async with kiln.connect(await scripted(hub)) as requestor:
        pushed = await requestor.push_image(path=archive, progress=lambda *p: seen.append(p))
        listed = await requestor.list_images()
    assert (pushed.sent_bytes, pushed.layers_skipped) == (0, 2)
    assert seen == [(0, 0, pushed.size)]
    assert [(i.digest, i.providers) for i in listed.images] == [(sha(CONFIG), ["p1"])]
    assert listed.limit == 1 << 30


async def test_a_push_the_hub_refuses_midway_raises_its_error(
    scripted: Callable[[Script], Awaitable[str]], archive: Path
) -> None:
    async def hub(peer: Peer) -> None:
        push = await peer.recv()
        await peer.send(type="want", re=push["id"], blobs=[sha(CONFIG), sha(BASE), sha(TOP)])
        await peer.send(type="credit", stream=push["id"], chunks=1)
        await peer.frame()
        await peer.send(type="error", re=push["id"], code="store_full", message="the store holds 1GiB of 1GiB")
        await peer.ws.wait_closed()

    async with kiln.connect(await scripted(hub)) as requestor:
        with pytest.raises(kiln.StoreFull, match="the store holds"):
            await requestor.push_image(path=archive)


async def test_a_want_for_a_blob_not_in_the_image_is_the_hubs_violation(
    scripted: Callable[[Script], Awaitable[str]], archive: Path
) -> None:
    async def hub(peer: Peer) -> None:
        push = await peer.recv()
        await peer.send(type="want", re=push["id"], blobs=[sha(b"something else")])
        kind, stream, reason = await peer.frame()
        assert (kind, stream) == (FrameKind.ABORT, push["id"])
        assert b"not in the image" in reason
        await peer.ws.wait_closed()

    async with kiln.connect(await scripted(hub)) as requestor:
        with pytest.raises(kiln.RemoteProtocolError, match=r"wants blob .* not in the image"):
            await requestor.push_image(path=archive)


async def test_a_hub_of_protocol_1_0_has_no_store(scripted: Callable[..., Awaitable[str]], archive: Path) -> None:
    async def hub(peer: Peer) -> None:
        await peer.ws.wait_closed()

    async with kiln.connect(await scripted(hub, "1.0")) as requestor:
        with pytest.raises(kiln.UnsupportedVersion, match=r"needs protocol 1\.1"):
            await requestor.push_image(path=archive)
        with pytest.raises(kiln.UnsupportedVersion):
            await requestor.list_images()


async def test_share_image_needs_a_hub_of_1_4_and_says_whom(scripted: Callable[..., Awaitable[str]]) -> None:
    async def hub(peer: Peer) -> None:
        share = await peer.recv()
        assert share == {
            "type": "share_image",
            "id": share["id"],
            "image": "app:1",
            "to": ["bob", "#7"],
            "public": False,
            "revoke": False,
        }
        await peer.send(type="done", re=share["id"])
        share = await peer.recv()
        assert (share["to"], share["public"], share["revoke"]) == ([], True, True)
        await peer.send(type="error", re=share["id"], code="unauthorized", message="only a tenant that pushed")
        await peer.ws.wait_closed()

    async with kiln.connect(await scripted(hub, "1.4")) as requestor:
        await requestor.share_image("app:1", ["bob", "#7"])
        with pytest.raises(kiln.Unauthorized, match="only a tenant that pushed"):
            await requestor.share_image("sha256:" + "0" * 64, public=True, revoke=True)
        with pytest.raises(kiln.UsageError, match="'to', or 'public'"):
            await requestor.share_image("app:1")
        with pytest.raises(kiln.UsageError, match="not one string"):
            await requestor.share_image("app:1", "bob")

    async def old_hub(peer: Peer) -> None:
        await peer.ws.wait_closed()

    async with kiln.connect(await scripted(old_hub, "1.3")) as old:
        with pytest.raises(kiln.UnsupportedVersion, match=r"needs protocol 1\.4"):
            await old.share_image("app:1", public=True)


RENTED = {
    "type": "rented",
    "activity": "a1",
    "provider": "p1",
    "cached": False,
    "resources": {"cpus": 1, "memory": 256 * 2**20, "storage": 0},
}


async def test_a_rent_reports_the_image_loading_and_what_was_pulled(
    scripted: Callable[[Script], Awaitable[str]],
) -> None:
    async def hub(peer: Peer) -> None:
        rent = await peer.recv()
        assert rent["image"] == "wordcount:1"
        for done in (0, 40, 120):
            await peer.send(type="rent_progress", re=rent["id"], provider="p1", image=sha(CONFIG), done=done, total=120)
        await peer.send(**RENTED, re=rent["id"], pulled=120)
        release = await peer.recv()
        await peer.send(type="done", re=release["id"])
        removal = await peer.recv()
        assert (removal["type"], removal["image"]) == ("remove_image", "wordcount:1")
        await peer.send(type="error", re=removal["id"], code="image_not_found", message="no image wordcount:1")
        await peer.ws.wait_closed()

    seen: list[tuple[str, str, int, int]] = []
    async with kiln.connect(await scripted(hub)) as requestor:
        async with requestor.rent("wordcount:1", on_progress=lambda *p: seen.append(p)) as act:
            assert (act.cached, act.pulled) == (False, 120)
        with pytest.raises(kiln.ImageNotFound):
            await requestor.remove_image("wordcount:1")
    # Progress may be coalesced (only the latest is kept), but it ends at the last one sent.
    assert seen and seen[-1] == ("p1", sha(CONFIG), 120, 120)
    assert [d for _, _, d, _ in seen] == sorted(d for _, _, d, _ in seen)


async def test_a_progress_callback_that_raises_gives_up_the_rent(
    scripted: Callable[[Script], Awaitable[str]],
) -> None:
    async def hub(peer: Peer) -> None:
        rent = await peer.recv()
        await peer.send(type="rent_progress", re=rent["id"], provider="p1", image="wordcount:1", done=1, total=9)
        cancel = await peer.recv()
        assert cancel == {"type": "cancel", "target": rent["id"]}
        await peer.send(type="error", re=rent["id"], code="cancelled", message="cancelled")
        await peer.ws.wait_closed()

    def impatient(provider: str, image: str, done: int, total: int) -> None:
        raise RuntimeError("too slow")

    async with kiln.connect(await scripted(hub)) as requestor:
        with pytest.raises(RuntimeError, match="too slow"):
            await requestor.rent("wordcount:1", on_progress=impatient)
        assert requestor.activities == []


async def test_kiln_image_push_prints_progress_to_stderr_and_the_digest_last_on_stdout(
    scripted: Callable[[Script], Awaitable[str]], archive: Path
) -> None:
    async def hub(peer: Peer) -> None:
        push = await peer.recv()
        await peer.send(type="want", re=push["id"], blobs=[sha(TOP)])
        assert await receive_blobs(peer, push["id"], grant=4) == TOP
        pushed = image_info(["wordcount:1"])
        await peer.send(
            type="image_pushed", re=push["id"], image=pushed, sent=len(TOP), skipped=len(BASE) + len(CONFIG)
        )
        await peer.ws.wait_closed()

    url = await scripted(hub)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), str(ROOT / "provider_runtime")])}
    argv = [sys.executable, "-m", "kiln.cli", "image", "push", "--file", str(archive), "--hub", url]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines()[-1] == sha(CONFIG)
    said = err.decode()
    top = format_size(len(TOP))
    assert f"sent 0B of {top}" in said
    assert f"sent {top} of {top}; {format_size(len(BASE) + len(CONFIG))} the hub holds already" in said
    assert "1 of 2 layers skipped" in said
