"""Volumes: the storage a container rents, as a filesystem of exactly that size.

Each task container gets one volume: a sparse file of the rented size in the provider's
volumes folder, formatted ext4 and loop-mounted on the host (``nodev,nosuid``). The
container sees two folders of it, ``golem`` at ``/golem`` and ``tmp`` at ``/tmp`` (bind
mounts), and its root filesystem is read-only: those two are all it can write, and together
they hold no more than the rented bytes. A write past them fails inside the container
(``ENOSPC``), and the host's disk never holds more of it than the file's size::

    volumes = Volumes(data_dir / "volumes")
    volumes.check()                                 # at start: VolumeFailed if this host cannot make them
    volume = volumes.make(volume_name(activity), size, folders)   # before the container is created
    volume.seen_by(pid); volume.give(uid, gid, folders)           # once it runs, as whom
    put_file(volume, "/golem/input/a.txt", size, mode, chunks, owner)  # an upload
    volumes.remove(volume.name)                     # once the container is gone
    volumes.sweep()                                 # those an earlier run left

Uploads are written here, on the host, and not through Docker's archive API: Docker extracts
an archive in its own view of the container, where the read-only flag does not hold and a
symbolic link on an entry's way is followed — an upload to ``/golem/work/link/x``, with
``link`` pointing at ``/etc``, wrote the container's root filesystem, and so the host's
disk. :func:`write_file` (which :func:`put_file` calls for an upload) opens one path
component at a time below the volume's folder, never following a link, so it cannot leave
the volume. Docker's adapter (:mod:`kiln_provider.docker_adapter`) only makes a volume for
each container it creates and removes it with the container; it writes nothing in one.

Making and mounting needs root and loop devices (``/dev/loop-control``); :meth:`Volumes.check`
finds out at start, so that a provider that cannot bound what containers write refuses to run.
Everything here blocks (mkfs and mount are processes): call it off the event loop.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import threading
from collections.abc import Collection, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from kiln.protocol.limits import MIN_STORAGE
from kiln_provider.errors import BadPath, NotAFile, TransferBroken, VolumeFailed

MOUNTS: Final = ("/golem", "/tmp")
"""Where a container sees its volume: each a folder of it (``golem``, ``tmp``), bind-mounted."""
WORK_FOLDERS: Final = ("/golem", "/golem/input", "/golem/output", "/golem/work")
"""Folders every task container has, owned by the user its commands run as (on its volume,
like everything under ``/golem`` and ``/tmp``: both start empty, whatever the image holds there)."""
MIN_SIZE: Final = MIN_STORAGE
"""The smallest volume (a smaller rent gets this much; the hub reserves as much for it)."""
MAX_VOLUMES: Final = 256
"""The most volumes (so loop devices) one provider has at once, unless told otherwise."""
BLOCK: Final = 4096
MKFS: Final = (
    *("mkfs.ext4", "-q", "-F", "-T", "default", "-m", "0"),
    # Scratch space that dies with its container: no journal, no room kept for growing it,
    # nothing reserved for root, and no zeroing (a sparse file reads as zeros already).
    *("-O", "^has_journal,^resize_inode", "-E", "nodiscard,lazy_itable_init=1"),
)
MOUNT_OPTIONS: Final = "loop,nodev,nosuid,noatime,noinit_itable"
COMMAND_TIMEOUT: Final = 60.0
"""Seconds mkfs or mount may take before the volume is given up."""
PROBE: Final = ".probe"
_MNT_DETACH: Final = 2
_UPLOAD_PREFIX: Final = ".kiln-upload-"
_libc = ctypes.CDLL(None, use_errno=True)


def normalised(path: str) -> bool:
    """Whether ``path`` is a normalised absolute container path (no empty, ``.`` or ``..`` part)."""
    return path.startswith("/") and not any(part in ("", ".", "..") for part in path.split("/")[1:])


def under_mounts(path: str) -> bool:
    """Whether the normalised absolute container path ``path`` is, or is below, one of :data:`MOUNTS`."""
    return normalised(path) and any(path == top or path.startswith(top + "/") for top in MOUNTS)


def made_for_user(workdir: str) -> list[str]:
    """The folders to make on a container's volume and give to its user: the work folders, and
    the image's ``WORKDIR`` with its parents when it is on the volume (below ``/golem`` or ``/tmp``)."""
    folders = list(WORK_FOLDERS)
    if under_mounts(workdir):
        parts = workdir.split("/")
        folders += ["/".join(parts[:n]) for n in range(3, len(parts) + 1)]  # below /golem or /tmp
    return list(dict.fromkeys(folders))


