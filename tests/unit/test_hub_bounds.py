"""The hub bounds what one peer can hold: a provider that leaves a create or destroy
unanswered is dropped (its rents fail, its capacity leaves the market), a requestor holds a
bounded number of activities, and connections that never say hello cannot crowd out those
that do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

import kiln
from kiln.hub.actions import Send
from kiln.hub.core import HEAP_FLOOR, HubCore
from kiln.hub.io.server import MAX_UNWELCOMED, raise_open_file_limit
from kiln.protocol import frames
from kiln.protocol.codes import CLOSE_UNRESPONSIVE
from kiln.protocol.frames import FrameKind
from kiln.protocol.messages import MAX_REPORTED
from kiln.testing import LocalCluster
from kiln.testing.simulated import simulated_providers
from tests.hubcore import HubHarness

pytestmark = pytest.mark.timeout(120)

GiB = 2**30


def clocked(**options: Any) -> HubHarness:
    """A hub core on a clock the test moves (only messages come back from calls)."""
    return HubHarness(frames=False, **options)


def enter(hub: HubHarness, peer: int, role: str, name: str) -> None:
    """A peer joined as ``peer``; a provider offers 2 CPUs and 2 GiB."""
    hub.join(role, name, peer=peer)
    if role == "provider":
        hub.offer(peer)


RENT = {"type": "rent", "image": "img:1", "demand": {"cpus": 1, "memory": 2**28}}


def test_a_provider_that_leaves_a_create_unanswered_is_dropped() -> None:
    hub = clocked(create_timeout=30)
    enter(hub, 1, "provider", "stuck")
    enter(hub, 2, "requestor", "r")
    [(_, create)] = hub.send(2, {**RENT, "id": 5})
    assert create["type"] == "create"
    assert hub.expire(29) == [] and not hub.closed, "not yet"
    out = hub.expire(2)
    assert [(c.peer, c.code) for c in hub.closed] == [(1, CLOSE_UNRESPONSIVE)]
    [(to, error)] = [(peer, m) for peer, m in out if m.get("re") == 5]
    assert (to, error["code"]) == (2, "provider_lost")
    assert "create" in error["message"] and "30 s" in error["message"]
    assert len(hub.core.market) == 0 and not hub.core.activities, "its capacity left the market"


def test_a_provider_that_leaves_a_destroy_unanswered_is_dropped() -> None:
    hub = clocked(destroy_timeout=10)
    enter(hub, 1, "provider", "p")
    enter(hub, 2, "requestor", "r")
    [(_, create)] = hub.send(2, {**RENT, "id": 5})
    [(_, rented)] = hub.send(1, {"type": "done", "re": create["id"]})
    [(_, destroy)] = hub.send(2, {"type": "release", "id": 6, "activity": rented["activity"]})
    assert destroy["type"] == "destroy"
    out = hub.expire(11)
    assert [c.code for c in hub.closed] == [CLOSE_UNRESPONSIVE]
    assert (2, {"type": "done", "re": 6}) in out, "the container went with its provider"


def binaries(actions: list[Any]) -> list[tuple[int, frames.Frame]]:
    return [(a.peer, frames.decode(a.data, 2**20)) for a in actions if isinstance(a, Send) and a.binary]


def upload_on(hub: HubHarness) -> tuple[str, dict[str, Any]]:
    """Provider 1 runs an activity of requestor 2, which starts an upload: the upload as the provider got it."""
    enter(hub, 1, "provider", "p")
    enter(hub, 2, "requestor", "r")
    [(_, create)] = hub.send(2, {**RENT, "id": 5})
    [(_, rented)] = hub.send(1, {"type": "done", "re": create["id"]})
    activity = rented["activity"]
    [(to, upload)] = hub.send(2, {"type": "upload", "id": 6, "activity": activity, "path": "/golem/input/a", "size": 9})
    assert (to, upload["type"]) == (1, "upload")
    return activity, upload


def test_a_provider_that_grants_an_upload_no_credit_has_it_aborted() -> None:
    hub = clocked(credit_timeout=20, destroy_timeout=10)
    activity, upload = upload_on(hub)
    hub.now += 21
    actions = hub.core.expire()
    aborted = binaries(actions)
    assert [(to, f.kind, f.stream) for to, f in aborted] == [(1, FrameKind.ABORT, upload["id"])]
    assert b"no credit for 20 s" in bytes(aborted[0][1].payload)
    told = hub.take(actions)
    assert (1, {"type": "cancel", "target": upload["id"]}) in told, "its task is stopped, whatever it waits on"
    [(to, error)] = [(peer, m) for peer, m in told if m.get("re") == 6]
    assert (to, error["code"]) == (2, "transfer_failed") and "no credit for 20 s" in error["message"]
    # The provider's late answer goes to no one; the provider, and the activity, go on.
    assert hub.send(1, {"type": "error", "re": upload["id"], "code": "cancelled", "message": "cancelled"}) == []
    assert hub.expire(60) == [] and not hub.closed
    [(to, forwarded)] = hub.send(2, {"type": "exec", "id": 7, "activity": activity, "argv": ["true"]})
    assert (to, forwarded["type"]) == (1, "exec")


def test_a_provider_that_never_answers_an_aborted_upload_keeps_serving() -> None:
    hub = clocked(credit_timeout=20, destroy_timeout=10)
    upload_on(hub)
    enter(hub, 3, "requestor", "other")
    [(_, create)] = hub.send(3, {**RENT, "id": 1})
    [(_, rented)] = hub.send(1, {"type": "done", "re": create["id"]})
    hub.expire(21)
    hub.expire(600)
    assert not hub.closed, "one request starved is not a stuck provider: the other requestor's activity stays"
    assert rented["activity"] in hub.core.activities


def test_an_upload_whose_credit_flows_is_not_aborted() -> None:
    hub = clocked(credit_timeout=20)
    _, upload = upload_on(hub)
    for _ in range(5):  # every 15 s the provider grants a chunk and the requestor spends it
        hub.now += 15
        hub.send(1, {"type": "credit", "stream": upload["id"], "chunks": 1})
        hub.core.receive_binary(2, frames.encode(FrameKind.DATA, 6, b"x"))
        assert binaries(hub.core.expire()) == []
    hub.now += 21  # then none: the sender waits on the provider
    assert [f.kind for _, f in binaries(hub.core.expire())] == [FrameKind.ABORT]


def test_a_requestor_holds_a_bounded_number_of_activities() -> None:
    hub = clocked(max_activities=2)
    enter(hub, 1, "provider", "p")
    enter(hub, 2, "requestor", "r")
    for rid in (5, 6):
        [(to, _)] = hub.send(2, {**RENT, "id": rid, "demand": {"cpus": 0.5, "memory": 2**28}})
        assert to == 1
    [(to, error)] = hub.send(2, {**RENT, "id": 7, "demand": {"cpus": 0.5, "memory": 2**28}})
    assert (to, error["code"]) == (2, "too_many")


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(kiln.UsageError):
        HubCore(create_timeout=0)
    with pytest.raises(kiln.UsageError):
        HubCore(max_activities=0)
    with pytest.raises(kiln.UsageError):
        HubCore(credit_timeout=0)


@pytest.fixture
def hub_url(tmp_path: Path) -> Iterator[str]:
    with LocalCluster(tmp_path) as cluster:
        yield cluster.start_hub("--create-timeout", "2")


async def test_a_stuck_provider_does_not_hold_a_rent(hub_url: str) -> None:
    async with simulated_providers(hub_url, 1, stuck=True, prefix="stuck"), kiln.connect(hub_url) as requestor:
        started = time.monotonic()
        with pytest.raises(kiln.ProviderLost, match="unanswered"):
            await requestor.rent("kiln-busybox:latest")
        assert time.monotonic() - started < 10
        assert await requestor.market() == [], "its capacity left the market"
        async with simulated_providers(hub_url, 1, prefix="well"), requestor.rent("kiln-busybox:latest") as act:
            assert act.provider.startswith("well")


async def test_a_provider_sitting_on_an_upload_does_not_hold_it_forever(tmp_path: Path) -> None:
    with LocalCluster(tmp_path) as cluster:
        url = cluster.start_hub("--credit-timeout", "2")
        async with (
            simulated_providers(url, 1, hoard=True),
            kiln.connect(url) as requestor,
            requestor.rent("kiln-busybox:latest") as act,
        ):
            started = time.monotonic()
            with pytest.raises(kiln.TransferFailed, match="no credit for 2 s"):
                await act.send_bytes(b"x" * 10, "/golem/input/x")
            waited = time.monotonic() - started
            assert (await act.run(["true"])).exit_code == 0, "the activity goes on"
        assert 1.5 < waited < 10, waited
    assert "without credit: aborted (no credit for 2 s)" in (cluster.hub.output() if cluster.hub else "")


async def test_idle_connections_cannot_crowd_out_peers_that_say_hello(hub_url: str) -> None:
    raise_open_file_limit()
    idle: list[ClientConnection] = []
    opened = time.monotonic()
    try:
        for n in range(8):  # 2,000 connections that never say hello, 250 from each of 8 addresses
            local = (f"127.0.0.{n + 2}", 0)  # within the waiting connections one address may hold (256)
            idle += await asyncio.gather(*(connect(hub_url, open_timeout=30, local_addr=local) for _ in range(250)))
        started = time.monotonic()
        async with (
            simulated_providers(hub_url, 2),
            kiln.connect(hub_url) as requestor,
            requestor.rent("kiln-busybox:latest") as act,
        ):
            assert (await act.run(["true"])).exit_code == 0
        assert time.monotonic() - started < 10
        still_open = sum(1 for ws in idle if ws.close_code is None)
        assert still_open <= MAX_UNWELCOMED < len(idle), (still_open, "the oldest silent connections made room")
        assert time.monotonic() - opened < 10, "measured before the hello timeout could close any"
    finally:
        await asyncio.gather(*(ws.close() for ws in idle), return_exceptions=True)


def test_a_create_whose_image_moves_gets_more_time() -> None:
    hub = clocked(create_timeout=30)
    enter(hub, 1, "provider", "loading")
    enter(hub, 2, "requestor", "r")
    [(_, create)] = hub.send(2, {**RENT, "id": 5})
    pending = hub.core.peers[1].pending[create["id"]]
    hub.now += 25
    hub.core._progress(pending, hub.core.peers[1])  # a chunk of the image went out: 30 s afresh
    told = hub.expire(6)
    assert [m["type"] for _, m in told] == ["rent_progress"] and not hub.closed, "past 30 s, but the image moved"
    hub.expire(30)
    assert [c.code for c in hub.closed] == [CLOSE_UNRESPONSIVE]
    assert hub.core.deadlines.requests == 0, "nothing is kept for a provider that is gone"


def test_expiry_looks_only_at_what_is_due() -> None:
    hub = clocked(create_timeout=30)
    for peer in range(1, 2001):
        enter(hub, peer, "provider", f"p{peer}")
    enter(hub, 9999, "requestor", "r")
    hub.send(9999, {**RENT, "id": 5})
    assert hub.core.deadlines.requests == 1, "one create: one deadline, whatever the number of providers"
    assert hub.expire(10) == [] and hub.core.deadlines.requests == 1


def test_a_provider_that_comes_and_goes_leaves_no_deadlines_behind() -> None:
    hub = clocked()
    reported = [f"x{i:04}" for i in range(MAX_REPORTED)]
    for cycle in range(1, 41):  # each hello lists 4,096 activities nobody holds: 4,096 destroys, then it leaves
        hub.core.connect(cycle)
        told = hub.send(
            cycle, {"type": "hello", "version": "1.3", "role": "provider", "name": "p", "activities": reported}
        )
        assert len(told) == 1 + MAX_REPORTED
        hub.core.disconnect(cycle, "gone")
        hub.expire(0.5)
    assert hub.core.deadlines.requests <= 2 * HEAP_FLOOR, "swept, not kept for the destroy timeout"
    hub.core.connect(99)
    [(_, refused)] = hub.send(
        99, {"type": "hello", "version": "1.3", "role": "provider", "name": "q", "activities": [*reported, "one-more"]}
    )
    assert refused["code"] == "bad_message"
