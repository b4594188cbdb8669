"""``kiln market``'s OUTBOUND column: a provider's policy (1.7) in a few characters."""

from __future__ import annotations

from kiln.cli.commands import _outbound


def test_the_outbound_column_shows_none_any_or_the_first_rules() -> None:
    assert _outbound(None) == "-"
    assert _outbound("any") == "any"
    assert _outbound(["pypi.org:443"]) == "pypi.org:443"
    assert _outbound(["a.test:1", "b.test:2", "c.test:3", "d.test:*"]) == "a.test:1,b.test:2,+2"