def volume_name(activity: str) -> str:
    """The name of an activity's volume: readable, and distinct for distinct activities."""
    readable = re.sub(r"[^a-zA-Z0-9_.-]", "-", activity)[:64].lstrip(".")
    return f"{readable}-{hashlib.sha256(activity.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Volume:
    name: str
    size: int
    """Bytes of the filesystem: the most the container's writes can take on the host."""
    file: Path
    mount: Path

    def folder(self, top: str) -> Path:
        """The host folder a container sees at ``top`` (one of :data:`MOUNTS`)."""
        return self.mount / top.lstrip("/")

    @property
    def binds(self) -> dict[str, dict[str, str]]:
        """The volume's bind mounts, as docker-py's ``binds`` takes them."""
        return {str(self.folder(top)): {"bind": top, "mode": "rw"} for top in MOUNTS}

    def seen_by(self, pid: int) -> bool:
        """Whether process ``pid`` sees this volume at every one of :data:`MOUNTS` (False when
        dockerd made the container in a mount namespace where the volume is not mounted)."""
        dev = os.stat(self.mount).st_dev
        device = f"{os.major(dev)}:{os.minor(dev)}"
        try:
            with open(f"/proc/{pid}/mountinfo") as f:
                seen = {fields[4]: fields[2] for fields in (line.split() for line in f) if len(fields) > 4}
        except OSError:
            return False
        return all(seen.get(top) == device for top in MOUNTS)

    def give(self, uid: int, gid: int, folders: Iterable[str]) -> None:
        """Make ``folders`` (container paths :meth:`Volumes.make` created) the user's: never ``/tmp``
        itself, which stays root's with the sticky bit."""
        for folder in folders:
            host = self.mount / folder.lstrip("/")
            os.chown(host, uid, gid, follow_symlinks=False)


