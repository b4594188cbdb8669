"""The provider's end of a container's agent channel: commands in, output and exit statuses out.

Every task container runs ``kiln-agent`` (``agent/kiln-agent.c``) as PID 1, and the provider
talks to it over the container's attach stream (no TTY), as ``agent/PROTOCOL.md`` specifies:
frames to the agent on the container's stdin, frames from it on its stdout, which Docker
multiplexes with the agent's stderr behind 8-byte headers. :class:`AgentChannel` reads that
stream on the event loop (no thread per command), decodes it with the bounded
:class:`~kiln_provider.agent_protocol.Decoder` and settles each command. What comes from the
container is untrusted: a frame out of place, or garbage, breaks the channel and fails every
command of that container with ``container_failed``; the provider goes on. The agent's stderr
lines (why it stopped; with ``KILN_AGENT_DEBUG=1``, every frame) are logged at DEBUG on
``kiln.provider.agent``.

A command's input comes from an async iterator of chunks (an exec's ``stdin`` stream),
fed within the agent's stdin window; its output is either collected (capped, as ``run``
returns it) or handed to a sink as it comes (an exec's ``stream``). A sink is fed in
order, and the agent gets more output credit only as the sink takes what it has: a sink
that waits (a requestor that does not read) stops the command at its next write, with at
most :data:`OUTPUT_WINDOW` bytes of its output held here.

When the channel closes — the provider removed the container, or died — the agent kills
every process and exits, and Docker removes the container (it was created to be removed
on exit): no container outlives its provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from kiln_provider import agent_protocol as wire
from kiln_provider.errors import AgentViolation, DockerFailed

log = logging.getLogger("kiln.provider.agent")

HELLO_TIMEOUT: Final = 10.0
"""How long a new container's agent may take to say hello."""
KILL_GRACE: Final = 5.0
"""How long a killed command may take to report its end."""
OUTPUT_WINDOW: Final = 1024 * 1024
"""Output bytes the provider lets a command have in flight: it grants more as it takes them."""
_READ_BYTES: Final = 256 * 1024
_LINE_BYTES: Final = 1024
"""The longest line of the agent's stderr logged whole (its own are shorter)."""
Sink: TypeAlias = Callable[[int, bytes], Awaitable[None]]
"""Takes a command's output as it comes: (1 for stdout or 2 for stderr, bytes)."""
_NO_SUCH_PROGRAM: Final = {2: 127, 20: 126, 13: 126, 8: 126}  # ENOENT, ENOTDIR, EACCES, ENOEXEC


