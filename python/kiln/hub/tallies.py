"""What the hub counted since it started: the numbers its metrics are made of.

:class:`Tallies` is plain data the core (:class:`~kiln.hub.core.HubCore`, as ``core.tallies``)
adds to where it sees each event, read by whoever exposes them (the ``/metrics`` endpoint,
the dashboard) at their own pace. Every count is a plain ``int`` (or a float sum), every label
comes from a fixed set (a role, an error code's value), so nothing a peer sends can make the
set of names grow. Nothing here reads a clock or does I/O; each addition costs O(1).
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from kiln.protocol.codes import ErrorCode

RENT_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""The upper bounds (seconds) of the rent latency histogram's buckets; a last one, unbounded, follows."""
OTHER: Final = "other"
"""The label of an error code this hub does not know (a peer may send any)."""
NO_HELLO: Final = "no_hello"
"""The reason a connection that ended before its hello was taken is counted under (among :attr:`Tallies.refused`)."""
_KNOWN: Final = frozenset(code.value for code in ErrorCode)


def label(code: str) -> str:
    """An error code as a label: itself if the hub knows it, else :data:`OTHER` (the set stays fixed)."""
    return str(code) if code in _KNOWN else OTHER  # str: an ErrorCode as its plain value


@dataclass(slots=True)
class Tallies:
    """Counters of what the hub did, each only ever growing (but :attr:`used_cpus` and
    :attr:`used_memory`, what the activities use now).

    A rent is timed by the core's monotonic clock from when the core takes it to its ``rented``
    or its error (a cancelled rent: when its ``create`` is answered; a rent whose provider is
    lost while creating: then, ``provider_lost``): :meth:`rent` files it. Read the fields at any
    time, between two calls of the core (they are never half updated then).
    """

    rents: Counter[str] = field(default_factory=Counter)
    """Rents answered, by result: ``"ok"`` or the error code (``no_match``, ``cancelled``,
    ``provider_lost``, ...; :data:`OTHER` for one the hub does not know); those refused as any
    request is (a duplicate id, too many open) are not counted."""
    rent_buckets: list[int] = field(default_factory=lambda: [0] * (len(RENT_BUCKETS) + 1))
    """Rents per latency bucket, not cumulative: ``rent_buckets[i]`` took at most ``RENT_BUCKETS[i]``
    seconds and more than the bound before it; the last, more than every bound (see :meth:`rent_histogram`)."""
    rent_sum: float = 0.0
    """Seconds all the rents counted took, in all."""
    rent_count: int = 0
    commands: int = 0
    """``exec`` requests relayed to providers."""
    connects: int = 0
    """(1.7) ``connect`` requests relayed to providers: a requestor's, and the hub's own for published ports."""
    command_failures: int = 0
    """``exec`` requests answered by an error (but ``cancelled``: the requestor asked for it) or an
    ``exec_result`` with a nonzero exit code."""
    to_provider_bytes: int = 0
    """Stream data relayed from requestors to providers (uploads, an exec's stdin)."""
    to_requestor_bytes: int = 0
    """Stream data relayed from providers to requestors (downloads, an exec's output)."""
    refused: Counter[str] = field(default_factory=Counter)
    """Connections turned away before or at their hello, by the error code's value (``unauthorized``,
    ``too_many``, ``name_taken``, ``unsupported_version``, ``out_of_order``, ``bad_message``, ...), or
    :data:`NO_HELLO` for one that ended before its hello was taken (none came in time, or it left)."""
    joins: Counter[str] = field(default_factory=Counter)
    """Hellos welcomed, by role (``requestor``, ``provider``)."""
    pushes: int = 0
    """Images pushed into the hub's store."""
    pulls: int = 0
    """Creates the store sent blobs of a stored image for."""
    pull_bytes: int = 0
    """Blob bytes the store sent providers."""
    captured: int = 0
    """Micro-credits captured to providers (priced activities; reversals not taken off)."""
    fees: int = 0
    """Micro-credits captured to the hub (its fee)."""
    lost: int = 0
    """Activities lost (``activity_lost`` told: their provider was lost, or the hub ended them)."""
    used_cpus: float = 0.0
    """CPUs (cores) the activities use now, as their providers' last two ``usage`` reports tell (1.6)."""
    used_memory: int = 0
    """Bytes of memory the activities use now, as their providers last reported (1.6)."""

    def rent(self, result: str, seconds: float) -> None:
        """A rent was answered: ``result`` (``"ok"`` or an error code, :func:`label`-ed) after ``seconds``."""
        self.rents[result if result == "ok" else label(result)] += 1
        self.rent_buckets[bisect.bisect_left(RENT_BUCKETS, seconds)] += 1
        self.rent_sum += max(seconds, 0.0)
        self.rent_count += 1

    def rent_histogram(self) -> list[tuple[float, int]]:
        """The rent latency histogram as Prometheus shows it: (upper bound, rents that took at most
        that long) for each bound in :data:`RENT_BUCKETS`, then ``(inf, rent_count)``."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, count in zip((*RENT_BUCKETS, float("inf")), self.rent_buckets, strict=True):
            total += count
            out.append((bound, total))
        return out
