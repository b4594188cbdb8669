"""Credits as text and numbers (kiln.protocol.money.to_micro), read as js-client/src/money.js reads them."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from kiln.protocol.errors import UsageError
from kiln.protocol.money import to_micro


@pytest.mark.parametrize(
    ("credits", "micro"),
    [
        (0, 0),
        (1, 1_000_000),
        (0.1, 100_000),
        (0.05, 50_000),
        (1.000001, 1_000_001),
        ("1.5", 1_500_000),
        (" 2 ", 2_000_000),
        ("\t2\n", 2_000_000),
        ("\u00a03\u00a0", 3_000_000),
        ("1e-6", 1),
        (1e-6, 1),
        ("0.0000010", 1),
        (".5", 500_000),
        ("5.", 5_000_000),
        ("-0", 0),
        (-0.0, 0),
        ("+2", 2_000_000),
        ("1E3", 1_000_000_000),
        (1e9, 10**15),
        (Decimal("0.25"), 250_000),
        (Fraction(1, 4), 250_000),
    ],
)
def test_to_micro_takes_credits_as_written_exactly(credits: object, micro: int) -> None:
    assert to_micro(credits) == micro


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        (1e-7, "finer"),
        ("1e-7", "finer"),
        (0.1 + 0.2, "finer"),
        ("1e-999", "finer"),
        ("1e-999999999", "finer"),
        (Fraction(1, 3), "finer"),
        (-1, "out of range"),
        ("-0.5", "out of range"),
        (1e9 + 1, "out of range"),
        ("1e999999999", "out of range"),
        ("1e99999999999999999999", "out of range"),
        (1.7976931348623157e308, "out of range"),
        ("", "a number of credits"),
        ("1 5", "a number of credits"),
        ("1_000", "a number of credits"),
        ("\u0663", "a number of credits"),
        ("\uff11", "a number of credits"),
        ("0x10", "a number of credits"),
        ("NaN", "a number of credits"),
        (float("nan"), "a number of credits"),
        (float("inf"), "a number of credits"),
        ("Infinity", "a number of credits"),
        (Decimal("NaN"), "a number of credits"),
        (True, "a number of credits"),
        (None, "a number of credits"),
        ("1.2.3", "a number of credits"),
        (".", "a number of credits"),
    ],
)
def test_to_micro_refuses_what_javascript_refuses(value: object, complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint):
        to_micro(value, "the budget")
