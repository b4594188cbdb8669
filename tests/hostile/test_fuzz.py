"""The hub under fuzz: frames mutated from the protocol vectors, sent by many connections (as
requestors, as providers, and before any hello), while a legitimate job runs on a real
provider beside them. Requestors also send well-formed requests to the image store now and then
(pushes with their data, listings, removals, tags, shares, rents by digest), so that the store
acts on them while the fuzz goes on. No connection may be closed with 1011, the hub may log no
traceback, and the job must finish right. Prints frames, connections, the hub's RSS, the job's
time and how many frames of each kind were sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

import kiln
from kiln.protocol import frames
from kiln.protocol.frames import FrameKind
from kiln.protocol.messages import MESSAGE_TYPES
from tests.conftest import IMAGE, Cluster, peak_rss

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 30_000
CONNECTIONS = 100
SEED = 7465
KINDS = [
    *("hello", "rent", "exec", "offer", "create", "credit", "cancel", "activities", "market"),
    *("push_image", "list_images", "remove_image", "share_image", "want", "image_list", "image_pushed"),
]
"""The types a mutation may give a bare message (the image store's among them)."""
STORE_SHARE = 0.1
"""The share of a requestor's frames that are well-formed requests to the image store."""


def seeds() -> list[str | bytes]:
    found: list[str | bytes] = []
    for path in sorted((ROOT / "protocol" / "v1" / "vectors").glob("*.json")):
        vector = json.loads(path.read_text())
        found.append(bytes.fromhex(vector["binary"]) if "binary" in vector else vector["frame"])
    return found


ODD_VALUES: list[Any] = [
    *(None, True, -1, 0, 2**31, 2**63, -(2**70), 1e308, 0.5),
    *("", "x" * 5000, "\u202e\x00\x1b[2J", "/../.."),
    *([], [[[[[]]]]], {}, {"a": {"b": {"c": {}}}}, ["a"] * 2000, {"k" * 300: "v"}),
]


def mutate(rng: random.Random, seed: str | bytes) -> str | bytes:
    """One hostile frame grown from a valid or invalid seed."""
    if isinstance(seed, bytes):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 4)):
            choice = rng.random()
            if choice < 0.4 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif choice < 0.7:
                data[4:8] = rng.randrange(2**32).to_bytes(4, "big")
            else:
                data += rng.randbytes(rng.choice([1, 100, 300_000]))
        return bytes(data)
    try:
        message = json.loads(seed)
    except json.JSONDecodeError:
        message = None
    choice = rng.random()
    if choice < 0.2 or not isinstance(message, dict):
        text = bytearray(seed.encode())
        for _ in range(rng.randint(1, 6)):
            if text:
                text[rng.randrange(len(text))] = rng.randrange(32, 127)
        mangled = text.decode(errors="replace")
        return mangled[: rng.randint(0, len(mangled))] if rng.random() < 0.3 else mangled
    if choice < 0.8 and message:
        key = rng.choice(list(message))
        message[key] = rng.choice(ODD_VALUES)
    elif choice < 0.9:
        message[rng.choice(["extra", "pad", "id", "re", "stream", "type"])] = rng.choice(ODD_VALUES)
    else:
        message = {"type": rng.choice(KINDS), "id": 1}
    return json.dumps(message)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def store_requests(rng: random.Random, request: int, pushed: list[str]) -> list[str | bytes]:
    """One well-formed request to the image store (a push with its data, a listing, a removal, a
    share or a rent of a stored digest) under id ``request``; ``pushed`` keeps the digests pushed."""
    choice = rng.random()
    if choice < 0.4 or not pushed:
        layers = [rng.randbytes(rng.choice([1, 1000, 70_000])) for _ in range(rng.randint(0, 2))]
        if rng.random() < 0.5 and pushed:
            layers.append(b"fuzz-shared-layer")  # a blob other pushes hold too
        rootfs = {"type": "layers", "diff_ids": [sha(b) for b in layers]}
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": rootfs}).encode()
        manifest = {
            "config": {"digest": sha(config), "size": len(config)},
            "layers": [{"digest": sha(b), "size": len(b)} for b in layers],
        }
        tags = [f"fuzz{rng.randrange(5)}:{rng.randrange(3)}" for _ in range(rng.randint(0, 2))]
        pushed.append(sha(config))
        data = b"".join([config, *layers])
        if rng.random() < 0.2:
            data = data[: rng.randrange(len(data) + 1)] + rng.randbytes(rng.randrange(1, 100))  # short or wrong
        body = [frames.encode(FrameKind.DATA, request, data[i : i + 65536]) for i in range(0, len(data), 65536)]
        end = frames.encode(rng.choice([FrameKind.END, FrameKind.END, FrameKind.ABORT]), request, b"")
        push = json.dumps({"type": "push_image", "id": request, "manifest": manifest, "tags": tags})
        return [push, *body, end]
    image = rng.choice([*pushed, "fuzz0:0", "fuzz1:1"])
    if choice < 0.55:
        return [json.dumps({"type": "list_images", "id": request})]
    if choice < 0.7:
        return [json.dumps({"type": "remove_image", "id": request, "image": image})]
    if choice < 0.85:
        share = {
            "type": "share_image",
            "id": request,
            "image": image,
            "to": rng.sample(["#open", "nobody", "#1"], 1),
            "public": rng.random() < 0.5,
            "revoke": rng.random() < 0.3,
        }
        return [json.dumps(share)]
    return [json.dumps({"type": "rent", "id": request, "image": image, "demand": {"cpus": 64, "memory": 2**40}})]


