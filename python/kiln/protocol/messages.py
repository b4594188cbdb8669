"""Every JSON message of protocol kiln.v1, as immutable values that check themselves.

The models here are the source of truth: ``protocol/v1/schema.json`` is generated
from them (``make schema``) and ``protocol/v1/PROTOCOL.md`` describes them in prose.

Call :func:`parse` on the text of a WebSocket text frame to get a message or a
:class:`~kiln.protocol.errors.RemoteProtocolError`; build a message to send with its
class (an invalid one is a :class:`~kiln.protocol.errors.LocalProtocolError`) and call
:func:`serialize` to get its bytes. Nothing in this module does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final, Literal, TypeAlias, get_args

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import KilnError, LocalProtocolError, RemoteProtocolError, UsageError
from kiln.protocol.money import MAX_MICRO, to_micro
from kiln.protocol.outbound import MAX_RULE_LENGTH, MAX_RULES, RULE_PATTERN, RuleError, parse_rule
from kiln.protocol.paths import FORMAT as PATH_FORMAT
from kiln.protocol.paths import MAX_PATH_LENGTH, path_problem
from kiln.protocol.sizes import parse_size

PROTOCOL_NAME: Final = "kiln.v1"
PROTOCOL_VERSION: Final = "1.7"
MINOR_VERSION: Final = 7
MAJOR_VERSION: Final = 1

MAX_ID: Final = 2**31 - 1
MAX_EXCLUDE: Final = 1024
"""The most providers one ``rent`` may pass over."""
MAX_LISTED: Final = 1000
"""The most providers one ``market`` reply lists, and the most activities one ``activity_list`` lists."""
MAX_TEXT: Final = 4096
"""The longest free text (an error's message, a loss's reason) a message carries."""
MAX_LAYERS: Final = 256
"""The most layers an image may have (Docker's own limit is 127)."""
MAX_REPORTED: Final = 1024
"""The most activities a provider's hello may list (4,096 before 1.4): with them a hello stays small
enough (:data:`MAX_HELLO_BYTES`) for the hub to read before it knows who speaks."""
MAX_OFFERED: Final = 4096
"""The most image names an offer's ``images`` (and, apart, its ``cached``) may list."""
MAX_TAGS: Final = 16
"""The most tags one push may give an image."""
MAX_SHARES: Final = 64
"""The most tenants one ``share_image`` may name."""
MIN_MEMORY: Final = 6 * 2**20
"""The least memory a demand may ask for (Docker's own floor); 0 would mean no limit at all."""


WIRE: Final = {"wire": True}
"""The validation context of what came off the wire (see :func:`parse`)."""


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    _invalid: ClassVar[type[KilnError]] = LocalProtocolError

    @model_validator(mode="wrap")
    @classmethod
    def _built_here(cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        """A message built on this side that breaks the protocol is a LocalProtocolError, never sent.

        What comes off the wire (validated with the context :data:`WIRE`) fails as a
        ValidationError instead, which :func:`parse` turns into a RemoteProtocolError.
        """
        if info.context is WIRE:
            return handler(data)
        try:
            return handler(data)
        except ValidationError as e:
            kind = get_args(cls.model_fields["type"].annotation)[0] if "type" in cls.model_fields else None
            what = f"{kind!r} message" if kind else cls.__name__.lower()
            raise cls._invalid(_describe(what, e), _code_of(e)) from e


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` made fit for a message's free-text field: at most ``limit`` characters, valid UTF-8."""
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    # A lone surrogate (from a decoded file name, say) cannot be encoded as JSON.
    return text.encode("utf-8", "replace").decode("utf-8")


def check_container_path(path: str) -> str:
    """``path`` if it is a container path (see :mod:`kiln.protocol.paths`), else a ``bad_path`` error."""
    problem = path_problem(path)
    if problem is not None:
        # Braces in the path must not be read as pydantic's message template fields.
        raise PydanticCustomError("bad_path", "{problem}", {"problem": problem})
    return path


RequestId: TypeAlias = Annotated[int, Field(ge=1, le=MAX_ID)]
ActivityId: TypeAlias = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
GroupName: TypeAlias = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
NAME_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]+$"
"""A name holds no control character (C0, DEL, C1) and no invisible or bidirectional format character."""
Name: TypeAlias = Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]
ImageRef: TypeAlias = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")]
TenantName: TypeAlias = Annotated[str, Field(min_length=1, max_length=65, pattern=NAME_PATTERN)]
"""(1.4) A tenant of the image store: the name of a credential (``kiln token ls``), ``#<id>`` for its
id, or ``#open`` for the requestors that join without a credential."""
ContainerPath: TypeAlias = Annotated[
    str,
    # The length is part of the path rule (paths.py): a path too long is a bad path.
    Field(
        json_schema_extra={
            "format": PATH_FORMAT,
            "description": f"An absolute, normalized container path of at most {MAX_PATH_LENGTH} characters.",
        }
    ),
    AfterValidator(check_container_path),
]
Digest: TypeAlias = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?/)?"
TAG_PATTERN: Final = rf"^{_DOMAIN}{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?$"
"""A Docker image reference by name: ``[host[:port]/]path[:tag]`` (no digest)."""
ImageTag: TypeAlias = Annotated[str, Field(max_length=255, pattern=TAG_PATTERN)]
Labels: TypeAlias = Annotated[
    dict[Annotated[str, Field(min_length=1, max_length=128)], Annotated[str, Field(max_length=256)]],
    Field(max_length=64),
]
Bytes: TypeAlias = Annotated[int, Field(ge=0, le=2**62)]
Code: TypeAlias = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="A stable error code. Known codes: "
        + ", ".join(c.value for c in ErrorCode)
        + ". A later minor version may add codes; treat an unknown one like 'internal'.",
    ),
]
Cpus: TypeAlias = Annotated[float, Field(ge=0, le=4096)]


# --- values carried inside messages ------------------------------------------------


class Resources(_Message):
    """An amount of capacity: CPUs (fractions allowed), memory and storage in bytes."""

    cpus: Cpus
    memory: Bytes
    storage: Bytes = 0


def _size_from_python(value: Any, info: ValidationInfo) -> Any:
    """A size written as text ("256MiB") is taken from Python callers, never from the wire."""
    if isinstance(value, str) and info.context is not WIRE:
        return parse_size(value)
    return value


def _all_required(schema: dict[str, Any]) -> None:
    """A model's schema with every property required and none defaulted."""
    properties = schema["properties"]
    for field in properties.values():
        field.pop("default", None)
    schema["required"] = list(properties)


def _credits_from_python(value: Any, info: ValidationInfo) -> Any:
    """A Python caller writes credits (``0.05``); the wire carries micro-credits (integers)."""
    if info.context is not WIRE:
        return to_micro(value, info.field_name or "an amount")
    return value


Micro: TypeAlias = Annotated[int, Field(ge=0, le=MAX_MICRO)]
"""(1.5) An amount in micro-credits (a credit is 1,000,000): never a float."""
Rate: TypeAlias = Annotated[int, Field(ge=0, le=MAX_MICRO), BeforeValidator(_credits_from_python)]


class Price(_Message):
    """(1.5) A provider's linear price, in micro-credits: ``start`` once per activity, ``cpu_hour`` per
    hour of CPU time its container used, ``env_hour`` per hour the container is held (wall time).

    In Python the rates are written in credits, ``Price(start=0.01, cpu_hour=0.2)``, and read back
    in micro-credits (``price.start == 10000``); :meth:`micro` builds one from micro-credits."""

    # Every rate is sent (what pydantic dumps): the schema requires all three, so a validator
    # never fills a default inside an optional field (strict ajv refuses that).
    model_config = ConfigDict(json_schema_extra=lambda schema: _all_required(schema))
    _invalid = UsageError

    start: Rate = 0
    cpu_hour: Rate = 0
    env_hour: Rate = 0

    if TYPE_CHECKING:

        def __init__(
            self, *, start: float | str = ..., cpu_hour: float | str = ..., env_hour: float | str = ...
        ) -> None: ...

    @model_validator(mode="before")
    @classmethod
    def _whole_on_the_wire(cls, data: Any, info: ValidationInfo) -> Any:
        """On the wire a price names every rate (as its schema says): no default is filled in."""
        if info.context is WIRE and isinstance(data, dict):
            missing = [name for name in ("start", "cpu_hour", "env_hour") if name not in data]
            if missing:
                raise ValueError(f"a price names every rate: {', '.join(missing)} missing")
        return data

    @classmethod
    def micro(cls, start: int = 0, cpu_hour: int = 0, env_hour: int = 0) -> Price:
        """A price from amounts in micro-credits (as the wire carries them)."""
        return cls.model_validate({"start": start, "cpu_hour": cpu_hour, "env_hour": env_hour}, context=WIRE)

    @property
    def free(self) -> bool:
        return self.start == 0 and self.cpu_hour == 0 and self.env_hour == 0


def _rule(value: str) -> str:
    try:
        return str(parse_rule(value))
    except RuleError as e:
        raise PydanticCustomError("bad_rule", str(e)) from None


OutboundRule: TypeAlias = Annotated[str, Field(max_length=MAX_RULE_LENGTH, pattern=RULE_PATTERN), AfterValidator(_rule)]
"""(1.7) ``HOST:PORT``: a DNS name, ``*.`` and a name, an IPv4 address or ``[IPv6]``; a port or ``*``."""
OutboundRules: TypeAlias = Annotated[list[OutboundRule], Field(min_length=1, max_length=MAX_RULES)]
OutboundPolicy: TypeAlias = Literal["any"] | OutboundRules
"""(1.7) What a provider lets its containers reach: ``"any"`` site, or those its rules name."""


class Demand(_Message):
    """What a requestor asks for: at least these resources, and these labels exactly; with
    ``max_price`` (1.5), only from a provider whose every rate is at most the cap's."""

    # In Python the sizes may be written as text, Demand(cpus=1, memory="256MiB"), and an
    # invalid demand is the caller's UsageError; on the wire they are bytes.
    _invalid = UsageError

    cpus: Annotated[float, Field(ge=0.01, le=4096)] = 1.0
    memory: Annotated[int, Field(ge=MIN_MEMORY, le=2**62), BeforeValidator(_size_from_python)] = 256 * 2**20
    storage: Annotated[int, Field(ge=0, le=2**62), BeforeValidator(_size_from_python)] = 0
    labels: Labels = {}
    max_price: Price | None = None
    """(1.5) The most this demand pays: a provider whose price passes any rate is not matched."""
    outbound: OutboundRules | None = None
    """(1.7) The sites the container may reach (``HOST:PORT`` rules, :mod:`kiln.protocol.outbound`),
    through its provider's proxy: only a provider whose policy covers every one is matched."""

    if TYPE_CHECKING:
        # What a Python caller may pass (sizes as text too); the fields above are what it gets.
        def __init__(
            self,
            *,
            cpus: float = ...,
            memory: int | str = ...,
            storage: int | str = ...,
            labels: dict[str, str] = ...,
            max_price: Price | None = ...,
            outbound: list[str] | None = ...,
        ) -> None: ...


class Limits(_Message):
    """The hub's limits, announced in ``welcome``; a peer must stay within them."""

    max_message_bytes: int
    max_frame_bytes: int
    chunk_bytes: int
    max_window: int
    max_pending: int
    max_streams: int
    max_output_bytes: int


class Blob(_Message):
    """A piece of an image, named by the sha256 of its bytes."""

    digest: Digest
    size: Bytes
    expanded: Bytes | None = None
    """(1.4) What the layer takes once extracted, as the hub metered it (each entry's real size,
    sparse files whole, in 4 KiB blocks): set by the hub in the manifests it sends providers;
    what a requestor puts here is ignored."""


class Manifest(_Message):
    """An image as Docker keeps it: its config (whose digest is Docker's image id) and its
    layers, uncompressed tars whose digests are the config's ``rootfs.diff_ids``, base first."""

    config: Blob
    layers: Annotated[list[Blob], Field(max_length=MAX_LAYERS)]


class ImageInfo(_Message):
    """An image in the hub's store, as the requestor asking may see it: ``size`` counts its config
    and layers; times are Unix seconds; ``tags`` are the requestor's own (1.4: tags live in their
    owner's namespace)."""

    digest: Digest
    tags: list[ImageTag]
    size: Bytes
    layers: int
    arch: Annotated[str, Field(max_length=32)]
    os: Annotated[str, Field(max_length=32)]
    pushed: Annotated[float, Field(ge=0)]
    last_used: Annotated[float, Field(ge=0)] | None = None
    in_use: Annotated[int, Field(ge=0)] = 0
    providers: Annotated[list[Name], Field(max_length=MAX_LISTED)] = []
    owners: Annotated[list[TenantName], Field(max_length=MAX_LISTED)] | None = None
    """(1.4) The tenants that pushed it, as far as the requestor may know: itself, those that share
    it with it (every one, to an admin)."""
    shared: Annotated[list[TenantName], Field(max_length=MAX_LISTED)] | None = None
    """(1.4, to an owner or an admin) The tenants its holding is shared with (``share_image``)."""
    public: bool | None = None
    """(1.4) Whether it is shared with every tenant."""


class ProviderInfo(_Message):
    name: Name
    arch: str
    labels: Labels
    images: list[str]
    offered: Resources
    free: Resources
    activities: int
    price: Price | None = None
    """(1.5) Its price (absent: free)."""
    reputation: Annotated[float, Field(ge=0, le=1)] | None = None
    """(1.5) Its score in [0, 1] from what the hub observed of it (see PROTOCOL.md, "Reputation")."""
    outbound: OutboundPolicy | None = None
    """(1.7) The sites its containers may reach (absent: none)."""


ActivityState: TypeAlias = Literal["creating", "ready", "destroying", "absent"]
"""Where an activity is in its life at the hub: its container being started, running, being removed,
or held since a restart of the hub for a provider that has not dialled again yet."""


class ActivityInfo(_Message):
    """(1.3) An activity as the hub holds it: whose it is (the requestor's name), where it runs, what it
    reserves. ``started`` is the hub's clock (Unix seconds) when it became ready (absent while creating);
    ``image`` the stored image's digest it runs, else the name its rent gave (absent after a restart of
    the hub). ``credential`` is the id of the credential its requestor joined with (``kiln token ls``):
    the name is the requestor's own word, the credential the hub's (absent: the shared token or an open
    hub)."""

    id: ActivityId
    requestor: Name
    credential: Annotated[int, Field(ge=0)] | None = None
    provider: Name
    state: ActivityState
    resources: Resources
    group: GroupName | None = None
    started: Annotated[float, Field(ge=0)] | None = None
    image: ImageRef | None = None


# --- handshake -------------------------------------------------------------------


class Hello(_Message):
    """First message on every connection, from the peer that dialled the hub."""

    type: Literal["hello"]
    version: Annotated[str, Field(pattern=r"^[0-9]{1,4}\.[0-9]{1,4}$")]
    role: Literal["requestor", "provider"]
    name: Name
    token: Annotated[str, Field(max_length=1024)] | None = None
    software: Annotated[str, Field(max_length=128)] = ""
    resume: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")] | None = None
    """(1.2, a requestor's) The ``resume`` secret of an earlier welcome: take that session's activities over."""
    activities: Annotated[list[ActivityId], Field(max_length=MAX_REPORTED)] | None = None
    """(1.3, a provider's) The activities it still runs, dialling again: the hub keeps those it holds for it
    (after a restart of the hub) and sends ``destroy`` for the others. A provider sends it only to a hub that
    welcomed it at 1.3 before."""


class Welcome(_Message):
    """The hub's answer to ``hello``: the version both sides now speak, and the limits."""

    type: Literal["welcome"]
    version: str
    session: str
    software: str
    limits: Limits
    resume: str | None = None
    """(1.2, to a requestor) The secret that lets a later connection take this session over (``hello.resume``)."""
    grace: Annotated[float, Field(ge=0)] | None = None
    """(1.2, with ``resume``) Seconds the hub holds this session's activities after its connection ends."""
    resumed: Annotated[list[ActivityId], Field(max_length=65536)] | None = None
    """(1.2, only when the hello carried ``resume``) The activities this connection took over."""


# --- replies common to every request ---------------------------------------------


class Error(_Message):
    """A request failed (``re`` names it), or a message could not be taken at all.

    ``provider`` names the provider a failed ``rent`` was tried on, when it got that far.
    """

    type: Literal["error"]
    re: RequestId | None = None
    code: Code
    message: Annotated[str, Field(max_length=MAX_TEXT)]
    provider: Name | None = None


class Done(_Message):
    """A request succeeded: ``bytes`` moved by a stream; ``cpu_seconds`` a released container used."""

    type: Literal["done"]
    re: RequestId
    bytes: Bytes | None = None
    cpu_seconds: Annotated[float, Field(ge=0)] | None = None


# --- the market ------------------------------------------------------------------


class Offer(_Message):
    """Provider -> hub: the capacity it shares and the images it holds. Sent again on change.

    ``images`` are those its operator allows anyone to run (by tag and by id); ``cached`` (1.4)
    the ids of images it loaded from the hub's store, which the hub lets only a requestor that
    may rent the stored image run.
    """

    type: Literal["offer"]
    id: RequestId
    resources: Resources
    arch: Annotated[str, Field(min_length=1, max_length=32)]
    labels: Labels = {}
    images: Annotated[list[ImageRef], Field(max_length=MAX_OFFERED)] = []
    root: bool | None = None
    """(1.2) Its operator lets a requestor's commands run as root."""
    cached: Annotated[list[Digest], Field(max_length=MAX_OFFERED)] | None = None
    """(1.4) The images (ids) it loaded from the hub's store: matched only by a rent of a stored image."""
    price: Price | None = None
    """(1.5) What an activity here costs (absent: free)."""
    outbound: OutboundPolicy | None = None
    """(1.7) The sites its containers may reach through its proxy (absent: none)."""


Strategy: TypeAlias = Literal["least_loaded", "cheapest", "reputation"]
"""(1.5) How the hub picks a provider: the fewest activities and most free memory (``least_loaded``);
the lowest worst-case cost of the demand for its ``max_duration`` or an hour (``cheapest``); the
highest reputation (``reputation``). Ties go to the least loaded."""

User: TypeAlias = Literal["root"]
"""Whom an activity's commands run as, when not the image's USER (or nobody)."""


class Rent(_Message):
    """Requestor -> hub: find a provider that meets ``demand`` and start ``image`` there.

    Providers named in ``exclude`` are passed over. Activities of one ``group`` (a name the
    requestor chooses, e.g. one per job) are kept on distinct providers: the hub never
    picks a provider where this requestor holds a live activity of the same group.
    """

    type: Literal["rent"]
    id: RequestId
    image: ImageRef
    demand: Demand
    exclude: Annotated[list[Name], Field(max_length=MAX_EXCLUDE)] = []
    group: GroupName | None = None
    user: User | None = None
    """(1.2) ``"root"``: commands run as root, on a provider whose operator allows it."""
    max_duration: Annotated[float, Field(gt=0, le=366 * 86400)] | None = None
    """(1.5) Seconds the activity may be held: the hub ends it then (``activity_lost``, code ``expired``),
    and holds its worst-case cost for that long."""
    budget: Micro | None = None
    """(1.5, with ``group``) The most the group may ever spend, in micro-credits, at this hub: the
    first rent of a group sets it; a rent whose hold the rest cannot cover is refused (``budget_exceeded``)."""
    strategy: Strategy | None = None
    """(1.5) How the hub picks among the providers that fit (absent: ``least_loaded``)."""
    allow: Annotated[list[Name], Field(min_length=1, max_length=MAX_EXCLUDE)] | None = None
    """(1.5) Only these providers may be picked (``exclude`` is the deny list)."""
    min_reputation: Annotated[float, Field(ge=0, le=1)] | None = None
    """(1.5) Only providers whose reputation is at least this may be picked."""

    @model_validator(mode="after")
    def _budget_needs_group(self) -> Rent:
        if self.budget is not None and self.group is None:
            raise ValueError("a budget is a group's: give the rent a group")
        return self


class Rented(_Message):
    """A rent succeeded; ``pulled`` (1.1) counts the image bytes the provider fetched for it.

    ``price`` (1.5) is the provider's; ``hold`` (1.5) what the hub holds of the requestor's credits
    for the activity (its worst case for ``max_duration``, or what the group's budget had left)."""

    type: Literal["rented"]
    re: RequestId
    activity: ActivityId
    provider: Name
    cached: bool
    resources: Resources
    pulled: Bytes | None = None
    price: Price | None = None
    hold: Micro | None = None


class RentProgress(_Message):
    """Hub -> requestor (1.1), interim reply to ``rent``: the provider loads the image, ``done`` of
    ``total`` bytes sent so far."""

    type: Literal["rent_progress"]
    re: RequestId
    provider: Name
    image: ImageRef
    done: Bytes
    total: Bytes


class Release(_Message):
    """Requestor -> hub: destroy the activity's container and free its capacity."""

    type: Literal["release"]
    id: RequestId
    activity: ActivityId


class MarketQuery(_Message):
    """Requestor -> hub: describe the providers that hold ``image``, carry ``labels`` and have ``free``
    capacity left, at most ``limit`` of them (by name)."""

    type: Literal["market"]
    id: RequestId
    image: ImageRef | None = None
    labels: Labels = {}
    free: Resources = Resources(cpus=0, memory=0)
    limit: Annotated[int, Field(ge=1, le=MAX_LISTED)] = 100


class MarketInfo(_Message):
    """The providers a ``market`` asked for; ``matched`` counts all that match, listed or not."""

    type: Literal["market_info"]
    re: RequestId
    providers: list[ProviderInfo]
    matched: Annotated[int, Field(ge=0)]
    activities: int


class ActivitiesQuery(_Message):
    """Requestor -> hub (1.3): the activities this requestor holds, or with ``all`` every activity at
    the hub (only for a requestor that joined with an admin credential), at most ``limit`` of them (by id)."""

    type: Literal["activities"]
    id: RequestId
    all: bool = False
    limit: Annotated[int, Field(ge=1, le=MAX_LISTED)] = MAX_LISTED


class ActivityList(_Message):
    """(1.3) The activities an ``activities`` asked for, by id; ``matched`` counts all that match, listed or not."""

    type: Literal["activity_list"]
    re: RequestId
    activities: Annotated[list[ActivityInfo], Field(max_length=MAX_LISTED)]
    matched: Annotated[int, Field(ge=0)]


class Create(_Message):
    """Hub -> provider: start a container for a new activity with these resources.

    ``manifest`` (1.1) comes when the hub stores the image (``image`` is then its digest): a
    provider that lacks some of its blobs answers ``want`` and receives them on this request's stream.
    """

    type: Literal["create"]
    id: RequestId
    activity: ActivityId
    image: ImageRef
    resources: Resources
    manifest: Manifest | None = None
    user: User | None = None
    """(1.2) ``"root"``: the requestor asked for root, and this provider's offer allows it."""
    outbound: OutboundRules | None = None
    """(1.7) The rent's ``demand.outbound``: the sites the container may reach through the provider's
    proxy (``127.0.0.1:3128`` in the container), within the provider's own policy."""


class Destroy(_Message):
    """Hub -> provider: remove the activity's container (answered with ``done``)."""

    type: Literal["destroy"]
    id: RequestId
    activity: ActivityId


class ActivityLost(_Message):
    """Hub -> requestor: the activity is gone (provider lost, container died)."""

    type: Literal["activity_lost"]
    activity: ActivityId
    code: Code
    reason: Annotated[str, Field(max_length=MAX_TEXT)]


# --- work inside an activity (requestor -> hub -> provider, same shape both legs) ------


class Exec(_Message):
    """Run ``argv`` exactly as given (no shell) in the activity's container."""

    type: Literal["exec"]
    id: RequestId
    activity: ActivityId
    argv: Annotated[list[Annotated[str, Field(max_length=65536)]], Field(min_length=1, max_length=4096)]
    env: Annotated[dict[Annotated[str, Field(min_length=1, max_length=256)], str], Field(max_length=1024)] = {}
    workdir: ContainerPath | None = None
    timeout: Annotated[float, Field(gt=0, le=7 * 86400)] | None = None
    stdin: bool | None = None
    """(1.2) The command's stdin comes on a stream from the requestor (absent: empty)."""
    stream: bool | None = None
    """(1.2) The command's output goes out as it comes, on a stream toward the requestor."""
    window: Annotated[int, Field(ge=1, le=1024)] | None = None
    """(1.2) The first credit of the output stream, in chunks (only with ``stream``; default 16)."""

    @model_validator(mode="after")
    def _window_with_stream(self) -> Exec:
        if self.window is not None and not self.stream:
            raise ValueError("'window' is the credit of an output stream: it needs 'stream': true")
        return self

    @property
    def streams(self) -> bool:
        """Whether this exec opens a stream (its input, its output, or both)."""
        return bool(self.stdin or self.stream)


class ExecResult(_Message):
    """The end of an ``exec``: exit code, and stdout/stderr base64-encoded (capped)."""

    type: Literal["exec_result"]
    re: RequestId
    exit_code: int
    timed_out: bool
    stdout: str
    stderr: str
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration: Annotated[float, Field(ge=0)]


class Connect(_Message):
    """(1.7) Open a TCP connection to ``127.0.0.1:port`` inside the activity's container.

    The bytes flow on one stream each way under the request's id: the provider grants the first
    credit toward the container once the connection is open; ``window`` is the first credit of
    the stream out of it (default 16). END is a half-close; the reply (``done`` with ``bytes``
    received from the container) comes once both ways have ended."""

    type: Literal["connect"]
    id: RequestId
    activity: ActivityId
    port: Annotated[int, Field(ge=1, le=65535)]
    window: Annotated[int, Field(ge=1, le=1024)] | None = None


class Publish(_Message):
    """(1.7) Requestor -> hub: serve the activity's ``port`` as HTTP at an unguessable URL of the hub's."""

    type: Literal["publish"]
    id: RequestId
    activity: ActivityId
    port: Annotated[int, Field(ge=1, le=65535)]


class Published(_Message):
    """(1.7) The answer to ``publish``: ``url`` (``.../s/<token>/``) serves the port until ``unpublish``
    or the activity's end; ``token`` names it in ``unpublish``."""

    type: Literal["published"]
    re: RequestId
    token: Annotated[str, Field(min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]
    url: Annotated[str, Field(min_length=1, max_length=2048)]


class Unpublish(_Message):
    """(1.7) Requestor -> hub: the published URL of ``token`` serves nothing from now on (``done``)."""

    type: Literal["unpublish"]
    id: RequestId
    token: Annotated[str, Field(min_length=1, max_length=128)]


class Upload(_Message):
    """Open a stream of ``size`` bytes into the file ``path``; the receiver grants credit."""

    type: Literal["upload"]
    id: RequestId
    activity: ActivityId
    path: ContainerPath
    size: Bytes
    mode: Annotated[int, Field(ge=0, le=0o777, description="permission bits; no setuid, setgid or sticky")] = 0o644


class Download(_Message):
    """Open a stream out of ``path``; ``window`` is the first credit, in chunks."""

    type: Literal["download"]
    id: RequestId
    activity: ActivityId
    path: ContainerPath
    window: Annotated[int, Field(ge=1, le=1024)]


class DownloadInfo(_Message):
    """Sent before the data of a download: a file's bytes, or a directory as a tar stream."""

    type: Literal["download_info"]
    re: RequestId
    kind: Literal["file", "dir"]
    size: Bytes | None = None
    mode: Annotated[int, Field(ge=0, le=0o7777)] = 0o644


class Want(_Message):
    """Interim reply (1.1) to ``push_image`` (from the hub) or ``create`` (from a provider): send
    these blobs, whole and in this order, one after another, on the request's stream."""

    type: Literal["want"]
    re: RequestId
    blobs: Annotated[list[Digest], Field(max_length=MAX_LAYERS + 1)]


# --- the image store (1.1) ---------------------------------------------------------


class PushImage(_Message):
    """Requestor -> hub: store this image under ``tags``; the hub answers ``want`` for the blobs it lacks."""

    type: Literal["push_image"]
    id: RequestId
    manifest: Manifest
    tags: Annotated[list[ImageTag], Field(max_length=MAX_TAGS)] = []


class ImagePushed(_Message):
    """The image is stored: ``sent`` bytes moved, ``skipped`` bytes the hub held already."""

    type: Literal["image_pushed"]
    re: RequestId
    image: ImageInfo
    sent: Bytes
    skipped: Bytes


class ListImages(_Message):
    """Requestor -> hub: the images in the store."""

    type: Literal["list_images"]
    id: RequestId


class ImageList(_Message):
    """The store's images, most recently used first, and the bytes it holds of its ``limit`` (1.4: each
    layer counted at the larger of its size and its expanded size)."""

    type: Literal["image_list"]
    re: RequestId
    images: list[ImageInfo]
    used: Bytes
    limit: Bytes


class RemoveImage(_Message):
    """Requestor -> hub: remove an image (by digest or tag) from the store; answered with ``done``."""

    type: Literal["remove_image"]
    id: RequestId
    image: ImageRef


class ShareImage(_Message):
    """Requestor -> hub (1.4): share an image it pushed (by digest or tag) with the tenants ``to``,
    and with ``public`` with every tenant; with ``revoke``, take those shares back. Answered with
    ``done``."""

    type: Literal["share_image"]
    id: RequestId
    image: ImageRef
    to: Annotated[list[TenantName], Field(max_length=MAX_SHARES)] = []
    public: Annotated[bool, Field(validate_default=True)] = False
    revoke: bool = False

    @field_validator("public")
    @classmethod
    def _shares_something(cls, public: bool, info: ValidationInfo) -> bool:
        # A field's check (not the model's): it runs inside _built_here, so a share of nobody
        # built here is a LocalProtocolError like any other invalid message.
        if not info.data.get("to") and not public:
            raise ValueError("a share names tenants in 'to', or 'public': true, or both")
        return public


class Credit(_Message):
    """The receiver of stream ``stream`` may take ``chunks`` more data frames."""

    type: Literal["credit"]
    stream: RequestId
    chunks: Annotated[int, Field(ge=1, le=1024)]


class Cancel(_Message):
    """Stop request ``target``; it ends with an error ``cancelled`` unless already done."""

    type: Literal["cancel"]
    target: RequestId


# --- the ledger (1.5) ----------------------------------------------------------------


class Meter(_Message):
    """Hub -> provider (1.5): how much CPU time the activity's container has used so far; answered
    with ``done`` carrying ``cpu_seconds``."""

    type: Literal["meter"]
    id: RequestId
    activity: ActivityId


class Cost(_Message):
    """Hub -> requestor and provider (1.5): what a priced activity owes so far, as the hub captured
    it: ``due`` in micro-credits, cumulative (the ``seq``-th capture; ``final`` at its end), for
    ``seconds`` held and ``cpu_seconds`` billed."""

    type: Literal["cost"]
    activity: ActivityId
    seq: Annotated[int, Field(ge=1, le=MAX_ID)]
    due: Micro
    seconds: Annotated[float, Field(ge=0)]
    cpu_seconds: Annotated[float, Field(ge=0)]
    final: bool = False


class BalanceQuery(_Message):
    """Requestor -> hub (1.5): this credential's account."""

    type: Literal["balance"]
    id: RequestId


SignedMicro: TypeAlias = Annotated[int, Field(ge=-(2**62), le=2**62)]


class BalanceInfo(_Message):
    """The account of the asking credential: ``available`` to hold, ``held`` for its activities,
    ``spent`` in all (micro-credits)."""

    type: Literal["balance_info"]
    re: RequestId
    account: Annotated[str, Field(max_length=128)]
    available: SignedMicro
    held: SignedMicro
    spent: SignedMicro = 0


class Entry(_Message):
    """One side of a transaction: ``amount`` micro-credits into ``account`` (out of it when negative)."""

    account: Annotated[str, Field(max_length=128)]
    amount: SignedMicro


class Transaction(_Message):
    """A movement of credits: its entries sum to zero. ``key`` is its idempotency key."""

    id: Annotated[int, Field(ge=1)]
    key: Annotated[str, Field(max_length=256)]
    kind: Annotated[str, Field(max_length=32)]
    time: Annotated[float, Field(ge=0)]
    activity: ActivityId | None = None
    entries: Annotated[list[Entry], Field(max_length=16)]


class LedgerQuery(_Message):
    """Requestor -> hub (1.5): the latest transactions touching the asker's account (an admin's:
    ``account``'s, or all), newest first, at most ``limit``."""

    type: Literal["ledger"]
    id: RequestId
    account: Annotated[str, Field(max_length=128)] | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_LISTED)] = 100


class LedgerList(_Message):
    type: Literal["ledger_list"]
    re: RequestId
    transactions: list[Transaction]
    matched: Annotated[int, Field(ge=0)]


class VerdictReport(_Message):
    """Requestor -> hub (1.5): the result of activity ``lost`` disagreed with those of the activities
    ``agreed`` (on other providers, agreeing among themselves). The hub counts it against ``lost``'s
    provider and reverses what the requestor paid for ``lost``. Answered with ``done``."""

    type: Literal["verdict"]
    id: RequestId
    lost: ActivityId
    agreed: Annotated[list[ActivityId], Field(min_length=2, max_length=16)]


# --- what the hub shows (1.6) ----------------------------------------------------------


TaskState: TypeAlias = Literal["started", "done", "retried", "failed"]
"""(1.6) Where an attempt of a task is: ``started`` on an activity, or ended: ``done``, ``retried``
(failed, and the task goes on elsewhere or later) or ``failed`` (the task failed for good)."""
MAX_TASK_ATTEMPT: Final = 1000
MAX_REASON: Final = 256
MAX_USAGE_ACTIVITIES: Final = 1024
"""The most activities one ``usage`` reports (as many as a ``hello`` may carry)."""


class TaskReport(_Message):
    """Requestor -> hub (1.6), no reply: an attempt of task ``task`` of the job whose rents name
    ``group`` started on ``activity`` (one of the requestor's), or ended, and why (``reason``), having
    moved ``bytes`` in all. The hub keeps a bounded record of each group's attempts for its
    dashboard, timed by its own clock; what it cannot place (an activity not the requestor's) it drops."""

    type: Literal["task"]
    group: GroupName
    task: Annotated[int, Field(ge=0, le=MAX_ID)]
    attempt: Annotated[int, Field(ge=1, le=MAX_TASK_ATTEMPT)]
    state: TaskState
    activity: ActivityId | None = None
    reason: Annotated[str, Field(max_length=MAX_REASON)] | None = None
    bytes: Annotated[int, Field(ge=0, le=2**53)] = 0


class ActivityUsage(_Message):
    """What one container used: ``cpu_seconds`` in all since it started, ``memory`` bytes now."""

    activity: ActivityId
    cpu_seconds: Annotated[float, Field(ge=0, le=1e12)]
    memory: Annotated[int, Field(ge=0, le=2**53)]


class Usage(_Message):
    """Provider -> hub (1.6), no reply: what each of its containers used, from their cgroups, sent
    every few seconds while it holds any (and once, empty, after its last one ended)."""

    type: Literal["usage"]
    activities: Annotated[list[ActivityUsage], Field(max_length=MAX_USAGE_ACTIVITIES)]


Message: TypeAlias = Annotated[
    Hello
    | Welcome
    | Error
    | Done
    | Offer
    | Rent
    | Rented
    | Release
    | MarketQuery
    | MarketInfo
    | Create
    | Destroy
    | ActivityLost
    | Exec
    | ExecResult
    | Connect
    | Publish
    | Published
    | Unpublish
    | Upload
    | Download
    | DownloadInfo
    | Credit
    | Cancel
    | RentProgress
    | Want
    | PushImage
    | ImagePushed
    | ListImages
    | ImageList
    | RemoveImage
    | ShareImage
    | ActivitiesQuery
    | ActivityList
    | Meter
    | Cost
    | BalanceQuery
    | BalanceInfo
    | LedgerQuery
    | LedgerList
    | VerdictReport
    | TaskReport
    | Usage,
    Field(discriminator="type"),
]


MESSAGE_ADAPTER: Final[TypeAdapter[Message]] = TypeAdapter(Message)
MESSAGE_MODELS: Final[tuple[type[_Message], ...]] = get_args(get_args(Message)[0])
"""Every message's model, in the order of :data:`Message`."""
MESSAGE_TYPES: Final = frozenset(get_args(m.model_fields["type"].annotation)[0] for m in MESSAGE_MODELS)


MAX_DEPTH: Final = 32
"""Nesting deeper than this is refused before validation: no message needs more than a few levels."""


_FLOAT_BYTES: Final = re.compile(rb"[0-9][.eE]")
_FLOAT_TEXT: Final = re.compile(r"[0-9][.eE]")


def _as_is(data: bytes | str) -> bool:
    """Whether :func:`_by_value` would leave the JSON ``data`` as it is: no float in it (a float
    literal has a digit right before its '.', 'e' or 'E'), and too few brackets to nest too deep.
    False may be wrong (a digit and a dot in a string); True never is."""
    if isinstance(data, str):
        return data.count("[") + data.count("{") <= MAX_DEPTH and _FLOAT_TEXT.search(data) is None
    return data.count(b"[") + data.count(b"{") <= MAX_DEPTH and _FLOAT_BYTES.search(data) is None


def _by_value(value: Any, depth: int = 0) -> Any:
    """JSON numbers are judged by value, as every JSON parser sees them: 1.0 is the integer 1.

    Changes ``value`` (what ``orjson.loads`` gave) in place; raises for anything nested
    deeper than :data:`MAX_DEPTH`."""
    if depth > MAX_DEPTH:
        raise RemoteProtocolError(f"JSON nested deeper than {MAX_DEPTH} levels", ErrorCode.BAD_MESSAGE)
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is dict:
        if value and depth == MAX_DEPTH:
            raise RemoteProtocolError(f"JSON nested deeper than {MAX_DEPTH} levels", ErrorCode.BAD_MESSAGE)
        for key, item in value.items():
            kind = type(item)
            if kind is dict or kind is list or (kind is float and item.is_integer()):
                value[key] = _by_value(item, depth + 1)
    elif type(value) is list:
        if value and depth == MAX_DEPTH:
            raise RemoteProtocolError(f"JSON nested deeper than {MAX_DEPTH} levels", ErrorCode.BAD_MESSAGE)
        for index, item in enumerate(value):
            kind = type(item)
            if kind is dict or kind is list or (kind is float and item.is_integer()):
                value[index] = _by_value(item, depth + 1)
    return value


def request_number(raw: Any, field: Literal["id", "re"]) -> int | None:
    """The request id in ``raw[field]`` of a message that may fail validation, when it has a usable one.

    Judged by value as everything else (``2.0`` is 2), so an error can still name the request.
    """
    if isinstance(raw, dict):
        value = raw.get(field)
        if type(value) is float and value.is_integer():
            value = int(value)
        if type(value) is int and 1 <= value <= MAX_ID:
            return value
    return None


def parse(data: bytes | str) -> Message:
    """Parse and validate one text frame.

    Raises :class:`~kiln.protocol.errors.RemoteProtocolError` with code ``bad_json``,
    ``unknown_type``, ``bad_path`` or ``bad_message``; its ``re`` is the message's ``id``
    when one could be read, so the error reply can name the request.
    """
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise RemoteProtocolError(f"not valid JSON: {e}", ErrorCode.BAD_JSON) from e
    if not isinstance(raw, dict):
        raise RemoteProtocolError("a message must be a JSON object", ErrorCode.BAD_MESSAGE)
    re = request_number(raw, "id")
    if not _as_is(data):
        try:
            raw = _by_value(raw)
        except RemoteProtocolError as e:
            raise RemoteProtocolError(e.message, e.code, re) from None
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise RemoteProtocolError("a message needs a string field 'type'", ErrorCode.BAD_MESSAGE, re)
    if kind not in MESSAGE_TYPES:
        raise RemoteProtocolError(f"unknown message type {kind[:64]!r}", ErrorCode.UNKNOWN_TYPE, re)
    try:
        return MESSAGE_ADAPTER.validate_python(raw, context=WIRE)
    except ValidationError as e:
        # The union's tag leads every location: dropped, the kind is named already.
        raise RemoteProtocolError(_describe(f"{kind!r} message", e, skip=1), _code_of(e), re) from e


def _code_of(error: ValidationError) -> ErrorCode:
    """``bad_path`` when any problem is a container path (as a client would want to know), else ``bad_message``."""
    return ErrorCode.BAD_PATH if any(p["type"] == "bad_path" for p in error.errors()) else ErrorCode.BAD_MESSAGE


def _describe(what: str, error: ValidationError, skip: int = 0) -> str:
    """What is wrong with a message, for people: up to five problems, each ``field.path: what``."""
    problems = error.errors(include_url=False, include_input=False)[:5]
    details = "; ".join(f"{'.'.join(map(str, p['loc'][skip:])) or '(message)'}: {p['msg']}" for p in problems)
    return f"invalid {what}: {details}"


def serialize(message: _Message, update: Mapping[str, int | str] | None = None) -> bytes:
    """The UTF-8 JSON text of ``message``, fields left at ``None`` omitted; with ``update``, as
    ``serialize(message.model_copy(update=update))`` (the same bytes, without the copy: what
    the hub relays under its own ids)."""
    fields = message.model_dump(mode="json", exclude_none=True)
    if update:
        added = not fields.keys() >= update.keys()
        fields.update(update)
        if added:  # in the model's order, as the copy would have them
            fields = {name: fields[name] for name in type(message).model_fields if name in fields}
    return orjson.dumps(fields)


def _largest_hello() -> int:
    """The bytes of the largest hello the model admits, serialized as both clients do (compact
    JSON, UTF-8): every field at its longest, free text in 4-byte characters."""
    widest = "\U0010ffff"
    hello = Hello.model_construct(
        type="hello",
        version="9999.9999",
        role="requestor",
        name=widest * 64,
        token=widest * 1024,
        software=widest * 128,
        resume="r" * 128,
        activities=["a" * 64] * MAX_REPORTED,
    )
    return len(serialize(hello))


MAX_HELLO_BYTES: Final = -(-_largest_hello() // 1024) * 1024
"""(1.4) The largest frame a peer may send before it is welcomed (the largest hello, rounded up to a
KiB): a larger one closes the connection (1009) unread. Raised to ``max_frame_bytes`` once welcomed."""


def json_schema() -> dict[str, Any]:
    """The JSON Schema of every message, as committed in ``protocol/v1/schema.json``."""
    schema = MESSAGE_ADAPTER.json_schema(ref_template="#/$defs/{model}")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://kiln.invalid/protocol/v1/schema.json"
    schema["title"] = f"Kiln protocol {PROTOCOL_NAME} (version {PROTOCOL_VERSION}) message"
    return schema
