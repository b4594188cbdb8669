"""The session core, driven by the session vectors both languages run: literal frames and calls in,
literal frames, events and errors out (js-client/test/unit/session.test.js runs the same files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from kiln.protocol import session as s
from kiln.protocol.errors import KilnError, LocalProtocolError
from kiln.protocol.messages import MAX_ID, MESSAGE_ADAPTER, Cost, Done, MarketQuery, Meter, serialize

ROOT = Path(__file__).resolve().parents[2]
SESSIONS = sorted((ROOT / "protocol" / "v1" / "vectors" / "sessions").glob("*.json"))


def error_name(error: BaseException) -> str:
    """The class name both languages share (JavaScript's carry an ``Error`` suffix)."""
    name = type(error).__name__
    return name.removesuffix("Error") or name


def describe(event: s.Event) -> dict[str, Any]:
    """An event as the vectors write it."""
    match event:
        case s.Welcomed(welcome):
            resumed = {} if welcome.resumed is None else {"resumed": welcome.resumed}
            return {"event": "welcomed", "version": welcome.version, **resumed}
        case s.Replied(request, reply):
            return {"event": "replied", "request": request, "reply": orjson.loads(serialize(reply))}
        case s.Failed(request, error):
            return {"event": "failed", "request": request, "error": error_name(error), "code": error.code}
        case s.Informed(request, info):
            return {"event": "informed", "request": request, "info": orjson.loads(serialize(info))}
        case s.Requested(message):
            return {"event": "requested", "message": orjson.loads(serialize(message))}
        case s.CancelRequested(request):
            return {"event": "cancel_requested", "request": request}
        case s.Notified(message):
            return {"event": "notified", "message": orjson.loads(serialize(message))}
        case s.Credited(stream, chunks):
            return {"event": "credited", "stream": stream, "chunks": chunks}
        case s.DataReceived(stream, data):
            return {"event": "data", "stream": stream, "data": bytes(data).hex()}
        case s.StreamEnded(stream):
            return {"event": "stream_ended", "stream": stream}
        case s.StreamFailed(stream, error):
            return {"event": "stream_failed", "stream": stream, "error": error_name(error), "code": error.code}
        case s.Violated(error):
            return {"event": "violated", "error": error_name(error), "code": error.code}
        case s.Closed(error):
            return {"event": "closed", "error": error_name(error), "code": error.code}
    raise AssertionError(event)


def sent(out: s.Outbound) -> dict[str, Any]:
    return {"binary": out.data.hex()} if out.binary else orjson.loads(out.data)


def matches(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    """An expected error frame without a ``message`` matches any message: the text is for people."""
    if expected.get("type") == "error" and "message" not in expected:
        actual = {key: value for key, value in actual.items() if key != "message"}
    return expected == actual


def act(session: s.Session, step: dict[str, Any]) -> None:
    if "receive" in step:
        session.receive_text(json.dumps(step["receive"]))
    elif "receive_text" in step:
        session.receive_text(step["receive_text"])
    elif "receive_binary" in step:
        session.receive_binary(bytes.fromhex(step["receive_binary"]))
    elif "lost" in step:
        session.connection_lost(step["lost"])
    elif (call := step.get("call")) is not None:
        if call == "request":
            session.request(MESSAGE_ADAPTER.validate_python(step["message"]))  # type: ignore[arg-type]
        elif call == "reply":
            session.reply(MESSAGE_ADAPTER.validate_python(step["message"]))  # type: ignore[arg-type]
        elif call == "notify":
            session.notify(MESSAGE_ADAPTER.validate_python(step["message"]))  # type: ignore[arg-type]
        elif call == "send_data":
            session.send_data(step["stream"], bytes.fromhex(step["data"]))
        elif call == "end_stream":
            session.end_stream(step["stream"])
        elif call == "abort_stream":
            session.abort_stream(step["stream"], step["reason"])
        elif call == "grant":
            session.grant(step["stream"], step["chunks"])
        elif call == "cancel":
            session.cancel(step["request"])
        elif call == "close":
            session.close()
        else:
            raise AssertionError(f"unknown call {call!r}")


def judge_raised(step: dict[str, Any], raised: KilnError | None, where: str) -> None:
    """What a step's call raised is what the vector says (``raises``), or nothing."""
    if "raises" in step:
        assert raised is not None, f"{where}: expected {step['raises']}, nothing was raised"
        assert {"error": error_name(raised), "code": raised.code} == step["raises"], where
    else:
        assert raised is None, f"{where}: raised {raised!r}"


@pytest.mark.parametrize("path", SESSIONS, ids=lambda p: p.stem)
def test_session_vector(path: Path) -> None:
    vector = json.loads(path.read_text())
    session = s.Session(vector["role"], vector["name"], software=vector["software"], resume=vector.get("resume"))
    for number, step in enumerate(vector["steps"]):
        where = f"{path.name} step {number}: {json.dumps(step)[:160]}"
        raised: KilnError | None = None
        try:
            act(session, step)
        except KilnError as e:
            raised = e
        judge_raised(step, raised, where)
        sends = [sent(out) for out in session.data_to_send()]
        expected_sends = step.get("sends", [])
        assert len(sends) == len(expected_sends) and all(map(matches, expected_sends, sends)), (where, sends)
        assert [describe(e) for e in session.events_received()] == step.get("events", []), where


def test_there_are_session_vectors_for_both_roles() -> None:
    roles = {json.loads(p.read_text())["role"] for p in SESSIONS}
    assert roles == {"requestor", "provider"}
    assert len(SESSIONS) >= 20


def welcomed(role: s.Role = "requestor", **limits: int) -> s.Session:
    session = s.Session(role, "t")
    base = {
        "max_message_bytes": 2**20,
        "max_frame_bytes": 2**22,
        "chunk_bytes": 8,
        "max_window": 4,
        "max_pending": 4,
        "max_streams": 2,
        "max_output_bytes": 1024,
    }
    welcome = {"type": "welcome", "version": "1.0", "session": "r1", "software": "hub", "limits": base | limits}
    session.receive_text(json.dumps(welcome))
    session.data_to_send()
    assert [type(e) for e in session.events_received()] == [s.Welcomed]
    return session


def test_ids_wrap_around_and_skip_open_requests() -> None:
    session = welcomed()
    first = session.new_id()
    session.request(MarketQuery(type="market", id=first))
    session._next_id = MAX_ID - 1
    assert session.new_id() == MAX_ID
    assert session.new_id() == first + 1  # wrapped, and passed over the open one


def test_limits_exist_only_once_welcomed() -> None:
    session = s.Session("requestor", "t")
    with pytest.raises(LocalProtocolError):
        _ = session.limits
    assert welcomed().limits.chunk_bytes == 8


def test_a_data_frame_is_a_view_of_the_frame_not_a_copy() -> None:
    session = welcomed()
    download = MESSAGE_ADAPTER.validate_python(
        {"type": "download", "id": 1, "activity": "a", "path": "/a", "window": 1}
    )
    session.request(download)  # type: ignore[arg-type]
    frame = bytes.fromhex("0000000000000001") + b"payload"
    session.receive_binary(frame)
    [event] = session.events_received()
    assert isinstance(event, s.DataReceived) and event.data.obj is frame


def test_a_provider_takes_meter_as_a_request_answered_with_done_and_cost_as_news() -> None:
    provider = welcomed("provider")
    provider.receive_text(json.dumps({"type": "meter", "id": 7, "activity": "a1"}))
    cost = {"type": "cost", "activity": "a1", "seq": 1, "due": 10_000, "seconds": 60.0, "cpu_seconds": 3.0}
    provider.receive_text(json.dumps(cost))
    requested, notified = provider.events_received()
    assert isinstance(requested, s.Requested) and requested.message == Meter(type="meter", id=7, activity="a1")
    assert isinstance(notified, s.Notified) and isinstance(notified.message, Cost) and notified.message.due == 10_000
    provider.reply(Done(type="done", re=7, cpu_seconds=1.5))
    assert sent(provider.data_to_send()[0]) == {"type": "done", "re": 7, "cpu_seconds": 1.5}
    with pytest.raises(LocalProtocolError):
        provider.reply(Done(type="done", re=7))  # answered once
    requestor = welcomed()
    requestor.receive_text(json.dumps(cost))
    [news] = requestor.events_received()
    assert isinstance(news, s.Notified) and isinstance(news.message, Cost)
