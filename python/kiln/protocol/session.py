"""One peer's side of a kiln.v1 session with the hub, as a state machine with no I/O.

A requestor and a provider each hold one :class:`Session`; their connections only pump
frames through it (as ``websockets`` keeps ``protocol.py`` apart from its asyncio layer).
The rules everything here follows:

* The session opens with ``hello``; the hub's first frame must be ``welcome``. An ``error``
  instead (or anything else) ends the session before it began.
* A request this side sends carries an id unique among its open requests. It stays open
  until exactly one final reply (``done``, ``error``, ``rented``, ``market_info``,
  ``exec_result``, ``image_pushed``, ``image_list``, ``activity_list``) names it in ``re``,
  and the reply must fit the request's kind. Interim replies come before it: ``download_info`` once for a
  download before its data, ``want`` once for a ``push_image`` before its data (and from a
  provider once for a ``create``), ``rent_progress`` any number of times for a ``rent``.
* Requests, and fields, of a later minor version than the hub's ``welcome`` (the image
  store's, 1.1; an exec's streams and root, 1.2; ``activities``, 1.3) are refused here,
  before they are sent.
* A notification (1.6: a requestor's ``task``, a provider's ``usage``) has no id and no reply;
  it is sent only to a hub that welcomed at 1.6 or later.
* A request the hub sends a provider stays open until the provider sends exactly one
  final reply to it; replying to anything else is this side's misuse.
* An ``upload``, ``download`` or ``push_image`` opens a stream under the request's id, closed
  with the request; a provider's ``want`` opens one under the ``create``'s id, to receive on.
  An ``exec`` (1.2) opens one each way: its ``stdin`` toward the provider, its output
  (``stream``) toward the requestor. A request holds at most one stream in each direction,
  so frames and credit are told apart by their direction.
  The sender spends one credit per DATA frame and never more than it holds; the
  receiver grants credit and never lets what is outstanding exceed ``max_window``. Data
  beyond the credit granted is the peer's violation and fails the stream.
* A frame for a stream or request that is no longer open is dropped: it crossed its end.
* When the connection ends, every open request of this side fails once with the reason
  (:class:`ConnectionClosed` when this side closed it, :class:`ConnectionLost` when it
  broke), the session is closed, and every further call that would send raises that reason.

A requestor's session may name an earlier one to take over (``resume``, 1.2): the hub's
``welcome`` then lists the activities it took over in ``resumed``.

Use: make a Session (it queues ``hello``), then for every frame from the hub call
:meth:`~Session.receive_text` or :meth:`~Session.receive_binary`, and for every action
:meth:`~Session.request`, :meth:`~Session.reply`, :meth:`~Session.send_data`,
:meth:`~Session.grant`, ... After each call, you must write what :meth:`~Session.data_to_send`
returns and handle what :meth:`~Session.events_received` returns, in order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

import orjson

from kiln.protocol import frames
from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import (
    ConnectionClosed,
    ConnectionLost,
    KilnError,
    LocalProtocolError,
    RemoteProtocolError,
    TransferFailed,
    UnsupportedVersion,
    UsageError,
    error_from_code,
)
from kiln.protocol.frames import FrameKind
from kiln.protocol.limits import OUTPUT_WINDOW
from kiln.protocol.messages import (
    MAJOR_VERSION,
    MAX_ID,
    PROTOCOL_VERSION,
    ActivitiesQuery,
    ActivityList,
    ActivityLost,
    BalanceInfo,
    BalanceQuery,
    Cancel,
    Connect,
    Cost,
    Create,
    Credit,
    Destroy,
    Done,
    Download,
    DownloadInfo,
    Error,
    Exec,
    ExecResult,
    Hello,
    ImageList,
    ImagePushed,
    LedgerList,
    LedgerQuery,
    Limits,
    ListImages,
    MarketInfo,
    MarketQuery,
    Message,
    Meter,
    Offer,
    Publish,
    Published,
    PushImage,
    Release,
    RemoveImage,
    Rent,
    Rented,
    RentProgress,
    ShareImage,
    TaskReport,
    Unpublish,
    Upload,
    Usage,
    VerdictReport,
    Want,
    Welcome,
    clip,
    parse,
    request_number,
    serialize,
)

Role: TypeAlias = Literal["requestor", "provider"]
Request: TypeAlias = (
    Rent
    | Release
    | MarketQuery
    | ActivitiesQuery
    | Exec
    | Connect
    | Upload
    | Download
    | Offer
    | PushImage
    | ListImages
    | RemoveImage
    | ShareImage
    | BalanceQuery
    | LedgerQuery
    | VerdictReport
    | Publish
    | Unpublish
)
"""What this side may ask of the hub."""
HubRequest: TypeAlias = Create | Destroy | Exec | Connect | Upload | Download | Meter
"""What the hub may ask of a provider."""
Reply: TypeAlias = Done | Error | ExecResult | DownloadInfo | Want
"""What a provider answers the hub with."""
Notification: TypeAlias = TaskReport | Usage
"""What a peer tells the hub without a request (1.6): no id, no reply."""
Interim: TypeAlias = DownloadInfo | Want | RentProgress
"""Replies that come before a request's final one."""
FinalReply: TypeAlias = (
    Done
    | Error
    | ExecResult
    | Rented
    | MarketInfo
    | ImagePushed
    | ImageList
    | ActivityList
    | BalanceInfo
    | LedgerList
    | Published
)

