"""The ledger's tables (:mod:`kiln.hub.ledger`): the SQL :class:`~kiln.hub.io.state.HubState` runs for it.

Three tables hold it (migration 4 of :data:`kiln.hub.io.state.MIGRATIONS`):

* ``ledger_transactions``: one row per :class:`~kiln.hub.ledger.Post`, its ``key`` unique, so a
  post replayed (after a restart, or twice by mistake) inserts nothing (``ON CONFLICT (key) DO
  NOTHING``) and moves nothing;
* ``ledger_entries``: its entries, ``line`` by ``line`` as posted; never updated nor deleted
  (a wrong capture is undone by a compensating transaction, ``reverse``);
* ``ledger_balances``: each account's balance, cached: updated in the same database
  transaction as the entries, so that a balance is one indexed read. :func:`check` compares
  them with the entries.

Every function here runs inside a transaction its caller opened (reads may run outside one)
and takes the open :class:`~kiln.hub.io.sql.Database`. The SQL is plain, for PostgreSQL as for
SQLite: ``RETURNING``, ``ON CONFLICT``, ``||`` and ``WITH`` are in both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kiln.hub.io.sql import Database, chunks
from kiln.hub.ledger import Post
from kiln.hub.records import MeterRecord
from kiln.protocol.errors import KilnError
from kiln.protocol.messages import Entry, Price, Transaction

MAX_AMOUNT: Final = 2**62
"""The largest amount an entry (or a balance) may carry: what a message carries, and far inside BIGINT."""
MAX_KEY: Final = 256
MAX_KIND: Final = 32
MAX_ENTRIES: Final = 16
"""A transaction's bounds, as the ``ledger_list`` message carries it (:class:`~kiln.protocol.messages.Transaction`)."""


def post(db: Database, p: Post) -> bool:
    """Commit ``p`` unless a transaction with its key is there already; whether it was new.

    Raises :class:`KilnError` (and writes nothing) for one a listing could not show: an amount
    past :data:`MAX_AMOUNT`, a key of more than 256 characters, a kind of more than 32, more
    than 16 entries.
    """
    if any(not -MAX_AMOUNT <= amount <= MAX_AMOUNT for _, amount in p.entries):
        raise KilnError(f"transaction {p.key}: an amount is out of range")
    if len(p.key) > MAX_KEY or len(p.kind) > MAX_KIND or len(p.entries) > MAX_ENTRIES:
        raise KilnError(f"transaction {p.key[:MAX_KEY]}: its key, kind or number of entries is out of range")
    row = db.execute(
        "INSERT INTO ledger_transactions (key, kind, time, activity, session, grp, seconds, cpu_seconds) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING RETURNING id",
        (p.key, p.kind, p.time, p.activity, p.session, p.group, p.seconds, p.cpu_seconds),
    ).fetchall()
    if not row:
        return False
    txn = int(row[0][0])
    db.executemany(
        "INSERT INTO ledger_entries (txn, line, account, amount) VALUES (?, ?, ?, ?)",
        [(txn, line, account, amount) for line, (account, amount) in enumerate(p.entries)],
    )
    db.executemany(
        "INSERT INTO ledger_balances (account, balance) VALUES (?, ?) "
        "ON CONFLICT (account) DO UPDATE SET balance = ledger_balances.balance + excluded.balance",
        [(account, amount) for account, amount in p.entries],
    )
    return True


# A requestor's holds: the activities whose hold transactions took from the account.
_HOLDS_OF: Final = (
    "SELECT t.activity FROM ledger_transactions t JOIN ledger_entries e ON e.txn = t.id "
    "WHERE e.account = ? AND t.kind = 'hold' AND e.amount < 0"
)


def held(db: Database, account: str) -> int:
    """What is held now for the activities whose holds came from ``account``."""
    row = db.execute(
        "SELECT COALESCE(SUM(balance), 0) FROM ledger_balances WHERE account IN "
        f"(SELECT 'hold:' || h.activity FROM ({_HOLDS_OF}) h)",
        (account,),
    ).fetchone()
    return int(row[0])


def granted(db: Database, account: str) -> int:
    """What ``grant`` transactions put in ``account``."""
    row = db.execute(
        "SELECT COALESCE(SUM(e.amount), 0) FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.txn "
        "WHERE e.account = ? AND t.kind = 'grant'",
        (account,),
    ).fetchone()
    return int(row[0])


def _of(account: str | None, activity: str | None) -> tuple[str, list[str]]:
    """The condition on ``ledger_transactions`` that picks those of ``account`` (with an entry in
    it, or of an activity it held for) and of ``activity``, and its arguments."""
    where, args = ["1 = 1"], []
    if account is not None:
        where.append(f"(id IN (SELECT txn FROM ledger_entries WHERE account = ?) OR activity IN ({_HOLDS_OF}))")
        args += [account, account]
    if activity is not None:
        where.append("activity = ?")
        args.append(activity)
    return " AND ".join(where), args


