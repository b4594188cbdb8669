"""Docker, wrapped: the only module in Kiln that imports ``docker``.

Everything here blocks; the provider calls it off the event loop, on the threads of
:class:`~kiln_provider.threads.Pools` (a transfer's chunks cross over in :mod:`kiln_provider.threads`).
One :class:`DockerAdapter` serves every activity of a provider, and its methods may run at
the same time on different containers (docker-py's client is a pooled ``requests`` session).

The life of an activity: :meth:`DockerAdapter.create` a container whose PID 1 is the agent
(``agent/kiln-agent.c``), attached to its stdin and stdout (commands go through that channel:
:mod:`kiln_provider.agent`, never ``docker exec``), then any number of
:meth:`~DockerAdapter.open_download` (then iterate its ``chunks`` and close it:
:mod:`kiln_provider.download`), and finally :meth:`~DockerAdapter.remove` (or the channel's
close: the agent exits and Docker removes the container). On start-up,
:meth:`~DockerAdapter.remove_stale` clears containers a crashed run left.

Storage: a container writes only to its volume (:mod:`kiln_provider.volume`), of the size
it rented, seen at ``/golem`` and ``/tmp``; the rest of its root filesystem is read-only.
:meth:`~DockerAdapter.create` makes the volume (``Started.volume``), and it goes with the
container in :meth:`~DockerAdapter.remove` and ``remove_stale``. Uploads are written into it
on the host by :func:`kiln_provider.volume.put_file`, not through Docker.

Images: :meth:`~DockerAdapter.images` lists them for the offer (which of them are offered is
:mod:`kiln_provider.offering`'s to say), :meth:`~DockerAdapter.layer_chains`
says which layers are here, :meth:`~DockerAdapter.load` feeds ``docker load`` a
:class:`~kiln_provider.image_archive.LoadArchive` as it is built, :meth:`~DockerAdapter.pull`
fetches from a registry, and :meth:`~DockerAdapter.remove_image` evicts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
from collections.abc import Collection, Generator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import docker
import docker.errors
import requests
from docker.types import LogConfig

from kiln_provider.agent_binary import find_agent
from kiln_provider.busybox import applets_of, busybox_context
from kiln_provider.download import CHUNK, GO_MODE_SYMLINK, DownloadStream, download_stream
from kiln_provider.errors import (
    BadPath,
    DockerFailed,
    ImageMissing,
    PathMissing,
    ProviderError,
    TransferBroken,
    VolumeFailed,
)
from kiln_provider.image_archive import LoadArchive
from kiln_provider.image_cache import default_data_dir
from kiln_provider.offering import OFFER_LABEL, LocalImage, repository
from kiln_provider.procfs import Cgroup, cgroup_cpu_seconds, cgroup_of, ids_of
from kiln_provider.volume import Volume, Volumes, made_for_user, normalised, volume_name

AGENT_IN_CONTAINER = "/.kiln-agent"
"""Where the agent is bind-mounted (read-only) in every task container, as its entrypoint."""
AGENT_DEBUG: Final = "KILN_AGENT_DEBUG"
"""The agent's debug switch (``agent/PROTOCOL.md``): every task container gets ``1`` when the
provider's own environment has ``KILN_AGENT_DEBUG=1`` (the agent then logs each frame on its
stderr, which :mod:`kiln_provider.agent` logs at DEBUG), else ``0``, so an image's ``ENV``
cannot turn it on. Commands still see the image's value, or none."""
LABEL_PROVIDER = "kiln.provider"
LABEL_ACTIVITY = "kiln.activity"
LABEL_BUSYBOX = "kiln.busybox.sha256"

MIN_MEMORY = 6 * 2**20
MIN_NANO_CPUS = 10_000_000
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
LOAD_TIMEOUT = 3600.0
"""Seconds ``docker load`` may take to answer once the archive is in (it registers the layers then)."""
REMOVE_WAIT = 30.0
"""How long a removal waits for the one Docker already began (when the agent exited) to finish."""


