"""The wire format between the provider and ``kiln-agent``, PID 1 of a task container: pure, no I/O.

``agent/PROTOCOL.md`` specifies it (frames, kinds, fields, limits, order, refusals); this
module is the provider's side of it. Messages are frozen dataclasses named for the frame
kinds; :func:`encode` turns one into bytes and :class:`Decoder` turns a byte stream back
into messages.

Use: ``data = encode(Spawn(...))`` and write it to the agent; feed whatever the agent wrote
to :meth:`Decoder.feed`, which returns the complete messages so far. What the agent sends
is untrusted: the decoder bounds every frame (``max_length``), accepts only the agent's
frame types and checks every payload, raising :class:`~kiln_provider.errors.AgentViolation`
(its ``reason`` says which rule broke). A message this side cannot encode (a NUL in an
argument, a number out of range) raises :class:`~kiln_provider.errors.AgentMisuse`.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from kiln_provider.errors import AgentMisuse, AgentViolation

VERSION = 1
HEADER = struct.Struct(">IBI")
"""length, type, id: the 9 bytes before every payload."""
MAX_CHUNK = 32 * 1024
"""The largest STDOUT/STDERR payload the agent sends."""
AGENT_MAX_LENGTH = 5 + MAX_CHUNK + 1024
"""The largest length field accepted from the agent (its frames are a chunk at most, plus slack for ERROR text)."""
PROVIDER_MAX_LENGTH = 1 << 20
"""The largest length field the agent accepts from us."""
_U32 = 0xFFFFFFFF


class FrameType(enum.IntEnum):
    SPAWN = 0x01
    STDIN = 0x02
    KILL = 0x03
    CREDIT = 0x04
    HELLO = 0x81
    STARTED = 0x82
    STDOUT = 0x83
    STDERR = 0x84
    EXIT = 0x85
    ERROR = 0x86
    STDIN_ACK = 0x87
    REFUSED = 0x88


class RefusedReason(enum.IntEnum):
    """Why the agent refused one of our frames (REFUSED); TOO_LONG is the only fatal one."""

    BAD_TYPE = 1
    BAD_PAYLOAD = 2
    UNKNOWN_ID = 3
    ID_IN_USE = 4
    TOO_LONG = 5
    TOO_MANY = 6
    STDIN_OVERRUN = 7
    STDIN_CLOSED = 8


# ---- provider -> agent ----------------------------------------------------------------------


@dataclass(frozen=True)
class Spawn:
    """Start ``argv`` with exactly ``env``; ``workdir=""`` keeps the container's."""

    id: int
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    workdir: str = ""
    uid: int = 65534
    gid: int = 65534
    credit: int = 0
    """Output bytes the agent may send before the first CREDIT."""


@dataclass(frozen=True)
class Stdin:
    """Bytes for the command's stdin; ``b""`` closes it."""

    id: int
    data: bytes


@dataclass(frozen=True)
class Kill:
    id: int


@dataclass(frozen=True)
class Credit:
    id: int
    amount: int


# ---- agent -> provider ----------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    version: int
    max_length: int
    """The largest frame length the agent accepts."""
    stdin_window: int
    """Unacknowledged STDIN bytes allowed per command."""
    id: int = 0


@dataclass(frozen=True)
class Started:
    id: int
    pid: int


@dataclass(frozen=True)
class Output:
    id: int
    stream: FrameType
    """FrameType.STDOUT or FrameType.STDERR."""
    data: bytes


@dataclass(frozen=True)
class Exit:
    """The main process ended: ``code`` if it exited, ``signal`` if a signal killed it (the other is None)."""

    id: int
    code: int | None
    signal: int | None


@dataclass(frozen=True)
class SpawnError:
    """The command did not run; ``errno`` is 0 when no system call failed."""

    id: int
    errno: int
    message: str


@dataclass(frozen=True)
class StdinAck:
    id: int
    amount: int


