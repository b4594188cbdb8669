"""What the hub's dashboard shows, page by page, as plain JSON-ready data: no I/O.

A page is asked for as a :class:`Query` (which page, a filter, the job looked at), and made for a
:class:`~kiln.hub.access.Viewer` from the core's state (:func:`page`): an admin sees everything; a
requestor credential sees the market (as ``kiln market`` shows it), and of activities, jobs and
events only its own. :mod:`kiln.hub.io.live` sends each page to the browsers that look at it, again
whenever it changed.

Every page is bounded whatever the hub's size (the first :data:`MAX_ROWS` providers by name, the
last :data:`MAX_EVENTS` events, ...) and says how many there were in all, so that a page costs the
hub little at 10,000 providers. Text that came from peers (names, reasons) is sent as is: the page
shows it as text, never as markup.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import orjson

from kiln.hub.access import Viewer
from kiln.hub.core import HubCore
from kiln.hub.history import PUBLIC, SERIES, History, Reading
from kiln.hub.images import Tenant
from kiln.hub.peers import Lease
from kiln.protocol.money import format_price

Json: TypeAlias = dict[str, Any]
PAGES: Final = ("overview", "providers", "activities", "jobs", "images", "events")
MAX_ROWS: Final = 500
"""Rows of the providers or the activities one page carries (the first, in its order)."""
MAX_IMAGES: Final = 200
MAX_HOLDERS: Final = 20
"""Holders named per image (the count says how many hold it)."""
MAX_EVENTS: Final = 200
MAX_JOBS: Final = 100
MAX_ATTEMPTS: Final = 2000
"""Attempts of the job looked at sent for its timeline: the most recent."""
MAX_FILTER: Final = 100
MAX_QUERY_BYTES: Final = 1024
MAX_REASON: Final = 200
_GROUP: Final = re.compile(r"^[\x20-\x7e]{1,256}$")


@dataclass(frozen=True, slots=True)
class Query:
    """What a dashboard page asks for: the ``page``, a ``filter`` (a provider's or an activity's
    name contains it) and, on the Jobs page, the ``job`` (group) whose timeline to draw."""

    page: str = "overview"
    filter: str = ""
    job: str | None = None


def parse_query(data: bytes | str) -> Query:
    """The :class:`Query` a browser sent (``{"page": ..., "filter": ..., "job": ...}``); ValueError
    for anything else (too long, not JSON, an unknown page, a field of the wrong type)."""
    if len(data) > MAX_QUERY_BYTES:
        raise ValueError(f"a query is at most {MAX_QUERY_BYTES} bytes")
    try:
        asked = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ValueError("a query is a JSON object") from e
    if not isinstance(asked, dict) or not set(asked) <= {"page", "filter", "job"}:
        raise ValueError("a query is an object of page, filter and job")
    page, text, job = asked.get("page"), asked.get("filter", ""), asked.get("job")
    if page not in PAGES:
        raise ValueError(f"no page {str(page)[:40]!r}: one of {', '.join(PAGES)}")
    if not isinstance(text, str) or len(text) > MAX_FILTER:
        raise ValueError(f"a filter is a string of at most {MAX_FILTER} characters")
    if job is not None and (not isinstance(job, str) or not _GROUP.match(job)):
        raise ValueError("a job is the name of a group")
    return Query(page, text, job)


@dataclass(frozen=True, slots=True)
class Totals:
    """Capacity summed over the providers, and what their activities use."""

    offered_cpus: float = 0.0
    rented_cpus: float = 0.0
    used_cpus: float = 0.0
    offered_memory: int = 0
    rented_memory: int = 0
    used_memory: int = 0


def totals(core: HubCore) -> Totals:
    """The market's capacity (offered, reserved) and the activities' last reported use: sums the
    market and the tallies keep as they change, so reading them costs nothing."""
    offered, free = core.market.offered_total, core.market.free_total
    used_cpus, used_memory = core.tallies.used_cpus, core.tallies.used_memory
    return Totals(
        offered.cpus,
        max(round(offered.cpus - free.cpus, 6), 0.0),
        used_cpus,
        offered.memory,
        offered.memory - free.memory,
        used_memory,
    )


def reading(core: HubCore, sums: Totals) -> Reading:
    """What :class:`~kiln.hub.history.History` keeps of the hub now."""
    tallies = core.tallies
    return Reading(
        providers=len(core.providers),
        activities=len(core.activities),
        offered_cpus=sums.offered_cpus,
        rented_cpus=sums.rented_cpus,
        used_cpus=sums.used_cpus,
        commands=tallies.commands,
        bytes=tallies.to_provider_bytes + tallies.to_requestor_bytes,
    )


def series(viewer: Viewer) -> tuple[str, ...]:
    """The history's series ``viewer`` is shown (a requestor's: the market's alone)."""
    return SERIES if viewer.admin else PUBLIC


