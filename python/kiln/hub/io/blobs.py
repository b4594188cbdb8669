"""The hub's image store on disk: its blob files and image records.

Layout under the data directory::

    blobs/sha256/<hex>   verified blobs (image configs and layers), stored once each
    blobs/expanded/<hex> a blob's expanded size as a tar layer (``-``: not a tar), written before it
    images/<hex>.json    one record per image: manifest, architecture, and each owner's tags, shares, times
    tmp/                 blobs being received; emptied at start

A blob reaches ``blobs/`` only by a rename after its size and sha256 were checked, so what
is there is whole and right, and a push cut off leaves nothing behind but its verified
blobs (a retried push does not send them again). What the store holds, and every decision
about it, is the pure :class:`~kiln.hub.catalog.Catalog`; this module does the file I/O (blocking calls:
:mod:`kiln.hub.io.store` runs them on threads, so the hub's event loop never waits on a disk).

A store written before expanded sizes were kept has them measured at start (its blobs' headers
read, data skipped).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import IO, Final

import orjson

from kiln.hub.catalog import (
    DEFAULT_MAX_EXPANSION,
    DEFAULT_MAX_IMAGE,
    MAX_CONFIG_BYTES,
    Catalog,
    Holding,
    Owner,
    StoredImage,
)
from kiln.protocol.errors import Cancelled, ImageCorrupt, KilnError
from kiln.protocol.layers import TarMeter
from kiln.protocol.messages import (
    WIRE,
    Blob,
    Manifest,
)

log = logging.getLogger("kiln.hub.io.store")


def default_data_dir() -> Path:
    """Where the hub keeps its data unless told: ``$XDG_DATA_HOME/kiln/hub`` (``~/.local/share/kiln/hub``)."""
    home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(home) / "kiln" / "hub"


class BlobWriter:
    """One blob being received into a temporary file, metered as a tar; :meth:`finish` verifies
    and publishes it.

    A ``layer``'s tar must be sound (else ImageCorrupt); any other blob (a config) is metered too,
    quietly, so that a blob later named as a layer is known for what it is. Making one touches no
    disk: its file is made at its first write (so a push cancelled in between leaves none open)."""

    def __init__(self, store: BlobStore, blob: Blob, layer: bool) -> None:
        self.blob = blob
        self.layer = layer
        self.meter: TarMeter | None = TarMeter()
        self.written = 0
        self._store = store
        self._hash = hashlib.sha256()
        self._path: Path | None = None
        self._file: IO[bytes] | None = None
        # A push cancelled while a write or finish runs in a thread discards in another thread:
        # the discard waits for it, and nothing is written (no file made) after it.
        self._lock = threading.Lock()
        self._discarded = False

    def _opened(self) -> IO[bytes]:
        if self._discarded:
            raise Cancelled(f"the push of blob {self.blob.digest} was given up")
        if self._file is None:
            assert self._path is None, "a blob's file is made once"
            fd, name = tempfile.mkstemp(dir=self._store.tmp, prefix=self.blob.digest[7:19] + ".")
            self._path = Path(name)
            self._file = os.fdopen(fd, "wb")
        return self._file

    @property
    def expanded(self) -> int:
        """The layer's expanded size so far (0 for a blob that is no tar)."""
        return self.meter.expanded if self.meter is not None else 0

    def write(self, data: bytes) -> None:
        with self._lock:
            self._write(data)

    def _write(self, data: bytes) -> None:
        file = self._opened()
        self.written += len(data)
        if self.written > self.blob.size:
            raise ImageCorrupt(f"blob {self.blob.digest} is longer than its declared {self.blob.size} bytes")
        self._measure(lambda meter: meter.feed(data))
        self._hash.update(data)
        file.write(data)

    def _measure(self, step: Callable[[TarMeter], object]) -> None:
        if self.meter is None:
            return
        try:
            step(self.meter)
        except ImageCorrupt as e:
            if self.layer:
                raise ImageCorrupt(f"layer {self.blob.digest}: {e.message}") from e
            self.meter = None  # a config: not a tar, and that is fine

    def finish(self) -> None:
        """Check size and digest, then move the blob into place (else ImageCorrupt, and nothing kept)."""
        with self._lock:
            self._finish()

    def _finish(self) -> None:
        file = self._opened()
        if self.written != self.blob.size:
            raise ImageCorrupt(f"blob {self.blob.digest} has {self.written} bytes, not its declared {self.blob.size}")
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self.blob.digest:
            raise ImageCorrupt(f"blob {self.blob.digest} does not match its bytes (their sha256 is {actual})")
        self._measure(TarMeter.finish)
        file.flush()
        os.fsync(file.fileno())
        file.close()
        self._file = None
        assert self._path is not None
        with self._store.publishing:
            self._store.write_expanded(self.blob.digest, self.meter.expanded if self.meter is not None else None)
            os.replace(self._path, self._store.path(self.blob.digest))

    @property
    def measured(self) -> int | None:
        """After :meth:`finish`: the expanded size, or None for a blob that is no tar."""
        return self.meter.expanded if self.meter is not None else None

    def discard(self) -> None:
        with self._lock:
            self._discarded = True
            if self._file is not None:
                self._file.close()
                self._file = None
                if self._path is not None:
                    self._path.unlink(missing_ok=True)