@dataclass(frozen=True)
class Refused:
    id: int
    reason: RefusedReason
    message: str


ToAgent = Spawn | Stdin | Kill | Credit
FromAgent = Hello | Started | Output | Exit | SpawnError | StdinAck | Refused
Message = ToAgent | FromAgent


def _u32(value: int, what: str) -> bytes:
    if not 0 <= value <= _U32:
        raise AgentMisuse(f"{what} {value} does not fit in a u32")
    return value.to_bytes(4, "big")


def _str(text: str, what: str) -> bytes:
    data = text.encode("utf-8", "surrogateescape")
    if b"\0" in data:
        raise AgentMisuse(f"{what} holds a NUL byte: {text!r}")
    return len(data).to_bytes(4, "big") + data


def _strs(items: Sequence[str], what: str) -> bytes:
    return len(items).to_bytes(4, "big") + b"".join(_str(item, what) for item in items)


def _payload(message: Message) -> tuple[FrameType, bytes]:
    match message:
        case Spawn():
            if not message.argv:
                raise AgentMisuse("SPAWN needs a program: argv is empty")
            for name in message.env:
                if not name or "=" in name:
                    raise AgentMisuse(f"bad environment variable name {name!r}")
            env = [f"{name}={value}" for name, value in message.env.items()]
            parts = (
                _u32(message.uid, "uid"),
                _u32(message.gid, "gid"),
                _u32(message.credit, "credit"),
                _str(message.workdir, "workdir"),
                _strs(message.argv, "argument"),
                _strs(env, "environment variable"),
            )
            return FrameType.SPAWN, b"".join(parts)
        case Stdin():
            return FrameType.STDIN, bytes(message.data)
        case Kill():
            return FrameType.KILL, b""
        case Credit():
            return FrameType.CREDIT, _u32(message.amount, "credit")
        case Hello():
            body = _u32(message.version, "version") + _u32(message.max_length, "max length")
            return FrameType.HELLO, body + _u32(message.stdin_window, "stdin window")
        case Started():
            return FrameType.STARTED, _u32(message.pid, "pid")
        case Output():
            if message.stream not in (FrameType.STDOUT, FrameType.STDERR):
                raise AgentMisuse(f"an output stream is STDOUT or STDERR, not {message.stream!r}")
            return message.stream, bytes(message.data)
        case Exit():
            if (message.code is None) == (message.signal is None):
                raise AgentMisuse("EXIT carries a code or a signal, not both or neither")
            how, value = (0, message.code) if message.code is not None else (1, message.signal)
            assert value is not None
            return FrameType.EXIT, bytes([how]) + _u32(value, "exit status")
        case SpawnError():
            return FrameType.ERROR, _u32(message.errno, "errno") + message.message.encode()
        case StdinAck():
            return FrameType.STDIN_ACK, _u32(message.amount, "ack")
        case Refused():
            return FrameType.REFUSED, bytes([message.reason]) + message.message.encode()


def encode(message: Message) -> bytes:
    """The frame for ``message``, ready to write. AgentMisuse if it cannot be encoded or is too long."""
    if not 0 <= message.id <= _U32:
        raise AgentMisuse(f"command id {message.id} does not fit in a u32")
    kind, payload = _payload(message)
    length = 5 + len(payload)
    if length > PROVIDER_MAX_LENGTH:
        raise AgentMisuse(f"{kind.name} frame of {length} bytes exceeds the agent's {PROVIDER_MAX_LENGTH}")
    return HEADER.pack(length, kind, message.id) + payload


