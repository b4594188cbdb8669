"""Several hubs of one market: the URLs a client is given (:func:`kiln.connection.hub_urls`) and
the order it dials them in (:class:`kiln.connection.HubRing`). Clients moving between real hubs:
tests/service/test_several_hubs.py."""

from __future__ import annotations

import pytest

from kiln.connection import MAX_HUB_URLS, HubRing, hub_urls
from kiln.protocol.errors import UsageError

A, B, C = "ws://a.example:7465", "wss://b.example:7465", "ws://10.0.0.3:7465/"


def test_urls_come_one_several_with_commas_or_as_a_list_each_once_in_order() -> None:
    assert hub_urls(A) == (A,)
    assert hub_urls(f"{A},{B}, {C}") == (A, B, C)
    assert hub_urls([B, f"{A},{C}", B]) == (B, A, C)
    assert hub_urls((A,)) == (A,)


@pytest.mark.parametrize(
    ("urls", "said"),
    [
        ("", "no hub URL given"),
        ([], "no hub URL given"),
        ([A, " "], "no hub URL given"),
        (f"{A},", f"'{A},' holds an empty hub URL between its commas"),
        ([A, "127.0.0.1:7465"], "'127.0.0.1:7465' is not a hub URL (no ws:// or wss:// in front)"),
        ([A, 7465], "no hub URL given"),
        ([f"ws://h{n}:1" for n in range(MAX_HUB_URLS + 1)], f"a client takes at most {MAX_HUB_URLS}"),
    ],
)
def test_a_bad_url_among_them_is_named(urls: object, said: str) -> None:
    with pytest.raises(UsageError) as caught:
        hub_urls(urls)  # type: ignore[arg-type]  # what a caller without types may give
    assert said in caught.value.message


def test_a_round_starts_at_the_hub_the_client_is_on_then_goes_round() -> None:
    ring = HubRing([A, B, C])
    assert (ring.current, ring.order()) == (A, [A, B, C]), "at first, the first given"
    ring.moved(B)
    assert (ring.current, ring.order()) == (B, [B, C, A])
    ring.moved(C)
    assert ring.order() == [C, A, B]
    assert HubRing(A).order() == [A], "one hub: the round is that hub"
    with pytest.raises(ValueError, match="not in tuple"):
        ring.moved("ws://elsewhere:7465")


def test_a_hub_that_refuses_for_now_is_skipped_to_the_next() -> None:
    ring = HubRing(["ws://a:1", "ws://b:1", "ws://c:1"])
    ring.moved("ws://c:1")
    ring.skip()
    assert ring.order() == ["ws://a:1", "ws://b:1", "ws://c:1"]
    one = HubRing("ws://a:1")
    one.skip()
    assert one.order() == ["ws://a:1"]
