"""Plain HTTP on the hub's port, beside the WebSocket upgrades of its peers.

websockets reads each connection's opening request and hands it to :meth:`Front.process_request`
before any upgrade; what that answers goes back as a plain HTTP response, and the connection
closes. ``GET`` only, and never a body (websockets refuses a request that has one):

* ``/healthz``: 200 while the hub serves, 503 once it stops; open to anyone;
* ``/metrics``: the Prometheus text format (:mod:`kiln.hub.io.metrics`), for an admin only unless
  the hub was started with ``public_metrics`` (``kiln hub --public-metrics``);
* ``/api/login`` with ``Authorization: Bearer <token>``: 204 and a session cookie
  (:data:`SESSION_COOKIE`) that stands for the token from then on (:class:`Logins`);
  ``/api/logout`` forgets it; ``/api/me`` says who the request shows (JSON ``{admin, name}``, or ``null`` for nobody);
* ``/`` and ``/assets/<file>``: the dashboard's files, from the package ``kiln.hub.dashboard``
  (:class:`Assets`), under a content security policy that lets the page fetch from the hub alone;
* ``/hub/blobs/<sha256:...>``: for another hub of the same database (``kiln hub --db
  postgresql://...``) that lacks a blob a provider of its needs (:mod:`kiln.hub.io.shared`). It
  shows its token (``Authorization: Bearer``: its :attr:`~kiln.hub.io.seat.Seat.secret`, which
  must be a live hub's; else 401, counted as a failed hello), and upgrades to a WebSocket on which
  the blob's bytes come, streamed from its file (404 for a blob this hub does not hold, 426 for
  a request that does not upgrade);
* anything else: 404.

A WebSocket upgrade to :data:`LIVE_PATH` is the dashboard's live feed: it needs a viewer (the
cookie, or a bearer token) and, when the browser names an ``Origin``, that origin to be the hub
itself; the connection's :attr:`~kiln.hub.io.connections.HubConnection.viewer` is set and the upgrade
goes on. Every other upgrade is a peer speaking kiln.v1, judged by its hello as before.

A wrong bearer token counts as a failed hello of its address (:class:`kiln.hub.gate.Gate`): while
the address has failed too often, any request of it showing a token is answered 429, as its hellos
are refused, so that HTTP is no faster a way to guess a token.

Who sees what is :func:`kiln.hub.access.viewer`'s: an admin credential or the shared token is an
admin, a requestor credential sees its own activities (and no metrics), a provider credential
nothing; on an open hub anyone is an admin.
"""

from __future__ import annotations

import email.utils
import hashlib
import http
import importlib.resources
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Final
from urllib.parse import unquote, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from kiln.hub.access import Credentials, Viewer, viewer
from kiln.hub.images import is_digest
from kiln.hub.io.connections import LINK_PATH, HubConnection, LinkAsk
from kiln.hub.io.metrics import CONTENT_TYPE, Metrics

SESSION_COOKIE: Final = "kiln_session"
MAX_LOGINS: Final = 1024
"""Sessions the hub keeps; a login past them forgets the oldest."""
MAX_LOGINS_EACH: Final = 16
"""Sessions one credential keeps; its login past them forgets its own oldest (so that a requestor
logging in again and again cannot push an admin's sessions out of :data:`MAX_LOGINS`)."""
LOGIN_TTL: Final = 12 * 3600.0
"""Seconds a session lasts from its login."""
LIVE_PATH: Final = "/api/live"
BLOBS_PATH: Final = "/hub/blobs/"
DASHBOARD_PACKAGE: Final = "kiln.hub.dashboard"
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".LICENSE": "text/plain; charset=utf-8",
}
"""The dashboard's files the hub serves, by how their names end: any other file is not served."""
MAX_ASSETS: Final = 256
MAX_ASSET_BYTES: Final = 8 * 2**20
"""Bounds of what :class:`Assets` holds in memory: files past them are not served (and logged)."""
MAX_DEPTH: Final = 2
"""Folders deep under the package that files are served from (``assets/vendor/x.js``)."""
SECURITY: Final = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)
"""Headers of every response: no sniffing of content types, no framing, no referrer."""
CSP: Final = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
"""The dashboard's content security policy: nothing fetched from elsewhere, no inline script."""


@dataclass(frozen=True, slots=True)
class Login:
    viewer: Viewer
    expires: float


