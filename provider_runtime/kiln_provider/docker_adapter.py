"""Docker, wrapped: the only module in Kiln that imports ``docker``.

Everything here blocks; the provider calls it off the event loop with ``asyncio.to_thread``.
One :class:`DockerAdapter` serves every activity of a provider, and its methods may run at
the same time on different containers (docker-py's client is a pooled ``requests`` session).

The life of an activity: :meth:`DockerAdapter.create` a container whose PID 1 is the agent
(``agent/kiln-agent.c``), attached to its stdin and stdout (commands go through that channel:
:mod:`kiln_provider.agent`, never ``docker exec``), then any number of
:meth:`~DockerAdapter.put_file` and :meth:`~DockerAdapter.open_download` (then iterate
``chunks`` and :meth:`DownloadStream.close`), and finally :meth:`~DockerAdapter.remove`
(or the channel's close: the agent exits and Docker removes the container). On start-up,
:meth:`~DockerAdapter.remove_stale` clears containers a crashed run left.

Storage: a container writes only to its volume (:mod:`kiln_provider.volume`), of the size
it rented, seen at ``/golem`` and ``/tmp``; the rest of its root filesystem is read-only.
:meth:`~DockerAdapter.put_file` writes into the volume on the host, not through Docker; the
volume goes with the container in :meth:`~DockerAdapter.remove` and ``remove_stale``.

Images: :meth:`~DockerAdapter.images` lists them for the offer (which of them are offered is
:mod:`kiln_provider.offering`'s to say), :meth:`~DockerAdapter.layer_chains`
says which layers are here, :meth:`~DockerAdapter.load` feeds ``docker load`` a
:class:`~kiln_provider.image_archive.LoadArchive` as it is built, :meth:`~DockerAdapter.pull`
fetches from a registry, and :meth:`~DockerAdapter.remove_image` evicts.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import shutil
import socket
import struct
import subprocess
import tarfile
from collections.abc import Collection, Generator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import docker
import docker.errors
import requests
from docker.types import LogConfig

from kiln_provider.errors import (
    BadPath,
    DockerFailed,
    ImageMissing,
    NotAFile,
    PathMissing,
    ProviderError,
    TransferBroken,
    VolumeFailed,
)
from kiln_provider.image_archive import LoadArchive
from kiln_provider.image_cache import default_data_dir
from kiln_provider.offering import OFFER_LABEL, LocalImage, repository
from kiln_provider.volume import Volume, Volumes, under_mounts, volume_name, write_file

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

CHUNK = 256 * 1024
MIN_MEMORY = 6 * 2**20
MIN_NANO_CPUS = 10_000_000
_GO_MODE_DIR = 1 << 31  # Go's os.ModeDir, as Docker reports it in the archive stat
_GO_MODE_SYMLINK = 1 << 27
_GO_SPECIAL = ((1 << 23, 0o4000), (1 << 22, 0o2000), (1 << 20, 0o1000))  # setuid, setgid, sticky
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
AGENT_MACHINES: Final = {"x86_64": 62, "aarch64": 183}
"""The architectures a kiln wheel carries an agent for, and the ELF ``e_machine`` of each."""
_MACHINE_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}
_PT_INTERP = 3
"""The program header of an ELF that asks for a dynamic loader."""
_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"
LOAD_TIMEOUT = 3600.0
"""Seconds ``docker load`` may take to answer once the archive is in (it registers the layers then)."""
PULL_TIMEOUT = 3600.0
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
WORK_FOLDERS: Final = ("/golem", "/golem/input", "/golem/output", "/golem/work")
"""Folders every task container has, owned by the user its commands run as (on its volume,
like everything under ``/golem`` and ``/tmp``: both start empty, whatever the image holds there)."""


@dataclass(frozen=True)
class Started:
    """A task container just started: its id, the socket attached to its agent, and the
    environment commands start from."""

    id: str
    channel: socket.socket
    env: dict[str, str]
    uid: int
    gid: int
    """Who the agent, and every command, runs as."""


def _own_socket(hijacked: Any) -> socket.socket:
    """A socket of our own on the connection docker-py hijacked, whose objects are then closed:
    the connection lives as long as the socket returned (its own duplicate of the descriptor)."""
    own = socket.socket(fileno=os.dup(hijacked.fileno()))
    for part in (getattr(hijacked, "_response", None), hijacked, getattr(hijacked, "_sock", None)):
        if part is not None:
            with suppress(Exception):
                part.close()
    return own


def cgroup_cpu_file(pid: int) -> tuple[Literal["v1", "v2"], Path] | None:
    """Where the CPU time of the cgroup process ``pid`` is in can be read here: cgroup v2's
    ``cpu.stat`` or v1's ``cpuacct.usage`` (what :meth:`DockerAdapter.cpu_seconds` reads first)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if controllers == "":  # cgroup v2: one hierarchy
                stat = Path(f"/sys/fs/cgroup{path}/cpu.stat")
                return ("v2", stat) if os.access(stat, os.R_OK) else None
            if "cpuacct" in controllers.split(","):
                for mount in ("cpuacct", "cpu,cpuacct", controllers):
                    usage = Path(f"/sys/fs/cgroup/{mount}{path}/cpuacct.usage")
                    if os.access(usage, os.R_OK):
                        return "v1", usage
    except (OSError, ValueError):
        pass
    return None