@dataclass(frozen=True)
class HostInfo:
    cpus: int
    memory: int
    arch: str


@dataclass(frozen=True)
class Engine:
    version: str
    api_version: str


@dataclass(frozen=True)
class ImageFacts:
    id: str
    """``sha256:<hex>``, the digest of the image's config."""
    size: int
    tags: tuple[str, ...]
    layers: tuple[str, ...]
    """The diff ids of its layers, base first."""
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def local(self) -> LocalImage:
        return LocalImage(self.id, self.tags, self.labels)


@dataclass(frozen=True)
class ContainerSpec:
    activity: str
    image: str
    cpus: float
    memory: int
    storage: int
    """Bytes its commands may write, in ``/golem`` and ``/tmp`` together (its volume's size)."""
    pids_limit: int = 256
    root: bool = False
    """Commands run as root (uid 0; the operator allowed it and the requestor asked)."""


NOBODY: Final = "65534:65534"
"""Who commands run as when the image names no ``USER``."""
ROOT: Final = "0:0"


@dataclass(frozen=True)
class Started:
    """A task container just started: its id, the socket attached to its agent, the
    environment commands start from, who they run as, and its volume."""

    id: str
    channel: socket.socket
    env: dict[str, str]
    uid: int
    gid: int
    """Who the agent, and every command, runs as."""
    volume: Volume
    """Where its ``/golem`` and ``/tmp`` are on the host (uploads go there: :func:`~kiln_provider.volume.put_file`)."""
    cgroup: Cgroup
    """Where its CPU time and memory are read (the provider's metrics and ``usage``)."""
    pid: int
    """Its agent's process id, on the host (whose network namespace is the container's)."""


def _own_socket(hijacked: Any) -> socket.socket:
    """A socket of our own on the connection docker-py hijacked, whose objects are then closed:
    the connection lives as long as the socket returned (its own duplicate of the descriptor)."""
    own = socket.socket(fileno=os.dup(hijacked.fileno()))
    for part in (getattr(hijacked, "_response", None), hijacked, getattr(hijacked, "_sock", None)):
        if part is not None:
            with suppress(Exception):
                part.close()
    return own


@contextmanager
def _engine(action: str) -> Iterator[None]:
    """Turn whatever docker-py raises into DockerFailed; provider errors raised inside pass through."""
    try:
        yield
    except docker.errors.APIError as e:
        raise DockerFailed(f"{action}: {e.explanation or e}") from e
    except (docker.errors.DockerException, requests.RequestException) as e:
        raise DockerFailed(f"{action}: Docker engine unreachable: {e}") from e


def _guarded(raw: Generator[bytes, None, None], path: str) -> Generator[bytes, None, None]:
    """Docker's chunks, with a broken connection reported as TransferBroken."""
    try:
        yield from raw
    except requests.RequestException as e:
        raise TransferBroken(f"download of {path} broke off: {e}") from e
    finally:
        raw.close()  # drops docker-py's response, which closes its connection


def _split_ref(ref: str) -> tuple[str, str | None]:
    """``repo[:tag]`` or ``repo@digest`` as docker-py's pull takes it (the tag may be a digest)."""
    if "@" in ref:
        repository, _, digest = ref.partition("@")
        return repository, digest
    name, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return ref, "latest"


def _environment(entries: list[str] | None) -> dict[str, str]:
    """An environment as Docker lists it (``NAME=value`` entries, or None) as a mapping."""
    return dict(item.partition("=")[::2] for item in entries or [])


def _container_name(provider: str, activity: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"kiln-{provider}-{activity}")[:200]


def _archive_name(path: str) -> str:
    if not normalised(path):
        raise BadPath(f"not a normalised absolute path: {path!r}")
    return path[1:]


