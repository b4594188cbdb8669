"""The image store's rules, as pure code: the catalog, placement of stored images, and the core's
part in pushes and pulls. No sockets, no disk, no Docker (the real store is tests/service/test_hub_store.py)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from kiln.hub.actions import PushCancelled, PushFrame, ServeBlobs, ServeCredit, ServeStop, StoreRequest
from kiln.hub.catalog import (
    EXPANDED_SINCE,
    EXPANSION_FLOOR,
    GROW_STEP,
    MAX_PUSHES,
    OPEN,
    Catalog,
    StoredImage,
    Tenant,
    normalize_arch,
    normalize_tag,
    read_config,
)
from kiln.hub.market import Market
from kiln.protocol import frames
from kiln.protocol.errors import ImageError, ImageTooLarge, KilnError, NoMatch, StoreFull, UsageError
from kiln.protocol.frames import FrameKind
from kiln.protocol.messages import MINOR_VERSION, Blob, Demand, Done, Manifest, Offer, Resources, Want
from tests.hubcore import HubHarness

GiB = 2**30
MiB = 2**20


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob(name: str, size: int) -> Blob:
    return Blob(digest=sha(name.encode()), size=size)


def config_for(layers: list[Blob], arch: str = "amd64") -> bytes:
    return json.dumps(
        {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [b.digest for b in layers]}}
    ).encode()


def image(
    catalog: Catalog,
    *layers: Blob,
    tags: tuple[str, ...] = (),
    arch: str = "amd64",
    now: float = 1.0,
    tenant: Tenant = OPEN,
    expanded: dict[str, int] | None = None,
) -> StoredImage:
    """Store an image made of ``layers`` in ``catalog`` as a push by ``tenant`` would; each layer
    metered at its size, or at what ``expanded`` says (by digest)."""
    config = config_for(list(layers), arch)
    manifest = Manifest(config=Blob(digest=sha(config), size=len(config)), layers=list(layers))
    wanted, push = catalog.begin(manifest, tenant)
    for b in wanted:
        measured = None if b is manifest.config else (expanded or {}).get(b.digest, b.size)
        catalog.grow(push, max(b.size, measured or 0))
        catalog.add_blob(b, measured, push)
    stored = catalog.add_image(manifest, config, tags, now, tenant)
    catalog.end(push)
    return stored


# --- the catalog ------------------------------------------------------------------------


def test_names_of_images_and_machines() -> None:
    assert normalize_tag("wordcount") == "wordcount:latest"
    assert normalize_tag("wordcount:1") == "wordcount:1"
    assert normalize_tag("127.0.0.1:5000/x") == "127.0.0.1:5000/x:latest"
    assert normalize_arch("x86_64") == "amd64" and normalize_arch("riscv64") == "riscv64"


def test_blobs_are_wanted_once_config_first_and_shared_layers_are_not_sent_again() -> None:
    catalog = Catalog(GiB)
    base, app, other = blob("base", 100), blob("app", 10), blob("other", 20)
    first = image(catalog, base, app, tags=("app:1",))
    assert catalog.resolve("app:1") is first and catalog.resolve("app") is None
    assert catalog.resolve(first.digest) is first
    config = config_for([base, other, other])
    manifest = Manifest(config=Blob(digest=sha(config), size=len(config)), layers=[base, other, other])
    assert catalog.missing(manifest) == [manifest.config, other]
    assert first.size == 110 + first.manifest.config.size


def test_a_config_must_describe_the_layers() -> None:
    layers = [blob("a", 1)]
    manifest = Manifest(config=blob("c", 1), layers=layers)
    assert read_config(manifest, config_for(layers, "x86_64")) == ("amd64", "linux")
    with pytest.raises(ImageError, match="not JSON"):
        read_config(manifest, b"{")
    with pytest.raises(ImageError, match="rootfs"):
        read_config(manifest, b'{"rootfs": {"type": "other"}}')
    with pytest.raises(ImageError, match="layers that are not"):
        read_config(manifest, config_for([blob("b", 1)]))
    with pytest.raises(ImageError, match="architecture"):
        read_config(manifest, json.dumps({"rootfs": {"type": "layers", "diff_ids": [layers[0].digest]}}).encode())


def test_declared_sizes_must_agree() -> None:
    catalog = Catalog(GiB)
    a = blob("a", 5)
    image(catalog, a)
    with pytest.raises(ImageError, match="two sizes"):
        catalog.check(Manifest(config=blob("c", 1), layers=[blob("x", 1), blob("x", 2)]))
    with pytest.raises(ImageError, match="has 5 bytes"):
        catalog.check(Manifest(config=blob("c", 1), layers=[Blob(digest=a.digest, size=6)]))
    with pytest.raises(ImageError, match="config of"):
        catalog.check(Manifest(config=blob("c", 5 * MiB), layers=[]))
    with pytest.raises(ImageError, match="never sent"):
        catalog.add_image(Manifest(config=blob("c", 1), layers=[blob("missing", 1)]), b"", (), 1.0)


def test_a_tag_moves_to_the_image_pushed_last() -> None:
    catalog = Catalog(GiB)
    old = image(catalog, blob("a", 1), tags=("app:1",))
    new = image(catalog, blob("b", 1), tags=("app:1", "app"))
    assert catalog.resolve("app:1") is new and old.tags == set() and new.tags == {"app:1", "app:latest"}
    catalog.remove(new.digest)
    assert catalog.resolve("app:1") is None


def test_room_is_made_from_unused_blobs_then_the_least_recently_used_images_not_in_use() -> None:
    catalog = Catalog(1500)  # each image: 300 bytes of layer and about 140 of config
    busy = image(catalog, blob("busy", 300), now=1.0)
    old = image(catalog, blob("old", 300), now=2.0)
    recent = image(catalog, blob("recent", 300), now=3.0)
    catalog.use(busy.digest, 4.0)
    catalog.use(recent.digest, 5.0)
    catalog.unuse(recent.digest)
    orphan = blob("orphan", 50)
    catalog.add_blob(orphan)
    used = catalog.used

    assert len(catalog.images) == 3
    big = Manifest(config=blob("c", 10), layers=[blob("big", 1200)])
    with pytest.raises(StoreFull, match="in use"):
        catalog.begin(big)
    assert catalog.used == used and set(catalog.images) == {busy.digest, old.digest, recent.digest}, "nothing dropped"
    assert orphan.digest in catalog.blobs

    fits = Manifest(config=blob("c2", 10), layers=[blob("new", 300)])
    wanted, push = catalog.begin(fits)
    assert wanted == [fits.config, fits.layers[0]]
    assert len(catalog.images) == 3 and orphan.digest in catalog.blobs, "nothing evicted before bytes arrive"
    deleted = catalog.grow(push, 10) + catalog.grow(push, 310)
    assert orphan.digest in deleted and blob("old", 300).digest in deleted, "the orphan, then the oldest not in use"
    assert set(catalog.images) == {busy.digest, recent.digest}
    catalog.end(push)


def test_blobs_a_push_counts_on_are_not_evicted_under_it() -> None:
    catalog = Catalog(700)
    shared = blob("shared", 300)
    held = image(catalog, shared, now=1.0)
    pushing = Manifest(config=blob("c", 10), layers=[shared, blob("top", 50)])
    _, push = catalog.begin(pushing)  # pins `shared`
    with pytest.raises(StoreFull):
        catalog.begin(Manifest(config=blob("c3", 10), layers=[blob("huge", 400)]))
    assert held.digest in catalog.images
    catalog.end(push)
    _, other = catalog.begin(Manifest(config=blob("c3", 10), layers=[blob("huge", 400)]))
    assert held.digest in catalog.images, "evicted only once bytes arrive"
    catalog.grow(other, 400)
    assert held.digest not in catalog.images


def test_a_layer_weighs_what_it_expands_to_and_a_requestors_own_measure_is_dropped() -> None:
    catalog = Catalog(GiB)
    layer = blob("sparse", 10_000)
    claimed = layer.model_copy(update={"expanded": 1})
    stored = image(catalog, claimed, expanded={layer.digest: 300 * MiB})
    assert stored.manifest.layers[0].expanded == 300 * MiB, "the hub's measure, not the requestor's"
    assert stored.manifest.config.expanded is None
    assert stored.size == 10_000 + stored.manifest.config.size
    assert stored.expanded == 300 * MiB + stored.manifest.config.size
    assert catalog.used == stored.expanded
    assert stored.manifest_for(3).layers[0].expanded is None, "a provider of 1.3 would refuse the field"
    assert stored.manifest_for(EXPANDED_SINCE).layers[0].expanded == 300 * MiB


def test_a_layer_that_expands_absurdly_or_past_the_image_limit_is_too_large() -> None:
    catalog = Catalog(10 * GiB, max_image=GiB, max_expansion=32)
    layer = blob("bomb", 10_000)
    _, push = catalog.begin(Manifest(config=blob("c", 10), layers=[layer]))
    catalog.check_layer(push, layer, EXPANSION_FLOOR)  # tiny layers may expand a lot, up to the floor
    with pytest.raises(ImageTooLarge, match="32 times its size") as e:
        catalog.check_layer(push, layer, EXPANSION_FLOOR + 1)
    assert e.value.code == "image_too_large"
    big = blob("big", 900 * MiB)
    catalog.check_layer(push, big, 1000 * MiB)
    with pytest.raises(ImageTooLarge, match="once its layers are extracted"):
        catalog.check_layer(push, big, GiB + 1)
    catalog.end(push)
    with pytest.raises(ImageTooLarge, match="at least"):
        catalog.begin(Manifest(config=blob("c", 10), layers=[blob("huge", GiB)]))


def test_a_push_holds_room_only_as_its_bytes_come_and_a_tenant_is_bounded() -> None:
    catalog = Catalog(GiB)
    old = image(catalog, blob("old", 600 * MiB), now=1.0)
    layers = [blob(f"l{n}", 100 * MiB) for n in range(5)]
    _, push = catalog.begin(Manifest(config=blob("c", 10), layers=layers), pusher="alice")
    assert push.reserved == 0 and old.digest in catalog.images
    assert catalog.grow(push, 1, 100 * MiB) == [] and push.reserved == 2, "ahead by as much as came, no more"
    assert catalog.grow(push, MiB, 100 * MiB) == [] and push.reserved == 2 * MiB
    assert catalog.grow(push, 64 * MiB, 100 * MiB) == [] and push.reserved == 64 * MiB + GROW_STEP, "a step at most"
    assert catalog.grow(push, 97 * MiB, 100 * MiB) == [] and push.reserved == 100 * MiB, "never past the blob"
    assert old.digest in catalog.images
    evicted = catalog.grow(push, 450 * MiB)
    assert blob("old", 1).digest in evicted and old.digest not in catalog.images
    catalog.end(push)
    assert catalog.used == 0
    pushes = [
        catalog.begin(Manifest(config=blob(f"c{n}", 10), layers=[blob(f"x{n}", MiB)]), pusher="bob")[1]
        for n in range(MAX_PUSHES)
    ]
    with pytest.raises(KilnError, match="in flight") as e:
        catalog.begin(Manifest(config=blob("c9", 10), layers=[blob("x9", MiB)]), pusher="bob")
    assert e.value.code == "too_many"
    catalog.begin(Manifest(config=blob("c9", 10), layers=[blob("x9", MiB)]), pusher="carol")  # another tenant is not
    catalog.end(pushes[0])
    with pytest.raises(KilnError, match="would declare"):
        catalog.begin(Manifest(config=blob("c8", 10), layers=[blob("x8", GiB - 2 * MiB)]), pusher="bob")


def test_a_stored_blob_that_is_no_tar_cannot_be_a_layer() -> None:
    catalog = Catalog(GiB)
    config = blob("config-like", 100)
    catalog.add_blob(config, None)
    with pytest.raises(ImageError, match="not a tar"):
        catalog.begin(Manifest(config=blob("c", 10), layers=[config]))


# --- placement -------------------------------------------------------------------------------


def offer(images: list[str] = [], arch: str = "amd64", storage: int = 10 * GiB) -> Offer:  # noqa: B006
    return Offer(
        type="offer", id=1, resources=Resources(cpus=4, memory=4 * GiB, storage=storage), arch=arch, images=images
    )


def test_a_stored_image_goes_to_its_holder_then_to_whoever_holds_most_of_its_layers() -> None:
    catalog = Catalog(GiB)
    base, mid, top = blob("base", 100), blob("mid", 100), blob("top", 1)
    small = image(catalog, base)
    bigger = image(catalog, base, mid)
    wanted = image(catalog, base, mid, top)
    market = Market(catalog)
    market.update(1, "idle", offer(), pulls=True)
    market.update(2, "has-base", offer([small.digest]), pulls=True)
    market.update(3, "has-base-mid", offer([bigger.digest]), pulls=True)
    for _ in range(2):
        market.reserve(3, Resources(cpus=0.1, memory=MiB))  # the busiest: layer bytes still win
    assert market.choose(wanted.digest, Demand(), stored=wanted) == (3, False)
    assert market.choose(wanted.digest, Demand(), exclude={"has-base-mid"}, stored=wanted) == (2, False)
    market.update(4, "holder", offer([wanted.digest, "app:1"]), pulls=False)
    assert market.choose(wanted.digest, Demand(), stored=wanted) == (4, True), "a 1.0 holder still runs it"
    assert market.holders(wanted.digest) == ["holder"]
    market.remove(3)
    assert market.choose(wanted.digest, Demand(), exclude={"holder"}, stored=wanted) == (2, False)


def test_a_stored_image_never_goes_where_it_cannot_run_and_no_match_says_why() -> None:
    catalog = Catalog(20 * GiB)
    arm = image(catalog, blob("arm", 10), arch="arm64")
    wide = image(catalog, blob("wide", 2 * MiB))
    market = Market(catalog)
    market.update(1, "old", offer(), pulls=False)
    with pytest.raises(NoMatch, match=r"none speaks protocol 1\.1"):
        market.choose(arm.digest, Demand(), stored=arm)
    market.update(2, "x86", offer(arch="x86_64", storage=MiB), pulls=True)
    with pytest.raises(NoMatch, match="the providers are amd64"):
        market.choose(arm.digest, Demand(), stored=arm)
    with pytest.raises(NoMatch, match="no provider has room"):
        market.choose(wide.digest, Demand(), stored=wide)
    market.update(3, "roomy", offer(), pulls=True)
    assert market.choose(wide.digest, Demand(), stored=wide) == (3, False)
    bomb = image(catalog, blob("bomb", 10_000), expanded={blob("bomb", 0).digest: 11 * GiB})
    with pytest.raises(NoMatch, match="no provider has room"):  # placement counts what it expands to
        market.choose(bomb.digest, Demand(), stored=bomb)


# --- the core: pulls --------------------------------------------------------------------------


LAYER = blob("layer", 10 * MiB)
"""The one layer of the stored image ``app:1`` a pulling hub holds."""


def pulling(requestor_version: str = "1.1", provider_version: str = "1.1") -> tuple[HubHarness, StoredImage]:
    """A core with a stored image (``app:1``), a provider (1.1) as peer 1 and a requestor (1.1) as peer 2."""
    catalog = Catalog(GiB)
    stored = image(catalog, LAYER, tags=("app:1",))
    hub = HubHarness(activity_ids="act{}", wall=42.0, catalog=catalog)
    hub.join("provider", "p1", peer=1, version=provider_version)
    hub.offer(1, storage=GiB)
    hub.join("requestor", "r1", peer=2, version=requestor_version)
    return hub, stored


def rent_stored(hub: HubHarness, stored: StoredImage) -> int:
    """Requestor 2 rents ``app:1`` (request 7): the id of the create provider 1 is sent, with its manifest."""
    [(to, create)] = hub.send(2, {"type": "rent", "id": 7, "image": "app:1", "demand": {}})
    assert to == 1 and create["image"] == stored.digest
    manifest = stored.manifest_for(hub.core.peers[1].minor)
    assert create["manifest"] == manifest.model_dump(mode="json", exclude_none=True)
    return int(create["id"])


def frame(data: bytes) -> frames.Frame:
    return frames.decode(data, 2**20)


@pytest.mark.skipif(MINOR_VERSION < EXPANDED_SINCE, reason="Blob.expanded goes to providers from protocol 1.4")
def test_a_provider_of_1_4_is_told_what_each_layer_expands_to() -> None:
    hub, stored = pulling(provider_version=f"1.{MINOR_VERSION}")
    rent_stored(hub, stored)
    [create] = [message for _, message in hub.send(2, {"type": "rent", "id": 8, "image": "app:1", "demand": {}})]
    assert [layer["expanded"] for layer in create["manifest"]["layers"]] == [LAYER.size]
    assert "expanded" not in create["manifest"]["config"]


def test_a_provider_that_lacks_the_image_gets_its_blobs_and_the_requestor_sees_progress() -> None:
    hub, stored = pulling()
    create = rent_stored(hub, stored)
    assert hub.core.catalog.images[stored.digest].in_use == 1
    out = hub.send(1, {"type": "want", "re": create, "blobs": [LAYER.digest]})
    assert hub.actions[-1] == ServeBlobs(1, create, (stored.manifest.layers[0],))
    assert out == [
        (2, {"type": "rent_progress", "re": 7, "provider": "p1", "image": "app:1", "done": 0, "total": LAYER.size})
    ]
    assert hub.send(1, {"type": "credit", "stream": create, "chunks": 32}) == []
    assert hub.actions[-1] == ServeCredit(1, create, 32)
    told = []
    for _ in range(32):
        for to, message in hub.take(hub.core.serve_data(1, create, b"x" * (256 * 1024))):
            if to == 2:
                told.append(message["done"])
            else:
                assert frame(message).kind is FrameKind.DATA and frame(message).stream == create
    assert told == [4 * MiB, 8 * MiB], "at most one progress message every 4 MiB"
    with pytest.raises(UsageError, match="without credit"):
        hub.core.serve_data(1, create, b"x")
    out = hub.take(hub.core.serve_end(1, create))
    assert frame(out[0][1]).kind is FrameKind.END and out[1] == (2, {**out[1][1], "done": 8 * MiB})
    [(to, rented)] = hub.send(1, {"type": "done", "re": create, "bytes": 8 * MiB})
    assert (to, rented["cached"], rented["pulled"]) == (2, False, 8 * MiB)
    assert hub.take(hub.core.serve_data(1, create, b"late")) == [], "the stream is over"


def test_what_the_provider_fetched_says_whether_the_image_was_cached() -> None:
    hub, stored = pulling()
    hub.core.market.update(1, "p1", offer([stored.digest]), pulls=True)  # an offer soon to be stale
    create = rent_stored(hub, stored)
    hub.send(1, {"type": "want", "re": create, "blobs": [LAYER.digest]})
    hub.take(hub.core.serve_end(1, create))
    [(_, rented)] = [m for m in hub.send(1, {"type": "done", "re": create, "bytes": 5}) if m[1]["type"] == "rented"]
    assert (rented["cached"], rented["pulled"]) == (False, 5)


def test_the_market_knows_a_stored_image_by_its_tags() -> None:
    hub, stored = pulling()
    hub.core.market.update(1, "p1", offer([stored.digest]), pulls=True)
    [(_, info)] = hub.send(2, {"type": "market", "id": 3, "image": "app:1"})
    assert [p["name"] for p in info["providers"]] == ["p1"]


def test_a_providers_cache_serves_only_rents_of_the_stored_image() -> None:
    hub, stored = pulling()
    # What it loaded from the store is listed apart (1.4): a rent by the store's tag finds it.
    hub.core.market.update(1, "p1", offer().model_copy(update={"cached": [stored.digest]}), pulls=True)
    [(_, info)] = hub.send(2, {"type": "market", "id": 3, "image": "app:1"})
    assert [p["name"] for p in info["providers"]] == ["p1"] and info["providers"][0]["images"] == []
    [(to, create)] = hub.send(2, {"type": "rent", "id": 7, "image": "app:1", "demand": {}})
    assert to == 1 and create["manifest"] is not None
    [(_, rented)] = hub.send(1, {"type": "done", "re": create["id"], "bytes": 0})
    assert rented["cached"] is True
    # Once the store no longer holds it, its digest names nothing the cache may serve.
    hub.core.catalog.remove(stored.digest)
    [(_, info)] = hub.send(2, {"type": "market", "id": 4, "image": stored.digest})
    assert info["providers"] == []
    # No provider offers it itself, so the hub answers as for a digest nobody stored.
    [(to, error)] = hub.send(2, {"type": "rent", "id": 8, "image": stored.digest, "demand": {}})
    assert (to, error["type"], error["code"]) == (2, "error", "image_not_found")


def test_a_requestor_of_1_0_hears_no_progress_and_no_pulled() -> None:
    hub, stored = pulling(requestor_version="1.0")
    create = rent_stored(hub, stored)
    assert hub.send(1, {"type": "want", "re": create, "blobs": [stored.digest]}) == []
    [(_, rented)] = hub.send(1, {"type": "done", "re": create, "bytes": 0})
    assert "pulled" not in rented and rented["cached"] is True


def test_a_want_for_what_the_image_lacks_is_refused_on_its_stream() -> None:
    hub, stored = pulling()
    create = rent_stored(hub, stored)
    [(to, abort)] = hub.send(1, {"type": "want", "re": create, "blobs": [LAYER.digest, LAYER.digest]})
    assert to == 1 and frame(abort).kind is FrameKind.ABORT and b"twice" in bytes(frame(abort).payload)
    [(to, error)] = hub.send(1, {"type": "want", "re": create, "blobs": []})
    assert error["code"] == "out_of_order", "one want per create"


def test_a_provider_of_1_0_gets_no_manifest_and_cannot_want() -> None:
    hub, stored = pulling(provider_version="1.0")
    hub.core.market.update(1, "p1", offer([stored.digest]), pulls=False)
    [(_, create)] = hub.send(2, {"type": "rent", "id": 7, "image": stored.digest, "demand": {}})
    assert "manifest" not in create
    [(_, error)] = hub.send(1, {"type": "want", "re": create["id"], "blobs": []})
    assert error["code"] == "out_of_order"


def test_a_provider_lost_mid_pull_stops_the_store_and_frees_the_image() -> None:
    hub, stored = pulling()
    create = rent_stored(hub, stored)
    hub.send(1, {"type": "want", "re": create, "blobs": [LAYER.digest]})
    hub.take(hub.core.disconnect(1, "gone"))
    assert ServeStop(1, create) in hub.actions
    assert hub.core.catalog.images[stored.digest].in_use == 0


def test_a_create_that_fails_mid_pull_stops_the_store() -> None:
    hub, stored = pulling()
    create = rent_stored(hub, stored)
    hub.send(1, {"type": "want", "re": create, "blobs": [LAYER.digest]})
    [(to, error)] = hub.send(1, {"type": "error", "re": create, "code": "image_corrupt", "message": "bad blob"})
    assert (to, error["code"], error["provider"]) == (2, "image_corrupt", "p1")
    assert ServeStop(1, create) in hub.actions
    assert hub.core.catalog.images[stored.digest].in_use == 0


# --- the core: pushes ---------------------------------------------------------------------------


def push_message(id_: int = 3) -> dict[str, Any]:
    manifest = Manifest(config=blob("c", 1), layers=[])
    return {"type": "push_image", "id": id_, "manifest": manifest.model_dump(mode="json")}


def test_a_push_reaches_the_store_and_its_data_only_within_credit() -> None:
    hub, _ = pulling()
    assert hub.send(2, push_message()) == []
    assert [type(a) for a in hub.actions[-1:]] == [StoreRequest]
    [(_, error)] = hub.take(hub.core.receive_binary(2, frames.encode(FrameKind.DATA, 3, b"early")))
    assert error["code"] == "flow_control" and error["re"] == 3
    assert hub.actions[-1] == PushFrame(2, 3, FrameKind.ABORT, b"sender broke flow control")
    [(_, error)] = hub.take(hub.core.receive_binary(2, frames.encode(FrameKind.DATA, 3, b"more")))
    assert error["code"] == "unknown_stream"

    hub.send(2, push_message(4))
    [(_, credit)] = hub.take(hub.core.store_grant(2, 4, 2))
    assert credit == {"type": "credit", "stream": 4, "chunks": 2}
    assert hub.take(hub.core.receive_binary(2, frames.encode(FrameKind.DATA, 4, b"ok"))) == []
    assert hub.actions[-1] == PushFrame(2, 4, FrameKind.DATA, b"ok")
    hub.take(hub.core.receive_binary(2, frames.encode(FrameKind.END, 4)))
    last = hub.actions[-1]
    assert isinstance(last, PushFrame) and last.kind is FrameKind.END
    want = Want(type="want", re=4, blobs=[])
    assert hub.take(hub.core.store_reply(2, want))[0][1]["type"] == "want"
    [(_, done)] = hub.take(hub.core.store_reply(2, Done(type="done", re=4)))
    assert done == {"type": "done", "re": 4}
    assert hub.take(hub.core.store_reply(2, Done(type="done", re=4))) == [], "answered once"
    assert hub.send(2, push_message(4)) == [], "the id is free again"
    again = hub.actions[-1]
    assert isinstance(again, StoreRequest) and (again.peer, again.message.id) == (2, 4)


def test_a_push_cancelled_or_left_behind_is_handed_to_the_store() -> None:
    hub, _ = pulling()
    hub.send(2, push_message(3))
    hub.send(2, {"type": "cancel", "target": 3})
    assert hub.actions[-1] == PushCancelled(2, 3, answer=True)
    [(_, error)] = hub.send(2, push_message(3))
    assert error["code"] == "duplicate_id", "still open until the store answers"
    hub.take(hub.core.disconnect(2, "gone"))
    assert hub.actions[-1] == PushCancelled(2, 3, answer=False)


def test_a_cancel_of_a_request_the_store_answers_is_passed_over() -> None:
    hub, _ = pulling()
    hub.send(2, {"type": "list_images", "id": 4})
    hub.send(2, {"type": "remove_image", "id": 5, "image": "app:1"})
    for target in (4, 5):
        assert hub.send(2, {"type": "cancel", "target": target}) == [], "the store answers it soon: nothing to do"
    [(_, error)] = hub.send(2, {"type": "list_images", "id": 4})
    assert error["code"] == "duplicate_id", "still open until the store answers"
