"""The image store the hubs of one database share (:mod:`kiln.hub.io.shared`): the SQL
:class:`~kiln.hub.io.state.HubState` runs for it.

Two tables hold it (migration 6 of :data:`kiln.hub.io.state.MIGRATIONS`):

* ``shelf``: one row per owner of each image, ``(digest, owner)``: the image's record as
  :func:`kiln.hub.io.blobs.image_to_json` writes it with that owner's holding alone (its tags,
  shares, when it pushed), or ``NULL`` once the owner dropped it; ``hub`` is the hub that wrote it
  last and ``changed`` when (by the database's clock), so that each hub reads the rows changed
  since it last looked. A row per owner, not per image: two tenants pushing one image through two
  hubs at once write two rows, and neither undoes the other.
* ``shelf_blobs``: which hub holds which blob on its disk, so that a hub lacking one knows whom
  to ask.

Every function here that writes runs inside a transaction its caller opened, and takes the open
:class:`~kiln.hub.io.sql.Database`. The SQL is the same for SQLite and PostgreSQL (a hub alone
writes none of it: only hubs on PostgreSQL share a store).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kiln.hub.io.sql import Database, chunks


@dataclass(frozen=True, slots=True)
class Row:
    """One owner's hold on one image, as a hub wrote it (``record`` None: the owner dropped it)."""

    digest: str
    owner: str
    record: str | None
    hub: str
    changed: float


def write(db: Database, hub: str, rows: Iterable[tuple[str, str, str | None]]) -> None:
    """Write ``(digest, owner, record)`` rows as ``hub``'s, changed now."""
    db.executemany(
        f"INSERT INTO shelf (digest, owner, record, hub, changed) VALUES (?, ?, ?, ?, {db.now}) "
        "ON CONFLICT (digest, owner) DO UPDATE SET record = excluded.record, hub = excluded.hub, "
        "changed = excluded.changed",
        [(digest, owner, record, hub) for digest, owner, record in rows],
    )


def changes(db: Database, since: float | None) -> tuple[float, list[Row]]:
    """The database's clock now, and the rows changed after ``since`` (every row for None), oldest first."""
    now = float(db.execute(f"SELECT {db.now}").fetchone()[0])
    sql = "SELECT digest, owner, record, hub, changed FROM shelf"
    cursor = (
        db.execute(sql + " ORDER BY changed")
        if since is None
        else db.execute(sql + " WHERE changed > ? ORDER BY changed", (since,))
    )
    rows = [Row(str(d), str(o), None if r is None else str(r), str(h), float(c)) for d, o, r, h, c in cursor]
    return now, rows


def hold(db: Database, hub: str, digests: Iterable[str], *, only: bool = False) -> None:
    """``hub`` holds the blobs ``digests`` (with ``only``, those and no others)."""
    if only:
        db.execute("DELETE FROM shelf_blobs WHERE hub = ?", (hub,))
    db.executemany(
        "INSERT INTO shelf_blobs (digest, hub) VALUES (?, ?) ON CONFLICT (digest, hub) DO NOTHING",
        [(digest, hub) for digest in digests],
    )


def drop(db: Database, hub: str, digests: Iterable[str]) -> None:
    """``hub`` holds the blobs ``digests`` no more."""
    db.executemany("DELETE FROM shelf_blobs WHERE digest = ? AND hub = ?", [(digest, hub) for digest in digests])


def held_elsewhere(db: Database, hub: str, digests: Iterable[str]) -> set[str]:
    """Those of ``digests`` some hub other than ``hub`` holds (live or not: a hub stopped comes back with its disk)."""
    wanted = sorted(set(digests))
    found: set[str] = set()
    for chunk, marks in chunks(wanted):
        rows = db.execute(
            f"SELECT DISTINCT digest FROM shelf_blobs WHERE hub <> ? AND digest IN ({marks})", (hub, *chunk)
        )
        found.update(str(row[0]) for row in rows)
    return found
