"""The protocol's outbound rules (kiln.protocol.outbound): how a rule is read, when a provider's
policy covers a rent's rules (the hub's question), when a connection falls under rules (the
provider's), and which addresses are public."""

from __future__ import annotations

import pytest

from kiln.protocol.outbound import (
    MAX_RULES,
    Rule,
    RuleError,
    allowed,
    covers,
    normal_host,
    parse_rule,
    parse_rules,
    public,
)


def test_rules_are_read_and_written_back_in_one_form() -> None:
    assert parse_rule("PyPI.org.:443") == Rule("pypi.org", False, 443)
    assert str(parse_rule("*.Example.ORG:*")) == "*.example.org:*"
    assert str(parse_rule("[2001:DB8::1]:443")) == "[2001:db8::1]:443"
    assert str(parse_rule("203.0.113.7:80")) == "203.0.113.7:80"
    assert parse_rule("203.0.113.7:80").address and not parse_rule("a.b:1").address


@pytest.mark.parametrize(
    "text",
    [
        "pypi.org",  # no port
        ":443",  # no host
        "pypi.org:0",
        "pypi.org:65536",
        "pypi.org:http",
        "*.[::1]:1",  # an address takes no wildcard
        "*.10.0.0.1:1",
        "[10.0.0.1]:1",  # brackets hold IPv6 only
        "::1:80",  # IPv6 without brackets
        "exa mple.org:1",
        "-a.org:1",
        "a" * 64 + ".org:1",  # a label of 64
        "x" * 300 + ":1",
    ],
)
def test_what_is_not_a_rule_says_why(text: str) -> None:
    with pytest.raises(RuleError):
        parse_rule(text)


def test_at_most_64_rules() -> None:
    assert len(parse_rules(["a.org:1"] * MAX_RULES)) == MAX_RULES
    with pytest.raises(RuleError):
        parse_rules(["a.org:1"] * (MAX_RULES + 1))


def test_a_policy_covers_what_its_rules_allow_and_nothing_more() -> None:
    assert covers(None, []) and covers("any", ["a.org:1"]) and not covers(None, ["a.org:1"])
    policy = ["*.org:443", "pypi.org:*", "203.0.113.7:80"]
    assert covers(policy, ["pypi.org:443", "files.pythonhosted.org:443", "*.example.org:443"])
    assert covers(policy, ["pypi.org:8443", "203.0.113.7:80"])
    assert covers(policy, ["*.pypi.org:443"])  # under *.org
    assert not covers(["pypi.org:*"], ["*.pypi.org:443"])  # the name itself, not those under it
    assert not covers(policy, ["example.com:443"])
    assert not covers(policy, ["files.pythonhosted.org:80"])  # *.org only on 443
    assert not covers(policy, ["203.0.113.7:*"])  # any port is more than port 80
    assert covers(["*.example.org:*"], ["*.example.org:443"]) and not covers(["*.example.org:443"], ["example.org:443"])
    assert not covers(["not a rule"], ["a.org:1"]) and not covers(["a.org:1"], ["not a rule"])


def test_a_connection_falls_under_rules_by_name_and_port() -> None:
    rules = ["*.example.org:443", "pypi.org:*"]
    assert allowed(rules, "files.example.org", 443) and allowed(rules, "pypi.org", 8080)
    assert not allowed(rules, "example.org", 443) and not allowed(rules, "files.example.org", 80)
    assert not allowed(rules, "evil-example.org", 443)  # a suffix, not a label
    assert allowed("any", "anything.test", 1) and not allowed(None, "pypi.org", 443)
    assert allowed([parse_rule("pypi.org:443")], "pypi.org", 443)


def test_hosts_are_compared_in_one_form() -> None:
    assert normal_host("PyPI.org.") == "pypi.org"
    assert normal_host("[2001:DB8::1]") == "2001:db8::1" and normal_host("2001:db8::1") == "2001:db8::1"
    assert normal_host("[10.0.0.1]") is None and normal_host("bad host") is None


@pytest.mark.parametrize(
    ("address", "reachable"),
    [
        ("8.8.8.8", True),
        ("2001:4860::8888", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # link-local: a cloud's metadata service
        ("100.64.0.1", False),  # shared address space
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:8.8.8.8", True),
        ("not an address", False),
    ],
)
def test_only_public_addresses_are_reachable_without_leave(address: str, reachable: bool) -> None:
    assert public(address) is reachable
