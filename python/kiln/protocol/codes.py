"""Stable error codes and WebSocket close codes shared by the protocol, the hub, the provider and every client.

A code never changes meaning once published; a later minor version may add codes,
so a client must treat an unknown error code like ``internal``.

Each code carries what it means and who sends it: ``python -m kiln.protocol.schema`` writes
both tables into ``protocol/v1/schema.json`` (``x-kiln-error-codes``, ``x-kiln-close-codes``),
and the JavaScript client's are generated from there (``make schema``).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Final, Literal

Sender = Literal["hub", "provider", "client"]
"""Who sends a code: the hub or a provider in an ``error`` message, or a client (an SDK) that
raises it itself and never sends it."""

_PEERS: Final[tuple[Sender, ...]] = ("hub", "provider")
_HUB: Final[tuple[Sender, ...]] = ("hub",)
_PROVIDER: Final[tuple[Sender, ...]] = ("provider",)
_CLIENT: Final[tuple[Sender, ...]] = ("client",)


class ErrorCode(StrEnum):
    """An ``error`` message's ``code``; ``meaning`` says when it is sent and ``sent_by`` by whom."""

    _value_: str
    meaning: str
    sent_by: tuple[Sender, ...]

    # The defaults are for mypy, which reads this signature for a lookup by value too
    # (``ErrorCode("bad_json")``); every member names both.
    def __new__(cls, value: str, meaning: str = "", sent_by: tuple[Sender, ...] = ()) -> ErrorCode:
        code = str.__new__(cls, value)
        code._value_ = value
        code.meaning = meaning
        code.sent_by = sent_by
        return code

    # The frame or message itself is wrong (the peer broke the protocol).
    BAD_JSON = "bad_json", "the text frame is not JSON", _PEERS
    BAD_MESSAGE = "bad_message", "not an object, no `type`, a missing or extra field, a wrong type or range", _PEERS
    UNKNOWN_TYPE = "unknown_type", "a `type` this version does not define", _PEERS
    MESSAGE_TOO_LARGE = (
        "message_too_large",
        "a text frame over `limits.max_message_bytes` (the connection stays open)",
        _HUB,
    )
    BAD_FRAME = "bad_frame", "a binary frame with a bad layout or an oversized payload", _PEERS
    UNSUPPORTED_VERSION = "unsupported_version", "hello with another major version", _HUB
    UNAUTHORIZED = (
        "unauthorized",
        "wrong or missing token, a credential of the other role, a provider name bound to another credential, "
        "a revoked credential; an `activities` with `all` without an admin credential; a `remove_image` or "
        "`share_image` of an image the requestor does not own",
        _HUB,
    )
    NAME_TAKEN = "name_taken", "a provider with that name is connected", _HUB
    OUT_OF_ORDER = (
        "out_of_order",
        "a message not allowed now or for this role (anything before `hello`, a reply to no open request)",
        _PEERS,
    )
    DUPLICATE_ID = "duplicate_id", "a request id already open on this connection", _PEERS
    TOO_MANY = (
        "too_many",
        "over `max_pending` requests or `max_streams` streams, a `rent` past the activities one connection "
        "may hold, or too many connections or failed hellos",
        _PEERS,
    )
    FLOW_CONTROL = "flow_control", "data without credit, or credit over `max_window`", _PEERS
    BAD_PATH = "bad_path", "a container path that is relative, not normalized, or holds `..`", _PEERS
    # The message is well formed but names something that is not there (or not yours).
    UNKNOWN_ACTIVITY = "unknown_activity", "no such activity of yours, or not ready", _PEERS
    UNKNOWN_STREAM = "unknown_stream", "a frame or credit for a stream that is not open", _PEERS
    # The market.
    NO_MATCH = "no_match", "no provider can take the demand now", _HUB
    IMAGE_NOT_FOUND = (
        "image_not_found",
        "the provider does not hold the image (and may not fetch it), or the store has no such image",
        _PEERS,
    )
    # The image store (1.1).
    BAD_IMAGE = (
        "bad_image",
        "(1.1) not an image: a config that does not describe the pushed layers, a bad `docker save` archive",
        _HUB,
    )
    IMAGE_CORRUPT = "image_corrupt", "(1.1) a blob's bytes do not match its digest or declared size", _PEERS
    STORE_FULL = "store_full", "(1.1) the hub's image store cannot make room for the push", _HUB
    IMAGE_TOO_LARGE = (
        "image_too_large",
        "(1.4) the image's layers would expand past a limit: the hub's or a provider's image cache",
        _PEERS,
    )
    # The ledger (1.5).
    INSUFFICIENT_FUNDS = (
        "insufficient_funds",
        "(1.5) a rent of a priced provider whose worst-case cost the requestor's available credits cannot hold "
        "(or by a requestor with no account); an activity whose hold ran out",
        _HUB,
    )
    BUDGET_EXCEEDED = (
        "budget_exceeded",
        "(1.5) a rent whose hold what is left of its group's budget cannot cover; an activity ended when its "
        "group's budget ran out (a job's `BudgetExceeded`)",
        ("hub", "client"),
    )
    EXPIRED = "expired", "(1.5) an activity ended by the hub at its rent's `max_duration`", _HUB
    # The work.
    PROVIDER_LOST = "provider_lost", "the activity's provider disconnected", _HUB
    FILE_NOT_FOUND = "file_not_found", "no such path in the container", _PROVIDER
    NOT_A_FILE = "not_a_file", "a folder where a file is needed (or the reverse)", _PROVIDER
    TRANSFER_FAILED = "transfer_failed", "a stream broke off, or its size was wrong", _PEERS
    CONTAINER_FAILED = "container_failed", "Docker refused an operation", _PROVIDER
    CANCELLED = "cancelled", "the request was cancelled", _PEERS
    CONNECTION_REFUSED = (
        "connection_refused",
        "(1.7) a `connect` to a port of the container where nothing listens",
        _PROVIDER,
    )
    NOT_PUBLISHED = "not_published", "(1.7) an `unpublish` of a token that is not one of yours", _HUB
    # The requestor SDKs' own, never sent on the wire.
    TIMEOUT = "timeout", "a command ran past its timeout (or a job's task past its own)", _CLIENT
    CONNECTION_CLOSED = "connection_closed", "the connection to the hub is gone", _CLIENT
    COMMAND_FAILED = "command_failed", "a command run with `check` exited with a code other than 0", _CLIENT
    DOWNLOAD_TOO_LARGE = (
        "download_too_large",
        "a download would pass its bound (by default the storage rented)",
        _CLIENT,
    )
    TASK_FAILED = "task_failed", "a job's task failed for good", _CLIENT
    INTERNAL = "internal", "anything else; also how to treat a code you do not know", ("hub", "provider", "client")


