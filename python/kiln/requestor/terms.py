"""The market's terms of a rent (protocol 1.5), checked where the caller writes them.

A rent may carry, besides its demand: ``max_duration`` (seconds the activity may be held),
``budget`` (what the rent's group may ever spend at the hub, written in credits, carried in
micro-credits), ``strategy`` (how the hub picks among the providers that fit), ``allow``
(only these providers) and ``min_reputation``. :func:`market_terms` checks what a caller
wrote and raises :class:`~kiln.UsageError` naming the first term that is wrong, before
anything is sent; :meth:`Terms.fields` gives the ``rent`` message's fields (those set only,
so a rent without terms is what an older hub knows). Nothing here does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, get_args

from kiln.protocol.errors import UsageError
from kiln.protocol.messages import MAX_EXCLUDE, Strategy
from kiln.protocol.money import to_micro

STRATEGIES: Final[tuple[str, ...]] = get_args(Strategy)
MAX_DURATION: Final = 366 * 86400
"""The longest ``max_duration`` a rent may carry (seconds)."""


@dataclass(frozen=True, slots=True)
class Terms:
    """A rent's market terms, checked; None: not set (the hub's default)."""

    max_duration: float | None = None
    budget: int | None = None
    """Micro-credits."""
    strategy: Strategy | None = None
    allow: tuple[str, ...] | None = None
    min_reputation: float | None = None

    def fields(self) -> dict[str, Any]:
        """The ``rent`` message's fields for the terms set."""
        fields: dict[str, Any] = {
            "max_duration": self.max_duration,
            "budget": self.budget,
            "strategy": self.strategy,
            "allow": list(self.allow) if self.allow is not None else None,
            "min_reputation": self.min_reputation,
        }
        return {name: value for name, value in fields.items() if value is not None}


def market_terms(
    *,
    max_duration: float | None = None,
    budget: float | str | None = None,
    strategy: str | None = None,
    allow: Iterable[str] | None = None,
    min_reputation: float | None = None,
) -> Terms:
    """The terms a caller wrote (``budget`` in credits), checked: a :class:`UsageError` names a wrong one."""
    if max_duration is not None and (
        isinstance(max_duration, bool)
        or not isinstance(max_duration, int | float)
        or not math.isfinite(max_duration)
        or not 0 < max_duration <= MAX_DURATION
    ):
        raise UsageError(f"max_duration is seconds, above 0 and at most {MAX_DURATION}, not {max_duration!r}")
    micro = None if budget is None else to_micro(budget, "budget")
    if strategy is not None and strategy not in STRATEGIES:
        raise UsageError(f"strategy is one of {', '.join(STRATEGIES)}, not {strategy!r}")
    names: tuple[str, ...] | None = None
    if allow is not None:
        if isinstance(allow, str):
            raise UsageError("allow takes a list of provider names, not one string")
        names = tuple(sorted(set(allow)))
        if not names or len(names) > MAX_EXCLUDE:
            raise UsageError(f"allow names 1 to {MAX_EXCLUDE} providers, not {len(names)}")
    if min_reputation is not None and (
        isinstance(min_reputation, bool) or not isinstance(min_reputation, int | float) or not 0 <= min_reputation <= 1
    ):
        raise UsageError(f"min_reputation is a score from 0 to 1, not {min_reputation!r}")
    return Terms(
        max_duration=None if max_duration is None else float(max_duration),
        budget=micro,
        strategy=strategy,  # type: ignore[arg-type]  # one of STRATEGIES, checked above
        allow=names,
        min_reputation=None if min_reputation is None else float(min_reputation),
    )