def _cgroup_cpu_seconds(pid: int) -> float | None:
    """The CPU time of the cgroup process ``pid`` is in (cgroup v1's cpuacct or v2), if readable here."""
    found = cgroup_cpu_file(pid)
    try:
        if found is not None and found[0] == "v2":
            with open(found[1]) as f:
                fields = dict(row.split() for row in f if row.strip())
            return int(fields["usage_usec"]) / 1e6
        if found is not None:
            return int(found[1].read_text()) / 1e9
    except (OSError, ValueError, KeyError):
        pass
    return None


def _ids_of(pid: int) -> tuple[int, int]:
    """The uid and gid process ``pid`` runs as (seen from the host: the provider runs beside dockerd)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])
    except (OSError, KeyError, ValueError, IndexError) as e:
        raise DockerFailed(f"cannot tell who the container's agent (pid {pid}) runs as: {e}") from e


def machine_arch() -> str:
    """This machine's architecture as agent binaries are named: ``platform.machine()``, with
    ``arm64`` as ``aarch64`` and ``amd64`` as ``x86_64``."""
    machine = platform.machine().lower()
    return _MACHINE_ALIASES.get(machine, machine)


def find_agent(arch: str | None = None) -> str:
    """The agent binary to mount in task containers, for ``arch`` (default: :func:`machine_arch`).

    Looks in order at ``$KILN_AGENT`` (an override: when set, it must name an executable static
    ELF for ``arch``), the agent a platform wheel installed (``kiln_provider/bin/kiln-agent-<arch>``),
    and the one ``make agent`` builds in a source tree (``agent/build/kiln-agent``).
    DockerFailed, naming what was looked at and why it does not do, if none fits.
    """
    arch = arch or machine_arch()
    override = os.environ.get("KILN_AGENT", "")
    if override:
        if problem := _unfit_agent(Path(override), arch):
            raise DockerFailed(f"$KILN_AGENT names {override}, which {problem}")
        return os.path.realpath(override)
    here = Path(__file__).resolve().parent
    places = (
        (here / "bin" / f"kiln-agent-{arch}", "from a platform wheel"),
        (here.parent.parent / "agent" / "build" / "kiln-agent", "from make agent in a source tree"),
    )
    looked = []
    for path, source in places:
        problem = _unfit_agent(path, arch)
        if problem is None:
            return os.path.realpath(path)
        looked.append(f"{path} ({source}) {problem}")
    if arch not in AGENT_MACHINES:
        looked.append(f"kiln builds the agent for {' and '.join(AGENT_MACHINES)} only")
    remedy = (
        f"install kiln from a wheel built for {arch}, run `make agent` in the source tree,"
        " or name the binary in $KILN_AGENT"
    )
    raise DockerFailed(f"no kiln-agent binary for {arch}: $KILN_AGENT is not set, {', and '.join(looked)}; {remedy}")


def _unfit_agent(path: Path, arch: str) -> str | None:
    """Why ``path`` cannot be the agent for ``arch``, or None if it can: it must be a static
    64-bit ELF for ``arch`` (it runs as PID 1 in images that have no libc)."""
    if not path.exists():
        return "does not exist"
    if not path.is_file() or not os.access(path, os.X_OK):
        return "is not an executable file"
    try:
        with path.open("rb") as f:
            header = f.read(64)
            if len(header) < 64 or header[:4] != b"\x7fELF":
                return "is not an ELF binary"
            if header[4] != 2:  # EI_CLASS
                return "is not a 64-bit ELF binary"
            order = "<" if header[5] == 1 else ">"
            (machine,) = struct.unpack_from(order + "H", header, 18)  # e_machine
            if machine != AGENT_MACHINES.get(arch):
                names = {number: name for name, number in AGENT_MACHINES.items()}
                return f"is built for {names.get(machine, f'ELF machine {machine}')}, not {arch}"
            (table_at,) = struct.unpack_from(order + "Q", header, 32)  # e_phoff
            size, count = struct.unpack_from(order + "HH", header, 54)  # e_phentsize, e_phnum
            f.seek(table_at)
            table = f.read(size * count)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    kinds = [struct.unpack_from(order + "I", table, at)[0] for at in range(0, len(table) - 3, max(size, 4))]
    if _PT_INTERP in kinds:
        return "is linked dynamically (it runs in images that have no libc): build it static"
    return None


@dataclass
class DownloadStream:
    """What :meth:`DockerAdapter.open_download` found. Iterate ``chunks``, then call :meth:`close`.

    For ``kind="file"`` the chunks are the file's bytes (``size`` of them); for ``kind="dir"``
    they are Docker's tar stream, whose entries start with the folder's own name.
    """

    kind: Literal["file", "dir"]
    size: int | None
    mode: int
    chunks: Iterator[bytes]

    def close(self) -> None:
        """Stop the transfer and free the connection; idempotent. Not while another thread is in ``next()``."""
        if isinstance(self.chunks, Generator):
            self.chunks.close()


@contextmanager
def _engine(action: str) -> Iterator[None]:
    """Turn whatever docker-py raises into DockerFailed; provider errors raised inside pass through."""
    try:
        yield
    except docker.errors.APIError as e:
        raise DockerFailed(f"{action}: {e.explanation or e}") from e
    except (docker.errors.DockerException, requests.RequestException) as e:
        raise DockerFailed(f"{action}: Docker engine unreachable: {e}") from e


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks, for ``tarfile``'s stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")  # a view, so that taking a piece copies nothing

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            piece = next(self._chunks, None)
            if piece is None:
                return 0
            self._pending = memoryview(piece)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _guarded(raw: Generator[bytes, None, None], path: str) -> Generator[bytes, None, None]:
    """Docker's chunks, with a broken connection reported as TransferBroken."""
    try:
        yield from raw
    except requests.RequestException as e:
        raise TransferBroken(f"download of {path} broke off: {e}") from e
    finally:
        raw.close()  # drops docker-py's response, which closes its connection