def history_rows(history: History, viewer: Viewer, after: float) -> list[list[float]]:
    """The samples taken after ``after`` (a time), each a row of its time and ``viewer``'s series."""
    columns = history.columns(series(viewer))
    return [list(row) for row in zip(*columns, strict=True) if row[0] > after]


def page(core: HubCore, viewer: Viewer, query: Query, history: History, now: float) -> Json:
    """The page ``query`` asks for, as ``viewer`` may see it, at ``now`` (the wall clock's seconds)."""
    made: Json
    if query.page == "providers":
        made = providers(core, viewer, query.filter, now)
    elif query.page == "activities":
        made = activities(core, viewer, query.filter)
    elif query.page == "jobs":
        made = jobs(core, viewer, query.job)
    elif query.page == "images":
        made = images(core, viewer)
    elif query.page == "events":
        made = events(core, viewer)
    else:
        made = overview(core, viewer, history, totals(core))
    return {"type": "page", "page": query.page, **made}


def overview(core: HubCore, viewer: Viewer, history: History, sums: Totals) -> Json:
    """Counts and capacity; the rates of the last sample. A requestor's: the market, its own activities."""
    mine = _visible(core, viewer)
    made: Json = {
        "providers": len(core.providers),
        "activities": len(mine),
        "series": list(series(viewer)),
        "cpus": {"offered": round(sums.offered_cpus, 3), "rented": round(sums.rented_cpus, 3)},
        "memory": {"offered": sums.offered_memory, "rented": sums.rented_memory},
    }
    if viewer.admin:
        last = history.latest()
        tallies = core.tallies
        made["requestors"] = sum(1 for p in core.peers.values() if p.role == "requestor")
        made["cpus"]["used"] = round(sums.used_cpus, 3)
        made["memory"]["used"] = sums.used_memory
        made["rates"] = {"commands": last["commands"], "bytes": last["bytes"]}
        made["store"] = {"bytes": core.catalog.used, "images": len(core.catalog.images)}
        made["rents"] = dict(tallies.rents)
        made["lost"] = tallies.lost
    return made


def providers(core: HubCore, viewer: Viewer, text: str, now: float) -> Json:
    """The first :data:`MAX_ROWS` providers by name (whose name contains ``text``, if any):
    offered, rented and (to an admin) used capacity, images, price, reputation, and since when
    (``now``: the wall clock's seconds) it is connected."""
    market = core.market
    names = market._names  # kept sorted: the first rows cost no sort
    matching = [peer for name, peer in names if text in name] if text else None
    chosen = matching if matching is not None else [peer for _, peer in names[:MAX_ROWS]]
    matched = len(matching) if matching is not None else len(names)
    use = _use_by_provider(core) if viewer.admin else {}
    joined = core._joined
    monotonic = core._monotonic()
    rows = []
    for peer in chosen[:MAX_ROWS]:
        seller = market._sellers[peer]
        offer = seller.offer.resources
        row: Json = {
            "name": seller.name,
            "arch": seller.offer.arch,
            "cpus": [offer.cpus, round(offer.cpus - seller.free_cpus, 3)],
            "memory": [offer.memory, offer.memory - seller.free_memory],
            "activities": seller.activities,
            "images": len(seller.images) + len(seller.cached),
            "price": format_price(seller.offer.price),
            "reputation": round(market.reputation.score(seller.name), 3),
            "since": round(now - (monotonic - joined[peer])) if peer in joined else None,
        }
        if viewer.admin:
            cpus, memory = use.get(peer, (0.0, 0))
            row["cpus"].append(round(cpus, 3))
            row["memory"].append(memory)
        rows.append(row)
    return {"rows": rows, "matched": matched, "total": len(names), "used": viewer.admin, "filter": text}


def _use_by_provider(core: HubCore) -> dict[int, tuple[float, int]]:
    use: dict[int, tuple[float, int]] = {}
    for lease in core.activities.values():
        cpus, memory = use.get(lease.provider, (0.0, 0))
        use[lease.provider] = (cpus + (lease.cpu_rate or 0.0), memory + (lease.memory or 0))
    return use


def _visible(core: HubCore, viewer: Viewer) -> list[Lease]:
    """The activities ``viewer`` may see: every one to an admin, a requestor credential's own."""
    if viewer.admin:
        return list(core.activities.values())
    if viewer.credential is None:
        return []
    return [lease for lease in core.activities.values() if lease.credential == viewer.credential]


