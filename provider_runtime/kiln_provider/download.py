"""A download's stream: Docker's tar archive of a container path, as the hub's ``download`` sends it.

Docker's archive API gives a path as a tar stream, with the path's stat (its mode in Go's
bits). :func:`download_stream` turns it into a :class:`DownloadStream`: a folder's tar as it
is (its entries start with the folder's own name), or a file's bytes alone, read out of the
tar a piece at a time. Nothing here calls Docker: the adapter opens the archive
(:meth:`~kiln_provider.docker_adapter.DockerAdapter.open_download`).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

from kiln_provider.errors import NotAFile, TransferBroken

CHUNK: Final = 256 * 1024
"""The most bytes of one chunk of a download."""
GO_MODE_DIR: Final = 1 << 31  # Go's os.ModeDir, as Docker reports it in the archive stat
GO_MODE_SYMLINK: Final = 1 << 27
_GO_SPECIAL: Final = ((1 << 23, 0o4000), (1 << 22, 0o2000), (1 << 20, 0o1000))  # setuid, setgid, sticky


@dataclass
class DownloadStream:
    """What :meth:`~kiln_provider.docker_adapter.DockerAdapter.open_download` found. Iterate ``chunks``, then
    call :meth:`close`.

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


def download_stream(chunks: Generator[bytes, None, None], go_mode: int, path: str) -> DownloadStream:
    """The download of ``path`` from Docker's archive of it (``chunks``) and the Go mode bits of
    its stat: a folder's tar, or a regular file's bytes (else NotAFile). Closes ``chunks`` when
    it raises; else the stream's :meth:`~DownloadStream.close` does."""
    mode = go_mode & 0o777 | sum(bit for go, bit in _GO_SPECIAL if go_mode & go)
    if go_mode & GO_MODE_DIR:
        return DownloadStream(kind="dir", size=None, mode=mode, chunks=chunks)
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
