"""Who the hub's core admits, and as what: literal hellos against a fake credential store."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kiln.hub.access import Credential, Viewer, viewer
from kiln.hub.actions import Close, Send
from kiln.protocol.codes import CLOSE_NAME_TAKEN, CLOSE_UNAUTHORIZED
from tests.hubcore import FakeCredentials, HubHarness


def store() -> FakeCredentials:
    return FakeCredentials(
        live={
            "prov-p1": Credential(1, "provider", "p1"),
            "req": Credential(2, "requestor", "alice"),
            "adm": Credential(3, "admin", None),
        },
        bound_names={"p1", "gone"},  # "gone": a revoked provider credential's name
    )


def hub_with(token: str | None = None, credentials: FakeCredentials | None = None) -> HubHarness:
    return HubHarness(token=token, credentials=credentials)


def hello(hub: HubHarness, role: str, name: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    """A new peer's hello; returns its id and the hub's one answer to it."""
    peer, out = hub.hello(role, name) if token is None else hub.hello(role, name, token=token)
    [(_, answer)] = out
    assert isinstance(answer, dict)
    return peer, answer


def refused(hub: HubHarness, role: str, name: str, token: str | None = None, close: int = CLOSE_UNAUTHORIZED) -> str:
    peer, answer = hello(hub, role, name, token)
    assert answer["type"] == "error", answer
    assert "re" not in answer
    assert hub.close_code(peer) == close
    assert hub.core.peers[peer].role is None
    return str(answer["code"]) + ": " + str(answer["message"])


def welcomed(hub: HubHarness, role: str, name: str, token: str | None = None) -> int:
    peer, answer = hello(hub, role, name, token)
    assert answer["type"] == "welcome", answer
    return peer


def test_an_open_hub_admits_anyone_and_ignores_a_token() -> None:
    for hub in (hub_with(), hub_with(credentials=FakeCredentials(ever=False))):
        welcomed(hub, "provider", "p1")
        welcomed(hub, "requestor", "r", token="anything")


def test_the_shared_token_alone_admits_any_role_and_refuses_others() -> None:
    hub = hub_with(token="s3cret")
    welcomed(hub, "provider", "p1", "s3cret")
    welcomed(hub, "requestor", "r", "s3cret")
    assert refused(hub, "requestor", "r", "nope") == "unauthorized: wrong token"
    assert refused(hub, "requestor", "r").startswith("unauthorized: this hub needs a token")


def test_a_provider_credential_cannot_rent_and_a_requestor_credential_cannot_offer() -> None:
    hub = hub_with(credentials=store())
    assert "cannot join as a requestor" in refused(hub, "requestor", "p1", "prov-p1")
    assert "cannot join as a provider" in refused(hub, "provider", "alice", "req")
    assert "admin credential cannot join as a provider" in refused(hub, "provider", "x", "adm")
    requestor = welcomed(hub, "requestor", "anything", "req")
    admin = welcomed(hub, "requestor", "ops", "adm")
    provider = welcomed(hub, "provider", "p1", "prov-p1")
    assert hub.core.peers[provider].credential == Credential(1, "provider", "p1")
    assert hub.core.peers[requestor].credential == Credential(2, "requestor", "alice")
    assert hub.core.peers[admin].credential == Credential(3, "admin", None)
    assert hub.core.credentials_in_use() == {1, 2, 3}
    assert any("with provider credential 1" in line for line in hub.logs)


def test_a_provider_credential_joins_only_under_its_name() -> None:
    hub = hub_with(credentials=store())
    message = refused(hub, "provider", "p2", "prov-p1")
    assert message == "unauthorized: this credential binds the provider name 'p1', not 'p2'"


def test_with_credentials_every_hello_needs_one() -> None:
    hub = hub_with(credentials=store())
    assert refused(hub, "requestor", "r").startswith("unauthorized: this hub needs a token")
    assert refused(hub, "requestor", "r", "kiln_made_up") == "unauthorized: unknown or revoked token"
    # revoked, every one of them: still closed
    assert "unknown or revoked" in refused(hub_with(credentials=FakeCredentials()), "requestor", "r", "req")


def test_a_bound_name_cannot_be_taken_with_the_shared_token() -> None:
    hub = hub_with(token="s3cret", credentials=store())
    for name in ("p1", "gone"):  # the credential's provider connected or not, its credential live or revoked
        message = refused(hub, "provider", name, "s3cret")
        assert message.startswith(f"unauthorized: the provider name {name!r} is bound to a credential")
    welcomed(hub, "provider", "free", "s3cret")
    welcomed(hub, "requestor", "p1", "s3cret")  # a requestor's name binds nothing
    welcomed(hub, "provider", "p1", "prov-p1")  # both are accepted


def test_a_connected_providers_name_is_taken_even_for_its_own_credential() -> None:
    hub = hub_with(token="s3cret", credentials=store())
    first = welcomed(hub, "provider", "p1", "prov-p1")
    assert refused(hub, "provider", "p1", "prov-p1", close=CLOSE_NAME_TAKEN).startswith("name_taken")
    assert refused(hub, "provider", "p1", "s3cret").startswith("unauthorized")
    hub.core.disconnect(first, "test")
    welcomed(hub, "provider", "p1", "prov-p1")


def test_a_revoked_credential_closes_the_peers_that_joined_with_it() -> None:
    hub = hub_with(credentials=store())
    provider = welcomed(hub, "provider", "p1", "prov-p1")
    requestor = welcomed(hub, "requestor", "r", "req")
    other = welcomed(hub, "requestor", "r2", "adm")
    assert hub.core.revoked(set()) == []
    actions = hub.core.revoked({1, 2})
    errors = {a.peer: json.loads(a.data) for a in actions if isinstance(a, Send)}
    assert errors == {
        provider: {"type": "error", "code": "unauthorized", "message": "credential 1 was revoked"},
        requestor: {"type": "error", "code": "unauthorized", "message": "credential 2 was revoked"},
    }
    assert {a.peer: a.code for a in actions if isinstance(a, Close)} == {
        provider: CLOSE_UNAUTHORIZED,
        requestor: CLOSE_UNAUTHORIZED,
    }
    assert other not in errors
    assert hub.core.credentials_in_use() == {3}
    assert hub.core.revoked({1, 2}) == []  # closed once


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_an_empty_hello_token_is_no_token(token: str | None) -> None:
    hub = hub_with(token=token, credentials=store())
    assert refused(hub, "requestor", "r", "").startswith("unauthorized: this hub needs a token")


def test_who_may_look_at_the_dashboard_and_the_metrics() -> None:
    credentials = store()
    assert viewer("adm", None, credentials) == Viewer(True, 3, "admin")
    assert viewer("req", None, credentials) == Viewer(False, 2, "alice")
    assert viewer("prov-p1", None, credentials) is None  # a provider credential sees nothing
    assert viewer("shared", "shared", credentials) == Viewer(True, None, "admin")
    assert viewer("wrong", "shared", credentials) is None
    assert viewer(None, "shared", None) is None
    assert viewer(None, None, credentials) is None  # credentials were made: one is needed
    assert viewer(None, None, FakeCredentials(ever=False)) == Viewer(True, None, "admin")  # an open hub