class BlobStore:
    """The files of an image store (blocking calls: run them on a thread)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.meta = root / "images"
        self.tmp = root / "tmp"
        self.sizes = root / "blobs" / "expanded"
        self.publishing = threading.Lock()
        """Held while a blob is put in place, and while one is deleted (see :meth:`delete`)."""

    def open(
        self, limit: int, max_image: int = DEFAULT_MAX_IMAGE, max_expansion: float = DEFAULT_MAX_EXPANSION
    ) -> Catalog:
        """Make the folders, drop leftovers of an interrupted run, and read what is stored (measuring
        the blobs whose expanded size is not written down: a store from before it was kept)."""
        for folder in (self.blobs, self.sizes, self.meta, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)
        catalog = Catalog(limit, max_image, max_expansion)
        measured = 0
        for path in self.blobs.iterdir():
            digest = f"sha256:{path.name}"
            catalog.blobs[digest] = path.stat().st_size
            try:
                text = (self.sizes / path.name).read_text().strip()
                expanded = None if text == "-" else int(text)
            except (OSError, ValueError):  # none yet (or unreadable): measure it again
                expanded = measure_file(path)
                self.write_expanded(digest, expanded)
                measured += 1
            if expanded is not None:
                catalog.expanded[digest] = expanded
        if measured:
            log.info("measured the expanded size of %d blobs stored before it was kept", measured)
        for leftover in self.sizes.iterdir():
            if not (self.blobs / leftover.name).exists():
                leftover.unlink(missing_ok=True)
        records = []
        for path in self.meta.glob("*.json"):
            try:
                records.append(image_from_json(path.read_bytes()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError, KilnError) as e:
                log.warning("ignoring the unreadable image record %s: %s", path.name, e)
        for image in sorted(records, key=lambda i: i.pushed):  # a tag on two images: the later push has it
            if catalog.missing(image.manifest):
                log.warning("image %s lacks blobs on disk; forgetting it", image.digest)
                self.forget(image.digest)
                continue
            image.manifest = catalog.measured(image.manifest)
            catalog.images[image.digest] = image
            for owner, holding in image.holdings.items():
                tags, holding.tags = holding.tags, set()
                for tag in tags:
                    catalog.retag(tag, image, owner)
        return catalog

    def path(self, digest: str) -> Path:
        return self.blobs / digest.removeprefix("sha256:")

    def writer(self, blob: Blob, layer: bool) -> BlobWriter:
        return BlobWriter(self, blob, layer)

    def write_expanded(self, digest: str, expanded: int | None) -> None:
        """Write down a blob's expanded size (None: it is no tar), before the blob is published."""
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="expanded.")
        with os.fdopen(fd, "w") as f:
            f.write("-" if expanded is None else str(expanded))
        os.replace(name, self.sizes / digest.removeprefix("sha256:"))

    def read_config(self, digest: str) -> bytes:
        with self.path(digest).open("rb") as f:
            return f.read(MAX_CONFIG_BYTES + 1)

    def save(self, images: Iterable[StoredImage]) -> None:
        for image in images:
            target = self.meta / f"{image.digest.removeprefix('sha256:')}.json"
            fd, name = tempfile.mkstemp(dir=self.tmp, prefix="image.")
            with os.fdopen(fd, "wb") as f:
                f.write(image_to_json(image))
                f.flush()
                os.fsync(f.fileno())
            os.replace(name, target)

    def forget(self, digest: str) -> None:
        (self.meta / f"{digest.removeprefix('sha256:')}.json").unlink(missing_ok=True)

    def evict(self, digests: Iterable[str], catalog: Catalog) -> None:
        """Delete the records of the images ``catalog`` dropped to make room, and the files of the
        blobs ``digests`` it evicted (see :meth:`delete`)."""
        for path in self.meta.glob("*.json"):
            if f"sha256:{path.stem}" not in catalog.images:
                path.unlink(missing_ok=True)
        self.delete(set(digests), catalog.keeps)

    def delete(self, digests: Iterable[str], keep: Callable[[str], bool] = lambda digest: False) -> None:
        """Delete the files of ``digests``, but not of one that ``keep`` says is wanted again by
        now (a push put the same blob back meanwhile: the catalog dropped it, a push pinned it and
        is publishing its file). ``keep`` is asked as each file goes, with no blob being published."""
        for digest in digests:
            with self.publishing:
                if keep(digest):
                    continue
                self.path(digest).unlink(missing_ok=True)
                (self.sizes / digest.removeprefix("sha256:")).unlink(missing_ok=True)


