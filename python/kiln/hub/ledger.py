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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

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
