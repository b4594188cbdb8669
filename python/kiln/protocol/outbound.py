"""Outbound rules (1.7): which sites a container may reach through its provider's proxy.

A rule is ``HOST:PORT``:

* ``HOST`` is a DNS name (``pypi.org``), ``*.`` and a DNS name (``*.example.org``: any name
  under it, not the name itself), an IPv4 address (``203.0.113.7``) or an IPv6 address in
  brackets (``[2001:db8::1]``); names are compared without case and without a trailing dot;
* ``PORT`` is a number from 1 to 65535, or ``*`` for any port.

A rent asks for a list of rules (``Demand.outbound``); a provider offers either ``"any"`` or a
list of rules (``Offer.outbound``; absent: no outbound access at all). The hub matches a rent
only to a provider whose policy :func:`covers` every rule it asks for; the provider lets a
connection through only when the host and port are :func:`allowed` by both lists (and, a
separate rule of the provider's, when the address the name resolves to is public or its
operator allowed that name to reach private addresses).

Pure functions; no I/O, no DNS.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

MAX_RULES: Final = 64
"""The most rules a demand or an offer may list."""
MAX_RULE_LENGTH: Final = 262
"""The longest rule: a 253-character name, ``:`` and a port (or ``*.`` and a shorter name)."""

_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME: Final = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_PORT: Final = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|\*)"
_ANY_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
RULE_PATTERN: Final = rf"^(?:\*\.)?(?:{_ANY_LABEL}(?:\.{_ANY_LABEL})*\.?|\[[0-9A-Fa-f:.]+\]):{_PORT}$"
"""The shape of a rule in the schema; :func:`parse_rule` also checks an address's form and a name's length."""

Policy: TypeAlias = Literal["any"] | list[str]


@dataclass(frozen=True, slots=True)
class Rule:
    """One parsed rule: ``host`` (lowercase; an address in its canonical form), whether it
    stands for every name under ``host`` (``wildcard``), and ``port`` (``None``: any)."""

    host: str
    wildcard: bool
    port: int | None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'*.' if self.wildcard else ''}{host}:{'*' if self.port is None else self.port}"

    @property
    def address(self) -> bool:
        """Whether the host is an IP address rather than a name."""
        return _address(self.host) is not None

    def matches(self, host: str, port: int) -> bool:
        """Whether a connection to ``host`` (a name or an address, as :func:`normal_host` gives
        it) on ``port`` falls under this rule."""
        if self.port is not None and self.port != port:
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host

    def within(self, other: Rule) -> bool:
        """Whether every connection this rule allows, ``other`` allows too."""
        if other.port is not None and other.port != self.port:
            return False
        if other.wildcard:
            return self.host.endswith("." + other.host) or (self.wildcard and self.host == other.host)
        return not self.wildcard and self.host == other.host


class RuleError(ValueError):
    """A rule that is not ``HOST:PORT`` as :mod:`kiln.protocol.outbound` describes."""


def parse_rule(text: str) -> Rule:
    """Parse one rule; raises :class:`RuleError` with the reason."""
    if len(text) > MAX_RULE_LENGTH:
        raise RuleError(f"an outbound rule is at most {MAX_RULE_LENGTH} characters")
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise RuleError(f"{text!r} is not HOST:PORT")
    if port_text == "*":
        port = None
    elif port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise RuleError(f"{text!r}: the port must be 1 to 65535, or *")
    wildcard = host.startswith("*.")
    if wildcard:
        host = host[2:]
    if host.startswith("[") and host.endswith("]"):
        if wildcard:
            raise RuleError(f"{text!r}: an address takes no wildcard")
        ip = _address(host[1:-1])
        if ip is None or ip.version != 6:
            raise RuleError(f"{text!r}: not an IPv6 address in brackets")
        return Rule(str(ip), False, port)
    ip = _address(host)
    if ip is not None:
        if wildcard or ip.version != 4:
            raise RuleError(f"{text!r}: an IPv6 address goes in brackets, and an address takes no wildcard")
        return Rule(str(ip), False, port)
    name = host.lower().removesuffix(".")
    if len(name) > 253 or not _NAME.match(name):
        raise RuleError(f"{text!r}: {host!r} is not a DNS name")
    return Rule(name, wildcard, port)


def parse_rules(texts: list[str]) -> list[Rule]:
    """Parse a list of rules (at most :data:`MAX_RULES`)."""
    if len(texts) > MAX_RULES:
        raise RuleError(f"at most {MAX_RULES} outbound rules")
    return [parse_rule(t) for t in texts]


def normal_host(host: str) -> str | None:
    """A host as a connection names it, compared as rules are: a name lowercased without its
    trailing dot, an address canonical (brackets dropped); ``None`` when it is neither."""
    if host.startswith("[") and host.endswith("]"):
        ip = _address(host[1:-1])
        return str(ip) if ip is not None and ip.version == 6 else None
    ip = _address(host)
    if ip is not None:
        return str(ip)
    name = host.lower().removesuffix(".")
    return name if len(name) <= 253 and _NAME.match(name) else None


def covers(policy: Policy | None, wanted: list[str]) -> bool:
    """Whether a provider whose policy is ``policy`` (``"any"``, a list of rules, or ``None``
    for none) allows everything ``wanted`` asks for. Rules that do not parse cover nothing."""
    if not wanted:
        return True
    if policy is None:
        return False
    if policy == "any":
        return True
    try:
        offered = parse_rules(list(policy))
        asked = parse_rules(wanted)
    except RuleError:
        return False
    return all(any(a.within(o) for o in offered) for a in asked)


def allowed(rules: Policy | list[Rule] | None, host: str, port: int) -> bool:
    """Whether a connection to ``host`` (normalized by :func:`normal_host`) on ``port`` falls
    under ``rules`` (``"any"``: every one; ``None``: none)."""
    if rules is None:
        return False
    if rules == "any":
        return True
    parsed = [r if isinstance(r, Rule) else parse_rule(r) for r in rules]
    return any(r.matches(host, port) for r in parsed)


def public(address: str) -> bool:
    """Whether ``address`` may be reached without its operator's leave: not private, loopback,
    link-local, multicast, reserved or unspecified (nor such an address mapped into IPv6)."""
    ip = _address(address)
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