class Logins:
    """The dashboard's sessions: a random secret (the cookie) for the viewer a login's token showed.

    In memory only (a restart logs everyone out), at most ``limit`` (the oldest forgotten) and
    ``each`` of one credential (its oldest forgotten), each for ``ttl`` seconds. The secrets are
    kept as their sha256, so that finding one takes as long whatever it is. Forget those of revoked
    credentials with :meth:`revoke`.
    """

    def __init__(
        self,
        limit: int = MAX_LOGINS,
        ttl: float = LOGIN_TTL,
        clock: Callable[[], float] = time.monotonic,
        each: int = MAX_LOGINS_EACH,
    ):
        self.limit = limit
        self.each = each
        self.ttl = ttl
        self._clock = clock
        self._logins: OrderedDict[bytes, Login] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._logins)

    def open(self, who: Viewer) -> str:
        """A new session for ``who``: the secret its cookie carries."""
        secret = secrets.token_urlsafe(32)
        if who.credential is not None:
            own = [key for key, login in self._logins.items() if login.viewer.credential == who.credential]
            for key in own[: len(own) - self.each + 1]:
                del self._logins[key]
        self._logins[_digest(secret)] = Login(who, self._clock() + self.ttl)
        while len(self._logins) > self.limit:
            self._logins.popitem(last=False)
        return secret

    def find(self, secret: str) -> Viewer | None:
        """The viewer of the live session ``secret`` stands for, if any."""
        key = _digest(secret)
        login = self._logins.get(key)
        if login is None:
            return None
        if login.expires <= self._clock():
            del self._logins[key]
            return None
        return login.viewer

    def close(self, secret: str) -> None:
        self._logins.pop(_digest(secret), None)

    def credentials(self) -> set[int]:
        """The credentials the sessions were opened with (for the hub's look at revocations)."""
        return {login.viewer.credential for login in self._logins.values() if login.viewer.credential is not None}

    def revoke(self, ids: set[int]) -> None:
        """Forget every session opened with one of the credentials ``ids``."""
        for key in [key for key, login in self._logins.items() if login.viewer.credential in ids]:
            del self._logins[key]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


class Assets:
    """The dashboard's files, read once: the URL path of each (``/`` for ``index.html``, ``/assets/...``
    for the others) to its bytes. Only files with a name in :data:`CONTENT_TYPES` and plain names
    (letters, digits, ``.``, ``_``, ``-``; no leading dot), at most :data:`MAX_DEPTH` folders deep, are
    taken: a request is served by looking its path up here, never by opening a file it names."""

    def __init__(self, root: Traversable | None) -> None:
        self.files: dict[str, Asset] = {}
        held = 0
        for path, entry in _walk(root, ()) if root is not None else ():
            kind = _content_type(path[-1])
            if kind is None or len(self.files) >= MAX_ASSETS:
                continue
            body = entry.read_bytes()
            if held + len(body) > MAX_ASSET_BYTES:
                continue
            held += len(body)
            url = "/" if path == ("index.html",) else "/assets/" + "/".join(path)
            self.files[url] = Asset(body, kind, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')

    @classmethod
    def packaged(cls) -> Assets:
        """The files of the package :data:`DASHBOARD_PACKAGE` (none if it is not installed)."""
        try:
            return cls(importlib.resources.files(DASHBOARD_PACKAGE))
        except ModuleNotFoundError:
            return cls(None)


def _walk(folder: Traversable, above: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Traversable]]:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not _plain(entry.name):
            continue
        path = (*above, entry.name)
        if entry.is_file():
            yield path, entry
        elif entry.is_dir() and len(above) < MAX_DEPTH and entry.name != "__pycache__":
            yield from _walk(entry, path)


def _plain(name: str) -> bool:
    return bool(name) and not name.startswith(".") and all(c.isascii() and (c.isalnum() or c in "._-") for c in name)


def _content_type(name: str) -> str | None:
    dot = name.rfind(".")
    return CONTENT_TYPES.get(name[dot:]) if dot > 0 else None


