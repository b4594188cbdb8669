"""Outbound access (PROTOCOL.md §5.2), its rules: the operator's policy, and what the proxy of a
container lets through. Pure but for reading the operator's files (:func:`load_policy`): no socket, no DNS
(:mod:`kiln_provider.proxy` does the I/O).

The operator says what containers may reach (``kiln provider --outbound none|any|FILE``, a
FILE holding one rule of :mod:`kiln.protocol.outbound` a line), which exact names may reach
private addresses (``--outbound-private HOST:PORT``) and, optionally, names it resolves itself
before DNS (``--hosts FILE``, hosts(5)): an :class:`OutboundPolicy`. A rent that asked for
``outbound`` rules gets a proxy at ``127.0.0.1:3128`` inside its container, and its commands
the environment of :func:`proxy_env`. For each request the proxy reads a head
(:func:`parse_head`: ``CONNECT host:port``, or a plain HTTP request in absolute form), checks
its host and port against the rent's rules and the policy (:func:`check_target`), resolves the
name, checks every address (:func:`check_addresses`: no private, loopback, link-local...
address unless the name is one the operator allowed) and connects to the address it checked.

A refusal is a :class:`Refusal`: the HTTP status the container gets, a one-line reason, and
(for a 403) the word the provider's metrics count it under (:data:`REFUSAL_REASONS`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeAlias, TypeVar
from urllib.parse import urlsplit

from kiln.protocol.outbound import MAX_RULES, Policy, RuleError, allowed, normal_host, parse_rule, public

T = TypeVar("T")

PROXY_PORT: Final = 3128
"""Where the proxy listens, on the container's loopback."""
PROXY_URL: Final = f"http://127.0.0.1:{PROXY_PORT}"
MAX_HEAD: Final = 16 * 1024
"""The longest request head the proxy reads (past it: 431)."""
MAX_HOSTS_LINES: Final = 100_000
"""The most lines a ``--hosts`` file may have."""

RefusalReason: TypeAlias = Literal["rent", "policy", "private", "busy"]
REFUSAL_REASONS: Final[tuple[RefusalReason, ...]] = ("rent", "policy", "private", "busy")
"""Why a request was refused, as the metrics count it: outside the rent's rules, outside the
provider's policy, a private address, too many connections at once."""

_TOKEN: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HOP_BY_HOP: Final = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te"})
"""Headers of the connection to the proxy, not passed on (``Connection: close`` is sent instead)."""


def proxy_env() -> dict[str, str]:
    """What the commands of a container with outbound access get (unless their exec sets them)."""
    proxies = dict.fromkeys(("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"), PROXY_URL)
    return proxies | dict.fromkeys(("NO_PROXY", "no_proxy"), "localhost,127.0.0.1")


class PolicyError(ValueError):
    """A policy file, hosts file or ``--outbound-private`` entry that cannot be read as such."""


@dataclass(frozen=True)
class OutboundPolicy:
    """The operator's policy: what containers may reach (``rules``: ``"any"``, a list of rules,
    or None for nothing), which ``host:port`` may reach private addresses, and the names resolved
    from the operator's hosts file rather than DNS."""

    rules: Policy | None = None
    private: frozenset[tuple[str, int]] = frozenset()
    hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def private_allowed(self, host: str, port: int) -> bool:
        """Whether the operator let exactly ``host`` (normalized) on ``port`` reach private addresses."""
        return (host, port) in self.private


def load_policy(outbound: str | Path, private: list[str], hosts: Path | None) -> OutboundPolicy:
    """The operator's policy from ``kiln provider``'s settings: ``--outbound`` (``none``, ``any`` or a
    file of rules), ``--outbound-private`` entries and the ``--hosts`` file (None: none). Reads
    the files; raises PolicyError (or OSError) naming what is wrong."""
    rules: Policy | None = None
    if outbound == "any":
        rules = "any"
    elif outbound != "none":
        rules = _read(Path(outbound), parse_policy)
    names = _read(hosts, parse_hosts) if hosts is not None else {}
    return OutboundPolicy(rules, frozenset(map(parse_private, private)), names)


def _read(path: Path, parse: Callable[[str], T]) -> T:
    try:
        return parse(path.read_text(errors="replace"))
    except PolicyError as e:
        raise PolicyError(f"{path}: {e}") from None


def parse_policy(text: str) -> list[str]:
    """The rules of a policy file: one a line, ``#`` starts a comment, blank lines are skipped.

    Raises PolicyError naming the line of a rule that does not parse, or when there are more
    than an offer can carry.
    """
    rules: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        rule = line.split("#", 1)[0].strip()
        if not rule:
            continue
        try:
            rules.append(str(parse_rule(rule)))
        except RuleError as e:
            raise PolicyError(f"line {number}: {e}") from None
    if len(rules) > MAX_RULES:
        raise PolicyError(f"{len(rules)} rules: an offer carries at most {MAX_RULES}")
    if not rules:
        raise PolicyError("no rules (give --outbound none to allow nothing)")
    return rules


def parse_private(entry: str) -> tuple[str, int]:
    """One ``--outbound-private HOST:PORT``: an exact name (or address) and port; PolicyError otherwise."""
    try:
        rule = parse_rule(entry)
    except RuleError as e:
        raise PolicyError(str(e)) from None
    if rule.wildcard or rule.port is None:
        raise PolicyError(f"{entry!r}: an exact name and port, without *")
    return rule.host, rule.port


