"""Published ports (1.7) without sockets: the registry of tokens, the listener's reading of a request
head, and the core's side of the connects that carry them."""

from __future__ import annotations

import json

import pytest

from kiln.hub.actions import PortClosed, PortCredit, PortFrame, Withdrawn
from kiln.hub.io.published import Refused, parse
from kiln.hub.publications import MAX_PER_SESSION, Publications
from kiln.protocol import frames
from kiln.protocol.frames import FrameKind
from tests.hubcore import HubHarness


def test_publications_are_found_by_token_activity_and_session() -> None:
    tokens = iter(["t1", "t1", "t2", "t3"])  # a repeated token is drawn again
    published = Publications(lambda: next(tokens))
    one = published.add("a1", 80, "s1")
    two = published.add("a1", 8080, "s2")
    published.add("a2", 80, "s1")
    assert (one.token, two.token, len(published), published.count("s1")) == ("t1", "t2", 3, 2)
    assert (published.of_activity("a1"), published.of_session("s1")) == (["t1", "t2"], ["t1", "t3"])
    assert published.remove("t1") == one and published.remove("t1") is None
    assert (published.get("t1"), published.of_activity("a1"), published.of_session("s1")) == (None, ["t2"], ["t3"])
    assert len(Publications().add("a", 1, "s").token) == 43  # 256 random bits, base64url


def test_a_request_head_is_read_and_rewritten() -> None:
    head = (
        b"POST /s/tok_en-1/api/x?q=/s/ HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nX-Forwarded-Prefix: /no\r\n\r\n"
    )
    request = parse(head)
    assert (request.token, request.method, request.path, request.upgrade) == ("tok_en-1", "POST", "/api/x?q=/s/", False)
    assert request.head() == (
        b"POST /api/x?q=/s/ HTTP/1.1\r\nHost: h\r\nX-Forwarded-Prefix: /s/tok_en-1\r\nConnection: close\r\n\r\n"
    )
    assert parse(b"GET /s/tok?a=1 HTTP/1.0\r\n\r\n").path == "/?a=1"
    upgrade = parse(b"GET /s/tok/ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert upgrade.upgrade and b"Connection: keep-alive, Upgrade\r\n" in upgrade.head()
    assert b"close" not in upgrade.head()
    for bad, code in [
        (b"GET /s/tok/ HTTP/2\r\n\r\n", 400),
        (b"GET http://h/s/tok/ HTTP/1.1\r\n\r\n", 404),
        (b"GET /s/t%2Fk/ HTTP/1.1\r\n\r\n", 404),
        (b"GET /s/tok/ HTTP/1.1\r\n folded\r\n\r\n", 400),
        (b"GET /s/tok/ HTTP/1.1\r\nNo colon\r\n\r\n", 400),
        (b"GET  /s/tok/ HTTP/1.1\r\n\r\n", 400),
        (b"GET /s/tok/a\nX-Forwarded-Prefix:/ HTTP/1.1\r\n\r\n", 400),
        (b"GET /s/tok/ HTTP/1.1\r\nA: b\nC: d\r\n\r\n", 400),
        (b"GET /s/tok/\n HTTP/1.1\r\n\r\n", 400),
        (b"GET /s/tok/ HTTP/1.1\r\nA\n: b\r\n\r\n", 400),
    ]:
        with pytest.raises(Refused) as refused:
            parse(bad)
        assert refused.value.status == code, bad


@pytest.fixture
def hub() -> HubHarness:
    hub = HubHarness(version="1.7", publish_base="http://hub:7466")
    hub.provider("p1", images=["img:1"])
    hub.join("requestor", "r1", peer=5)
    return hub


def test_publish_and_the_connects_that_carry_it(hub: HubHarness) -> None:
    activity = hub.rent(5, 1)
    [(_, published)] = hub.send(5, {"type": "publish", "id": 2, "activity": activity, "port": 80})
    token = published["token"]
    assert published["url"] == f"http://hub:7466/s/{token}/"
    # A connection of the listener: the hub's own connect, its credit and frames as actions.
    assert hub.take(hub.core.port_open(token, 9, 4)) == [
        (1, {"type": "connect", "id": 2, "activity": activity, "port": 80, "window": 4})
    ]
    assert hub.core.port_open("nope", 10, 4) == [PortClosed(10, "the published port cannot be reached now")]
    assert PortCredit(9, 2) in hub.core.receive_text(1, json.dumps({"type": "credit", "stream": 2, "chunks": 2}))
    [(to, sent)] = hub.take(hub.core.port_send(9, FrameKind.DATA, b"GET / HTTP/1.1\r\n\r\n"))
    assert (to, sent) == (1, frames.encode(FrameKind.DATA, 2, b"GET / HTTP/1.1\r\n\r\n"))
    back = hub.core.receive_binary(1, frames.encode(FrameKind.DATA, 2, b"HTTP/1.1 200 OK"))
    assert back == [PortFrame(9, FrameKind.DATA, b"HTTP/1.1 200 OK")]
    # The client goes: the connection to the service is reset, the connect cancelled.
    gone = hub.take(hub.core.port_close(9))
    assert gone[0][1][:1] == bytes([FrameKind.ABORT]) and gone[1] == (1, {"type": "cancel", "target": 2})
    assert hub.core.port_close(9) == []
    assert hub.send(1, {"type": "error", "re": 2, "code": "transfer_failed", "message": "reset"}) == []
    # Withdrawn by the end of the activity.
    assert hub.core.port_open(token, 11, 4)
    [(_, destroy)] = hub.send(5, {"type": "release", "id": 3, "activity": activity})
    ended = hub.core.receive_text(1, json.dumps({"type": "done", "re": destroy["id"]}))
    assert Withdrawn(token) in ended
    assert hub.core.published.get(token) is None


def test_publish_is_bounded_and_needs_a_provider_of_1_7(hub: HubHarness) -> None:
    activity = hub.rent(5, 1)
    for n in range(MAX_PER_SESSION):
        [(_, published)] = hub.send(5, {"type": "publish", "id": 10 + n, "activity": activity, "port": 80})
        assert published["type"] == "published"
    [(_, refused)] = hub.send(5, {"type": "publish", "id": 9, "activity": activity, "port": 80})
    assert refused["code"] == "too_many"
    old = hub.provider("old", version="1.6", images=["img:2"])
    on_old = hub.rent(5, 2, old, image="img:2")
    [(_, refused)] = hub.send(5, {"type": "publish", "id": 3, "activity": on_old, "port": 80})
    assert refused["code"] == "unsupported_version"
    hub.leave(5, ended=True)  # the session ends: what it published goes
    assert len(hub.core.published) == 0
