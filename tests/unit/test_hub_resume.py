"""A requestor's activities outlive its connection for the grace period: a hello carrying
the ``resume`` secret of its last welcome takes them over. The hub core on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

import kiln
from kiln.hub.core import HubCore
from kiln.protocol.codes import CLOSE_RESUMED
from tests.hubcore import HubHarness
from tests.unit.test_hub_access import store

GiB = 2**30
RENT = {"type": "rent", "image": "img:1", "demand": {"cpus": 1, "memory": 2**28}}


def resuming(provider: dict[str, str] | None = None, **options: Any) -> HubHarness:
    """A hub core on a clock the test moves; provider 1 offers 2 CPUs."""
    hub = HubHarness(frames=False, **options)
    fields = dict(provider or {"name": "p"})
    hub.join("provider", fields.pop("name"), peer=1, **fields)
    hub.offer(1)
    return hub


def hello(hub: HubHarness, peer: int, **fields: Any) -> dict[str, Any]:
    """Requestor ``r`` says hello as ``peer``: its welcome."""
    return hub.welcome("requestor", "r", peer=peer, **fields)


def rent(hub: HubHarness, peer: int, rid: int) -> str:
    return hub.rent(peer, rid, memory=2**28)


@pytest.fixture
def hub() -> HubHarness:
    h = resuming(grace=30)
    h.join("requestor", "watcher", peer=99)
    return h


def test_a_requestor_that_comes_back_within_the_grace_period_keeps_its_activities(hub: HubHarness) -> None:
    welcome = hello(hub, 2)
    assert welcome["grace"] == 30 and len(welcome["resume"]) == 32 and "resumed" not in welcome
    activity = rent(hub, 2, 5)
    assert hub.leave(2) == [], "nothing destroyed"
    assert hub.expire(29) == []
    again = hello(hub, 3, resume=welcome["resume"])
    assert again["resumed"] == [activity]
    assert again["resume"] != welcome["resume"], "a new secret for the next takeover"
    [(to, forwarded)] = hub.send(3, {"type": "exec", "id": 1, "activity": activity, "argv": ["true"]})
    assert (to, forwarded["type"]) == (1, "exec")
    assert hub.expire(60) == [], "the resumed session is not expired"
    assert hub.free_cpus(99) == 1
    assert not any(welcome["resume"] in line or again["resume"] in line for line in hub.logs), "never logged"


def test_past_the_grace_period_the_activities_are_destroyed(hub: HubHarness) -> None:
    welcome = hello(hub, 2)
    activity = rent(hub, 2, 5)
    hub.leave(2)
    [(to, destroy)] = hub.expire(31)
    assert (to, destroy) == (1, {"type": "destroy", "id": destroy["id"], "activity": activity})
    assert hub.send(1, {"type": "done", "re": destroy["id"]}) == []
    assert hub.free_cpus(99) == 2
    assert hello(hub, 3, resume=welcome["resume"])["resumed"] == [], "too late: a fresh session"


def test_a_secret_takes_a_session_over_once(hub: HubHarness) -> None:
    welcome = hello(hub, 2)
    activity = rent(hub, 2, 5)
    hub.leave(2)
    assert hello(hub, 3, resume=welcome["resume"])["resumed"] == [activity]
    assert hello(hub, 4, resume=welcome["resume"])["resumed"] == [], "spent"
    assert hello(hub, 5, resume="garbage-but-well-formed")["resumed"] == []
    [(_, error)] = hub.send(4, {"type": "exec", "id": 1, "activity": activity, "argv": ["true"]})
    assert error["code"] == "unknown_activity", "still only the resumed session's"


def test_resuming_a_connection_not_yet_found_dead_closes_it_first(hub: HubHarness) -> None:
    welcome = hello(hub, 2)
    activity = rent(hub, 2, 5)
    assert hello(hub, 3, resume=welcome["resume"])["resumed"] == [activity]
    assert [(c.peer, c.code, c.reason) for c in hub.closed] == [(2, CLOSE_RESUMED, "resumed elsewhere")]
    assert hub.leave(2) == [], "its end changes nothing now"
    [(_, forwarded)] = hub.send(3, {"type": "exec", "id": 1, "activity": activity, "argv": ["true"]})
    assert forwarded["type"] == "exec"


def test_what_ran_for_the_lost_connection_is_cancelled(hub: HubHarness) -> None:
    welcome = hello(hub, 2)
    activity = rent(hub, 2, 5)
    [(_, forwarded)] = hub.send(2, {"type": "exec", "id": 6, "activity": activity, "argv": ["sleep", "9"]})
    [(to, cancel)] = hub.leave(2)
    assert (to, cancel) == (1, {"type": "cancel", "target": forwarded["id"]})
    assert hub.send(1, {"type": "error", "re": forwarded["id"], "code": "cancelled", "message": "x"}) == []
    assert hello(hub, 3, resume=welcome["resume"])["resumed"] == [activity]


def test_a_rent_under_way_when_the_connection_ends_is_not_taken_over(hub: HubHarness) -> None:
    welcome = hello(hub, 2)
    [(_, create)] = hub.send(2, {**RENT, "id": 5})
    hub.leave(2)
    assert hello(hub, 3, resume=welcome["resume"])["resumed"] == [], "its rent was never answered"
    [(_, destroy)] = hub.send(1, {"type": "done", "re": create["id"]})
    assert destroy["type"] == "destroy"
    assert hub.send(1, {"type": "done", "re": destroy["id"]}) == []
    assert hub.free_cpus(99) == 2


def test_groups_follow_the_session(hub: HubHarness) -> None:
    welcome = hello(hub, 2)
    [(_, create)] = hub.send(2, {**RENT, "id": 5, "group": "g"})
    hub.send(1, {"type": "done", "re": create["id"]})
    hub.leave(2)
    hello(hub, 3, resume=welcome["resume"])
    [(_, error)] = hub.send(3, {**RENT, "id": 6, "group": "g"})
    assert error["code"] == "no_match", "the one provider already holds the group"


def test_an_activity_lost_while_away_is_not_resumed(hub: HubHarness) -> None:
    welcome = hello(hub, 2)
    rent(hub, 2, 5)
    hub.leave(2)
    hub.leave(1)
    assert hello(hub, 3, resume=welcome["resume"])["resumed"] == []


def test_without_a_grace_period_the_activities_go_at_once() -> None:
    hub = resuming(grace=0)
    welcome = hello(hub, 2)
    assert "resume" not in welcome and "grace" not in welcome
    activity = rent(hub, 2, 5)
    [(to, destroy)] = hub.leave(2)
    assert (to, destroy["activity"]) == (1, activity)


def test_a_requestor_below_1_2_is_not_held() -> None:
    hub = resuming()
    welcome = hello(hub, 2, version="1.1")
    assert "resume" not in welcome
    rent(hub, 2, 5)
    [(_, destroy)] = hub.leave(2)
    assert destroy["type"] == "destroy"


def test_the_grace_period_is_checked() -> None:
    with pytest.raises(kiln.UsageError):
        HubCore(grace=-1)


def test_a_requestor_that_closes_its_connection_itself_ends_its_session(hub: HubHarness) -> None:
    welcome = hello(hub, 2)
    activity = rent(hub, 2, 5)
    [(to, destroy)] = hub.leave(2, "closed with code 1000", ended=True)
    assert (to, destroy["activity"]) == (1, activity)
    assert hello(hub, 3, resume=welcome["resume"])["resumed"] == []


def test_a_session_is_resumed_only_with_the_credential_it_joined_with() -> None:
    hub = resuming({"name": "p1", "token": "prov-p1"}, grace=30, credentials=store())
    welcome = hello(hub, 2, token="req")
    activity = rent(hub, 2, 5)
    hub.leave(2)
    assert hello(hub, 3, token="adm", resume=welcome["resume"])["resumed"] == [], "another credential's"
    assert hello(hub, 4, token="req", resume=welcome["resume"])["resumed"] == [activity], "not spent by that"


def test_a_requestor_whose_credential_is_revoked_is_not_held() -> None:
    hub = resuming({"name": "p1", "token": "prov-p1"}, grace=30, credentials=store())
    hello(hub, 2, token="req")
    activity = rent(hub, 2, 5)
    hub.core.revoked({2})
    [(to, destroy)] = hub.leave(2)
    assert (to, destroy["activity"]) == (1, activity)
