"""The hub's core bounds what one peer can hold, on a clock the test moves: a provider that
leaves a create or destroy unanswered is dropped (its rents fail, its capacity leaves the
market), one that grants an upload no credit has it aborted, a requestor holds a bounded
number of activities, and the deadlines kept are only those due. (Against a real hub, with
connections that never say hello: tests/hostile/test_hub_bounds.py.)"""

from __future__ import annotations

import math
from typing import Any

import pytest

import kiln
from kiln.hub.actions import Send
from kiln.hub.core import HEAP_FLOOR, HubCore
from kiln.hub.deadlines import Deadlines
from kiln.hub.flow import Route
from kiln.hub.peers import Peer
from kiln.protocol import frames
from kiln.protocol.codes import CLOSE_UNRESPONSIVE
from kiln.protocol.frames import FrameKind
from kiln.protocol.messages import MAX_REPORTED
from tests.hubcore import HubHarness


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


def test_compaction_rebuilds_the_stalls_from_the_live_streams() -> None:
    now = 0.0
    deadlines = Deadlines(credit_timeout=20, monotonic=lambda: now)
    provider = Peer(1, role="provider")
    waiting = Route(2, 1, 1, 1, upload=True)  # its provider has granted it nothing yet
    granted = Route(2, 2, 1, 2, upload=True)  # stalled once, then the provider granted credit
    done = Route(2, 3, 1, 3, upload=True)  # its sender ended it; the provider has not answered yet
    provider.receives = {1: waiting, 2: granted, 3: done}
    for route in provider.receives.values():
        deadlines.stall(route)
    granted.stalled = math.inf
    done.ended = True
    now = 10.0
    ended = [Route(2, n, 1, n, upload=True) for n in range(10, 10 + 2 * HEAP_FLOOR)]
    for route in ended:  # streams that stalled, then ended: nobody receives on them any more
        deadlines.stall(route)
        route.ended = True
    deadlines.compact([provider])
    assert not any(route.watched for route in ended), "what ended left the heap"
    assert (waiting.watched, granted.watched, done.watched) == (True, False, False)
    now = 19.5
    assert deadlines.starved(now) is None
    now = 20.5  # 20 s after the stall, not after the rebuild: the rebuild kept when it began
    assert deadlines.starved(now) is waiting
    assert deadlines.starved(now) is None and not waiting.watched
