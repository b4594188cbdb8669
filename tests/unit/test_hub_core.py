"""The hub's state machine, driven with literal messages (:mod:`tests.hubcore`): no sockets, no Docker."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.hub.actions import Log
from kiln.hub.core import HubCore
from kiln.protocol import frames
from kiln.protocol.codes import CLOSE_HANDSHAKE, CLOSE_NAME_TAKEN, CLOSE_UNSUPPORTED_VERSION
from kiln.protocol.frames import FrameKind
from kiln.protocol.messages import PROTOCOL_VERSION
from tests.hubcore import HubHarness

GiB = 2**30
MiB = 2**20


def harness() -> HubHarness:
    return HubHarness(version="1.0", activity_ids="act{}")


@pytest.fixture
def hub() -> HubHarness:
    h = harness()
    h.join("provider", "p1", peer=1)
    h.offer(1)
    h.join("requestor", "r1", peer=2)
    return h


def test_first_message_must_be_hello() -> None:
    h = harness()
    h.core.connect(5)
    [(_, error)] = h.send(5, {"type": "market", "id": 1})
    assert error["code"] == "out_of_order"
    assert h.closed[0].code == CLOSE_HANDSHAKE


def test_wrong_major_version_is_refused_with_a_close() -> None:
    h = harness()
    h.core.connect(5)
    [(_, error)] = h.send(5, {"type": "hello", "version": "2.0", "role": "requestor", "name": "x"})
    assert error["code"] == "unsupported_version"
    assert PROTOCOL_VERSION in error["message"]
    assert h.closed[0].code == CLOSE_UNSUPPORTED_VERSION


def test_later_minor_version_is_welcomed_at_ours() -> None:
    h = harness()
    h.core.connect(5)
    [(_, welcome)] = h.send(5, {"type": "hello", "version": "1.9", "role": "requestor", "name": "x"})
    assert welcome["type"] == "welcome"
    assert welcome["version"] == PROTOCOL_VERSION


def test_an_earlier_minor_version_is_welcomed_at_its_own() -> None:
    h = harness()
    h.core.connect(5)
    [(_, welcome)] = h.send(5, {"type": "hello", "version": "1.0", "role": "requestor", "name": "x"})
    assert welcome["version"] == "1.0"


def test_token_is_checked() -> None:
    h = HubHarness(token="s3cret")
    h.core.connect(5)
    [(_, error)] = h.send(5, {"type": "hello", "version": "1.0", "role": "requestor", "name": "x", "token": "no"})
    assert error["code"] == "unauthorized"


def test_provider_names_are_unique(hub: HubHarness) -> None:
    hub.core.connect(9)
    [(_, error)] = hub.send(9, {"type": "hello", "version": "1.0", "role": "provider", "name": "p1"})
    assert error["code"] == "name_taken"
    assert hub.closed[-1].code == CLOSE_NAME_TAKEN


def test_roles_are_enforced(hub: HubHarness) -> None:
    [(_, error)] = hub.send(
        2, {"type": "create", "id": 3, "activity": "a", "image": "i", "resources": {"cpus": 1, "memory": 1}}
    )
    assert (error["code"], error["re"]) == ("out_of_order", 3)
    [(_, error)] = hub.send(1, {"type": "rent", "id": 4, "image": "i", "demand": {}})
    assert error["code"] == "out_of_order"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"{nope", "bad_json"),
        (b'{"type":"warp","id":3}', "unknown_type"),
        (b'{"type":"market","id":"3"}', "bad_message"),
        (b'{"type":"exec","id":3,"activity":"a","argv":["ls"],"workdir":"/a/../b"}', "bad_path"),
    ],
)
def test_bad_messages_get_errors_and_the_session_goes_on(hub: HubHarness, frame: bytes, code: str) -> None:
    [(peer, error)] = hub.send(2, frame)
    assert (peer, error["type"], error["code"]) == (2, "error", code)
    [(_, info)] = hub.send(2, {"type": "market", "id": 50})
    assert info["type"] == "market_info"


def test_oversized_message_is_refused(hub: HubHarness) -> None:
    [(_, error)] = hub.send(2, b'{"type":"market","id":1,"pad":"' + b"x" * (2 * MiB) + b'"}')
    assert error["code"] == "message_too_large"


def test_rent_reserves_capacity_and_release_frees_it(hub: HubHarness) -> None:
    a1 = hub.rent(2, 10, 1, cpus=1, memory=1 * GiB)
    a2 = hub.rent(2, 11, 1, cpus=1, memory=1 * GiB)
    assert a1 != a2
    [(_, error)] = hub.send(2, {"type": "rent", "id": 12, "image": "img:1", "demand": {"cpus": 1}})
    assert error["code"] == "no_match"
    assert "busy" in error["message"]
    [(_, destroy)] = hub.send(2, {"type": "release", "id": 13, "activity": a1})
    assert destroy["type"] == "destroy"
    [(_, done)] = hub.send(1, {"type": "done", "re": destroy["id"]})
    assert done == {"type": "done", "re": 13}
    hub.rent(2, 14, 1, cpus=1, memory=1 * GiB)


def test_no_match_names_the_constraint(hub: HubHarness) -> None:
    [(_, error)] = hub.send(2, {"type": "rent", "id": 3, "image": "img:1", "demand": {"memory": 64 * GiB}})
    assert error["code"] == "no_match"
    assert "64GiB of memory" in error["message"]
    [(_, error)] = hub.send(2, {"type": "rent", "id": 4, "image": "img:1", "demand": {"labels": {"gpu": "yes"}}})
    assert "gpu=yes" in error["message"]


def test_provider_holding_the_image_is_preferred(hub: HubHarness) -> None:
    hub.join("provider", "p2", peer=3)
    hub.offer(3, images=["img:1"])
    [(to, _)] = hub.send(2, {"type": "rent", "id": 3, "image": "img:1", "demand": {}})
    assert to == 3


def test_create_failure_releases_the_reservation_and_names_the_provider(hub: HubHarness) -> None:
    [(_, create)] = hub.send(2, {"type": "rent", "id": 3, "image": "nope:1", "demand": {"cpus": 2}})
    [(_, error)] = hub.send(
        1, {"type": "error", "re": create["id"], "code": "image_not_found", "message": "no image nope:1"}
    )
    assert (error["re"], error["code"], error["provider"]) == (3, "image_not_found", "p1")
    hub.rent(2, 4, 1, cpus=2)


def test_an_image_neither_provider_nor_store_holds_says_the_requestor_can_push_it(hub: HubHarness) -> None:
    [(_, create)] = hub.send(2, {"type": "rent", "id": 3, "image": "mine:1", "demand": {}})
    told = "provider 'p1' does not hold the image 'mine:1' (started with --pull it would pull it)"
    [(_, error)] = hub.send(1, {"type": "error", "re": create["id"], "code": "image_not_found", "message": told})
    assert error["code"] == "image_not_found"
    assert error["message"] == (
        f"{told}; the hub's image store does not hold 'mine:1' either: push it there (kiln image push mine:1, "
        "or push_image / pushImage in code), then rent it again"
    )
    [(_, create)] = hub.send(2, {"type": "rent", "id": 4, "image": "mine:1", "demand": {}})
    [(_, error)] = hub.send(1, {"type": "error", "re": create["id"], "code": "container_failed", "message": "no"})
    assert error["message"] == "no", "only an image not found gets the hint"
    long = "x" * 4096
    [(_, create)] = hub.send(2, {"type": "rent", "id": 5, "image": "mine:1", "demand": {}})
    [(_, error)] = hub.send(1, {"type": "error", "re": create["id"], "code": "image_not_found", "message": long})
    assert len(error["message"]) <= 4096 and error["message"].endswith("then rent it again")


def rent_in(hub: HubHarness, requestor: int, rid: int, group: str) -> tuple[int, dict[str, Any]]:
    [(to, sent)] = hub.send(
        requestor, {"type": "rent", "id": rid, "image": "img:1", "demand": {"cpus": 0.5}, "group": group}
    )
    return to, sent


def test_a_group_is_kept_on_distinct_providers(hub: HubHarness) -> None:
    hub.join("provider", "p2", peer=3)
    hub.offer(3)
    first, create = rent_in(hub, 2, 10, "job-a")
    second, _ = rent_in(hub, 2, 11, "job-a")
    assert {first, second} == {1, 3}, "while the first is still being created"
    to, refusal = rent_in(hub, 2, 12, "job-a")
    assert (to, refusal["code"]) == (2, "no_match") and "in its group" in refusal["message"]
    other, _ = rent_in(hub, 2, 13, "job-b")  # another group may share a provider
    assert other in (1, 3)
    hub.join("requestor", "r2", peer=4)
    elsewhere, _ = rent_in(hub, 4, 1, "job-a")  # a group is one requestor's
    assert elsewhere in (1, 3)
    # The first activity fails to start: its provider is free for the group again.
    hub.send(first, {"type": "error", "re": create["id"], "code": "container_failed", "message": "no"})
    again, _ = rent_in(hub, 2, 14, "job-a")
    assert again == first


def test_a_released_or_lost_activity_frees_its_provider_for_the_group(hub: HubHarness) -> None:
    hub.join("provider", "p2", peer=3)
    hub.offer(3)
    to, create = rent_in(hub, 2, 10, "g")
    [(_, rented)] = hub.send(to, {"type": "done", "re": create["id"]})
    other, _ = rent_in(hub, 2, 11, "g")
    [(_, destroy)] = hub.send(2, {"type": "release", "id": 12, "activity": rented["activity"]})
    [(_, refusal)] = hub.send(2, {"type": "rent", "id": 13, "image": "img:1", "demand": {"cpus": 0.5}, "group": "g"})
    assert refusal["code"] == "no_match", "not before its container is gone"
    hub.send(to, {"type": "done", "re": destroy["id"]})
    assert rent_in(hub, 2, 14, "g")[0] == to
    hub.join("provider", "p3", peer=5)
    hub.offer(5)
    assert rent_in(hub, 2, 15, "g")[0] == 5
    hub.leave(5)  # its activity is lost with it; the group holds the other two still
    [(_, refusal)] = hub.send(2, {"type": "rent", "id": 16, "image": "img:1", "demand": {"cpus": 0.5}, "group": "g"})
    assert refusal["code"] == "no_match"
    hub.leave(other)
    hub.join("provider", "p2", peer=6)  # back, under a new connection: free for the group
    hub.offer(6)
    assert rent_in(hub, 2, 17, "g")[0] == 6


def test_the_least_loaded_provider_is_chosen(hub: HubHarness) -> None:
    hub.join("provider", "p2", peer=3)
    hub.offer(3)
    first, _ = rent_in(hub, 2, 10, "a")
    second, _ = rent_in(hub, 2, 11, "b")
    third, _ = rent_in(hub, 2, 12, "c")
    assert first != second and third in (1, 3)


def test_market_filters_and_a_limit_keep_a_listing_small(hub: HubHarness) -> None:
    hub.rent(2, 10, 1, cpus=2)
    for peer, name, images, labels in ((3, "p2", ["img:1"], {"zone": "eu"}), (4, "p3", [], {"zone": "us"})):
        hub.join("provider", name, peer=peer)
        resources = {"cpus": 4, "memory": 4 * GiB, "storage": 2**40}
        hub.send(
            peer,
            {"type": "offer", "id": 1, "resources": resources, "arch": "amd64", "images": images, "labels": labels},
        )

    def names(**query: Any) -> tuple[list[str], int]:
        [(_, info)] = hub.send(2, {"type": "market", "id": 99, **query})
        return [p["name"] for p in info["providers"]], info["matched"]

    assert names() == (["p1", "p2", "p3"], 3)
    assert names(limit=2) == (["p1", "p2"], 3)
    assert names(image="img:1") == (["p2"], 1)
    assert names(labels={"zone": "us"}) == (["p3"], 1)
    assert names(free={"cpus": 1, "memory": GiB}) == (["p2", "p3"], 2), "p1 has no CPU left"
    assert names(image="img:1", labels={"zone": "us"}) == ([], 0)
    [(_, error)] = hub.send(2, {"type": "market", "id": 98, "limit": 5000})
    assert error["code"] == "bad_message"


def test_requestors_cannot_touch_each_others_activities(hub: HubHarness) -> None:
    hub.join("requestor", "r2", peer=3)
    activity = hub.rent(2, 10, 1)
    for message in (
        {"type": "exec", "id": 5, "activity": activity, "argv": ["true"]},
        {"type": "release", "id": 6, "activity": activity},
        {"type": "download", "id": 7, "activity": activity, "path": "/etc", "window": 4},
    ):
        [(peer, error)] = hub.send(3, message)
        assert (peer, error["code"]) == (3, "unknown_activity")


def test_providers_cannot_answer_for_others(hub: HubHarness) -> None:
    hub.join("provider", "p2", peer=3)
    hub.offer(3, cpus=1)
    activity = hub.rent(2, 10, 1)
    [(_, exec_)] = hub.send(2, {"type": "exec", "id": 11, "activity": activity, "argv": ["true"]})
    forged = {
        "type": "exec_result",
        "re": exec_["id"],
        "exit_code": 0,
        "timed_out": False,
        "stdout": "",
        "stderr": "",
        "duration": 0,
    }
    [(peer, error)] = hub.send(3, forged)
    assert (peer, error["code"]) == (3, "out_of_order")
    [(peer, result)] = hub.send(1, forged)
    assert (peer, result["re"]) == (2, 11)


def test_duplicate_request_ids_are_refused(hub: HubHarness) -> None:
    activity = hub.rent(2, 10, 1)
    hub.send(2, {"type": "exec", "id": 11, "activity": activity, "argv": ["sleep", "5"]})
    [(_, error)] = hub.send(2, {"type": "exec", "id": 11, "activity": activity, "argv": ["true"]})
    assert error["code"] == "duplicate_id"


def test_upload_is_relayed_within_credit(hub: HubHarness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, upload)] = hub.send(2, {"type": "upload", "id": 20, "activity": activity, "path": "/in/a", "size": 4})
    pid = upload["id"]
    [(to_sender, error), (to_receiver, abort)] = hub.binary(2, frames.encode(FrameKind.DATA, 20, b"ab"))
    assert (to_sender, error["code"], error["re"]) == (2, "flow_control", 20)
    assert (to_receiver, abort[:8]) == (1, frames.encode(FrameKind.ABORT, pid))


def test_upload_stream_ids_are_translated(hub: HubHarness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, upload)] = hub.send(2, {"type": "upload", "id": 20, "activity": activity, "path": "/in/a", "size": 4})
    pid = upload["id"]
    assert hub.send(1, {"type": "credit", "stream": pid, "chunks": 2}) == [
        (2, {"type": "credit", "stream": 20, "chunks": 2})
    ]
    [(to, data)] = hub.binary(2, frames.encode(FrameKind.DATA, 20, b"ab"))
    assert to == 1 and data == frames.encode(FrameKind.DATA, pid, b"ab")
    [(to, end)] = hub.binary(2, frames.encode(FrameKind.END, 20))
    assert end == frames.encode(FrameKind.END, pid)
    [(_, done)] = hub.send(1, {"type": "done", "re": pid, "bytes": 4})
    assert done == {"type": "done", "re": 20, "bytes": 4}
    [(_, error)] = hub.binary(2, frames.encode(FrameKind.DATA, 20, b"late"))
    assert error["code"] == "unknown_stream"


def test_download_is_relayed_within_the_requestors_window(hub: HubHarness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, download)] = hub.send(2, {"type": "download", "id": 30, "activity": activity, "path": "/o", "window": 1})
    pid = download["id"]
    [(_, info)] = hub.send(1, {"type": "download_info", "re": pid, "kind": "file", "size": 3})
    assert info["re"] == 30
    [(to, _)] = hub.binary(1, frames.encode(FrameKind.DATA, pid, b"abc"))
    assert to == 2
    [(to, error), (to_receiver, abort)] = hub.binary(1, frames.encode(FrameKind.DATA, pid, b"more"))
    assert (to, error["code"]) == (1, "flow_control")
    assert (to_receiver, abort[:8]) == (2, frames.encode(FrameKind.ABORT, 30))


def test_provider_loss_is_reported_to_everyone_it_affects(hub: HubHarness) -> None:
    hub.join("requestor", "r2", peer=3)
    a1 = hub.rent(2, 10, 1)
    a2 = hub.rent(3, 10, 1)
    hub.send(2, {"type": "exec", "id": 11, "activity": a1, "argv": ["sleep", "100"]})
    out = hub.leave(1)
    by_peer = {(peer, m["type"], m.get("re"), m.get("activity")) for peer, m in out}
    assert (2, "error", 11, None) in by_peer
    assert (2, "activity_lost", None, a1) in by_peer
    assert (3, "activity_lost", None, a2) in by_peer
    assert not hub.core.activities
    [(_, info)] = hub.send(2, {"type": "market", "id": 12})
    assert info["providers"] == []


def test_requestor_loss_destroys_its_activities(hub: HubHarness) -> None:
    activity = hub.rent(2, 10, 1)
    [(to, destroy)] = hub.leave(2)
    assert (to, destroy["type"], destroy["activity"]) == (1, "destroy", activity)
    assert hub.send(1, {"type": "done", "re": destroy["id"]}) == []
    assert not hub.core.activities
    hub.join("requestor", "r2", peer=3)
    [(_, info)] = hub.send(3, {"type": "market", "id": 1})
    [seller] = info["providers"]
    assert (seller["free"], seller["activities"]) == (seller["offered"], 0)


def test_requestor_gone_while_its_container_is_created(hub: HubHarness) -> None:
    [(_, create)] = hub.send(2, {"type": "rent", "id": 3, "image": "img:1", "demand": {}})
    assert hub.leave(2) == []
    [(_, destroy)] = hub.send(1, {"type": "done", "re": create["id"]})
    assert destroy["type"] == "destroy"


def test_rent_can_exclude_providers(hub: HubHarness) -> None:
    hub.join("provider", "p2", peer=3)
    hub.offer(3, images=["img:1"])
    [(to, _)] = hub.send(2, {"type": "rent", "id": 3, "image": "img:1", "demand": {}, "exclude": ["p2"]})
    assert to == 1
    [(_, error)] = hub.send(2, {"type": "rent", "id": 4, "image": "img:1", "demand": {}, "exclude": ["p1", "p2"]})
    assert error["code"] == "no_match"
    assert "excluded" in error["message"]


def test_a_cancelled_rent_destroys_the_container_once_it_exists(hub: HubHarness) -> None:
    [(_, create)] = hub.send(2, {"type": "rent", "id": 3, "image": "img:1", "demand": {"cpus": 2}})
    assert hub.send(2, {"type": "cancel", "target": 3}) == []
    [(to, destroy)] = hub.send(1, {"type": "done", "re": create["id"]})
    assert (to, destroy["type"]) == (1, "destroy")
    # The rent is answered once the container is gone, so its capacity is free by then.
    [(to, error)] = hub.send(1, {"type": "done", "re": destroy["id"]})
    assert (to, error["re"], error["code"]) == (2, 3, "cancelled")
    hub.rent(2, 4, 1, cpus=2)


def test_release_reports_the_cpu_time_the_provider_measured(hub: HubHarness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, destroy)] = hub.send(2, {"type": "release", "id": 11, "activity": activity})
    [(_, done)] = hub.send(1, {"type": "done", "re": destroy["id"], "cpu_seconds": 1.25})
    assert done == {"type": "done", "re": 11, "cpu_seconds": 1.25}


def test_a_release_cannot_be_cancelled_and_a_failed_destroy_keeps_the_capacity(hub: HubHarness) -> None:
    activity = hub.rent(2, 10, 1, cpus=2)
    [(_, destroy)] = hub.send(2, {"type": "release", "id": 11, "activity": activity})
    assert hub.send(2, {"type": "cancel", "target": 11}) == [], "not forwarded: a release always completes"
    [(to, error)] = hub.send(
        1, {"type": "error", "re": destroy["id"], "code": "container_failed", "message": "docker said no"}
    )
    assert (to, error["re"], error["code"]) == (2, 11, "container_failed")
    [(_, refused)] = hub.send(2, {"type": "rent", "id": 12, "image": "img:1", "demand": {"cpus": 1}})
    assert refused["code"] == "no_match", "the container may still run: its CPUs are not sold again"


def test_stream_errors_to_a_provider_name_no_request(hub: HubHarness) -> None:
    [(to, error)] = hub.binary(1, frames.encode(FrameKind.DATA, 1, b"x"))
    assert (to, error["code"]) == (1, "unknown_stream")
    assert "re" not in error


def test_frames_of_unknown_peers_are_ignored_and_binary_before_hello_is_refused() -> None:
    h = harness()
    assert h.send(7, {"type": "market", "id": 1}) == []
    assert h.binary(7, frames.encode(FrameKind.END, 1)) == []
    assert h.leave(7) == []
    h.core.connect(8)
    [(_, error)] = h.binary(8, frames.encode(FrameKind.END, 1))
    assert error["code"] == "out_of_order"
    assert h.closed[-1].code == CLOSE_HANDSHAKE


def test_cancelling_an_exec_reaches_its_provider_and_unknown_targets_are_ignored(hub: HubHarness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, exec_)] = hub.send(2, {"type": "exec", "id": 11, "activity": activity, "argv": ["sleep", "9"]})
    assert hub.send(2, {"type": "cancel", "target": 11}) == [(1, {"type": "cancel", "target": exec_["id"]})]
    assert hub.send(2, {"type": "cancel", "target": 99}) == []
    [(_, error)] = hub.send(1, {"type": "error", "re": exec_["id"], "code": "cancelled", "message": "cancelled"})
    assert (error["re"], error["code"]) == (11, "cancelled")


def small_hub(buffer_bytes: int | None = None, requestors: tuple[str, ...] = ("r1",), **limits: int) -> HubHarness:
    """A hub with these limits (and ``buffer_bytes`` toward each peer): provider 1, requestors from 2 on."""
    more: dict[str, Any] = {} if buffer_bytes is None else {"buffer_bytes": buffer_bytes}
    h = HubHarness(version="1.0", activity_ids="act{}", limits_=HubCore().limits.model_copy(update=limits), **more)
    h.join("provider", "p1", peer=1)
    h.offer(1)
    for peer, name in enumerate(requestors, start=2):
        h.join("requestor", name, peer=peer)
    return h


def test_requests_and_streams_beyond_the_limits_are_refused() -> None:
    h = small_hub(max_pending=3, max_streams=1, max_window=4)
    activity = h.rent(2, 10, 1)
    [(_, download)] = h.send(2, {"type": "download", "id": 11, "activity": activity, "path": "/o", "window": 9})
    assert download["window"] == 4, "a window is cut to the hub's max_window"
    [(_, error)] = h.send(2, {"type": "upload", "id": 12, "activity": activity, "path": "/a", "size": 1})
    assert (error["re"], error["code"]) == (12, "too_many")
    h.send(2, {"type": "exec", "id": 13, "activity": activity, "argv": ["true"]})
    h.send(2, {"type": "exec", "id": 14, "activity": activity, "argv": ["true"]})
    [(_, error)] = h.send(2, {"type": "exec", "id": 15, "activity": activity, "argv": ["true"]})
    assert (error["re"], error["code"]) == (15, "too_many")


def test_credit_is_relayed_only_within_the_window(hub: HubHarness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, download)] = hub.send(2, {"type": "download", "id": 11, "activity": activity, "path": "/o", "window": 60})
    [(_, error)] = hub.send(2, {"type": "credit", "stream": 11, "chunks": 8})
    assert error["code"] == "flow_control", "60 + 8 is over the window of 64"
    assert hub.send(2, {"type": "credit", "stream": 11, "chunks": 4}) == [
        (1, {"type": "credit", "stream": download["id"], "chunks": 4})
    ]
    assert hub.send(2, {"type": "credit", "stream": 77, "chunks": 4}) == [], "it may have crossed the stream's end"


def test_a_providers_error_about_no_request_is_only_logged(hub: HubHarness) -> None:
    assert hub.send(1, {"type": "error", "code": "internal", "message": "confused"}) == []


def test_provider_loss_answers_every_open_request_as_it_stood(hub: HubHarness) -> None:
    doomed = hub.rent(2, 10, 1, cpus=0.5)
    released = hub.rent(2, 11, 1, cpus=0.5)
    [(_, upload)] = hub.send(2, {"type": "upload", "id": 12, "activity": doomed, "path": "/a", "size": 9})
    hub.send(2, {"type": "release", "id": 13, "activity": released})
    hub.send(2, {"type": "rent", "id": 14, "image": "img:1", "demand": {"cpus": 0.5}})
    hub.send(2, {"type": "cancel", "target": 14})
    out = hub.leave(1)
    replies = {m.get("re"): m for _, m in out if m["type"] in ("error", "done")}
    assert replies[12]["code"] == "provider_lost"
    assert replies[13] == {"type": "done", "re": 13}, "the container went with its provider"
    assert replies[14]["code"] == "provider_lost"
    lost = [m["activity"] for _, m in out if m["type"] == "activity_lost"]
    assert doomed in lost and released not in lost, "a release in progress is not reported lost"
    [(_, error)] = hub.binary(2, frames.encode(FrameKind.DATA, 12, b"late"))
    assert error["code"] == "unknown_stream", upload


def test_a_requestors_loss_aborts_its_uploads(hub: HubHarness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, upload)] = hub.send(2, {"type": "upload", "id": 11, "activity": activity, "path": "/a", "size": 9})
    out = hub.leave(2)
    assert (1, frames.encode(FrameKind.ABORT, upload["id"], b"requestor disconnected")) in out


def test_credit_waits_while_a_receivers_buffer_at_the_hub_is_full() -> None:
    # Chunks of 8 bytes, a buffer of 64 bytes: at most 32 bytes (4 chunks) in flight toward a peer.
    h = small_hub(64, chunk_bytes=8, max_window=4)
    activity = h.rent(2, 10, 1)
    [(_, up1)] = h.send(2, {"type": "upload", "id": 11, "activity": activity, "path": "/a", "size": 24})
    [(_, up2)] = h.send(2, {"type": "upload", "id": 12, "activity": activity, "path": "/b", "size": 24})
    assert h.send(1, {"type": "credit", "stream": up1["id"], "chunks": 3}) == [
        (2, {"type": "credit", "stream": 11, "chunks": 3})
    ]
    assert h.send(1, {"type": "credit", "stream": up2["id"], "chunks": 3}) == [
        (2, {"type": "credit", "stream": 12, "chunks": 1})
    ], "only the room left is passed on"
    for _ in range(3):
        [(to, _)] = h.binary(2, frames.encode(FrameKind.DATA, 11, b"12345678"))
        assert to == 1
    assert h.take(h.core.delivered(1, 16)) == [], "still no room: 2 frames wait, 1 chunk is held"
    assert h.take(h.core.delivered(1, 32)) == [(2, {"type": "credit", "stream": 12, "chunks": 2})]
    [(_, error)] = h.send(1, {"type": "credit", "stream": up2["id"], "chunks": 2})
    assert error["code"] == "flow_control", "3 granted + 2 is over the window of 4"


def test_a_downloads_first_window_is_cut_to_the_room_left() -> None:
    h = small_hub(48, chunk_bytes=8)
    activity = h.rent(2, 10, 1)
    [(_, down)] = h.send(2, {"type": "download", "id": 11, "activity": activity, "path": "/o", "window": 4})
    assert down["window"] == 3, "24 bytes of room: 3 chunks now"
    h.send(1, {"type": "download_info", "re": down["id"], "kind": "file", "size": 40})
    [(_, _)] = h.binary(1, frames.encode(FrameKind.DATA, down["id"], b"abcdefgh"))
    assert h.take(h.core.delivered(2, 16)) == [(1, {"type": "credit", "stream": down["id"], "chunks": 1})]
    [(_, done)] = h.send(1, {"type": "error", "re": down["id"], "code": "transfer_failed", "message": "gone"})
    assert done["code"] == "transfer_failed"
    assert h.take(h.core.delivered(2, 100)) == [], "an ended stream gets no more credit"
    assert h.core.delivered(99, 1) == []


def test_an_error_names_the_provider_that_sent_it_whatever_it_claims(hub: HubHarness) -> None:
    activity = hub.rent(2, 10, 1)
    [(_, exec_)] = hub.send(2, {"type": "exec", "id": 11, "activity": activity, "argv": ["true"]})
    [(_, error)] = hub.send(
        1,
        {"type": "error", "re": exec_["id"], "code": "container_failed", "message": "no", "provider": "somebody-else"},
    )
    assert (error["re"], error["provider"]) == (11, "p1")


def test_senders_sitting_on_credit_cannot_stop_another_stream() -> None:
    # Room for 4 chunks toward the provider; an idle upload holds all 4 and never sends.
    h = small_hub(64, ("idle", "busy"), chunk_bytes=8, max_window=4)
    idle = h.rent(2, 10, 1, cpus=0.5)
    [(_, held)] = h.send(2, {"type": "upload", "id": 11, "activity": idle, "path": "/a", "size": 32})
    assert h.send(1, {"type": "credit", "stream": held["id"], "chunks": 4})[0][1]["chunks"] == 4
    busy = h.rent(3, 10, 1, cpus=0.5)
    [(_, up)] = h.send(3, {"type": "upload", "id": 11, "activity": busy, "path": "/b", "size": 16})
    assert h.send(1, {"type": "credit", "stream": up["id"], "chunks": 4}) == [
        (3, {"type": "credit", "stream": 11, "chunks": 1})
    ], "no room, yet one chunk: the stream moves"
    [(to, _)] = h.binary(3, frames.encode(FrameKind.DATA, 11, b"abcdefgh"))
    assert to == 1
    assert h.take(h.core.delivered(1, 16)) == [(3, {"type": "credit", "stream": 11, "chunks": 1})]


def test_a_provider_that_leaves_on_purpose_is_news_and_one_that_vanishes_a_warning() -> None:
    h = harness()
    for peer, name in ((1, "stopped"), (2, "vanished")):
        h.join("provider", name, peer=peer)
    # Closed with 1001 (going away: SIGTERM), as the server tells the core.
    said = [
        a
        for a in h.core.disconnect(1, "closed with code 1001 (the provider stops)", leaving=True)
        if isinstance(a, Log)
    ]
    assert said == [Log("info", "provider 'stopped' left: 'closed with code 1001 (the provider stops)'")]
    lost = [a for a in h.core.disconnect(2, "connection lost without a close frame") if isinstance(a, Log)]
    assert [log.level for log in lost] == ["warning"]
