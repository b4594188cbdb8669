"""Who owns what in the image store, as pure code: the catalog's rules for tenants (holdings, tags
per owner, shares, what a push must send) and the core's part (a rent's or market's image as the
requestor's tenant sees it). The real hub with two credentials is tests/hostile/test_tenant_isolation.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kiln.hub.catalog import OPEN, Catalog, Tenant
from kiln.hub.core import not_found
from kiln.protocol.errors import ImageError, ImageNotFound, StoreFull, Unauthorized
from kiln.protocol.messages import Blob, Manifest
from tests.hubcore import HubHarness
from tests.unit.test_hub_activities import enter, hub_of
from tests.unit.test_hub_images import GiB, blob, config_for, image, sha

A, B, C = Tenant(3), Tenant(4), Tenant(6)
ADMIN = Tenant(5, admin=True)
DEMAND = {"cpus": 1, "memory": 64 * 2**20}


def manifest_of(*layers: Blob) -> tuple[Manifest, bytes]:
    config = config_for(list(layers))
    return Manifest(config=Blob(digest=sha(config), size=len(config)), layers=list(layers)), config


# --- the catalog ----------------------------------------------------------------------------


def test_an_image_is_seen_only_by_its_owner_and_an_admin_by_tag_or_digest() -> None:
    catalog = Catalog(GiB)
    mine = image(catalog, blob("a", 10), tags=("app:1",), tenant=A)
    assert catalog.resolve("app:1", A) is mine and catalog.resolve(mine.digest, A) is mine
    for other in (B, OPEN):
        assert catalog.resolve("app:1", other) is None and catalog.resolve(mine.digest, other) is None
        assert catalog.hidden(mine.digest, other) and catalog.by_recency(other) == []
    assert not catalog.hidden(mine.digest, A) and not catalog.hidden(sha(b"nothing"), B), "nothing there: not hidden"
    assert catalog.resolve(mine.digest, ADMIN) is mine and catalog.resolve("app:1", ADMIN) is None, "tags are A's"
    assert catalog.by_recency(ADMIN) == [mine] and catalog.by_recency(A) == [mine]


def test_tags_live_in_their_owners_namespace() -> None:
    catalog = Catalog(GiB)
    a_image = image(catalog, blob("a", 10), tags=("app:1",), tenant=A)
    b_image = image(catalog, blob("b", 10), tags=("app:1",), tenant=B)
    assert catalog.resolve("app:1", A) is a_image and catalog.resolve("app:1", B) is b_image
    assert a_image.holdings[A.id].tags == {"app:1"}, "B's push under the same tag moved nothing of A's"
    newer = image(catalog, blob("c", 10), tags=("app:1",), tenant=A)
    assert catalog.resolve("app:1", A) is newer and a_image.holdings[A.id].tags == set()
    assert catalog.resolve("app:1", B) is b_image


def test_the_same_image_pushed_by_two_tenants_is_held_by_each() -> None:
    catalog = Catalog(GiB)
    layer = blob("shared-layer", 100)
    first = image(catalog, layer, tags=("a:1",), tenant=A, now=1.0)
    second = image(catalog, layer, tags=("b:1",), tenant=B, now=2.0)
    assert first is second and set(first.holdings) == {A.id, B.id}
    assert catalog.resolve("a:1", B) is None and catalog.resolve("b:1", A) is None
    seen_by_b = first.info(B)
    assert (seen_by_b.tags, seen_by_b.owners, seen_by_b.pushed, seen_by_b.shared) == (["b:1"], ["#4"], 2.0, [])
    catalog.use(first.digest, 5.0)
    assert (seen_by_b.in_use, first.info(B).in_use, first.info(B).last_used) == (0, 0, None), "A's use is A's"
    assert first.info(ADMIN).owners == ["#3", "#4"] and first.info(ADMIN).in_use == 1
    # B drops its hold: the image stays A's, with A's tags
    assert catalog.disown(first, B) == [] and catalog.resolve(first.digest, B) is None
    assert catalog.resolve("a:1", A) is first and catalog.resolve("b:1", B) is None
    catalog.unuse(first.digest)
    assert set(catalog.disown(first, A)) == {layer.digest, first.manifest.config.digest} and not catalog.images


def test_shares_let_others_see_and_revoke_takes_them_back() -> None:
    catalog = Catalog(GiB)
    mine = image(catalog, blob("a", 10), tags=("app:1",), tenant=A)
    catalog.share(mine, A, [B.id], public=False, revoke=False)
    assert catalog.resolve(mine.digest, B) is mine and catalog.resolve(mine.digest, C) is None
    assert catalog.resolve("app:1", B) is None, "a shared image is rented by digest: tags stay A's"
    seen = mine.info(B, name=lambda o: {3: "alice", 4: "bob"}.get(o or 0, "?"))
    assert (seen.tags, seen.owners, seen.shared, seen.public) == ([], ["alice"], None, False)
    assert mine.info(A).shared == ["#4"]
    catalog.share(mine, A, [], public=True, revoke=False)
    assert all(catalog.resolve(mine.digest, t) is mine for t in (B, C, OPEN)) and mine.info(C).public
    catalog.share(mine, A, [B.id], public=True, revoke=True)
    assert all(catalog.resolve(mine.digest, t) is None for t in (B, C, OPEN))


def test_only_an_owner_or_an_admin_removes_or_shares() -> None:
    catalog = Catalog(GiB)
    mine = image(catalog, blob("a", 10), tags=("app:1",), tenant=A)
    for ref in ("app:1", mine.digest):
        with pytest.raises(ImageNotFound, match="stores no image"):
            catalog.owned(ref, B, "remove")
    catalog.share(mine, A, [B.id], public=False, revoke=False)
    with pytest.raises(Unauthorized, match="only a tenant that pushed"):
        catalog.owned(mine.digest, B, "remove")
    assert catalog.owned(mine.digest, ADMIN, "share") is mine
    catalog.share(mine, ADMIN, [C.id], public=False, revoke=False)
    assert catalog.resolve(mine.digest, C) is mine, "an admin changes the owners' holds"
    catalog.disown(mine, ADMIN)
    assert not catalog.images and catalog.resolve("app:1", A) is None, "an admin's remove drops it outright"


def test_a_push_sends_every_blob_the_pusher_could_not_read() -> None:
    catalog = Catalog(GiB)
    base, secret = blob("base", 100), blob("secret", 50)
    a_image = image(catalog, base, secret, tenant=A)
    manifest, _ = manifest_of(base, secret, blob("mine", 5))
    wanted = catalog.wanted(manifest, B)
    assert wanted == [manifest.config, base, secret, manifest.layers[2]], "held for A: B sends it all the same"
    assert catalog.wanted(manifest, A) == [manifest.config, manifest.layers[2]]
    # a size declared wrong is judged by the bytes for B (as if absent), against the store for A
    wrong = Manifest(config=manifest.config, layers=[Blob(digest=secret.digest, size=51)])
    catalog.check(wrong, B)
    with pytest.raises(ImageError, match="has 50 bytes"):
        catalog.check(wrong, A)
    # B proves it has the bytes: its retried push skips them; shared images need no proof
    catalog.add_blob(secret, sender=B)
    assert secret not in catalog.wanted(manifest, B) and base in catalog.wanted(manifest, B)
    catalog.share(a_image, A, [C.id], public=False, revoke=False)
    assert catalog.wanted(manifest, C) == [manifest.config, manifest.layers[2]]


def test_a_config_alone_does_not_make_a_tenant_an_owner() -> None:
    catalog = Catalog(GiB)
    secret = blob("secret", 50)
    a_image = image(catalog, secret, tenant=A)
    mine = blob("mine", 5)
    config = config_for([secret])
    assert sha(config) == a_image.digest
    # B sends A's config (say it saw it) and a layer of its own, naming them one image
    claim = Manifest(config=a_image.manifest.config, layers=[mine])
    assert catalog.wanted(claim, B) == [claim.config, mine]
    catalog.add_blob(claim.config, sender=B)
    catalog.add_blob(mine, sender=B)
    with pytest.raises(ImageError) as refused:
        catalog.add_image(claim, config, (), 2.0, B)
    assert catalog.resolve(a_image.digest, B) is None and set(a_image.holdings) == {A.id}
    # ... and is refused in the very words it would be if A had never pushed it: no oracle
    empty = Catalog(GiB)
    empty.add_blob(claim.config, sender=B)
    empty.add_blob(mine, sender=B)
    with pytest.raises(ImageError) as absent:
        empty.add_image(claim, config, (), 2.0, B)
    assert refused.value.message == absent.value.message
    # A itself (who sees the image) is told what is wrong without its config read again
    with pytest.raises(ImageError, match="lists other layers"):
        catalog.add_image(claim, b"", (), 2.0, A)


def test_room_is_reserved_for_every_wanted_blob_as_if_the_store_lacked_it() -> None:
    catalog = Catalog(500)
    held = image(catalog, blob("held", 250), tenant=A)  # and a config of about 140 bytes
    catalog.use(held.digest, 1.0)  # in use: cannot be evicted
    manifest, _ = manifest_of(blob("held", 250))
    with pytest.raises(StoreFull, match="cannot make room"):
        catalog.begin(manifest, B)
    wanted, _ = catalog.begin(manifest, A)
    assert wanted == []


def test_a_push_naming_another_tenants_blob_does_not_keep_its_image_from_eviction() -> None:
    """B names A's layer (its digest is no secret: a base image's) in a push and sends nothing: A's
    image is evicted as if B had never pushed (else B holds A's images in the store, and learns
    from a refusal of its own whether A holds that layer). Once B sent the layer, it keeps it."""
    catalog = Catalog(1000)
    layer = blob("base", 400)
    old = image(catalog, layer, tenant=A, now=1.0)
    claim, _ = manifest_of(layer, blob("mine", 10))
    wanted, b_push = catalog.begin(claim, B)
    assert layer in wanted
    _, a_push = catalog.begin(manifest_of(blob("new", 700))[0], A)
    assert layer.digest in catalog.grow(a_push, 700), "A's old image makes room: B sent nothing of it"
    assert old.digest not in catalog.images and layer.digest not in catalog.blobs
    catalog.end(a_push)
    # B sends the layer; now its push counts on it, and no other push's room drops it
    catalog.grow(b_push, 400)
    catalog.add_blob(layer, 400, b_push)
    _, c_push = catalog.begin(manifest_of(blob("other", 300))[0], C)
    with pytest.raises(StoreFull):
        catalog.grow(c_push, 700)
    assert layer.digest in catalog.blobs
    catalog.end(c_push)
    catalog.end(b_push)
    _, d_push = catalog.begin(manifest_of(blob("last", 800))[0], C)
    assert layer.digest in catalog.grow(d_push, 800), "B's push over: its pins given back"


# --- the core: rent and market -----------------------------------------------------------------


def rent(hub: HubHarness, peer: int, rid: int, image_ref: str) -> dict[str, Any]:
    [(_, reply)] = hub.send(peer, {"type": "rent", "id": rid, "image": image_ref, "demand": DEMAND})
    return dict(reply)


def test_a_rent_and_a_market_query_see_the_store_as_the_requestors_tenant_does() -> None:
    catalog = Catalog(GiB)
    a_image = image(catalog, blob("a", 10), tags=("app:1",), tenant=A)
    b_image = image(catalog, blob("b", 10), tags=("app:1",), tenant=B)
    hub = hub_of(catalog)
    room = {"cpus": 8, "memory": 8 * GiB, "storage": GiB}
    p1 = enter(hub, "provider", "p1", "prov-p1", images=[a_image.digest, "busybox:latest"], resources=room)
    alice, bob = enter(hub, "requestor", "alice", "alice"), enter(hub, "requestor", "bob", "bob")
    assert rent(hub, alice, 1, "app:1")["image"] == a_image.digest, "A's tag runs A's image"
    assert rent(hub, bob, 1, "app:1")["image"] == b_image.digest, "B's tag runs B's image"
    nobody = sha(b"no such image")
    for ref in (a_image.digest, nobody):
        refused = {"type": "error", "re": 2, "code": "image_not_found", "message": not_found(ref)}
        assert rent(hub, bob, 2, ref) == refused, "the same answer: no oracle"
    # B's market: no provider holds A's image, and p1's listing does not show its digest
    [(_, info)] = hub.send(bob, {"type": "market", "id": 3, "image": a_image.digest})
    assert (info["providers"], info["matched"]) == ([], 0)
    [(_, info)] = hub.send(bob, {"type": "market", "id": 4})
    assert info["providers"][0]["images"] == ["busybox:latest"]
    [(_, info)] = hub.send(alice, {"type": "market", "id": 4, "image": "app:1"})
    assert [p["name"] for p in info["providers"]] == ["p1"] and a_image.digest in info["providers"][0]["images"]
    catalog.share(a_image, A, [B.id], public=False, revoke=False)
    assert rent(hub, bob, 5, a_image.digest)["image"] == a_image.digest, "shared: B rents it by digest"
    assert p1


def test_an_image_a_provider_offers_itself_is_rented_by_digest_as_if_no_tenant_had_pushed_it() -> None:
    """A provider of 1.4 offers in ``images`` only what its operator allows (what it loaded from
    the store is in ``cached``): A pushing that same image privately changes nothing B sees of it.
    A provider of 1.3 lists its copies of the store's images there too: B is never sent to it."""
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for catalog in (Catalog(GiB), Catalog(GiB)):
        pushed = image(catalog, blob("busybox", 10), tenant=A)
        if len(seen) == 1:
            catalog.disown(pushed, A)  # the second hub: nobody pushed it
        hub = hub_of(catalog)
        p1 = enter(hub, "provider", "p1", "prov-p1", version="1.4", images=["busybox:latest", pushed.digest])
        bob = enter(hub, "requestor", "bob", "bob")
        [(_, listing)] = hub.send(bob, {"type": "market", "id": 1})
        [(_, by_digest)] = hub.send(bob, {"type": "market", "id": 2, "image": pushed.digest})
        [(to, create)] = hub.send(bob, {"type": "rent", "id": 3, "image": pushed.digest, "demand": DEMAND})
        assert (to, create["type"], create.get("manifest")) == (p1, "create", None), create
        seen.append((listing, by_digest))
        if len(seen) == 1:
            p0 = enter(hub, "provider", "p2", "prov-p2", images=[pushed.digest])  # 1.3: maybe a copy of A's
            [(_, listing)] = hub.send(bob, {"type": "market", "id": 4})
            expected = [("p1", ["busybox:latest", pushed.digest]), ("p2", [])]
            assert [(p["name"], p["images"]) for p in listing["providers"]] == expected
            for n in range(5, 9):
                [(to, create)] = hub.send(bob, {"type": "rent", "id": n, "image": pushed.digest, "demand": DEMAND})
                assert to == p1, "never to a provider whose copy may be A's"
            assert p0
    assert seen[0] == seen[1], "B sees the same market whether A pushed it or not"


def test_a_requestor_of_1_3_gets_image_info_without_the_fields_of_1_4() -> None:
    from kiln.protocol.messages import ImageList

    catalog = Catalog(GiB)
    stored = image(catalog, blob("a", 10), tenant=OPEN)
    hub = hub_of(catalog)
    peer, _ = hub.hello("requestor", "old", version="1.3", token="shared")
    hub.send(peer, {"type": "list_images", "id": 1})
    reply = ImageList(type="image_list", re=1, images=[stored.info(OPEN)], used=1, limit=2)
    [sent] = [json.loads(a.data) for a in hub.core.store_reply(peer, reply) if hasattr(a, "data")]
    assert "owners" not in sent["images"][0] and "public" not in sent["images"][0]
