"""The hub relays an exec's streams (1.2): stdin toward the provider, output toward the
requestor, one each way under one id, each within the credit its receiver granted; and it
sends a rent as root only to a provider whose operator allows it."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.protocol import frames
from kiln.protocol.frames import FrameKind
from tests.hubcore import HubHarness
from tests.unit.test_hub_core import harness


@pytest.fixture
def hub() -> HubHarness:
    h = harness()
    h.join("provider", "p1", peer=1, version="1.2")
    h.offer(1)
    h.join("requestor", "r1", peer=2, version="1.2")
    return h


def exec_(activity: str, rid: int = 20, **fields: Any) -> dict[str, Any]:
    return {"type": "exec", "id": rid, "activity": activity, "argv": ["cat"], **fields}


def test_an_execs_input_and_output_are_relayed_each_way_under_one_id(hub: HubHarness) -> None:
    activity = hub.rent(2, 10, 1)
    [(to, forwarded)] = hub.send(2, exec_(activity, stdin=True, stream=True, window=2))
    pid = forwarded["id"]
    assert (to, forwarded["stdin"], forwarded["stream"], forwarded["window"]) == (1, True, True, 2)
    # The provider's credit is for the input: it reaches the requestor under its own id.
    assert hub.send(1, {"type": "credit", "stream": pid, "chunks": 1}) == [
        (2, {"type": "credit", "stream": 20, "chunks": 1})
    ]
    assert hub.binary(2, frames.encode(FrameKind.DATA, 20, b"in")) == [(1, frames.encode(FrameKind.DATA, pid, b"in"))]
    # The output goes the other way within the exec's window, counted apart from the input.
    for data in (b"\x01out", b"\x02err"):
        assert hub.binary(1, frames.encode(FrameKind.DATA, pid, data)) == [(2, frames.encode(FrameKind.DATA, 20, data))]
    [(to, error), (to_requestor, abort)] = hub.binary(1, frames.encode(FrameKind.DATA, pid, b"\x01over"))
    assert (to, error["code"], to_requestor) == (1, "flow_control", 2)
    assert abort[:8] == frames.encode(FrameKind.ABORT, 20)
    # The input is still open: more of it needs more credit, the provider's.
    [(to, error), (to_provider, abort)] = hub.binary(2, frames.encode(FrameKind.DATA, 20, b"more"))
    assert (to, error["code"], error["re"], to_provider) == (2, "flow_control", 20, 1)
    assert abort[:8] == frames.encode(FrameKind.ABORT, pid)


def test_output_credit_goes_to_the_provider_and_the_reply_closes_both_ways(hub: HubHarness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, forwarded)] = hub.send(2, exec_(activity, stdin=True, stream=True, window=1))
    pid = forwarded["id"]
    hub.binary(1, frames.encode(FrameKind.DATA, pid, b"\x01a"))
    assert hub.send(2, {"type": "credit", "stream": 20, "chunks": 1}) == [
        (1, {"type": "credit", "stream": pid, "chunks": 1})
    ]
    assert hub.binary(1, frames.encode(FrameKind.END, pid)) == [(2, frames.encode(FrameKind.END, 20))]
    result = {
        "type": "exec_result",
        "re": pid,
        "exit_code": 0,
        "timed_out": False,
        "stdout": "",
        "stderr": "",
        "duration": 0.1,
    }
    [(to, reply)] = hub.send(1, result)
    assert (to, reply["re"]) == (2, 20)
    [(to, error)] = hub.binary(2, frames.encode(FrameKind.DATA, 20, b"late"))
    assert (to, error["code"]) == (2, "unknown_stream")
    assert not hub.core.peers[1].sends and not hub.core.peers[1].receives
    assert not hub.core.peers[2].sends and not hub.core.peers[2].receives


def test_an_output_window_is_capped_and_defaults(hub: HubHarness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, forwarded)] = hub.send(2, exec_(activity, stream=True))
    assert forwarded["window"] == 16 and "stdin" not in forwarded
    [(_, forwarded)] = hub.send(2, exec_(activity, 21, stream=True, window=1000))
    assert forwarded["window"] == 64


def test_an_exec_with_both_streams_counts_once_against_max_streams(hub: HubHarness) -> None:
    activity = hub.rent(2, 10, 1)
    for rid in range(100, 100 + hub.core.limits.max_streams):
        [(to, _)] = hub.send(2, exec_(activity, rid, stdin=True, stream=True, window=1))
        assert to == 1
    [(to, error)] = hub.send(2, exec_(activity, 99, stdin=True))
    assert (to, error["code"]) == (2, "too_many")
    [(to, _)] = hub.send(2, exec_(activity, 98))  # a plain exec holds no stream
    assert to == 1


def test_a_requestors_loss_aborts_its_execs_input(hub: HubHarness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, forwarded)] = hub.send(2, exec_(activity, stdin=True, stream=True))
    out = hub.leave(2)
    assert (1, frames.encode(FrameKind.ABORT, forwarded["id"], b"requestor disconnected")) in out


def test_streams_need_a_provider_that_speaks_1_2() -> None:
    hub = harness()
    hub.join("provider", "old", peer=1, version="1.1")
    hub.offer(1)
    hub.join("requestor", "r1", peer=2, version="1.2")
    activity = hub.rent(2, 10, 1)
    [(to, error)] = hub.send(2, exec_(activity, stream=True))
    assert (to, error["code"], error["re"]) == (2, "unsupported_version", 20)
    [(to, forwarded)] = hub.send(2, exec_(activity, 21))
    assert to == 1 and forwarded["type"] == "exec"


def test_a_rent_as_root_goes_only_to_a_provider_that_allows_it(hub: HubHarness) -> None:
    rent = {"type": "rent", "id": 30, "image": "img:1", "demand": {"cpus": 1, "memory": 2**28}, "user": "root"}
    [(to, error)] = hub.send(2, rent)
    assert (to, error["code"]) == (2, "no_match")
    assert "--allow-root" in error["message"]
    hub.join("provider", "p-root", peer=3, version="1.2")
    hub.offer(3, root=True)
    [(to, create)] = hub.send(2, rent)
    assert (to, create["type"], create["user"]) == (3, "create", "root")
    plain = {key: value for key, value in rent.items() if key != "user"}
    [(to, create)] = hub.send(2, {**plain, "id": 31})
    assert "user" not in create
