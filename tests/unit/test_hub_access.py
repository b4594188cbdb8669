"""Who the hub's core admits, and as what: literal hellos against a fake credential store."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from kiln.hub.access import Credential
from kiln.hub.actions import Close, Log, Send
from kiln.hub.core import CLOSE_NAME_TAKEN, CLOSE_UNAUTHORIZED, HubCore


@dataclass
class FakeCredentials:
    """Tokens by value; ``ever`` says whether the hub holds (or held) any credential."""

    live: dict[str, Credential] = field(default_factory=dict)
    bound_names: set[str] = field(default_factory=set)
    ever: bool = True

    def required(self) -> bool:
        return self.ever

    def find(self, token: str) -> Credential | None:
        return self.live.get(token)

    def bound(self, name: str) -> bool:
        return name in self.bound_names


def store() -> FakeCredentials:
    return FakeCredentials(
        live={
            "prov-p1": Credential(1, "provider", "p1"),
            "req": Credential(2, "requestor", "alice"),
            "adm": Credential(3, "admin", None),
        },
        bound_names={"p1", "gone"},  # "gone": a revoked provider credential's name
    )


class Hub:
    def __init__(self, token: str | None = None, credentials: FakeCredentials | None = None) -> None:
        self.core = HubCore(token=token, credentials=credentials)
        self.next = 1
        self.closed: dict[int, Close] = {}
        self.logs: list[str] = []

    def hello(self, role: str, name: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
        """A new peer's hello; returns its id and the hub's one answer to it."""
        peer, self.next = self.next, self.next + 1
        self.core.connect(peer)
        hello = {"type": "hello", "version": "1.2", "role": role, "name": name}
        if token is not None:
            hello["token"] = token
        return peer, self.one(self.core.receive_text(peer, json.dumps(hello).encode()))

    def one(self, actions: list[Any]) -> dict[str, Any]:
        sent = []
        for action in actions:
            if isinstance(action, Send):
                sent.append(json.loads(action.data))
            elif isinstance(action, Close):
                self.closed[action.peer] = action
            elif isinstance(action, Log):
                self.logs.append(action.text)
        [answer] = sent
        assert isinstance(answer, dict)
        return answer

    def refused(self, role: str, name: str, token: str | None = None, close: int = CLOSE_UNAUTHORIZED) -> str:
        peer, answer = self.hello(role, name, token)
        assert answer["type"] == "error", answer
        assert "re" not in answer
        assert self.closed[peer].code == close
        assert self.core.peers[peer].role is None
        return str(answer["code"]) + ": " + str(answer["message"])

    def welcomed(self, role: str, name: str, token: str | None = None) -> int:
        peer, answer = self.hello(role, name, token)
        assert answer["type"] == "welcome", answer
        return peer


def test_an_open_hub_admits_anyone_and_ignores_a_token() -> None:
    for hub in (Hub(), Hub(credentials=FakeCredentials(ever=False))):
        hub.welcomed("provider", "p1")
        hub.welcomed("requestor", "r", token="anything")


def test_the_shared_token_alone_admits_any_role_and_refuses_others() -> None:
    hub = Hub(token="s3cret")
    hub.welcomed("provider", "p1", "s3cret")
    hub.welcomed("requestor", "r", "s3cret")
    assert hub.refused("requestor", "r", "nope") == "unauthorized: wrong token"
    assert hub.refused("requestor", "r").startswith("unauthorized: this hub needs a token")


def test_a_provider_credential_cannot_rent_and_a_requestor_credential_cannot_offer() -> None:
    hub = Hub(credentials=store())
    assert "cannot join as a requestor" in hub.refused("requestor", "p1", "prov-p1")
    assert "cannot join as a provider" in hub.refused("provider", "alice", "req")
    assert "admin credential cannot join as a provider" in hub.refused("provider", "x", "adm")
    requestor = hub.welcomed("requestor", "anything", "req")
    admin = hub.welcomed("requestor", "ops", "adm")
    provider = hub.welcomed("provider", "p1", "prov-p1")
    assert hub.core.peers[provider].credential == Credential(1, "provider", "p1")
    assert hub.core.peers[requestor].credential == Credential(2, "requestor", "alice")
    assert hub.core.peers[admin].credential == Credential(3, "admin", None)
    assert hub.core.credentials_in_use() == {1, 2, 3}
    assert any("with provider credential 1" in line for line in hub.logs)


def test_a_provider_credential_joins_only_under_its_name() -> None:
    hub = Hub(credentials=store())
    message = hub.refused("provider", "p2", "prov-p1")
    assert message == "unauthorized: this credential binds the provider name 'p1', not 'p2'"


def test_with_credentials_every_hello_needs_one() -> None:
    hub = Hub(credentials=store())
    assert hub.refused("requestor", "r").startswith("unauthorized: this hub needs a token")
    assert hub.refused("requestor", "r", "kiln_made_up") == "unauthorized: unknown or revoked token"
    # revoked, every one of them: still closed
    assert "unknown or revoked" in Hub(credentials=FakeCredentials()).refused("requestor", "r", "req")


def test_a_bound_name_cannot_be_taken_with_the_shared_token() -> None:
    hub = Hub(token="s3cret", credentials=store())
    for name in ("p1", "gone"):  # the credential's provider connected or not, its credential live or revoked
        message = hub.refused("provider", name, "s3cret")
        assert message.startswith(f"unauthorized: the provider name {name!r} is bound to a credential")
    hub.welcomed("provider", "free", "s3cret")
    hub.welcomed("requestor", "p1", "s3cret")  # a requestor's name binds nothing
    hub.welcomed("provider", "p1", "prov-p1")  # both are accepted


def test_a_connected_providers_name_is_taken_even_for_its_own_credential() -> None:
    hub = Hub(token="s3cret", credentials=store())
    first = hub.welcomed("provider", "p1", "prov-p1")
    assert hub.refused("provider", "p1", "prov-p1", close=CLOSE_NAME_TAKEN).startswith("name_taken")
    assert hub.refused("provider", "p1", "s3cret").startswith("unauthorized")
    hub.core.disconnect(first, "test")
    hub.welcomed("provider", "p1", "prov-p1")


def test_a_revoked_credential_closes_the_peers_that_joined_with_it() -> None:
    hub = Hub(credentials=store())
    provider = hub.welcomed("provider", "p1", "prov-p1")
    requestor = hub.welcomed("requestor", "r", "req")
    other = hub.welcomed("requestor", "r2", "adm")
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
    hub = Hub(token=token, credentials=store())
    assert hub.refused("requestor", "r", "").startswith("unauthorized: this hub needs a token")