SENDS: Final[dict[Role, frozenset[str]]] = {
    "requestor": frozenset(
        {"rent", "release", "market", "activities", "exec", "upload", "download"}
        | {"push_image", "list_images", "remove_image", "share_image"}
        | {"balance", "ledger"}
        | {"verdict"}
        | {"connect", "publish", "unpublish"}
    ),
    "provider": frozenset({"offer"}),
}
"""The requests each role may send."""
SINCE: Final[dict[str, int]] = {
    "push_image": 1,
    "list_images": 1,
    "remove_image": 1,
    "activities": 3,
    "share_image": 4,
    "balance": 5,
    "ledger": 5,
    "verdict": 5,
    "connect": 7,
    "publish": 7,
    "unpublish": 7,
}
"""The minor version that brought each request (absent: 0)."""
NOTIFIES: Final[dict[Role, dict[str, int]]] = {"requestor": {"task": 6}, "provider": {"usage": 6}}
"""The notifications each role may send (no id, no reply), with the minor version that brought each."""
INTERIM: Final[dict[str, tuple[str, bool]]] = {
    "download": ("download_info", True),
    "push_image": ("want", True),
    "create": ("want", True),
    "rent": ("rent_progress", False),
}
"""For each kind of request, its interim reply, and whether that comes only once, before any data."""
ANSWERS: Final[dict[str, frozenset[str]]] = {
    "rent": frozenset({"rented", "error"}),
    "release": frozenset({"done", "error"}),
    "market": frozenset({"market_info", "error"}),
    "activities": frozenset({"activity_list", "error"}),
    "exec": frozenset({"exec_result", "error"}),
    "upload": frozenset({"done", "error"}),
    "download": frozenset({"done", "error"}),
    "offer": frozenset({"done", "error"}),
    "push_image": frozenset({"image_pushed", "error"}),
    "list_images": frozenset({"image_list", "error"}),
    "remove_image": frozenset({"done", "error"}),
    "share_image": frozenset({"done", "error"}),
    "balance": frozenset({"balance_info", "error"}),
    "ledger": frozenset({"ledger_list", "error"}),
    "verdict": frozenset({"done", "error"}),
    "connect": frozenset({"done", "error"}),
    "publish": frozenset({"published", "error"}),
    "unpublish": frozenset({"done", "error"}),
    "create": frozenset({"done", "error"}),
    "destroy": frozenset({"done", "error"}),
    "meter": frozenset({"done", "error"}),
}
"""The final replies that fit a request of each kind."""
OUT_OF_ORDER: Final = ErrorCode.OUT_OF_ORDER


