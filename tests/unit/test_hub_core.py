"""The hub's state machine, driven with literal messages: no sockets, no Docker."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from kiln.hub.actions import Close, Log, Send
from kiln.hub.core import CLOSE_HANDSHAKE, CLOSE_NAME_TAKEN, CLOSE_UNSUPPORTED_VERSION, HubCore
from kiln.protocol import frames
from kiln.protocol.frames import FrameKind
from kiln.protocol.messages import PROTOCOL_VERSION

GiB = 2**30
MiB = 2**20


class Harness:
    def __init__(self) -> None:
        ids = itertools.count(1)
        self.core = HubCore(new_activity_id=lambda: f"act{next(ids)}")
        self.closed: list[Close] = []

    def join(self, peer: int, role: str, name: str, version: str = "1.0") -> None:
        self.core.connect(peer)
        out = self.text(peer, {"type": "hello", "version": version, "role": role, "name": name})
        assert out[0][1]["type"] == "welcome", out

    def text(self, peer: int, message: dict[str, Any] | bytes) -> list[tuple[int, Any]]:
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        return self._decode(self.core.receive_text(peer, data))

    def binary(self, peer: int, data: bytes) -> list[tuple[int, Any]]:
        return self._decode(self.core.receive_binary(peer, data))

    def leave(self, peer: int) -> list[tuple[int, Any]]:
        return self._decode(self.core.disconnect(peer, "test"))

    def _decode(self, actions: list[Any]) -> list[tuple[int, Any]]:
        out: list[tuple[int, Any]] = []
        for action in actions:
            if isinstance(action, Send):
                out.append((action.peer, action.data if action.binary else json.loads(action.data)))
            elif isinstance(action, Close):
                self.closed.append(action)
        return out

    def offer(
        self, peer: int, cpus: float = 2, memory: int = 2 * GiB, images: list[str] | None = None, **more: Any
    ) -> None:
        resources = {"cpus": cpus, "memory": memory, "storage": 2**40}
        out = self.text(peer, {"type": "offer", "id": 1, "resources": resources,
                               "arch": "amd64", "images": images or [], **more})  # fmt: skip
        assert out == [(peer, {"type": "done", "re": 1})]

    def rent(self, requestor: int, rid: int, provider: int, cpus: float = 1, memory: int = 256 * MiB) -> str:
        out = self.text(requestor, {"type": "rent", "id": rid, "image": "img:1",
                                    "demand": {"cpus": cpus, "memory": memory}})  # fmt: skip
        [(to, create)] = out
        assert to == provider and create["type"] == "create"
        [(back, rented)] = self.text(provider, {"type": "done", "re": create["id"]})
        assert back == requestor and rented["type"] == "rented" and rented["re"] == rid
        return str(rented["activity"])


@pytest.fixture
def hub() -> Harness:
    h = Harness()
    h.join(1, "provider", "p1")
    h.offer(1)
    h.join(2, "requestor", "r1")
    return h


def test_first_message_must_be_hello() -> None:
    h = Harness()
    h.core.connect(5)
    [(_, error)] = h.text(5, {"type": "market", "id": 1})
    assert error["code"] == "out_of_order"
    assert h.closed[0].code == CLOSE_HANDSHAKE


def test_wrong_major_version_is_refused_with_a_close() -> None:
    h = Harness()
    h.core.connect(5)
    [(_, error)] = h.text(5, {"type": "hello", "version": "2.0", "role": "requestor", "name": "x"})
    assert error["code"] == "unsupported_version"
    assert PROTOCOL_VERSION in error["message"]
    assert h.closed[0].code == CLOSE_UNSUPPORTED_VERSION


def test_later_minor_version_is_welcomed_at_ours() -> None:
    h = Harness()
    h.core.connect(5)
    [(_, welcome)] = h.text(5, {"type": "hello", "version": "1.9", "role": "requestor", "name": "x"})
    assert welcome["type"] == "welcome"
    assert welcome["version"] == PROTOCOL_VERSION


def test_an_earlier_minor_version_is_welcomed_at_its_own() -> None:
    h = Harness()
    h.core.connect(5)
    [(_, welcome)] = h.text(5, {"type": "hello", "version": "1.0", "role": "requestor", "name": "x"})
    assert welcome["version"] == "1.0"


def test_token_is_checked() -> None:
    h = Harness()
    h.core = HubCore(token="s3cret")
    h.core.connect(5)
    [(_, error)] = h.text(5, {"type": "hello", "version": "1.0", "role": "requestor", "name": "x", "token": "no"})
    assert error["code"] == "unauthorized"


def test_provider_names_are_unique(hub: Harness) -> None:
    hub.core.connect(9)
    [(_, error)] = hub.text(9, {"type": "hello", "version": "1.0", "role": "provider", "name": "p1"})
    assert error["code"] == "name_taken"
    assert hub.closed[-1].code == CLOSE_NAME_TAKEN


def test_roles_are_enforced(hub: Harness) -> None:
    [(_, error)] = hub.text(2, {"type": "create", "id": 3, "activity": "a", "image": "i",
                                "resources": {"cpus": 1, "memory": 1}})  # fmt: skip
    assert (error["code"], error["re"]) == ("out_of_order", 3)
    [(_, error)] = hub.text(1, {"type": "rent", "id": 4, "image": "i", "demand": {}})
    assert error["code"] == "out_of_order"


@pytest.mark.parametrize(
    ("frame", "code"),
    [(b"{nope", "bad_json"), (b'{"type":"warp","id":3}', "unknown_type"),
     (b'{"type":"market","id":"3"}', "bad_message"),
     (b'{"type":"exec","id":3,"activity":"a","argv":["ls"],"workdir":"/a/../b"}', "bad_path")],
)  # fmt: skip
def test_bad_messages_get_errors_and_the_session_goes_on(hub: Harness, frame: bytes, code: str) -> None:
    [(peer, error)] = hub.text(2, frame)
    assert (peer, error["type"], error["code"]) == (2, "error", code)
    [(_, info)] = hub.text(2, {"type": "market", "id": 50})
    assert info["type"] == "market_info"


def test_oversized_message_is_refused(hub: Harness) -> None:
    [(_, error)] = hub.text(2, b'{"type":"market","id":1,"pad":"' + b"x" * (2 * MiB) + b'"}')
    assert error["code"] == "message_too_large"


def test_rent_reserves_capacity_and_release_frees_it(hub: Harness) -> None:
    a1 = hub.rent(2, 10, 1, cpus=1, memory=1 * GiB)
    a2 = hub.rent(2, 11, 1, cpus=1, memory=1 * GiB)
    assert a1 != a2
    [(_, error)] = hub.text(2, {"type": "rent", "id": 12, "image": "img:1", "demand": {"cpus": 1}})
    assert error["code"] == "no_match"
    assert "busy" in error["message"]
    [(_, destroy)] = hub.text(2, {"type": "release", "id": 13, "activity": a1})
    assert destroy["type"] == "destroy"
    [(_, done)] = hub.text(1, {"type": "done", "re": destroy["id"]})
    assert done == {"type": "done", "re": 13}
    hub.rent(2, 14, 1, cpus=1, memory=1 * GiB)


def test_no_match_names_the_constraint(hub: Harness) -> None:
    [(_, error)] = hub.text(2, {"type": "rent", "id": 3, "image": "img:1", "demand": {"memory": 64 * GiB}})
    assert error["code"] == "no_match"
    assert "64GiB of memory" in error["message"]
    [(_, error)] = hub.text(2, {"type": "rent", "id": 4, "image": "img:1", "demand": {"labels": {"gpu": "yes"}}})
    assert "gpu=yes" in error["message"]


def test_provider_holding_the_image_is_preferred(hub: Harness) -> None:
    hub.join(3, "provider", "p2")
    hub.offer(3, images=["img:1"])
    [(to, _)] = hub.text(2, {"type": "rent", "id": 3, "image": "img:1", "demand": {}})
    assert to == 3


def test_create_failure_releases_the_reservation_and_names_the_provider(hub: Harness) -> None:
    [(_, create)] = hub.text(2, {"type": "rent", "id": 3, "image": "nope:1", "demand": {"cpus": 2}})
    [(_, error)] = hub.text(1, {"type": "error", "re": create["id"], "code": "image_not_found",
                                "message": "no image nope:1"})  # fmt: skip
    assert (error["re"], error["code"], error["provider"]) == (3, "image_not_found", "p1")
    hub.rent(2, 4, 1, cpus=2)


def test_an_image_neither_provider_nor_store_holds_says_the_requestor_can_push_it(hub: Harness) -> None:
    [(_, create)] = hub.text(2, {"type": "rent", "id": 3, "image": "mine:1", "demand": {}})
    told = "provider 'p1' does not hold the image 'mine:1' (started with --pull it would pull it)"
    [(_, error)] = hub.text(1, {"type": "error", "re": create["id"], "code": "image_not_found", "message": told})
    assert error["code"] == "image_not_found"
    assert error["message"] == (
        f"{told}; the hub's image store does not hold 'mine:1' either: push it there (kiln image push mine:1, "
        "or push_image / pushImage in code), then rent it again"
    )
    [(_, create)] = hub.text(2, {"type": "rent", "id": 4, "image": "mine:1", "demand": {}})
    [(_, error)] = hub.text(1, {"type": "error", "re": create["id"], "code": "container_failed", "message": "no"})
    assert error["message"] == "no", "only an image not found gets the hint"
    long = "x" * 4096
    [(_, create)] = hub.text(2, {"type": "rent", "id": 5, "image": "mine:1", "demand": {}})
    [(_, error)] = hub.text(1, {"type": "error", "re": create["id"], "code": "image_not_found", "message": long})
    assert len(error["message"]) <= 4096 and error["message"].endswith("then rent it again")


def rent_in(hub: Harness, requestor: int, rid: int, group: str) -> tuple[int, dict[str, Any]]:
    [(to, sent)] = hub.text(requestor, {"type": "rent", "id": rid, "image": "img:1", "demand": {"cpus": 0.5},
                                        "group": group})  # fmt: skip
    return to, sent


def test_a_group_is_kept_on_distinct_providers(hub: Harness) -> None:
    hub.join(3, "provider", "p2")
    hub.offer(3)
    first, create = rent_in(hub, 2, 10, "job-a")
    second, _ = rent_in(hub, 2, 11, "job-a")
    assert {first, second} == {1, 3}, "while the first is still being created"
    to, refusal = rent_in(hub, 2, 12, "job-a")
    assert (to, refusal["code"]) == (2, "no_match") and "in its group" in refusal["message"]
    other, _ = rent_in(hub, 2, 13, "job-b")  # another group may share a provider
    assert other in (1, 3)
    hub.join(4, "requestor", "r2")
    elsewhere, _ = rent_in(hub, 4, 1, "job-a")  # a group is one requestor's
    assert elsewhere in (1, 3)
    # The first activity fails to start: its provider is free for the group again.
    hub.text(first, {"type": "error", "re": create["id"], "code": "container_failed", "message": "no"})
    again, _ = rent_in(hub, 2, 14, "job-a")
    assert again == first


def test_a_released_or_lost_activity_frees_its_provider_for_the_group(hub: Harness) -> None:
    hub.join(3, "provider", "p2")
    hub.offer(3)
    to, create = rent_in(hub, 2, 10, "g")
    [(_, rented)] = hub.text(to, {"type": "done", "re": create["id"]})
    other, _ = rent_in(hub, 2, 11, "g")
    [(_, destroy)] = hub.text(2, {"type": "release", "id": 12, "activity": rented["activity"]})
    [(_, refusal)] = hub.text(2, {"type": "rent", "id": 13, "image": "img:1", "demand": {"cpus": 0.5}, "group": "g"})
    assert refusal["code"] == "no_match", "not before its container is gone"
    hub.text(to, {"type": "done", "re": destroy["id"]})
    assert rent_in(hub, 2, 14, "g")[0] == to
    hub.join(5, "provider", "p3")
    hub.offer(5)
    assert rent_in(hub, 2, 15, "g")[0] == 5
    hub.leave(5)  # its activity is lost with it; the group holds the other two still
    [(_, refusal)] = hub.text(2, {"type": "rent", "id": 16, "image": "img:1", "demand": {"cpus": 0.5}, "group": "g"})
    assert refusal["code"] == "no_match"
    hub.leave(other)
    hub.join(6, "provider", "p2")  # back, under a new connection: free for the group
    hub.offer(6)
    assert rent_in(hub, 2, 17, "g")[0] == 6


def test_the_least_loaded_provider_is_chosen(hub: Harness) -> None:
    hub.join(3, "provider", "p2")
    hub.offer(3)
    first, _ = rent_in(hub, 2, 10, "a")
    second, _ = rent_in(hub, 2, 11, "b")
    third, _ = rent_in(hub, 2, 12, "c")
    assert first != second and third in (1, 3)


def test_market_filters_and_a_limit_keep_a_listing_small(hub: Harness) -> None:
    hub.rent(2, 10, 1, cpus=2)
    for peer, name, images, labels in ((3, "p2", ["img:1"], {"zone": "eu"}), (4, "p3", [], {"zone": "us"})):
        hub.join(peer, "provider", name)
        resources = {"cpus": 4, "memory": 4 * GiB, "storage": 2**40}
        hub.text(peer, {"type": "offer", "id": 1, "resources": resources, "arch": "amd64",
                        "images": images, "labels": labels})  # fmt: skip

    def names(**query: Any) -> tuple[list[str], int]:
        [(_, info)] = hub.text(2, {"type": "market", "id": 99, **query})
        return [p["name"] for p in info["providers"]], info["matched"]

    assert names() == (["p1", "p2", "p3"], 3)
    assert names(limit=2) == (["p1", "p2"], 3)
    assert names(image="img:1") == (["p2"], 1)
    assert names(labels={"zone": "us"}) == (["p3"], 1)
    assert names(free={"cpus": 1, "memory": GiB}) == (["p2", "p3"], 2), "p1 has no CPU left"
    assert names(image="img:1", labels={"zone": "us"}) == ([], 0)
    [(_, error)] = hub.text(2, {"type": "market", "id": 98, "limit": 5000})
    assert error["code"] == "bad_message"


def test_requestors_cannot_touch_each_others_activities(hub: Harness) -> None:
    hub.join(3, "requestor", "r2")
    activity = hub.rent(2, 10, 1)
    for message in (
        {"type": "exec", "id": 5, "activity": activity, "argv": ["true"]},
        {"type": "release", "id": 6, "activity": activity},
        {"type": "download", "id": 7, "activity": activity, "path": "/etc", "window": 4},
    ):
        [(peer, error)] = hub.text(3, message)
        assert (peer, error["code"]) == (3, "unknown_activity")


def test_providers_cannot_answer_for_others(hub: Harness) -> None:
    hub.join(3, "provider", "p2")
    hub.offer(3, cpus=1)
    activity = hub.rent(2, 10, 1)
    [(_, exec_)] = hub.text(2, {"type": "exec", "id": 11, "activity": activity, "argv": ["true"]})
    forged = {"type": "exec_result", "re": exec_["id"], "exit_code": 0, "timed_out": False, "stdout": "", "stderr": "",
              "duration": 0}  # fmt: skip
    [(peer, error)] = hub.text(3, forged)
    assert (peer, error["code"]) == (3, "out_of_order")
    [(peer, result)] = hub.text(1, forged)
    assert (peer, result["re"]) == (2, 11)


def test_duplicate_request_ids_are_refused(hub: Harness) -> None:
    activity = hub.rent(2, 10, 1)
    hub.text(2, {"type": "exec", "id": 11, "activity": activity, "argv": ["sleep", "5"]})
    [(_, error)] = hub.text(2, {"type": "exec", "id": 11, "activity": activity, "argv": ["true"]})
    assert error["code"] == "duplicate_id"


def test_upload_is_relayed_within_credit(hub: Harness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, upload)] = hub.text(2, {"type": "upload", "id": 20, "activity": activity, "path": "/in/a", "size": 4})
    pid = upload["id"]
    [(to_sender, error), (to_receiver, abort)] = hub.binary(2, frames.encode(FrameKind.DATA, 20, b"ab"))
    assert (to_sender, error["code"], error["re"]) == (2, "flow_control", 20)
    assert (to_receiver, abort[:8]) == (1, frames.encode(FrameKind.ABORT, pid))


def test_upload_stream_ids_are_translated(hub: Harness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, upload)] = hub.text(2, {"type": "upload", "id": 20, "activity": activity, "path": "/in/a", "size": 4})
    pid = upload["id"]
    assert hub.text(1, {"type": "credit", "stream": pid, "chunks": 2}) == [(2, {"type": "credit", "stream": 20,
                                                                              "chunks": 2})]  # fmt: skip
    [(to, data)] = hub.binary(2, frames.encode(FrameKind.DATA, 20, b"ab"))
    assert to == 1 and data == frames.encode(FrameKind.DATA, pid, b"ab")
    [(to, end)] = hub.binary(2, frames.encode(FrameKind.END, 20))
    assert end == frames.encode(FrameKind.END, pid)
    [(_, done)] = hub.text(1, {"type": "done", "re": pid, "bytes": 4})
    assert done == {"type": "done", "re": 20, "bytes": 4}
    [(_, error)] = hub.binary(2, frames.encode(FrameKind.DATA, 20, b"late"))
    assert error["code"] == "unknown_stream"


def test_download_is_relayed_within_the_requestors_window(hub: Harness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, download)] = hub.text(2, {"type": "download", "id": 30, "activity": activity, "path": "/o", "window": 1})
    pid = download["id"]
    [(_, info)] = hub.text(1, {"type": "download_info", "re": pid, "kind": "file", "size": 3})
    assert info["re"] == 30
    [(to, _)] = hub.binary(1, frames.encode(FrameKind.DATA, pid, b"abc"))
    assert to == 2
    [(to, error), (to_receiver, abort)] = hub.binary(1, frames.encode(FrameKind.DATA, pid, b"more"))
    assert (to, error["code"]) == (1, "flow_control")
    assert (to_receiver, abort[:8]) == (2, frames.encode(FrameKind.ABORT, 30))


def test_provider_loss_is_reported_to_everyone_it_affects(hub: Harness) -> None:
    hub.join(3, "requestor", "r2")
    a1 = hub.rent(2, 10, 1)
    a2 = hub.rent(3, 10, 1)
    hub.text(2, {"type": "exec", "id": 11, "activity": a1, "argv": ["sleep", "100"]})
    out = hub.leave(1)
    by_peer = {(peer, m["type"], m.get("re"), m.get("activity")) for peer, m in out}
    assert (2, "error", 11, None) in by_peer
    assert (2, "activity_lost", None, a1) in by_peer
    assert (3, "activity_lost", None, a2) in by_peer
    assert not hub.core.activities
    [(_, info)] = hub.text(2, {"type": "market", "id": 12})
    assert info["providers"] == []


def test_requestor_loss_destroys_its_activities(hub: Harness) -> None:
    activity = hub.rent(2, 10, 1)
    [(to, destroy)] = hub.leave(2)
    assert (to, destroy["type"], destroy["activity"]) == (1, "destroy", activity)
    assert hub.text(1, {"type": "done", "re": destroy["id"]}) == []
    assert not hub.core.activities
    hub.join(3, "requestor", "r2")
    [(_, info)] = hub.text(3, {"type": "market", "id": 1})
    [seller] = info["providers"]
    assert (seller["free"], seller["activities"]) == (seller["offered"], 0)


def test_requestor_gone_while_its_container_is_created(hub: Harness) -> None:
    [(_, create)] = hub.text(2, {"type": "rent", "id": 3, "image": "img:1", "demand": {}})
    assert hub.leave(2) == []
    [(_, destroy)] = hub.text(1, {"type": "done", "re": create["id"]})
    assert destroy["type"] == "destroy"


def test_rent_can_exclude_providers(hub: Harness) -> None:
    hub.join(3, "provider", "p2")
    hub.offer(3, images=["img:1"])
    [(to, _)] = hub.text(2, {"type": "rent", "id": 3, "image": "img:1", "demand": {}, "exclude": ["p2"]})
    assert to == 1
    [(_, error)] = hub.text(2, {"type": "rent", "id": 4, "image": "img:1", "demand": {}, "exclude": ["p1", "p2"]})
    assert error["code"] == "no_match"
    assert "excluded" in error["message"]


def test_a_cancelled_rent_destroys_the_container_once_it_exists(hub: Harness) -> None:
    [(_, create)] = hub.text(2, {"type": "rent", "id": 3, "image": "img:1", "demand": {"cpus": 2}})
    assert hub.text(2, {"type": "cancel", "target": 3}) == []
    [(to, destroy)] = hub.text(1, {"type": "done", "re": create["id"]})
    assert (to, destroy["type"]) == (1, "destroy")
    # The rent is answered once the container is gone, so its capacity is free by then.
    [(to, error)] = hub.text(1, {"type": "done", "re": destroy["id"]})
    assert (to, error["re"], error["code"]) == (2, 3, "cancelled")
    hub.rent(2, 4, 1, cpus=2)


def test_release_reports_the_cpu_time_the_provider_measured(hub: Harness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, destroy)] = hub.text(2, {"type": "release", "id": 11, "activity": activity})
    [(_, done)] = hub.text(1, {"type": "done", "re": destroy["id"], "cpu_seconds": 1.25})
    assert done == {"type": "done", "re": 11, "cpu_seconds": 1.25}


def test_a_release_cannot_be_cancelled_and_a_failed_destroy_keeps_the_capacity(hub: Harness) -> None:
    activity = hub.rent(2, 10, 1, cpus=2)
    [(_, destroy)] = hub.text(2, {"type": "release", "id": 11, "activity": activity})
    assert hub.text(2, {"type": "cancel", "target": 11}) == [], "not forwarded: a release always completes"
    [(to, error)] = hub.text(1, {"type": "error", "re": destroy["id"], "code": "container_failed",
                                 "message": "docker said no"})  # fmt: skip
    assert (to, error["re"], error["code"]) == (2, 11, "container_failed")
    [(_, refused)] = hub.text(2, {"type": "rent", "id": 12, "image": "img:1", "demand": {"cpus": 1}})
    assert refused["code"] == "no_match", "the container may still run: its CPUs are not sold again"


def test_stream_errors_to_a_provider_name_no_request(hub: Harness) -> None:
    [(to, error)] = hub.binary(1, frames.encode(FrameKind.DATA, 1, b"x"))
    assert (to, error["code"]) == (1, "unknown_stream")
    assert "re" not in error


def test_frames_of_unknown_peers_are_ignored_and_binary_before_hello_is_refused() -> None:
    h = Harness()
    assert h.text(7, {"type": "market", "id": 1}) == []
    assert h.binary(7, frames.encode(FrameKind.END, 1)) == []
    assert h.leave(7) == []
    h.core.connect(8)
    [(_, error)] = h.binary(8, frames.encode(FrameKind.END, 1))
    assert error["code"] == "out_of_order"
    assert h.closed[-1].code == CLOSE_HANDSHAKE


def test_cancelling_an_exec_reaches_its_provider_and_unknown_targets_are_ignored(hub: Harness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, exec_)] = hub.text(2, {"type": "exec", "id": 11, "activity": activity, "argv": ["sleep", "9"]})
    assert hub.text(2, {"type": "cancel", "target": 11}) == [(1, {"type": "cancel", "target": exec_["id"]})]
    assert hub.text(2, {"type": "cancel", "target": 99}) == []
    [(_, error)] = hub.text(1, {"type": "error", "re": exec_["id"], "code": "cancelled", "message": "cancelled"})
    assert (error["re"], error["code"]) == (11, "cancelled")


def small_hub(**limits: int) -> Harness:
    h = Harness()
    h.core = HubCore(new_activity_id=lambda: "act1", limits_=h.core.limits.model_copy(update=limits))
    h.join(1, "provider", "p1")
    h.offer(1)
    h.join(2, "requestor", "r1")
    return h


def test_requests_and_streams_beyond_the_limits_are_refused() -> None:
    h = small_hub(max_pending=3, max_streams=1, max_window=4)
    activity = h.rent(2, 10, 1)
    [(_, download)] = h.text(2, {"type": "download", "id": 11, "activity": activity, "path": "/o", "window": 9})
    assert download["window"] == 4, "a window is cut to the hub's max_window"
    [(_, error)] = h.text(2, {"type": "upload", "id": 12, "activity": activity, "path": "/a", "size": 1})
    assert (error["re"], error["code"]) == (12, "too_many")
    h.text(2, {"type": "exec", "id": 13, "activity": activity, "argv": ["true"]})
    h.text(2, {"type": "exec", "id": 14, "activity": activity, "argv": ["true"]})
    [(_, error)] = h.text(2, {"type": "exec", "id": 15, "activity": activity, "argv": ["true"]})
    assert (error["re"], error["code"]) == (15, "too_many")


def test_credit_is_relayed_only_within_the_window(hub: Harness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, download)] = hub.text(2, {"type": "download", "id": 11, "activity": activity, "path": "/o", "window": 60})
    [(_, error)] = hub.text(2, {"type": "credit", "stream": 11, "chunks": 8})
    assert error["code"] == "flow_control", "60 + 8 is over the window of 64"
    assert hub.text(2, {"type": "credit", "stream": 11, "chunks": 4}) == [
        (1, {"type": "credit", "stream": download["id"], "chunks": 4})
    ]
    assert hub.text(2, {"type": "credit", "stream": 77, "chunks": 4}) == [], "it may have crossed the stream's end"


def test_a_providers_error_about_no_request_is_only_logged(hub: Harness) -> None:
    assert hub.text(1, {"type": "error", "code": "internal", "message": "confused"}) == []


def test_provider_loss_answers_every_open_request_as_it_stood(hub: Harness) -> None:
    doomed = hub.rent(2, 10, 1, cpus=0.5)
    released = hub.rent(2, 11, 1, cpus=0.5)
    [(_, upload)] = hub.text(2, {"type": "upload", "id": 12, "activity": doomed, "path": "/a", "size": 9})
    hub.text(2, {"type": "release", "id": 13, "activity": released})
    hub.text(2, {"type": "rent", "id": 14, "image": "img:1", "demand": {"cpus": 0.5}})
    hub.text(2, {"type": "cancel", "target": 14})
    out = hub.leave(1)
    replies = {m.get("re"): m for _, m in out if m["type"] in ("error", "done")}
    assert replies[12]["code"] == "provider_lost"
    assert replies[13] == {"type": "done", "re": 13}, "the container went with its provider"
    assert replies[14]["code"] == "provider_lost"
    lost = [m["activity"] for _, m in out if m["type"] == "activity_lost"]
    assert doomed in lost and released not in lost, "a release in progress is not reported lost"
    [(_, error)] = hub.binary(2, frames.encode(FrameKind.DATA, 12, b"late"))
    assert error["code"] == "unknown_stream", upload


def test_a_requestors_loss_aborts_its_uploads(hub: Harness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, upload)] = hub.text(2, {"type": "upload", "id": 11, "activity": activity, "path": "/a", "size": 9})
    out = hub.leave(2)
    assert (1, frames.encode(FrameKind.ABORT, upload["id"], b"requestor disconnected")) in out


def test_credit_waits_while_a_receivers_buffer_at_the_hub_is_full() -> None:
    # Chunks of 8 bytes, a buffer of 64 bytes: at most 32 bytes (4 chunks) in flight toward a peer.
    h = small_hub(chunk_bytes=8, max_window=4)
    h.core = HubCore(new_activity_id=lambda: "act1", limits_=h.core.limits, buffer_bytes=64)
    h.join(1, "provider", "p1")
    h.offer(1)
    h.join(2, "requestor", "r1")
    activity = h.rent(2, 10, 1)
    [(_, up1)] = h.text(2, {"type": "upload", "id": 11, "activity": activity, "path": "/a", "size": 24})
    [(_, up2)] = h.text(2, {"type": "upload", "id": 12, "activity": activity, "path": "/b", "size": 24})
    assert h.text(1, {"type": "credit", "stream": up1["id"], "chunks": 3}) == [
        (2, {"type": "credit", "stream": 11, "chunks": 3})
    ]
    assert h.text(1, {"type": "credit", "stream": up2["id"], "chunks": 3}) == [
        (2, {"type": "credit", "stream": 12, "chunks": 1})
    ], "only the room left is passed on"
    for _ in range(3):
        [(to, _)] = h.binary(2, frames.encode(FrameKind.DATA, 11, b"12345678"))
        assert to == 1
    assert h._decode(h.core.delivered(1, 16)) == [], "still no room: 2 frames wait, 1 chunk is held"
    assert h._decode(h.core.delivered(1, 32)) == [(2, {"type": "credit", "stream": 12, "chunks": 2})]
    [(_, error)] = h.text(1, {"type": "credit", "stream": up2["id"], "chunks": 2})
    assert error["code"] == "flow_control", "3 granted + 2 is over the window of 4"


def test_a_downloads_first_window_is_cut_to_the_room_left() -> None:
    h = small_hub(chunk_bytes=8)
    h.core = HubCore(new_activity_id=lambda: "act1", limits_=h.core.limits, buffer_bytes=48)
    h.join(1, "provider", "p1")
    h.offer(1)
    h.join(2, "requestor", "r1")
    activity = h.rent(2, 10, 1)
    [(_, down)] = h.text(2, {"type": "download", "id": 11, "activity": activity, "path": "/o", "window": 4})
    assert down["window"] == 3, "24 bytes of room: 3 chunks now"
    h.text(1, {"type": "download_info", "re": down["id"], "kind": "file", "size": 40})
    [(_, _)] = h.binary(1, frames.encode(FrameKind.DATA, down["id"], b"abcdefgh"))
    assert h._decode(h.core.delivered(2, 16)) == [(1, {"type": "credit", "stream": down["id"], "chunks": 1})]
    [(_, done)] = h.text(1, {"type": "error", "re": down["id"], "code": "transfer_failed", "message": "gone"})
    assert done["code"] == "transfer_failed"
    assert h._decode(h.core.delivered(2, 100)) == [], "an ended stream gets no more credit"
    assert h.core.delivered(99, 1) == []


def test_an_error_names_the_provider_that_sent_it_whatever_it_claims(hub: Harness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, exec_)] = hub.text(2, {"type": "exec", "id": 11, "activity": activity, "argv": ["true"]})
    [(_, error)] = hub.text(1, {"type": "error", "re": exec_["id"], "code": "container_failed", "message": "no",
                                "provider": "somebody-else"})  # fmt: skip
    assert (error["re"], error["provider"]) == (11, "p1")


def test_senders_sitting_on_credit_cannot_stop_another_stream() -> None:
    # Room for 4 chunks toward the provider; an idle upload holds all 4 and never sends.
    h = small_hub(chunk_bytes=8, max_window=4)
    ids = itertools.count(1)
    h.core = HubCore(new_activity_id=lambda: f"act{next(ids)}", limits_=h.core.limits, buffer_bytes=64)
    h.join(1, "provider", "p1")
    h.offer(1)
    h.join(2, "requestor", "idle")
    h.join(3, "requestor", "busy")
    idle = h.rent(2, 10, 1, cpus=0.5)
    [(_, held)] = h.text(2, {"type": "upload", "id": 11, "activity": idle, "path": "/a", "size": 32})
    assert h.text(1, {"type": "credit", "stream": held["id"], "chunks": 4})[0][1]["chunks"] == 4
    busy = h.rent(3, 10, 1, cpus=0.5)
    [(_, up)] = h.text(3, {"type": "upload", "id": 11, "activity": busy, "path": "/b", "size": 16})
    assert h.text(1, {"type": "credit", "stream": up["id"], "chunks": 4}) == [
        (3, {"type": "credit", "stream": 11, "chunks": 1})
    ], "no room, yet one chunk: the stream moves"
    [(to, _)] = h.binary(3, frames.encode(FrameKind.DATA, 11, b"abcdefgh"))
    assert to == 1
    assert h._decode(h.core.delivered(1, 16)) == [(3, {"type": "credit", "stream": 11, "chunks": 1})]


def test_a_provider_that_leaves_on_purpose_is_news_and_one_that_vanishes_a_warning() -> None:
    h = Harness()
    for peer, name in ((1, "stopped"), (2, "vanished")):
        h.join(peer, "provider", name)
    # Closed with 1001 (going away: SIGTERM), as the server tells the core.
    said = [a for a in h.core.disconnect(1, "closed with code 1001 (the provider stops)", leaving=True)
            if isinstance(a, Log)]  # fmt: skip
    assert said == [Log("info", "provider 'stopped' left: 'closed with code 1001 (the provider stops)'")]
    lost = [a for a in h.core.disconnect(2, "connection lost without a close frame") if isinstance(a, Log)]
    assert [log.level for log in lost] == ["warning"]
