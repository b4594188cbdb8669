"""Sizes as people write them ("256MiB", "2GiB", "1.5G", 1024) turned into bytes, and back.

The units are pydantic's :class:`~pydantic.ByteSize` (B, KB/KiB, MB/MiB, ... SI and IEC,
any case, single letters for SI), plus Kubernetes' ``Ki``/``Mi``/``Gi``/``Ti``.
"""

from __future__ import annotations

import re
from typing import Final

from pydantic import ByteSize, TypeAdapter, ValidationError

from kiln.protocol.errors import UsageError

_BYTE_SIZE: Final = TypeAdapter(ByteSize)
# ByteSize reads only a prefix of its input ("1.2.3G" is 1 byte): the whole text must match.
_SIZE: Final = re.compile(r"^\s*[0-9]+(?:\.[0-9]+)?\s*([A-Za-z]*)\s*$")
_KUBERNETES_UNIT: Final = re.compile(r"^[KkMmGgTtPpEe][Ii]$")
_HINT: Final = "write e.g. 512MiB, 2GiB or a number of bytes"


def parse_size(value: int | float | str) -> int:
    """Bytes in ``value``: a number, or a string with an optional SI or IEC unit.

    Raises :class:`~kiln.protocol.errors.UsageError` for negative numbers, unknown units or bad text.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UsageError(f"not a size: {value!r}")
    if not isinstance(value, str):
        if value < 0:
            raise UsageError(f"a size cannot be negative: {value!r}")
        return int(value)
    match = _SIZE.match(value)
    if match is None:
        raise UsageError(f"not a size: {value!r} ({_HINT})")
    text = value.strip() + ("B" if _KUBERNETES_UNIT.match(match.group(1)) else "")
    try:
        return int(_BYTE_SIZE.validate_python(text))
    except ValidationError as e:
        raise UsageError(
            f"unknown size unit {match.group(1)!r} in {value!r} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
        ) from e


def format_size(size: int) -> str:
    """A short human form of ``size`` bytes, e.g. ``256MiB`` or ``1.5GiB``."""
    return ByteSize(size).human_readable(decimal=False).replace(".0", "", 1)
