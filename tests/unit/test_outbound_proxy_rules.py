"""The outbound proxy's rules without a socket (kiln_provider.outbound): request heads as the
proxy reads them, the operator's files, and the checks of a target and its addresses."""

from __future__ import annotations

import pytest

from kiln_provider.outbound import (
    OutboundPolicy,
    PolicyError,
    Refusal,
    check_addresses,
    check_target,
    parse_head,
    parse_hosts,
    parse_policy,
    parse_private,
    proxy_env,
)


def test_heads_in_both_forms() -> None:
    tunnel = parse_head(b"CONNECT [2001:DB8::1]:443 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (tunnel.tunnel, tunnel.host, tunnel.port, tunnel.head) == (True, "2001:db8::1", 443, b"")
    plain = parse_head(
        b"GET http://user:pw@Site.Example./a/b?c=d HTTP/1.1\r\nProxy-Connection: keep-alive\r\n"
        b"Connection: keep-alive\r\nAccept: */*\r\n\r\n"
    )
    assert (plain.tunnel, plain.host, plain.port) == (False, "site.example", 80)
    assert plain.head == (
        b"GET /a/b?c=d HTTP/1.1\r\nHost: Site.Example.\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )  # origin form, no credentials, the connection's own headers dropped


@pytest.mark.parametrize(
    "head",
    [
        b"GET /relative HTTP/1.1\r\n\r\n",
        b"GET https://site.example/ HTTP/1.1\r\n\r\n",
        b"CONNECT site.example HTTP/1.1\r\n\r\n",
        b"CONNECT site.example:0 HTTP/1.1\r\n\r\n",
        b"CONNECT bad_name:443 HTTP/1.1\r\n\r\n",
        b"GET http://site.example/ HTTP/2\r\n\r\n",
        b"GET http://site.example/ HTTP/1.1\r\nno colon\r\n\r\n",
        b"GET http://site.example/\xff HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\r\n\r\n",
    ],
)
def test_what_is_not_a_proxy_request_is_400(head: bytes) -> None:
    with pytest.raises(Refusal) as refused:
        parse_head(head)
    assert refused.value.status == 400 and refused.value.counted is None
    assert refused.value.response().startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_targets_and_addresses() -> None:
    policy = OutboundPolicy(rules=["*.example.org:443"], private=frozenset({("mirror.example.org", 443)}))
    check_target(["pypi.example.org:443"], policy, "pypi.example.org", 443)
    for host, port, counted in (("other.example.org", 443, "rent"), ("pypi.example.org", 80, "rent")):
        with pytest.raises(Refusal) as refused:
            check_target(["pypi.example.org:443"], policy, host, port)
        assert (refused.value.status, refused.value.counted) == (403, counted)
    with pytest.raises(Refusal) as refused:
        check_target(["pypi.org:443"], policy, "pypi.org", 443)
    assert refused.value.counted == "policy"
    assert check_addresses(policy, "pypi.example.org", 443, ["93.184.215.14"]) == ["93.184.215.14"]
    for address in ("10.0.0.1", "127.0.0.1", "169.254.169.254", "::1", "::ffff:192.168.0.1", "0.0.0.0", "224.0.0.1"):
        with pytest.raises(Refusal) as refused:
            check_addresses(policy, "pypi.example.org", 443, ["93.184.215.14", address])
        assert refused.value.counted == "private", address
    assert check_addresses(policy, "mirror.example.org", 443, ["10.0.0.1"]) == ["10.0.0.1"]
    with pytest.raises(Refusal) as refused:
        check_addresses(policy, "mirror.example.org", 80, ["10.0.0.1"])  # that name, on that port only
    assert refused.value.counted == "private"


def test_the_operators_files() -> None:
    assert parse_policy("# mirrors\nPyPI.org:443  # the index\n\n*.example.org:*\n") == [
        "pypi.org:443",
        "*.example.org:*",
    ]
    for bad in ("pypi.org\n", "", "# nothing\n", "a.example:1\n" * 65):
        with pytest.raises(PolicyError):
            parse_policy(bad)
    hosts = parse_hosts("127.0.0.1 site.test Alias.Test. # a comment\n::1 site.test\n\n127.0.0.1 site.test\n")
    assert hosts == {"site.test": ("127.0.0.1", "::1"), "alias.test": ("127.0.0.1",)}
    for bad in ("site.test 127.0.0.1\n", "127.0.0.1\n", "127.0.0.1 bad_name\n"):
        with pytest.raises(PolicyError):
            parse_hosts(bad)
    assert parse_private("Mirror.Example:8080") == ("mirror.example", 8080)
    for bad in ("*.example.org:443", "mirror.example:*", "mirror.example"):
        with pytest.raises(PolicyError):
            parse_private(bad)
    assert proxy_env()["HTTPS_PROXY"] == proxy_env()["http_proxy"] == "http://127.0.0.1:3128"
