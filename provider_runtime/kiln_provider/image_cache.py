"""The record of the images this provider loaded (or pulled) for requestors, and what to evict.

``images.json`` in the provider's data folder maps each such image id to its size, its last
use (Unix seconds), the tags the provider gave it and whether it was pulled from a registry
(else it came from the hub's store), and survives restarts.
Images the operator put there are never in it, so never evicted. This module decides and
writes the file; removing images from Docker is :mod:`kiln_provider.image_supply`'s (through the adapter)::

    cache = ImageCache.open(data_dir, budget)
    cache.add(image_id, size); cache.save()
    for image_id in cache.victims(in_use=..., keep={image_id}): ...remove it, then cache.forget(image_id)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from kiln.protocol.errors import UsageError
from kiln_provider.offering import Loaded

log = logging.getLogger("kiln.provider")

DEFAULT_BUDGET: Final = 20 * 2**30
RECORD: Final = "images.json"


def default_data_dir(name: str) -> Path:
    """``$XDG_DATA_HOME/kiln/provider/<name>`` (``~/.local/share`` when unset)."""
    home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(home) / "kiln" / "provider" / name


@dataclass
class CachedImage:
    size: int
    last_used: float
    tags: tuple[str, ...] = ()
    pulled: bool = False
    """Pulled from a registry (``--pull``); else loaded from the hub's store."""


class ImageCache:
    """Images loaded for requestors (id -> :class:`CachedImage`), least recently used first out."""

    def __init__(self, path: Path, budget: int, images: dict[str, CachedImage] | None = None) -> None:
        self.path = path
        self.budget = budget
        self.images: dict[str, CachedImage] = images if images is not None else {}

    @classmethod
    def open(cls, data_dir: Path, budget: int) -> ImageCache:
        """The record in ``data_dir`` (created if need be); UsageError if it cannot be read."""
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create the data folder {data_dir}: {e}") from e
        path = data_dir / RECORD
        try:
            raw = json.loads(path.read_text())
            images = {}
            for image_id, entry in raw["images"].items():
                tags = tuple(str(tag) for tag in entry.get("tags", ()))
                # A record written before "pulled" was: only a pull gave an image tags.
                pulled = bool(entry.get("pulled", bool(tags)))
                images[str(image_id)] = CachedImage(int(entry["size"]), float(entry["last_used"]), tags, pulled)
        except FileNotFoundError:
            images = {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise UsageError(f"cannot read {path}: {e} (remove it to start an empty record)") from e
        return cls(path, budget, images)

    @property
    def total(self) -> int:
        return sum(image.size for image in self.images.values())

    def add(
        self, image_id: str, size: int, tags: tuple[str, ...] = (), now: float | None = None, *, pulled: bool = False
    ) -> None:
        self.images[image_id] = CachedImage(size, time.time() if now is None else now, tags, pulled)

    @property
    def loaded(self) -> Loaded:
        """What it holds, as :mod:`kiln_provider.offering` judges images by."""
        return Loaded(
            stored=frozenset(image_id for image_id, image in self.images.items() if not image.pulled),
            pulled={image_id: image.tags for image_id, image in self.images.items() if image.pulled},
        )

    def touch(self, image_id: str, now: float | None = None) -> bool:
        """Mark a recorded image used now; False (and nothing changes) for one not recorded."""
        image = self.images.get(image_id)
        if image is None:
            return False
        image.last_used = time.time() if now is None else now
        return True

    def forget(self, image_id: str) -> None:
        self.images.pop(image_id, None)

    def victims(self, in_use: Collection[str], keep: Collection[str] = ()) -> list[str]:
        """The images to remove, least recently used first, to bring the total within the budget:
        never one in ``in_use`` (a container's) or in ``keep``. Fewer than needed when the rest
        are all in use."""
        excess = self.total - self.budget
        chosen: list[str] = []
        for image_id, image in sorted(self.images.items(), key=lambda item: item[1].last_used):
            if excess <= 0:
                break
            if image_id in in_use or image_id in keep:
                continue
            chosen.append(image_id)
            excess -= image.size
        return chosen

    def snapshot(self) -> bytes:
        """The record as written to disk."""
        images = {
            image_id: {
                "size": image.size,
                "last_used": image.last_used,
                "tags": list(image.tags),
                "pulled": image.pulled,
            }
            for image_id, image in sorted(self.images.items())
        }
        return json.dumps({"version": 1, "images": images}, indent=1).encode()

    def save(self) -> None:
        write_atomically(self.path, self.snapshot())


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a reader (or a crash) sees the old file or the new, never half."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
