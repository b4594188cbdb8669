"""Reputation: what the hub observed of each provider, and a score in [0, 1] from it.

Pure bookkeeping, no I/O. The core calls one hook per observation it makes of real traffic
(:meth:`Reputation.started` when a provider's container for a rent started,
:meth:`~Reputation.failed_to_start` when it did not, :meth:`~Reputation.lost` for an activity
lost with its provider, :meth:`~Reputation.timed_out` for a command that ran past its timeout,
:meth:`~Reputation.transfer_failed` for a stream the provider starved, :meth:`~Reputation.verdict`
for a verification's outcome, :meth:`~Reputation.connected` / :meth:`~Reputation.disconnected`
for its connections and their length). Each hook that changes a provider's counters emits a
:class:`~kiln.hub.records.SaveReputation` with all of them, so the hub's state keeps them
across reconnects and restarts (a provider cannot whitewash by reconnecting under its name; a
new name needs a new credential on a private hub); the loaded counters are given back at start.

The score is the mean of a Beta distribution with a neutral prior::

    good  = started + won + UPTIME_WEIGHT * min(connected hours, UPTIME_CAP)
    bad   = failed + LOST_WEIGHT * lost + TIMEOUT_WEIGHT * timed_out
            + TRANSFER_WEIGHT * transfer_failed + VERDICT_WEIGHT * verdicts lost
    score = (PRIOR + good) / (2 * PRIOR + good + bad)

A provider never seen scores exactly :data:`NEUTRAL` (0.5); each success pulls it toward 1,
each failure toward 0, a lost verdict most of all (weights below); the prior keeps a handful
of observations from deciding alone. Uptime counts for little and is capped, so staying
connected idle cannot buy back failures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from kiln.hub.records import SaveReputation

PRIOR: Final = 2.0
"""Pseudo-observations on each side: a new provider is 2 good and 2 bad, so scores 0.5."""
NEUTRAL: Final = 0.5
"""The score of a provider never seen."""
LOST_WEIGHT: Final = 2.0
"""An activity lost with its provider (it disconnected, or vanished mid-job) counts as two failures."""
TIMEOUT_WEIGHT: Final = 0.5
"""A command that ran past its timeout: may be the command's fault as much as the provider's."""
TRANSFER_WEIGHT: Final = 1.0
"""A stream the provider left without credit (aborted by the hub)."""
VERDICT_WEIGHT: Final = 5.0
"""A verification lost: the provider returned a result others did not agree with."""
UPTIME_WEIGHT: Final = 0.1
"""Good observations per connected hour."""
UPTIME_CAP: Final = 24.0
"""Connected hours counted at most (so 2.4 good observations from uptime at most)."""

COUNTERS: Final = (
    "connections",
    "connected_seconds",
    "started",
    "failed",
    "lost",
    "timed_out",
    "transfer_failed",
    "won",
    "verdicts_lost",
)
"""The counters kept per provider (the keys of :attr:`SaveReputation.counters`)."""


def score(counters: Mapping[str, float]) -> float:
    """The score of a provider with these counters (missing ones are 0): see the module's formula."""

    def c(key: str) -> float:
        return max(float(counters.get(key, 0.0)), 0.0)

    hours = min(c("connected_seconds") / 3600, UPTIME_CAP)
    good = c("started") + c("won") + UPTIME_WEIGHT * hours
    bad = (
        c("failed")
        + LOST_WEIGHT * c("lost")
        + TIMEOUT_WEIGHT * c("timed_out")
        + TRANSFER_WEIGHT * c("transfer_failed")
        + VERDICT_WEIGHT * c("verdicts_lost")
    )
    return (PRIOR + good) / (2 * PRIOR + good + bad)


class Reputation:
    """Counters per provider name, their score, and the records that persist them.

    ``loaded``: the counters the hub's state held at start (name -> counters). ``emit`` is given
    each :class:`SaveReputation` as a hook changes a provider (the core appends it to its actions,
    so the I/O layer writes it); without one they are dropped (tests, a hub without a data dir).
    """

    def __init__(
        self,
        loaded: Mapping[str, Mapping[str, float]] | None = None,
        emit: Callable[[SaveReputation], None] | None = None,
    ) -> None:
        self._counters: dict[str, dict[str, float]] = {}
        self._scores: dict[str, float] = {}
        self._watchers: list[Callable[[str, float], None]] = []
        self.emit = emit
        for name, counters in (loaded or {}).items():
            self._counters[name] = {key: float(counters[key]) for key in COUNTERS if key in counters}
            self._scores[name] = score(self._counters[name])

    def score(self, name: str) -> float:
        """``name``'s score in [0, 1]; :data:`NEUTRAL` for a provider never seen."""
        return self._scores.get(name, NEUTRAL)

    def counters(self, name: str) -> dict[str, float]:
        """A copy of ``name``'s counters (every one of :data:`COUNTERS`, 0 when never counted)."""
        kept = self._counters.get(name, {})
        return {key: kept.get(key, 0.0) for key in COUNTERS}

    def __contains__(self, name: str) -> bool:
        return name in self._counters

    def watch(self, changed: Callable[[str, float], None]) -> None:
        """Call ``changed(name, score)`` whenever a provider's score changes (the market keeps an index by score)."""
        self._watchers.append(changed)

    # --- the hooks the core calls ----------------------------------------------------

    def started(self, name: str) -> None:
        """A container of a rent started on ``name``."""
        self._count(name, "started")

    def failed_to_start(self, name: str) -> None:
        """A rent's container failed to start on ``name`` (its create answered an error, or never)."""
        self._count(name, "failed")

    def lost(self, name: str) -> None:
        """An activity on ``name`` was lost with it (it disconnected with the activity running)."""
        self._count(name, "lost")

    def timed_out(self, name: str) -> None:
        """A command on ``name`` ran past its timeout."""
        self._count(name, "timed_out")

    def transfer_failed(self, name: str) -> None:
        """A stream to or from ``name`` failed on its side (left without credit, aborted)."""
        self._count(name, "transfer_failed")

    def verdict(self, name: str, won: bool) -> None:
        """A verification of a result from ``name`` agreed with others (``won``) or not."""
        self._count(name, "won" if won else "verdicts_lost")

    def connected(self, name: str) -> None:
        """``name`` connected (its hello was accepted). Counted, but written with its next change
        (the score does not use it): a reconnect storm of thousands of providers writes nothing."""
        self._count(name, "connections", save=False)

    def disconnected(self, name: str, seconds: float) -> None:
        """``name``'s connection ended after ``seconds``."""
        self._count(name, "connected_seconds", max(seconds, 0.0))

    def _count(self, name: str, key: str, amount: float = 1.0, *, save: bool = True) -> None:
        counters = self._counters.setdefault(name, {})
        counters[key] = counters.get(key, 0.0) + amount
        old, new = self._scores.get(name, NEUTRAL), score(counters)
        self._scores[name] = new
        if new != old:
            for changed in self._watchers:
                changed(name, new)
        if self.emit is not None and save:
            self.emit(SaveReputation(name, self.counters(name)))