class DockerAdapter:
    """The Docker engine, as a Kiln provider needs it. Errors are :class:`~kiln_provider.errors.ProviderError`s."""

    def __init__(
        self, provider: str, client: Any | None = None, agent: str | None = None, volumes: Path | None = None
    ) -> None:
        """``volumes``: the folder where containers' volumes live, the provider's own (default:
        ``volumes`` in :func:`~kiln_provider.image_cache.default_data_dir`); made when first needed."""
        self.provider = provider
        self._agent = agent
        with _engine("connect"):
            self._client: Any = client if client is not None else docker.from_env()
        self._api: Any = self._client.api
        self._chains: dict[str, tuple[str, ...]] = {}
        self.volumes = Volumes(volumes if volumes is not None else default_data_dir(provider) / "volumes")
        self._volumes: dict[str, Volume] = {}  # container id -> its volume

    @property
    def agent(self) -> str:
        """The agent binary task containers run (found when first needed: see :func:`find_agent`)."""
        if self._agent is None:
            self._agent = find_agent()
        return self._agent

    def host_info(self) -> HostInfo:
        with _engine("docker info"):
            info = self._api.info()
        arch = str(info["Architecture"])
        return HostInfo(cpus=int(info["NCPU"]), memory=int(info["MemTotal"]), arch=_ARCH.get(arch, arch))

    def engine(self) -> Engine:
        """The version of the Docker engine this adapter talks to."""
        with _engine("docker version"):
            version = self._api.version()
        return Engine(str(version.get("Version", "?")), str(version.get("ApiVersion", "?")))

    def storage_free(self) -> int:
        """The most storage to offer: what a new volume may take (see :meth:`Volumes.room`), and
        never more than the disk of Docker's root (images land there) has free."""
        with _engine("docker info"):
            root = self._api.info()["DockerRootDir"]
        return max(min(shutil.disk_usage(root).free, self.volumes.room()), 0)

    def images(self) -> list[LocalImage]:
        """Every local image (but intermediate ones), with its tags and labels."""
        with _engine("list images"):
            found = self._api.images()
        return [
            LocalImage(
                str(image["Id"]),
                tuple(tag for tag in image.get("RepoTags") or () if tag != "<none>:<none>"),
                dict(image.get("Labels") or {}),
            )
            for image in found
        ]

    def image(self, ref: str) -> ImageFacts | None:
        """What Docker knows of the image ``ref`` (a tag, or ``sha256:<id>``); None if it lacks it."""
        with _engine(f"inspect image {ref}"):
            try:
                found = self._api.inspect_image(ref)
            except docker.errors.ImageNotFound:
                return None
        return ImageFacts(
            id=str(found["Id"]),
            size=int(found.get("Size") or 0),
            tags=tuple(found.get("RepoTags") or ()),
            layers=tuple(found.get("RootFS", {}).get("Layers") or ()),
            labels=dict((found.get("Config") or {}).get("Labels") or {}),
        )

    def layer_chains(self) -> list[tuple[str, ...]]:
        """The layer chain (``RootFS.Layers``, base first) of every local image."""
        with _engine("list images"):
            ids = {str(image["Id"]) for image in self._api.images(all=True)}
        chains = []
        for image_id in ids:
            chain = self._chains.get(image_id)  # an id names its content: its chain never changes
            if chain is None:
                facts = self.image(image_id)
                if facts is None:
                    continue  # removed while we looked
                chain = self._chains[image_id] = facts.layers
            chains.append(chain)
        return chains

    def load(self, archive: LoadArchive) -> None:
        """``docker load`` the archive as it is built (streamed: a chunked request body, never
        held whole). Raises the archive's own failure (ImageCorrupt, TransferBroken, ...) if
        it had one: Docker then refused the truncated tar and loaded nothing. Does not check
        that the image arrived: ask :meth:`image`."""
        url = f"{self._api.base_url}/v{self._api.api_version}/images/load"
        headers = {"Content-Type": "application/x-tar"}
        try:
            with (
                _engine("load image"),
                self._api.post(
                    url, params={"quiet": "1"}, data=iter(archive), headers=headers, timeout=LOAD_TIMEOUT
                ) as response,
            ):
                try:
                    response.raise_for_status()
                except requests.HTTPError as e:
                    docker.errors.create_api_error_from_http_exception(e)  # raises the APIError
                for line in response.text.splitlines():
                    with suppress(ValueError):
                        message = json.loads(line)
                        if isinstance(message, dict) and message.get("error"):
                            raise DockerFailed(f"docker load: {message['error']}")
        except ProviderError:
            if archive.failure is None:
                raise
        if archive.failure is not None:
            raise archive.failure

    def images_in_use(self) -> set[str]:
        """The ids of the images some container (running or not, anyone's) was made from."""
        with _engine("list containers"):
            found = self._api.containers(all=True)
        return {str(container["ImageID"]) for container in found}

    def remove_image(self, image_id: str, tags: tuple[str, ...] = ()) -> bool:
        """Remove an image that no container uses, and its ``tags`` (its only ones); False if
        Docker refused (in use, or other tags). One already gone counts as removed."""
        with _engine(f"remove image {image_id[:19]}"):
            try:
                for ref in (*tags, image_id):
                    with suppress(docker.errors.ImageNotFound):
                        # Never forced: Docker refuses to remove what a container uses.
                        self._api.remove_image(ref, force=False, noprune=False)
            except docker.errors.APIError as e:
                if e.status_code == 409:
                    return False
                raise
        return True

    def pull(self, ref: str) -> ImageFacts:
        """Pull ``ref`` from its registry (``:latest`` when it names no tag); ImageMissing if the
        registry has no such image or cannot be reached."""
        repository, tag = _split_ref(ref)
        with _engine(f"pull {ref}"):
            try:
                for line in self._api.pull(repository, tag=tag, stream=True, decode=True):
                    if isinstance(line, dict) and line.get("error"):
                        raise ImageMissing(f"cannot pull {ref}: {line['error']}")
            except docker.errors.APIError as e:
                if e.status_code in (404, 500):
                    raise ImageMissing(f"cannot pull {ref}: {e.explanation or e}") from e
                raise
        facts = self.image(ref)
        if facts is None:
            raise ImageMissing(f"pulled {ref}, but Docker does not hold it")
        return facts

    def create(self, spec: ContainerSpec) -> Started:
        """Create and start a hardened container whose PID 1 is the agent, attached to its stdin and stdout.

        The agent (bind-mounted read-only) needs nothing of the image: an image holding one
        static program runs. The container's root filesystem is read-only: its commands write
        to its volume of ``spec.storage`` bytes, at ``/golem`` and ``/tmp`` (VolumeFailed when
        it cannot be made). When the attached channel closes the agent ends everything and
        exits, and Docker removes the container; :meth:`remove` then takes its volume. Images
        are never pulled here: a missing one is ImageMissing.
        """
        # Docker reads a zero limit as "no limit": never let one through.
        if spec.memory < MIN_MEMORY or int(spec.cpus * 1e9) < MIN_NANO_CPUS or spec.pids_limit < 1:
            raise DockerFailed(
                f"refusing limits that Docker would treat as none: cpus={spec.cpus}, memory={spec.memory}, "
                f"pids={spec.pids_limit} (at least 0.01 CPUs and 6 MiB)"
            )
        with _engine(f"inspect image {spec.image}"):
            try:
                config = self._api.inspect_image(spec.image)["Config"] or {}
            except docker.errors.ImageNotFound as e:
                raise ImageMissing(f"image {spec.image} is not on this provider") from e
        folders = made_for_user(config.get("WorkingDir") or "")
        volume = self.volumes.make(volume_name(spec.activity), spec.storage, folders)
        container_id: str | None = None
        channel: socket.socket | None = None
        try:
            with _engine(f"create container for {spec.activity}"):
                host_config = self._api.create_host_config(
                    network_mode="none",
                    cap_drop=["ALL"],
                    security_opt=["no-new-privileges"],
                    pids_limit=spec.pids_limit,
                    mem_limit=spec.memory,
                    memswap_limit=spec.memory,  # no swap beyond the memory limit
                    nano_cpus=int(spec.cpus * 1e9),
                    auto_remove=True,  # the agent exits when its channel closes: the container goes with it
                    read_only=True,  # what it writes goes to its volume, of the size it rented
                    binds={self.agent: {"bind": AGENT_IN_CONTAINER, "mode": "ro"}, **volume.binds},
                    # The attach stream is the agent's channel: every command's output passes it.
                    # Docker's default log driver would copy all of it into a JSON file on the
                    # host, unbounded (and that copy cost more CPU than the rest of the path).
                    log_config=LogConfig(type=LogConfig.types.NONE),
                )
                try:
                    created = self._api.create_container(
                        spec.image,
                        # The image's USER, else nobody: never root unless asked (or the image says so).
                        user=ROOT if spec.root else config.get("User") or NOBODY,
                        entrypoint=[AGENT_IN_CONTAINER],
                        command=[],
                        environment={AGENT_DEBUG: "1" if os.environ.get(AGENT_DEBUG) == "1" else "0"},
                        stdin_open=True,  # and, as docker-py sets then, StdinOnce: our close is its EOF
                        tty=False,
                        name=_container_name(self.provider, spec.activity),
                        labels={LABEL_PROVIDER: self.provider, LABEL_ACTIVITY: spec.activity},
                        host_config=host_config,
                    )
                except docker.errors.ImageNotFound as e:
                    raise ImageMissing(f"image {spec.image} is not on this provider") from e
                container_id = created["Id"]
                self._volumes[container_id] = volume  # from here on, remove() takes it with the container
                # Attached before it starts, so that the agent's first words are not lost.
                streams = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
                channel = _own_socket(self._api.attach_socket(container_id, params=streams))
                self._api.start(container_id)
                inspected = self._api.inspect_container(container_id)
                pid = int(inspected["State"]["Pid"])
                uid, gid = ids_of(pid)
                if not volume.seen_by(pid):
                    raise VolumeFailed(
                        "the container does not see its volume at /golem and /tmp: the Docker engine "
                        "runs in another mount namespace than the provider",
                        reason="unavailable",
                    )
                volume.give(uid, gid, folders)
        except BaseException:
            if channel is not None:
                channel.close()
            if container_id is None:
                self.volumes.remove(volume.name)
            else:
                with suppress(ProviderError):
                    self.remove(container_id)
            raise
        env = _environment(inspected["Config"]["Env"])
        image_env = _environment(config.get("Env"))
        # The debug switch is the agent's, not the commands': they start from the image's environment.
        if AGENT_DEBUG in image_env:
            env[AGENT_DEBUG] = image_env[AGENT_DEBUG]
        else:
            env.pop(AGENT_DEBUG, None)
        return Started(container_id, channel, env, uid, gid, volume, cgroup_of(pid), pid)

    def volume(self, container_id: str) -> Volume | None:
        """The volume of a container this adapter created (None: not one of them, or removed)."""
        return self._volumes.get(container_id)

    def remove(self, container_id: str) -> None:
        """Kill and remove the container, then its volume; one that is already gone is fine."""
        try:
            with _engine(f"remove container {container_id[:12]}"):
                try:
                    self._api.remove_container(container_id, force=True)
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as e:
                    if "already in progress" not in str(e.explanation):
                        raise
                    # Docker's auto-removal (the agent exited) got there first: wait until it is
                    # done, so that a container reported removed is no longer listed.
                    with suppress(docker.errors.NotFound):
                        self._api.wait(container_id, timeout=REMOVE_WAIT, condition="removed")
        finally:
            volume = self._volumes.pop(container_id, None)
            if volume is not None:
                self.volumes.remove(volume.name)

    def remove_stale(self, keep: Collection[str] = ()) -> int:
        """Remove every container labelled with this provider (left by an earlier run) but the ids
        in ``keep``, and every volume of its folder that is not of a container this adapter runs;
        returns how many containers."""
        with _engine("list containers"):
            listed = self._api.containers(all=True, filters={"label": f"{LABEL_PROVIDER}={self.provider}"})
        stale = [container["Id"] for container in listed if container["Id"] not in keep]
        # And the volumes of containers gone meanwhile (a create whose caller had left, say).
        seen = {container["Id"] for container in listed}
        stale += [container_id for container_id in list(self._volumes) if container_id not in seen | set(keep)]
        for container_id in stale:
            self.remove(container_id)
        self.volumes.sweep()
        return len(stale)

    def open_download(self, container_id: str, path: str) -> DownloadStream:
        """Start fetching ``path``; iterate the stream's ``chunks``, then close it.

        A symlink is followed (Docker resolves its whole chain for us), so a link to a
        file downloads the file's content; a link to a folder downloads the folder, whose
        tar entries then carry the target's name.
        """
        _archive_name(path)
        raw, stat = self._get_archive(container_id, path)
        if stat["mode"] & GO_MODE_SYMLINK and stat.get("linkTarget"):
            raw.close()
            try:
                raw, stat = self._get_archive(container_id, stat["linkTarget"])
            except PathMissing as e:
                raise PathMissing(f"{path} is a dangling link to {stat['linkTarget']}") from e
        return download_stream(_guarded(raw, path), int(stat["mode"]), path)

    def _get_archive(self, container_id: str, path: str) -> tuple[Generator[bytes, None, None], dict[str, Any]]:
        with _engine(f"download {path}"):
            try:
                raw, stat = self._api.get_archive(container_id, path, chunk_size=CHUNK)
            except docker.errors.NotFound as e:
                if "No such container" in str(e.explanation):
                    raise
                raise PathMissing(f"no such file or folder: {path}") from e
        return raw, stat

    def cpu_seconds(self, container_id: str) -> float:
        """CPU time the container has used so far, all its processes together.

        Read from the container's cgroup when this host shows it (a few ms); else from
        ``docker stats``, which answers concurrent callers only once a second.
        """
        with _engine(f"inspect {container_id[:12]}"):
            pid = self._api.inspect_container(container_id)["State"]["Pid"]
        if pid:
            used = cgroup_cpu_seconds(int(pid))
            if used is not None:
                return used
        with _engine(f"stats of {container_id[:12]}"):
            stats = self._api.stats(container_id, stream=False, one_shot=True)
        return float(stats["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9

    def build_busybox_image(self, tag: str = "kiln-busybox:latest", busybox: str = "/bin/busybox") -> str:
        """Build a ``FROM scratch`` image holding a static busybox; returns its id.

        Needs no registry and no network. Kept as is when ``tag`` already holds this busybox.
        It carries the label ``org.kiln.offer=<its tag's name>``: a provider offers it (an image built
        FROM it inherits the label, but is offered by it only under that same name).
        """
        with open(busybox, "rb") as f:
            program = f.read()
        digest = hashlib.sha256(program).hexdigest()  # names the program the image holds: built again if it changed
        with _engine(f"inspect image {tag}"):
            try:
                existing = self._api.inspect_image(tag)
            except docker.errors.ImageNotFound:
                existing = None
        labels = {LABEL_BUSYBOX: digest, OFFER_LABEL: repository(tag)}
        if existing is not None and (existing["Config"].get("Labels") or {}).items() >= labels.items():
            return str(existing["Id"])
        context = busybox_context(program, applets_of(busybox))
        with _engine(f"build image {tag}"):
            for line in self._api.build(
                fileobj=context, custom_context=True, tag=tag, rm=True, labels=labels, decode=True
            ):
                if "error" in line:
                    raise DockerFailed(f"build of {tag} failed: {line['error']}")
            return str(self._api.inspect_image(tag)["Id"])
