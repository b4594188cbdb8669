"""A folder's tar stream from a container, extracted safely as it arrives.

Nothing is spooled: the stream is read a chunk at a time by ``tarfile`` in stream mode,
and every entry passes Python's ``data`` filter plus two rules of ours: an absolute name is
refused (not extracted below the destination), and links only point down (absolute or ``..``
link targets are refused), so that no chain of links can lead out of the destination.
Whatever the archive holds, what goes wrong is a :class:`~kiln.protocol.errors.TransferFailed`,
never an ``OSError`` of the local file system.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiln.protocol.errors import KilnError, TransferFailed

Pull = Callable[[], "bytes | memoryview | None"]
"""The next chunk of the stream, or None at its end (called from the extracting thread)."""


class _Pulled(io.RawIOBase):
    """A readable file over the chunks ``pull`` hands out."""

    def __init__(self, pull: Pull) -> None:
        self._pull = pull
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = self._pull()
            if chunk is None:
                return 0
            self._pending = memoryview(chunk).cast("B")
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _strip(member: tarfile.TarInfo, root: str) -> tarfile.TarInfo | None:
    """Drop the folder's own name from the entry, and judge it."""
    if member.name.startswith("/"):
        # Not taken as a name below the destination: an archive of a folder names none such.
        raise tarfile.AbsolutePathError(member)
    _, _, rest = member.name.partition("/")
    if not rest:
        return None
    changes: dict[str, Any] = {"name": rest}
    if member.islnk():
        changes["linkname"] = member.linkname.partition("/")[2]
    if (member.issym() or member.islnk()) and (member.linkname.startswith("/") or ".." in member.linkname.split("/")):
        # Links only ever point down: then no chain of them can lead out of ``dest``.
        raise tarfile.LinkOutsideDestinationError(member, member.linkname)
    return tarfile.data_filter(member.replace(**changes, deep=False), root)


def extract(pull: Pull, dest: Path) -> None:
    """Extract the folder tar stream that ``pull`` delivers into ``dest`` (blocking: run it in a thread)."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BufferedReader(_Pulled(pull), 256 * 1024), mode="r|") as tar:
            tar.extractall(dest, filter=_strip)
    except KilnError:
        raise  # the stream itself failed: its error says why
    except tarfile.FilterError as e:
        raise TransferFailed(f"refused to write outside {dest}: {e}") from e
    except tarfile.TarError as e:
        raise TransferFailed(f"the folder archive is damaged: {e}") from e
    except OSError as e:
        # A crafted archive (an entry twice, a link in a loop, a file where a folder is due).
        raise TransferFailed(f"cannot extract the folder into {dest}: {e.strerror or e}") from e
    except (KeyError, RuntimeError) as e:
        # What tarfile raises for a hard link to no earlier entry, and for a loop of links.
        raise TransferFailed(f"cannot extract the folder into {dest}: {e}") from e
