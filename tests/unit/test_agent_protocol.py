"""The agent's wire format, pure: literal bytes in, messages out, and every bound refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kiln_provider.agent_protocol import (
    AGENT_MAX_LENGTH,
    ATTACH_HEADER,
    FROM_AGENT,
    MAX_CHUNK,
    PROVIDER_MAX_LENGTH,
    TO_AGENT,
    AttachStream,
    Credit,
    Decoder,
    Exit,
    FrameType,
    Hello,
    Kill,
    Message,
    Output,
    Refused,
    RefusedReason,
    Spawn,
    SpawnError,
    Started,
    Stdin,
    StdinAck,
    decode_frame,
    encode,
)
from kiln_provider.errors import AgentMisuse, AgentViolation, ProviderError

SPEC = next(p / "agent" / "PROTOCOL.md" for p in Path(__file__).resolve().parents if (p / "agent").is_dir())
"""The agent's wire format, specified (found from wherever this test's tier folder is)."""


def frame(kind: int, id: int, payload: bytes, length: int | None = None) -> bytes:
    size = 5 + len(payload) if length is None else length
    return size.to_bytes(4, "big") + bytes([kind]) + id.to_bytes(4, "big") + payload


def test_spawn_bytes_are_the_documented_layout() -> None:
    data = encode(Spawn(7, ("echo", "hi"), {"A": "b"}, workdir="/w", uid=1, gid=2, credit=3))
    payload = bytes.fromhex(
        "00000001 00000002 00000003"  # uid, gid, credit
        "00000002 2f77"  # workdir: "/w"
        "00000002 00000004 6563686f 00000002 6869"  # argv: "echo", "hi"
        "00000001 00000003 413d62"  # env: "A=b"
    )
    assert data == frame(0x01, 7, payload)


def test_agent_frames_decode_from_literal_bytes() -> None:
    stream = (
        frame(0x81, 0, bytes.fromhex("00000001 00100000 00040000"))
        + frame(0x82, 5, bytes.fromhex("0000002a"))
        + frame(0x83, 5, b"out")
        + frame(0x84, 5, b"err")
        + frame(0x87, 5, bytes.fromhex("00000003"))
        + frame(0x85, 5, bytes.fromhex("00 00000003"))
        + frame(0x85, 6, bytes.fromhex("01 00000009"))
        + frame(0x86, 8, bytes.fromhex("00000002") + b"exec failed: No such file or directory")
        + frame(0x88, 9, bytes([3]) + b"no such command")
    )
    assert Decoder().feed(stream) == [
        Hello(1, 1 << 20, 256 * 1024),
        Started(5, 42),
        Output(5, FrameType.STDOUT, b"out"),
        Output(5, FrameType.STDERR, b"err"),
        StdinAck(5, 3),
        Exit(5, 3, None),
        Exit(6, None, 9),
        SpawnError(8, 2, "exec failed: No such file or directory"),
        Refused(9, RefusedReason.UNKNOWN_ID, "no such command"),
    ]


ALL: list[Message] = [
    Spawn(1, ("sh", "-c", "echo é"), {"PATH": "/bin", "EMPTY": ""}, "/tmp", 0, 0, 65536),
    Spawn(2, ("true",)),
    Stdin(1, b"data"),
    Stdin(1, b""),
    Kill(3),
    Credit(4, 2**32 - 1),
    Hello(1, PROVIDER_MAX_LENGTH, 262144),
    Started(1, 9),
    Output(1, FrameType.STDOUT, b"x" * MAX_CHUNK),
    Output(1, FrameType.STDERR, b"e"),
    Exit(1, 0, None),
    Exit(1, None, 15),
    SpawnError(1, 13, "setuid failed: Operation not permitted"),
    StdinAck(1, 4),
    Refused(0, RefusedReason.TOO_LONG, "frame too long"),
]


@pytest.mark.parametrize("message", ALL, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: Message) -> None:
    decoder = Decoder(accept=FROM_AGENT | TO_AGENT, max_length=PROVIDER_MAX_LENGTH)
    assert decoder.feed(encode(message)) == [message]
    assert decoder.pending == 0


def test_a_stream_fed_byte_by_byte_gives_the_same_messages() -> None:
    stream = b"".join(encode(m) for m in ALL if isinstance(m, Started | Output | Exit | StdinAck))
    decoder = Decoder()
    got: list[Message] = []
    for i in range(len(stream)):
        got += decoder.feed(stream[i : i + 1])
    assert got == [m for m in ALL if isinstance(m, Started | Output | Exit | StdinAck)]


@pytest.mark.parametrize("size", [1, 2, 8, 9, 10, 13, 4096, 32777, 70000])
def test_a_stream_cut_anywhere_gives_the_same_messages(size: int) -> None:
    # Several frames in one piece, a frame across pieces, a piece ending inside a header.
    messages: list[Message] = [
        Started(1, 7),
        *(Output(1, FrameType.STDOUT, bytes([i]) * 32768) for i in range(3)),
        Output(1, FrameType.STDERR, b"e"),
        Exit(1, 0, None),
    ]
    stream = b"".join(encode(m) for m in messages)
    decoder = Decoder()
    got: list[Message] = []
    for at in range(0, len(stream), size):
        got += decoder.feed(stream[at : at + size])
    assert got == messages
    assert decoder.pending == 0


def attached(*pieces: tuple[int, bytes]) -> bytes:
    """What Docker writes on an attach stream: each piece behind its 8-byte header."""
    return b"".join(bytes([kind, 0, 0, 0]) + len(data).to_bytes(4, "big") + data for kind, data in pieces)


@pytest.mark.parametrize("size", [1, 3, 8, 9, 100, 32768, 1 << 20])
def test_the_attach_stream_splits_into_stdout_and_stderr_wherever_it_is_cut(size: int) -> None:
    pieces = [(1, b"a" * 32768), (2, b"warning\n"), (1, b""), (1, b"b" * 100), (3, b"ignored"), (1, b"c")]
    stream = attached(*pieces)
    assert len(stream) == sum(ATTACH_HEADER + len(data) for _, data in pieces)
    attach = AttachStream()
    out = err = b""
    for at in range(0, len(stream), size):
        o, e = attach.feed(stream[at : at + size])
        out, err = out + o, err + e
    assert (out, err) == (b"a" * 32768 + b"b" * 100 + b"c", b"warning\n")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (frame(0x83, 1, b"", length=AGENT_MAX_LENGTH + 1), "frame_too_long"),
        (frame(0x83, 1, b"", length=0xFFFFFFFF), "frame_too_long"),
        (frame(0x83, 1, b"", length=4) + b"\0" * 8, "frame_too_short"),
        (frame(0x42, 1, b""), "unknown_type"),
        (frame(0x01, 1, b""), "unknown_type"),  # a provider frame coming from the agent
        (frame(0x82, 1, b"\0\0\0"), "bad_payload"),
        (frame(0x82, 1, b"\0\0\0\0\0"), "bad_payload"),
        (frame(0x83, 1, b""), "bad_payload"),
        (frame(0x84, 1, b"x" * (MAX_CHUNK + 1)), "bad_payload"),
        (frame(0x85, 1, bytes.fromhex("02 00000000")), "bad_payload"),
        (frame(0x85, 1, bytes.fromhex("00")), "bad_payload"),
        (frame(0x86, 1, b"\0\0"), "bad_payload"),
        (frame(0x86, 1, b"\0\0\0\0bad\0text"), "bad_payload"),
        (frame(0x88, 1, bytes([99]) + b"?"), "bad_payload"),
        (frame(0x88, 1, b""), "bad_payload"),
        (frame(0x81, 0, b"\0" * 11), "bad_payload"),
    ],
)
def test_the_decoder_refuses_what_the_agent_may_not_send(data: bytes, reason: str) -> None:
    decoder = Decoder()
    with pytest.raises(AgentViolation) as caught:
        decoder.feed(data)
    assert caught.value.reason == reason
    assert isinstance(caught.value, ProviderError)
    assert caught.value.code == "container_failed"
    with pytest.raises(AgentViolation):  # the framing is lost for good
        decoder.feed(encode(Started(1, 1)))


def test_an_oversized_length_is_refused_before_its_body_arrives() -> None:
    with pytest.raises(AgentViolation, match="exceeds"):
        Decoder().feed(frame(0x83, 1, b"", length=AGENT_MAX_LENGTH + 1)[:9])


def test_a_partial_frame_waits_and_is_reported_as_pending() -> None:
    decoder = Decoder()
    data = encode(Output(1, FrameType.STDOUT, b"hello"))
    assert decoder.feed(data[:-1]) == []
    assert decoder.pending == len(data) - 1
    assert decoder.feed(data[-1:]) == [Output(1, FrameType.STDOUT, b"hello")]


@pytest.mark.parametrize(
    "payload",
    [
        bytes.fromhex("00000000 00000000 00000000 00000000 00000000 00000000"),  # no program
        bytes.fromhex("00000000 00000000 00000000 00000009"),  # workdir overruns
        bytes.fromhex("00000000 00000000 00000000 00000000 ffffffff"),  # argc overruns
        bytes.fromhex("00000000 00000000 00000000 00000000 00000001 00000001 78 00000001 00000001 78"),  # env "x"
        bytes.fromhex("00000000 00000000 00000000 00000000 00000001 00000002 6100 00000000"),  # NUL in an argument
        bytes.fromhex("00000000 00000000 00000000 00000000 00000001 00000001 61 00000000 00"),  # trailing byte
    ],
)
def test_bad_spawn_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(AgentViolation):
        decode_frame(0x01, 1, payload)


@pytest.mark.parametrize(
    "message",
    [
        Spawn(1, ()),
        Spawn(1, ("a\0b",)),
        Spawn(1, ("true",), {"A=B": "c"}),
        Spawn(1, ("true",), {"": "c"}),
        Spawn(1, ("true",), {"A": "\0"}),
        Spawn(1, ("true",), workdir="/\0"),
        Spawn(1, ("true",), uid=-1),
        Spawn(1, ("true",), gid=2**32),
        Spawn(2**32, ("true",)),
        Credit(1, -1),
        Stdin(1, b"x" * PROVIDER_MAX_LENGTH),
        Output(1, FrameType.EXIT, b"x"),
        Exit(1, None, None),
        Exit(1, 0, 9),
    ],
)
def test_what_the_protocol_cannot_carry_is_a_local_mistake(message: Message) -> None:
    with pytest.raises(AgentMisuse):
        encode(message)


def test_the_kinds_and_reasons_are_those_agent_protocol_md_specifies() -> None:
    spec = SPEC.read_text()
    kinds = {int(code, 16): name for code, name in re.findall(r"^\| `0x([0-9a-f]{2})` \| (\w+) \|", spec, re.M)}
    assert kinds == {kind.value: kind.name for kind in FrameType}
    reasons = {int(code): name for code, name in re.findall(r"^\| (\d) \| `([a-z ]+)` \|", spec, re.M)}
    assert reasons == {reason.value: reason.name.lower().replace("_", " ") for reason in RefusedReason}
    for limit in (PROVIDER_MAX_LENGTH, MAX_CHUNK, 256 * 1024):
        assert f"{limit:,}" in spec
