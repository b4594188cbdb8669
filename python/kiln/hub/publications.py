"""Published ports (1.7): the tokens that let a browser reach a port of an activity through the hub.

A requestor's ``publish`` makes a token (256 random bits, base64url: never guessable); the hub's
publish listener (:mod:`kiln.hub.io.published`) carries each HTTP request under ``/s/<token>/``
to the port, over a ``connect`` the hub opens itself. A publication belongs to the session that
made it (only that session may ``unpublish`` it) and lives until ``unpublish``, the end of its
activity, or the end of that session. None outlives the hub: they are not written down.

Pure bookkeeping, no I/O; :class:`~kiln.hub.core.HubCore` keeps one :class:`Publications`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

MAX_PER_SESSION: Final = 64
"""Ports one requestor session may have published at once."""
TOKEN_BYTES: Final = 32
"""Random bytes in a token (256 bits)."""


@dataclass(frozen=True, slots=True)
class Publication:
    """One published port: ``port`` of ``activity``, for the session ``session``."""

    token: str
    activity: str
    port: int
    session: str


class Publications:
    """The live publications, by token, by activity and by session."""

    def __init__(self, new_token: Callable[[], str] = lambda: secrets.token_urlsafe(TOKEN_BYTES)) -> None:
        self._new_token = new_token
        self._tokens: dict[str, Publication] = {}
        self._by_activity: dict[str, set[str]] = {}
        self._by_session: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._tokens)

    def get(self, token: str) -> Publication | None:
        return self._tokens.get(token)

    def count(self, session: str) -> int:
        """How many publications ``session`` holds."""
        return len(self._by_session.get(session, ()))

    def add(self, activity: str, port: int, session: str) -> Publication:
        """Publish ``port`` of ``activity`` for ``session`` under a new token."""
        token = self._new_token()
        while token in self._tokens:  # 256 random bits never collide; a test's tokens might
            token = self._new_token()
        publication = self._tokens[token] = Publication(token, activity, port, session)
        self._by_activity.setdefault(activity, set()).add(token)
        self._by_session.setdefault(session, set()).add(token)
        return publication

    def remove(self, token: str) -> Publication | None:
        """Withdraw ``token`` (None: it was not published)."""
        publication = self._tokens.pop(token, None)
        if publication is not None:
            _discard(self._by_activity, publication.activity, token)
            _discard(self._by_session, publication.session, token)
        return publication

    def of_activity(self, activity: str) -> list[str]:
        """The tokens that publish ports of ``activity``, sorted."""
        return sorted(self._by_activity.get(activity, ()))

    def of_session(self, session: str) -> list[str]:
        """The tokens ``session`` published, sorted."""
        return sorted(self._by_session.get(session, ()))


def _discard(index: dict[str, set[str]], key: str, token: str) -> None:
    tokens = index.get(key)
    if tokens is not None:
        tokens.discard(token)
        if not tokens:
            del index[key]
