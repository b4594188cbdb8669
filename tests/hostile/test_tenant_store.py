"""Two tenants at a real hub on a real port, its credentials made in its own credential store: every
image operation of one against the other's private image, by tag and by digest, by raw WebSocket
clients (no Docker: the images are made up, as in tests/service/test_hub_store.py). Each must fail exactly
as for an image nobody pushed; the dedup rule must leak nothing; owners survive a restart, and a
record written before images had owners belongs to the open tenant.

The same with a real provider and Docker (rents that run the image) is tests/hostile/test_tenant_isolation.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from kiln.hub.io.server import start
from kiln.hub.io.state import HubState
from tests.images import noise_layer as noise
from tests.service.test_hub_store import FakeImage, digest, push, recv

SHARED = "shared-t0ken"


@dataclass
class Tokens:
    alice: str
    bob: str
    carol: str
    admin: str


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    with HubState.in_dir(tmp_path) as state:
        made = [state.create("requestor", name)[1] for name in ("alice", "bob", "carol")]
        made.append(state.create("admin", "ops")[1])
    return Tokens(*made)


@asynccontextmanager
async def hub(data_dir: Path) -> AsyncIterator[str]:
    async with start("127.0.0.1", 0, token=SHARED, data_dir=data_dir) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


@asynccontextmanager
async def as_tenant(url: str, token: str, version: str = "1.4") -> AsyncIterator[ClientConnection]:
    async with connect(url, subprotocols=["kiln.v1"]) as ws:  # type: ignore[list-item]
        hello = {"type": "hello", "version": version, "role": "requestor", "name": "t", "token": token}
        await ws.send(json.dumps(hello))
        welcome = await recv(ws)
        assert welcome["type"] == "welcome", welcome
        yield ws


async def ask(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(message))
    return await recv(ws)


def without(text: str, *refs: str) -> str:
    for ref in refs:
        text = text.replace(ref, "<ref>")
    return text


async def answers(ws: ClientConnection, ref: str, rid: int) -> list[tuple[str, str]]:
    """What B hears for every request naming ``ref`` (code and message, the ref itself masked)."""
    requests: list[dict[str, Any]] = [
        {"type": "remove_image", "id": rid, "image": ref},
        {"type": "share_image", "id": rid + 1, "image": ref, "to": ["bob"]},
        {"type": "share_image", "id": rid + 2, "image": ref, "public": True},
        {"type": "rent", "id": rid + 3, "image": ref, "demand": {"cpus": 1, "memory": 2**26}},
        {"type": "market", "id": rid + 4, "image": ref},
    ]
    out = []
    for request in requests:
        reply = await ask(ws, request)
        assert reply.get("re") == request["id"], reply
        if reply["type"] == "market_info":
            out.append(("market_info", json.dumps([reply["providers"], reply["matched"]])))
        else:
            out.append((reply["code"], without(reply["message"], ref)))
    return out


async def test_another_tenants_image_is_as_absent_by_tag_and_by_digest(tmp_path: Path, tokens: Tokens) -> None:
    secret = FakeImage.make(noise(20_000))
    never = FakeImage.make(noise(20_000))  # pushed by nobody
    async with hub(tmp_path) as url, as_tenant(url, tokens.alice) as a, as_tenant(url, tokens.bob) as b:
        _, pushed = await push(a, secret, ["app:1"])
        assert pushed["type"] == "image_pushed" and pushed["image"]["owners"] == ["alice"], pushed
        assert pushed["image"]["shared"] == [] and pushed["image"]["public"] is False

        listing = await ask(b, {"type": "list_images", "id": 1})
        assert listing["images"] == [], "B lists nothing of A's"
        for ref, absent in ((secret.digest, never.digest), ("app:1", "never:1")):
            assert await answers(b, ref, 10) == await answers(b, absent, 20), f"{ref}: the same as absent"
        assert (await answers(b, secret.digest, 30))[0][0] == "image_not_found"
        rented = await ask(b, {"type": "rent", "id": 40, "image": secret.digest, "demand": {"cpus": 1}})
        assert rented["code"] == "image_not_found", rented

        # B pushes its own image under A's tag: A's tag still names A's image
        own = FakeImage.make(noise(5_000))
        _, pushed = await push(b, own, ["app:1"], id_=41)
        assert pushed["image"]["owners"] == ["bob"] and pushed["image"]["tags"] == ["app:1"]
        mine = await ask(a, {"type": "list_images", "id": 2})
        assert [(i["digest"], i["tags"]) for i in mine["images"]] == [(secret.digest, ["app:1"])]
        assert (await ask(b, {"type": "remove_image", "id": 42, "image": "app:1"}))["type"] == "done"
        assert [i["digest"] for i in (await ask(a, {"type": "list_images", "id": 3}))["images"]] == [secret.digest]

        # shared with B: B sees it and may rent it by digest, but not remove or share it
        assert (await ask(a, {"type": "share_image", "id": 4, "image": "app:1", "to": ["bob"]}))["type"] == "done"
        [seen] = (await ask(b, {"type": "list_images", "id": 43}))["images"]
        assert (seen["digest"], seen["tags"], seen["owners"], seen.get("shared")) == (
            secret.digest,
            [],
            ["alice"],
            None,
        )
        refused = await ask(b, {"type": "remove_image", "id": 44, "image": secret.digest})
        assert refused["code"] == "unauthorized", refused
        refused = await ask(b, {"type": "share_image", "id": 45, "image": secret.digest, "public": True})
        assert refused["code"] == "unauthorized", refused
        unknown = await ask(a, {"type": "share_image", "id": 5, "image": "app:1", "to": ["nobody"]})
        assert (unknown["code"], "no live requestor credential" in unknown["message"]) == ("bad_message", True)
        assert (await ask(a, {"type": "share_image", "id": 6, "image": "app:1", "to": ["bob"], "revoke": True}))[
            "type"
        ] == "done"
        assert (await ask(b, {"type": "list_images", "id": 46}))["images"] == []


async def test_a_push_sends_another_tenants_blob_in_full_and_owners_survive_a_restart(
    tmp_path: Path, tokens: Tokens
) -> None:
    base, layer = noise(300_000), noise(100_000)
    a_image = FakeImage.make(base, layer)
    b_image = FakeImage.make(base, noise(1_000))  # shares A's private base layer
    async with (
        hub(tmp_path) as url,
        as_tenant(url, tokens.alice) as a,
        as_tenant(url, tokens.bob) as b,
        as_tenant(url, tokens.carol) as c,
    ):
        assert (await push(a, a_image, ["app:1"]))[1]["type"] == "image_pushed"
        wanted, pushed = await push(b, b_image, ["mine:1"])
        assert wanted == [b_image.digest, digest(base), b_image.manifest()["layers"][1]["digest"]], "base is sent"
        assert (pushed["sent"], pushed["skipped"]) == (b_image.size, 0), "as if nobody held the base layer"
        listing = await ask(b, {"type": "list_images", "id": 9})
        assert listing["used"] == b_image.size, "B's view of the store: the base layer counts as new"
        # B sends the bytes of A's whole image: then it holds it too, with its own tags
        wanted, pushed = await push(b, a_image, ["copy:1"], id_=2)
        assert wanted == [a_image.digest, digest(layer)], "B's own base layer it need not send again"
        assert pushed["image"]["owners"] == ["bob"] and pushed["image"]["tags"] == ["copy:1"]
        assert "last_used" not in pushed["image"] and pushed["image"]["providers"] == []
        # a lying size for a blob another tenant holds is judged by the bytes, as for an absent one
        lying = FakeImage.make(layer)
        manifest = lying.manifest()
        manifest["layers"][0]["size"] += 1
        reply = await ask(c, {"type": "push_image", "id": 1, "manifest": manifest})
        assert reply["type"] == "want" and digest(layer) in reply["blobs"], reply
    async with hub(tmp_path) as url, as_tenant(url, tokens.alice) as a, as_tenant(url, tokens.bob) as b:
        listed = (await ask(a, {"type": "list_images", "id": 1}))["images"]
        assert [(i["digest"], i["tags"], i["owners"]) for i in listed] == [(a_image.digest, ["app:1"], ["alice"])]
        bobs = {i["digest"]: i["tags"] for i in (await ask(b, {"type": "list_images", "id": 1}))["images"]}
        assert bobs == {a_image.digest: ["copy:1"], b_image.digest: ["mine:1"]}
        assert (await ask(b, {"type": "remove_image", "id": 2, "image": "copy:1"}))["type"] == "done"
        assert [i["tags"] for i in (await ask(a, {"type": "list_images", "id": 2}))["images"]] == [["app:1"]]
    async with hub(tmp_path) as url, as_tenant(url, tokens.admin) as admin:
        everything = (await ask(admin, {"type": "list_images", "id": 1}))["images"]
        assert {i["digest"]: i["owners"] for i in everything} == {a_image.digest: ["alice"], b_image.digest: ["bob"]}


async def test_a_record_without_owners_belongs_to_the_open_tenant(tmp_path: Path, tokens: Tokens) -> None:
    image = FakeImage.make(noise(10_000))
    async with hub(tmp_path) as url, as_tenant(url, SHARED) as open_:
        assert (await push(open_, image, ["old:1"]))[1]["image"]["owners"] == ["#open"]
    # as a hub of 1.3 wrote it
    record = next((tmp_path / "images").glob("*.json"))
    raw = orjson.loads(record.read_bytes())
    holding = raw.pop("owners")["open"]
    record.write_bytes(orjson.dumps({**raw, "tags": holding["tags"], "pushed": holding["pushed"]}))
    async with hub(tmp_path) as url, as_tenant(url, SHARED, "1.3") as old, as_tenant(url, tokens.alice) as a:
        [info] = (await ask(old, {"type": "list_images", "id": 1}))["images"]
        assert info["tags"] == ["old:1"] and "owners" not in info, "a 1.3 requestor reads no 1.4 field"
        assert (await ask(a, {"type": "list_images", "id": 1}))["images"] == []
        rented = await ask(a, {"type": "rent", "id": 2, "image": image.digest, "demand": {"cpus": 1}})
        assert rented["code"] == "image_not_found"


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: {k: v for k, v in raw.items() if k != "arch"},  # a key missing
        lambda raw: {**raw, "owners": ["alice"]},  # owners of the wrong type
        lambda raw: {**raw, "owners": {"open": {"tags": ["x"]}}},  # a holding without its time
    ],
)
async def test_a_damaged_image_record_is_ignored_and_the_hub_serves(
    tmp_path: Path, tokens: Tokens, damage: Callable[[dict[str, Any]], Any]
) -> None:
    image = FakeImage.make(noise(10_000))
    async with hub(tmp_path) as url, as_tenant(url, SHARED) as open_:
        assert (await push(open_, image, ["old:1"]))[1]["type"] == "image_pushed"
    record = next((tmp_path / "images").glob("*.json"))
    record.write_bytes(orjson.dumps(damage(orjson.loads(record.read_bytes()))))
    async with hub(tmp_path) as url, as_tenant(url, SHARED) as open_:
        assert (await ask(open_, {"type": "list_images", "id": 1}))["images"] == []
        assert (await push(open_, image, ["old:1"], id_=2))[1]["type"] == "image_pushed", "pushed again"
