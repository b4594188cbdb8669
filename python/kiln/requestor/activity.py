"""A rented container: send files in, run commands, get files back.

An :class:`Activity` comes from :meth:`kiln.Requestor.rent`. Its three actions are
``send_*`` (bytes, a local file, a JSON value), :meth:`Activity.run` (or
:meth:`Activity.stream`, for output as it comes) and ``download_*`` (bytes, a local file
or folder, a JSON value). A port a process in it listens on is reached with
:meth:`Activity.connect` (asyncio streams), :meth:`Activity.forward` (a local port) or
:meth:`Activity.publish` (a URL of the hub's). Files, a command's input and a streamed command's output move
in chunks with flow control both ways: nothing holds a whole file in memory except
:meth:`Activity.download_bytes`, which is capped by ``max_bytes``.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeAlias

import orjson

from kiln.connection import Connection, Outgoing
from kiln.protocol import limits
from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import (
    ActivityError,
    FileNotFound,
    InvalidPath,
    KilnError,
    ProviderLost,
    RemoteProtocolError,
    TransferFailed,
    UsageError,
)
from kiln.protocol.messages import (
    Cost,
    Done,
    Download,
    DownloadInfo,
    Exec,
    ExecResult,
    Message,
    Price,
    Publish,
    Published,
    Release,
    Rented,
    Resources,
    Unpublish,
    Upload,
)
from kiln.protocol.paths import path_problem
from kiln.requestor import ports
from kiln.requestor.folders import extract

DOWNLOAD_BYTES_LIMIT: Final = 256 * 1024 * 1024
READ_BYTES: Final = 256 * 1024
Stdin: TypeAlias = "bytes | bytearray | memoryview | str | os.PathLike[str] | AsyncIterable[bytes]"
"""A command's input: bytes, text (sent as UTF-8), a local file (a Path: streamed from disk),
or an async iterable of byte chunks (streamed as they come)."""
OUTPUTS: Final = {1: "stdout", 2: "stderr"}
FAILURE_LINE: Final = 200
"""The most of a failed command's stderr a CommandFailed's message shows (its last line)."""


class Link(Protocol):
    """Where an activity's requests go: its requestor's connection of the moment."""

    async def connected(self) -> Connection:
        """The connection to use now (waiting out a reconnect); raises ConnectionClosed once there is none."""
        ...


@dataclass(frozen=True, slots=True)
class Result:
    """What a command did. A non-zero ``exit_code`` is a result, not an error."""

    exit_code: int
    stdout_bytes: bytes
    stderr_bytes: bytes
    duration: float
    timed_out: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode(errors="replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """What :meth:`Activity.stream` yields: a piece of output as it comes, then the end.

    ``kind`` is ``"stdout"`` or ``"stderr"`` (with ``data``), and ``"exit"`` last (with
    ``result``, whose stdout and stderr are empty: the output came as events).
    """

    kind: Literal["stdout", "stderr", "exit"]
    data: bytes = b""
    text: str = ""
    """``data`` as UTF-8 text, decoded along its stream: a character split between two events
    comes whole in the second (bytes that are not UTF-8 show as U+FFFD)."""
    result: Result | None = None


class CommandTimeout(ActivityError):
    """A command ran past its timeout and was killed; ``result`` holds what it wrote until then."""

    default_code = ErrorCode.TIMEOUT

    def __init__(self, message: str, result: Result) -> None:
        super().__init__(message)
        self.result = result


class DownloadTooLarge(UsageError):
    """A download would take more than its ``max_bytes`` (code ``download_too_large``): by default
    what the activity could have written, the storage it rented. Nothing of it is kept; pass a
    larger ``max_bytes`` to take it."""

    default_code = ErrorCode.DOWNLOAD_TOO_LARGE


class CommandFailed(ActivityError):
    """A command run with ``check=True`` exited with a code other than 0; ``result`` holds its
    exit code and output."""

    default_code = ErrorCode.COMMAND_FAILED

    def __init__(self, message: str, result: Result) -> None:
        super().__init__(message)
        self.result = result


def container_path(path: str) -> str:
    """``path`` if it is a valid container path, else :class:`InvalidPath` (nothing is sent)."""
    if not isinstance(path, str):
        raise InvalidPath(f"a container path must be a string, not {type(path).__name__}")
    problem = path_problem(path)
    if problem is not None:
        raise InvalidPath(problem)
    return path


class Activity:
    """One container rented on one provider, until :meth:`release` (or its provider is lost)."""

    def __init__(
        self,
        link: Link,
        rented: Rented,
        on_released: Callable[[Activity], None] = lambda activity: None,
    ) -> None:
        # The link, not a connection: a requestor that reconnects keeps its activities.
        self._link = link
        self._on_released = on_released
        self.id = rented.activity
        self.provider = rented.provider
        self.resources: Resources = rented.resources
        self.cached = rented.cached
        """Whether the provider held the image already."""
        self.pulled = rented.pulled or 0
        """The image bytes the provider loaded from the hub's store for this rent (0: it had them)."""
        self.lost: KilnError | None = None
        self.released = False
        self.cpu_seconds: float | None = None
        """CPU time the container used, known once released."""
        self.price: Price | None = rented.price
        """(1.5) The provider's price (None: free)."""
        self.hold = rented.hold or 0
        """(1.5) What the hub holds of the requestor's credits for it, in micro-credits (0: nothing)."""
        self.cost: Cost | None = None
        """(1.5) The hub's latest capture of what it owes (``cost.due``, cumulative micro-credits;
        ``cost.final`` once it ended): it may come shortly after :meth:`release` returns."""
        self.on_cost: Callable[[Activity, Cost], None] | None = None
        """Called with each capture the hub reports (synchronously, so keep it quick)."""
        self.moved = 0
        """Bytes sent to it and taken from it so far: uploads, downloads and commands' output."""

    def __repr__(self) -> str:
        return f"<Activity {self.id} on {self.provider}>"

    @property
    def storage(self) -> int:
        """Bytes its commands may write (``/golem`` and ``/tmp``): the storage it rented, or the
        default a rent that named none is given; what :meth:`download_file` takes at most by default."""
        return self.resources.storage or limits.DEFAULT_STORAGE

    def charged(self, cost: Cost) -> None:
        """The hub captured ``cost`` for this activity: note it (the latest capture wins) and tell ``on_cost``."""
        if self.cost is not None and cost.seq <= self.cost.seq:
            return  # an older capture, or the same twice
        self.cost = cost
        if self.on_cost is not None:
            self.on_cost(self, cost)

    def _check(self) -> None:
        if self.lost is not None:
            raise ProviderLost(f"activity {self.id} is gone: {self.lost.message}", self.lost.code)
        if self.released:
            raise UsageError(f"activity {self.id} was released")

    # --- send ------------------------------------------------------------------------

    async def send_bytes(self, data: bytes, path: str, *, mode: int = 0o644) -> None:
        """Write ``data`` to the file ``path`` in the container (parent folders are made)."""

        async def chunks() -> AsyncIterator[bytes]:
            yield data

        await self._upload(path, len(data), mode, chunks())

    async def send_json(self, value: Any, path: str) -> None:
        """Write ``value`` as JSON to ``path`` in the container."""
        await self.send_bytes(orjson.dumps(value), path)

    async def send_file(self, local: str | os.PathLike[str], path: str, *, mode: int | None = None) -> None:
        """Stream the local file ``local`` to ``path`` in the container."""
        source = Path(local)
        try:
            handle = await asyncio.to_thread(source.open, "rb")
        except OSError as e:
            raise FileNotFound(f"cannot read local file {source}: {e.strerror}") from e
        try:
            stat = os.fstat(handle.fileno())

            async def chunks() -> AsyncIterator[bytes]:
                while block := await asyncio.to_thread(handle.read, READ_BYTES):
                    yield block

            await self._upload(path, stat.st_size, mode if mode is not None else stat.st_mode & 0o777, chunks())
        finally:
            handle.close()

    async def _upload(self, path: str, size: int, mode: int, chunks: AsyncIterator[bytes]) -> None:
        target = container_path(path)
        self._check()
        conn = await self._link.connected()
        message = Upload(type="upload", id=conn.new_id(), activity=self.id, path=target, size=size, mode=mode)
        sender, reply = await conn.open_upload(message)
        sent = 0
        try:
            async for chunk in chunks:
                sent += len(chunk)
                self.moved += len(chunk)
                if sent > size:
                    raise UsageError(f"{target}: the source grew past the {size} bytes announced")
                await sender.write(chunk)
            if sent != size:
                raise UsageError(f"{target}: the source ended after {sent} of {size} bytes")
            await sender.end()
            await reply
        except BaseException as e:
            if reply.done():
                _ = reply.cancelled() or reply.exception()  # seen: it is what we raise
            else:
                reply.cancel()
                await _quietly(sender.abort(str(e) or type(e).__name__))
            raise

    # --- run ---------------------------------------------------------------------------

    async def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        timeout: float | None = None,
        stdin: Stdin | None = None,
        check: bool = False,
    ) -> Result:
        """Run ``argv`` exactly as given (use ``["sh", "-c", "..."]`` for a shell).

        ``stdin`` is the command's input (see :data:`Stdin`; none: empty), streamed as the
        command reads it. Returns a :class:`Result` whatever the exit code, unless ``check``:
        then an exit code other than 0 raises :class:`CommandFailed` (its ``.result`` the
        Result). Raises :class:`CommandTimeout` (with ``.result`` holding the output so far)
        when ``timeout`` seconds pass first; the command is killed.
        """
        conn = await self._link.connected()
        message = self._exec(conn, argv, env, workdir, timeout, stdin, stream=False)
        source = _Input(stdin) if stdin is not None else None
        failed: BaseException | None = None
        try:
            sender, _, future = await conn.open_exec(message)
            if source is not None and sender is not None:
                source.start(sender)
            reply = await future
        except asyncio.CancelledError:
            await _quietly(conn.cancel(message.id))
            raise
        except BaseException as e:
            failed = e
            raise
        finally:
            if source is not None:
                await source.stop(failed)
        result = _result(argv, timeout, reply)
        self.moved += len(result.stdout_bytes) + len(result.stderr_bytes)
        if check and result.exit_code != 0:
            raise CommandFailed(_failure_text(argv, result), result)
        return result

    async def stream(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        timeout: float | None = None,
        stdin: Stdin | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Run ``argv`` and yield its output as it comes, then its end::

            async for event in act.stream(["sh", "-c", "make 2>&1"]):
                if event.kind == "exit":
                    print("exit code", event.result.exit_code)
                else:
                    print(event.text, end="")

        Output is flow-controlled end to end: while the loop does not ask for the next
        event, the command stops at its next write (nothing buffers without bound). Leaving
        the loop early (``break``, an exception) kills the command; for that to happen at
        once rather than when the generator is collected, wrap it in
        ``contextlib.aclosing``. ``stdin`` and ``timeout`` are as for :meth:`run`; a timeout
        raises :class:`CommandTimeout` after the output written until then. Needs a hub
        and provider that speak protocol 1.2.
        """
        conn = await self._link.connected()
        message = self._exec(conn, argv, env, workdir, timeout, stdin, stream=True)
        source = _Input(stdin) if stdin is not None else None
        failed: BaseException | None = None
        future: asyncio.Future[Message] | None = None
        # Text is decoded per stream, so a character split between two events comes whole.
        decoders = {kind: codecs.getincrementaldecoder("utf-8")(errors="replace") for kind in OUTPUTS.values()}
        try:
            sender, receiver, future = await conn.open_exec(message)
            assert receiver is not None
            if source is not None and sender is not None:
                source.start(sender)
            async for chunk in receiver:
                kind = OUTPUTS.get(chunk[0]) if len(chunk) > 1 else None
                if kind is None:
                    raise RemoteProtocolError(
                        f"an output frame of exec {message.id} must carry 1 (stdout) or 2 (stderr), then output",
                        ErrorCode.BAD_FRAME,
                    )
                data = bytes(chunk[1:])
                self.moved += len(data)
                yield StreamEvent(kind, data, decoders[kind].decode(data))  # type: ignore[arg-type]
            reply = await future
            yield StreamEvent("exit", result=_result(argv, timeout, reply))
        except BaseException as e:
            failed = e
            raise
        finally:
            if future is not None and not future.done():
                future.cancel()
                await _quietly(conn.cancel(message.id))
            if source is not None:
                await source.stop(failed if not isinstance(failed, GeneratorExit) else None)

    def _exec(
        self,
        conn: Connection,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        workdir: str | None,
        timeout: float | None,
        stdin: Stdin | None,
        *,
        stream: bool,
    ) -> Exec:
        if isinstance(argv, str) or not argv or not all(isinstance(a, str) for a in argv):
            raise UsageError("argv must be a non-empty list of strings, e.g. ['sh', '-c', 'echo hi']")
        wd = container_path(workdir) if workdir is not None else None
        self._check()
        return Exec(
            type="exec",
            id=conn.new_id(),
            activity=self.id,
            argv=list(argv),
            env=dict(env or {}),
            workdir=wd,
            timeout=timeout,
            stdin=True if stdin is not None else None,
            stream=True if stream else None,
        )

    # --- download ------------------------------------------------------------------------

    async def _download(self, path: str, max_bytes: int | None) -> AsyncGenerator[DownloadInfo | memoryview, None]:
        """Yield the download's info, then its chunks; cancel the stream if abandoned.

        A file's data must be exactly the size its provider announced (TransferFailed),
        and no download may pass ``max_bytes`` (DownloadTooLarge): nothing the provider says
        makes this side take more than it asked for.
        """
        source = container_path(path)
        self._check()
        conn = await self._link.connected()
        window = conn.session.limits.max_window // 2 or 1
        message = Download(type="download", id=conn.new_id(), activity=self.id, path=source, window=window)
        receiver, reply = await conn.open_download(message)
        finished = False
        try:
            info = await receiver.info
            if max_bytes is not None and info.size is not None and info.size > max_bytes:
                raise DownloadTooLarge(f"{path} holds {info.size} bytes, more than max_bytes={max_bytes}")
            yield info
            total = 0
            async for chunk in receiver:
                total += len(chunk)
                self.moved += len(chunk)
                if info.kind == "file" and info.size is not None and total > info.size:
                    raise TransferFailed(f"{path}: the provider sent more than the {info.size} bytes it announced")
                if max_bytes is not None and total > max_bytes:
                    raise DownloadTooLarge(f"{path} is larger than max_bytes={max_bytes}")
                yield chunk
            if info.kind == "file" and info.size is not None and total != info.size:
                raise TransferFailed(f"{path}: the provider sent {total} of the {info.size} bytes it announced")
            done = await reply
            assert isinstance(done, Done)
            finished = True
        finally:
            if not finished:
                if not reply.done():
                    reply.cancel()
                    await _quietly(conn.cancel(message.id))
                elif not reply.cancelled():
                    reply.exception()

    async def download_bytes(self, path: str, *, max_bytes: int = DOWNLOAD_BYTES_LIMIT) -> bytes:
        """The content of the file ``path``; :class:`DownloadTooLarge` if it is over ``max_bytes``."""
        parts: list[memoryview] = []
        stream = self._download(path, max_bytes)
        try:
            async for item in stream:
                if isinstance(item, DownloadInfo):
                    _require_file(path, item)
                else:
                    parts.append(item)
        finally:
            await stream.aclose()
        return b"".join(parts)

    async def download_json(self, path: str, *, max_bytes: int = 64 * 1024 * 1024) -> Any:
        """The JSON value in the file ``path``."""
        data = await self.download_bytes(path, max_bytes=max_bytes)
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise UsageError(f"{path} does not hold valid JSON: {e}") from e

    async def download_file(self, path: str, dest: str | os.PathLike[str], *, max_bytes: int | None = None) -> Path:
        """Stream the file or folder ``path`` to the local ``dest`` and return ``dest``.

        A file is written to ``dest`` through a temporary file beside it, so a failed
        transfer leaves nothing half-written. A folder's contents are extracted into the
        folder ``dest`` as they arrive (nothing is spooled); no entry can land outside it
        (absolute names, ``..`` and links out are refused), and a crafted archive is a
        TransferFailed.

        ``max_bytes`` bounds what is taken, a folder's archive included: by default what the
        activity could have written, the storage it rented (256 MiB when it named none), so a
        provider cannot fill the local disk with more. Past it the download stops with
        :class:`DownloadTooLarge`; pass a larger ``max_bytes`` to take more (or a smaller one).
        """
        target = Path(dest)
        stream = self._download(path, self.storage if max_bytes is None else max_bytes)
        try:
            info = await anext(stream)
            assert isinstance(info, DownloadInfo)
            if info.kind == "file":
                await self._save_file(info, stream, target)
            else:
                loop = asyncio.get_running_loop()

                def pull() -> memoryview | None:
                    item = asyncio.run_coroutine_threadsafe(anext(stream, None), loop).result()
                    assert not isinstance(item, DownloadInfo)
                    return item

                await asyncio.to_thread(extract, pull, target)
        finally:
            await stream.aclose()
        return target

    @staticmethod
    async def _save_file(info: DownloadInfo, chunks: AsyncIterator[DownloadInfo | memoryview], target: Path) -> None:
        try:
            await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
            fd, spool = await asyncio.to_thread(tempfile.mkstemp, dir=target.parent, prefix=".kiln-", suffix=".part")
        except OSError as e:
            raise UsageError(f"cannot write into {target.parent}: {e.strerror or e}") from e
        try:
            with os.fdopen(fd, "wb") as out:  # already open: nothing blocks here
                async for chunk in chunks:
                    assert not isinstance(chunk, DownloadInfo)  # only the first item is the info
                    await asyncio.to_thread(out.write, chunk)
            await asyncio.to_thread(os.chmod, spool, info.mode & 0o777)
            await asyncio.to_thread(os.replace, spool, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spool)  # left only when the transfer failed

    # --- ports (1.7) ---------------------------------------------------------------------------

    async def connect(self, port: int, *, limit: int = ports.STREAM_LIMIT) -> ports.Streams:
        """Open a TCP connection to ``127.0.0.1:port`` inside the container (its own loopback,
        which exists though it has no network) and return ``(reader, writer)``, asyncio streams::

            reader, writer = await act.connect(8080)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            writer.write_eof()  # a half-close: the service reads EOF
            answer = await reader.read()  # until the service closes its side
            writer.close()

        Flow-controlled both ways (see :mod:`kiln.requestor.ports`). Raises
        :class:`~kiln.protocol.errors.ConnectionRefused` when nothing listens on ``port``; a
        failure later (the provider lost, the service reset the connection) is what a read,
        or ``drain()``, raises. Needs a hub and provider that speak protocol 1.7.
        """
        ports.check_port(port)
        self._check()
        return await ports.open_connection(await self._link.connected(), self.id, port, limit=limit)

    async def forward(self, port: int, local_port: int = 0, host: str = "127.0.0.1") -> ports.Forward:
        """Listen on ``host:local_port`` here (0: a free port, see ``.port``) and carry every
        connection accepted to ``port`` in the container, each over a :meth:`connect` of its own::

            async with await act.forward(8080) as fwd:
                urllib.request.urlopen(f"http://{fwd.host}:{fwd.port}/")
        """
        ports.check_port(port)
        self._check()
        return await ports.forward(lambda: self.connect(port), f"{self.id}:{port}", local_port=local_port, host=host)

    async def publish(self, port: int) -> ports.Publication:
        """Have the hub serve ``port`` as HTTP at an unguessable URL of its own (``.url``), for a
        browser, until ``revoke()`` (or :meth:`unpublish`) or the activity's end."""
        ports.check_port(port)
        self._check()
        conn = await self._link.connected()
        published = await conn.request(Publish(type="publish", id=conn.new_id(), activity=self.id, port=port))
        assert isinstance(published, Published)
        return ports.Publication(published.url, published.token, self.id, port, self.unpublish)

    async def unpublish(self, token: str) -> None:
        """The URL that :meth:`publish` gave with ``token`` serves nothing from now on (404), and the
        connections it carries close. Raises :class:`~kiln.protocol.errors.ActivityError`
        (``not_published``) for a token that is not published, or is another requestor's."""
        conn = await self._link.connected()
        await conn.request(Unpublish(type="unpublish", id=conn.new_id(), token=token))

    # --- release ---------------------------------------------------------------------------

    async def release(self) -> None:
        """Destroy the container and free its capacity. Safe to call twice.

        Once begun, a release runs to its end even if the caller is cancelled meanwhile
        (the cancellation is raised afterwards), so no container outlives its job.
        """
        if self.released or self.lost is not None:
            self.released = True
            return
        self.released = True
        releasing = asyncio.ensure_future(self._release())
        try:
            await asyncio.shield(releasing)
        except asyncio.CancelledError:
            with contextlib.suppress(KilnError):
                await releasing
            raise
        finally:
            self._on_released(self)

    async def _release(self) -> None:
        try:
            conn = await self._link.connected()
            done = await conn.request(Release(type="release", id=conn.new_id(), activity=self.id))
        except ProviderLost:
            return  # gone already: nothing left to release
        if isinstance(done, Done) and done.cpu_seconds is not None:
            self.cpu_seconds = done.cpu_seconds


def _require_file(path: str, info: DownloadInfo) -> None:
    if info.kind != "file":
        raise FileNotFound(f"{path} is a folder, not a file (use download_file for folders)", ErrorCode.NOT_A_FILE)


async def _quietly(action: Any) -> None:
    """Best effort on the way out (cancelling, aborting): the connection may be gone."""
    try:
        await action
    except KilnError:
        pass


def _result(argv: Sequence[str], timeout: float | None, reply: Message) -> Result:
    """The Result an ``exec_result`` tells; :class:`CommandTimeout` when the command ran out of time."""
    assert isinstance(reply, ExecResult)
    result = Result(
        exit_code=reply.exit_code,
        stdout_bytes=base64.b64decode(reply.stdout),
        stderr_bytes=base64.b64decode(reply.stderr),
        duration=reply.duration,
        timed_out=reply.timed_out,
        stdout_truncated=reply.stdout_truncated,
        stderr_truncated=reply.stderr_truncated,
    )
    if result.timed_out:
        raise CommandTimeout(f"{argv[0]!r} ran past its timeout of {timeout or 0:g} s and was killed", result)
    return result


def _failure_text(argv: Sequence[str], result: Result) -> str:
    """``'make' exited with code 2: <the last line of its stderr>``."""
    lines = result.stderr.strip().splitlines()
    last = lines[-1] if lines else ""
    shown = last if len(last) <= FAILURE_LINE else last[: FAILURE_LINE - 1] + "…"
    return f"{argv[0]!r} exited with code {result.exit_code}" + (f": {shown}" if shown else "")


class _Input:
    """A command's input, sent in the background on its exec's stream within the credit granted.

    A local file is opened at once (a missing one fails before anything is sent); a source
    that fails midway aborts the stream (the command is killed) and is what the exec raises.
    """

    def __init__(self, stdin: Stdin) -> None:
        self.failed: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._file = None
        if isinstance(stdin, os.PathLike):
            try:
                self._file = Path(stdin).open("rb")  # noqa: SIM115 - closed when the feed ends
            except OSError as e:
                raise FileNotFound(f"cannot read local file {stdin}: {e.strerror}") from e
        self._stdin = stdin

    def start(self, sender: Outgoing) -> None:
        self._task = asyncio.get_running_loop().create_task(self._feed(sender), name="kiln-stdin")

    async def _feed(self, sender: Outgoing) -> None:
        chunks = self._chunks()
        try:
            while True:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except Exception as e:  # noqa: BLE001 - any failure of the source: the command is killed
                    self.failed = e
                    await _quietly(sender.abort(f"the requestor's input failed: {e}"))
                    return
                await sender.write(chunk)
            await sender.end()
        except KilnError:
            pass  # the exec ended (or failed) first: its reply says how
        finally:
            await chunks.aclose()

    async def _chunks(self) -> AsyncGenerator[bytes | memoryview, None]:
        stdin = self._stdin
        if isinstance(stdin, str):
            yield stdin.encode()
        elif isinstance(stdin, bytes | bytearray | memoryview):
            yield memoryview(stdin)
        elif self._file is not None:
            while block := await asyncio.to_thread(self._file.read, READ_BYTES):
                yield block
        else:
            async for chunk in stdin:  # type: ignore[union-attr]
                yield chunk

    async def stop(self, error: BaseException | None = None) -> None:
        """Stop sending (the exec is over); raise the source's failure instead of ``error``, if it failed."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._file is not None:
            self._file.close()
        if error is not None and self.failed is not None:
            raise self.failed from error
