"""The dashboard's live connection, ``/api/live``: a WebSocket on which a browser says which page it
shows and the hub sends that page again whenever it changed.

The browser sends a query (``{"page": "activities", "filter": "", "job": null}``, see
:func:`kiln.hub.views.parse_query`) when it opens the connection and each time its page changes.
Every :data:`REFRESH` seconds the hub makes the page (:func:`kiln.hub.views.page`) and sends it if it
differs from what it sent last: a change shows within about a second. A page is made once per round
for every viewer that asks the same (a round's pages are shared), and is sent only when what was sent
before has drained: a browser that reads slowly gets fewer pages, never a growing buffer. On the
Overview, the history's samples (:mod:`kiln.hub.history`) go once in full, then as they are taken.

At most :data:`MAX_VIEWERS` dashboards are connected at once, :data:`MAX_VIEWERS_EACH` of one
credential; one more is closed (1013, try again later). A query that is not one closes the
connection (1008). Who may connect (a session cookie or a bearer token, the Origin) is decided
before: :mod:`kiln.hub.io.http` sets the connection's ``viewer``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import orjson
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from kiln.hub.access import Viewer
from kiln.hub.core import HubCore
from kiln.hub.history import History
from kiln.hub.io.connections import HubConnection
from kiln.hub.views import Query, history_rows, page, parse_query, reading, series, totals
from kiln.protocol.codes import CLOSE_UNAUTHORIZED

log = logging.getLogger("kiln.hub")

MAX_VIEWERS: Final = 64
MAX_VIEWERS_EACH: Final = 8
"""Dashboards one credential may have connected at once (so that a requestor's cannot fill
:data:`MAX_VIEWERS` and keep an admin's out)."""
REFRESH: Final = 0.5
"""Seconds between two looks at a viewer's page."""
MIN_GAP: Final = 0.1
"""Seconds at least between two pages made for one dashboard: one that sends queries as fast as it
can (each a new filter, a pass over the providers) is answered the last of them, ten times a second."""
UNREAD_BYTES: Final = 4 * 2**20
"""Bytes a dashboard may leave unread toward it (a few pages: the largest is a few hundred KiB)
before its connection is cut (see :data:`kiln.hub.io.connections.UNREAD_BYTES`)."""


@dataclass(eq=False, slots=True)
class Watcher:
    """One connected dashboard: who looks, at what, and what it was sent."""

    viewer: Viewer
    ws: HubConnection
    query: Query | None = None
    sent: bytes = b""
    history_after: float = -math.inf
    history_sent: bool = False
    asked: asyncio.Event = field(default_factory=asyncio.Event)
    revoked: bool = False


class Live:
    """The dashboards connected to one hub, and the sampler of its history."""

    def __init__(
        self,
        core: HubCore,
        history: History | None = None,
        *,
        max_viewers: int = MAX_VIEWERS,
        refresh: float = REFRESH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.core = core
        self.history = history or History()
        self.max_viewers = max_viewers
        self.refresh = refresh
        self.clock = clock
        self.watchers: set[Watcher] = set()
        self._round = -1
        self._made: dict[tuple[bool, int | None, Query], bytes] = {}

    @property
    def viewers(self) -> int:
        """Dashboards connected now."""
        return len(self.watchers)

    def credentials(self) -> set[int]:
        """The credentials the connected dashboards were let in with (the hub checks them for revocations)."""
        return {w.viewer.credential for w in self.watchers if w.viewer.credential is not None}

    def revoke(self, ids: set[int]) -> None:
        """Close the dashboards let in with one of the credentials ``ids`` (revoked): 4002, as a peer's."""
        for watcher in self.watchers:
            if watcher.viewer.credential in ids and not watcher.revoked:
                watcher.revoked = True
                watcher.ws.stop_taking()

    async def sample(self) -> None:
        """Record the hub into its history every ``history.step`` seconds, until cancelled."""
        while True:
            self.history.record(self.clock(), reading(self.core, totals(self.core)))
            await asyncio.sleep(self.history.step)

    async def serve(self, ws: HubConnection, viewer: Viewer) -> None:
        """Serve one dashboard until its connection ends."""
        if len(self.watchers) >= self.max_viewers:
            ws.stop_taking()
            await ws.close(CloseCode.TRY_AGAIN_LATER, f"at most {self.max_viewers} dashboards at once")
            return
        if viewer.credential is not None:
            own = sum(1 for w in self.watchers if w.viewer.credential == viewer.credential)
            if own >= MAX_VIEWERS_EACH:
                ws.stop_taking()
                await ws.close(CloseCode.TRY_AGAIN_LATER, f"at most {MAX_VIEWERS_EACH} dashboards of one credential")
                return
        watcher = Watcher(viewer, ws)
        self.watchers.add(watcher)
        ws.unread_bound = UNREAD_BYTES
        refused = ""

        def take(data: bytes, text: bool) -> None:
            nonlocal refused
            try:
                watcher.query = parse_query(data)
            except ValueError as e:
                refused = str(e)[:120]
                ws.stop_taking()
                return
            watcher.sent = b""
            if watcher.query.page != "overview":
                watcher.history_after, watcher.history_sent = -math.inf, False
            watcher.asked.set()

        ws.take_messages(take)
        hello = {"type": "hello", "name": viewer.name, "admin": viewer.admin, "now": self.clock()}
        try:
            async with asyncio.TaskGroup() as tg:
                sender = tg.create_task(self._send_pages(ws, watcher, orjson.dumps(hello)))
                failure = await asyncio.shield(ws.ended)
                sender.cancel()
            if watcher.revoked:
                await ws.close(CLOSE_UNAUTHORIZED, "the credential of this dashboard's login was revoked")
            elif refused:
                await ws.close(CloseCode.POLICY_VIOLATION, refused)
            elif failure is not None:
                await ws.close(failure.code, failure.reason)
        except* ConnectionClosed:
            pass
        finally:
            self.watchers.discard(watcher)

    async def _send_pages(self, ws: HubConnection, watcher: Watcher, hello: bytes) -> None:
        await ws.send(hello.decode())
        loop = asyncio.get_running_loop()
        made_at = -math.inf
        while True:
            try:
                async with asyncio.timeout(self.refresh):
                    await watcher.asked.wait()
            except TimeoutError:
                pass
            watcher.asked.clear()
            if watcher.query is None or ws.transport.get_write_buffer_size() > 0:
                continue  # nothing asked yet, or the last page has not drained: skip this round
            if (wait := made_at + MIN_GAP - loop.time()) > 0:
                await asyncio.sleep(wait)
                watcher.asked.clear()  # the queries that came meanwhile: this page answers the last
            made_at = loop.time()
            made = self._page(watcher.viewer, watcher.query)
            if made != watcher.sent:
                watcher.sent = made
                await ws.send(made.decode())
            if watcher.query.page == "overview":
                await self._send_history(ws, watcher)

    async def _send_history(self, ws: HubConnection, watcher: Watcher) -> None:
        """The samples ``watcher`` was not sent yet: all of them first (``reset``), then the new ones."""
        rows = history_rows(self.history, watcher.viewer, watcher.history_after)
        reset = not watcher.history_sent
        if not rows and not reset:
            return
        watcher.history_sent = True
        if rows:
            watcher.history_after = rows[-1][0]
        message = {"type": "history", "reset": reset, "series": list(series(watcher.viewer)), "rows": rows}
        await ws.send(orjson.dumps(message).decode())

    def _page(self, viewer: Viewer, query: Query) -> bytes:
        """The page ``query`` asks for as ``viewer`` sees it, made once a round for all who ask the same."""
        now = asyncio.get_running_loop().time()
        round_ = int(now / self.refresh)
        if round_ != self._round:
            self._round = round_
            self._made.clear()
        key = (viewer.admin, viewer.credential, query)
        made = self._made.get(key)
        if made is None:
            shown = page(self.core, viewer, query, self.history, self.clock())
            made = self._made[key] = orjson.dumps(shown)
        return made
