from __future__ import annotations

import pytest

from kiln.protocol.errors import UsageError
from kiln.protocol.sizes import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256MiB", 256 * 2**20),
        ("2GiB", 2 * 2**30),
        ("1.5G", 1_500_000_000),
        ("512", 512),
        ("10 kb", 10_000),
        (4096, 4096),
        ("1TiB", 2**40),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "lots", "12 parsecs", "-5MiB", -1, "1.2.3G"])
def test_bad_sizes_are_usage_errors(bad: str | int) -> None:
    with pytest.raises(UsageError):
        parse_size(bad)


def test_format_size() -> None:
    assert format_size(256 * 2**20) == "256MiB"
    assert format_size(3 * 2**29) == "1.5GiB"
    assert format_size(100) == "100B"