def activities(core: HubCore, viewer: Viewer, text: str) -> Json:
    """The activities ``viewer`` may see (whose id, requestor, provider or image contains ``text``),
    the most recently started first, at most :data:`MAX_ROWS`."""
    seen = _visible(core, viewer)
    if text:
        seen = [lease for lease in seen if any(text in field for field in _names_of(core, lease))]
    seen.sort(key=lambda lease: (lease.started or float("inf"), lease.id), reverse=True)
    rows = [
        {
            "id": lease.id,
            "requestor": lease.requestor_name,
            "provider": lease.provider_name,
            "image": _image_name(core, lease),
            "state": lease.state,
            "started": lease.started or None,
            "group": lease.group,
            "cpus": lease.resources.cpus,
            "memory": lease.resources.memory,
            "used_cpus": None if lease.cpu_rate is None else round(lease.cpu_rate, 3),
            "used_memory": lease.memory,
        }
        for lease in seen[:MAX_ROWS]
    ]
    return {"rows": rows, "matched": len(seen), "filter": text}


def _names_of(core: HubCore, lease: Lease) -> Iterable[str]:
    return (lease.id, lease.requestor_name, lease.provider_name, _image_name(core, lease))


def _image_name(core: HubCore, lease: Lease) -> str:
    """What the activity runs: a stored image by one of its tags (else its digest), or the name rented."""
    if lease.image is None:
        return lease.named_image or ""
    stored = core.catalog.images.get(lease.image)
    tags = sorted(stored.tags) if stored is not None else []
    return tags[0] if tags else lease.image


def jobs(core: HubCore, viewer: Viewer, group: str | None) -> Json:
    """The job groups ``viewer`` may see, the most recently updated first, and the attempts of
    ``group`` (the most recent :data:`MAX_ATTEMPTS`) for its timeline."""
    records = [
        record
        for record in core.jobs
        if viewer.admin or (viewer.credential is not None and record.credential == viewer.credential)
    ]
    records.sort(key=lambda record: (record.last, record.group), reverse=True)
    listed = [
        {
            "group": record.group,
            "requestor": record.requestor,
            "first": record.first,
            "last": record.last,
            "done": record.done,
            "failed": record.failed,
            "retried": record.retried,
            "running": record.running,
            "attempts": len(record.attempts),
            "cost": record.cost,
        }
        for record in records[:MAX_JOBS]
    ]
    made: Json = {"jobs": listed, "matched": len(records), "job": None}
    chosen = next((record for record in records if record.group == group), None)
    if chosen is None and group is None and records:
        chosen = records[0]  # the latest job, until another is picked
    if chosen is not None:
        attempts = list(chosen.attempts)[-MAX_ATTEMPTS:]
        made["job"] = {
            "group": chosen.group,
            "attempts": [
                [a.task, a.attempt, a.provider, a.start, a.end, a.state, (a.reason or "")[:MAX_REASON], a.bytes]
                for a in attempts
            ],
            "total": len(chosen.attempts),
        }
    return made


def images(core: HubCore, viewer: Viewer) -> Json:
    """The stored images ``viewer`` sees, the most recently used first: tags, size, last use,
    activities running it, and the providers holding it."""
    tenant = Tenant(viewer.credential, viewer.admin)
    seen = core.catalog.by_recency(tenant)
    rows = []
    for image in seen[:MAX_IMAGES]:
        holders = core.market._stored_holders(image.digest)  # not sorted: a few of them are named
        named = sorted(core.market._sellers[peer].name for peer in itertools.islice(holders, MAX_HOLDERS))
        if viewer.admin:
            tags = image.tags
        else:
            tags = {tag for owner in image.shown_owners(tenant) for tag in image.holdings[owner].tags}
        rows.append(
            {
                "digest": image.digest,
                "tags": sorted(tags),
                "size": image.size,
                "arch": image.arch,
                "pushed": image.pushed,
                "last_used": image.last_used,
                "in_use": image.in_use,
                "holders": named,
                "held": len(holders),
            }
        )
    return {"rows": rows, "matched": len(seen), "used": core.catalog.used_by(tenant) if viewer.admin else None}


def events(core: HubCore, viewer: Viewer) -> Json:
    """The last :data:`MAX_EVENTS` events ``viewer`` may see, the latest first: an admin's every one,
    a requestor credential's those of its own credential."""
    if viewer.admin:
        chosen = core.journal.last(MAX_EVENTS)
    elif viewer.credential is None:
        chosen = []
    else:
        chosen = [e for e in core.journal.last(len(core.journal)) if e.credential == viewer.credential]
        chosen = chosen[-MAX_EVENTS:]
    rows = [
        {"seq": e.seq, "at": e.at, "kind": e.kind, "role": e.role, "name": e.name, "detail": e.detail[:MAX_REASON]}
        for e in reversed(chosen)
    ]
    return {"rows": rows}
