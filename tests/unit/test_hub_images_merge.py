"""The catalog's part in a store several hubs share (Catalog.merge, fetching, fetched), as pure code:
another hub's word on an owner's hold, an image whose blobs are elsewhere, a blob fetched into room.
The hubs and their database: tests/service/test_hub_images_shared.py."""

from __future__ import annotations

import copy

import pytest

from kiln.hub.catalog import OPEN, Catalog, Holding, StoredImage, Tenant
from kiln.protocol.errors import StoreFull
from tests.unit.test_hub_images import GiB, MiB, blob, image

ALICE = Tenant(7)


def elsewhere(catalog: Catalog, *layers_mb: int, tags: tuple[str, ...] = (), tenant: Tenant = OPEN) -> StoredImage:
    """A record of an image another hub stores (its blobs there, not in ``catalog``)."""
    there = Catalog(GiB)
    made = image(
        there, *(blob(f"layer-{n}-{mb}", mb * MiB) for n, mb in enumerate(layers_mb)), tags=tags, tenant=tenant
    )
    return copy.deepcopy(made)


def test_another_hubs_hold_is_taken_with_its_tags_and_dropped_with_its_owner() -> None:
    here = Catalog(GiB)
    local = image(here, blob("local", MiB), tags=("app:1",))
    record = elsewhere(here, 2, tags=("app:1", "app:2"))
    assert here.merge(record, None) == []
    assert here.resolve("app:1") is here.images[record.digest], "the tag moved to the image merged"
    assert local.holdings[None].tags == set()
    assert here.missing(record.manifest) == record.blobs, "its blobs are elsewhere"

    theirs = copy.deepcopy(record)
    theirs.holdings = {ALICE.id: Holding(pushed=2.0, tags={"mine:1"})}
    here.merge(theirs, ALICE.id)
    assert set(here.images[record.digest].holdings) == {None, ALICE.id}
    assert here.resolve("mine:1", ALICE) is not None and here.resolve("mine:1") is None, "tags stay per owner"

    dropped = StoredImage(record.manifest, record.arch, record.os)
    assert here.merge(dropped, None) == [], "no blob of it here to delete"
    assert record.digest in here.images and here.resolve("app:2") is None
    here.merge(dropped, ALICE.id)
    assert record.digest not in here.images, "gone with its last holder"
    assert here.resolve("app:1") is None


def test_an_image_stored_only_elsewhere_is_never_evicted_and_a_fetched_blob_takes_room() -> None:
    here = Catalog(10 * MiB)
    record = elsewhere(here, 6)
    here.merge(record, None)
    old = image(here, blob("old", 5 * MiB), now=0.5)
    layer = record.manifest.layers[0]
    room = here.fetching(here.images[record.digest], layer)
    assert set(here.grow(room, layer.size)) == {b.digest for b in old.blobs}, "room made as for a push"
    assert record.digest in here.images, "an image with no blob here frees nothing: kept"
    here.pin(room, layer)
    here.fetched(layer, layer.size, room)
    assert here.blobs[layer.digest] == layer.size and here.used == layer.size
    assert here.senders.get(layer.digest) is None, "no tenant sent it: none may skip sending it"

    big = blob("big", 20 * MiB)
    with pytest.raises(StoreFull):
        here.grow(here.fetching(here.images[record.digest], big), big.size)
