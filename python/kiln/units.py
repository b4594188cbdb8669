"""Sizes as people write them ("256MiB", "2GiB", "1.5G", 1024) turned into bytes."""

from __future__ import annotations

import re
from typing import Final

from kiln.errors import UsageError

_UNITS: Final = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}  # fmt: skip
_SIZE: Final = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: int | float | str) -> int:
    """Bytes in ``value``: an int, or a string with an optional SI or IEC unit.

    Raises :class:`~kiln.errors.UsageError` for negative numbers, unknown units or bad text.
    """
    if isinstance(value, bool):
        raise UsageError(f"not a size: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise UsageError(f"a size cannot be negative: {value!r}")
        return int(value)
    match = _SIZE.match(value)
    if match is None:
        raise UsageError(f"not a size: {value!r} (write e.g. 512MiB, 2GiB or a number of bytes)")
    number, unit = match.groups()
    factor = _UNITS.get(unit.lower())
    if factor is None:
        raise UsageError(f"unknown size unit {unit!r} in {value!r} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")
    return int(float(number) * factor)


def format_size(size: int) -> str:
    """A short human form of ``size`` bytes, e.g. ``256MiB`` or ``1.5GiB``."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{size}B"