def parse_hosts(text: str) -> dict[str, tuple[str, ...]]:
    """The names of a hosts(5) file: ``ADDRESS NAME [ALIAS...]`` a line, ``#`` comments; a name
    on several lines has every address given. Raises PolicyError naming a line that is not so."""
    lines = text.splitlines()
    if len(lines) > MAX_HOSTS_LINES:
        raise PolicyError(f"more than {MAX_HOSTS_LINES} lines")
    hosts: dict[str, tuple[str, ...]] = {}
    for number, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        try:
            address = str(ipaddress.ip_address(words[0].split("%", 1)[0]))
        except ValueError:
            raise PolicyError(f"line {number}: {words[0]!r} is not an IP address") from None
        if len(words) < 2:
            raise PolicyError(f"line {number}: an address without a name")
        for word in words[1:]:
            name = normal_host(word)
            if name is None:
                raise PolicyError(f"line {number}: {word!r} is not a host name")
            if address not in hosts.get(name, ()):
                hosts[name] = (*hosts.get(name, ()), address)
    return hosts


class Refusal(Exception):
    """A request the proxy answers with ``status`` and the one-line ``reason``; ``counted``: the
    metrics' word for a 403."""

    def __init__(self, status: int, reason: str, counted: RefusalReason | None = None) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.counted = counted

    def response(self) -> bytes:
        """The whole HTTP response: the status, and the reason as a plain-text body."""
        body = f"{self.reason}\n".encode()
        phrase = _PHRASES.get(self.status, "Error")
        return (
            f"HTTP/1.1 {self.status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body


_PHRASES: Final = {
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
}

ESTABLISHED: Final = b"HTTP/1.1 200 Connection established\r\n\r\n"
"""The answer to a CONNECT let through; the bytes then pass both ways."""


@dataclass(frozen=True)
class ProxyRequest:
    """A request the proxy read: where to (``host`` normalized, ``port``), and for a plain HTTP
    request (not ``tunnel``) the head to send upstream, in origin form."""

    tunnel: bool
    host: str
    port: int
    head: bytes = b""


def parse_head(head: bytes) -> ProxyRequest:
    """Read a request head (up to and with its blank line). Raises Refusal (400) when it is not
    ``CONNECT host:port`` or an HTTP request in absolute form (``GET http://host[:port]/path``)."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise Refusal(400, "the request head is not ASCII") from None
    lines = text.split("\r\n")
    if len(lines) < 3 or lines[-2:] != ["", ""]:
        raise Refusal(400, "the request head does not end with a blank line (CRLF line ends)")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise Refusal(400, "not an HTTP/1.x request line")
    method, target, version = parts
    headers = lines[1:-2]
    for line in headers:
        name, sep, _ = line.partition(":")
        if not sep or not _TOKEN.match(name):
            raise Refusal(400, "a header line is not NAME: VALUE")
    if method == "CONNECT":
        host, port = _authority(target, None)
        return ProxyRequest(True, host, port)
    try:
        url = urlsplit(target)
    except ValueError:
        raise Refusal(400, "the request's target is not a URL") from None
    if url.scheme.lower() != "http" or not url.netloc:
        raise Refusal(400, "a proxy request names its target as http://host/path (or uses CONNECT)")
    authority = url.netloc.rpartition("@")[2]  # never pass on credentials in the URL
    host, port = _authority(authority, 80)
    origin = (url.path or "/") + (f"?{url.query}" if url.query else "")
    kept = [line for line in headers if line.partition(":")[0].lower() not in _HOP_BY_HOP]
    if not any(line.partition(":")[0].lower() == "host" for line in kept):
        kept.insert(0, f"Host: {authority}")
    upstream = "\r\n".join([f"{method} {origin} {version}", *kept, "Connection: close", "", ""])
    return ProxyRequest(False, host, port, upstream.encode())


def _authority(text: str, default_port: int | None) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``), the port optional when there is a default; Refusal (400) otherwise."""
    port_text: str | None
    if text.startswith("["):
        host, bracket, rest = text.partition("]")
        host += bracket
        if rest and not rest.startswith(":"):
            raise Refusal(400, f"{text!r} is not HOST:PORT")
        port_text = rest[1:] if rest else None
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    else:
        host, port_text = text, None
    if port_text is None:
        if default_port is None:
            raise Refusal(400, f"{text!r} is not HOST:PORT")
        port = default_port
    elif port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise Refusal(400, f"{text!r}: the port must be 1 to 65535")
    normal = normal_host(host)
    if normal is None:
        raise Refusal(400, f"{host!r} is not a host name or address")
    return normal, port


def check_target(rent: list[str], policy: OutboundPolicy, host: str, port: int) -> None:
    """Raise Refusal (403) unless ``host:port`` is allowed by the rent's rules and by the policy."""
    if not allowed(rent, host, port):
        raise Refusal(403, f"{host}:{port} is not among the sites this rent may reach", "rent")
    if not allowed(policy.rules, host, port):
        raise Refusal(403, f"{host}:{port} is not among the sites this provider lets containers reach", "policy")


def check_addresses(policy: OutboundPolicy, host: str, port: int, addresses: list[str]) -> list[str]:
    """The addresses ``host`` resolved to, once every one is checked: Refusal (403) when one is
    not public (private, loopback, link-local...) and the operator did not allow ``host:port`` to
    reach such addresses; Refusal (502) when there are none."""
    if not addresses:
        raise Refusal(502, f"{host} has no address")
    if not policy.private_allowed(host, port):
        for address in addresses:
            if not public(address):
                raise Refusal(403, f"{host} resolves to {address}, a private address", "private")
    return addresses
