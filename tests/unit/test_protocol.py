"""The pure protocol core: literal frames in, verdicts and values out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiln.protocol import ErrorCode, RemoteProtocolError, frames, parse, serialize
from kiln.protocol.frames import FrameKind
from kiln.protocol.messages import Credit, Upload
from kiln.protocol.schema import render

ROOT = Path(__file__).resolve().parents[2]
VECTORS = sorted((ROOT / "protocol" / "v1" / "vectors").glob("*.json"))


def judge(vector: dict[str, str]) -> str:
    """The verdict of this implementation on one vector: 'valid' or an error code."""
    try:
        if "binary" in vector:
            frames.decode(bytes.fromhex(vector["binary"]), max_payload=256 * 1024)
        else:
            parse(vector["frame"].encode())
    except RemoteProtocolError as e:
        return e.code.value
    return "valid"


def test_there_are_vectors_of_both_verdicts() -> None:
    verdicts = {json.loads(p.read_text())["verdict"] for p in VECTORS}
    assert "valid" in verdicts
    assert len(verdicts) >= 5


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_vector(path: Path) -> None:
    vector = json.loads(path.read_text())
    assert judge(vector) == vector["verdict"], vector["description"]


VALID_MESSAGES = [p for p in VECTORS if json.loads(p.read_text()).keys() >= {"frame"}
                  and json.loads(p.read_text())["verdict"] == "valid"]  # fmt: skip


@pytest.mark.parametrize("path", VALID_MESSAGES, ids=lambda p: p.stem)
def test_valid_messages_survive_a_round_trip(path: Path) -> None:
    message = parse(json.loads(path.read_text())["frame"].encode())
    assert parse(serialize(message)) == message


def test_committed_schema_matches_the_models() -> None:
    committed = (ROOT / "protocol" / "v1" / "schema.json").read_bytes()
    assert committed == render(), "protocol/v1/schema.json is stale: run `make schema`"


def test_violation_carries_the_request_id() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        parse(b'{"type":"upload","id":42,"activity":"a","path":"/x/../y","size":1}')
    assert caught.value.code is ErrorCode.BAD_PATH
    assert caught.value.re == 42
    assert "'..'" in caught.value.message


def test_messages_are_frozen() -> None:
    credit = Credit(type="credit", stream=1, chunks=2)
    with pytest.raises(ValueError, match="frozen"):
        credit.chunks = 3  # type: ignore[misc]


def test_serialize_omits_unset_optionals() -> None:
    upload = Upload(type="upload", id=3, activity="a", path="/golem/input/a.txt", size=5)
    assert json.loads(serialize(upload)) == {
        "type": "upload", "id": 3, "activity": "a", "path": "/golem/input/a.txt", "size": 5, "mode": 0o644,
    }  # fmt: skip


def test_frame_round_trip_and_readdressing() -> None:
    data = frames.encode(FrameKind.DATA, 7, b"hello")
    frame = frames.decode(data, max_payload=16)
    assert (frame.kind, frame.stream, bytes(frame.payload)) == (FrameKind.DATA, 7, b"hello")
    moved = frames.decode(frames.with_stream(data, 99), max_payload=16)
    assert (moved.kind, moved.stream, bytes(moved.payload)) == (FrameKind.DATA, 99, b"hello")


def test_data_frame_over_the_chunk_limit_is_refused() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        frames.decode(frames.encode(FrameKind.DATA, 1, b"x" * 17), max_payload=16)
    assert caught.value.code is ErrorCode.BAD_FRAME