def count(db: Database, account: str | None = None, activity: str | None = None) -> int:
    """How many transactions :func:`transactions` would list with no limit."""
    condition, args = _of(account, activity)
    return int(db.execute(f"SELECT COUNT(*) FROM ledger_transactions WHERE {condition}", args).fetchone()[0])


def transactions(
    db: Database, account: str | None = None, activity: str | None = None, limit: int = 100
) -> list[Transaction]:
    """The latest ``limit`` transactions, newest first: all, or those of ``account`` (with an
    entry in it, or of an activity it held for: a requestor sees its activities' captures and
    releases), or those of ``activity``; both given, those of both."""
    condition, args = _of(account, activity)
    rows = db.execute(
        f"SELECT id, key, kind, time, activity FROM ledger_transactions WHERE {condition} ORDER BY id DESC LIMIT ?",
        [*args, max(0, limit)],
    ).fetchall()
    entries = _entries(db, [int(row[0]) for row in rows])
    listed = [
        Transaction(
            id=id_,
            key=key,
            kind=kind,
            time=max(0.0, time),
            activity=activity_,
            entries=[Entry(account=a, amount=amount) for a, amount in entries.get(id_, [])],
        )
        for id_, key, kind, time, activity_ in rows
    ]
    return listed


def _entries(db: Database, ids: Sequence[int]) -> dict[int, list[tuple[str, int]]]:
    out: dict[int, list[tuple[str, int]]] = {}
    sql = "SELECT txn, account, amount FROM ledger_entries WHERE txn IN ({}) ORDER BY txn, line"
    for rows in _chunked(db, sql, ids):
        for txn, account, amount in rows:
            out.setdefault(int(txn), []).append((str(account), int(amount)))
    return out


def _chunked(db: Database, sql: str, values: Sequence[Any]) -> Iterable[list[Any]]:
    """``sql`` (its ``IN ({})`` filled with marks) run on ``values`` a chunk at a time."""
    for chunk, marks in chunks(values):
        yield db.execute(sql.format(marks), chunk).fetchall()


def check(db: Database) -> list[str]:
    """What is wrong with the ledger, one sentence each (none: it holds).

    Every transaction's entries sum to zero; every entry belongs to a transaction; every
    account's cached balance equals the sum of its entries, and every account with entries has
    one; no requestor's available balance and no hold is below zero.
    """
    problems = [
        f"transaction {id_} ({key}) does not balance: its entries sum to {total}"
        for id_, key, total in db.execute(
            "SELECT t.id, t.key, SUM(e.amount) FROM ledger_transactions t JOIN ledger_entries e ON e.txn = t.id "
            "GROUP BY t.id, t.key HAVING SUM(e.amount) <> 0 ORDER BY t.id"
        )
    ]
    problems += [
        f"{count} entries belong to no transaction (id {txn})"
        for txn, count in db.execute(
            "SELECT txn, COUNT(*) FROM ledger_entries WHERE txn NOT IN (SELECT id FROM ledger_transactions) "
            "GROUP BY txn ORDER BY txn"
        )
    ]
    for account, cached, summed, known in db.execute(
        "SELECT account, SUM(cached), SUM(summed), MAX(known) FROM ("
        "SELECT account, balance AS cached, 0 AS summed, 1 AS known FROM ledger_balances "
        "UNION ALL SELECT account, 0, amount, 0 FROM ledger_entries"
        ") AS b GROUP BY account HAVING SUM(cached) <> SUM(summed) OR MAX(known) = 0 ORDER BY account"
    ):
        if not known:
            problems.append(f"account {account} has entries summing to {summed} but no cached balance")
        else:
            problems.append(f"account {account}: its cached balance is {cached}, its entries sum to {summed}")
    problems += [
        f"account {account} is below zero: {balance}"
        for account, balance in db.execute(
            "SELECT account, balance FROM ledger_balances "
            "WHERE (account LIKE 'requestor:%' OR account LIKE 'hold:%') AND balance < 0 ORDER BY account"
        )
    ]
    return problems


def counts(db: Database) -> tuple[int, int]:
    """How many transactions, and how many accounts, the ledger holds."""
    row = db.execute(
        "SELECT (SELECT COUNT(*) FROM ledger_transactions), (SELECT COUNT(*) FROM ledger_balances)"
    ).fetchone()
    return int(row[0]), int(row[1])


def committed(db: Database, session: str, group: str) -> int:
    """What the group's holds (top-ups included) put in their activities' holds minus what
    their releases took back: captures stay committed."""
    row = db.execute(
        "SELECT COALESCE(SUM(e.amount), 0) FROM ledger_transactions t JOIN ledger_entries e ON e.txn = t.id "
        "AND e.account = 'hold:' || t.activity WHERE t.session = ? AND t.grp = ? AND t.kind IN ('hold', 'release')",
        (session, group),
    ).fetchone()
    return int(row[0])