def kind_of(frame: str | bytes) -> str:
    if isinstance(frame, bytes):
        return "binary"
    try:
        message = json.loads(frame)
    except json.JSONDecodeError:
        return "not json"
    kind = message.get("type") if isinstance(message, dict) else None
    return kind if isinstance(kind, str) and kind in MESSAGE_TYPES else "no known type"


async def fuzzer(
    url: str, rng: random.Random, count: int, closes: Counter[int], opened: list[int], kinds: Counter[str]
) -> None:
    corpus = seeds()
    role = rng.choice(["requestor", "provider", None])
    pushed: list[str] = []
    sent = 0
    while sent < count:
        try:
            # From addresses of their own, many: failed hellos from one address soon have the hub refuse
            # every hello from there unread (kiln.hub.gate), which would spare the hub most of the fuzz.
            local = (f"127.0.{rng.randint(1, 254)}.{rng.randint(1, 254)}", 0)
            ws = await connect(url, max_size=None, open_timeout=10, local_addr=local)
        except (OSError, InvalidHandshake, TimeoutError):
            await asyncio.sleep(0.05)
            continue
        opened[0] += 1
        drain = asyncio.create_task(_drain(ws))
        try:
            if role is not None:
                name = f"fuzz-{rng.randrange(10**9)}"
                version = f"1.{rng.randint(0, 4)}"
                await ws.send(json.dumps({"type": "hello", "version": version, "role": role, "name": name}))
            while sent < count:
                if role == "requestor" and rng.random() < STORE_SHARE:
                    batch = store_requests(rng, 1000 + sent, pushed)
                else:
                    batch = [mutate(rng, rng.choice(corpus))]
                for i, frame in enumerate(batch):
                    await ws.send(frame)
                    kinds[kind_of(frame)] += 1
                    if i == 0 and len(batch) > 1:
                        await asyncio.sleep(0.02)  # mostly: the hub's want and credit come before the data
                sent += len(batch)
                if sent % 50 < len(batch):
                    await asyncio.sleep(0)
        except ConnectionClosed:
            pass
        finally:
            with contextlib.suppress(ConnectionClosed):
                await ws.close()
            await drain
            if ws.close_code is not None:
                closes[ws.close_code] += 1


async def _drain(ws: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


async def test_the_hub_answers_fuzz_without_1011_while_a_job_runs(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    await asyncio.to_thread(cluster.start_provider, "legit", labels={"pool": "legit"})
    assert cluster.hub is not None
    rss_before = peak_rss(cluster.hub.pid)
    rng = random.Random(SEED)
    closes: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    opened = [0]

    async def square(act: kiln.Activity, n: int) -> int:
        result = await act.run(["sh", "-c", f"echo $(({n} * {n}))"])
        return int(result.stdout)

    async def job() -> tuple[list[int], float]:
        started = time.perf_counter()
        async with kiln.connect(cluster.url, name="legit") as requestor:
            demand = kiln.Demand(cpus=0.5, memory="64MiB", labels={"pool": "legit"})
            results = await requestor.map(square, range(40), image=IMAGE, demand=demand, max_providers=1)
        return results, time.perf_counter() - started

    started = time.perf_counter()
    per_connection = FRAMES // CONNECTIONS
    async with asyncio.TaskGroup() as tg:
        legit = tg.create_task(job())
        for i in range(CONNECTIONS):
            tg.create_task(fuzzer(cluster.url, random.Random(rng.random() + i), per_connection, closes, opened, kinds))
    fuzzed = time.perf_counter() - started
    results, job_seconds = legit.result()
    rss_after = peak_rss(cluster.hub.pid)
    with capsys.disabled():
        print(
            f"\n  fuzz: {FRAMES} frames over {opened[0]} connections in {fuzzed:.1f} s; closes {dict(closes)}; "
            f"hub peak RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB; "
            f"the job of 40 tasks beside it took {job_seconds:.1f} s"
        )
        print(f"  frames by kind: {dict(kinds.most_common())}")
    assert results == [n * n for n in range(40)]
    store_kinds = ("push_image", "list_images", "remove_image", "share_image", "want", "image_list", "binary")
    assert all(kinds[kind] >= 50 for kind in store_kinds), kinds
    assert 1011 not in closes, closes
    log = cluster.hub.output()
    assert "Traceback" not in log, log[-5000:]
    async with kiln.connect(cluster.url) as requestor:
        assert [p.name for p in await requestor.market(labels={"pool": "legit"})] == [f"legit{cluster.suffix}"]
