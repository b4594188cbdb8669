"""Who may join the hub, and as what: the rules a ``hello``'s token is judged by, with no I/O.

A hub admits peers in one of four ways, by what it was given:

* **open** (no ``--token``, no credential ever created): anyone, any role, any free name;
* **a shared token** (``kiln hub --token T``): a hello carrying T joins as any role, under
  any name that is free and bound to no credential (a shortcut for demos and tests);
* **credentials** (``kiln token create``, kept by :mod:`kiln.hub.io.state`): each admits one
  role. A ``provider`` credential joins only as a provider, and only under the name it
  binds; a ``requestor`` or ``admin`` credential joins only as a requestor. Once any
  credential was created (revoking it does not reopen the hub), every hello needs one;
* **both**: either the shared token or a credential admits.

Every refusal here is ``unauthorized`` (close 4002): it lasts until the peer is given another
token, so a client must not retry it. A name held by a *connected* provider is the core's to
refuse (``name_taken``, 4004), which passes once that provider is gone.

Use: :func:`admit` with the hello, the shared token and the store, then act on the verdict.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Final, Literal, Protocol, TypeAlias

from kiln.protocol.messages import Hello

Role: TypeAlias = Literal["provider", "requestor", "admin"]
ROLES: tuple[Role, ...] = ("provider", "requestor", "admin")


@dataclass(frozen=True, slots=True)
class Credential:
    """A live credential: what its token lets a peer be."""

    id: int
    role: Role
    name: str | None
    """A provider credential's: the one name it joins under. Others': a label for people."""


class Credentials(Protocol):
    """The lookups the hub makes of its credential store (:class:`kiln.hub.io.state.HubState`)."""

    def required(self) -> bool:
        """Whether any credential was ever created, revoked ones too: then every hello needs one."""
        ...

    def find(self, token: str) -> Credential | None:
        """The live (not revoked) credential whose token this is, if any."""
        ...

    def bound(self, name: str) -> bool:
        """Whether a provider credential, live or revoked, binds this name."""
        ...


class Directory(Protocol):
    """What the image store asks of the credential store to name tenants (:mod:`kiln.hub.catalog`)."""

    def tenant(self, name: str) -> Credential | None:
        """The live requestor or admin credential named ``name``, or with the id ``#<id>``."""
        ...

    def names(self, ids: set[int]) -> dict[int, str]:
        """The names of those of the credentials ``ids`` that have one."""
        ...


@dataclass(frozen=True, slots=True)
class Admitted:
    credential: Credential | None
    """The credential the peer joined with; ``None`` on an open hub or with the shared token."""


PROVIDER_AS_REQUESTOR: Final = "a provider credential cannot join as a requestor"
"""How a refusal begins for a live provider credential offered by a requestor (``kiln doctor``
dials as one, and reads this as: the token is good)."""


@dataclass(frozen=True, slots=True)
class Refused:
    """Refuse the hello: ``unauthorized`` with this message, then close 4002."""

    message: str


def admit(hello: Hello, token: str | None, credentials: Credentials | None) -> Admitted | Refused:
    """Judge ``hello`` on a hub with the shared ``token`` (or none) and the store ``credentials`` (or none)."""
    given = hello.token
    if given and credentials is not None:
        credential = credentials.find(given)
        if credential is not None:
            return _as(hello, credential)
    if given and token is not None and hmac.compare_digest(given.encode(), token.encode()):
        if hello.role == "provider" and credentials is not None and credentials.bound(hello.name):
            return Refused(
                f"the provider name {hello.name!r} is bound to a credential: join under it with that "
                "credential's token, or take another name"
            )
        return Admitted(None)
    required = credentials is not None and credentials.required()
    if token is None and not required:
        return Admitted(None)  # an open hub: a token, if any, is not looked at
    if not given:
        return Refused("this hub needs a token in hello and none was given")
    return Refused("unknown or revoked token" if required else "wrong token")


def _as(hello: Hello, credential: Credential) -> Admitted | Refused:
    if credential.role == "provider":
        if hello.role != "provider":
            return Refused(f"{PROVIDER_AS_REQUESTOR}: use a requestor credential")
        if hello.name != credential.name:
            return Refused(f"this credential binds the provider name {credential.name!r}, not {hello.name!r}")
    elif hello.role != "requestor":
        return Refused(f"a {credential.role} credential cannot join as a provider: use a provider credential")
    return Admitted(credential)


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who looks at the hub's dashboard or its metrics: an admin sees everything; a requestor
    credential only its own activities and jobs (and no metrics)."""

    admin: bool
    credential: int | None = None
    """The credential it showed (``None``: the shared token, or an open hub)."""
    name: str = ""
    """Whom to greet: the credential's name, or its role."""


def viewer(given: str | None, token: str | None, credentials: Credentials | None) -> Viewer | None:
    """Who the token ``given`` (a bearer token, or what a dashboard's login was given) shows, on a hub
    with the shared ``token`` and the store ``credentials``: ``None`` for nobody allowed.

    An admin credential and the shared token are admins; a requestor credential sees its own; a
    provider credential sees nothing. On an open hub (no token, no credential ever made) anyone is
    an admin, as anyone may join it as anything.
    """
    if given and credentials is not None:
        credential = credentials.find(given)
        if credential is not None:
            if credential.role == "provider":
                return None
            return Viewer(credential.role == "admin", credential.id, credential.name or credential.role)
    if given and token is not None and hmac.compare_digest(given.encode(), token.encode()):
        return Viewer(True, None, "admin")
    if token is None and not (credentials is not None and credentials.required()):
        return Viewer(True, None, "admin")
    return None