class _Reader:
    """A cursor over one payload; every shortfall is the peer's violation."""

    def __init__(self, kind: FrameType, payload: bytes) -> None:
        self._kind = kind
        self._data = payload
        self._at = 0

    def u32(self) -> int:
        if len(self._data) - self._at < 4:
            raise AgentViolation(f"{self._kind.name} payload too short", reason="bad_payload")
        value = int.from_bytes(self._data[self._at : self._at + 4], "big")
        self._at += 4
        return value

    def u8(self) -> int:
        if self._at >= len(self._data):
            raise AgentViolation(f"{self._kind.name} payload too short", reason="bad_payload")
        self._at += 1
        return self._data[self._at - 1]

    def text(self) -> str:
        data = self.rest()
        if b"\0" in data:
            raise AgentViolation(f"{self._kind.name} text holds a NUL byte", reason="bad_payload")
        return data.decode("utf-8", "replace")

    def string(self) -> str:
        size = self.u32()
        if len(self._data) - self._at < size:
            raise AgentViolation(f"{self._kind.name} string overruns the payload", reason="bad_payload")
        data = self._data[self._at : self._at + size]
        self._at += size
        if b"\0" in data:
            raise AgentViolation(f"{self._kind.name} string holds a NUL byte", reason="bad_payload")
        return data.decode("utf-8", "surrogateescape")

    def strs(self) -> tuple[str, ...]:
        count = self.u32()
        if count * 4 > len(self._data) - self._at:
            raise AgentViolation(f"{self._kind.name} count {count} overruns the payload", reason="bad_payload")
        return tuple(self.string() for _ in range(count))

    def rest(self) -> bytes:
        data = self._data[self._at :]
        self._at = len(self._data)
        return data

    def end(self) -> None:
        if self._at != len(self._data):
            raise AgentViolation(f"{self._kind.name} payload has trailing bytes", reason="bad_payload")


def decode_frame(kind: int, id: int, payload: bytes) -> Message:
    """The message one frame carries, whichever direction; AgentViolation if it is not a valid one."""
    try:
        frame_type = FrameType(kind)
    except ValueError:
        raise AgentViolation(f"unknown frame type 0x{kind:02x}", reason="unknown_type") from None
    r = _Reader(frame_type, payload)
    message: Message
    match frame_type:
        case FrameType.SPAWN:
            uid, gid, credit, workdir = r.u32(), r.u32(), r.u32(), r.string()
            argv, env_items = r.strs(), r.strs()
            if not argv:
                raise AgentViolation("SPAWN without a program", reason="bad_payload")
            env: dict[str, str] = {}
            for item in env_items:
                name, sep, value = item.partition("=")
                if not sep or not name:
                    raise AgentViolation(f"SPAWN environment entry {item!r} is not NAME=value", reason="bad_payload")
                env[name] = value
            message = Spawn(id, argv, MappingProxyType(env), workdir, uid, gid, credit)
        case FrameType.STDIN:
            message = Stdin(id, r.rest())
        case FrameType.KILL:
            message = Kill(id)
        case FrameType.CREDIT:
            message = Credit(id, r.u32())
        case FrameType.HELLO:
            message = Hello(r.u32(), r.u32(), r.u32(), id)
        case FrameType.STARTED:
            message = Started(id, r.u32())
        case FrameType.STDOUT | FrameType.STDERR:
            data = r.rest()
            if not data or len(data) > MAX_CHUNK:
                raise AgentViolation(f"{frame_type.name} chunk of {len(data)} bytes", reason="bad_payload")
            message = Output(id, frame_type, data)
        case FrameType.EXIT:
            how, status = r.u8(), r.u32()
            if how not in (0, 1):
                raise AgentViolation(f"EXIT with unknown kind {how}", reason="bad_payload")
            message = Exit(id, status, None) if how == 0 else Exit(id, None, status)
        case FrameType.ERROR:
            message = SpawnError(id, r.u32(), r.text())
        case FrameType.STDIN_ACK:
            message = StdinAck(id, r.u32())
        case FrameType.REFUSED:
            code = r.u8()
            try:
                reason = RefusedReason(code)
            except ValueError:
                raise AgentViolation(f"REFUSED with unknown reason {code}", reason="bad_payload") from None
            message = Refused(id, reason, r.text())
    r.end()
    return message


