"""The replica state machine of a service (kiln.requestor.service.Replica): fed observations, it answers."""

from __future__ import annotations

import pytest

from kiln import Http, Tcp
from kiln.protocol.errors import UsageError
from kiln.requestor.service import MAX_RESTARTS, START_ATTEMPTS, Replica, Restart, _status_ok

CLOCK = (100.0, 1_700_000_000.0)


def replica(restart: Restart = "on-failure", retries: int = 3, start_timeout: float = 10.0) -> Replica:
    return Replica(1, restart=restart, retries=retries, start_timeout=start_timeout, clock=CLOCK)


def healthy(m: Replica, now: float = 101.0) -> None:
    m.started("a1", "p1", now)
    assert m.checked(True, "", now + 0.5)[0] == "keep"
    assert m.state == "healthy"


def test_a_replica_is_healthy_after_its_first_passing_check() -> None:
    m = replica()
    [start] = m.started("a1", "p1", 101.0)
    assert (start.kind, start.replica, start.activity, start.provider) == ("start", 1, "a1", "p1")
    assert start.time == CLOCK[1] + 1.0
    assert m.checked(False, "refused", 102.0) == ("keep", [])  # starting: failures do not count
    assert m.state == "starting"
    action, [event] = m.checked(True, "", 103.0)
    assert (action, event.kind, m.state) == ("keep", "healthy", "healthy")


def test_not_healthy_within_the_start_timeout_is_replaced_on_another_provider() -> None:
    m = replica(start_timeout=10.0)
    m.started("a1", "p1", 100.0)
    assert m.checked(False, "refused", 109.9)[0] == "keep"
    action, events = m.checked(False, "refused", 110.0)
    assert action == "replace"
    assert [e.kind for e in events] == ["replace"]
    assert "not healthy 10 s after its start: refused" in events[0].reason
    assert (events[0].activity, events[0].provider) == ("a1", "p1")
    assert (m.state, m.left, m.activity, m.replacements) == ("renting", "p1", None, 1)


def test_failed_checks_in_a_row_replace_a_healthy_replica_and_a_pass_resets_them() -> None:
    m = replica(retries=3)
    healthy(m)
    for _ in range(2):
        action, [failure] = m.checked(False, "HTTP 500", 105.0)
        assert (action, failure.kind) == ("keep", "failure")
    assert m.checked(True, "", 106.0) == ("keep", [])
    assert m.failures == 0
    m.checked(False, "HTTP 500", 107.0)
    m.checked(False, "HTTP 500", 108.0)
    action, events = m.checked(False, "HTTP 500", 109.0)
    assert action == "replace"
    assert [e.kind for e in events] == ["failure", "replace"]
    assert events[0].reason == "health check failed (3/3): HTTP 500"
    assert m.left == "p1"


def test_a_lost_provider_replaces_the_replica() -> None:
    m = replica()
    healthy(m)
    action, events = m.lost("provider p1 lost: gone", 110.0)
    assert action == "replace"
    assert [(e.kind, e.provider) for e in events] == [("failure", "p1"), ("replace", "p1")]
    assert m.left == "p1"
    # the next activity starts afresh
    [start] = m.started("a2", "p2", 111.0)
    assert (start.activity, start.provider, m.state) == ("a2", "p2", "starting")


@pytest.mark.parametrize(
    ("restart", "code", "action"),
    [
        ("on-failure", 1, "restart"),
        ("on-failure", None, "restart"),
        ("on-failure", 0, "stop"),
        ("always", 0, "restart"),
        ("always", 2, "restart"),
        ("no", 1, "stop"),
        ("no", 0, "stop"),
    ],
)
def test_a_command_that_ends_is_restarted_in_place_or_stopped_by_the_policy(
    restart: Restart, code: int | None, action: str
) -> None:
    m = replica(restart)
    healthy(m)
    got, events = m.exited(code, "oops", 110.0)
    assert got == action
    if action == "stop":
        assert m.state == "stopped"
        assert [e.kind for e in events] == ["stop"]
        assert f"restart={restart!r}" in events[0].reason
        assert m.started("a1", "p1", 111.0) == []  # stopped is for good
    else:
        assert [e.kind for e in events] == ["failure"]
        assert "oops" in events[0].reason
        assert m.restarts == 1
        assert m.started("a1", "p1", 111.0)[0].kind == "start"