# --- what comes out -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outbound:
    """A frame to write: a message's JSON text (UTF-8) or a binary stream frame."""

    data: bytes
    binary: bool = False


@dataclass(frozen=True, slots=True)
class Welcomed:
    """The hub took our hello; the session is open."""

    welcome: Welcome


@dataclass(frozen=True, slots=True)
class Replied:
    """Request ``request`` of ours succeeded; ``reply`` is its final reply."""

    request: int
    reply: Message


@dataclass(frozen=True, slots=True)
class Failed:
    """Request ``request`` of ours failed: an ``error`` reply, a bad reply, or the end of the connection."""

    request: int
    error: KilnError


@dataclass(frozen=True, slots=True)
class Informed:
    """Our ``request`` is under way: an interim reply (what a download brings, the blobs a push
    must send, how far a rent's image has loaded)."""

    request: int
    info: Interim


@dataclass(frozen=True, slots=True)
class Requested:
    """The hub asks this provider for something; answer it with :meth:`Session.reply`, once."""

    message: HubRequest


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """The hub cancels its open request ``request``; it still gets its one reply."""

    request: int


@dataclass(frozen=True, slots=True)
class Notified:
    """One-way news from the hub: an activity is gone, what one costs so far (1.5), or an error
    about no request of ours."""

    message: ActivityLost | Cost | Error


@dataclass(frozen=True, slots=True)
class Credited:
    """The receiver of ``stream`` lets us send ``chunks`` more DATA frames."""

    stream: int
    chunks: int


@dataclass(frozen=True, slots=True)
class DataReceived:
    """A chunk of ``stream`` arrived (a view into the frame, not a copy)."""

    stream: int
    data: memoryview


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """All of ``stream``'s data arrived; its request's final reply follows."""

    stream: int


@dataclass(frozen=True, slots=True)
class StreamFailed:
    """``stream`` broke off: its sender aborted it, or sent beyond its credit."""

    stream: int
    error: KilnError