def _file_chunks(
    tar: tarfile.TarFile, member: tarfile.TarInfo, raw: Generator[bytes, None, None], path: str
) -> Generator[bytes, None, None]:
    """The content of the archive's one member, read a piece at a time."""
    try:
        content = tar.extractfile(member)
        assert content is not None  # a regular file always has content
        while piece := content.read(CHUNK):
            yield piece
    except tarfile.TarError as e:
        raise TransferBroken(f"download of {path} broke off: {e}") from e
    finally:
        tar.close()
        raw.close()


def _split_ref(ref: str) -> tuple[str, str | None]:
    """``repo[:tag]`` or ``repo@digest`` as docker-py's pull takes it (the tag may be a digest)."""
    if "@" in ref:
        repository, _, digest = ref.partition("@")
        return repository, digest
    name, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return ref, "latest"


def _owned_parents(path: str) -> list[str]:
    """The parent folders of ``path`` below a work folder (``/golem/input/a`` for ``/golem/input/a/b``):
    the user owns those, so uploads there make folders its commands can write in."""
    parts = path.strip("/").split("/")[:-1]
    folders = ["/" + "/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    return [f for f in folders if f not in WORK_FOLDERS and any(f.startswith(w + "/") for w in WORK_FOLDERS[1:])]


def _environment(entries: list[str] | None) -> dict[str, str]:
    """An environment as Docker lists it (``NAME=value`` entries, or None) as a mapping."""
    return dict(item.partition("=")[::2] for item in entries or [])


def _container_name(provider: str, activity: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"kiln-{provider}-{activity}")[:200]


def _made_for_user(workdir: str) -> list[str]:
    """The folders made on a container's volume and given to its user: the work folders, and
    the image's ``WORKDIR`` with its parents when it is on the volume (below ``/golem`` or ``/tmp``)."""
    folders = list(WORK_FOLDERS)
    if under_mounts(workdir):
        parts = workdir.split("/")
        folders += ["/".join(parts[:n]) for n in range(3, len(parts) + 1)]  # below /golem or /tmp
    return list(dict.fromkeys(folders))


def _archive_name(path: str) -> str:
    parts = path.split("/")
    if not path.startswith("/") or any(p in ("", ".", "..") for p in parts[1:]):
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
        folders = _made_for_user(config.get("WorkingDir") or "")
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
                uid, gid = _ids_of(pid)
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
        return Started(container_id, channel, env, uid, gid)

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

    def put_file(
        self,
        container_id: str,
        path: str,
        size: int,
        mode: int,
        chunks: Iterator[bytes | memoryview],
        owner: tuple[int, int] = (0, 0),
    ) -> int:
        """Stream ``size`` bytes from ``chunks`` into a file at ``path``, owned by ``owner`` (uid, gid);
        returns the bytes written.

        The file goes into the container's volume, written on the host (so only under
        ``/golem`` or ``/tmp``, else BadPath; never through a symbolic link). Missing parent
        folders are created (mode 0755): those inside the work folders (``/golem/...``) owned
        by ``owner`` too, others by root. The chunks must total exactly ``size``, else
        TransferBroken, as is a volume that fills up; the file then does not appear. A folder
        at ``path`` is not replaced: NotAFile.
        """
        _archive_name(path)
        volume = self._volumes.get(container_id)
        if volume is None:
            raise DockerFailed(f"container {container_id[:12]} has no volume here: not one this provider runs")
        return write_file(volume, path, size, mode, chunks, owner, _owned_parents(path))

    def open_download(self, container_id: str, path: str) -> DownloadStream:
        """Start fetching ``path``; iterate the stream's ``chunks``, then close it.

        A symlink is followed (Docker resolves its whole chain for us), so a link to a
        file downloads the file's content; a link to a folder downloads the folder, whose
        tar entries then carry the target's name.
        """
        _archive_name(path)
        raw, stat = self._get_archive(container_id, path)
        if stat["mode"] & _GO_MODE_SYMLINK and stat.get("linkTarget"):
            raw.close()
            try:
                raw, stat = self._get_archive(container_id, stat["linkTarget"])
            except PathMissing as e:
                raise PathMissing(f"{path} is a dangling link to {stat['linkTarget']}") from e
        go_mode = int(stat["mode"])
        mode = go_mode & 0o777 | sum(bit for go, bit in _GO_SPECIAL if go_mode & go)
        if go_mode & _GO_MODE_DIR:
            return DownloadStream(kind="dir", size=None, mode=mode, chunks=_guarded(raw, path))
        chunks = _guarded(raw, path)
        try:
            # Not a with-block: the open archive lives on in the returned chunks.
            tar = tarfile.open(fileobj=_ChunkReader(chunks), mode="r|", bufsize=CHUNK)  # noqa: SIM115
            member = tar.next()
        except tarfile.TarError as e:
            chunks.close()
            raise TransferBroken(f"download of {path}: bad archive from Docker: {e}") from e
        if member is None or not member.isreg():
            chunks.close()
            raise NotAFile(f"{path} is not a regular file")
        return DownloadStream(kind="file", size=member.size, mode=mode, chunks=_file_chunks(tar, member, chunks, path))

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
            used = _cgroup_cpu_seconds(int(pid))
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
        digest = hashlib.sha256(program).hexdigest()
        with _engine(f"inspect image {tag}"):
            try:
                existing = self._api.inspect_image(tag)
            except docker.errors.ImageNotFound:
                existing = None
        labels = {LABEL_BUSYBOX: digest, OFFER_LABEL: repository(tag)}
        if existing is not None and (existing["Config"].get("Labels") or {}).items() >= labels.items():
            return str(existing["Id"])
        applets = subprocess.run([busybox, "--list"], capture_output=True, check=True, text=True).stdout.split()
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:

            def add(name: str, data: bytes | None = None, mode: int = 0o755, link: str | None = None) -> None:
                info = tarfile.TarInfo(name)
                info.mode = mode
                if link is not None:
                    info.type, info.linkname = tarfile.SYMTYPE, link
                elif data is None:
                    info.type = tarfile.DIRTYPE
                else:
                    info.size = len(data)
                tar.addfile(info, None if data is None else io.BytesIO(data))

            add("Dockerfile", b'FROM scratch\nCOPY rootfs/ /\nWORKDIR /golem/work\nCMD ["sh"]\n', 0o644)
            for folder in ("rootfs", "rootfs/bin", "rootfs/etc", "rootfs/golem"):
                add(folder)
            for folder in ("input", "output", "work"):
                add(f"rootfs/golem/{folder}")
            add("rootfs/tmp", mode=0o1777)
            add("rootfs/bin/busybox", program)
            for applet in applets:
                if applet != "busybox":
                    add(f"rootfs/bin/{applet}", link="busybox")
            add("rootfs/etc/passwd", _PASSWD, 0o644)
            add("rootfs/etc/group", _GROUP, 0o644)
        context.seek(0)
        with _engine(f"build image {tag}"):
            for line in self._api.build(
                fileobj=context, custom_context=True, tag=tag, rm=True, labels=labels, decode=True
            ):
                if "error" in line:
                    raise DockerFailed(f"build of {tag} failed: {line['error']}")
            return str(self._api.inspect_image(tag)["Id"])