def test_a_command_that_keeps_ending_without_a_passing_check_is_replaced() -> None:
    m = replica("always")
    healthy(m)
    for n in range(MAX_RESTARTS):
        assert m.exited(1, "", 110.0 + n)[0] == "restart"
        m.started("a1", "p1", 110.5 + n)
    action, events = m.exited(1, "", 120.0)
    assert action == "replace"
    assert [e.kind for e in events] == ["failure", "replace"]
    assert f"after {MAX_RESTARTS} restarts in place" in events[1].reason


def test_a_command_the_requestors_lost_connection_ended_restarts_in_place_without_counting() -> None:
    m = replica("no", retries=2)
    healthy(m)
    m.checked(False, "HTTP 500", 104.0)
    for n in range(MAX_RESTARTS + 2):  # however often: neither the restart limit nor the policy applies
        action, [event] = m.interrupted("the connection dropped", 105.0 + n)
        assert (action, event.kind, event.activity, event.provider) == ("restart", "failure", "a1", "p1")
        assert event.reason == "interrupted, restarted in place: the connection dropped"
        [start] = m.started("a1", "p1", 105.5 + n, event.reason)
        assert (start.kind, start.reason) == ("start", event.reason)
    assert (m.restarts, m.exits, m.replacements, m.failures) == (MAX_RESTARTS + 2, 0, 0, 0)
    assert m.checked(True, "", 120.0)[1][0].kind == "healthy"
    m.stop("the service stopped", 121.0)
    assert m.interrupted("the connection dropped", 122.0) == ("keep", [])


def test_a_replica_that_never_becomes_healthy_gives_up_and_one_that_was_never_does() -> None:
    m = replica()
    for n in range(START_ATTEMPTS):
        assert not m.given_up
        m.started(f"a{n}", f"p{n}", 100.0 + 20 * n)
        m.checked(False, "refused", 115.0 + 20 * n)
    assert m.given_up
    m = replica()
    healthy(m)
    for n in range(START_ATTEMPTS + 1):
        m.lost("gone", 120.0 + n)
        m.rent_failed("no provider", 120.5 + n)
    assert not m.given_up


def test_stop_is_for_good_and_said_once() -> None:
    m = replica()
    healthy(m)
    [stop] = m.stop("the service stopped", 120.0)
    assert (stop.kind, stop.activity) == ("stop", "a1")
    assert m.stop("again", 121.0) == []
    assert m.checked(False, "x", 122.0) == ("keep", [])
    assert m.lost("gone", 122.0) == ("keep", [])
    assert m.rent_failed("none", 122.0) == []


def test_a_long_reason_is_cut() -> None:
    m = replica()
    m.started("a1", "p1", 100.0)
    [_, replace] = m.lost("x" * 10_000, 101.0)[1]
    assert len(replace.reason) <= 300


def test_health_checks_are_checked() -> None:
    assert Http(8080, "/health").path == "/health"
    assert Tcp(1).port == 1
    for bad in (lambda: Tcp(0), lambda: Tcp(70000), lambda: Http(80, "health"), lambda: Http(80, "/a b")):
        with pytest.raises(UsageError):
            bad()
    with pytest.raises(UsageError):
        Http(80, "/x\r\nHost: evil")
    with pytest.raises(UsageError):
        Tcp(80, retries=0)


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        (b"HTTP/1.0 200 OK\r\n", True),
        (b"HTTP/1.1 302 Found\r\n", True),
        (b"HTTP/1.1 404 Not Found\r\n", False),
        (b"HTTP/1.0 500\r\n", False),
        (b"SSH-2.0-OpenSSH\r\n", False),
        (b"HTTP/1.1 2000 OK\r\n", False),
        (b"\r\n", False),
    ],
)
def test_an_http_status_line_passes_with_2xx_or_3xx(line: bytes, ok: bool) -> None:
    assert _status_ok(line)[0] is ok
