"""The hub under fuzz: frames mutated from the protocol vectors, sent by many connections (as
requestors, as providers, and before any hello), while a legitimate job runs on a real
provider beside them. No connection may be closed with 1011, the hub may log no traceback,
and the job must finish right. Prints frames, connections, the hub's RSS and the job's time.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from tests.conftest import IMAGE, Cluster, peak_rss

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
FRAMES = 30_000
CONNECTIONS = 100
SEED = 7465


def seeds() -> list[str | bytes]:
    found: list[str | bytes] = []
    for path in sorted((ROOT / "protocol" / "v1" / "vectors").glob("*.json")):
        vector = json.loads(path.read_text())
        found.append(bytes.fromhex(vector["binary"]) if "binary" in vector else vector["frame"])
    return found


ODD_VALUES: list[Any] = [
    None, True, -1, 0, 2**31, 2**63, -(2**70), 1e308, 0.5, "", "x" * 5000, "\u202e\x00\x1b[2J", "/../..",
    [], [[[[[]]]]], {}, {"a": {"b": {"c": {}}}}, ["a"] * 2000, {"k" * 300: "v"},
]  # fmt: skip


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
        message = {"type": rng.choice(["hello", "rent", "exec", "offer", "create", "credit", "cancel"]), "id": 1}
    return json.dumps(message)


async def fuzzer(url: str, rng: random.Random, frames: int, closes: Counter[int], opened: list[int]) -> None:
    corpus = seeds()
    role = rng.choice(["requestor", "provider", None])
    sent = 0
    while sent < frames:
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
                await ws.send(json.dumps({"type": "hello", "version": "1.0", "role": role, "name": name}))
            while sent < frames:
                await ws.send(mutate(rng, rng.choice(corpus)))
                sent += 1
                if sent % 50 == 0:
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
            tg.create_task(fuzzer(cluster.url, random.Random(rng.random() + i), per_connection, closes, opened))
    fuzzed = time.perf_counter() - started
    results, job_seconds = legit.result()
    rss_after = peak_rss(cluster.hub.pid)
    with capsys.disabled():
        print(f"\n  fuzz: {FRAMES} frames over {opened[0]} connections in {fuzzed:.1f} s; closes {dict(closes)}; "
              f"hub peak RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB; "
              f"the job of 40 tasks beside it took {job_seconds:.1f} s")  # fmt: skip
    assert results == [n * n for n in range(40)]
    assert 1011 not in closes, closes
    log = cluster.hub.output()
    assert "Traceback" not in log, log[-5000:]
    async with kiln.connect(cluster.url) as requestor:
        assert [p.name for p in await requestor.market(labels={"pool": "legit"})] == [f"legit{cluster.suffix}"]