class CloseCode(IntEnum):
    """The WebSocket close codes of kiln.v1: RFC 6455's that it gives a meaning, and its own
    (4000-4999 are the application's). ``meaning`` says when a connection is closed with it."""

    _value_: int
    meaning: str

    def __new__(cls, value: int, meaning: str = "") -> CloseCode:  # a default for lookups by value, as above
        code = int.__new__(cls, value)
        code._value_ = value
        code.meaning = meaning
        return code

    NORMAL = 1000, "the peer ended the connection on purpose: a requestor's activities go at once (no grace)"
    GOING_AWAY = 1001, "the peer is going away on purpose: a provider stopped, or the hub shuts down"
    ABNORMAL = 1006, "never sent: the connection ended without a close frame"
    MESSAGE_TOO_BIG = 1009, "a frame over `limits.max_frame_bytes` (a hello over its own bound), closed unread"
    TRY_AGAIN = 1013, "the hub cannot take the hello yet: another hub of its database holds the session resumed"
    UNSUPPORTED_VERSION = 4001, "the hello's major version differs from the hub's (`unsupported_version`)"
    UNAUTHORIZED = 4002, "the hub refused the hello's token, or revoked its credential (`unauthorized`)"
    HANDSHAKE = 4003, "no valid `hello` as the first frame, or none in time"
    NAME_TAKEN = 4004, "a provider with the hello's name is connected (`name_taken`)"
    SLOW = 4005, "the peer does not read: the hub's buffer for it is full"
    UNRESPONSIVE = 4006, "a provider left a `create` or `destroy` unanswered past its timeout"
    RESUMED = 4007, "another connection took this requestor's session over (`hello.resume`)"
    TOO_MANY = 4008, "too many connections: from the peer's address, or with its credential (`too_many`)"
    FAILED_HELLOS = 4009, "too many failed hellos from the peer's address: its hello is not read (`too_many`)"


# The names the hub closes connections by.
CLOSE_UNSUPPORTED_VERSION: Final = CloseCode.UNSUPPORTED_VERSION
CLOSE_UNAUTHORIZED: Final = CloseCode.UNAUTHORIZED
CLOSE_HANDSHAKE: Final = CloseCode.HANDSHAKE
CLOSE_NAME_TAKEN: Final = CloseCode.NAME_TAKEN
CLOSE_SLOW: Final = CloseCode.SLOW
CLOSE_UNRESPONSIVE: Final = CloseCode.UNRESPONSIVE
CLOSE_RESUMED: Final = CloseCode.RESUMED
CLOSE_TOO_MANY: Final = CloseCode.TOO_MANY
CLOSE_FAILED_HELLOS: Final = CloseCode.FAILED_HELLOS
