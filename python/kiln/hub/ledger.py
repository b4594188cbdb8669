"""The hub's ledger: accounts, and the transactions that move credits between them.

Double entry in integer micro-credits (:mod:`kiln.protocol.money`): every movement is one
:class:`Post` whose entries sum to zero, under an idempotency ``key`` (posting the same key
twice posts it once). The accounts:

* ``requestor:<credential id>``: what a requestor credential may spend (available);
* ``provider:<name>``: what a provider earned (a provider credential binds its name);
* ``hold:<activity>``: what is held for one activity, from its requestor's account;
* :data:`HUB`: the hub's fee (``kiln hub --fee``);
* :data:`MINT`: where granted credits come from (``kiln credit grant``): its balance is minus
  every credit granted.

Kinds of transaction: ``grant`` (mint -> requestor), ``hold`` (requestor -> hold, also to top
a hold up), ``capture`` (hold -> provider and hub: what became due since the last capture,
key ``capture:<activity>:<seq>``), ``release`` (hold -> requestor: the rest at the end, key
``release:<activity>``), ``reverse`` (provider and hub -> requestor: what was paid for an
activity that lost a verdict, key ``reverse:<activity>``).

The core never stores a balance: it asks :class:`Accounts` (the hub's database, or a test's
book) and writes a :class:`Post` among its actions (:mod:`kiln.hub.records`), which the I/O
layer commits before the next message is taken. Nothing here does I/O.

:class:`Ledger` is the core's bookkeeping of priced activities (one :class:`Meter` each): the
hold placed at rent (refused ``insufficient_funds`` or ``budget_exceeded``), the captures of
what became due (cumulative, never more than held, so a group never spends more than its
budget), the top-ups of a hold about to run out, the final capture and the release at the
end, and the reversal a lost verdict calls for. It returns the changes to write and the
:class:`~kiln.protocol.messages.Cost` to tell; the core (:mod:`kiln.hub.metering`) sends.
"""

from __future__ import annotations

import heapq
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from kiln.protocol.codes import ErrorCode
from kiln.protocol.messages import Cost, Price, Transaction
from kiln.protocol.money import MAX_MICRO, billable_cpu, due, format_credits, seconds_covered, worst_case

CAPTURE_INTERVAL: Final = 60.0
"""Seconds between two captures of a running priced activity (``HubCore(capture_interval=)``)."""
HOLD_WINDOW: Final = 3600.0
"""Seconds of the worst case held at rent (and at each top-up) for a rent with no ``max_duration``."""
MIN_HOLD: Final = 60.0
"""A group's budget must still cover this many seconds of an activity's worst case, or the rent is refused."""
ENDED_KEPT: Final = 65_536
"""Ended activities remembered (whose they were, where they ran) for verdicts reported after their end."""
BUDGETS_KEPT: Final = 65_536
"""Groups whose budget and commitment are kept in memory: past that, they are read again from the accounts."""
PPM: Final = 1_000_000
"""The fee is in parts per million of each capture (``kiln hub --fee 0.05`` is 50,000)."""

HUB: Final = "hub"
MINT: Final = "mint"


def requestor_account(credential: int) -> str:
    return f"requestor:{credential}"


def provider_account(name: str) -> str:
    return f"provider:{name}"


def hold_account(activity: str) -> str:
    return f"hold:{activity}"


@dataclass(frozen=True, slots=True)
class Post:
    """One transaction to commit: ``entries`` (account, micro-credits) sum to zero.

    ``session`` and ``group`` name the job (a requestor's group) a hold or release is for, so
    that what a group committed of its budget can be summed again after a restart;
    ``seconds`` and ``cpu_seconds`` are what a capture billed (cumulative)."""

    key: str
    kind: str
    time: float
    entries: tuple[tuple[str, int], ...]
    activity: str | None = None
    session: str | None = None
    group: str | None = None
    seconds: float | None = None
    cpu_seconds: float | None = None

    def __post_init__(self) -> None:
        if sum(amount for _, amount in self.entries) != 0:
            raise ValueError(f"transaction {self.key}: its entries do not sum to zero")