@dataclass(frozen=True, slots=True)
class Violated:
    """The hub sent something invalid that concerns no open request of ours; it was dropped."""

    error: RemoteProtocolError


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over, and why. Always the last event."""

    error: KilnError


Event: TypeAlias = (
    Welcomed
    | Replied
    | Failed
    | Informed
    | Requested
    | CancelRequested
    | Notified
    | Credited
    | DataReceived
    | StreamEnded
    | StreamFailed
    | Violated
    | Closed
)


class State(enum.Enum):
    HELLO_SENT = "hello_sent"
    OPEN = "open"
    CLOSED = "closed"


# --- bookkeeping --------------------------------------------------------------------------


@dataclass
class _Stream:
    credit: int  # sending: DATA frames we may still send; receiving: DATA frames the peer may still send
    ended: bool = False
    started: bool = False  # data has moved


@dataclass
class _Open:
    """An open request: its kind, and its streams if it has any (at most one each way)."""

    kind: str
    send: _Stream | None = None
    recv: _Stream | None = None
    informed: bool = False

    @property
    def streams(self) -> bool:
        return self.send is not None or self.recv is not None


class Session:
    """A requestor's or a provider's side of one connection to the hub."""

    def __init__(
        self,
        role: Role,
        name: str,
        *,
        token: str | None = None,
        software: str = "",
        resume: str | None = None,
        activities: list[str] | None = None,
    ) -> None:
        self.role: Role = role
        self.state = State.HELLO_SENT
        self.welcome: Welcome | None = None
        self.closed: KilnError | None = None
        """Why the session ended, once it has."""
        self._mine: dict[int, _Open] = {}  # requests we sent, by our id
        self._streaming = 0  # how many of them have streams (see _full)
        self._minor: int | None = None  # the welcome's, once read (see minor)
        self._theirs: dict[int, _Open] = {}  # requests the hub sent us, by its id
        self._next_id = 0
        self._highest = 0  # the highest request id this side has sent (ids wrap: then every id was)
        self._out: list[Outbound] = []
        self._events: list[Event] = []
        if resume is not None and role != "requestor":
            raise UsageError("only a requestor resumes a session")
        if activities is not None and role != "provider":
            raise UsageError("only a provider reports the activities it runs")
        hello = Hello(
            type="hello",
            version=PROTOCOL_VERSION,
            role=role,
            name=name,
            token=token,
            software=software,
            resume=resume,
            activities=activities,
        )
        self._send(hello)

    @property
    def limits(self) -> Limits:
        """The limits the hub announced (only once welcomed)."""
        if self.welcome is None:
            raise LocalProtocolError("the session is not open yet: no limits", ErrorCode.OUT_OF_ORDER)
        return self.welcome.limits

    @property
    def minor(self) -> int:
        """The minor protocol version both sides speak (only once welcomed)."""
        if self._minor is None:
            self._minor = int(self.version.split(".")[1])
        return self._minor

    @property
    def version(self) -> str:
        """The protocol version both sides speak, from ``welcome`` (only once welcomed)."""
        if self.welcome is None:
            raise LocalProtocolError("the session is not open yet: no version", ErrorCode.OUT_OF_ORDER)
        return self.welcome.version

    # --- output -------------------------------------------------------------------------

    def data_to_send(self) -> list[Outbound]:
        """The frames to write, in order. Call after every other method."""
        out, self._out = self._out, []
        return out

    def has_data_to_send(self) -> bool:
        """Whether :meth:`data_to_send` has frames to give."""
        return bool(self._out)

    def frames_to_send(self) -> list[Outbound]:
        """What :meth:`data_to_send` would return, left queued (call that once they are written)."""
        return self._out

    def events_received(self) -> list[Event]:
        """What happened, in order. Call after every other method."""
        events, self._events = self._events, []
        return events

    # --- this side's requests -------------------------------------------------------------

    def new_id(self) -> int:
        """A request id not in use by any open request of ours."""
        while True:
            self._next_id = self._next_id + 1 if self._next_id < MAX_ID else 1
            if self._next_id not in self._mine:
                return self._next_id

    def request(self, message: Request) -> None:
        """Send ``message`` (its id from :meth:`new_id`); its outcome comes as Replied or Failed.

        An upload opens a stream to send on (wait for Credited); a download one to receive on,
        with ``message.window`` as its first credit. Raises :class:`LocalProtocolError` for a
        request this role may not send, an id in use, or too many open requests or streams.
        """
        self._check_open()
        if message.type not in SENDS[self.role]:
            raise LocalProtocolError(f"a {self.role} may not send {message.type!r}", ErrorCode.OUT_OF_ORDER)
        if message.id in self._mine:
            raise LocalProtocolError(f"request id {message.id} is already in use", ErrorCode.DUPLICATE_ID)
        since, what = _since(message)
        if since > self.minor:
            raise UnsupportedVersion(f"{what} needs protocol 1.{since}; the hub speaks {self.version}")
        limits = self.limits
        if (full := self._full(message)) is not None:
            raise LocalProtocolError(full, ErrorCode.TOO_MANY)
        window = _window(message, limits)
        if window is not None and window > limits.max_window:
            raise LocalProtocolError(
                f"a window of {window} exceeds the hub's {limits.max_window}", ErrorCode.FLOW_CONTROL
            )
        open_ = self._mine[message.id] = _Open(message.type)
        self._highest = max(self._highest, message.id)
        if isinstance(message, Upload | PushImage | Connect) or (isinstance(message, Exec) and message.stdin):
            open_.send = _Stream(credit=0)  # a sender waits for credit
        if window is not None:
            open_.recv = _Stream(credit=window)
        self._streaming += open_.streams
        self._send(message)

    def notify(self, message: Notification) -> None:
        """Send ``message``, a notification: no id, and no reply comes (a ``task`` report, a ``usage``).

        Raises :class:`LocalProtocolError` for one this role may not send,
        :class:`UnsupportedVersion` when the hub's welcome is older than the notification, and
        the session's end reason once it is closed.
        """
        self._check_open()
        since = NOTIFIES[self.role].get(message.type)
        if since is None:
            raise LocalProtocolError(f"a {self.role} may not send {message.type!r}", ErrorCode.OUT_OF_ORDER)
        if since > self.minor:
            raise UnsupportedVersion(f"{message.type!r} needs protocol 1.{since}; the hub speaks {self.version}")
        self._send(message)

    def has_room(self, message: Request) -> bool:
        """Whether the hub's limits let ``message`` be sent now; if not, wait for a request to end.

        True when the session is not open, so that :meth:`request` says why it cannot send.
        """
        return self.state is not State.OPEN or self._full(message) is None

    def _full(self, message: Request) -> str | None:
        """Which of the hub's limits ``message`` would pass, if any."""
        limits = self.limits
        if len(self._mine) >= limits.max_pending:
            return f"more than {limits.max_pending} requests open at once"
        if self._streaming >= limits.max_streams and _opens_stream(message):
            return f"more than {limits.max_streams} streams open at once"
        return None

    def cancel(self, request: int) -> None:
        """Ask the hub to stop our open request ``request``; it still ends with one reply. No-op if not open."""
        if self.state is State.OPEN and request in self._mine:
            self._send(Cancel(type="cancel", target=request))

    # --- a provider's replies -------------------------------------------------------------

    def reply(self, message: Reply) -> None:
        """Answer the hub's open request ``message.re``: once finally, and for a download once with info first."""
        self._check_open()
        if message.re is None or (open_ := self._theirs.get(message.re)) is None:
            raise LocalProtocolError(f"{message.type!r} answers no open request of the hub's", ErrorCode.OUT_OF_ORDER)
        if isinstance(message, DownloadInfo | Want):
            if not _interim_fits(open_, message.type):
                raise LocalProtocolError(
                    f"{message.type!r} does not fit the hub's {open_.kind!r} now (request {message.re})",
                    ErrorCode.OUT_OF_ORDER,
                )
            open_.informed = True
            if isinstance(message, Want):
                open_.recv = _Stream(credit=0)  # the blobs come on the create's stream
        elif message.type not in ANSWERS[open_.kind]:
            raise LocalProtocolError(f"{message.type!r} does not answer a {open_.kind!r}", ErrorCode.OUT_OF_ORDER)
        else:
            del self._theirs[message.re]
        self._send(message)

    # --- streams ------------------------------------------------------------------------------

    def credit(self, stream: int) -> int:
        """DATA frames we may send on ``stream`` now (0 for a stream we do not send on)."""
        found = self._stream(stream, sending=True)
        return found.credit if found is not None and not found.ended else 0

    def send_data(self, stream: int, *data: bytes | memoryview) -> None:
        """Send one DATA frame of at most ``chunk_bytes`` on ``stream``, spending one credit; its
        payload may come in parts (joined into the frame: a prefix costs no copy of its own)."""
        self._check_open()
        found = self._sending(stream)
        if found.credit <= 0:
            raise LocalProtocolError(f"no credit to send on stream {stream}", ErrorCode.FLOW_CONTROL)
        size = sum(len(part) for part in data)
        if not 0 < size <= self.limits.chunk_bytes:
            raise LocalProtocolError(
                f"a DATA frame carries 1 to {self.limits.chunk_bytes} bytes, not {size}", ErrorCode.BAD_FRAME
            )
        found.credit -= 1
        found.started = True
        self._out.append(Outbound(frames.encode(FrameKind.DATA, stream, *data), binary=True))

    def end_stream(self, stream: int) -> None:
        """All of ``stream``'s data is sent (an END frame)."""
        self._check_open()
        self._sending(stream).ended = True
        self._out.append(Outbound(frames.encode(FrameKind.END, stream), binary=True))

    def abort_stream(self, stream: int, reason: str) -> None:
        """Give up sending on ``stream`` (an ABORT frame); its request then ends with an error. No-op if not open."""
        found = self._stream(stream, sending=True)
        if self.state is State.OPEN and found is not None and not found.ended:
            found.ended = True
            text = reason.encode(errors="replace")[: frames.MAX_REASON_BYTES].decode(errors="ignore")
            self._out.append(Outbound(frames.encode(FrameKind.ABORT, stream, text.encode()), binary=True))

    def grant(self, stream: int, chunks: int) -> None:
        """Let the sender of ``stream`` send ``chunks`` more DATA frames. No-op if the stream is over."""
        found = self._stream(stream, sending=False)
        if self.state is not State.OPEN or found is None or found.ended:
            return
        if chunks < 1 or found.credit + chunks > self.limits.max_window:
            raise LocalProtocolError(
                f"credit of {chunks} on stream {stream} would exceed the window of {self.limits.max_window}",
                ErrorCode.FLOW_CONTROL,
            )
        found.credit += chunks
        self._send(Credit(type="credit", stream=stream, chunks=chunks))

    # --- the end ------------------------------------------------------------------------------

    def close(self) -> None:
        """This side ends the session (then close the socket): every open request fails with ConnectionClosed."""
        self._end(ConnectionClosed("the connection to the hub was closed by this side"))

    def connection_lost(self, reason: str) -> None:
        """The socket ended (after :meth:`close`, or on its own: then ConnectionLost)."""
        self._end(ConnectionLost(f"the connection to the hub was lost: {reason}"))

    # --- input --------------------------------------------------------------------------------

    def receive_text(self, data: bytes | str) -> None:
        """Take one text frame from the hub."""
        if self.state is State.CLOSED:
            return
        try:
            message = parse(data)
        except RemoteProtocolError as e:
            self._invalid(data, e)
            return
        if self.state is State.HELLO_SENT:
            self._handshake(message)
        elif isinstance(message, Credit):
            found = self._stream(message.stream, sending=True)
            if found is not None and not found.ended:
                found.credit += message.chunks
                self._events.append(Credited(message.stream, message.chunks))
        elif isinstance(message, FinalReply | DownloadInfo | Want) and message.re is not None:
            self._take_reply(message, message.re)
        elif isinstance(message, Error | Cost) or (self.role == "requestor" and isinstance(message, ActivityLost)):
            self._events.append(Notified(message))
        elif isinstance(message, RentProgress):
            self._take_reply(message, message.re)
        elif self.role == "provider" and isinstance(message, HubRequest):
            self._take_request(message)
        elif self.role == "provider" and isinstance(message, Cancel):
            if message.target in self._theirs:
                self._events.append(CancelRequested(message.target))
        else:
            self._violated(
                RemoteProtocolError(f"a {self.role} does not expect {message.type!r}", ErrorCode.OUT_OF_ORDER)
            )

    def receive_binary(self, data: bytes) -> None:
        """Take one binary (stream) frame from the hub."""
        if self.state is State.CLOSED:
            return
        if self.state is State.HELLO_SENT:
            self._end(RemoteProtocolError("a binary frame before welcome", ErrorCode.OUT_OF_ORDER))
            return
        try:
            frame = frames.decode(data, self.limits.chunk_bytes)
        except RemoteProtocolError as e:
            self._violated(e)
            return
        found = self._stream(frame.stream, sending=False)
        if found is None or found.ended:
            return  # it crossed the stream's end
        if frame.kind is FrameKind.DATA:
            if found.credit <= 0:
                found.ended = True
                error = RemoteProtocolError(
                    f"data beyond the credit granted on stream {frame.stream}", ErrorCode.FLOW_CONTROL, frame.stream
                )
                self._events.append(StreamFailed(frame.stream, error))
                return
            found.credit -= 1
            found.started = True
            self._events.append(DataReceived(frame.stream, frame.payload))
        elif frame.kind is FrameKind.END:
            found.ended = True
            self._events.append(StreamEnded(frame.stream))
        else:
            found.ended = True
            reason = bytes(frame.payload).decode(errors="replace")
            self._events.append(StreamFailed(frame.stream, TransferFailed(f"the sender aborted the stream: {reason}")))

    # --- internals ------------------------------------------------------------------------------

    def _handshake(self, message: Message) -> None:
        if isinstance(message, Welcome):
            if int(message.version.split(".")[0]) != MAJOR_VERSION:
                self._end(UnsupportedVersion(f"the hub speaks protocol {message.version}; we speak {PROTOCOL_VERSION}"))
                return
            self.welcome = message
            self.state = State.OPEN
            self._events.append(Welcomed(message))
        elif isinstance(message, Error):
            self._end(error_from_code(message.code, f"the hub refused us: {message.message}"))
        else:
            self._end(
                RemoteProtocolError(f"expected welcome from the hub, got {message.type!r}", ErrorCode.OUT_OF_ORDER)
            )

    def _take_reply(self, message: FinalReply | Interim, re: int) -> None:
        open_ = self._mine.get(re)
        if open_ is None and isinstance(message, Error) and re <= self._highest:
            # Not a violation: the hub's answer to a frame of ours that crossed the request's end
            # (stream data sent as the request failed is refused with unknown_stream). Dropped.
            return
        if open_ is None:
            # Replies to what we never asked are the hub's fault; to what we asked, out of order.
            self._violated(
                RemoteProtocolError(f"{message.type!r} answers no open request {re}", ErrorCode.OUT_OF_ORDER)
            )
            return
        if isinstance(message, DownloadInfo | Want | RentProgress):
            if not _interim_fits(open_, message.type):
                self._forget(re)
                error = RemoteProtocolError(f"a misplaced {message.type} for request {re}", ErrorCode.OUT_OF_ORDER, re)
                self._events.append(Failed(re, error))
                return
            open_.informed = True
            self._events.append(Informed(re, message))
            return
        self._forget(re)
        if isinstance(message, Error):
            self._events.append(Failed(re, error_from_code(message.code, message.message, message.provider)))
        elif message.type not in ANSWERS[open_.kind]:
            error = RemoteProtocolError(
                f"{message.type!r} does not answer a {open_.kind!r}", ErrorCode.OUT_OF_ORDER, re
            )
            self._events.append(Failed(re, error))
        else:
            self._events.append(Replied(re, message))

    def _take_request(self, message: HubRequest) -> None:
        if message.id in self._theirs:
            error = RemoteProtocolError(
                f"the hub reused the id {message.id} of an open request", ErrorCode.DUPLICATE_ID
            )
            self._violated(error)
            return
        open_ = self._theirs[message.id] = _Open(message.type)
        if isinstance(message, Upload | Connect) or (isinstance(message, Exec) and message.stdin):
            open_.recv = _Stream(credit=0)  # the provider grants the first credit
        if (window := _window(message, self.limits)) is not None:
            open_.send = _Stream(credit=window)
        self._events.append(Requested(message))

    def _invalid(self, data: bytes | str, error: RemoteProtocolError) -> None:
        """Something unreadable came: it fails the request it names, or is answered, or is dropped."""
        if self.state is State.HELLO_SENT:
            self._end(RemoteProtocolError(f"the hub sent an invalid handshake reply: {error.message}", error.code))
            return
        re = _reply_to(data)  # parse failed: read the raw JSON once more for the request it names
        if re is not None and re in self._mine:
            self._forget(re)
            self._events.append(
                Failed(re, RemoteProtocolError(f"the hub's reply is invalid: {error.message}", error.code, re))
            )
        elif self.role == "provider" and error.re is not None and error.re not in self._theirs:
            # The hub waits for an answer to the request it meant to send: it gets one.
            self._send(Error(type="error", re=error.re, code=error.code, message=clip(error.message)))
        else:
            self._violated(error)

    def _violated(self, error: RemoteProtocolError) -> None:
        self._events.append(Violated(error))

    def _end(self, error: KilnError) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self.closed = error
        for re in list(self._mine):
            self._events.append(Failed(re, error))
        self._mine.clear()
        self._streaming = 0
        self._theirs.clear()
        self._events.append(Closed(error))

    def _forget(self, re: int) -> None:
        """Our request ``re`` is over."""
        self._streaming -= self._mine.pop(re).streams

    def _check_open(self) -> None:
        if self.state is State.CLOSED:
            assert self.closed is not None
            raise self.closed
        if self.state is not State.OPEN:
            raise LocalProtocolError("the session is not open yet (no welcome)", ErrorCode.OUT_OF_ORDER)

    def _stream(self, stream: int, *, sending: bool) -> _Stream | None:
        """The half of request ``stream``'s streams that goes our way (``sending``) or the other."""
        open_ = (self._mine if self.role == "requestor" else self._theirs).get(stream)
        if open_ is None:
            return None
        return open_.send if sending else open_.recv

    def _sending(self, stream: int) -> _Stream:
        found = self._stream(stream, sending=True)
        if found is None or found.ended:
            raise LocalProtocolError(f"no open stream {stream} to send on", ErrorCode.UNKNOWN_STREAM)
        return found

    def _send(self, message: Message) -> None:
        self._out.append(Outbound(serialize(message)))


