"""Test images for the image store, and their blobs as a ``docker save`` archive holds them.

Every image made here has content of its own (random bytes), so its id and its top layer
are new to the engine: removing it touches nothing another test (or worktree) uses.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kiln.protocol.messages import Blob, Manifest


@dataclass(frozen=True)
class SavedImage:
    """An image as the hub would store it: its manifest and its blobs' bytes by digest."""

    id: str
    manifest: Manifest
    blobs: dict[str, bytes]

    def stream(self, blobs: list[Blob], chunk: int = 100_000) -> Iterator[bytes]:
        """The blobs concatenated, in chunks that do not line up with the blobs' ends."""
        data = b"".join(self.blobs[b.digest] for b in blobs)
        for start in range(0, len(data), chunk):
            yield data[start : start + chunk]

    @property
    def size(self) -> int:
        return self.manifest.config.size + sum(layer.size for layer in self.manifest.layers)

    def write_archive(self, path: Path) -> Path:
        """Write it as ``docker save`` does (the legacy layout), for a push from a file."""
        config = self.manifest.config.digest[7:] + ".json"
        layers = [f"{layer.digest[7:]}/layer.tar" for layer in self.manifest.layers]
        index = json.dumps([{"Config": config, "RepoTags": [], "Layers": layers}]).encode()
        members = [("manifest.json", index), (config, self.blobs[self.manifest.config.digest])]
        members += [(name, self.blobs[layer.digest]) for name, layer in zip(layers, self.manifest.layers, strict=True)]
        with tarfile.open(path, "w") as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path


OFFER_LABEL = "org.kiln.offer"
"""A tagged test image carries ``org.kiln.offer=<its tag's name>`` (unless built with ``offer=False``):
providers offer it (an inherited label names the base's tags, not this image's)."""


def build(
    tmp: Path, base: str = "scratch", layers: int = 1, size: int = 4096, tag: str | None = None, *, offer: bool = True
) -> str:
    """Build an image ``FROM base`` with ``layers`` new layers of ``size`` random bytes each; returns its id.

    With ``offer`` and a ``tag`` it carries :data:`OFFER_LABEL` naming that tag's name.
    """
    context = tmp / f"ctx-{secrets.token_hex(4)}"
    context.mkdir()
    named = tag.rpartition(":")[0] if tag is not None and ":" in tag.rpartition("/")[2] else tag
    lines = [f"FROM {base}", *([f"LABEL {OFFER_LABEL}={named}"] if offer and named else [])]
    for n in range(layers):
        (context / f"f{n}").write_bytes(secrets.token_bytes(size))
        lines.append(f"COPY f{n} /data/f{n}")
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    iidfile = context / "iid"
    command = ["docker", "build", "-q", "--iidfile", str(iidfile), str(context)]
    if tag is not None:
        command[2:2] = ["-t", tag]
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    return iidfile.read_text().strip()


def save(image: str, tmp: Path) -> SavedImage:
    """``docker save`` the image and read its blobs (the legacy layout Docker 20.10 writes)."""
    archive = tmp / f"save-{secrets.token_hex(4)}.tar"
    subprocess.run(["docker", "save", "-o", str(archive), image], check=True, capture_output=True)
    with tarfile.open(archive) as tar:
        index = json.loads(_read(tar, "manifest.json"))[0]
        config = _read(tar, index["Config"])
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
        blobs = {"sha256:" + hashlib.sha256(config).hexdigest(): config}
        layers = []
        for name, diff_id in zip(index["Layers"], diff_ids, strict=True):
            data = _read(tar, name)
            assert "sha256:" + hashlib.sha256(data).hexdigest() == diff_id
            blobs[diff_id] = data
            layers.append(Blob(digest=diff_id, size=len(data)))
    config_blob = Blob(digest="sha256:" + hashlib.sha256(config).hexdigest(), size=len(config))
    archive.unlink()
    return SavedImage(config_blob.digest, Manifest(config=config_blob, layers=layers), blobs)


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    f = tar.extractfile(name)
    assert f is not None
    return f.read()


def remove(*refs: str) -> None:
    subprocess.run(["docker", "rmi", "-f", *refs], capture_output=True, check=False)


def has(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True, check=False).returncode == 0


def sparse_layer(tmp: Path, size: int = 2**30) -> bytes:
    """The issue's expansion bomb as a layer: ``truncate -s 1G bomb; tar --sparse --format=posix -cf layer.tar bomb``
    (a few KiB of tar that Docker writes out as ``size`` bytes)."""
    folder = tmp / f"bomb-{secrets.token_hex(4)}"
    folder.mkdir()
    with open(folder / "bomb", "wb") as f:
        f.truncate(size)
    tar = ["tar", "--sparse", "--format=posix", "-C", str(folder), "-cf", "-", "bomb"]
    return subprocess.run(tar, check=True, capture_output=True).stdout


def noise_layer(size: int) -> bytes:
    """A layer: a tar of one file of ``size`` random bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("noise")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return out.getvalue()


def image_of(*layers: bytes, expanded: int | None = None) -> SavedImage:
    """An image of these layer tars (linux/amd64, nothing to run), as the hub would store it;
    ``expanded``: what the manifest says its last layer expands to."""
    digests = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    rootfs = {"type": "layers", "diff_ids": digests}
    comment = secrets.token_hex(8)  # a new image id each time
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": rootfs, "comment": comment}
    ).encode()
    config_blob = Blob(digest="sha256:" + hashlib.sha256(config).hexdigest(), size=len(config))
    blobs = [Blob(digest=d, size=len(layer)) for d, layer in zip(digests, layers, strict=True)]
    if expanded is not None:
        blobs[-1] = blobs[-1].model_copy(update={"expanded": expanded})
    contents = {config_blob.digest: config, **dict(zip(digests, layers, strict=True))}
    return SavedImage(config_blob.digest, Manifest(config=config_blob, layers=blobs), contents)