class Accounts(Protocol):
    """What the core asks of the ledger (the hub's database implements it)."""

    def balance(self, account: str) -> int:
        """The account's balance as committed (0 for an account never used)."""
        ...

    def transactions(
        self, account: str | None = None, activity: str | None = None, limit: int = 100
    ) -> list[Transaction]:
        """The latest transactions touching ``account`` (or of ``activity``; or all), newest first."""
        ...

    def count_transactions(self, account: str | None = None, activity: str | None = None) -> int:
        """How many transactions :meth:`transactions` would list with no limit."""
        ...

    def budget(self, session: str, group: str) -> int | None:
        """The budget the group's first rent set (:class:`~kiln.hub.records.SaveBudget`), if any."""
        ...

    def committed(self, session: str, group: str) -> int:
        """What the group committed of its budget: its holds (and top-ups) minus its releases."""
        ...

    def spent(self, account: str) -> int:
        """What the requestor ``account`` spent in all, as committed: what it was granted, less
        what it has and what is held for it (a charge reversed came back: not spent)."""
        ...


@dataclass(slots=True)
class Meter:
    """One priced activity's account of what is held for it and what it was charged.

    ``held`` is every credit put on hold for it (top-ups included), ``captured`` what was
    moved from the hold to its provider and the hub so far (cumulative, never more than
    ``held``), ``seq`` the number of captures posted (the next key is ``capture:<activity>:<seq+1>``),
    ``seconds`` and ``cpu_seconds`` what the last capture billed. ``started`` is when it became
    ready (the hub's clock; ``None`` while being created: nothing is due yet)."""

    activity: str
    account: str  # the requestor's account the hold comes from and goes back to
    provider: str  # the provider's name
    price: Price
    cpus: float
    max_duration: float | None
    session: str
    group: str | None
    held: int = 0
    captured: int = 0
    seq: int = 0
    cpu_seconds: float = 0.0
    seconds: float = 0.0
    started: float | None = None
    next: float = 0.0  # when the next capture is due (the hub's clock)
    tops: int = 0  # top-ups posted (keys hold:<activity>:<n>)
    asking: bool = False  # a meter request is out to its provider


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a hold cannot be placed (or topped up): an error code and a text for the requestor."""

    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class Ended:
    """What a verdict needs of an activity after its end: whose it was and where it ran."""

    session: str
    credential: int | None
    provider: str


class Ledger:
    """The meters of the hub's priced activities, and the transactions they call for.

    Pure: balances are asked of ``accounts`` (as committed), and every movement comes back as
    a :class:`Post` for the core to put among its actions. Amounts held in the batch of
    actions not yet committed are counted apart (:meth:`flushed` forgets them once written),
    so two holds in one batch cannot both spend the same credits.
    """

    def __init__(
        self,
        accounts: Accounts | None,
        *,
        fee_ppm: int = 0,
        capture_interval: float = CAPTURE_INTERVAL,
        hold_window: float = HOLD_WINDOW,
    ) -> None:
        if not 0 <= fee_ppm <= PPM:
            raise ValueError("the fee is between 0 and 1,000,000 parts per million")
        if capture_interval <= 0 or hold_window < MIN_HOLD:
            raise ValueError(f"the capture interval must be positive and the hold window at least {MIN_HOLD:g} s")
        self.accounts = accounts
        self.fee_ppm = fee_ppm
        self.capture_interval = capture_interval
        self.hold_window = hold_window
        self.meters: dict[str, Meter] = {}
        self.ended: OrderedDict[str, Ended] = OrderedDict()
        self._budgets: dict[tuple[str, str], int | None] = {}
        self._committed: dict[tuple[str, str], int] = {}
        self._unwritten: Counter[str] = Counter()  # held in the batch not yet committed
        self._judged: OrderedDict[str, None] = OrderedDict()  # activities that lost a verdict
        self._due: list[tuple[float, str]] = []  # (when, activity): a heap of the captures to come
        self._of_account: dict[str, set[str]] = {}  # a requestor's account -> its meters' activities

    def add(self, meter: Meter) -> None:
        """Meter ``meter``'s activity (its hold placed, or taken back at a restart)."""
        self.meters[meter.activity] = meter
        self._of_account.setdefault(meter.account, set()).add(meter.activity)

    def schedule(self, meter: Meter, at: float) -> None:
        """The next capture of ``meter`` is due at ``at`` (the hub's clock)."""
        meter.next = at
        heapq.heappush(self._due, (at, meter.activity))

    def due_meters(self, now: float) -> list[Meter]:
        """The started meters whose capture :meth:`schedule` made due by ``now``, each taken off the
        schedule (:meth:`schedule` it again): the tick's work is what is due, not every meter."""
        out = []
        while self._due and self._due[0][0] <= now:
            at, activity = heapq.heappop(self._due)
            meter = self.meters.get(activity)
            if meter is not None and meter.next == at and meter.started is not None:
                out.append(meter)
        return out

    def flushed(self) -> None:
        """The actions given out so far are about to be written: balances asked now include them,
        and so do the budgets and commitments the accounts hold (the memory of them is let go
        past :data:`BUDGETS_KEPT` groups: a requestor naming ever new groups cannot grow it)."""
        self._unwritten.clear()
        if len(self._budgets) > BUDGETS_KEPT and self.accounts is not None:
            self._budgets.clear()
            self._committed.clear()

    def available(self, account: str) -> int:
        """What ``account`` may still hold: its committed balance less what the pending batch holds."""
        assert self.accounts is not None
        return self.accounts.balance(account) - self._unwritten[account]

    def held(self, account: str) -> int:
        """What is held for the live activities whose requestor is ``account`` (not yet captured)."""
        meters = (self.meters[activity] for activity in self._of_account.get(account, ()))
        return sum(m.held - m.captured for m in meters)

    # --- holds --------------------------------------------------------------------------

    def budget_of(self, session: str, group: str | None) -> tuple[int | None, int]:
        """The group's budget (``None``: none) and what it committed of it so far."""
        if group is None:
            return None, 0
        key = (session, group)
        if key not in self._budgets:
            self._budgets[key] = self.accounts.budget(session, group) if self.accounts is not None else None
            self._committed[key] = self.accounts.committed(session, group) if self.accounts is not None else 0
        return self._budgets[key], self._committed[key]

    def set_budget(self, session: str, group: str, budget: int) -> bool:
        """The group's budget, unless one is set already (the first rent's holds); whether it was set."""
        if self.budget_of(session, group)[0] is not None:
            return False
        self._budgets[(session, group)] = budget
        return True

    def open(self, meter: Meter, now: float) -> Post | Refusal:
        """Place the hold for a new activity (before its ``create`` goes out), or say why not.

        The hold is the worst case of its ``max_duration`` (or of the hold window), cut to what
        its group's budget has left (and to :data:`~kiln.protocol.money.MAX_MICRO`: no activity
        is ever held, nor billed, more than a message carries); it is refused ``budget_exceeded`` if the budget cannot
        cover :data:`MIN_HOLD` seconds, ``insufficient_funds`` if the requestor's available
        balance cannot cover the hold."""
        price, cpus = meter.price, meter.cpus
        # Never more than a message carries (MAX_MICRO): what is captured of it is told in a Cost.
        hold = min(worst_case(price, cpus, meter.max_duration or self.hold_window), MAX_MICRO)
        budget, committed = self.budget_of(meter.session, meter.group)
        if budget is not None:
            least = worst_case(price, cpus, MIN_HOLD)
            if budget - committed < least:
                return Refusal(
                    ErrorCode.BUDGET_EXCEEDED,
                    f"the job's budget of {format_credits(budget)} credits has {format_credits(budget - committed)} "
                    f"left, less than {format_credits(least)} ({MIN_HOLD:g} s of this provider's worst case)",
                )
            hold = min(hold, budget - committed)
        available = self.available(meter.account)
        if available < hold:
            return Refusal(
                ErrorCode.INSUFFICIENT_FUNDS,
                f"this rent needs {format_credits(hold)} credits held and {meter.account} has "
                f"{format_credits(max(available, 0))} available",
            )
        self.add(meter)
        return self._hold(meter, hold, f"hold:{meter.activity}", now)

    def _hold(self, meter: Meter, amount: int, key: str, now: float) -> Post:
        meter.held += amount
        self._unwritten[meter.account] += amount
        if meter.group is not None:
            self._committed[(meter.session, meter.group)] = self.budget_of(meter.session, meter.group)[1] + amount
        entries = ((meter.account, -amount), (hold_account(meter.activity), amount))
        return Post(key, "hold", now, entries, meter.activity, meter.session, meter.group)

    def written(self, hold: Post) -> None:
        """``hold`` (a hold or a top-up of :meth:`open` or :meth:`top_up`) is committed already (the
        database decided it: several hubs): the balance asked from now on includes it."""
        for account, amount in hold.entries:
            if amount < 0:
                self._unwritten[account] += amount

    def withdraw(self, meter: Meter, hold: Post) -> None:
        """``hold`` could not be committed (another hub held the balance first): as if never placed;
        a hold of :meth:`open` forgets ``meter`` too."""
        amount = sum(value for _, value in hold.entries if value > 0)
        meter.held -= amount
        self._unwritten[meter.account] -= amount
        if meter.group is not None:
            key = (meter.session, meter.group)
            self._committed[key] = self.budget_of(meter.session, meter.group)[1] - amount
        if hold.key == hold_account(meter.activity):  # the first hold: the meter goes with it
            self.meters.pop(meter.activity, None)
            self._of_account.get(meter.account, set()).discard(meter.activity)
        else:
            meter.tops -= 1

    def top_up(self, meter: Meter, now: float) -> Post | Refusal | None:
        """Hold more for a running activity whose hold covers less than two more capture intervals.

        ``None``: nothing to do (or held what could be, short of the whole window); a
        :class:`Refusal` when nothing more can be held and the hold is about to run out: end
        the activity with its code."""
        if meter.started is None:
            return None
        price, cpus = meter.price, meter.cpus
        covered = seconds_covered(price, cpus, meter.held)
        if meter.max_duration is not None and covered >= meter.max_duration:
            return None
        elapsed = max(now - meter.started, 0.0)
        if covered - elapsed > 2 * self.capture_interval:
            return None
        extra = worst_case(price, cpus, self.hold_window) - price.start
        if meter.max_duration is not None:
            extra = min(extra, worst_case(price, cpus, meter.max_duration) - meter.held)
        code, why = ErrorCode.INSUFFICIENT_FUNDS, f"{meter.account} has no credits left to hold for it"
        amount = min(extra, self.available(meter.account))
        if MAX_MICRO - meter.held < amount:
            amount = MAX_MICRO - meter.held
            why = f"it is held the most one activity may be, {format_credits(MAX_MICRO)} credits"
        budget, committed = self.budget_of(meter.session, meter.group)
        if budget is not None and budget - committed < amount:
            amount = budget - committed
            code, why = ErrorCode.BUDGET_EXCEEDED, f"the job's budget of {format_credits(budget)} credits is spent"
        if amount > 0:
            meter.tops += 1
            return self._hold(meter, amount, f"hold:{meter.activity}:{meter.tops}", now)
        return Refusal(code, f"activity {meter.activity} ended: {why}")

    # --- captures and the end -------------------------------------------------------------

    def capture(
        self, meter: Meter, now: float, cpu_seconds: float | None, *, final: bool = False
    ) -> tuple[Post | None, Cost | None]:
        """What became due since the last capture, posted (``None`` when nothing did), and the
        :class:`Cost` to tell (``None`` before the first capture).

        Due is cumulative, from the start fee, the wall time since ``started`` (at most
        ``max_duration``) and the CPU seconds reported (at most the CPUs rented times the
        wall time), never more than held; ``cpu_seconds`` ``None``: the last reported."""
        if meter.started is None:
            return None, None
        seconds = max(now - meter.started, meter.seconds, 0.0)
        if meter.max_duration is not None:
            seconds = min(seconds, meter.max_duration)
        reported = meter.cpu_seconds if cpu_seconds is None else max(cpu_seconds, meter.cpu_seconds)
        billed = billable_cpu(reported, meter.cpus, seconds)
        amount = min(due(meter.price, seconds, billed), meter.held)
        delta = amount - meter.captured
        meter.seconds, meter.cpu_seconds = seconds, billed
        post = None
        if delta > 0:
            meter.seq += 1
            meter.captured = amount
            fee = delta * self.fee_ppm // PPM
            entries: tuple[tuple[str, int], ...] = (
                (hold_account(meter.activity), -delta),
                (provider_account(meter.provider), delta - fee),
            )
            if fee:
                entries += ((HUB, fee),)
            key = f"capture:{meter.activity}:{meter.seq}"
            post = Post(key, "capture", now, entries, meter.activity, meter.session, meter.group, seconds, billed)
        if meter.seq == 0:
            return post, None
        cost = Cost(
            type="cost",
            activity=meter.activity,
            seq=meter.seq,
            due=meter.captured,
            seconds=seconds,
            cpu_seconds=billed,
            final=final,
        )
        return post, cost

    def close(self, activity: str, now: float, cpu_seconds: float | None) -> tuple[list[Post], Cost | None]:
        """The activity ended: its final capture and the release of its hold's rest (and the
        final :class:`Cost`). Nothing for an activity with no meter (or closed already)."""
        meter = self.meters.pop(activity, None)
        if meter is None:
            return [], None
        mine = self._of_account.get(meter.account, set())
        mine.discard(activity)
        if not mine:
            self._of_account.pop(meter.account, None)
        post, cost = self.capture(meter, now, cpu_seconds, final=True)
        posts = [post] if post is not None else []
        if activity in self._judged:  # it lost a verdict while it ran: nothing it was paid stays paid
            reversal = self.reverse(activity, meter.account, now, posts, key=f"reverse:{activity}:end")
            if reversal is not None:
                posts.append(reversal)
        rest = meter.held - meter.captured
        if rest > 0:
            entries = ((hold_account(activity), -rest), (meter.account, rest))
            posts.append(Post(f"release:{activity}", "release", now, entries, activity, meter.session, meter.group))
            if meter.group is not None:
                key = (meter.session, meter.group)
                self._committed[key] = self.budget_of(meter.session, meter.group)[1] - rest
        return posts, cost

    def remember(self, activity: str, ended: Ended) -> None:
        """Keep whose an ended activity was (the latest :data:`ENDED_KEPT`), for verdicts."""
        self.ended[activity] = ended
        self.ended.move_to_end(activity)
        while len(self.ended) > ENDED_KEPT:
            self.ended.popitem(last=False)

    def judge(self, activity: str) -> bool:
        """Note that ``activity`` lost a verdict: whether for the first time (the latest
        :data:`ENDED_KEPT` are kept; the reversal's key keeps it once beyond that)."""
        if activity in self._judged:
            return False
        self._judged[activity] = None
        while len(self._judged) > ENDED_KEPT:
            self._judged.popitem(last=False)
        return True

    def reverse(
        self, activity: str, account: str, now: float, pending: Sequence[Post] = (), *, key: str | None = None
    ) -> Post | None:
        """Pay back what ``account`` paid for ``activity`` and was not paid back yet (its captures,
        provider and hub parts, as committed and in ``pending``, not committed yet, less earlier
        reversals), as one compensating transaction under ``key`` (``reverse:<activity>``);
        ``None`` if nothing is left to pay back.

        A verdict on a live activity pays back what was captured so far; its end (:meth:`close`,
        once :meth:`judge` noted it) pays back the captures that came after (``reverse:<activity>:end``)."""
        if self.accounts is None:
            return None
        paid = Counter[str]()
        committed = [
            (t.kind, [(e.account, e.amount) for e in t.entries])
            for t in self.accounts.transactions(activity=activity, limit=1_000_000)
        ]
        for kind, entries in [*committed, *((p.kind, p.entries) for p in pending if p.activity == activity)]:
            if kind in ("capture", "reverse"):  # a reversal's entries take back from the same accounts
                for name, amount in entries:
                    if not name.startswith("hold:") and name != account:
                        paid[name] += amount
        total = sum(paid.values())
        if total <= 0:
            return None
        entries = (*((name, -amount) for name, amount in sorted(paid.items()) if amount), (account, total))
        return Post(key or f"reverse:{activity}", "reverse", now, entries, activity)