class Front:
    """Answers the plain HTTP requests on the hub's port, and gates the dashboard's live feed.

    Pass :meth:`process_request` to websockets' ``serve``. ``stopping`` says whether the hub is
    stopping (health turns 503); ``token`` and ``credentials`` are the core's (who a token shows is
    judged as a hello is); ``tls`` marks the session cookie ``Secure``.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        token: str | None,
        credentials: Credentials | None,
        stopping: Callable[[], bool],
        public_metrics: bool = False,
        tls: bool = False,
        assets: Assets | None = None,
        logins: Logins | None = None,
    ) -> None:
        self.metrics = metrics
        self.token = token
        self.credentials = credentials
        self.stopping = stopping
        self.public_metrics = public_metrics
        self.tls = tls
        self.assets = assets if assets is not None else Assets.packaged()
        self.logins = logins or Logins()
        self.hubs: Callable[[str], tuple[str, int] | None] | None = None
        """Which live hub of the database a token is, and its slot (several hubs only: links)."""
        self.lending: Callable[[str], bool] | None = None
        """Whether a blob is on this hub's disk, for another hub of the database to fetch (several hubs only)."""

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """websockets' ``process_request``: a response to send instead of upgrading, or None to upgrade."""
        path = request.path.partition("?")[0]
        # A token shown here is guessed no faster than in a hello: the same bucket of failures.
        wait = connection.gate.refusing(connection.source) if isinstance(connection, HubConnection) else None
        if wait is not None and _bearer(request.headers):
            return _response(
                http.HTTPStatus.TOO_MANY_REQUESTS,
                b"too many wrong tokens from this address\n",
                headers=[("Retry-After", str(math.ceil(wait)))],
            )
        if path.startswith(BLOBS_PATH):
            return self._blob(connection, request, path.removeprefix(BLOBS_PATH))
        if _upgrading(request.headers):
            if path.startswith(LINK_PATH):
                return self._link(connection, request, path)
            return self._live(connection, request) if path == LIVE_PATH else None
        if request.method != "GET":
            return _response(http.HTTPStatus.METHOD_NOT_ALLOWED, b"only GET\n", headers=[("Allow", "GET")])
        if path == "/healthz":
            if self.stopping():
                return _response(http.HTTPStatus.SERVICE_UNAVAILABLE, b"stopping\n")
            return _response(http.HTTPStatus.OK, b"ok\n")
        if path == "/metrics":
            return await self._metrics(connection, request)
        if path == "/api/login":
            return self._login(connection, request)
        if path == "/api/logout":
            return self._logout(request)
        if path == "/api/me":
            # Nobody is an answer (``null``: the page shows its login), not an error a browser logs;
            # a bearer token that shows nobody is one.
            who = self._viewer(request.headers, connection)
            if who is None and _bearer(request.headers) is not None:
                return _unauthorized()
            body = orjson.dumps(None if who is None else {"admin": who.admin, "name": who.name})
            return _response(http.HTTPStatus.OK, body, "application/json", cache="no-store")
        asset = self.assets.files.get(path)
        if asset is None:
            return _response(http.HTTPStatus.NOT_FOUND, b"not found\n")
        headers = [("ETag", asset.etag), ("Content-Security-Policy", CSP)]
        if asset.etag in request.headers.get_all("If-None-Match"):
            return _response(http.HTTPStatus.NOT_MODIFIED, b"", headers=headers, cache="no-cache")
        return _response(http.HTTPStatus.OK, asset.body, asset.content_type, headers=headers, cache="no-cache")

    def _viewer(self, headers: Headers, connection: ServerConnection) -> Viewer | None:
        """Who the request shows: its bearer token, else its session cookie, else nobody (anyone on an open hub)."""
        bearer = _bearer(headers)
        if bearer is not None:
            return self._bearer_viewer(bearer, connection)
        secret = _cookie(headers, SESSION_COOKIE)
        if secret is not None and (who := self.logins.find(secret)) is not None:
            return who
        return viewer(None, self.token, self.credentials)

    def _bearer_viewer(self, bearer: str | None, connection: ServerConnection) -> Viewer | None:
        """Who ``bearer`` shows; a token that is no credential nor the hub's counts as a failed hello
        of the connection's address (:meth:`kiln.hub.gate.Gate.failed`)."""
        who = viewer(bearer, self.token, self.credentials)
        known = who is not None or (self.credentials is not None and self.credentials.find(bearer or "") is not None)
        if bearer and not known and isinstance(connection, HubConnection):
            connection.gate.failed(connection.source)
        return who

    async def _metrics(self, connection: ServerConnection, request: Request) -> Response:
        if not self.public_metrics:
            who = self._viewer(request.headers, connection)
            if who is None:
                return _unauthorized()
            if not who.admin:
                return _response(http.HTTPStatus.FORBIDDEN, b"the metrics need an admin credential\n")
        return _response(http.HTTPStatus.OK, await self.metrics.exposition(), CONTENT_TYPE, cache="no-store")

    def _login(self, connection: ServerConnection, request: Request) -> Response:
        who = self._bearer_viewer(_bearer(request.headers), connection)
        if who is None:
            return _unauthorized()
        cookie = f"{SESSION_COOKIE}={self.logins.open(who)}; HttpOnly; SameSite=Strict; Path=/"
        cookie += f"; Max-Age={int(self.logins.ttl)}" + ("; Secure" if self.tls else "")
        return _response(http.HTTPStatus.NO_CONTENT, b"", headers=[("Set-Cookie", cookie)], cache="no-store")

    def _logout(self, request: Request) -> Response:
        secret = _cookie(request.headers, SESSION_COOKIE)
        if secret is not None:
            self.logins.close(secret)
        cookie = f"{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0" + ("; Secure" if self.tls else "")
        return _response(http.HTTPStatus.NO_CONTENT, b"", headers=[("Set-Cookie", cookie)], cache="no-store")

    def _link(self, connection: ServerConnection, request: Request, path: str) -> Response | None:
        """Another hub of the database, to a provider connected here (:mod:`kiln.hub.io.links`):
        upgraded for a live hub's token only."""
        bearer = _bearer(request.headers)
        found = self.hubs(bearer) if self.hubs is not None and bearer else None
        if found is None:
            if bearer and isinstance(connection, HubConnection):
                connection.gate.failed(connection.source)
            return _unauthorized()
        if isinstance(connection, HubConnection):
            connection.link = LinkAsk(found[0], found[1], unquote(path.removeprefix(LINK_PATH)))
        return None

    def _live(self, connection: ServerConnection, request: Request) -> Response | None:
        """The dashboard's live feed: upgraded for a viewer, from the hub's own page (if a browser says)."""
        who = self._viewer(request.headers, connection)
        if who is None:
            return _unauthorized()
        origins = request.headers.get_all("Origin")
        if origins and not _same_origin(origins, request.headers.get_all("Host")):
            return _response(http.HTTPStatus.FORBIDDEN, b"the live feed is for the hub's own page\n")
        if isinstance(connection, HubConnection):
            connection.viewer = who
        return None

    def _blob(self, connection: ServerConnection, request: Request, digest: str) -> Response | None:
        """Another hub's fetch of a blob: upgraded when its token is a live hub's and the blob is here."""
        if self.lending is None or self.hubs is None:
            return _response(http.HTTPStatus.NOT_FOUND, b"not found\n")
        bearer = _bearer(request.headers)
        if not bearer or self.hubs(bearer) is None:
            if bearer and isinstance(connection, HubConnection):
                connection.gate.failed(connection.source)
            return _unauthorized()
        if not is_digest(digest) or not self.lending(digest):
            return _response(http.HTTPStatus.NOT_FOUND, b"this hub holds no such blob\n")
        if not _upgrading(request.headers):
            return _response(
                http.HTTPStatus.UPGRADE_REQUIRED, b"a blob comes over a WebSocket\n", headers=[("Upgrade", "websocket")]
            )
        if isinstance(connection, HubConnection):
            connection.blob = digest
        return None


