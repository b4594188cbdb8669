"""Which of the Docker engine's images a provider offers: pure rules, no Docker here.

The engine holds whatever its host put there, other software's images too, so a provider
offers only what its operator allows and what it loaded for Kiln:

- an image carrying the label ``org.kiln.offer=NAME`` (``kiln image busybox`` sets
  ``org.kiln.offer=kiln-busybox``), under its tags of that name (``NAME:*``) and its id. The
  label names its image because an image built FROM another inherits its labels: an image
  built FROM kiln-busybox and tagged ``myapp:1`` is not offered by it (nor, then, would a
  tenant's image built on a provider's host be offered to everyone);
- an image with a tag that matches one of the operator's ``--images`` patterns (``fnmatch``:
  ``myapp:*``, ``team/*``; a pattern without a tag, ``myapp``, matches every tag of that
  name), under its matching tags and its id;
- an image it pulled from a registry for a rent (``--pull``), under the tags it pulled and its id.

Only a tagged image is ever allowed by its label or a pattern: an untagged one on the host is
nobody's to offer. The images it loaded from the hub's store are apart (``Offer.cached``, by
id): the hub lets only a requestor that may rent the stored image run one of those, so they
are never offered as allowed, whatever labels they carry. A ``create`` that brings no manifest
may name only an offered name (:meth:`Allowed.names`): anything else is as if the engine lacked it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Final

OFFER_LABEL: Final = "org.kiln.offer"
"""An image whose label of this name names one of its tags' repository is offered under those tags."""


def repository(tag: str) -> str:
    """The name of ``tag`` without its tag (``team/app:1`` is ``team/app``; ``host:5000/app`` stays)."""
    return tag.rpartition(":")[0] if ":" in tag.rpartition("/")[2] else tag


@dataclass(frozen=True)
class LocalImage:
    """An image as the engine lists it."""

    id: str
    """``sha256:<hex>``, the digest of its config."""
    tags: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Loaded:
    """What the provider loaded for Kiln (its record, :mod:`kiln_provider.image_cache`): the ids
    loaded from the hub's store, and the tags it pulled from registries (by image id)."""

    stored: frozenset[str] = frozenset()
    pulled: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Allowed:
    """The operator's rule: the ``--images`` patterns (the label needs no setting)."""

    patterns: tuple[str, ...] = ()

    def matches(self, tag: str) -> bool:
        """Whether ``tag`` (``name:tag`` as Docker lists it) matches a pattern."""
        name = repository(tag)
        return any(fnmatchcase(tag, pattern) or fnmatchcase(name, pattern) for pattern in self.patterns)

    def names(self, image: LocalImage, loaded: Loaded) -> list[str]:
        """The names ``image`` is offered under as an allowed image (none: it is not)."""
        if image.id in loaded.stored:
            return []  # the hub's, in Offer.cached: not anyone's to run by name
        pulled = [tag for tag in loaded.pulled.get(image.id, ()) if tag in image.tags]
        labelled = image.labels.get(OFFER_LABEL)
        tags = [tag for tag in image.tags if repository(tag) == labelled or self.matches(tag) or tag in pulled]
        return [*tags, image.id] if tags else []

    def offer(self, images: Iterable[LocalImage], loaded: Loaded) -> tuple[list[str], list[str]]:
        """What to offer: (the allowed images' names, the ids loaded from the store that are here), each sorted."""
        here = list(images)
        names = sorted({name for image in here for name in self.names(image, loaded)})
        cached = sorted(image.id for image in here if image.id in loaded.stored)
        return names, cached

    def lets_run(self, ref: str, image: LocalImage, loaded: Loaded) -> bool:
        """Whether a create that brings no manifest may run ``image``, which ``ref`` named (a
        name without a tag is its ``:latest``, as Docker reads it)."""
        names = self.names(image, loaded)
        return ref in names or (":" not in ref.rpartition("/")[2] and f"{ref}:latest" in names)
