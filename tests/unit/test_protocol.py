"""The pure protocol core: literal frames in, verdicts and values out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiln.protocol import ErrorCode, RemoteProtocolError, errors, frames, limits, parse, serialize
from kiln.protocol import codes as codes_module
from kiln.protocol.codes import CloseCode
from kiln.protocol.frames import FrameKind
from kiln.protocol.messages import PROTOCOL_VERSION, Credit, Error, Exec, Upload
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


VALID_MESSAGES = [
    p
    for p in VECTORS
    if json.loads(p.read_text()).keys() >= {"frame"} and json.loads(p.read_text())["verdict"] == "valid"
]


@pytest.mark.parametrize("path", VALID_MESSAGES, ids=lambda p: p.stem)
def test_valid_messages_survive_a_round_trip(path: Path) -> None:
    message = parse(json.loads(path.read_text())["frame"].encode())
    assert parse(serialize(message)) == message


def test_committed_schema_matches_the_models() -> None:
    committed = (ROOT / "protocol" / "v1" / "schema.json").read_bytes()
    assert committed == render(), "protocol/v1/schema.json is stale: run `make schema`"


def test_the_schema_holds_every_code_close_code_and_limit() -> None:
    schema = json.loads(render())
    codes = schema["x-kiln-error-codes"]
    assert list(codes) == sorted(code.value for code in ErrorCode)
    for code in ErrorCode:
        # The JavaScript client names each code after its value (ErrorCode.BAD_JSON = "bad_json").
        assert code.name == code.value.upper()
        entry = codes[code.value]
        assert entry["meaning"] and entry["sent_by"], code
        assert isinstance(getattr(errors, entry["error"]), type), entry
        assert errors.error_from_code(code.value, "x").code is code
        assert type(errors.error_from_code(code.value, "x")).__name__ == entry["error"]
    assert codes["bad_json"] == {
        "meaning": "the text frame is not JSON",
        "sent_by": ["hub", "provider"],
        "error": "LocalProtocolError",
    }
    assert codes["timeout"]["sent_by"] == ["client"]
    close = schema["x-kiln-close-codes"]
    assert {name: entry["code"] for name, entry in close.items()} == {c.name.lower(): c.value for c in CloseCode}
    assert close["handshake"]["code"] == codes_module.CLOSE_HANDSHAKE.value == 4003
    assert close["too_many"]["code"] == 4008 and close["failed_hellos"]["code"] == 4009
    assert schema["x-kiln-limits"]["chunk_bytes"] == limits.CHUNK_BYTES
    assert schema["x-kiln-limits"]["max_text"] == 4096
    assert schema["x-kiln-limits"]["min_storage"] == limits.MIN_STORAGE
    assert (
        schema["x-kiln-protocol"]["version"]
        == PROTOCOL_VERSION
        == "{major}.{minor}".format_map(schema["x-kiln-protocol"])
    )


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
        "type": "upload",
        "id": 3,
        "activity": "a",
        "path": "/golem/input/a.txt",
        "size": 5,
        "mode": 0o644,
    }


def test_serialize_with_an_update_is_the_updated_copy_serialized() -> None:
    """What the hub relays under its own ids: the same bytes as a copy with the fields changed."""
    exec_ = Exec(type="exec", id=3, activity="a", argv=["true"], env={"A": "1"}, stream=True, window=4)
    error = Error(type="error", re=5, code="internal", message="oops")
    named = error.model_copy(update={"provider": "p1"})
    cases: list[tuple[Exec | Error, dict[str, int | str]]] = [
        (exec_, {"id": 99}),
        (error, {"re": 7}),
        (error, {"re": 7, "provider": "p2"}),  # a field left out before comes in its place
        (named, {"re": 7, "provider": "p2"}),
    ]
    for message, update in cases:
        assert serialize(message, update) == serialize(message.model_copy(update=update))


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
