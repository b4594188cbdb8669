"""The hub's durable state: one SQLite database in WAL mode, ``<data-dir>/hub.db``.

It holds the credentials :mod:`kiln.hub.access` judges hellos by, and what a restart must
not lose (:mod:`kiln.hub.records`): requestors' sessions, the activities they hold, and an
usage record of every activity that ended: a row per activity for ``--usage-retention`` days
(:data:`USAGE_RETENTION`), then rolled up (:meth:`HubState.roll_up`) into one row per day,
requestor (name and credential) and provider, which ``kiln usage`` sums as it sums the rows.
It holds the ledger too (its SQL in :mod:`kiln.hub.io.books`: transactions, entries, cached
balances), jobs' budgets and providers' reputation counters, which a restart reads back
(:meth:`HubState.meters`, :meth:`HubState.reputations`; a job's budget when the core asks:
:meth:`HubState.budget`, :meth:`HubState.committed`).
Each table came with one entry of
:data:`MIGRATIONS` (the ``schema_version`` table says how many have run). The SQL is plain and
written once: the same tables live in a PostgreSQL database given as ``--db postgresql://...``
(several hubs then share them); :mod:`kiln.hub.io.sql` holds the little that differs.

Several processes use the file at once: the hub reads credentials at every hello, and
``kiln token create`` / ``revoke`` write them while it runs. In WAL mode a reader never
waits for the writer and sees every transaction committed before its own began, so a
revoked token is refused at its next hello.

A change is committed before the hub tells a peer about it (``synchronous=NORMAL``: a
commit is in the WAL file when it returns, so it survives the hub's process being killed;
the WAL is synced to disk at checkpoints, so a power cut may lose the last moments).

Tokens are ``kiln_`` and 32 random bytes (URL-safe base64). Only their sha256 is stored:
a token holds 256 random bits, so a leaked hash cannot be reversed by guessing, and the
slow key derivation passwords need (to slow the guessing of few bits) would buy nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import TypeAdapter, ValidationError

from kiln.hub.access import ROLES, Credential, Role
from kiln.hub.io import books, shelf
from kiln.hub.io.sql import Database, chunks, is_url, open_database
from kiln.hub.ledger import MINT, Post, requestor_account
from kiln.hub.records import (
    Adopted,
    Change,
    Destroying,
    EndLease,
    EndSession,
    LeaseRecord,
    MeterRecord,
    SaveBudget,
    SaveLease,
    SaveOffer,
    SaveReputation,
    SaveSession,
    SessionRecord,
)
from kiln.protocol.errors import KilnError, UsageError
from kiln.protocol.messages import Name, Resources, Transaction

log = logging.getLogger("kiln.hub.io.state")

FILE_NAME: Final = "hub.db"
HUB_ID_FILE: Final = "hub-id"
MAX_HUBS: Final = 63
"""The most hubs one database serves at once: each has a slot of the ids its providers see (:meth:`HubState.join`)."""
CHANGES_OVERLAP: Final = 2.0
"""Seconds of changes asked for again at each look (:meth:`HubState.providers_changed`): a
transaction commits after the time it wrote."""
DEAD_AFTER: Final = 5.0
"""Seconds after its last heartbeat that a hub counts as dead: what it held may be adopted."""
TOKEN_PREFIX: Final = "kiln_"

_RATES: Final = ("start", "cpu_hour", "env_hour")
_PRICED: Final = ("activities", "usage")  # the tables whose rows carry a lease's price
_PRICE: Final = ", ".join(f"price_{rate}" for rate in _RATES)
_A_PRICE: Final = ", ".join(f"a.price_{rate}" for rate in _RATES)
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 1: credentials. A name is unique among live credentials; a revoked provider
    # credential keeps its name bound (see HubState.bound) until a new one takes it.
    (
        """CREATE TABLE credentials (
            id INTEGER PRIMARY KEY,
            role VARCHAR(16) NOT NULL CHECK (role IN ('provider', 'requestor', 'admin')),
            name VARCHAR(64),
            hash CHAR(64) NOT NULL UNIQUE,
            created DOUBLE PRECISION NOT NULL,
            revoked DOUBLE PRECISION
        )""",
        "CREATE UNIQUE INDEX credentials_live_name ON credentials (name) WHERE revoked IS NULL",
        "CREATE INDEX credentials_name ON credentials (name)",
    ),
    # 2: sessions, the activities they hold, and the usage of those that ended.
    (
        """CREATE TABLE sessions (
            id VARCHAR(32) PRIMARY KEY,
            name VARCHAR(64) NOT NULL,
            credential BIGINT,
            secret CHAR(64) NOT NULL
        )""",
        """CREATE TABLE activities (
            id VARCHAR(64) PRIMARY KEY,
            session VARCHAR(32) NOT NULL,
            provider VARCHAR(64) NOT NULL,
            cpus DOUBLE PRECISION NOT NULL,
            memory BIGINT NOT NULL,
            storage BIGINT NOT NULL,
            grp VARCHAR(64),
            image VARCHAR(80),
            started DOUBLE PRECISION NOT NULL,
            destroying BOOLEAN NOT NULL DEFAULT FALSE
        )""",
        "CREATE INDEX activities_session ON activities (session)",
        """CREATE TABLE usage (
            activity VARCHAR(64) NOT NULL,
            requestor VARCHAR(64) NOT NULL,
            credential BIGINT,
            provider VARCHAR(64) NOT NULL,
            cpus DOUBLE PRECISION NOT NULL,
            memory BIGINT NOT NULL,
            storage BIGINT NOT NULL,
            started DOUBLE PRECISION NOT NULL,
            ended DOUBLE PRECISION NOT NULL,
            cpu_seconds DOUBLE PRECISION
        )""",
    ),
    # 3: the usage record rolled up per day (UTC), requestor and provider, past the retention.
    (
        "CREATE INDEX usage_ended ON usage (ended)",
        """CREATE TABLE usage_days (
            day BIGINT NOT NULL,
            requestor VARCHAR(64) NOT NULL,
            credential BIGINT,
            provider VARCHAR(64) NOT NULL,
            activities BIGINT NOT NULL,
            cpu_seconds_rented DOUBLE PRECISION NOT NULL,
            cpu_seconds_used DOUBLE PRECISION NOT NULL,
            memory_byte_seconds DOUBLE PRECISION NOT NULL
        )""",
    ),
    # 4: the ledger (kiln.hub.io.books), the budgets of jobs, what a metered lease costs (its
    # price in micro-credits, kept in the usage record too, and its max_duration), and each
    # provider's reputation counters (JSON text: kiln.hub.reputation names them).
    (
        """CREATE TABLE ledger_transactions (
            id INTEGER PRIMARY KEY,
            key VARCHAR(256) NOT NULL UNIQUE,
            kind VARCHAR(32) NOT NULL,
            time DOUBLE PRECISION NOT NULL,
            activity VARCHAR(64),
            session VARCHAR(32),
            grp VARCHAR(64),
            seconds DOUBLE PRECISION,
            cpu_seconds DOUBLE PRECISION
        )""",
        "CREATE INDEX ledger_transactions_activity ON ledger_transactions (activity)",
        "CREATE INDEX ledger_transactions_group ON ledger_transactions (session, grp)",
        """CREATE TABLE ledger_entries (
            txn BIGINT NOT NULL REFERENCES ledger_transactions (id),
            line SMALLINT NOT NULL,
            account VARCHAR(128) NOT NULL,
            amount BIGINT NOT NULL,
            PRIMARY KEY (txn, line)
        )""",
        "CREATE INDEX ledger_entries_account ON ledger_entries (account, txn)",
        """CREATE TABLE ledger_balances (
            account VARCHAR(128) PRIMARY KEY,
            balance BIGINT NOT NULL
        )""",
        """CREATE TABLE budgets (
            session VARCHAR(32) NOT NULL,
            grp VARCHAR(64) NOT NULL,
            budget BIGINT NOT NULL,
            PRIMARY KEY (session, grp)
        )""",
        """CREATE TABLE reputation (
            provider VARCHAR(64) PRIMARY KEY,
            counters TEXT NOT NULL
        )""",
        *(f"ALTER TABLE {table} ADD COLUMN price_{rate} BIGINT" for table in _PRICED for rate in _RATES),
        "ALTER TABLE activities ADD COLUMN max_duration DOUBLE PRECISION",
        "CREATE INDEX usage_activity ON usage (activity)",
    ),
    # 5: several hubs on one database (kiln.hub.io.seat): a heartbeat row per hub (with the sha256 of
    # the token it shows other hubs, and its slot: its share of the ids a provider sees), the hub
    # that holds each provider's connection with the capacity and offer it shares, the hub that
    # holds each session (a dead hub's are adopted), and the leases reserved but not yet created.
    (
        """CREATE TABLE hubs (
            id VARCHAR(32) PRIMARY KEY,
            address VARCHAR(256) NOT NULL,
            secret CHAR(64) NOT NULL,
            slot SMALLINT NOT NULL UNIQUE,
            started DOUBLE PRECISION NOT NULL,
            seen DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE providers (
            name VARCHAR(64) PRIMARY KEY,
            hub VARCHAR(32),
            since DOUBLE PRECISION NOT NULL,
            changed DOUBLE PRECISION NOT NULL,
            cpus DOUBLE PRECISION NOT NULL DEFAULT 0,
            memory BIGINT NOT NULL DEFAULT 0,
            storage BIGINT NOT NULL DEFAULT 0,
            offer TEXT
        )""",
        "CREATE INDEX providers_hub ON providers (hub)",
        "CREATE INDEX providers_changed ON providers (changed)",
        "ALTER TABLE activities ADD COLUMN pending BOOLEAN NOT NULL DEFAULT FALSE",
        "ALTER TABLE activities ADD COLUMN hub VARCHAR(32)",
        "ALTER TABLE sessions ADD COLUMN hub VARCHAR(32)",
        "CREATE INDEX sessions_hub ON sessions (hub)",
        "CREATE INDEX activities_provider ON activities (provider)",
    ),
    # 6: the image store the hubs of one database share (kiln.hub.io.shelf): each owner's hold on
    # each image, and which hub holds which blob.
    (
        """CREATE TABLE shelf (
            digest VARCHAR(80) NOT NULL,
            owner VARCHAR(24) NOT NULL,
            record TEXT,
            hub VARCHAR(32) NOT NULL,
            changed DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (digest, owner)
        )""",
        "CREATE INDEX shelf_changed ON shelf (changed)",
        """CREATE TABLE shelf_blobs (
            digest VARCHAR(80) NOT NULL,
            hub VARCHAR(32) NOT NULL,
            PRIMARY KEY (digest, hub)
        )""",
        "CREATE INDEX shelf_blobs_hub ON shelf_blobs (hub)",
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)

USAGE_RETENTION: Final = 90.0
"""Days an ended activity keeps its own row in the usage record before it is rolled up (``--usage-retention``)."""
DAY: Final = 86400

_NAME: Final = TypeAdapter(Name)


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    """A credential as ``kiln token ls`` shows it: never its token, nor the token's hash."""

    id: int
    role: Role
    name: str | None
    created: float
    revoked: float | None

    @property
    def credential(self) -> Credential:
        return Credential(self.id, self.role, self.name)


@dataclass(frozen=True, slots=True)
class ProviderRow:
    """A provider as the hubs of one database see it (:meth:`HubState.providers_changed`)."""

    name: str
    hub: str | None
    """The hub that holds its connection (None: none does)."""
    offer: str | None
    """Its last offer (:func:`kiln.hub.cluster.offer_text`)."""
    elsewhere: Resources
    """What the other hubs' activities (and reservations) hold of it."""


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """What one requestor (or provider) rented, in activities that ended: ``kiln usage``."""

    who: str
    credential: int | None
    activities: int
    cpu_seconds_rented: float  # each activity's CPUs times how long it was held
    cpu_seconds_used: float  # what the providers measured its commands use
    memory_byte_seconds: float


def hub_id(data_dir: Path) -> str:
    """The id of the hub whose data folder is ``data_dir``: made (random) the first time."""
    path = data_dir / HUB_ID_FILE
    with contextlib.suppress(FileNotFoundError):
        found = path.read_text().strip()
        if found.isalnum() and 0 < len(found) <= 32:
            return found
    data_dir.mkdir(parents=True, exist_ok=True)
    made = secrets.token_hex(8)
    path.write_text(made + "\n")
    return made


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class HubState:
    """The open database. Use from one thread at a time; each process opens its own.

    :meth:`required`, :meth:`find` and :meth:`bound` are the lookups the hub's core makes
    (:class:`~kiln.hub.access.Credentials`); they are indexed reads of a local file, quick
    enough to make on the event loop, and fail closed: a database that cannot be read
    admits no one but the shared token.
    """

    def __init__(self, where: Path | str, *, clock: Callable[[], float] = time.time, hub: str = "hub") -> None:
        self._clock = clock
        self._required = False
        self.hub = hub
        """This hub's id among those sharing the database (:meth:`join`): its sessions and providers carry it."""
        if isinstance(where, Path):
            where.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                # Only hashes inside, but no one else's business: the WAL and index files take this mode.
                os.close(os.open(where, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        self._db: Database = open_database(where)
        self.path = where if isinstance(where, Path) else None
        """The SQLite file (None for a PostgreSQL database)."""
        self.where = self._db.where
        """The database, as messages name it: the SQLite file's path, or the URL without a password."""
        self.errors = self._db.errors
        """What a failed statement raises (the driver's errors)."""
        try:
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def in_dir(cls, data_dir: Path) -> HubState:
        """The state of the hub whose ``--data-dir`` is ``data_dir`` (and no ``--db``)."""
        return cls(data_dir / FILE_NAME)

    @classmethod
    def open(cls, data_dir: Path, db: str | None = None) -> HubState:
        """The state of the hub whose ``--data-dir`` is ``data_dir``: in the database ``db``
        (``--db``: a ``postgresql://`` URL or a SQLite file's path) if given, else in
        ``<data_dir>/hub.db``. Its :attr:`hub` id is kept in ``<data_dir>/hub-id``, so that the
        hub started again on the folder holds again what it held."""
        where: Path | str = data_dir / FILE_NAME if db is None else db if is_url(db) else Path(db)
        return cls(where, hub=hub_id(data_dir))

    @property
    def database(self) -> Database:
        """The open database, for SQL of one's own (tests, tools): ``?`` marks a parameter in both dialects."""
        return self._db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> HubState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self) -> contextlib.AbstractContextManager[Database]:
        """One write transaction (see :meth:`kiln.hub.io.sql.Database.write`)."""
        return self._db.write()

    def _migrate(self) -> None:
        try:
            with self._db.migrating() as db:
                db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                row = db.execute("SELECT version FROM schema_version").fetchone()
                version = 0 if row is None else int(row[0])
                if version > SCHEMA_VERSION:
                    raise UsageError(
                        f"{self.where} is of schema version {version}, newer than this kiln's "
                        f"({SCHEMA_VERSION}): run a newer kiln"
                    )
                for statements in MIGRATIONS[version:]:
                    for statement in statements:
                        db.execute(db.ddl(statement))
                if row is None:
                    db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                elif version < SCHEMA_VERSION:
                    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        except self._db.errors as e:
            raise KilnError(f"cannot set up the hub's database {self.where}: {e}") from e

    # --- managing credentials (kiln token) ------------------------------------------------

    def create(self, role: Role, name: str | None = None) -> tuple[CredentialRecord, str]:
        """A new credential and its token, which is shown here once and never stored.

        A provider credential needs ``name``, the one provider name it joins under (no other
        connection may take it); for the others ``name`` is an optional label. Names are
        unique among live credentials.
        """
        if role not in ROLES:
            raise UsageError(f"a credential's role is one of {', '.join(ROLES)}, not {role!r}")
        if name is not None:
            try:
                _NAME.validate_python(name)
            except ValidationError as e:
                raise UsageError(f"not a name: {name!r} (1 to 64 characters, none of them control characters)") from e
        if role == "provider" and name is None:
            raise UsageError("a provider credential binds a provider name: give --name")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        created = self._clock()
        try:
            with self._write() as db:
                row = db.execute(
                    "INSERT INTO credentials (role, name, hash, created) VALUES (?, ?, ?, ?) RETURNING id",
                    (role, name, token_hash(token), created),
                ).fetchone()
        except self._db.conflict as e:
            raise UsageError(f"a live credential is named {name!r} already (kiln token revoke {name} first)") from e
        return CredentialRecord(int(row[0]), role, name, created, None), token

    def credentials(self) -> list[CredentialRecord]:
        """Every credential, revoked ones too, oldest first."""
        rows = self._db.execute("SELECT id, role, name, created, revoked FROM credentials ORDER BY id").fetchall()
        return [CredentialRecord(*row) for row in rows]

    def revoke(self, which: str) -> CredentialRecord:
        """Revoke the credential with id ``which`` (digits), else the live one named ``which``.

        Returns it as revoked; raises :class:`UsageError` when no live credential matches.
        """
        columns = "id, role, name, created, revoked"
        with self._write() as db:
            if which.isdigit():
                row = db.execute(f"SELECT {columns} FROM credentials WHERE id = ?", (int(which),)).fetchone()
            else:
                row = db.execute(
                    f"SELECT {columns} FROM credentials WHERE name = ? AND revoked IS NULL", (which,)
                ).fetchone()
            if row is None:
                raise UsageError(f"no credential has the id or live name {which!r} (kiln token ls lists them)")
            found = CredentialRecord(*row)
            if found.revoked is not None:
                raise UsageError(f"credential {found.id} was revoked already")
            now = self._clock()
            db.execute("UPDATE credentials SET revoked = ? WHERE id = ?", (now, found.id))
        return CredentialRecord(found.id, found.role, found.name, found.created, now)

    # --- the hub's lookups -------------------------------------------------------------------

    def required(self) -> bool:
        # Asked at every hello and every rent. A credential is never deleted (a revoked one still
        # counts), so once there is one the answer stands: no more round trips to the database.
        if self._required:
            return True
        row = self._read("SELECT EXISTS (SELECT 1 FROM credentials)", ())
        self._required = row is not None and bool(row[0])
        return row is None or self._required

    def find(self, token: str) -> Credential | None:
        digest = token_hash(token)
        row = self._read("SELECT id, role, name, hash FROM credentials WHERE hash = ? AND revoked IS NULL", (digest,))
        # The index finds the row by the hash; comparing the hash again in constant time
        # leaves nothing to learn from timing (the lookup's could only tell about a hash).
        if row is None or not hmac.compare_digest(str(row[3]), digest):
            return None
        return CredentialRecord(row[0], row[1], row[2], 0.0, None).credential

    def bound(self, name: str) -> bool:
        row = self._read("SELECT EXISTS (SELECT 1 FROM credentials WHERE name = ? AND role = 'provider')", (name,))
        return row is None or bool(row[0])

    def tenant(self, name: str) -> Credential | None:
        columns = "SELECT id, role, name FROM credentials WHERE revoked IS NULL AND role != 'provider' AND"
        row = self._read(f"{columns} name = ?", (name,))
        if row is None and name.startswith("#") and name[1:].isdigit() and len(name) < 20:
            row = self._read(f"{columns} id = ?", (int(name[1:]),))
        return None if row is None else Credential(int(row[0]), row[1], row[2])

    def names(self, ids: set[int]) -> dict[int, str]:
        """The names of those of ``ids`` that have one (image owners are shown by them)."""
        rows = self._credentials_in("id, name", "name IS NOT NULL", ids)
        return {int(row[0]): str(row[1]) for row in rows}

    def revoked(self, ids: Collection[int]) -> set[int]:
        """Those of ``ids`` that are revoked (the hub asks for its peers' from time to time)."""
        return {int(row[0]) for row in self._credentials_in("id", "revoked IS NOT NULL", ids)}

    def _credentials_in(self, columns: str, where: str, ids: Collection[int]) -> list[tuple[Any, ...]]:
        """``columns`` of the credentials among ``ids`` that match ``where`` (asked in chunks; none
        from a chunk the database cannot read, with a warning)."""
        wanted = sorted(ids)
        out: list[tuple[Any, ...]] = []
        for chunk, marks in chunks(wanted):
            try:
                out += self._db.execute(
                    f"SELECT {columns} FROM credentials WHERE {where} AND id IN ({marks})", chunk
                ).fetchall()
            except self.errors as e:
                log.warning("cannot read credentials from %s: %s", self.where, e)
        return out

    # --- what a restart must not lose (kiln.hub.records) -----------------------------------

    def apply(self, change: Change) -> None:
        """Commit one change the hub's core asked for (before the message that tells a peer of it).

        A :class:`~kiln.hub.ledger.Post` whose key was posted already changes nothing (a
        replay); a :class:`~kiln.hub.records.SaveBudget` for a group that has one keeps the first.
        """
        with self._write() as db:
            if isinstance(change, SaveSession):
                _save_session(db, change.session, self.hub)
            elif isinstance(change, Post):
                books.post(db, change)
            elif isinstance(change, SaveLease):
                _save_session(db, change.session, self.hub)
                lease, r, price = change.lease, change.lease.resources, change.lease.price
                rates = (None, None, None) if price is None else (price.start, price.cpu_hour, price.env_hour)
                # Reserved already when several hubs share the database (reserve): then it is no longer pending.
                db.execute(
                    "INSERT INTO activities (id, session, provider, cpus, memory, storage, grp, image, started, "
                    "price_start, price_cpu_hour, price_env_hour, max_duration) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                    "session = excluded.session, grp = excluded.grp, image = excluded.image, "
                    "started = excluded.started, "
                    "price_start = excluded.price_start, price_cpu_hour = excluded.price_cpu_hour, "
                    "price_env_hour = excluded.price_env_hour, max_duration = excluded.max_duration, pending = FALSE",
                    (
                        lease.id,
                        lease.session,
                        lease.provider,
                        r.cpus,
                        r.memory,
                        r.storage,
                        lease.group,
                        lease.image,
                        lease.started,
                        *rates,
                        lease.max_duration,
                    ),
                )
            elif isinstance(change, Destroying):
                db.execute("UPDATE activities SET destroying = TRUE WHERE id = ?", (change.activity,))
            elif isinstance(change, EndLease):
                db.execute(
                    f"INSERT INTO usage (activity, requestor, credential, provider, cpus, memory, storage, started, "
                    f"ended, cpu_seconds, {_PRICE}) SELECT a.id, s.name, s.credential, a.provider, a.cpus, a.memory, "
                    "a.storage, a.started, CAST(? AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION), "
                    f"{_A_PRICE} FROM activities a JOIN sessions s ON s.id = a.session WHERE a.id = ?",
                    (change.ended, change.cpu_seconds, change.activity),
                )
                row = db.execute("SELECT session FROM activities WHERE id = ?", (change.activity,)).fetchone()
                _changed(db, "(SELECT provider FROM activities WHERE id = ?)", change.activity)
                db.execute("DELETE FROM activities WHERE id = ?", (change.activity,))
                if row is not None:
                    _forget_ended(db, row[0])
            elif isinstance(change, SaveBudget):
                # The first rent of a group sets its budget; a later one does not change it.
                db.execute(
                    "INSERT INTO budgets (session, grp, budget) VALUES (?, ?, ?) ON CONFLICT (session, grp) DO NOTHING",
                    (change.session, change.group, change.budget),
                )
            elif isinstance(change, SaveOffer):
                r = change.resources
                db.execute(
                    f"UPDATE providers SET offer = ?, cpus = ?, memory = ?, storage = ?, changed = {db.now} "
                    "WHERE name = ? AND hub = ?",
                    (change.offer, r.cpus, r.memory, r.storage, change.provider, self.hub),
                )
            elif isinstance(change, SaveReputation):
                db.execute(
                    "INSERT INTO reputation (provider, counters) VALUES (?, ?) "
                    "ON CONFLICT (provider) DO UPDATE SET counters = excluded.counters",
                    (change.provider, json.dumps(change.counters, sort_keys=True)),
                )
            else:
                assert isinstance(change, EndSession)
                # No longer resumable; the row goes with its last lease (the usage record names it).
                db.execute("UPDATE sessions SET secret = '' WHERE id = ?", (change.session,))
                _forget_ended(db, change.session)

    def load(self) -> tuple[list[SessionRecord], list[LeaseRecord]]:
        """What the last run of this hub (:attr:`hub`) left: the sessions that may be resumed, and their leases.

        Leases that were being destroyed, or whose session ended, are no one's any more:
        they are forgotten here (their usage recorded as ending now), and their providers,
        reporting them, are told to destroy them. So are sessions without a lease or a
        resume secret (nothing to resume), and their jobs' budgets. Call :meth:`meters` next:
        it names the metered leases among those returned, and those forgotten here that are
        still to be settled. Other hubs' sessions are theirs (a dead hub's are adopted one by
        one, as their peers come: :meth:`adopt_session`, :meth:`adopt_leases`).
        """
        mine = "(hub IS NULL OR hub = ?)"
        with self._db.migrating() as db:  # one hub at a time: hubs starting at once would forget a lease twice
            # Reserved by this hub (or a dead one) but never created: nobody was told of them.
            db.execute(
                f"DELETE FROM activities WHERE pending AND (hub IS NULL OR hub = ? OR {self._dead('hub')})",
                (self.hub, self.hub),
            )
            self._forget_orphans(db, f"IN (SELECT id FROM sessions WHERE {mine})", (self.hub,))
            # A lease whose session row is gone is nobody's, whichever hub wrote it.
            self._forget_orphans(db, "NOT IN (SELECT id FROM sessions) AND NOT pending", ())
            db.execute(f"DELETE FROM sessions WHERE {mine} AND id NOT IN (SELECT session FROM activities)", (self.hub,))
            db.execute("DELETE FROM budgets WHERE session NOT IN (SELECT id FROM sessions)")
            db.execute(f"UPDATE sessions SET hub = ? WHERE {mine}", (self.hub, self.hub))
            return self._sessions_of(db, "hub = ?", (self.hub,))

    def _forget_orphans(self, db: Database, session_is: str, args: tuple[object, ...]) -> None:
        """Forget the leases whose session ``session_is`` (``IN (...)``) that were being destroyed
        or whose session ended: their usage is recorded as ending now (their end is not known)."""

        def orphan(a: str) -> str:
            ended = f"{a}session NOT IN (SELECT id FROM sessions WHERE secret <> '')"
            return f"{a}session {session_is} AND ({a}destroying OR {ended})"

        db.execute(
            "INSERT INTO usage (activity, requestor, credential, provider, cpus, memory, storage, started, ended, "
            f"cpu_seconds, {_PRICE}) SELECT a.id, COALESCE(s.name, ''), s.credential, a.provider, a.cpus, "
            f"a.memory, a.storage, a.started, CAST(? AS DOUBLE PRECISION), NULL, {_A_PRICE} FROM activities a "
            f"LEFT JOIN sessions s ON s.id = a.session WHERE {orphan('a.')}",
            (self._clock(), *args),
        )
        db.execute(f"DELETE FROM activities WHERE {orphan('')}", args)

    @staticmethod
    def _sessions_of(
        db: Database, where: str, args: tuple[object, ...]
    ) -> tuple[list[SessionRecord], list[LeaseRecord]]:
        """The sessions ``where`` picks (a condition on ``sessions``), and their leases."""
        sessions = [
            SessionRecord(id_, name, None if credential is None else int(credential), bytes.fromhex(secret))
            for id_, name, credential, secret in db.execute(
                f"SELECT id, name, credential, secret FROM sessions WHERE {where} ORDER BY id", args
            )
        ]
        rows = db.execute(
            "SELECT id, session, provider, cpus, memory, storage, grp, image, started, max_duration, "
            f"{_PRICE} FROM activities WHERE NOT pending AND session IN (SELECT id FROM sessions WHERE {where}) "
            "ORDER BY id",
            args,
        ).fetchall()
        leases = [
            LeaseRecord(
                id_,
                session,
                provider,
                Resources(cpus=cpus, memory=memory, storage=storage),
                grp,
                image,
                at,
                books.price_of(rates),
                max_duration,
            )
            for id_, session, provider, cpus, memory, storage, grp, image, at, max_duration, *rates in rows
        ]
        return sessions, leases

    # --- several hubs on one database (kiln.hub.io.seat) ---------------------------------------

    def join(self, address: str, secret: str, slot: int | None = None) -> int:
        """This hub (:attr:`hub`) is up, reachable at ``address``, and shows other hubs ``secret``:
        its heartbeat row; returns its slot (1 to :data:`MAX_HUBS`), which no live hub has. Given
        ``slot`` (a hub joining again after it was taken for dead), that one or a KilnError: the
        ids it gave its providers carry it. Without (the hub starts), the providers an earlier run of
        it held (killed, it never left) are anyone's: their connections died with it, and its new row
        would keep the other hubs from taking them."""
        with self._db.migrating() as db:  # one hub at a time picks a slot
            db.execute(f"DELETE FROM hubs WHERE id = ? OR NOT ({self._live('hubs')})", (self.hub,))
            if slot is None:
                db.execute(f"UPDATE providers SET hub = NULL, changed = {db.now} WHERE hub = ?", (self.hub,))
            taken = {int(row[0]) for row in db.execute("SELECT slot FROM hubs")}
            free = [n for n in range(1, MAX_HUBS + 1) if n not in taken and slot in (None, n)]
            if not free and slot is not None:
                raise KilnError(f"slot {slot} is another hub's now: this hub was taken for dead; start it again")
            if not free:
                raise KilnError(f"{MAX_HUBS} hubs share {self.where} already (the most)")
            db.execute(
                f"INSERT INTO hubs (id, address, secret, slot, started, seen) VALUES (?, ?, ?, ?, {db.now}, {db.now})",
                (self.hub, address, token_hash(secret), free[0]),
            )
        return free[0]

    def hub_of(self, token: str) -> tuple[str, int] | None:
        """The live hub whose token (:meth:`join`'s ``secret``) this is, if any, and its slot: another
        hub dialling this one."""
        digest = token_hash(token)
        row = self._read(f"SELECT id, slot, secret FROM hubs WHERE secret = ? AND {self._live('hubs')}", (digest,))
        if row is None or not hmac.compare_digest(str(row[2]), digest):
            return None
        return str(row[0]), int(row[1])

    def beat(self) -> bool:
        """This hub is alive: its heartbeat row's ``seen`` is now (by the database's clock). False
        when the others took it for dead meanwhile (its last beat was more than :data:`DEAD_AFTER`
        seconds ago, or its row is gone: a hub joining removes a dead one's): they may have adopted
        its sessions and claimed its providers, and a row gone is not made again (:meth:`join` again)."""
        with self._write() as db:
            live = db.execute(
                f"UPDATE hubs SET seen = {db.now} WHERE id = ? AND {self._live('hubs')} RETURNING id", (self.hub,)
            ).fetchone()
            if live is None:
                db.execute(f"UPDATE hubs SET seen = {db.now} WHERE id = ?", (self.hub,))
        return live is not None

    def leave(self) -> None:
        """This hub stops: its row goes, and with it what it held is anyone's to adopt at once."""
        with self._write() as db:
            db.execute("DELETE FROM hubs WHERE id = ?", (self.hub,))
            db.execute(f"UPDATE providers SET hub = NULL, changed = {db.now} WHERE hub = ?", (self.hub,))

    def hubs(self) -> list[tuple[str, str, float]]:
        """The live hubs: id, address, and seconds since each was last seen."""
        rows = self._db.execute(
            f"SELECT id, address, {self._db.now} - seen FROM hubs WHERE {self._live('hubs')} ORDER BY id"
        ).fetchall()
        return [(str(id_), str(address), float(ago)) for id_, address, ago in rows]

    def _live(self, alias: str) -> str:
        """The SQL condition that the hub row ``alias`` is alive: seen within :data:`DEAD_AFTER` seconds."""
        return f"{alias}.seen > {self._db.now} - {DEAD_AFTER}"

    def _dead(self, column: str) -> str:
        """The SQL condition that the hub ``column`` names is no live hub's (and not this one)."""
        return f"{column} <> ? AND NOT EXISTS (SELECT 1 FROM hubs h WHERE h.id = {column} AND {self._live('h')})"

    def claim_provider(self, name: str) -> bool:
        """This hub takes the connection of provider ``name``: False when a live hub holds it
        (a provider is connected to one hub at a time)."""
        with self._write() as db:
            row = db.execute(
                f"INSERT INTO providers (name, hub, since, changed) VALUES (?, ?, {db.now}, {db.now}) "
                "ON CONFLICT (name) DO UPDATE SET hub = excluded.hub, since = excluded.since, "
                "changed = excluded.changed "
                f"WHERE providers.hub IS NULL OR providers.hub = excluded.hub OR {self._dead('providers.hub')} "
                "RETURNING hub",
                (name, self.hub, self.hub),
            ).fetchone()
        return row is not None

    def release_provider(self, name: str) -> None:
        """Provider ``name`` left this hub: any hub may take it."""
        with self._write() as db:
            db.execute(
                f"UPDATE providers SET hub = NULL, changed = {db.now} WHERE name = ? AND hub = ?", (name, self.hub)
            )

    def reserve(self, activity: str, session: str, provider: str, resources: Resources) -> bool:
        r"""Reserve ``resources`` of ``provider`` for ``activity`` (a pending row, until its lease is
        saved or :meth:`unreserve`\ d): False when what the provider shares does not hold it beside
        what every hub reserved there. The provider's row is locked meanwhile (PostgreSQL's ``FOR
        UPDATE``; SQLite's write lock is the whole file's), so two hubs never sell it twice."""
        r = resources
        with self._write() as db:
            row = db.execute(f"SELECT cpus, memory, storage FROM providers WHERE name = ?{db.for_update}", (provider,))
            offered = row.fetchone()
            if offered is None:
                return False
            # What a dead hub reserved and never created: nobody was told of it (as load() forgets it).
            db.execute(
                f"DELETE FROM activities WHERE provider = ? AND pending AND (hub IS NULL OR {self._dead('hub')})",
                (provider, self.hub),
            )
            used = db.execute(
                "SELECT COALESCE(SUM(cpus), 0), COALESCE(SUM(memory), 0), COALESCE(SUM(storage), 0) "
                "FROM activities WHERE provider = ?",
                (provider,),
            ).fetchone()
            fits = (
                float(used[0]) + r.cpus <= float(offered[0]) + 1e-9
                and int(used[1]) + r.memory <= int(offered[1])
                and int(used[2]) + r.storage <= int(offered[2])
            )
            if fits:
                _changed(db, "?", provider)
                db.execute(
                    "INSERT INTO activities (id, session, provider, cpus, memory, storage, started, pending, hub) "
                    f"VALUES (?, ?, ?, ?, ?, ?, {db.now}, TRUE, ?)",
                    (activity, session, provider, r.cpus, r.memory, r.storage, self.hub),
                )
        return fits

    def hold(self, post: Post) -> bool:
        """Commit the hold ``post`` unless its debit takes the account below zero (the account's row
        locked meanwhile: hubs holding from one balance at once take turns); whether it was."""
        with self._write() as db:
            for account, amount in post.entries:
                if amount >= 0:
                    continue
                row = db.execute(f"SELECT balance FROM ledger_balances WHERE account = ?{db.for_update}", (account,))
                found = row.fetchone()
                if found is None or int(found[0]) + amount < 0:
                    return False
            books.post(db, post)
        return True

    def unreserve(self, activity: str) -> None:
        """The reservation of ``activity`` is over before it became a lease (its create failed)."""
        with self._write() as db:
            _changed(db, "(SELECT provider FROM activities WHERE id = ? AND pending)", activity)
            db.execute("DELETE FROM activities WHERE id = ? AND pending", (activity,))

    def providers_changed(self, since: float) -> tuple[float, list[ProviderRow]]:
        """The providers whose row changed after ``since`` (the database's clock: an offer, a hub,
        a reservation or the end of an activity there); and the time to ask from next (a little
        before now, as a row written in a transaction still open may show a time already past)."""
        now = float(self._db.execute(f"SELECT {self._db.now}").fetchone()[0])
        rows = self._db.execute(
            "SELECT p.name, p.hub, p.offer, COALESCE(SUM(a.cpus), 0), COALESCE(SUM(a.memory), 0), "
            "COALESCE(SUM(a.storage), 0) FROM providers p LEFT JOIN activities a ON a.provider = p.name "
            "AND (a.hub IS NULL OR a.hub <> ?) WHERE p.changed > ? GROUP BY p.name, p.hub, p.offer",
            (self.hub, since),
        ).fetchall()
        found = [
            ProviderRow(str(name), None if hub is None else str(hub), offer, _resources(cpus, memory, storage))
            for name, hub, offer, cpus, memory, storage in rows
        ]
        return now - CHANGES_OVERLAP, found

    def adopt_session(self, secret: bytes) -> Adopted | None:
        """The session of this resume secret's sha256, taken over by this hub if a dead hub held it
        (or none did); None when there is none; when a live hub holds it, none adopted and its id
        in ``elsewhere``."""
        with self._write() as db:
            row = db.execute(
                f"UPDATE sessions SET hub = ? WHERE secret = ? AND (hub IS NULL OR {self._dead('hub')}) RETURNING id",
                (self.hub, secret.hex(), self.hub),
            ).fetchone()
            if row is None:
                held = db.execute("SELECT id FROM sessions WHERE secret = ? AND hub <> ?", (secret.hex(), self.hub))
                found = held.fetchone()
                return None if found is None else Adopted([], [], [], frozenset({str(found[0])}))
            db.execute("UPDATE activities SET hub = ? WHERE session = ? AND NOT pending", (self.hub, row[0]))
            sessions, leases = self._sessions_of(db, "id = ?", (row[0],))
        return Adopted(sessions, leases, self.meters(lease.id for lease in leases))

    def adopt_leases(self, provider: str, activities: Collection[str]) -> Adopted:
        """The sessions holding any of ``activities`` on ``provider`` that a dead hub held, taken
        over by this hub, with all their leases."""
        wanted = sorted(activities)
        ids: set[str] = set()
        with self._write() as db:
            for chunk, marks in chunks(wanted):
                ids |= {
                    str(row[0])
                    for row in db.execute(
                        f"UPDATE sessions SET hub = ? WHERE (hub IS NULL OR {self._dead('hub')}) AND id IN "
                        f"(SELECT session FROM activities WHERE provider = ? AND id IN ({marks})) RETURNING id",
                        (self.hub, self.hub, provider, *chunk),
                    )
                }
            elsewhere: set[str] = set()
            for chunk, marks in chunks(wanted):
                elsewhere |= {
                    str(row[0])
                    for row in db.execute(
                        f"SELECT a.id FROM activities a JOIN sessions s ON s.id = a.session WHERE a.id IN ({marks}) "
                        "AND a.provider = ? AND s.hub <> ? AND NOT pending",
                        (*chunk, provider, self.hub),
                    )
                }
            if not ids:
                return Adopted([], [], [], frozenset(elsewhere))
            found = sorted(ids)
            marks = ", ".join("?" * len(found))
            db.execute(f"UPDATE activities SET hub = ? WHERE session IN ({marks}) AND NOT pending", (self.hub, *found))
            sessions, leases = self._sessions_of(db, f"id IN ({marks})", tuple(found))
        return Adopted(sessions, leases, self.meters(lease.id for lease in leases), frozenset(elsewhere))

    def usage_totals(self, by: Literal["requestor", "provider"] = "requestor") -> list[UsageTotal]:
        """The usage record summed per requestor (name and credential) or per provider, by name:
        the rows of each activity and the days rolled up alike."""
        who = "requestor, credential" if by == "requestor" else "provider, NULL"
        rows = self._db.execute(
            f"SELECT {who}, SUM(n), SUM(rented), SUM(used), SUM(memory) FROM ("
            "SELECT requestor, credential, provider, 1 AS n, cpus * (ended - started) AS rented, "
            "COALESCE(cpu_seconds, 0) AS used, memory * (ended - started) AS memory FROM usage "
            "UNION ALL SELECT requestor, credential, provider, activities, cpu_seconds_rented, cpu_seconds_used, "
            f"memory_byte_seconds FROM usage_days) AS u GROUP BY {who.removesuffix(', NULL')} ORDER BY 1, 2"
        ).fetchall()
        return [
            UsageTotal(str(who), None if cred is None else int(cred), int(n), float(rented), float(used), float(memory))
            for who, cred, n, rented, used, memory in rows
        ]

    def roll_up(self, days: float) -> int:
        """Roll the rows of activities that ended more than ``days`` days ago (counted in whole UTC
        days) up into one row per day, requestor and provider; returns how many rows went.

        What ``kiln usage`` sums stays the same; only the rows of single activities go. The hub
        calls it at start and every hour (:func:`kiln.hub.io.server.start`).
        """
        before = (int(self._clock() - days * DAY) // DAY) * DAY  # the start of a day: whole days only
        # One hub at a time: a PostgreSQL transaction reads what another has not yet deleted, so
        # two hubs rolling up at once would both count the rows.
        with self._db.migrating() as db:
            db.execute(
                "INSERT INTO usage_days (day, requestor, credential, provider, activities, cpu_seconds_rented, "
                "cpu_seconds_used, memory_byte_seconds) SELECT day, requestor, credential, provider, COUNT(*), "
                "SUM(cpus * (ended - started)), COALESCE(SUM(cpu_seconds), 0), SUM(memory * (ended - started)) "
                f"FROM (SELECT {db.day('ended')} AS day, * FROM usage WHERE ended < ?) AS u "
                "GROUP BY day, requestor, credential, provider",
                (before,),
            )
            return db.execute("DELETE FROM usage WHERE ended < ?", (before,)).rowcount

    def usage_days(self) -> list[dict[str, Any]]:
        """The usage record rolled up (:meth:`roll_up`): one row per day, requestor and provider, oldest first."""
        cursor = self._db.execute("SELECT * FROM usage_days ORDER BY day, requestor, credential, provider")
        columns = [column[0] for column in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor]

    def usage(self) -> list[dict[str, Any]]:
        """The usage record: one row per activity that ended (within the retention), oldest first."""
        cursor = self._db.execute("SELECT * FROM usage ORDER BY ended, activity")
        columns = [column[0] for column in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor]

    # --- the ledger (kiln.hub.ledger; its tables: kiln.hub.io.books) ----------------------------

    def balance(self, account: str) -> int:
        """The account's balance as committed, in micro-credits (0 for one never used, and when
        the database cannot be read: a requestor then has nothing to hold with)."""
        row = self._read("SELECT balance FROM ledger_balances WHERE account = ?", (account,))
        return 0 if row is None else int(row[0])

    def held(self, account: str) -> int:
        """What is held now for the live activities of the requestor ``account`` (micro-credits)."""
        return books.held(self._db, account)

    def spent(self, account: str) -> int:
        """What the requestor ``account`` spent in all: what it was granted, less what it has
        available and what is held for it (reversed charges came back: they count as not spent)."""
        return books.granted(self._db, account) - self.balance(account) - self.held(account)

    def transactions(
        self, account: str | None = None, activity: str | None = None, limit: int = 100
    ) -> list[Transaction]:
        """The latest ``limit`` transactions, newest first: every one, those of ``account`` (an
        entry in it, or of an activity it held for: a requestor's show its activities'
        captures), or of ``activity``."""
        return books.transactions(self._db, account, activity, limit)

    def count_transactions(self, account: str | None = None, activity: str | None = None) -> int:
        """How many transactions :meth:`transactions` has to list, with no limit."""
        return books.count(self._db, account, activity)

    def budget(self, session: str, group: str) -> int | None:
        """The budget the group's first rent set (:class:`~kiln.hub.records.SaveBudget`), if any;
        0 when the database cannot be read (nothing more is held for the group)."""
        try:
            row = self._db.execute("SELECT budget FROM budgets WHERE session = ? AND grp = ?", (session, group))
            found = row.fetchone()
        except self.errors as e:
            log.warning("cannot read the hub's database %s: %s", self.where, e)
            return 0
        return None if found is None else int(found[0])

    def committed(self, session: str, group: str) -> int:
        """What the group committed of its budget: its holds and top-ups, less its releases (captures
        stay committed); a budget's worth when the database cannot be read."""
        try:
            return books.committed(self._db, session, group)
        except self.errors as e:
            log.warning("cannot read the hub's database %s: %s", self.where, e)
            return books.MAX_AMOUNT

    def check(self) -> list[str]:
        """What is wrong with the ledger, a sentence each; none when it holds: each transaction
        sums to zero, each cached balance equals its account's entries (see :func:`books.check`)."""
        return books.check(self._db)

    def ledger_counts(self) -> tuple[int, int]:
        """How many transactions and how many accounts the ledger holds."""
        return books.counts(self._db)

    def grant(self, who: str, amount: int) -> Post:
        """Put ``amount`` micro-credits (more than 0) in the account of the live requestor (or
        admin) credential named ``who``, or of id ``#<id>``: a ``grant`` from :data:`~kiln.hub.ledger.MINT`,
        committed; returns it. Raises :class:`UsageError` for no such credential or a bad amount."""
        if not 0 < amount <= books.MAX_AMOUNT:
            raise UsageError(f"a grant is of more than 0 credits, not {amount} micro-credits")
        credential = self.tenant(who)
        if credential is None:
            raise UsageError(
                f"no live requestor credential is named {who!r} or has that #id (kiln token ls lists them; "
                "kiln token create --role requestor makes one)"
            )
        account = requestor_account(credential.id)
        granted = Post(
            key=f"grant:{secrets.token_hex(12)}",
            kind="grant",
            time=self._clock(),
            entries=((MINT, -amount), (account, amount)),
        )
        self.apply(granted)
        return granted

    def meters(self, only: Iterable[str] | None = None) -> list[MeterRecord]:
        """The ledger's meters, for a restart (after :meth:`load`): one per lease of this hub's with
        a hold (``ended`` None), and one per activity that is over but whose hold still has a
        balance, to settle (see :class:`~kiln.hub.records.MeterRecord`); those of ``only`` if given
        (the leases of a session adopted). Another live hub's leases are its own to meter."""
        if only is not None:
            wanted = set(only)
            return books.meters(self._db, wanted.__contains__) if wanted else []
        rows = self._db.execute(
            "SELECT a.id FROM activities a JOIN sessions s ON s.id = a.session WHERE s.hub <> ?", (self.hub,)
        )
        others = {str(row[0]) for row in rows}
        return books.meters(self._db, lambda activity: activity not in others)

    def reputations(self) -> dict[str, dict[str, float]]:
        """Each provider's reputation counters as last saved (a row that cannot be read is left out, logged)."""
        out: dict[str, dict[str, float]] = {}
        for provider, text in self._db.execute("SELECT provider, counters FROM reputation ORDER BY provider"):
            try:
                counters = json.loads(text)
                out[str(provider)] = {str(k): float(v) for k, v in counters.items()}
            except (ValueError, TypeError, AttributeError) as e:
                log.warning("the reputation of %r in %s cannot be read: %s", provider, self.where, e)
        return out

    def _read(self, sql: str, args: tuple[object, ...]) -> Any:
        """One row, or ``None`` when there is none or the database cannot be read (logged)."""
        try:
            row = self._db.execute(sql, args).fetchone()
        except self.errors as e:
            log.warning("cannot read the hub's database %s: %s", self.where, e)
            return None
        return row

    # --- the image store the hubs share (kiln.hub.io.shared; its SQL: kiln.hub.io.shelf) ---------

    def shelve(self, rows: Iterable[tuple[str, str, str | None]]) -> None:
        """Write ``(digest, owner, record)`` rows of the shared store as this hub's (record None: dropped)."""
        with self._write() as db:
            shelf.write(db, self.hub, rows)

    def shelf_changes(self, since: float | None) -> tuple[float, list[shelf.Row]]:
        """The database's clock now, and the rows of the shared store changed after ``since`` (all for None)."""
        return shelf.changes(self._db, since)

    def hold_blobs(self, digests: Iterable[str], *, only: bool = False) -> None:
        """This hub holds the blobs ``digests`` (with ``only``: those and no others)."""
        with self._write() as db:
            shelf.hold(db, self.hub, digests, only=only)

    def drop_blobs(self, digests: Iterable[str]) -> None:
        """This hub holds the blobs ``digests`` no more."""
        with self._write() as db:
            shelf.drop(db, self.hub, digests)

    def blobs_elsewhere(self, digests: Iterable[str]) -> set[str]:
        """Those of ``digests`` another hub holds (live or not)."""
        return shelf.held_elsewhere(self._db, self.hub, digests)

    def blob_holders(self, digest: str) -> list[str]:
        """The addresses of the live hubs other than this one that hold the blob ``digest``, the
        most recently seen first."""
        rows = self._db.execute(
            "SELECT h.address FROM shelf_blobs b JOIN hubs h ON h.id = b.hub "
            f"WHERE b.digest = ? AND b.hub <> ? AND {self._live('h')} ORDER BY h.seen DESC",
            (digest, self.hub),
        )
        return [str(row[0]) for row in rows]


def _resources(cpus: float, memory: int, storage: int) -> Resources:
    """Sums a database returned (PostgreSQL's of BIGINT are ``numeric``) as resources."""
    return Resources(cpus=round(float(cpus), 6), memory=int(memory), storage=int(storage))


def _changed(db: Database, provider: str, *args: object) -> None:
    """Mark the row of ``provider`` (a name, or a subquery of ``args``) changed: the other hubs look again."""
    db.execute(f"UPDATE providers SET changed = {db.now} WHERE name = {provider}", args)


def _save_session(db: Database, session: SessionRecord, hub: str | None) -> None:
    db.execute(
        "INSERT INTO sessions (id, name, credential, secret, hub) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET secret = excluded.secret, hub = excluded.hub",
        (session.id, session.name, session.credential, session.secret.hex(), hub),
    )


def _forget_ended(db: Database, session: str) -> None:
    """Delete the session, and its jobs' budgets, if it can no longer be resumed and holds no lease."""
    db.execute(
        "DELETE FROM sessions WHERE id = ? AND secret = '' AND NOT EXISTS (SELECT 1 FROM activities WHERE session = ?)",
        (session, session),
    )
    db.execute(
        "DELETE FROM budgets WHERE session = ? AND NOT EXISTS (SELECT 1 FROM sessions WHERE id = ?)", (session, session)
    )