def _interim_fits(open_: _Open, kind: str) -> bool:
    """Whether an interim reply of ``kind`` may come now for the request ``open_``."""
    fit = INTERIM.get(open_.kind)
    if fit is None or fit[0] != kind:
        return False
    once = fit[1]
    started = any(half is not None and half.started for half in (open_.send, open_.recv))
    return not once or not (open_.informed or started)


def _window(message: Request | HubRequest, limits: Limits) -> int | None:
    """The first credit of the stream ``message`` opens toward its sender, if it opens one."""
    if isinstance(message, Download):
        return message.window
    if (isinstance(message, Exec) and message.stream) or isinstance(message, Connect):
        return message.window or min(OUTPUT_WINDOW, limits.max_window)
    return None


def _opens_stream(message: Request) -> bool:
    return isinstance(message, Upload | Download | PushImage | Connect) or (
        isinstance(message, Exec) and message.streams
    )


def _since(message: Request) -> tuple[int, str]:
    """The minor version ``message`` needs, and what needs it."""
    # The latest version first: a rent with user= and a budget needs 1.5, not 1.2.
    if isinstance(message, Rent | Offer) and (message.demand if isinstance(message, Rent) else message).outbound:
        return 7, "outbound access"
    if isinstance(message, Rent) and (market := _market_terms(message)):
        return 5, market
    if isinstance(message, Exec) and message.streams:
        return 2, "an exec's stdin or stream"
    if isinstance(message, Rent) and message.user is not None:
        return 2, f"user={message.user!r}"
    if isinstance(message, Offer) and message.cached:
        return 4, "an offer's cached images"
    return SINCE.get(message.type, 0), repr(message.type)


def _market_terms(rent: Rent) -> str:
    """The 1.5 terms a rent carries (a price cap, a budget...), named as the caller wrote them; empty if none."""
    terms = [
        name
        for name, value in (
            ("max_price", rent.demand.max_price),
            ("max_duration", rent.max_duration),
            ("budget", rent.budget),
            ("strategy", rent.strategy),
            ("allow", rent.allow),
            ("min_reputation", rent.min_reputation),
        )
        if value is not None
    ]
    return ", ".join(terms)


def _reply_to(data: bytes | str) -> int | None:
    """The ``re`` of a text frame that failed validation, when it has a usable one."""
    try:
        return request_number(orjson.loads(data), "re")
    except orjson.JSONDecodeError:
        return None