FROM_AGENT = frozenset({t for t in FrameType if t >= 0x80})
TO_AGENT = frozenset({t for t in FrameType if t < 0x80})


class Decoder:
    """Split a byte stream into messages. Bounded: it never holds more than one frame's bytes.

    ``accept`` is the frame types this side may receive (:data:`FROM_AGENT` by default) and
    ``max_length`` the largest length field allowed. After an AgentViolation the stream is
    unusable (the framing is lost): stop reading it.
    """

    def __init__(self, accept: frozenset[FrameType] = FROM_AGENT, max_length: int = AGENT_MAX_LENGTH) -> None:
        self._accept = accept
        self._max = max_length
        self._buffer = bytearray()
        self._broken: AgentViolation | None = None

    def feed(self, data: bytes) -> list[Message]:
        """Take the next bytes of the stream; returns the messages completed by them, in order."""
        if self._broken is not None:
            raise self._broken
        # Frames are cut from ``data`` itself when nothing is pending (the usual case): each
        # payload is copied once, and only an incomplete tail is kept.
        messages: list[Message] = []
        try:
            if self._buffer:
                self._buffer += data
                if len(self._buffer) < HEADER.size or len(self._buffer) < 4 + self._length(self._buffer):
                    return messages  # still no whole frame: nothing copied
                data = bytes(self._buffer)
                self._buffer.clear()
            at, size = 0, len(data)
            while size - at >= HEADER.size:
                length = self._length(data, at)
                if size - at < 4 + length:
                    break
                _, kind, id = HEADER.unpack_from(data, at)
                messages.append(decode_frame(kind, id, data[at + HEADER.size : at + 4 + length]))
                at += 4 + length
            self._buffer += data[at:] if at else data
        except AgentViolation as e:
            self._broken = e
            self._buffer.clear()
            raise
        return messages

    def _length(self, data: bytes | bytearray, at: int = 0) -> int:
        """The length field of the frame whose header starts at ``at``, once its header is checked."""
        length, kind, _ = HEADER.unpack_from(data, at)
        if length > self._max:
            raise AgentViolation(f"frame of {length} bytes exceeds {self._max}", reason="frame_too_long")
        if length < 5:
            raise AgentViolation(f"frame length {length} is shorter than its header", reason="frame_too_short")
        if kind not in self._accept:
            raise AgentViolation(f"frame type 0x{kind:02x} not expected here", reason="unknown_type")
        return int(length)

    @property
    def pending(self) -> int:
        """Bytes of a frame not yet complete: non-zero at the stream's end means it was cut short."""
        return len(self._buffer)


ATTACH_HEADER = 8
"""The header Docker puts before each piece of a container's output on its attach stream."""


class AttachStream:
    """The stream the frames come over: a container's attach stream (no TTY), in which Docker
    puts an 8-byte header (u8 stream: 1 stdout, 2 stderr; 3 zero bytes; u32 size) before each
    piece of output. The agent's frames come on stdout, cut wherever Docker cut them (every
    32 KiB); feed what is read to :meth:`feed`, then its stdout to :class:`Decoder`."""

    def __init__(self) -> None:
        self._header = b""
        self._kind = 0
        self._left = 0

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """The stdout and the stderr bytes in ``data``, the next bytes of the stream."""
        out: list[memoryview] = []
        err: list[memoryview] = []
        view = memoryview(data)
        at, size = 0, len(data)
        while at < size:
            if not self._left:
                piece = data[at : at + ATTACH_HEADER - len(self._header)]
                self._header += piece
                at += len(piece)
                if len(self._header) == ATTACH_HEADER:
                    self._kind, self._left = self._header[0], int.from_bytes(self._header[4:8], "big")
                    self._header = b""
                continue
            take = min(self._left, size - at)
            if self._kind in (1, 2):
                (out if self._kind == 1 else err).append(view[at : at + take])
            at += take
            self._left -= take
        return b"".join(out), b"".join(err)
