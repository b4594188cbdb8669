"""The session vectors through the hub, from both ends (kiln.testing.loopback: a requestor's
session, the hub's core and a provider's session joined in memory).

A vector scripts one side (its *role*) against a hub played by literal frames. Here the hub is
the real core, and what the vector says that side receives is caused from the other end: a
reply, credit or stream frame from the hub becomes the counterpart's reply, grant or frame
under the ids the hub gave it; a ``create``, ``exec``, ``connect``, ``upload``, ``download``, ``destroy`` or
``cancel`` toward a provider becomes the counterpart requestor's rent, request, release or
cancel. Then the side the vector scripts must send, raise and see exactly what the vector
says, its ids read through the hub's translation (the welcome is this hub's, of its own
version). Passed over: a frame the vector marks as the hub's violation (a correct hub never
sends it, and the session drops it without a change), a frame on a stream that ended (the
other end's session refuses to send it; the side would drop it) and data past the credit (the
other end's session refuses to send it, and the hub would stop it first). A vector that
scripts a hub other than this one (an older version, a refusal, a broken handshake, the hub's
own answers from its market or image store) is named in :data:`NOT_THROUGH_THE_HUB` with the
reason; the rest must pass.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from kiln.hub.core import HubCore
from kiln.protocol import frames
from kiln.protocol.errors import KilnError, LocalProtocolError
from kiln.protocol.frames import FrameKind
from kiln.protocol.messages import (
    MAX_ID,
    MESSAGE_ADAPTER,
    Create,
    Demand,
    Done,
    Limits,
    Offer,
    Release,
    Rent,
    Rented,
    Resources,
    Upload,
    serialize,
)
from kiln.protocol.session import DataReceived, Event, Replied, Requested, Role, Session
from kiln.testing.loopback import FakeClock, Loopback
from tests.unit.test_session import SESSIONS, act, describe, judge_raised, matches, sent

NOT_THROUGH_THE_HUB = {
    "activities-old-hub": "a hub of 1.2",
    "exec-streams-old-hub": "a hub of 1.1",
    "offer-cached-old-hub": "a hub of 1.3",
    "push-image-old-hub": "a hub of 1.0",
    "share-image-old-hub": "a hub of 1.3",
    "market-terms-old-hub": "a hub of 1.4",
    "notify-task-old-hub": "a hub of 1.5",
    "connect-old-hub": "a hub of 1.6",
    "publish": "the hub's own answers to publish and unpublish, and one of the wrong kind",
    "market-terms": "the hub's costs and verdicts (the ledger's)",
    "exec-output": "a hub of 1.0, which refuses an exec's streams",
    "handshake-bad-json": "a hub that sends what is not JSON",
    "handshake-not-welcome": "a hub that answers hello with something else than welcome",
    "handshake-other-major": "a hub of another major version",
    "handshake-refused": "a hub that refuses the hello",
    "handshake-resumable": "the welcome of a hub holding a session to resume",
    "handshake-resume": "the welcome of a hub that took over an earlier session",
    "handshake-resume-unknown": "a hub that knows no such session",
    "activities": "the hub's own activity list",
    "image-store": "the image store's answers",
    "push-image": "the image store's answers",
    "push-image-held": "the image store's answers",
    "share-image": "the image store's answers",
    "want-misplaced": "the image store's want, and wants from a hub that breaks the protocol",
    "provider-create-want": "a create of a stored image (the image store sends its blobs)",
    "rent-progress": "the hub's progress of a rent",
    "request-error": "the hub's errors for a rent and a market query",
    "request-reply": "the hub's market answer",
    "request-misuse": "the hub's market answers, which close their requests at once",
    "provider-invalid-request": "a request a correct hub never forwards (a path with '..')",
    "provider-requests": "an offer with no storage, which no rent fits (and rented, activity_lost to a provider)",
    "notices": "notices and frames the hub sends of its own",
    "closed-by-us": "the hub's market answer",
    "connection-lost": "the hub's market answer",
    "reply-wrong-kind": "the hub's market answer, and a reply of the wrong kind the provider's session refuses to send",
    "download-overrun": "a download_info after the data, which the provider's session refuses to send",
    "exec-streams": "output past the credit, after which the vector's stream has failed and takes no more credit",
}
"""Vectors whose hub is not a correct hub of this version, with why."""

REQUEST_KEYS = ("id", "re", "stream", "target")


@dataclass
class Through:
    """One vector's side (``side``) through the hub, the other end played by ``other``.

    Ids: the vector names requests by its own numbers. The side a requestor vector scripts
    uses them as they are; the provider it talks to knows each request by the hub's id
    (``hub_ids``: vector number -> the id the provider sees). A provider vector's side knows
    the hub's ids, mapped back to the vector's for comparison; its counterpart requestor asks
    under ids of its own (``own_ids``: vector number -> the requestor's id).
    """

    vector: dict[str, Any]
    loop: Loopback = field(init=False)
    hub_ids: dict[int, int] = field(default_factory=dict)
    own_ids: dict[int, int] = field(default_factory=dict)
    activities: dict[str, str] = field(default_factory=dict)
    """The vector's activity ids -> the hub's."""

    def __post_init__(self) -> None:
        v = self.vector
        # The hub's limits are those of the vector's welcome (small windows and chunks).
        [limits] = [s["receive"]["limits"] for s in v["steps"] if s.get("receive", {}).get("type") == "welcome"][:1]
        numbers = itertools.count(1)

        def hub(clock: FakeClock) -> HubCore:
            activity_id = lambda: f"a{next(numbers)}"  # noqa: E731
            return HubCore(
                clock=clock.time, monotonic=clock.monotonic, limits_=Limits(**limits), new_activity_id=activity_id
            )

        self.loop = Loopback(hub_factory=hub, record=True)
        self.role: Role = "requestor" if v["role"] == "requestor" else "provider"
        self.side = self.loop.join(Session(self.role, v["name"], software=v["software"], resume=v.get("resume")))
        other: Role = "provider" if self.role == "requestor" else "requestor"
        self.other = self.loop.join(Session(other, f"other-{other}"))
        self.pending: list[int] = []  # vector numbers of requests sent, waiting for the hub's id at the provider
        self.next_own = 1
        self.events: list[Event] = []
        """What the side saw, in order (taken from its session as the test goes)."""

    # --- the two sessions -------------------------------------------------------------------

    @property
    def s(self) -> Session:
        return self.loop.session(self.side)

    @property
    def o(self) -> Session:
        return self.loop.session(self.other)

    def other_events(self) -> list[Any]:
        return self.o.events_received()

    def settle(self) -> None:
        """Pump; keep what the side saw; learn which hub id each request forwarded to the provider got."""
        self.loop.pump()
        self.events += self.s.events_received()
        if self.role == "requestor":
            for event in self.o.events_received():
                if isinstance(event, Requested) and self.pending:
                    self.hub_ids[self.pending.pop(0)] = event.message.id

    def sends(self) -> list[dict[str, Any]]:
        """What the side sent the hub since the last call."""
        mine = [sent(out) for peer, out in self.loop.carried if peer == self.side]
        self.loop.carried.clear()
        return mine

    def start(self) -> None:
        """The hello and welcome of both; the requestor's activity ``a1`` rented from the provider."""
        self.loop.pump()
        if self.role == "requestor":
            self.o.request(
                Offer(type="offer", id=1, resources=Resources(cpus=64, memory=2**40, storage=2**40), arch="amd64")
            )
            self.loop.pump()
            self.other_events()

    def rent_from_provider(self, activity: str) -> None:
        """Setup outside the vector: the side's provider offers (under the largest id) and is rented ``activity``."""
        offer = Offer(type="offer", id=MAX_ID, resources=Resources(cpus=64, memory=2**40, storage=2**40), arch="amd64")
        self.s.request(offer)
        self.loop.pump()
        self.o.request(Rent(type="rent", id=MAX_ID, image="kiln-busybox:latest", demand=Demand(cpus=1, memory="64MiB")))
        self.loop.pump()
        [create] = [e.message for e in self.s.events_received() if isinstance(e, Requested)]
        assert isinstance(create, Create)
        self.s.reply(Done(type="done", re=create.id))
        self.loop.pump()
        self.activities[activity] = create.activity
        self.s.events_received()
        self.other_events()
        self.loop.carried.clear()

    def rent_for_requestor(self, activity: str) -> None:
        """Setup outside the vector: the side's requestor rents ``activity`` (under the largest id)."""
        self.s.request(Rent(type="rent", id=MAX_ID, image="kiln-busybox:latest", demand=Demand(cpus=1, memory="64MiB")))
        self.loop.pump()
        [create] = [e.message for e in self.other_events() if isinstance(e, Requested)]
        self.o.reply(Done(type="done", re=create.id))
        self.loop.pump()
        [rented] = [e.reply for e in self.s.events_received() if isinstance(e, Replied)]
        assert isinstance(rented, Rented)
        self.activities[activity] = rented.activity
        self.loop.carried.clear()

    # --- translation ------------------------------------------------------------------------

    def to_hub(self, message: dict[str, Any]) -> dict[str, Any]:
        """A provider vector's message with the vector's ids replaced by the hub's."""
        out = dict(message)
        for key in REQUEST_KEYS:
            if key in out and out[key] in self.hub_ids:
                out[key] = self.hub_ids[out[key]]
        if "activity" in out:
            out["activity"] = self.activities.get(out["activity"], out["activity"])
        return out

    def from_hub(self, value: Any) -> Any:
        """What the provider's side saw, with the hub's ids replaced by the vector's."""
        back = {hub: vector for vector, hub in self.hub_ids.items()}
        activities = {hub: vector for vector, hub in self.activities.items()}
        if isinstance(value, dict) and set(value) == {"binary"}:
            frame = frames.decode(bytes.fromhex(value["binary"]), 2**20)
            stream = back.get(frame.stream, frame.stream)
            return {"binary": frames.encode(frame.kind, stream, frame.payload).hex()}
        if isinstance(value, dict):
            out = {k: self.from_hub(v) for k, v in value.items()}
            for key in (*REQUEST_KEYS, "request"):
                if isinstance(out.get(key), int) and out[key] in back:
                    out[key] = back[out[key]]
            if isinstance(out.get("activity"), str):
                out["activity"] = activities.get(out["activity"], out["activity"])
            return out
        if isinstance(value, list):
            return [self.from_hub(v) for v in value]
        return value

    # --- the counterpart causes what the side receives --------------------------------------

    def cause(self, step: dict[str, Any]) -> None:
        """Make the hub send the side what ``step`` says it receives."""
        if "receive_binary" in step:
            frame = frames.decode(bytes.fromhex(step["receive_binary"]), 2**20)
            stream = self.counterpart_id(frame.stream)
            if frame.kind is FrameKind.DATA:
                self.o.send_data(stream, frame.payload)
            elif frame.kind is FrameKind.END:
                self.o.end_stream(stream)
            else:
                self.o.abort_stream(stream, bytes(frame.payload).decode())
            return
        message = step["receive"]
        kind = message["type"]
        if kind == "welcome":
            return  # the hub's answer to hello: already sent
        if kind == "credit":
            self.o.grant(self.counterpart_id(message["stream"]), message["chunks"])
        elif "re" in message and self.role == "requestor":
            self.o.reply(MESSAGE_ADAPTER.validate_python({**message, "re": self.hub_ids[message["re"]]}))  # type: ignore[arg-type]
        elif self.role == "provider" and kind in ("exec", "connect", "upload", "download"):
            activity = self.activities[message["activity"]]
            self.ask(message["id"], {**message, "id": self.own(message["id"]), "activity": activity})
        elif self.role == "provider" and kind == "create":
            resources = message["resources"]
            demand = {"cpus": resources["cpus"], "memory": resources["memory"]}
            rent = {"type": "rent", "id": self.own(message["id"]), "image": message["image"], "demand": demand}
            self.ask(message["id"], rent, activity=message["activity"])
        elif self.role == "provider" and kind == "destroy":
            release = Release(type="release", id=self.own(message["id"]), activity=self.activities[message["activity"]])
            self.ask(message["id"], orjson.loads(serialize(release)))
        elif self.role == "provider" and kind == "cancel":
            self.o.cancel(self.own_ids[message["target"]])
        elif "re" in message:
            return  # the hub's own answer to the provider (its offer's done): it is sent already
        else:
            raise AssertionError(f"nothing in this test makes the hub send {kind}")

    def counterpart_id(self, vector_id: int) -> int:
        return self.hub_ids[vector_id] if self.role == "requestor" else self.own_ids[vector_id]

    def own(self, vector_id: int) -> int:
        self.own_ids[vector_id] = self.next_own
        self.next_own += 1
        return self.own_ids[vector_id]

    def ask(self, vector_id: int, message: dict[str, Any], activity: str | None = None) -> None:
        """The counterpart requestor's request, seen by the side's provider under a hub id (a rent:
        as a create of the hub's activity for the vector's ``activity``)."""
        self.o.request(MESSAGE_ADAPTER.validate_python(message))  # type: ignore[arg-type]
        before = len(self.events)
        self.settle()
        requested = [e for e in self.events[before:] if isinstance(e, Requested)]
        if requested:
            self.hub_ids[vector_id] = requested[-1].message.id
            if isinstance(created := requested[-1].message, Create) and activity is not None:
                self.activities[activity] = created.activity


def overrun(event: dict[str, Any]) -> bool:
    return bool(event["event"] == "stream_failed" and event["code"] == "flow_control")


def run_through_the_hub(vector: dict[str, Any]) -> None:
    """Every step of ``vector``, its side through the hub; then what that side sent and saw, all in order."""
    t = Through(vector)
    t.start()
    uses_activities = any("activity" in json.dumps(step) for step in vector["steps"])
    sends: list[dict[str, Any]] = []
    expected_sends: list[dict[str, Any]] = []
    expected_events: list[dict[str, Any]] = []
    for number, step in enumerate(vector["steps"]):
        where = f"step {number}: {json.dumps(step)[:160]}"
        receives = "receive" in step or "receive_binary" in step
        if receives and step.get("events") and all(e["event"] == "violated" for e in step["events"]):
            continue  # what only a hub that breaks the protocol sends: dropped, and nothing changes
        assert "receive_text" not in step, f"{where}: a correct hub sends no such text"
        if receives:
            try:
                t.cause(step)
            except LocalProtocolError:
                # What the other end's session refuses to send: a frame on a stream that ended (the
                # side drops it) or data past the credit (the hub stops it before it reaches the side).
                assert all(overrun(e) for e in step.get("events", [])), f"{where}: the other end cannot cause this"
                continue
        expected_sends += step.get("sends", [])
        expected_events += step.get("events", [])
        raised: KilnError | None = None
        if "lost" in step:
            t.loop.lose(t.side, step["lost"])
        elif "call" in step:
            call = t.to_hub(step) if t.role == "provider" else step
            if "message" in call and t.role == "provider":
                call = {**call, "message": t.to_hub(call["message"])}
            try:
                act(t.s, call)
            except KilnError as e:
                raised = e
        judge_raised(step, raised, where)
        if t.role == "requestor":
            t.pending += [
                m["id"] for m in step.get("sends", []) if m.get("type") in ("exec", "connect", "upload", "download")
            ]
        t.settle()
        sends += t.sends()
        if number == 1 and uses_activities and t.role == "requestor":
            t.rent_for_requestor("a1")
        elif number == 1 and uses_activities and not any('"create"' in json.dumps(s) for s in vector["steps"]):
            t.rent_from_provider("a1")
    events = [describe(e) for e in t.events]
    if t.role == "provider":
        events, sends = [t.from_hub(e) for e in events], [t.from_hub(s) for s in sends]
    # The welcome is this hub's: its version is its own.
    events = [{k: v for k, v in e.items() if k != "version"} for e in events]
    expected_events = [{k: v for k, v in e.items() if k != "version"} for e in expected_events]
    assert events == expected_events
    assert len(sends) == len(expected_sends) and all(map(matches, expected_sends, sends)), sends


THROUGH = [p for p in SESSIONS if p.stem not in NOT_THROUGH_THE_HUB]


@pytest.mark.parametrize("path", THROUGH, ids=lambda p: p.stem)
def test_a_session_vector_through_the_hub(path: Path) -> None:
    run_through_the_hub(json.loads(path.read_text()))


def test_vectors_of_both_roles_run_through_the_hub() -> None:
    roles = [json.loads(p.read_text())["role"] for p in THROUGH]
    assert roles.count("requestor") >= 5 and roles.count("provider") >= 3, roles
    assert set(NOT_THROUGH_THE_HUB) <= {p.stem for p in SESSIONS}, "a vector named here is gone"


def test_a_file_goes_from_a_requestor_to_a_provider_and_back_through_the_hub() -> None:
    """The loopback by itself: a rent, an upload in chunks within credit, a download, a release."""
    loop = Loopback()
    requestor = loop.join(Session("requestor", "r"))
    provider = loop.join(Session("provider", "p"))
    loop.pump()
    r, p = loop.session(requestor), loop.session(provider)
    assert [type(e).__name__ for e in r.events_received() + p.events_received()] == ["Welcomed", "Welcomed"]
    p.request(
        Offer(type="offer", id=p.new_id(), resources=Resources(cpus=2, memory=2**30, storage=2**30), arch="amd64")
    )
    loop.pump()
    p.events_received()
    r.request(Rent(type="rent", id=1, image="kiln-busybox:latest", demand=Demand(cpus=1, memory="64MiB")))
    loop.pump()
    [create] = p.events_received()
    assert isinstance(create, Requested) and create.message.type == "create"
    p.reply(Done(type="done", re=create.message.id))
    loop.pump()
    [rented] = r.events_received()
    assert isinstance(rented, Replied) and rented.reply.type == "rented"
    activity = rented.reply.activity
    assert activity == "a1"
    assert [type(c).__name__ for c in loop.changes] == ["SaveLease"], "the lease is written before rented is sent"
    # An upload of three chunks, the provider granting one at a time: each chunk waits for it.
    chunk = r.limits.chunk_bytes
    data = bytes(range(256)) * (3 * chunk // 256)
    r.request(Upload(type="upload", id=2, activity=activity, path="/in", size=len(data)))
    loop.pump()
    [upload] = p.events_received()
    assert isinstance(upload, Requested)
    received = bytearray()
    for at in range(0, len(data), chunk):
        assert r.events_received() == [], "no credit before the provider grants it"
        p.grant(upload.message.id, 1)
        loop.pump()
        assert [describe(e) for e in r.events_received()] == [{"event": "credited", "stream": 2, "chunks": 1}]
        r.send_data(2, data[at : at + chunk])
        loop.pump()
        received += b"".join(bytes(e.data) for e in p.events_received() if isinstance(e, DataReceived))
    assert bytes(received) == data
    r.end_stream(2)
    loop.pump()
    assert [type(e).__name__ for e in p.events_received()] == ["StreamEnded"]
    p.reply(Done(type="done", re=upload.message.id, bytes=len(data)))
    loop.pump()
    [done] = [describe(e) for e in r.events_received()]
    assert done == {"event": "replied", "request": 2, "reply": {"type": "done", "re": 2, "bytes": len(data)}}
    r.request(Release(type="release", id=3, activity=activity))
    loop.pump()
    [destroy] = p.events_received()
    assert isinstance(destroy, Requested) and destroy.message.type == "destroy"
    p.reply(Done(type="done", re=destroy.message.id))
    loop.pump()
    assert [describe(e)["event"] for e in r.events_received()] == ["replied"]


CREATE_TIMEOUT, GRACE = 120.0, 30.0


def timed_hub(clock: FakeClock) -> HubCore:
    """An open hub on the loopback's clock with the deadlines the tests below pass."""
    return HubCore(clock=clock.time, monotonic=clock.monotonic, create_timeout=CREATE_TIMEOUT, grace=GRACE)


def test_a_provider_that_never_answers_a_create_is_dropped_when_the_clock_passes_its_deadline() -> None:
    loop = Loopback(hub_factory=timed_hub)
    requestor = loop.join(Session("requestor", "r"))
    provider = loop.join(Session("provider", "p"))
    loop.pump()
    r, p = loop.session(requestor), loop.session(provider)
    p.request(Offer(type="offer", id=1, resources=Resources(cpus=2, memory=2**30, storage=2**30), arch="amd64"))
    loop.pump()
    r.request(Rent(type="rent", id=1, image="kiln-busybox:latest", demand=Demand(cpus=1, memory="64MiB")))
    loop.pump()
    r.events_received()
    p.events_received()
    loop.advance(CREATE_TIMEOUT - 1)
    assert loop.connected(provider)
    loop.advance(2)
    assert not loop.connected(provider) and loop.closed[provider][0] == 4006
    told = [describe(e) for e in r.events_received()]
    assert [(e["event"], e.get("code")) for e in told] == [("notified", None), ("failed", "provider_lost")], told
    assert f"unanswered for {CREATE_TIMEOUT:g} s" in loop.closed[provider][1]


def test_a_vector_through_the_hub_fails_when_the_side_sees_something_else() -> None:
    vector = json.loads((SESSIONS[0].parent / "download.json").read_text())
    [step] = [s for s in vector["steps"] if s.get("events") == [{"event": "data", "stream": 1, "data": "20"}]]
    step["events"] = [{"event": "data", "stream": 1, "data": "21"}]
    with pytest.raises(AssertionError):
        run_through_the_hub(vector)


def test_a_requestor_that_leaves_has_its_activity_destroyed_and_one_that_is_lost_keeps_it_for_the_grace() -> None:
    loop = Loopback(hub_factory=timed_hub)
    provider = loop.join(Session("provider", "p"))
    loop.pump()
    p = loop.session(provider)
    p.request(Offer(type="offer", id=1, resources=Resources(cpus=2, memory=2**30, storage=2**30), arch="amd64"))
    loop.pump()
    p.events_received()
    destroyed: list[str] = []
    for leaving in (True, False):
        requestor = loop.join(Session("requestor", f"r{leaving}"))
        loop.pump()
        r = loop.session(requestor)
        r.request(Rent(type="rent", id=1, image="kiln-busybox:latest", demand=Demand(cpus=1, memory="64MiB")))
        loop.pump()
        [create] = [e.message for e in p.events_received() if isinstance(e, Requested)]
        p.reply(Done(type="done", re=create.id))
        loop.pump()
        if leaving:
            loop.leave(requestor)
        else:
            loop.lose(requestor)
            assert [e for e in p.events_received() if isinstance(e, Requested)] == [], "held for the grace period"
            loop.advance(GRACE + 1)
        [destroy] = [e.message for e in p.events_received() if isinstance(e, Requested)]
        assert destroy.type == "destroy" and destroy.activity == create.activity
        destroyed.append(destroy.activity)
        p.reply(Done(type="done", re=destroy.id))
        loop.pump()
    assert len(set(destroyed)) == 2
