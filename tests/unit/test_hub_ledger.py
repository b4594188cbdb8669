"""The hub's ledger as its core keeps it: holds at rent, captures as it meters, the release at
every end, restarts, budgets and verdicts (a :class:`~tests.hubcore.Book` stands for the database)."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.hub.access import Credential
from kiln.hub.ledger import HUB, Post
from kiln.hub.records import SaveLease
from kiln.protocol.messages import Price
from kiln.protocol.money import MAX_MICRO, MICRO, due, worst_case
from tests.hubcore import Book, FakeCredentials, HubHarness

PRICE = {"start": 10_000, "cpu_hour": 200_000, "env_hour": 50_000}  # 0.01, 0.2 and 0.05 credits
PRICED = Price.micro(**PRICE)
HOUR_HOLD = worst_case(PRICED, 1, 3600)  # what a rent of one CPU holds with no max_duration


def credentials() -> FakeCredentials:
    return FakeCredentials(
        live={
            "prov-p1": Credential(1, "provider", "p1"),
            "prov-p2": Credential(2, "provider", "p2"),
            "prov-p3": Credential(3, "provider", "p3"),
            "req": Credential(7, "requestor", "alice"),
            "req-bob": Credential(8, "requestor", "bob"),
            "adm": Credential(9, "admin", None),
        },
        bound_names={"p1", "p2", "p3"},
    )


def priced(
    *, credits: int = 10 * MICRO, providers: int = 1, book: Book | None = None, **options: Any
) -> tuple[HubHarness, list[int], int]:
    """A private hub with a book, ``providers`` priced providers of 1.5 and a requestor holding ``credits``."""
    if book is None:
        book = Book()
        book.grant(7, credits)
    options.setdefault("capture_interval", 60.0)
    hub = HubHarness(version="1.5", credentials=credentials(), book=book, **options)
    ps = [provide(hub, f"p{n}") for n in range(1, providers + 1)]
    r = hub.join("requestor", "alice", token="req")
    return hub, ps, r


def provide(hub: HubHarness, name: str, price: dict[str, int] | None = PRICE, **hello: Any) -> int:
    p = hub.join("provider", name, token=f"prov-{name}", **hello)
    if price is None:
        hub.offer(p)
    else:
        hub.offer(p, price=price)
    return p


def meter(hub: HubHarness, out: list[tuple[int, Any]], cpu: float) -> list[tuple[int, Any]]:
    """Answer every ``meter`` in ``out`` with ``cpu`` seconds; what came back."""
    back: list[tuple[int, Any]] = []
    for peer, message in out:
        if isinstance(message, dict) and message["type"] == "meter":
            back += hub.send(peer, {"type": "done", "re": message["id"], "cpu_seconds": cpu})
    return back


def run(hub: HubHarness, seconds: float, step: float, cpu_per_second: float = 0.0, since: float = 0.0) -> float:
    """Let ``seconds`` pass in ``step``s, the provider answering each meter; the seconds run in all."""
    elapsed = since
    while elapsed < since + seconds:
        elapsed += step
        meter(hub, hub.expire(after=step), cpu_per_second * elapsed)
    return elapsed


def end(hub: HubHarness, r: int, activity: str, cpu: float, rid: int = 99) -> list[tuple[int, Any]]:
    """The requestor releases ``activity``; its provider reports ``cpu`` seconds at the destroy."""
    [(p, destroy)] = hub.send(r, {"type": "release", "id": rid, "activity": activity})
    assert destroy["type"] == "destroy"
    return hub.send(p, {"type": "done", "re": destroy["id"], "cpu_seconds": cpu})


def captured(book: Book, activity: str) -> int:
    return -sum(x for post in book.of("capture", activity) for a, x in post.entries if a.startswith("hold:"))


def costs(out: list[tuple[int, Any]], peer: int) -> list[dict[str, Any]]:
    return [m for q, m in out if q == peer and isinstance(m, dict) and m["type"] == "cost"]


# --- holds ---------------------------------------------------------------------------------------


def test_a_priced_rent_is_held_before_its_create_goes_out() -> None:
    hub, [p], r = priced()
    to, create = hub.create(r, 1)
    holds = [i for i, e in enumerate(hub.events) if isinstance(e, Post) and e.kind == "hold"]
    sent = hub.events.index((p, create))
    assert len(holds) == 1 and holds[0] < sent
    assert hub.book is not None
    assert hub.book.balance("hold:a1") == HOUR_HOLD == 260_000
    assert hub.book.balance("requestor:7") == 10 * MICRO - HOUR_HOLD
    [(_, rented)] = hub.send(to, {"type": "done", "re": create["id"]})
    assert rented["price"] == PRICE and rented["hold"] == HOUR_HOLD


def test_a_rent_that_cannot_be_held_is_refused_before_any_create() -> None:
    hub, [_], r = priced(credits=HOUR_HOLD - 1)
    [(_, error)] = hub.send(r, {"type": "rent", "id": 1, "image": "img:1", "demand": {"cpus": 1}})
    assert error["code"] == "insufficient_funds" and "0.259999" in error["message"]
    assert hub.book is not None and hub.book.of("hold") == []
    # A shorter max_duration holds less: this one fits.
    hub.create(r, 2, max_duration=600)
    assert hub.book.balance("hold:a2") == worst_case(PRICED, 1, 600)


def test_a_requestor_without_a_credential_has_no_account_to_hold_from() -> None:
    book = Book()
    hub = HubHarness(version="1.5", credentials=credentials(), book=book, token="shared")
    provide(hub, "p1")
    r = hub.join("requestor", "anon", token="shared")
    [(_, error)] = hub.send(r, {"type": "rent", "id": 1, "image": "img:1", "demand": {"cpus": 1}})
    assert error["code"] == "insufficient_funds" and "no account" in error["message"]


def test_a_free_provider_on_a_private_hub_is_neither_held_nor_charged() -> None:
    book = Book()
    hub = HubHarness(version="1.5", credentials=credentials(), book=book)
    provide(hub, "p1", price=None)
    r = hub.join("requestor", "alice", token="req")
    activity = hub.rent(r, 1)
    run(hub, 300, 60, cpu_per_second=1)
    end(hub, r, activity, 300)
    assert book.posts == []


def test_max_duration_ends_an_unpriced_activity_too() -> None:
    hub = HubHarness(version="1.5")
    p = hub.provider("p1")
    r = hub.join("requestor", "r1")
    activity = hub.rent(r, 1, max_duration=30)
    assert hub.expire(after=29) == []
    out = hub.expire(after=1)
    assert [(q, m["type"]) for q, m in out] == [(r, "activity_lost"), (p, "destroy")]
    assert out[0][1]["code"] == "expired" and out[0][1]["activity"] == activity


def test_the_open_hub_lists_prices_but_holds_and_charges_nothing() -> None:
    book = Book()
    hub = HubHarness(version="1.5", book=book, capture_interval=1.0)
    p = hub.join("provider", "p1")
    hub.offer(p, price=PRICE)
    r = hub.join("requestor", "r1")
    to, create = hub.create(r, 1)
    [(_, rented)] = hub.send(to, {"type": "done", "re": create["id"]})
    assert rented["price"] == PRICE and "hold" not in rented
    out = [m for _ in range(5) for m in hub.expire(after=1)]
    assert out == []  # no meter, no cost
    assert book.posts == [] and not [a for a in hub.actions if isinstance(a, Post)]


# --- captures ----------------------------------------------------------------------------------


def test_the_bill_is_the_start_fee_plus_cpu_and_wall_time_at_their_rates() -> None:
    hub, [p], r = priced()
    activity = hub.rent(r, 1)
    elapsed = run(hub, 600, 60, cpu_per_second=0.5)
    out = end(hub, r, activity, 0.5 * elapsed + 3)
    assert hub.book is not None
    bill = captured(hub.book, activity)
    expected = 10_000 + (0.5 * elapsed + 3) * 200_000 / 3600 + elapsed * 50_000 / 3600
    assert bill == pytest.approx(expected, rel=0.01)
    assert hub.book.balance("provider:p1") == bill
    # A capture each interval, keyed by its sequence; the requestor and the provider are told each.
    keys = [post.key for post in hub.book.of("capture", activity)]
    assert keys == [f"capture:{activity}:{n}" for n in range(1, len(keys) + 1)] and len(keys) == 11
    [final] = costs(out, r)
    assert final == {
        "type": "cost",
        "activity": activity,
        "seq": 11,
        "due": bill,
        "seconds": elapsed,
        "cpu_seconds": 0.5 * elapsed + 3,
        "final": True,
    }
    assert costs(out, p) == [final]


def test_a_provider_is_not_paid_for_more_cpu_than_it_sold() -> None:
    hub, [_], r = priced()
    activity = hub.rent(r, 1, cpus=1)
    elapsed = run(hub, 300, 60, cpu_per_second=8)  # eight CPUs busy on a rent of one
    end(hub, r, activity, 8 * elapsed)
    assert hub.book is not None
    assert captured(hub.book, activity) == due(PRICED, elapsed, elapsed)
    assert all((post.cpu_seconds or 0) <= (post.seconds or 0) for post in hub.book.of("capture"))


def test_the_hub_takes_its_fee_from_each_capture() -> None:
    hub, [_], r = priced(fee_ppm=50_000)
    activity = hub.rent(r, 1)
    run(hub, 600, 60, cpu_per_second=1)
    end(hub, r, activity, 600)
    book = hub.book
    assert book is not None
    fees = 0
    for post in book.of("capture", activity):
        d = -post.entries[0][1]
        fees += d * 50_000 // MICRO
        assert dict(post.entries)[HUB] == d * 50_000 // MICRO
    assert book.balance(HUB) == fees > 0
    assert book.balance("provider:p1") + book.balance(HUB) == captured(book, activity)
    book.check()


def test_an_older_provider_is_captured_on_wall_time_and_its_cpu_at_the_end() -> None:
    hub, [], r = priced(providers=0)
    provide(hub, "p1", version="1.4")
    activity = hub.rent(r, 1)
    out = [m for _ in range(5) for m in hub.expire(after=60)]
    assert not [m for _, m in out if m["type"] == "meter"]
    assert hub.book is not None
    assert captured(hub.book, activity) == due(PRICED, 300, 0)
    end(hub, r, activity, 120)
    assert captured(hub.book, activity) == due(PRICED, 300, 120)


def test_the_rest_of_the_hold_goes_back_at_the_end() -> None:
    hub, [_], r = priced()
    activity = hub.rent(r, 1)
    run(hub, 120, 60, cpu_per_second=1)
    out = end(hub, r, activity, 120)
    assert [m["type"] for q, m in out if q == r] == ["cost", "done"]
    book = hub.book
    assert book is not None
    [release] = book.of("release", activity)
    assert release.key == f"release:{activity}"
    assert book.balance(f"hold:{activity}") == 0
    assert book.balance("requestor:7") == 10 * MICRO - captured(book, activity)
    book.check()


@pytest.mark.parametrize("how", ["provider_lost", "requestor_gone", "create_failed"])
def test_every_end_releases_the_hold(how: str) -> None:
    hub, [p], r = priced(grace=0)
    book = hub.book
    assert book is not None
    if how == "create_failed":
        to, create = hub.create(r, 1)
        hub.send(to, {"type": "error", "re": create["id"], "code": "container_failed", "message": "no"})
        activity = "a1"
    else:
        activity = hub.rent(r, 1)
        run(hub, 120, 60, cpu_per_second=1)
        if how == "provider_lost":
            out = hub.leave(p)
            assert costs(out, r)[-1]["final"] is True
        else:
            [(_, destroy)] = hub.leave(r)
            hub.send(p, {"type": "done", "re": destroy["id"], "cpu_seconds": 100})
    assert book.balance(f"hold:{activity}") == 0
    assert book.balance("requestor:7") == 10 * MICRO - captured(book, activity)
    assert len(book.of("release", activity)) == 1
    book.check()


def test_a_replayed_capture_posts_once() -> None:
    hub, [p], r = priced()
    activity = hub.rent(r, 1)
    [(_, ask)] = hub.expire(after=60)
    hub.send(p, {"type": "done", "re": ask["id"], "cpu_seconds": 10})
    book = hub.book
    assert book is not None
    [capture] = book.of("capture")
    before = book.balance("provider:p1")
    book.apply(capture)  # the same change written again (a retry of the I/O layer)
    assert book.replays == 1 and book.balance("provider:p1") == before and len(book.of("capture")) == 1
    # A duplicate answer to the meter answers no open request: nothing more is captured.
    [(_, error)] = hub.send(p, {"type": "done", "re": ask["id"], "cpu_seconds": 10})
    assert error["code"] == "out_of_order" and len(book.of("capture")) == 1
    assert book.balance(f"hold:{activity}") == HOUR_HOLD - before


def test_a_restart_continues_the_sequence_and_posts_nothing_twice() -> None:
    hub, [_], r = priced()
    activity = hub.rent(r, 1)
    run(hub, 180, 60, cpu_per_second=1)
    book = hub.book
    assert book is not None
    assert len(book.of("capture", activity)) == 3
    [saved] = [a for a in hub.actions if isinstance(a, SaveLease)]
    # The hub dies; the next one takes back the session, the lease and its meter.
    again = HubHarness(
        version="1.5", credentials=credentials(), book=book, capture_interval=60.0, now=hub.now, grace=600
    )
    again.take(again.core.restore([saved.session], [saved.lease], [book.meter(activity, PRICED)]))
    p = provide(again, "p1", activities=[activity])
    out = again.expire(after=60)
    [(to, ask)] = [(q, m) for q, m in out if m["type"] == "meter"]
    assert to == p
    again.send(p, {"type": "done", "re": ask["id"], "cpu_seconds": 240})
    keys = [post.key for post in book.of("capture", activity)]
    assert keys == [f"capture:{activity}:{n}" for n in range(1, 5)]
    assert book.replays == 0
    assert captured(book, activity) == due(PRICED, 240, 240)
    book.check()


def test_a_restart_settles_the_meter_of_a_lease_it_does_not_take_back() -> None:
    hub, [_], r = priced()
    activity = hub.rent(r, 1)
    run(hub, 120, 60)
    book = hub.book
    assert book is not None
    record = book.meter(activity, PRICED)
    [saved] = [a for a in hub.actions if isinstance(a, SaveLease)]
    # Its session is gone (not restored); the hub was down for days: never more than was held.
    again = HubHarness(version="1.5", credentials=credentials(), book=book, now=hub.now + 5 * 86400)
    again.take(again.core.restore([], [saved.lease], [record]))
    assert captured(book, activity) == HOUR_HOLD
    assert book.balance(f"hold:{activity}") == 0
    assert book.balance("requestor:7") == 10 * MICRO - captured(book, activity)
    book.check()


# --- ends the hub calls ------------------------------------------------------------------------


def test_max_duration_ends_the_activity_with_expired() -> None:
    hub, [p], r = priced()
    activity = hub.rent(r, 1, max_duration=150)
    assert hub.book is not None and hub.book.balance(f"hold:{activity}") == worst_case(PRICED, 1, 150)
    run(hub, 120, 60, cpu_per_second=1)
    out = hub.expire(after=60)
    [lost] = [m for q, m in out if q == r and m["type"] == "activity_lost"]
    assert lost["activity"] == activity and lost["code"] == "expired"
    [destroy] = [m for q, m in out if q == p and m["type"] == "destroy"]
    hub.send(p, {"type": "done", "re": destroy["id"], "cpu_seconds": 180})
    # Billed up to the max_duration at most, within what was held.
    assert captured(hub.book, activity) == due(PRICED, 150, 150)
    assert hub.book.balance(f"hold:{activity}") == 0


def test_a_hold_is_topped_up_and_the_activity_ends_when_it_cannot_be() -> None:
    first = worst_case(PRICED, 1, 60)
    hub, [p], r = priced(credits=first + 5_000, hold_window=60, capture_interval=10.0)
    activity = hub.rent(r, 1)
    book = hub.book
    assert book is not None
    lost: list[dict[str, Any]] = []
    elapsed = 0.0
    while not lost and elapsed < 600:
        elapsed += 10
        out = hub.expire(after=10)
        lost = [m for _, m in out if m["type"] == "activity_lost"]
        meter(hub, out, elapsed)
    assert [m["code"] for m in lost] == ["insufficient_funds"]
    assert len(book.of("hold", activity)) >= 2  # topped up before it ran out
    assert book.balance("requestor:7") == 0
    [destroy] = [m for q, m in out if q == p and m["type"] == "destroy"]
    hub.send(p, {"type": "done", "re": destroy["id"], "cpu_seconds": elapsed})
    assert captured(book, activity) <= first + 5_000
    book.check()


# --- budgets -----------------------------------------------------------------------------------


def test_a_budget_caps_the_holds_of_its_group_and_refuses_what_it_cannot_cover() -> None:
    hub, [_, _], r = priced(providers=2)
    budget = HOUR_HOLD + 10_000
    hub.create(r, 1, group="job", budget=budget)
    book = hub.book
    assert book is not None and book.balance("hold:a1") == HOUR_HOLD
    [(_, error)] = hub.send(
        r, {"type": "rent", "id": 2, "image": "img:1", "demand": {"cpus": 1}, "group": "job", "budget": 10 * MICRO}
    )
    assert error["code"] == "budget_exceeded"  # the first rent's budget holds, not a later one's
    assert len(book.of("hold")) == 1


def test_a_budget_is_never_exceeded() -> None:
    budget = 100_000
    hub, [p], r = priced()
    activity = hub.rent(r, 1, group="job", budget=budget)
    book = hub.book
    assert book is not None and book.balance(f"hold:{activity}") == budget
    lost: list[dict[str, Any]] = []
    elapsed = 0.0
    while not lost:
        elapsed += 60
        out = hub.expire(after=60)
        lost = [m for _, m in out if m["type"] == "activity_lost"]
        meter(hub, out, elapsed)
    assert lost[0]["code"] == "budget_exceeded"
    [destroy] = [m for q, m in out if q == p and m["type"] == "destroy"]
    hub.send(p, {"type": "done", "re": destroy["id"], "cpu_seconds": elapsed + 60})
    assert captured(book, activity) <= budget
    assert book.balance("requestor:7") == 10 * MICRO - captured(book, activity)
    # The group has nothing left for another activity.
    [(_, error)] = hub.send(r, {"type": "rent", "id": 5, "image": "img:1", "demand": {"cpus": 1}, "group": "job"})
    assert error["code"] == "budget_exceeded"
    book.check()


# --- requests ----------------------------------------------------------------------------------


def test_balance_and_ledger_answer_for_the_askers_account() -> None:
    hub, [_], r = priced()
    activity = hub.rent(r, 1)
    run(hub, 60, 60)
    [(_, info)] = hub.send(r, {"type": "balance", "id": 5})
    book = hub.book
    assert book is not None
    assert info == {
        "type": "balance_info",
        "re": 5,
        "account": "requestor:7",
        "available": 10 * MICRO - HOUR_HOLD,
        "held": HOUR_HOLD - captured(book, activity),
        "spent": captured(book, activity),
    }
    assert captured(book, activity) > 0
    [(_, listed)] = hub.send(r, {"type": "ledger", "id": 6})
    assert [t["kind"] for t in listed["transactions"]] == ["hold", "grant"] and listed["matched"] == 2
    [(_, one)] = hub.send(r, {"type": "ledger", "id": 8, "limit": 1})
    assert [t["kind"] for t in one["transactions"]] == ["hold"] and one["matched"] == 2, "matched counts all"
    [(_, refused)] = hub.send(r, {"type": "ledger", "id": 7, "account": "provider:p1"})
    assert refused["code"] == "unauthorized"
    admin = hub.join("requestor", "root", token="adm")
    [(_, theirs)] = hub.send(admin, {"type": "ledger", "id": 1, "account": "provider:p1"})
    assert [t["kind"] for t in theirs["transactions"]] == ["capture"]


def test_a_lost_verdict_reverses_what_was_paid_for_it_once() -> None:
    hub, [_, _, _], r = priced(providers=3, fee_ppm=50_000)
    reputation = hub.core.reputation
    a1, a2, a3 = (hub.rent(r, n, group="job") for n in (1, 2, 3))
    run(hub, 120, 60, cpu_per_second=1)
    end(hub, r, a1, 120)  # ended already: a verdict still reaches it
    book = hub.book
    assert book is not None
    paid = captured(book, a1)
    before = book.balance("requestor:7")
    verdict = {"type": "verdict", "id": 50, "lost": a1, "agreed": [a2, a3]}
    assert hub.send(r, verdict) == [(r, {"type": "done", "re": 50})]
    [reverse] = book.of("reverse", a1)
    assert reverse.key == f"reverse:{a1}"
    assert book.balance("requestor:7") == before + paid
    provider_paid = sum(x for post in book.of("capture", a1) for a, x in post.entries if a == "provider:p1")
    assert dict(reverse.entries)["provider:p1"] == -provider_paid
    verdicts = {
        name: (c["won"], c["verdicts_lost"]) for name in ("p1", "p2", "p3") for c in [reputation.counters(name)]
    }
    assert verdicts == {"p1": (0, 1), "p2": (1, 0), "p3": (1, 0)}
    # Reported again: answered, nothing more moves, reputation hears it once.
    assert hub.send(r, {**verdict, "id": 51}) == [(r, {"type": "done", "re": 51})]
    assert len(book.of("reverse")) == 1 and reputation.counters("p1")["verdicts_lost"] == 1
    book.check()


def test_a_verdict_names_only_the_askers_activities_on_other_providers() -> None:
    hub, [_, _, _], r = priced(providers=3)
    a1, a2, a3 = (hub.rent(r, n, group="job") for n in (1, 2, 3))
    bob = hub.join("requestor", "bob", token="req-bob")
    [(_, error)] = hub.send(bob, {"type": "verdict", "id": 1, "lost": a1, "agreed": [a2, a3]})
    assert error["code"] == "unknown_activity"
    a4 = hub.rent(r, 4)  # on p1, as a1 is (no group keeps it apart)
    [(_, error)] = hub.send(r, {"type": "verdict", "id": 2, "lost": a1, "agreed": [a2, a4]})
    assert error["code"] == "bad_message"
    assert hub.book is not None and hub.book.of("reverse") == []


def test_a_verdict_on_a_live_activity_pays_back_its_later_captures_at_its_end() -> None:
    hub, [_, _, _], r = priced(providers=3, fee_ppm=50_000)
    a1, a2, a3 = (hub.rent(r, n, group="job") for n in (1, 2, 3))
    elapsed = run(hub, 120, 60, cpu_per_second=1)
    book = hub.book
    assert book is not None
    so_far = captured(book, a1)
    assert so_far > 0
    assert hub.send(r, {"type": "verdict", "id": 50, "lost": a1, "agreed": [a2, a3]}) == [
        (r, {"type": "done", "re": 50})
    ]
    [now] = book.of("reverse", a1)
    assert (now.key, dict(now.entries)["requestor:7"]) == (f"reverse:{a1}", so_far)
    run(hub, 120, 60, cpu_per_second=1, since=elapsed)  # it still runs, and is captured
    end(hub, r, a1, 240)
    assert captured(book, a1) > so_far
    reversed_ = book.of("reverse", a1)
    assert [post.key for post in reversed_] == [f"reverse:{a1}", f"reverse:{a1}:end"]
    back = sum(x for post in reversed_ for a, x in post.entries if a == "requestor:7")
    assert back == captured(book, a1), "every capture of the activity that lost came back"
    kept = sum(
        x for post in [*book.of("capture", a1), *reversed_] for a, x in post.entries if a in ("provider:p1", HUB)
    )
    assert kept == 0, "neither its provider nor the hub keeps anything of it"
    book.check()


@pytest.mark.parametrize("later", [0, 10_001], ids=["at once", "past 10,000 transactions"])
def test_a_verdict_outlives_a_restart_of_the_hub_its_activity_still_pays_back_at_its_end(later: int) -> None:
    hub, [_], r = priced()
    a1 = hub.rent(r, 1)
    run(hub, 120, 60, cpu_per_second=1)
    book = hub.book
    assert book is not None
    assert hub.core.ledger.judge(a1)  # as a verdict does (its reversal posted below)
    reversal = hub.core.ledger.reverse(a1, "requestor:7", hub.now, key=f"reverse:{a1}")
    assert reversal is not None
    book.apply(reversal)
    for n in range(later):  # more of its transactions since than a look at the latest 10,000 would see
        book.apply(Post(f"memo:{n}", "memo", hub.now, (("hub", 0), ("mint", 0)), a1))
    [saved] = [a for a in hub.actions if isinstance(a, SaveLease)]
    # The hub dies while the activity runs; the next one must remember it lost.
    again = HubHarness(
        version="1.5", credentials=credentials(), book=book, capture_interval=60.0, now=hub.now, grace=600
    )
    again.take(again.core.restore([saved.session], [saved.lease], [book.meter(a1, PRICED)]))
    p = provide(again, "p1", activities=[a1])
    out = again.expire(after=60)
    [ask] = [m for q, m in out if m["type"] == "meter" and q == p]
    again.send(p, {"type": "done", "re": ask["id"], "cpu_seconds": 180})
    assert captured(book, a1) > 0
    again.take(again.core.disconnect(p, "gone"))  # its end: every capture after the restart comes back too
    keys = [post.key for post in book.of("reverse", a1)]
    assert keys == [f"reverse:{a1}", f"reverse:{a1}:end"]
    kept = sum(
        x for post in [*book.of("capture", a1), *book.of("reverse", a1)] for a, x in post.entries if a == "provider:p1"
    )
    assert kept == 0, "the provider that lost keeps nothing of it, restart or not"
    book.check()


def test_rented_tells_the_price_the_activity_is_billed_at_not_a_later_offer() -> None:
    hub, [p], r = priced()
    to, create = hub.create(r, 1)
    hub.offer(p, price={"start": 0, "cpu_hour": 0, "env_hour": 0})  # free from now on: this rent is not
    [(_, rented)] = hub.send(to, {"type": "done", "re": create["id"]})
    assert rented["price"] == PRICE and rented["hold"] == HOUR_HOLD
    hub2, [p2], r2 = priced()
    to, create = hub2.create(r2, 1)
    hub2.offer(p2, price={**PRICE, "start": 5 * PRICE["start"]})
    [(_, rented)] = hub2.send(to, {"type": "done", "re": create["id"]})
    assert rented["price"] == PRICE


class _Unscannable(dict):  # type: ignore[type-arg]
    """A dict a tick may look up and change, but not walk through."""

    def values(self) -> Any:
        raise AssertionError("walked every entry")

    items = keys = __iter__ = values


def test_a_tick_looks_only_at_what_is_due_not_at_every_meter_or_deadline() -> None:
    hub, [_], r = priced(credits=1000 * MICRO)
    for rid in range(1, 6):
        hub.rent(r, rid, cpus=0.25, max_duration=3000)
    core = hub.core
    core.ledger.meters = _Unscannable(core.ledger.meters)
    core._expiring = _Unscannable(core._expiring)
    out = hub.expire(after=30)  # nothing due: nothing walked
    assert costs(out, r) == []
    out = meter(hub, hub.expire(after=31), 5.0)  # all five captures due
    assert len(costs(out, r)) == 5
    out = hub.expire(after=3000)  # all five expire
    assert len(core._expiring) == 0
    assert len([m for _, m in out if isinstance(m, dict) and m["type"] == "destroy"]) == 5


def test_an_absurd_price_never_holds_or_bills_one_activity_more_than_a_message_carries() -> None:
    book = Book()
    for _ in range(5):
        book.grant(7, MAX_MICRO)
    hub, _, r = priced(book=book, providers=0)
    provide(hub, "p1", price={"start": MAX_MICRO, "cpu_hour": MAX_MICRO, "env_hour": MAX_MICRO})
    activity = hub.rent(r, 1)
    assert book.balance(f"hold:{activity}") <= MAX_MICRO
    out = []
    for n in range(1, 11):  # the hub's tick does not fail on a cost past MAX_MICRO
        out += meter(hub, ticked := hub.expire(after=60), 60.0 * n) + ticked
    [lost] = [m for _, m in out if isinstance(m, dict) and m["type"] == "activity_lost"]
    assert lost["code"] == "insufficient_funds" and "the most one activity may be" in lost["reason"]
    [(to, destroy)] = [(q, m) for q, m in out if isinstance(m, dict) and m["type"] == "destroy"]
    out += hub.send(to, {"type": "done", "re": destroy["id"], "cpu_seconds": 600.0})
    assert [c["due"] for c in costs(out, r)] == [MAX_MICRO] == [captured(book, activity)]
    assert book.balance("requestor:7") == 4 * MAX_MICRO


def test_ledger_matched_counts_every_transaction_that_matched_not_only_those_within_the_limit() -> None:
    book = Book()
    for _ in range(5):
        book.grant(7, MICRO)
    hub, _, r = priced(book=book, providers=0)
    [(_, listed)] = hub.send(r, {"type": "ledger", "id": 6, "limit": 2})
    assert len(listed["transactions"]) == 2 and listed["matched"] == 5


def test_rents_naming_ever_new_groups_do_not_grow_the_hubs_memory_of_budgets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("kiln.hub.ledger.BUDGETS_KEPT", 10)
    hub, [_], r = priced(credits=0)
    for n in range(1, 50):  # refused every one (no credits): each named a new group
        rent = {"type": "rent", "id": n, "image": "img:1", "demand": {"cpus": 1}, "group": f"g{n}", "budget": MICRO}
        [(_, error)] = hub.send(r, rent)
        assert error["code"] == "insufficient_funds"
    assert len(hub.core.ledger._budgets) <= 11


def test_a_budget_holds_when_the_hub_lets_go_of_its_memory_of_budgets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("kiln.hub.ledger.BUDGETS_KEPT", 0)
    budget = HOUR_HOLD + HOUR_HOLD // 2
    hub, _, r = priced(providers=3)
    hub.rent(r, 1, group="g", budget=budget)
    hub.create(r, 2, group="g")  # what the budget had left: half an hour's worst case
    assert hub.book is not None and hub.book.balance("hold:a2") == budget - HOUR_HOLD
    [(_, refused)] = hub.send(r, {"type": "rent", "id": 3, "image": "img:1", "demand": {"cpus": 1}, "group": "g"})
    assert refused["code"] == "budget_exceeded"


def test_a_balance_looks_at_the_askers_meters_alone_not_at_every_meter_of_the_hub() -> None:
    hub, _, r = priced(providers=2)
    activity = hub.rent(r, 1)
    run(hub, 60, 60)
    hub.core.ledger.meters = _Unscannable(hub.core.ledger.meters)
    [(_, info)] = hub.send(r, {"type": "balance", "id": 5})
    assert hub.book is not None and info["held"] == HOUR_HOLD - captured(hub.book, activity) > 0
    end(hub, r, activity, 1.0)
    [(_, info)] = hub.send(r, {"type": "balance", "id": 6})
    assert info["held"] == 0 and hub.core.ledger._of_account == {}