def measure_file(path: Path) -> int | None:
    """The expanded size of the tar in ``path`` (None if it is no tar), its file data seeked past."""
    meter = TarMeter()
    try:
        with path.open("rb") as f:
            left = os.fstat(f.fileno()).st_size
            while left > 0:
                skip = min(meter.skippable, left)
                if skip:
                    f.seek(skip, os.SEEK_CUR)
                    meter.skip(skip)
                    left -= skip
                    continue
                data = f.read(min(left, 64 * 1024))
                if not data:
                    break
                meter.feed(data)
                left -= len(data)
        return meter.finish()
    except ImageCorrupt:
        return None


OPEN_KEY: Final = "open"
"""The open tenant's key among a record's ``owners`` (the others: their credential ids)."""


def owner_key(owner: Owner) -> str:
    """``owner``'s key in a record (and in the shared store's rows: :mod:`kiln.hub.io.shelf`)."""
    return OPEN_KEY if owner is None else str(owner)


def image_to_json(image: StoredImage, owners: Collection[Owner] | None = None) -> bytes:
    """The record of ``image`` (with the holdings of ``owners`` only, when given)."""
    held = {
        owner_key(owner): {
            "tags": sorted(h.tags),
            "shared": sorted(owner_key(o) for o in h.shared),
            "public": h.public,
            "pushed": h.pushed,
        }
        for owner, h in image.holdings.items()
        if owners is None or owner in owners
    }
    return orjson.dumps(
        {
            "manifest": image.manifest.model_dump(mode="json"),
            "arch": image.arch,
            "os": image.os,
            "owners": held,
            "last_used": image.last_used,
        }
    )


def image_from_json(data: bytes | str) -> StoredImage:
    """An image record; one written before images had owners (no ``owners``: ``tags`` and
    ``pushed`` at the top) belongs to the open tenant."""
    raw = orjson.loads(data)
    manifest = Manifest.model_validate(raw["manifest"], context=WIRE)
    image = StoredImage(manifest, str(raw["arch"]), str(raw["os"]))
    owners = raw.get("owners")
    if owners is None:
        owners = {OPEN_KEY: {"tags": raw["tags"], "pushed": raw["pushed"]}}
    for key, h in owners.items():
        shared = {owner_of(o) for o in h.get("shared", [])}
        holding = Holding(float(h["pushed"]), {str(t) for t in h["tags"]}, shared, bool(h.get("public", False)))
        image.holdings[owner_of(key)] = holding
    if not image.holdings:
        raise ValueError("the record names no owner")
    image.last_used = raw.get("last_used")
    return image


def owner_of(key: str) -> Owner:
    """The owner a record's key names (ValueError for none)."""
    return None if key == OPEN_KEY else int(key)
