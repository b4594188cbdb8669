"""Credits as the market counts them: integer micro-credits, and the linear price of an activity.

A credit is :data:`MICRO` micro-credits; every amount on the wire and in the hub's ledger is a
whole number of micro-credits (never a float), so sums are exact and a ledger balances to
the last unit. People write credits ("0.05"); :func:`to_micro` takes those, refusing anything
finer than a micro-credit, and :func:`format_credits` shows an amount back.

An activity's price (:class:`kiln.protocol.messages.Price`) is linear, as Golem's: a ``start``
fee once, ``cpu_hour`` per hour of CPU time its container used, ``env_hour`` per hour it is
held (wall time). :func:`due` is what an activity owes after ``seconds`` held with
``cpu_seconds`` used; :func:`worst_case` what it could owe at most after ``seconds`` with
``cpus`` rented (every CPU busy all the time: what the hub holds). CPU time billed never
exceeds the CPUs rented times the wall time (:func:`billable_cpu`): a provider cannot bill
more than it sold. The JavaScript client mirrors this module in ``js-client/src/money.js``.

Nothing here does I/O.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction
from typing import Final, Protocol

from kiln.protocol.errors import UsageError

MICRO: Final = 1_000_000
"""Micro-credits in a credit."""
MAX_MICRO: Final = 10**15
"""The largest amount a message carries (a billion credits)."""
HOUR: Final = 3600


class Priced(Protocol):
    """A price's three rates, in micro-credits (:class:`kiln.protocol.messages.Price`)."""

    @property
    def start(self) -> int: ...
    @property
    def cpu_hour(self) -> int: ...
    @property
    def env_hour(self) -> int: ...


_DECIMAL: Final = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?")
"""Credits as text, as ``js-client/src/money.js`` reads them: ASCII digits only (no ``_``)."""
_BLANK: Final = (
    "\t\n\v\f\r \u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
"""What JavaScript's ``trim()`` takes off the ends of a text."""


def to_micro(value: object, what: str = "an amount") -> int:
    """``value`` credits (a number or its text: ``0.05``, ``"1.5"``) as micro-credits.

    A text is decimal ASCII (``"1.5"``, ``"1e-6"``; blanks around it are ignored), read as
    ``js-client/src/money.js`` reads it. Raises :class:`UsageError` for a negative amount,
    one finer than a micro-credit, one over a billion credits, or not a number.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal | Fraction):
        raise UsageError(f"{what} is a number of credits, not {value!r}")
    if isinstance(value, int | Fraction):
        micro = Fraction(value) * MICRO
        if micro.denominator != 1:
            raise UsageError(f"{what} {value} is finer than a micro-credit (0.000001)")
        whole = int(micro)
    else:
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{what} is a number of credits, not {value!r}")
        # A float is taken as written (0.1 is one tenth, not the binary fraction nearest it).
        text = value.strip(_BLANK) if isinstance(value, str) else str(value)
        whole = _decimal_micro(text, value, what)
    if whole < 0 or whole > MAX_MICRO:
        raise UsageError(f"{what} {value} is out of range: 0 to {MAX_MICRO // MICRO} credits")
    return whole


def _decimal_micro(text: str, value: object, what: str) -> int:
    """Decimal ``text`` in credits as micro-credits, never building a huge power of ten."""
    match = _DECIMAL.fullmatch(text)
    if match is None or not (match[2] or match[3]):
        raise UsageError(f"{what} is a number of credits, not {value!r}")
    sign, whole, part, exponent = match[1], match[2], match[3] or "", match[4] or "0"
    figures = (whole + part).lstrip("0")
    if not figures:
        return 0
    if len(exponent.lstrip("+-").lstrip("0")) > 12:  # far out of range, or far finer, whatever the digits
        shift = -(10**12) if exponent.startswith("-") else 10**12
    else:
        shift = int(exponent) - len(part) + 6  # micro-credits: six places to the left
    if shift > 31 or len(figures) + shift > 40:
        raise UsageError(f"{what} {value} is out of range: 0 to {MAX_MICRO // MICRO} credits")
    digits = -int(figures) if sign == "-" else int(figures)
    if -shift > 400:
        raise UsageError(f"{what} {value} is finer than a micro-credit (0.000001)")
    scale: int = 10 ** abs(shift)
    if shift >= 0:
        return digits * scale
    if digits % scale:
        raise UsageError(f"{what} {value} is finer than a micro-credit (0.000001)")
    return digits // scale


def format_credits(micro: int) -> str:
    """``micro`` micro-credits as credits, with no trailing zeros (``1500000`` -> ``"1.5"``)."""
    sign = "-" if micro < 0 else ""
    whole, part = divmod(abs(micro), MICRO)
    return f"{sign}{whole}" + (f".{part:06d}".rstrip("0") if part else "")


def billable_cpu(cpu_seconds: float, cpus: float, seconds: float) -> float:
    """The CPU seconds an activity may be billed: what its provider reported, at most the CPUs
    rented times the wall time held."""
    return max(0.0, min(cpu_seconds, cpus * max(seconds, 0.0)))


def due(price: Priced, seconds: float, cpu_seconds: float) -> int:
    """What an activity owes, in micro-credits (rounded down), after ``seconds`` held with
    ``cpu_seconds`` billable (see :func:`billable_cpu`)."""
    rates = Fraction(price.cpu_hour) * Fraction(cpu_seconds) + Fraction(price.env_hour) * Fraction(max(seconds, 0.0))
    return price.start + int(rates / HOUR)


def worst_case(price: Priced, cpus: float, seconds: float) -> int:
    """The most an activity with ``cpus`` rented could owe after ``seconds`` (rounded up)."""
    rate = Fraction(price.cpu_hour) * Fraction(cpus) + price.env_hour
    total = rate * Fraction(seconds) / HOUR
    return price.start + -(-total.numerator // total.denominator)


def seconds_covered(price: Priced, cpus: float, amount: int) -> float:
    """How long an activity with ``cpus`` rented may be held before it could owe more than
    ``amount`` (infinite for a price with no rates; 0 when ``amount`` cannot cover the start)."""
    rate = Fraction(price.cpu_hour) * Fraction(cpus) + price.env_hour
    if amount < price.start:
        return 0.0
    if rate == 0:
        return float("inf")
    return float(Fraction(amount - price.start) * HOUR / rate)


def format_price(price: Priced | None) -> str:
    """A price as ``kiln provider --price`` takes it and ``kiln market`` shows it, in credits
    (``start=0.01,cpu-hour=0.2,env-hour=0.05``); ``free`` for none or all zero."""
    if is_free(price):
        return "free"
    assert price is not None
    rates = (price.start, price.cpu_hour, price.env_hour)
    return "start={},cpu-hour={},env-hour={}".format(*map(format_credits, rates))


def within(price: Priced, cap: Priced) -> bool:
    """Whether every rate of ``price`` is at most ``cap``'s."""
    return price.start <= cap.start and price.cpu_hour <= cap.cpu_hour and price.env_hour <= cap.env_hour


def is_free(price: Priced | None) -> bool:
    return price is None or (price.start == 0 and price.cpu_hour == 0 and price.env_hour == 0)