class Volumes:
    """The volumes of one provider's containers, in the folder ``root`` (its own: what else is
    there is taken for a leftover). Thread-safe.

    What they may take together is bounded: by the disk's free space always, and once
    :meth:`bound` is called by the storage the provider offers and a number of volumes (each
    is a loop device), so that the host never gives containers more than the market sold.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()  # as the mount table names it
        self._lock = threading.Lock()
        self._live: dict[str, int] = {}  # name -> size, for volumes made and not yet removed
        self.capacity: int | None = None
        """Bytes all volumes together may have (None: only the disk bounds them)."""
        self.max_count = MAX_VOLUMES

    def bound(self, capacity: int, max_count: int = MAX_VOLUMES) -> None:
        """Make no volume that would take the live ones past ``capacity`` bytes or ``max_count`` volumes."""
        with self._lock:
            self.capacity, self.max_count = capacity, max_count

    def check(self) -> None:
        """Make and remove a small volume: VolumeFailed (reason ``unavailable``) if this host cannot."""
        try:
            self.make(PROBE, MIN_SIZE)
        except VolumeFailed as e:
            raise VolumeFailed(
                f"cannot make the volumes that bound what containers write (the provider needs root, "
                f"mkfs.ext4 and loop devices): {e.message}",
                reason="unavailable",
            ) from e
        self.remove(PROBE)

    def make(self, name: str, size: int, folders: Collection[str] = ()) -> Volume:
        """A volume of ``size`` bytes (a whole number of 4 KiB blocks, at least :data:`MIN_SIZE`),
        mounted, with its ``golem`` and ``tmp`` folders and ``folders`` (container paths under
        :data:`MOUNTS`, made root's: see :meth:`Volume.give`). A leftover of the same name is
        removed first. VolumeFailed: ``no_room`` when the disk cannot hold it beside what the
        live volumes may still fill, or it would take them past the :meth:`bound` capacity;
        ``too_many`` when the bound's number of volumes are live; ``unavailable`` when it cannot
        be made or mounted."""
        size = max(MIN_SIZE, size // BLOCK * BLOCK)
        if not all(under_mounts(folder) for folder in folders):
            raise ValueError(f"folders outside {MOUNTS}: {folders}")
        volume = Volume(name, size, self.root / f"{name}.img", self.root / name)
        with self._lock:
            if name in self._live:
                raise VolumeFailed(f"volume {name} exists already", reason="unavailable")
            if len(self._live) >= self.max_count:
                raise VolumeFailed(
                    f"no room for another container: this provider runs at most {self.max_count} containers",
                    reason="too_many",
                )
            given = sum(self._live.values())
            if self.capacity is not None and given + size > self.capacity:
                raise VolumeFailed(
                    f"no room for {size} bytes of storage: this provider's offer of {self.capacity} bytes has "
                    f"{max(self.capacity - given, 0)} left",
                    reason="no_room",
                )
            room = self._room()
            if size > room:
                raise VolumeFailed(
                    f"no room for {size} bytes of storage: the disk of {self.root} has {max(room, 0)} to give",
                    reason="no_room",
                )
            self._live[name] = size  # counted against the disk from now on
        try:
            self._remove_files(name)
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(volume.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
            _run(*MKFS, str(volume.file))
            volume.mount.mkdir(mode=0o700)
            _run("mount", "-o", MOUNT_OPTIONS, str(volume.file), str(volume.mount))
            for folder in (*MOUNTS, *folders):
                parts = folder.strip("/").split("/")
                for n in range(1, len(parts) + 1):
                    made = volume.mount.joinpath(*parts[:n])
                    if not made.is_dir():
                        made.mkdir()
                        os.chmod(made, 0o1777 if made == volume.folder("/tmp") else 0o755)
        except BaseException as e:
            with suppress(OSError, VolumeFailed):
                self.remove(name)
            if isinstance(e, OSError):
                raise VolumeFailed(f"cannot make volume {name}: {e}", reason="unavailable") from e
            raise
        return volume

    def remove(self, name: str) -> None:
        """Unmount the volume (detached lazily if something still holds it) and delete its file;
        one already gone is fine."""
        try:
            self._remove_files(name)
        finally:
            with self._lock:
                self._live.pop(name, None)

    def sweep(self) -> int:
        """Remove every volume in the folder that was not made by this object (an earlier run's);
        returns how many."""
        with self._lock:
            live = set(self._live)
        names = {entry.name.removesuffix(".img") for entry in _entries(self.root)} | set(_mounts_below(self.root))
        stale = sorted(names - live)
        for name in stale:
            self.remove(name)
        return len(stale)

    def usage(self) -> tuple[int, int]:
        """How many volumes are live, and the bytes their files take on disk now (the provider's metrics)."""
        with self._lock:
            names = list(self._live)
        used = 0
        for name in names:
            with suppress(OSError):
                used += os.stat(self.root / f"{name}.img").st_blocks * 512
        return len(names), used

    def room(self) -> int:
        """Bytes a new volume may have: the disk's free space, less what live volumes may still fill."""
        with self._lock:
            return self._room()

    def _room(self) -> int:
        owed = 0
        for name, size in self._live.items():
            try:
                used = os.stat(self.root / f"{name}.img").st_blocks * 512
            except OSError:
                used = 0
            owed += max(size - used, 0)
        return _free(self.root) - owed

    def _remove_files(self, name: str) -> None:
        mount, file = self.root / name, self.root / f"{name}.img"
        for _ in range(8):  # bounded: each pass takes one mount off the point
            if not os.path.ismount(mount):
                break
            _unmount(mount)
        with suppress(OSError):
            # Never a recursive delete: an unmounted mount point holds nothing of its own
            # (and one that does is left alone, it is not ours to empty).
            mount.rmdir()
        with suppress(FileNotFoundError):
            file.unlink()


def put_file(
    volume: Volume,
    path: str,
    size: int,
    mode: int,
    chunks: Iterator[bytes | memoryview],
    owner: tuple[int, int],
) -> int:
    """An upload: stream ``size`` bytes from ``chunks`` into a file at container path ``path``,
    owned by ``owner`` (uid, gid); returns the bytes written.

    As :func:`write_file`, with the path checked first (BadPath unless normalised and
    absolute) and the missing parent folders inside the work folders (``/golem/...``) given
    to ``owner`` too, so that its commands can write in them; others are root's.
    """
    if not normalised(path):
        raise BadPath(f"not a normalised absolute path: {path!r}")
    return write_file(volume, path, size, mode, chunks, owner, _owned_parents(path))


def _owned_parents(path: str) -> list[str]:
    """The parent folders of ``path`` below a work folder (``/golem/input/a`` for ``/golem/input/a/b``):
    the user owns those, so uploads there make folders its commands can write in."""
    parts = path.strip("/").split("/")[:-1]
    folders = ["/" + "/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    return [f for f in folders if f not in WORK_FOLDERS and any(f.startswith(w + "/") for w in WORK_FOLDERS[1:])]


def write_file(
    volume: Volume,
    path: str,
    size: int,
    mode: int,
    chunks: Iterator[bytes | memoryview],
    owner: tuple[int, int],
    owned: Collection[str],
) -> int:
    """Write ``size`` bytes from ``chunks`` to the file at container path ``path``, owned by
    ``owner`` (uid, gid), with ``mode``; returns the bytes written.

    Missing parent folders are created (mode 0755), owned by ``owner`` when in ``owned``, else
    by root. The file appears whole or not at all (written aside, then renamed over ``path``),
    and a folder at ``path`` stays: NotAFile. A path outside :data:`MOUNTS`, or with a
    symbolic link on its way, is BadPath; a short or long stream, or a full volume, TransferBroken.
    """
    top = next((top for top in MOUNTS if path.startswith(top + "/")), None)
    if top is None:
        if path in MOUNTS:
            raise NotAFile(f"{path} is a folder")
        raise BadPath(f"{path}: uploads go under {' or '.join(MOUNTS)}, the rest of the container is read-only")
    parts = path[len(top) + 1 :].split("/")
    fd = os.open(volume.folder(top), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for n, part in enumerate(parts[:-1], start=1):
            folder = "/".join((top, *parts[:n]))
            try:
                os.mkdir(part, 0o700, dir_fd=fd)
                made = True
            except FileExistsError:
                made = False
            except OSError as e:
                raise _upload_error(path, e) from e
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise BadPath(f"{path}: {folder} is not a folder (uploads do not follow links)") from e
                raise _upload_error(path, e) from e
            os.close(fd)
            fd = inner
            if made:  # set through the open folder: what was made is what is changed
                if folder in owned:
                    os.fchown(fd, *owner)
                os.fchmod(fd, 0o755)
        return _write_aside(fd, parts[-1], path, size, mode, chunks, owner)
    finally:
        os.close(fd)


def _write_aside(
    folder: int,
    name: str,
    path: str,
    size: int,
    mode: int,
    chunks: Iterator[bytes | memoryview],
    owner: tuple[int, int],
) -> int:
    """Write the file under a name of its own in the open ``folder``, then rename it to ``name``."""
    aside = f"{_UPLOAD_PREFIX}{secrets.token_hex(8)}"
    try:
        out = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=folder)
    except OSError as e:
        raise _upload_error(path, e) from e
    written = 0
    try:
        try:
            os.fchown(out, *owner)
            for chunk in chunks:
                written += len(chunk)
                if written > size:
                    raise TransferBroken(f"upload of {path}: more than the announced {size} bytes")
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
            if written != size:
                raise TransferBroken(f"upload of {path} broke off after {written} of {size} bytes")
            os.fchmod(out, mode & 0o7777)  # after the chown, which clears setuid and setgid
        finally:
            os.close(out)
        try:
            os.rename(aside, name, src_dir_fd=folder, dst_dir_fd=folder)
        except IsADirectoryError as e:
            raise NotAFile(f"{path} is a folder") from e
    except BaseException as e:
        with suppress(OSError):
            os.unlink(aside, dir_fd=folder)
        if isinstance(e, OSError):
            raise _upload_error(path, e) from e
        raise
    return written


def _upload_error(path: str, e: OSError) -> TransferBroken:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return TransferBroken(f"upload of {path}: no space left in the storage the activity rented")
    return TransferBroken(f"upload of {path} failed: {e.strerror or e}")


def _run(*argv: str) -> None:
    try:
        subprocess.run(argv, capture_output=True, check=True, timeout=COMMAND_TIMEOUT)
    except subprocess.CalledProcessError as e:
        said = e.stderr.decode(errors="replace").strip() or f"exit status {e.returncode}"
        raise VolumeFailed(f"{argv[0]} failed: {said}", reason="unavailable") from e
    except (OSError, subprocess.TimeoutExpired) as e:
        raise VolumeFailed(f"{argv[0]} failed: {e}", reason="unavailable") from e


def _unmount(path: Path) -> None:
    """Unmount ``path``; detached lazily (gone once its last user lets go) if it is busy."""
    target = os.fsencode(path)
    if _libc.umount2(target, 0) == 0:
        return
    error = ctypes.get_errno()
    if error == errno.EBUSY:
        if _libc.umount2(target, _MNT_DETACH) == 0:
            return
        error = ctypes.get_errno()
    if error != errno.EINVAL:  # EINVAL: not a mount point (any more)
        raise VolumeFailed(f"cannot unmount {path}: {os.strerror(error)}", reason="unavailable")


def _entries(root: Path) -> list[Path]:
    try:
        return [entry for entry in root.iterdir() if entry.suffix == ".img" or entry.is_dir()]
    except FileNotFoundError:
        return []


def _mounts_below(root: Path) -> list[str]:
    """The names of mount points right below ``root``, from this process's mount table."""
    names = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4]))
            if point.parent == root:
                names.append(point.name)
    return names


def _free(root: Path) -> int:
    """The free bytes of the disk ``root`` is on (or will be, when made)."""
    for folder in (root, *root.parents):
        with suppress(OSError):
            return shutil.disk_usage(folder).free
    return 0
