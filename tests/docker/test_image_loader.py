"""Loading images blob by blob (the provider's side of the image store), against the real engine.

The blobs come from a real ``docker save``; the image is removed from Docker before each
load, and every image a test makes is removed in teardown.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.protocol.messages import Blob, Manifest
from kiln_provider.docker_adapter import DockerAdapter
from kiln_provider.errors import ImageCorrupt, ImageTooLarge, TransferBroken
from kiln_provider.image_archive import LoadArchive, held_layers, manifest_json, wanted
from tests.images import SavedImage, build, has, image_of, remove, save, sparse_layer

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

BASE = "kiln-busybox:latest"


def blob(n: int, size: int = 10) -> Blob:
    return Blob(digest=f"sha256:{n:064x}", size=size)


# --- pure: what to ask for -------------------------------------------------------------


def test_held_layers_is_the_longest_shared_prefix() -> None:
    chain = ["a", "b", "c"]
    assert held_layers(chain, []) == 0
    assert held_layers(chain, [["b", "c"], ["a", "x"]]) == 1
    assert held_layers(chain, [["a", "b"], ["a"], ["a", "b", "c", "d"]]) == 3


def test_wanted_is_the_config_then_missing_layers_once() -> None:
    manifest = Manifest(config=blob(0), layers=[blob(1), blob(2), blob(1), blob(3), blob(3)])
    assert wanted(manifest, 0) == [blob(0), blob(1), blob(2), blob(3)]
    # Layer 1 comes again after the held ones: Docker needs its file there (its chain differs).
    assert wanted(manifest, 2) == [blob(0), blob(1), blob(3)]
    assert wanted(manifest, 5) == [blob(0)]


def test_manifest_json_names_every_layer_and_no_tag() -> None:
    manifest = Manifest(config=blob(0), layers=[blob(1), blob(2)])
    config, first, second = (b"blobs/sha256/" + b"0" * 63 + last for last in (b"0", b"1", b"2"))
    expected = b'[{"Config": "%s", "RepoTags": [], "Layers": ["%s", "%s"]}]' % (config, first, second)
    assert manifest_json(manifest) == expected


# --- against Docker ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter() -> DockerAdapter:
    return DockerAdapter("test-loader")


@pytest.fixture
def scratch_image(tmp_path: Path, images: list[str]) -> SavedImage:
    """An image of two layers of its own, saved, then removed from Docker."""
    image_id = build(tmp_path, layers=2)
    images.append(image_id)
    saved = save(image_id, tmp_path)
    remove(image_id)
    assert not has(image_id)
    return saved


@pytest.fixture
def busybox_child(tmp_path: Path, images: list[str], busybox_image: str) -> SavedImage:
    """An image FROM the busybox test image (whose layer stays), saved, then removed."""
    image_id = build(tmp_path, base=busybox_image, layers=1)
    images.append(image_id)
    saved = save(image_id, tmp_path)
    remove(image_id)
    return saved


def load(
    adapter: DockerAdapter, image: SavedImage, stream: Iterator[bytes] | None = None, limit: int | None = None
) -> LoadArchive:
    held = held_layers([layer.digest for layer in image.manifest.layers], adapter.layer_chains())
    blobs = wanted(image.manifest, held)
    archive = LoadArchive(image.manifest, blobs, stream if stream is not None else image.stream(blobs), limit)
    adapter.load(archive)
    return archive


def test_loads_an_image_docker_lacks(adapter: DockerAdapter, scratch_image: SavedImage) -> None:
    archive = load(adapter, scratch_image)
    assert archive.received == scratch_image.size
    facts = adapter.image(scratch_image.id)
    assert facts is not None
    assert facts.tags == ()  # known by its id only
    assert list(facts.layers) == [layer.digest for layer in scratch_image.manifest.layers]


def test_sends_only_the_layers_docker_lacks(adapter: DockerAdapter, busybox_child: SavedImage) -> None:
    chain = [layer.digest for layer in busybox_child.manifest.layers]
    assert held_layers(chain, adapter.layer_chains()) == 1  # busybox's own layer
    archive = load(adapter, busybox_child)
    assert archive.received == busybox_child.manifest.config.size + busybox_child.manifest.layers[1].size
    assert has(busybox_child.id)


def test_only_the_config_when_every_layer_is_here(
    adapter: DockerAdapter, tmp_path: Path, images: list[str], busybox_image: str
) -> None:
    tag = f"kiln-test-parent:{secrets.token_hex(4)}"  # tagged, or removing the child would prune it
    parent = build(tmp_path, base=busybox_image, tag=tag)
    images.append(tag)
    child_dir = tmp_path / "child"
    child_dir.mkdir()
    (child_dir / "Dockerfile").write_text(f"FROM {parent}\nLABEL kiln.test={secrets.token_hex(8)}\n")
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    built = subprocess.run(
        ["docker", "build", "-q", str(child_dir)], check=True, capture_output=True, text=True, env=env
    )
    child = built.stdout.strip()
    images.append(child)
    saved = save(child, tmp_path)
    remove(child)
    chain = [layer.digest for layer in saved.manifest.layers]
    assert held_layers(chain, adapter.layer_chains()) == 2
    assert wanted(saved.manifest, 2) == [saved.manifest.config]
    archive = load(adapter, saved)
    assert archive.received == saved.manifest.config.size
    assert has(saved.id)


@pytest.mark.parametrize("which", ["config", "base layer", "top layer"])
def test_a_corrupt_blob_loads_nothing(adapter: DockerAdapter, scratch_image: SavedImage, which: str) -> None:
    digest = {
        "config": scratch_image.manifest.config.digest,
        "base layer": scratch_image.manifest.layers[0].digest,
        "top layer": scratch_image.manifest.layers[1].digest,
    }[which]
    data = bytearray(scratch_image.blobs[digest])
    data[-1] ^= 1  # the very last byte: everything before it passes
    corrupt = SavedImage(scratch_image.id, scratch_image.manifest, {**scratch_image.blobs, digest: bytes(data)})
    with pytest.raises(ImageCorrupt, match=digest):
        load(adapter, corrupt)
    assert not has(scratch_image.id)


def test_a_short_stream_loads_nothing(adapter: DockerAdapter, scratch_image: SavedImage) -> None:
    blobs = wanted(scratch_image.manifest, 0)
    cut = b"".join(scratch_image.stream(blobs))[:-1]
    with pytest.raises(TransferBroken, match="ended after"):
        load(adapter, scratch_image, iter([cut]))
    assert not has(scratch_image.id)


def test_a_stream_cut_between_blobs_loads_nothing(adapter: DockerAdapter, scratch_image: SavedImage) -> None:
    blobs = wanted(scratch_image.manifest, 0)
    whole = b"".join(scratch_image.stream(blobs))
    cut = whole[: blobs[0].size + blobs[1].size]  # the config and the base layer, whole
    with pytest.raises(TransferBroken):
        load(adapter, scratch_image, iter([cut]))
    assert not has(scratch_image.id)


def test_bytes_past_the_blobs_load_nothing(adapter: DockerAdapter, scratch_image: SavedImage) -> None:
    blobs = wanted(scratch_image.manifest, 0)
    with pytest.raises(TransferBroken, match="ran past"):
        load(adapter, scratch_image, iter([*scratch_image.stream(blobs), b"x"]))
    assert not has(scratch_image.id)


def test_a_failing_source_loads_nothing(adapter: DockerAdapter, scratch_image: SavedImage) -> None:
    blobs = wanted(scratch_image.manifest, 0)

    def failing() -> Iterator[bytes]:
        yield from list(scratch_image.stream(blobs, chunk=1000))[:3]
        raise TransferBroken("no data for 30 s")

    with pytest.raises(TransferBroken, match="no data"):
        load(adapter, scratch_image, failing())
    assert not has(scratch_image.id)
    # The pooled connection is usable afterwards.
    started = time.monotonic()
    assert adapter.image(BASE) is not None
    assert time.monotonic() - started < 5


# --- expansion: each layer metered as it goes into docker load ---------------------------------


def test_a_bomb_past_the_limit_is_cut_before_docker_extracts_it(adapter: DockerAdapter, tmp_path: Path) -> None:
    bomb = image_of(sparse_layer(tmp_path))  # 1 GiB once extracted, a few KiB of tar
    with pytest.raises(ImageTooLarge, match="--image-cache"):
        load(adapter, bomb, limit=256 * 2**20)
    assert not has(bomb.id)


def test_a_layer_that_expands_past_the_hubs_measure_is_corrupt(adapter: DockerAdapter, tmp_path: Path) -> None:
    bomb = image_of(sparse_layer(tmp_path, 64 * 2**20), expanded=4096)
    with pytest.raises(ImageCorrupt, match="the hub measured"):
        load(adapter, bomb)
    assert not has(bomb.id)


def test_the_archive_counts_what_its_layers_expand_to(adapter: DockerAdapter, scratch_image: SavedImage) -> None:
    archive = load(adapter, scratch_image, limit=2**30)
    facts = adapter.image(scratch_image.id)
    assert facts is not None
    # Docker's size counts the files; the meter counts them in whole 4 KiB blocks, at least one each.
    assert facts.size <= archive.expanded < facts.size + 4096 * 4096
