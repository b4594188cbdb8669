"""`make demo`: a local hub, two providers, the job's image pushed to the hub, the example jobs.

Builds the word-frequency job's image from ``examples/wordcount-image/`` (``FROM
kiln-busybox`` plus the job's ``word-freq`` script), starts a hub, pushes the image to the
hub's store and removes it from the local Docker engine, so that the providers (which share
this engine) lack it and load it from the hub when the job rents them. Then runs
``examples/word_freq.py`` on that image (with its progress bar on a terminal; its summary
shows the bytes each provider pulled) and ``examples/sha_search.py`` on kiln-busybox,
prints their results and the summaries, and stops everything again. The image the
providers loaded is removed at the end. Logs land in ``.demo/``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import kiln
from kiln.protocol.sizes import format_size
from kiln.testing import LocalCluster

HERE = Path(__file__).resolve().parent
IMAGE = "kiln-word-freq:1"
CONTEXT = HERE / "wordcount-image"
LABEL = "org.kiln.example=word-freq"
"""Set by the Dockerfile: every image with it was made by this demo (built, or loaded from its hub)."""


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # The classic builder: a Docker CLI that defaults to BuildKit may lack buildx.
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    done = subprocess.run(["docker", *args], capture_output=True, text=True, env=env, check=False)
    if check and done.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done


def remove_earlier_demo_images() -> None:
    """Remove the images earlier demos built or loaded (found by the Dockerfile's label), so
    this run's providers start without any layer of the job's image."""
    ids = docker("images", "--quiet", "--no-trunc", "--filter", f"label={LABEL}").stdout.split()
    for image_id in dict.fromkeys(ids):
        docker("rmi", "--force", image_id, check=False)


def build() -> str:
    """Build the job's image as :data:`IMAGE`; returns its id (``sha256:…``)."""
    docker("build", "--quiet", "--tag", IMAGE, str(CONTEXT))
    return docker("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()


async def push(url: str) -> kiln.PushedImage:
    async with kiln.connect(url, name="demo-push") as requestor:
        return await requestor.push_image(IMAGE)


def forget_locally(image_id: str) -> None:
    """Untag the built image; then no local image may have its id (a provider holding it would
    not load it from the hub)."""
    docker("rmi", IMAGE)
    if docker("image", "inspect", image_id, check=False).returncode == 0:
        tags = docker("image", "inspect", "--format", '{{join .RepoTags ", "}}', image_id).stdout.strip()
        raise SystemExit(f"{image_id} is still in the local engine (as {tags or 'an untagged image'}); remove it")


def main() -> None:
    remove_earlier_demo_images()
    image_id = build()
    print(f"built {IMAGE} ({image_id[:19]}) from {CONTEXT.relative_to(HERE.parent)}/")
    try:
        with LocalCluster(Path(".demo")) as cluster:
            url = cluster.start_hub()
            print(f"hub at {url}")
            pushed = asyncio.run(push(url))
            print(f"pushed {IMAGE} to the hub: {format_size(pushed.size)}, sent {format_size(pushed.sent_bytes)}")
            forget_locally(image_id)
            print(f"removed {IMAGE} from the local engine: the providers load it from the hub")
            for name in ("demo-p1", "demo-p2"):
                cluster.start_provider(name, cpus=1, memory="1GiB", wait=False)
            cluster.wait_for_providers({"demo-p1", "demo-p2"})
            print("providers demo-p1 and demo-p2 offer kiln-busybox:latest\n")
            subprocess.run([sys.executable, str(HERE / "word_freq.py"), "--hub", url, "--image", IMAGE], check=True)
            print()
            subprocess.run([sys.executable, str(HERE / "sha_search.py"), "--hub", url, "--space", "2000"], check=True)
    finally:
        docker("rmi", "--force", image_id, check=False)  # as the providers loaded it
    print("\nhub and providers stopped; logs in .demo/")


if __name__ == "__main__":
    main()