def _upgrading(headers: Headers) -> bool:
    return any(word.strip().lower() == "websocket" for value in headers.get_all("Upgrade") for word in value.split(","))


def _bearer(headers: Headers) -> str | None:
    """The token of the one ``Authorization: Bearer`` header (``""`` for any other, or several)."""
    values = headers.get_all("Authorization")
    if not values:
        return None
    scheme, _, token = values[0].strip().partition(" ")
    if len(values) > 1 or scheme.lower() != "bearer":
        return ""  # shows nobody: viewer() admits no empty token, but on an open hub
    return token.strip()


def _cookie(headers: Headers, name: str) -> str | None:
    for value in headers.get_all("Cookie"):
        for pair in value.split(";"):
            key, sep, cookie = pair.strip().partition("=")
            if sep and key == name and cookie:
                return cookie
    return None


def _same_origin(origins: list[str], hosts: list[str]) -> bool:
    """Whether the one ``Origin`` is an http(s) page of the one ``Host`` the request was sent to."""
    if len(origins) != 1 or len(hosts) != 1:
        return False
    try:
        origin = urlsplit(origins[0])
    except ValueError:
        return False
    return origin.scheme in ("http", "https") and origin.netloc.lower() == hosts[0].strip().lower()


def _unauthorized() -> Response:
    return _response(
        http.HTTPStatus.UNAUTHORIZED,
        b"this needs a token: Authorization: Bearer <token>, or the dashboard's login\n",
        headers=[("WWW-Authenticate", 'Bearer realm="kiln"')],
    )


def _response(
    status: http.HTTPStatus,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    *,
    headers: list[tuple[str, str]] | None = None,
    cache: str = "no-store",
) -> Response:
    """A response that closes the connection once sent (as websockets does after any but an upgrade)."""
    fields = [("Date", email.utils.formatdate(usegmt=True)), ("Connection", "close")]
    if status not in (http.HTTPStatus.NO_CONTENT, http.HTTPStatus.NOT_MODIFIED):  # those have no body to describe
        fields += [("Content-Length", str(len(body))), ("Content-Type", content_type)]
    return Response(
        status.value, status.phrase, Headers([*fields, ("Cache-Control", cache), *SECURITY, *(headers or ())]), body
    )
