"""The last hour of the hub, for the dashboard's charts: a bounded ring of samples, no I/O.

The hub's I/O layer takes a :class:`Sample` every :data:`STEP` seconds (:meth:`History.record`),
and the ring keeps the last :data:`SIZE` of them (an hour), so that a page opened now draws the
hour before it at once. What only grows (commands relayed, bytes relayed) is kept as a rate: the
difference from the previous sample over the seconds between them.

The samples are held as columns, as the charts (uPlot) take them: one list of times, one list per
series (:data:`SERIES`), in memory of :data:`SIZE` floats each whatever the hub's size.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

STEP: Final = 5.0
"""Seconds between two samples."""
SIZE: Final = 720
"""Samples kept: an hour of them."""
SERIES: Final = ("providers", "activities", "offered_cpus", "rented_cpus", "used_cpus", "commands", "bytes")
"""The series of a sample, in the order of :meth:`History.columns` (after the times)."""
PUBLIC: Final = ("providers", "offered_cpus", "rented_cpus")
"""The series a requestor credential's dashboard is shown: the market it could list itself."""


@dataclass(frozen=True, slots=True)
class Reading:
    """What the hub holds at one moment, and its counters (which only grow) so far."""

    providers: int
    activities: int
    offered_cpus: float
    rented_cpus: float
    used_cpus: float
    commands: int
    """Commands relayed to providers since the hub started."""
    bytes: int
    """Stream bytes relayed, both ways, since the hub started."""


class History:
    """The last ``size`` samples, one every ``step`` seconds or more (a sample sooner is not kept)."""

    def __init__(self, step: float = STEP, size: int = SIZE) -> None:
        if step <= 0 or size < 2:
            raise ValueError("a history needs a positive step and room for 2 samples or more")
        self.step = step
        self.size = size
        self.times: deque[float] = deque(maxlen=size)
        self.series: dict[str, deque[float]] = {name: deque(maxlen=size) for name in SERIES}
        self._last: tuple[float, Reading] | None = None

    def record(self, at: float, reading: Reading) -> list[float] | None:
        """Keep ``reading`` as the sample at ``at`` (the wall clock's seconds); the sample kept, as a
        row (time, then :data:`SERIES`), or ``None`` if the last one is less than ``step`` old.

        The first reading only sets the counters' start: its rates are 0.
        """
        if self._last is not None and at - self._last[0] < self.step * 0.5:
            return None
        if self._last is None:
            commands = moved = 0.0
        else:
            then, before = self._last
            seconds = at - then
            commands = max(reading.commands - before.commands, 0) / seconds
            moved = max(reading.bytes - before.bytes, 0) / seconds
        self._last = (at, reading)
        row = [
            round(at, 3),
            float(reading.providers),
            float(reading.activities),
            round(reading.offered_cpus, 3),
            round(reading.rented_cpus, 3),
            round(reading.used_cpus, 3),
            round(commands, 3),
            round(moved, 1),
        ]
        self.times.append(row[0])
        for name, value in zip(SERIES, row[1:], strict=True):
            self.series[name].append(value)
        return row

    def columns(self, names: tuple[str, ...] = SERIES) -> list[list[float]]:
        """The samples kept, oldest first: the times, then each of ``names``' values."""
        return [list(self.times), *(list(self.series[name]) for name in names)]

    def latest(self) -> dict[str, float]:
        """The last sample's values by series (every one 0 before the first)."""
        return {name: values[-1] if values else 0.0 for name, values in self.series.items()}