@dataclass
class Outcome:
    """How a command ended, as ``docker exec`` would tell it."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool
    killed: bool
    duration: float


@dataclass
class _Command:
    max_output: int
    streaming: bool = False  # output goes to a sink (see _pump), not into ``out``
    started: float = field(default_factory=time.monotonic)
    out: list[bytearray] = field(default_factory=lambda: [bytearray(), bytearray()])
    truncated: list[bool] = field(default_factory=lambda: [False, False])
    credit: int = OUTPUT_WINDOW  # output bytes the agent may still send: more is a violation
    taken: int = 0  # output bytes taken since the last credit
    queue: deque[tuple[int, bytes]] = field(default_factory=deque)  # streaming: output not yet sunk
    queued: asyncio.Event = field(default_factory=asyncio.Event)
    unacked: int = 0  # stdin bytes sent and not yet acknowledged
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Future[wire.Exit | wire.SpawnError] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def keep(self, index: int, data: bytes) -> None:
        room = self.max_output - len(self.out[index])
        if len(data) > room:
            self.truncated[index] = True
        if room > 0:
            self.out[index] += data[:room]


class AgentChannel:
    """One container's agent, over a socket attached to the container's stdin and stdout."""

    def __init__(
        self, sock: socket.socket, name: str, uid: int, gid: int, on_failure: Callable[[], None] = lambda: None
    ) -> None:
        """``on_failure`` is called once if the channel breaks other than by :meth:`close` (the
        agent broke its protocol, said no hello, or the container ended): the provider counts them."""
        self._sock = sock
        self._on_failure = on_failure
        self._name = name
        self.uid, self.gid = uid, gid
        """Who commands run as (the agent runs as them too: without capabilities it cannot switch)."""
        self._decoder = wire.Decoder()
        self._commands: dict[int, _Command] = {}
        self._next_id = 0
        self._hello: asyncio.Future[wire.Hello] = asyncio.get_running_loop().create_future()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self.broken: DockerFailed | None = None
        """Why the channel is over, once it is."""

    async def open(self) -> wire.Hello:
        """Start reading the channel and wait for the agent's hello."""
        self._sock.setblocking(False)
        self._reader, self._writer = await asyncio.open_connection(sock=self._sock, limit=2**20)
        self._task = asyncio.get_running_loop().create_task(self._read(), name=f"kiln-agent-{self._name}")
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                return await asyncio.shield(self._hello)
        except TimeoutError:
            self._break(DockerFailed(f"the agent of {self._name} said nothing for {HELLO_TIMEOUT:g} s"))
            raise self.broken from None  # type: ignore[misc]

    async def run(
        self,
        argv: list[str],
        env: Mapping[str, str],
        workdir: str | None,
        timeout: float | None,
        max_output: int,
        *,
        stdin: AsyncIterator[bytes | memoryview] | None = None,
        sink: Sink | None = None,
        sink_chunk: int = 256 * 1024,
    ) -> Outcome:
        """Run ``argv`` to its end (killed, with its whole tree, after ``timeout`` seconds or when cancelled).

        ``stdin`` feeds the command's input (none: it is empty); an error it raises kills the
        command and is raised here. With ``sink``, the output goes there as it comes, in
        pieces of at most ``sink_chunk`` bytes, all of it before this returns (the Outcome's
        ``stdout``/``stderr`` are then empty); an error the sink raises kills the command
        and is raised here.
        """
        if self.broken is not None:
            raise self.broken
        self._next_id = self._next_id % 0xFFFFFFFF + 1
        id_ = self._next_id
        command = self._commands[id_] = _Command(max_output, streaming=sink is not None)
        timed_out = killed = False
        helpers: list[asyncio.Task[None]] = []
        try:
            spawn = wire.Spawn(id_, tuple(argv), dict(env), workdir or "", self.uid, self.gid, OUTPUT_WINDOW)
            await self._send(spawn, *([wire.Stdin(id_, b"")] if stdin is None else []))  # no input: at its end
            loop = asyncio.get_running_loop()
            if stdin is not None:
                helpers.append(loop.create_task(self._feed(id_, command, stdin)))
            if sink is not None:
                helpers.append(loop.create_task(self._pump(id_, command, sink, sink_chunk)))
            try:
                async with asyncio.timeout(timeout):
                    end = await self._until_end(command, helpers)
            except TimeoutError:
                timed_out = True
                end = await self._kill(id_, command)
            except asyncio.CancelledError:
                killed = True
                with contextlib.suppress(Exception):
                    self._write(wire.Kill(id_))
                raise
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._kill(id_, command)
                raise
            if sink is not None:
                command.queue.append((0, b""))  # the end: the pump stops once it has sunk the rest
                command.queued.set()
                await helpers[-1]
        finally:
            self._commands.pop(id_, None)
            for helper in helpers:
                helper.cancel()
            for helper in helpers:
                with contextlib.suppress(BaseException):
                    await helper
        stdout, stderr = bytes(command.out[0]), bytes(command.out[1])
        if isinstance(end, wire.SpawnError):
            # As docker exec tells it: 127 for a program not found, 126 for one that cannot run;
            # and why, on the command's stderr (streamed as any output when there is a sink).
            code = _NO_SUCH_PROGRAM.get(end.errno, 126)
            stderr = f"cannot run {argv[0]!r}: {end.message}\n".encode()
            if sink is not None:
                await sink(2, stderr)
                stderr = b""
        else:
            code = end.code if end.code is not None else 128 + (end.signal or 9)
        duration = time.monotonic() - command.started
        truncated = command.truncated
        return Outcome(code, stdout, stderr, truncated[0], truncated[1], timed_out, killed, duration)

    @staticmethod
    async def _until_end(command: _Command, helpers: list[asyncio.Task[None]]) -> wire.Exit | wire.SpawnError:
        """The command's end; or the error of its input or its sink, if one fails first."""
        ended: asyncio.Future[wire.Exit | wire.SpawnError] = asyncio.ensure_future(asyncio.shield(command.ended))
        waiting: set[asyncio.Future[Any]] = {ended, *helpers}
        try:
            while not ended.done():
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for helper in done - {ended}:
                    helper.result()  # an input that ended is fine; one that failed ends the command
            return ended.result()
        finally:
            ended.cancel()

    async def _feed(self, id_: int, command: _Command, chunks: AsyncIterator[bytes | memoryview]) -> None:
        """Write the command's input within the agent's stdin window, then close it (EOF)."""
        window = self._hello.result().stdin_window
        async for chunk in chunks:
            view = memoryview(chunk)
            while view:
                while command.unacked >= window:
                    command.acked.clear()
                    await command.acked.wait()
                piece = view[: window - command.unacked]
                command.unacked += len(piece)
                await self._send(wire.Stdin(id_, bytes(piece)))
                view = view[len(piece) :]
        await self._send(wire.Stdin(id_, b""))

    async def _pump(self, id_: int, command: _Command, sink: Sink, limit: int) -> None:
        """Hand the command's output to ``sink`` in order (joining small pieces of one stream),
        and give the agent credit for what the sink took."""
        while True:
            while not command.queue:
                command.queued.clear()
                await command.queued.wait()
            fd, data = command.queue.popleft()
            if not data:
                return  # the end (see run)
            if command.queue and command.queue[0][0] == fd:
                pieces, size = [data], len(data)
                while command.queue and command.queue[0][0] == fd and size + len(command.queue[0][1]) <= limit:
                    piece = command.queue.popleft()[1]
                    pieces.append(piece)
                    size += len(piece)
                data = b"".join(pieces)  # one copy, however many pieces
            for start in range(0, len(data), limit):
                await sink(fd, data[start : start + limit])
            command.taken += len(data)
            # Credit in batches (few frames), and before the queue runs dry (no stall).
            if not command.ended.done() and (command.taken >= OUTPUT_WINDOW // 4 or not command.queue):
                await self._send(wire.Credit(id_, command.taken))
                command.credit += command.taken
                command.taken = 0

    async def _kill(self, id_: int, command: _Command) -> wire.Exit | wire.SpawnError:
        await self._send(wire.Kill(id_))
        try:
            async with asyncio.timeout(KILL_GRACE):
                return await asyncio.shield(command.ended)
        except TimeoutError:
            raise DockerFailed(f"the agent of {self._name} did not end a killed command in {KILL_GRACE:g} s") from None

    async def close(self) -> None:
        """Stop reading and close the channel (the agent then ends everything and exits)."""
        self._break(DockerFailed(f"the container {self._name} is being removed"), ours=True)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- the stream ----------------------------------------------------------------------------

    def _write(self, *messages: wire.ToAgent) -> None:
        if self.broken is not None:
            raise self.broken
        assert self._writer is not None
        self._writer.write(b"".join(wire.encode(m) for m in messages))

    async def _send(self, *messages: wire.ToAgent) -> None:
        self._write(*messages)
        assert self._writer is not None
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as e:
            self._break(DockerFailed(f"the container {self._name} is gone: {e}"))
            raise self.broken from e  # type: ignore[misc]

    async def _read(self) -> None:
        assert self._reader is not None
        reason: DockerFailed = DockerFailed(f"the container {self._name} ended (its agent closed the channel)")
        try:
            attach = wire.AttachStream()
            diagnostics = bytearray()  # the agent's stderr: a line not yet whole
            while data := await self._reader.read(_READ_BYTES):
                out, err = attach.feed(data)
                if out:
                    self._take(self._decoder.feed(out))
                if err and log.isEnabledFor(logging.DEBUG):
                    self._log_lines(diagnostics, err)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except AgentViolation as e:
            reason = DockerFailed(f"the container {self._name} broke its agent's protocol: {e.message}")
            log.warning("%s", reason.message)
        finally:
            self._break(reason)

    def _log_lines(self, pending: bytearray, data: bytes) -> None:
        """Log the agent's stderr a line at a time: ``data`` is its next bytes, ``pending`` holds
        a line not yet ended (a bounded one: past :data:`_LINE_BYTES` it is logged as it is)."""
        pending += data
        *lines, rest = pending.split(b"\n")
        if len(rest) > _LINE_BYTES:
            lines.append(rest)
            rest = bytearray()
        pending[:] = rest
        for line in lines:
            if line:
                log.debug("agent of %s: %s", self._name, line[:_LINE_BYTES].decode(errors="replace").rstrip())

    def _take(self, messages: list[wire.Message]) -> None:
        for message in messages:
            if isinstance(message, wire.Hello):
                if not self._hello.done():
                    self._hello.set_result(message)
                continue
            if isinstance(message, wire.Refused):
                self._refused(message)
                continue
            command = self._commands.get(message.id)
            if command is None or command.ended.done():
                continue  # a command we gave up on (killed or cancelled): its last words
            if isinstance(message, wire.Output):
                command.credit -= len(message.data)
                if command.credit < 0:
                    raise AgentViolation(f"output beyond the credit of command {message.id}", reason="over_credit")
                fd = 1 if message.stream is wire.FrameType.STDOUT else 2
                if command.streaming:
                    command.queue.append((fd, message.data))
                    command.queued.set()
                    continue
                command.keep(fd - 1, message.data)
                command.taken += len(message.data)
                if command.taken >= OUTPUT_WINDOW // 2:
                    # Output beyond the cap is read and dropped, so the command never blocks on it.
                    self._writer.write(wire.encode(wire.Credit(message.id, command.taken)))  # type: ignore[union-attr]
                    command.credit += command.taken
                    command.taken = 0
            elif isinstance(message, wire.StdinAck):
                command.unacked = max(command.unacked - message.amount, 0)
                command.acked.set()
            elif isinstance(message, wire.Exit | wire.SpawnError):
                command.ended.set_result(message)

    def _refused(self, message: wire.Refused) -> None:
        """A frame the agent refused: a warning, unless it only crossed its command's end. The
        agent forgets a command once it has exited, so a credit or stdin frame already on its
        way is refused as for no such command; that is expected, and said at debug level."""
        command = self._commands.get(message.id)
        crossed = (
            message.reason is wire.RefusedReason.UNKNOWN_ID
            and 0 < message.id <= self._next_id
            and (command is None or command.ended.done())
        )
        level = logging.DEBUG if crossed else logging.WARNING
        log.log(level, "the agent of %s refused a frame: %s", self._name, message.message)

    def _break(self, reason: DockerFailed, *, ours: bool = False) -> None:
        if self.broken is not None:
            return
        self.broken = reason
        if not ours:
            self._on_failure()
        if not self._hello.done():
            self._hello.set_exception(reason)
            self._hello.exception()  # seen here: open() raises it
        for command in self._commands.values():
            if not command.ended.done():
                command.ended.set_exception(reason)
        if self._writer is not None:
            self._writer.close()
        else:
            self._sock.close()
