"""Docker, wrapped: the only module in Kiln that imports ``docker``.

Everything here blocks; the provider calls it off the event loop with ``asyncio.to_thread``.
One :class:`DockerAdapter` serves every activity of a provider, and its methods may run at
the same time on different containers (docker-py's client is a pooled ``requests`` session).

The life of an activity: :meth:`DockerAdapter.create` a container, then any number of
:meth:`~DockerAdapter.put_file`, :meth:`~DockerAdapter.start_exec` (then
:meth:`ExecProcess.wait`) and :meth:`~DockerAdapter.open_download` (then iterate
``chunks`` and :meth:`DownloadStream.close`), and finally :meth:`~DockerAdapter.remove`.
On start-up, :meth:`~DockerAdapter.remove_stale` clears containers a crashed run left.

Images: :meth:`~DockerAdapter.images` names them for the offer, :meth:`~DockerAdapter.layer_chains`
says which layers are here, :meth:`~DockerAdapter.load` feeds ``docker load`` a
:class:`~kiln_provider.image_archive.LoadArchive` as it is built, :meth:`~DockerAdapter.pull`
fetches from a registry, and :meth:`~DockerAdapter.remove_image` evicts.

Killing a command signals its processes from the host, so the provider must run as root
in dockerd's PID namespace (the normal deployment: on the same host as the engine).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

import docker
import docker.errors
import requests

from kiln_provider.errors import (
    BadPath,
    DockerFailed,
    ImageMissing,
    NotAFile,
    PathMissing,
    ProviderError,
    TransferBroken,
)
from kiln_provider.image_archive import LoadArchive

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
_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"
_KILL_GRACE = 2.0  # seconds a killed command's stream may take to end before we cut it
LOAD_TIMEOUT = 3600.0
"""Seconds ``docker load`` may take to answer once the archive is in (it registers the layers then)."""
PULL_TIMEOUT = 3600.0


@dataclass(frozen=True)
class HostInfo:
    cpus: int
    memory: int
    arch: str


@dataclass(frozen=True)
class ImageFacts:
    id: str
    """``sha256:<hex>``, the digest of the image's config."""
    size: int
    tags: tuple[str, ...]
    layers: tuple[str, ...]
    """The diff ids of its layers, base first."""


@dataclass(frozen=True)
class ContainerSpec:
    activity: str
    image: str
    cpus: float
    memory: int
    pids_limit: int = 256


@dataclass(frozen=True)
class ExecOutcome:
    exit_code: int
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool
    killed: bool
    duration: float


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


