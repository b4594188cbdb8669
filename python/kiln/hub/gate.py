"""Who may hold connections to the hub, counted by source address, with no I/O.

A peer is known by its address long before its hello says who it is, so what it may hold
before then is bounded by address:

* **connections**: every connection from one address (its WebSocket handshake included)
  counts toward ``per_address``; one past it is turned away (``too_many``, close 4008);
* **waiting**: connections from one address that have not said hello yet count toward
  ``waiting_per_address`` (the hub also keeps at most ``MAX_UNWELCOMED`` of them in all);
* **failed hellos**: each hello refused (a wrong token, a malformed first frame) takes a
  token from its address's bucket of ``failed_hellos`` (refilled at ``failed_hellos`` a
  minute). While the bucket is empty every hello from that address is refused unread
  (``too_many``, close 4009), the right ones too: a guesser learns nothing faster than that.

IPv6 addresses count by their /64 (one host usually holds a whole /64). Past that, the
credential a hello carries bounds its connections (:class:`kiln.hub.core.HubCore`).

Use: :meth:`Gate.opened` when a connection is accepted (it says whether to refuse it),
:meth:`Gate.welcomed` once its hello is taken, :meth:`Gate.failed` when a hello is refused,
:meth:`Gate.closed` when it ends; :meth:`Gate.refusing` before reading a hello.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from kiln.protocol.errors import UsageError

PER_ADDRESS: Final = 4096
"""Connections one source address may hold (providers behind one NAT share an address)."""
WAITING_PER_ADDRESS: Final = 256
"""Connections one source address may hold that have not said hello yet."""
FAILED_HELLOS: Final = 30
"""Hellos a source address may have refused at once, and again every minute."""
TRACKED: Final = 65536
"""Addresses whose failed hellos are remembered; past it, the fullest buckets are forgotten first."""


def source(peername: object) -> str:
    """The key a connection from ``peername`` (a socket's ``getpeername()``) counts under."""
    host = peername[0] if isinstance(peername, tuple) and peername else None
    if not isinstance(host, str):
        return "local"
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(slots=True)
class Gate:
    """Counts of what each source address holds, and its failed hellos."""

    per_address: int = PER_ADDRESS
    waiting_per_address: int = WAITING_PER_ADDRESS
    failed_hellos: int = FAILED_HELLOS
    clock: Callable[[], float] = time.monotonic
    connections: Counter[str] = field(default_factory=Counter)
    waiting: Counter[str] = field(default_factory=Counter)
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # address -> (tokens, when)

    def __post_init__(self) -> None:
        if self.per_address < 1 or self.waiting_per_address < 1 or self.failed_hellos < 1:
            raise UsageError("the connection caps and the failed hellos per minute must be at least 1")

    def opened(self, address: str) -> str | None:
        """A connection from ``address`` was accepted: counted, and why to refuse it (or ``None``)."""
        self.connections[address] += 1
        self.waiting[address] += 1
        if self.connections[address] > self.per_address:
            return f"too many connections from {address} (at most {self.per_address})"
        if self.waiting[address] > self.waiting_per_address:
            return f"too many connections from {address} waiting to say hello (at most {self.waiting_per_address})"
        return None

    def welcomed(self, address: str) -> None:
        """A connection from ``address`` said hello and was welcomed: it no longer waits."""
        self._less(self.waiting, address)

    def closed(self, address: str, *, waiting: bool) -> None:
        """A connection from ``address`` ended (``waiting``: before it was welcomed)."""
        self._less(self.connections, address)
        if waiting:
            self._less(self.waiting, address)

    def failed(self, address: str) -> None:
        """A hello from ``address`` was refused: one token less in its bucket."""
        tokens = self._tokens(address)
        self._buckets.pop(address, None)
        self._buckets[address] = (max(0.0, tokens - 1), self.clock())  # most recent last
        if len(self._buckets) > TRACKED:
            self._forget()

    def refusing(self, address: str) -> float | None:
        """Seconds until ``address`` may try a hello again, or ``None`` if it may now."""
        tokens = self._tokens(address)
        return None if tokens >= 1 else (1 - tokens) * 60 / self.failed_hellos

    def _tokens(self, address: str) -> float:
        held = self._buckets.get(address)
        if held is None:
            return float(self.failed_hellos)
        tokens, when = held
        return min(float(self.failed_hellos), tokens + (self.clock() - when) * self.failed_hellos / 60)

    def _forget(self) -> None:
        """Drop the buckets that are full again, then the least recently used, down to 3/4 of
        :data:`TRACKED` (so that a sweep comes once in many failed hellos, not at each)."""
        for address in [a for a in self._buckets if self._tokens(a) >= self.failed_hellos]:
            del self._buckets[address]
        while len(self._buckets) > TRACKED * 3 // 4:
            del self._buckets[next(iter(self._buckets))]

    @staticmethod
    def _less(counter: Counter[str], address: str) -> None:
        counter[address] -= 1
        if counter[address] <= 0:
            del counter[address]
