"""A hub's seat among the hubs sharing one PostgreSQL database (``kiln hub --db postgresql://...``).

The seat is the hub's row in the ``hubs`` table: written when it starts, its ``seen`` renewed
every :data:`HEARTBEAT` seconds, deleted when it stops. A hub not seen for
:data:`~kiln.hub.io.state.DEAD_AFTER` seconds (by the database's clock) is dead: the
providers it held may join another hub, and the sessions it held are adopted by the hub their
requestor, or the provider of one of their activities, reaches next (:mod:`kiln.hub.cluster`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Final

from kiln.hub.io.state import DEAD_AFTER, HubState

log = logging.getLogger("kiln.hub.io.seat")

HEARTBEAT: Final = DEAD_AFTER / 5
"""Seconds between two heartbeats: a hub is found dead after missing five in a row."""


class Seat:
    """This hub's row among the hubs of its database, kept alive while :meth:`keep` runs."""

    def __init__(self, state: HubState, address: str) -> None:
        self.state = state
        self.address = address
        self.secret = secrets.token_urlsafe(32)
        """What this hub shows another it dials (``Authorization: Bearer``): the other finds it by
        its sha256 among the live hubs' (:meth:`HubState.hub_of`). New at each start."""
        self.slot = 0
        """This hub's share of the ids a provider sees (1 to 63), once joined."""

    def join(self) -> None:
        self.slot = self.state.join(self.address, self.secret)
        others = [(hub, address) for hub, address, _ in self.state.hubs() if hub != self.state.hub]
        shown = ", ".join(f"{address} ({hub})" for hub, address in others) or "none yet"
        log.info(
            "hub %s at %s joined the hubs of %s; the others: %s", self.state.hub, self.address, self.state.where, shown
        )

    async def keep(self) -> None:
        """Renew the heartbeat until cancelled; a beat that fails is logged, and the next one tried.

        A hub whose row went (the others took it for dead: it missed its beats for DEAD_AFTER
        seconds, its event loop or its database stalled) joins again under its slot; if another
        hub has that slot now, this one stops (a KilnError): the ids its providers answer carry it."""
        failing = False
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                if not self.state.beat():
                    log.warning("the other hubs took this one for dead; joining again under slot %d", self.slot)
                    self.state.join(self.address, self.secret, self.slot)
            except self.state.errors as e:
                if not failing:
                    log.error("cannot renew this hub's heartbeat in %s: %s", self.state.where, e)
                failing = True
            else:
                if failing:
                    log.info("this hub's heartbeat is renewed again")
                failing = False

    def leave(self) -> None:
        """This hub stops: what it held is anyone's to adopt at once."""
        try:
            self.state.leave()
        except self.state.errors as e:
            log.warning(
                "cannot remove this hub from %s (the others find it dead in %g s): %s", self.state.where, DEAD_AFTER, e
            )