# The activities the ledger meters: those in the activities table, and those ended whose hold
# still has a balance (a restart is to settle them).
_METERED: Final = (
    "WITH metered (activity) AS (SELECT id FROM activities UNION "
    "SELECT SUBSTR(account, 6) FROM ledger_balances WHERE account LIKE 'hold:%' AND balance > 0) "
)


@dataclass(slots=True)
class _Sums:
    held: int = 0
    captured: int = 0
    seq: int = 0
    tops: int = 0
    first_hold: int | None = None
    last_capture: int | None = None


def meters(db: Database, only: Callable[[str], bool] = lambda activity: True) -> list[MeterRecord]:
    """A :class:`MeterRecord` per activity with a hold that ``only`` keeps: each lease of the
    activities table (``ended`` None), and each activity no longer there whose hold has a balance left."""
    sums: dict[str, _Sums] = {}
    for activity, kind, total, posts, first, last in db.execute(
        _METERED + "SELECT t.activity, t.kind, SUM(e.amount), COUNT(DISTINCT t.id), MIN(t.id), MAX(t.id) "
        "FROM ledger_transactions t JOIN ledger_entries e ON e.txn = t.id AND e.account = 'hold:' || t.activity "
        "WHERE t.activity IN (SELECT activity FROM metered) GROUP BY t.activity, t.kind"
    ):
        s = sums.setdefault(str(activity), _Sums())
        if kind == "capture":
            s.captured -= int(total)
            s.seq += int(posts)
            s.last_capture = int(last)
        else:
            s.held += int(total)
            if kind == "hold":
                s.first_hold, s.tops = int(first), int(posts) - 1
    sums = {a: s for a, s in sums.items() if s.first_hold is not None and only(a)}
    if not sums:
        return []
    firsts = {
        int(id_): (session, grp, str(account), float(time))
        for rows in _chunked(
            db,
            "SELECT t.id, t.session, t.grp, e.account, t.time FROM ledger_transactions t "
            "JOIN ledger_entries e ON e.txn = t.id WHERE e.amount < 0 AND t.id IN ({})",
            [s.first_hold for s in sums.values()],
        )
        for id_, session, grp, account, time in rows
    }
    lasts = {
        int(id_): (float(seconds or 0.0), float(cpu or 0.0))
        for rows in _chunked(
            db,
            "SELECT id, seconds, cpu_seconds FROM ledger_transactions WHERE id IN ({})",
            [s.last_capture for s in sums.values() if s.last_capture is not None],
        )
        for id_, seconds, cpu in rows
    }
    live = {
        str(row[0]): row[1:]
        for rows in _chunked(
            db,
            "SELECT id, provider, cpus, started, max_duration, price_start, price_cpu_hour, price_env_hour "
            "FROM activities WHERE id IN ({})",
            list(sums),
        )
        for row in rows
    }
    ended = {
        str(row[0]): row[1:]
        for rows in _chunked(
            db,
            "SELECT activity, provider, cpus, started, ended, cpu_seconds, price_start, price_cpu_hour, "
            "price_env_hour FROM usage WHERE activity IN ({}) ORDER BY ended",
            [a for a in sums if a not in live],
        )
        for row in rows
    }
    out = []
    for activity, s in sorted(sums.items()):
        assert s.first_hold is not None
        session, group, requestor, hold_time = firsts[s.first_hold]
        seconds, cpu_seconds = lasts.get(s.last_capture or 0, (0.0, 0.0))
        provider: str | None = None
        rates: Sequence[int | None] = (0, 0, 0)
        max_duration: float | None = None
        ended_at: float | None = hold_time  # a rent that never became a lease, unless found below
        cpus, started = 0.0, hold_time
        if activity in live:
            provider, cpus, started, max_duration, *rates = live[activity]
            ended_at = None
        elif activity in ended:
            provider, cpus, started, ended_at, measured, *rates = ended[activity]
            if measured is not None:
                cpu_seconds = max(cpu_seconds, float(measured))
        start, cpu_hour, env_hour = (int(rate or 0) for rate in rates)
        out.append(
            MeterRecord(
                activity=activity,
                start=start,
                cpu_hour=cpu_hour,
                env_hour=env_hour,
                requestor=requestor,
                session=session,
                group=group,
                provider=provider,
                tops=s.tops,
                cpus=float(cpus),
                started=float(started),
                max_duration=max_duration,
                held=s.held,
                captured=s.captured,
                seq=s.seq,
                seconds=seconds,
                cpu_seconds=cpu_seconds,
                ended=None if ended_at is None else float(ended_at),
            )
        )
    return out


def price_of(rates: Sequence[int | None]) -> Price | None:
    """The price of a row's ``price_start, price_cpu_hour, price_env_hour`` (None when they are NULL)."""
    start, cpu_hour, env_hour = rates
    if start is None or cpu_hour is None or env_hour is None:
        return None
    return Price.micro(int(start), int(cpu_hour), int(env_hour))
