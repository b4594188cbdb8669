"""Which local images a provider offers (kiln_provider.offering): the rules alone, no Docker."""

from __future__ import annotations

from kiln_provider.offering import OFFER_LABEL, Allowed, Loaded, LocalImage

A, B, C, D, E = (f"sha256:{c * 64}" for c in "abcde")
LABELLED = {OFFER_LABEL: "kiln-busybox"}
BUSYBOX = {OFFER_LABEL: "busybox"}


def test_only_labelled_or_matching_tagged_images_are_offered() -> None:
    allowed = Allowed(("myapp:*", "team/*", "tool"))
    host = [
        LocalImage(A, ("kiln-busybox:latest",), LABELLED),
        LocalImage(B, ("myapp:1", "secret:1")),
        LocalImage(C, ("postgres:16",)),
        LocalImage(D, (), LABELLED),  # untagged: nobody's to offer, label or not
        LocalImage(E, ("team/app:2", "tool:latest", "tool-x:1")),
    ]
    images, cached = allowed.offer(host, Loaded())
    assert images == sorted(["kiln-busybox:latest", A, "myapp:1", B, "team/app:2", "tool:latest", E])
    assert cached == []
    assert Allowed().offer(host, Loaded())[0] == sorted(["kiln-busybox:latest", A])
    assert Allowed(("myapp:*",)).offer(
        host[1:2],
        Loaded(),
    )[0] == ["myapp:1", B]


def test_what_was_loaded_from_the_store_is_cached_only_and_what_was_pulled_is_offered() -> None:
    host = [LocalImage(A, (), LABELLED), LocalImage(B, ("registry:5000/x:1", "mine:1"))]
    loaded = Loaded(stored=frozenset({A, C}), pulled={B: ("registry:5000/x:1",)})
    assert Allowed().offer(host, loaded) == (["registry:5000/x:1", B], [A])


def test_a_create_without_a_manifest_may_run_only_what_is_offered_under_that_name() -> None:
    allowed = Allowed(("myapp:*",))
    image = LocalImage(B, ("myapp:1", "secret:1"))
    assert allowed.lets_run("myapp:1", image, Loaded())
    assert allowed.lets_run(B, image, Loaded())
    assert not allowed.lets_run("secret:1", image, Loaded())
    assert not allowed.lets_run(A, LocalImage(A, (), LABELLED), Loaded(stored=frozenset({A})))
    assert Allowed().lets_run("busybox", LocalImage(C, ("busybox:latest",), BUSYBOX), Loaded())


def test_a_label_inherited_from_the_base_image_offers_nothing_of_the_child() -> None:
    # Built FROM kiln-busybox, a tenant's image carries its label, naming kiln-busybox: not offered.
    child = LocalImage(B, ("alice-app:1",), LABELLED)
    assert Allowed().offer([child], Loaded()) == ([], [])
    assert not Allowed().lets_run("alice-app:1", child, Loaded())
    assert not Allowed().lets_run(B, child, Loaded())
    # An operator who tags it under the labelled name, or allows its name, offers it.
    assert Allowed().offer([LocalImage(B, ("kiln-busybox:mine",), LABELLED)], Loaded())[0] == ["kiln-busybox:mine", B]
    assert Allowed(("alice-app",)).offer([child], Loaded())[0] == ["alice-app:1", B]