class ExecProcess:
    """A command running in a container. Call :meth:`wait` exactly once; :meth:`kill` from anywhere."""

    def __init__(self, api: Any, exec_id: str, container_id: str, hijacked: Any, max_output: int) -> None:
        self._api = api
        self._exec_id = exec_id
        self._container_id = container_id
        self._hijacked = hijacked
        self._max = max_output
        self._started = time.monotonic()
        # Read through our own blocking duplicate of the socket: docker-py's carries the
        # client's 60 s timeout, and a duplicate lets another thread shut the connection down.
        self._sock = socket.socket(fileno=os.dup(hijacked.fileno()))
        self._sock.settimeout(None)
        self._out = [bytearray(), bytearray()]
        self._truncated = [False, False]
        self._done = threading.Event()  # the output stream has ended
        self._wake = threading.Event()  # the stream ended or kill() was called
        self._lock = threading.Lock()
        self._killed = False
        self._outcome: ExecOutcome | None = None
        self._on_end: list[Callable[[], object]] = []
        self._reader = threading.Thread(target=self._read, name=f"kiln-exec-{exec_id[:12]}", daemon=True)
        self._reader.start()

    def wait(self, timeout: float | None) -> ExecOutcome:
        """Block until the command ends, or kill it ``timeout`` seconds after its start (``timed_out=True``).

        Output a background process still writes after the command exited is waited for
        until the timeout. DockerFailed if the container is removed meanwhile.
        """
        with self._lock:
            if self._outcome is not None:
                return self._outcome
        deadline = None if timeout is None else self._started + timeout
        self._wake.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        info = None if self._killed else self._poll_exit(deadline, stop_on_kill=True)
        timed_out = False
        if info is None:
            with self._lock:
                timed_out = not self._killed
                self._killed = True  # a later kill() has nothing left to do
            self._kill_tree()
            info = self._poll_exit(time.monotonic() + _KILL_GRACE, stop_on_kill=False)
        if not self._done.wait(_KILL_GRACE):
            # Something outside the process tree (a daemonised grandchild) holds the stream open.
            with suppress(OSError):  # the reader may have closed it just now
                self._sock.shutdown(socket.SHUT_RDWR)
            self._done.wait(_KILL_GRACE)
        self._reader.join(_KILL_GRACE)
        with self._lock:
            killed = self._killed and not timed_out
        code = info["ExitCode"] if info is not None and info["ExitCode"] is not None else 137
        stdout, stderr = bytes(self._out[0]), bytes(self._out[1])
        if info is not None and not info["Pid"] and not stderr:
            # The program never started (not found, not executable): Docker wrote why on
            # the stdout stream; put it where a shell would.
            stdout, stderr = b"", stdout
        duration = time.monotonic() - self._started
        outcome = ExecOutcome(code, stdout, stderr, self._truncated[0], self._truncated[1], timed_out, killed, duration)
        with self._lock:
            self._outcome = outcome
        return outcome

    def kill(self) -> None:
        """SIGKILL the command and all its descendants; :meth:`wait` then returns ``killed=True``."""
        with self._lock:
            if self._killed or self._outcome is not None:
                return
            self._killed = True
        self._kill_tree()
        self._wake.set()

    def _read(self) -> None:
        """Demultiplex Docker's stream: 8-byte headers (stream id, 3 zero bytes, big-endian length)."""
        stream = self._sock.makefile("rb", buffering=CHUNK)
        try:
            while len(header := stream.read(8)) == 8:
                kind, length = header[0], int.from_bytes(header[4:8], "big")
                while length > 0:
                    data = stream.read(min(length, CHUNK))
                    if not data:
                        return
                    length -= len(data)
                    if kind in (1, 2):
                        self._keep(kind - 1, data)
        except OSError:
            pass  # the connection broke or we shut it down: the stream is over either way
        finally:
            stream.close()
            self._sock.close()
            response = getattr(self._hijacked, "_response", None)  # docker-py parks it on the socket
            if response is not None:
                response.close()
            self._hijacked.close()
            with self._lock:
                self._done.set()
                callbacks, self._on_end = self._on_end, []
            self._wake.set()
            for callback in callbacks:
                callback()

    def when_output_ends(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (from another thread) once the output stream ends: then :meth:`wait` is quick.

        Lets an event loop wait for a command without holding a thread for its whole run.
        """
        with self._lock:
            if not self._done.is_set():
                self._on_end.append(callback)
                return
        callback()

    def _keep(self, index: int, data: bytes) -> None:
        room = self._max - len(self._out[index])
        if len(data) > room:
            self._truncated[index] = True
        if room > 0:
            self._out[index] += data[:room]

    def _inspect(self) -> dict[str, Any]:
        with _engine("inspect exec"):
            info: dict[str, Any] = self._api.exec_inspect(self._exec_id)
        return info

    def _poll_exit(self, deadline: float | None, stop_on_kill: bool) -> dict[str, Any] | None:
        """exec_inspect until the command has exited (its stream can close a moment before)."""
        pause = 0.005
        while True:
            info = self._inspect()
            if not info["Running"]:
                return info
            if (deadline is not None and time.monotonic() >= deadline) or (stop_on_kill and self._killed):
                return None
            time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, 0.1)

    def _kill_tree(self) -> None:
        deadline = time.monotonic() + _KILL_GRACE
        while True:
            with _engine("inspect exec"):
                try:
                    info = self._api.exec_inspect(self._exec_id)
                except docker.errors.NotFound:
                    return  # the container is gone, and the command with it
            # Docker reports the pid a moment after the stream opens; wait for it briefly.
            if info["Pid"] or not info["Running"] or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        if info["Pid"] and info["Running"]:
            _kill_process_tree(info["Pid"], self._container_id)


def _kill_process_tree(root: int, container_id: str) -> None:
    """SIGKILL ``root``, its session and all descendants, but only processes of this container.

    Everything is stopped first, in rounds until no new process appears, so that nothing
    forks past the kill; the cgroup check guards against a reused pid.
    """
    stopped: set[int] = set()
    try:
        for _ in range(20):
            fresh = _descendants(root, container_id) - stopped
            if not fresh:
                break
            for pid in fresh:
                with suppress(ProcessLookupError):  # it has exited meanwhile
                    os.kill(pid, signal.SIGSTOP)
            stopped |= fresh
        for pid in stopped:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    except PermissionError as e:
        raise DockerFailed(f"cannot kill pid {root}: the provider must run as root next to dockerd") from e


def _descendants(root: int, container_id: str) -> set[int]:
    parents: dict[int, tuple[int, int]] = {}  # pid -> (ppid, session)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue  # exited while we looked
            fields = stat[stat.rindex(b")") + 2 :].split()  # the name may hold spaces and parens
            parents[int(entry.name)] = (int(fields[1]), int(fields[3]))
    found = {pid for pid, (_, session) in parents.items() if session == root} | {root}
    while True:
        more = {pid for pid, (ppid, _) in parents.items() if ppid in found} - found
        if not more:
            break
        found |= more
    return {pid for pid in found if pid in parents and _in_container(pid, container_id)}


def _in_container(pid: int, container_id: str) -> bool:
    try:
        with open(f"/proc/{pid}/cgroup", "rb") as f:
            return container_id.encode() in f.read()
    except OSError:
        return False


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


def _archive_name(path: str) -> str:
    parts = path.split("/")
    if not path.startswith("/") or any(p in ("", ".", "..") for p in parts[1:]):
        raise BadPath(f"not a normalised absolute path: {path!r}")
    return path[1:]


class DockerAdapter:
    """The Docker engine, as a Kiln provider needs it. Errors are :class:`~kiln_provider.errors.ProviderError`s."""

    def __init__(self, provider: str, client: Any | None = None) -> None:
        self.provider = provider
        with _engine("connect"):
            self._client: Any = client if client is not None else docker.from_env()
        self._api: Any = self._client.api
        self._chains: dict[str, tuple[str, ...]] = {}

    def host_info(self) -> HostInfo:
        with _engine("docker info"):
            info = self._api.info()
        arch = str(info["Architecture"])
        return HostInfo(cpus=int(info["NCPU"]), memory=int(info["MemTotal"]), arch=_ARCH.get(arch, arch))

    def storage_free(self) -> int:
        with _engine("docker info"):
            root = self._api.info()["DockerRootDir"]
        return shutil.disk_usage(root).free

    def images(self) -> list[str]:
        """Every local image, by each of its tags and by ``sha256:<id>``."""
        with _engine("list images"):
            found = self._api.images()
        names = {tag for image in found for tag in image.get("RepoTags") or () if tag != "<none>:<none>"}
        return sorted(names | {str(image["Id"]) for image in found})

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

    def create(self, spec: ContainerSpec) -> str:
        """Create and start a hardened container that idles until :meth:`remove`; returns its id.

        The container runs ``sleep infinity``, so a Kiln image needs ``sleep`` on its PATH.
        Images are never pulled (there may be no registry): a missing one is ImageMissing.
        """
        # Docker reads a zero limit as "no limit": never let one through.
        if spec.memory < MIN_MEMORY or int(spec.cpus * 1e9) < MIN_NANO_CPUS or spec.pids_limit < 1:
            raise DockerFailed(
                f"refusing limits that Docker would treat as none: cpus={spec.cpus}, memory={spec.memory}, "
                f"pids={spec.pids_limit} (at least 0.01 CPUs and 6 MiB)"
            )
        name = re.sub(r"[^a-zA-Z0-9_.-]", "-", f"kiln-{self.provider}-{spec.activity}")[:200]
        with _engine(f"create container for {spec.activity}"):
            host_config = self._api.create_host_config(
                network_mode="none",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                pids_limit=spec.pids_limit,
                mem_limit=spec.memory,
                memswap_limit=spec.memory,  # no swap beyond the memory limit
                nano_cpus=int(spec.cpus * 1e9),
                init=True,  # docker-init reaps the orphans commands leave behind
                auto_remove=False,
            )
            try:
                created = self._api.create_container(
                    spec.image,
                    ["sleep", "infinity"],
                    name=name,
                    labels={LABEL_PROVIDER: self.provider, LABEL_ACTIVITY: spec.activity},
                    host_config=host_config,
                )
            except docker.errors.ImageNotFound as e:
                raise ImageMissing(f"image {spec.image} is not on this provider") from e
            container_id: str = created["Id"]
            try:
                self._api.start(container_id)
            except docker.errors.APIError:
                self.remove(container_id)
                raise
        return container_id

    def remove(self, container_id: str) -> None:
        """Kill and remove the container; one that is already gone is fine."""
        with _engine(f"remove container {container_id[:12]}"):
            try:
                self._api.remove_container(container_id, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as e:
                if "already in progress" not in str(e.explanation):
                    raise

    def remove_stale(self) -> int:
        """Remove every container labelled with this provider (left by an earlier run); returns how many."""
        with _engine("list containers"):
            stale = self._api.containers(all=True, filters={"label": f"{LABEL_PROVIDER}={self.provider}"})
        for container in stale:
            self.remove(container["Id"])
        return len(stale)

    def put_file(self, container_id: str, path: str, size: int, mode: int, chunks: Iterator[bytes | memoryview]) -> int:
        """Stream ``size`` bytes from ``chunks`` into a file at ``path``; returns the bytes written.

        Missing parent folders are created (mode 0755, by Docker's extraction). The chunks
        must total exactly ``size``, else TransferBroken (the file may then hold part of
        the data). A folder at ``path`` is not replaced: NotAFile.
        """
        name = _archive_name(path)
        written = 0
        failure: BaseException | None = None

        def archive() -> Iterator[bytes]:
            # On any failure the body just ends (a truncated tar Docker refuses): raising
            # here instead would leave the pooled HTTP connection mid-request, and the next
            # call on it would hang. The failure is raised once the response is in.
            nonlocal written, failure
            header = tarfile.TarInfo(name)
            header.size, header.mode, header.mtime = size, mode & 0o7777, int(time.time())
            yield header.tobuf(tarfile.PAX_FORMAT)
            try:
                for chunk in chunks:
                    written += len(chunk)
                    if written > size:
                        failure = TransferBroken(f"upload of {path}: more than the announced {size} bytes")
                        return
                    if chunk:
                        yield bytes(chunk)
            except GeneratorExit:
                raise
            except BaseException as e:  # noqa: BLE001 - kept and raised after the request (see above)
                failure = e
                return
            if written != size:
                failure = TransferBroken(f"upload of {path} broke off after {written} of {size} bytes")
                return
            yield bytes(-size % tarfile.BLOCKSIZE + 2 * tarfile.BLOCKSIZE)  # padding, end of archive

        # docker-py's put_archive cannot pass noOverwriteDirNonDir, without which Docker
        # would silently replace a folder at ``path`` (and all it holds) with the file.
        url = f"{self._api.base_url}/v{self._api.api_version}/containers/{container_id}/archive"
        params = {"path": "/", "noOverwriteDirNonDir": "1"}
        try:
            with (
                _engine(f"upload {path}"),
                self._api.put(url, params=params, data=archive(), timeout=self._api.timeout) as response,
            ):
                try:
                    response.raise_for_status()
                except requests.HTTPError as e:
                    if "cannot overwrite directory" in response.text:
                        raise NotAFile(f"{path} is a folder") from e
                    docker.errors.create_api_error_from_http_exception(e)  # raises the APIError
        except ProviderError:
            if failure is None:
                raise
        if failure is not None:
            raise failure
        return written

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

    def start_exec(
        self, container_id: str, argv: list[str], env: dict[str, str], workdir: str | None, max_output: int
    ) -> ExecProcess:
        """Start ``argv`` in the container; call :meth:`ExecProcess.wait` on the result.

        At most ``max_output`` bytes of stdout and of stderr are kept; the rest is read and
        dropped (the outcome says so). A program that cannot start is not an error here: its
        outcome carries Docker's exit code (126/127) and reason on stderr.
        """
        with _engine(f"exec in {container_id[:12]}"):
            exec_id: str = self._api.exec_create(
                container_id, argv, environment=env, workdir=workdir, stdout=True, stderr=True, stdin=False, tty=False
            )["Id"]
            hijacked = self._api.exec_start(exec_id, socket=True)
        return ExecProcess(self._api, exec_id, container_id, hijacked, max_output)

    def cpu_seconds(self, container_id: str) -> float:
        """CPU time the container has used so far, all its processes together."""
        with _engine(f"stats of {container_id[:12]}"):
            stats = self._api.stats(container_id, stream=False, one_shot=True)
        return float(stats["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9

    def build_busybox_image(self, tag: str = "kiln-busybox:latest", busybox: str = "/bin/busybox") -> str:
        """Build a ``FROM scratch`` image holding a static busybox; returns its id.

        Needs no registry and no network. Kept as is when ``tag`` already holds this busybox.
        """
        with open(busybox, "rb") as f:
            program = f.read()
        digest = hashlib.sha256(program).hexdigest()
        with _engine(f"inspect image {tag}"):
            try:
                existing = self._api.inspect_image(tag)
            except docker.errors.ImageNotFound:
                existing = None
        if existing is not None and (existing["Config"].get("Labels") or {}).get(LABEL_BUSYBOX) == digest:
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
                fileobj=context, custom_context=True, tag=tag, rm=True, labels={LABEL_BUSYBOX: digest}, decode=True
            ):
                if "error" in line:
                    raise DockerFailed(f"build of {tag} failed: {line['error']}")
            return str(self._api.inspect_image(tag)["Id"])
