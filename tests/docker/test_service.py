"""A service (kiln.Requestor.service) end to end: a hub process, three provider processes, real
containers running busybox httpd. Two replicas answer through ``svc.forward``; one replica's
provider is SIGKILLed; requests keep answering, and the replica comes back on the third provider.
And the requestor's own connection cut: the replicas start again in place once it is back."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

import kiln
from tests.conftest import IMAGE, Cluster
from tests.service.test_reconnect import Proxy

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

SMALL = kiln.Demand(cpus=0.5, memory="64MiB")
HTTPD = ["busybox", "httpd", "-f", "-p", "8080", "-h", "/golem/www"]


async def setup(act: kiln.Activity) -> None:
    """Each replica serves a page naming its provider: the answers say who answered."""
    await act.send_bytes(f"served by {act.provider}\n".encode(), "/golem/www/index.html")


async def get(host: str, port: int) -> str:
    """GET / through the forward: the page, or raises when no answer comes whole."""
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
            await writer.drain()
            answer = await reader.read()
        finally:
            writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1:2] == [b"200"], answer[:200]
    return body.decode()


async def test_a_service_keeps_answering_while_a_replicas_provider_is_killed(cluster: Cluster) -> None:
    names = [cluster.start_provider(name, cpus=1, memory="1GiB", wait=False) for name in ("p1", "p2", "p3")]
    await asyncio.to_thread(cluster.wait_for_providers, set(names))
    events: list[kiln.ServiceEvent] = []
    async with (
        kiln.connect(cluster.url) as requestor,
        await requestor.service(
            IMAGE,
            SMALL,
            command=HTTPD,
            ports=[8080],
            health=kiln.Http(8080, "/"),
            replicas=2,
            setup=setup,
            on_event=events.append,
        ) as svc,
        await svc.forward(8080) as fwd,
    ):
        first = {r.provider for r in svc.replicas}
        assert len(first) == 2 and all(r.state == "healthy" for r in svc.replicas)
        assert {await get(fwd.host, fwd.port) for _ in range(4)} == {f"served by {p}\n" for p in first}

        victim = svc.replicas[0]
        assert victim.provider is not None and victim.activity is not None
        [spare] = set(names) - first
        cluster.providers[victim.provider].popen.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        answers: list[tuple[float, str | None]] = []
        while not (svc.replicas[0].state == "healthy" and svc.replicas[0].provider == spare):
            assert time.monotonic() - killed < 60, svc.events
            try:
                answers.append((time.monotonic() - killed, await get(fwd.host, fwd.port)))
            except (OSError, AssertionError, TimeoutError) as e:
                answers.append((time.monotonic() - killed, None))
                print("no answer:", e)
            await asyncio.sleep(0.05)
        back = time.monotonic() - killed
        after = [await get(fwd.host, fwd.port) for _ in range(4)]

    failed = [at for at, body in answers if body is None]
    print(f"replica back on {spare} {back:.2f} s after the SIGKILL; {len(answers)} requests, {len(failed)} failed")
    assert len(answers) >= 3, "the replacement came before any request could test the gap"
    assert len(failed) <= 1, answers  # at most one cut in flight at the kill
    assert {body for _, body in answers if body is not None} <= {f"served by {p}\n" for p in first}
    assert set(after) == {f"served by {p}\n" for p in (first - {victim.provider}) | {spare}}
    mine = [(e.kind, e.provider) for e in events if e.replica == 0]
    assert ("replace", victim.provider) in mine
    assert mine[-3:] == [("start", spare), ("healthy", spare), ("stop", spare)]
    assert [e.kind for e in events if e.replica == 1][-1] == "stop"


async def test_a_requestor_cut_off_from_the_hub_restarts_its_replicas_in_place(cluster: Cluster) -> None:
    names = [cluster.start_provider(name, cpus=1, memory="1GiB", wait=False) for name in ("p1", "p2")]
    await asyncio.to_thread(cluster.wait_for_providers, set(names))
    events: list[kiln.ServiceEvent] = []
    async with (
        Proxy(cluster.url).serving() as proxy,
        kiln.connect(proxy.url) as requestor,
        await requestor.service(
            IMAGE, SMALL, command=HTTPD, health=kiln.Http(8080, "/"), replicas=2, setup=setup, on_event=events.append
        ) as svc,
        await svc.forward(8080) as fwd,
    ):
        before = [(r.activity, r.provider) for r in svc.replicas]
        seen = len(events)
        proxy.cut(1)
        cut = time.monotonic()
        while not all(r.state == "healthy" and r.restarts == 1 for r in svc.replicas):
            assert time.monotonic() - cut < 60, svc.events
            await asyncio.sleep(0.05)
        print(f"both replicas healthy again in place {time.monotonic() - cut:.2f} s after the cut")
        assert requestor.gone is None
        assert [(r.activity, r.provider) for r in svc.replicas] == before
        assert all(r.replacements == 0 for r in svc.replicas), svc.events
        assert {await get(fwd.host, fwd.port) for _ in range(4)} == {f"served by {p}\n" for _, p in before}
        since = events[seen:]
        assert {e.kind for e in since} == {"failure", "start", "healthy"}, since
        for replica in (0, 1):
            kinds = [(e.kind, e.reason.split(":")[0]) for e in since if e.replica == replica]
            assert kinds == [
                ("failure", "interrupted, restarted in place"),
                ("start", "interrupted, restarted in place"),
                ("healthy", ""),
            ], since
