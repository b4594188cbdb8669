"""What a command is told: from its flags, a TOML file (``--config``), the environment, its defaults.

One pydantic-settings model per kind of command: :class:`DialSettings` for every command that
dials a hub (``market``, ``activities``, ``run``, ``image push/ls/rm``), :class:`ProviderSettings`,
:class:`HubSettings` and :class:`DoctorSettings`. Each is built by :func:`load` from the flags
given on the command line (argparse leaves out those not given). Highest first:

1. the flags given;
2. the keys of the TOML file of ``--config`` (``kiln hub``, ``kiln provider``, ``kiln doctor``);
3. the environment: ``KILN_HUB``, ``KILN_TOKEN``, ``KILN_CA``, and only for commands that dial
   (``kiln hub`` reads none, so a ``KILN_TOKEN`` meant for clients never opens a hub);
4. the defaults.

The hub is a list: the hubs of one market, dialled in turn when the one a client is on dies
(:class:`~kiln.connection.HubRing`). ``--hub`` may be given more than once, ``KILN_HUB``
separates them with commas (``ws://a:7465,ws://b:7465``), and a file's ``hub`` is either
(``hub = ["ws://a:7465", "ws://b:7465"]``). The source highest up gives them all.

The token and the token file are one setting: whichever the highest source names wins, and a
source naming both is a usage error. ``--token-file`` holds the token (its trailing newline is
dropped), so that it shows neither in ``ps`` nor in a shell's history.

A file's keys are the flags' names without their dashes (``token-file``, ``image-cache``;
``token_file`` works too), one per flag, ``label = {zone = "eu"}`` a table; sizes are text
(``"2GiB"``) or numbers of bytes; a relative path is taken from the file's folder. A key no
flag has is an error that names it (the models forbid extras). Every mistake becomes one
:class:`~kiln.protocol.errors.UsageError` line saying where the bad value came from: the
flag, the file's key, or the variable.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal, TypeVar, get_args, get_origin

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from kiln.connection import check_hub_url, hub_urls
from kiln.protocol.errors import KilnError, UsageError
from kiln.protocol.messages import Price
from kiln.protocol.money import to_micro
from kiln.protocol.sizes import parse_size
from kiln_provider.outbound import PolicyError, parse_hosts, parse_policy, parse_private

DEFAULT_HUB: Final = "ws://127.0.0.1:7465"
ENVIRONMENT: Final = {"hub": "KILN_HUB", "token": "KILN_TOKEN", "ca": "KILN_CA"}
"""The variables commands that dial read, by setting."""
TOKEN: Final = ("token", "token_file")
"""Two ways to give one setting: a source above that names either hides both below it."""


def _fee(value: float) -> float:
    if value >= 1:
        raise ValueError(f"a fee is a fraction of each payment below 1 (0.05 for 5%), not {value:g}")
    try:
        to_micro(value, "a fee")
    except KilnError as e:
        raise ValueError(f"a fee has at most 6 decimals (a millionth of each payment), not {value:g}") from e
    return value


def listen_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 address in brackets) as a host and a port (0: a free one)."""
    host, colon, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]") if host.startswith("[") else host
    if not colon or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"give an address to listen on as HOST:PORT (port 0 to 65535), not {value!r}")
    return host, int(port)


def _listen(value: str) -> str:
    listen_address(value)
    return value


def fee_ppm(fee: float) -> int:
    """A fee (a fraction, as ``--fee`` takes it) in parts per million of each payment."""
    return to_micro(fee, "a fee")  # a millionth of a credit, a millionth of a payment: the same digits


def _size(value: object) -> int:
    try:
        return parse_size(value)  # type: ignore[arg-type]  # parse_size judges any type
    except KilnError as e:
        raise ValueError(e.message) from e


def _hub_urls(value: object) -> tuple[str, ...]:
    if not isinstance(value, str | list | tuple):
        raise ValueError(f"hub is a URL, or a list of URLs, not {value!r}")
    try:
        return hub_urls(value)
    except KilnError as e:
        raise ValueError(e.message) from e


def _hub_url(value: str) -> str:
    try:
        return check_hub_url(value)
    except KilnError as e:
        raise ValueError(e.message) from e


def _file(value: Path) -> Path:
    path = value.expanduser()
    if not path.exists():
        raise ValueError(f"no such file: {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"cannot read {path} (permission denied)")
    return path


def _outbound(value: str | Path) -> str | Path:
    """``--outbound none|any|FILE``: a file is read now, so that a rule that does not parse is told at start."""
    if isinstance(value, str):
        return value
    path = _file(value)
    try:
        parse_policy(path.read_text(errors="replace"))
    except PolicyError as e:
        raise ValueError(f"{path}: {e}") from e
    return path


def _outbound_private(value: str) -> str:
    try:
        parse_private(value)
    except PolicyError as e:
        raise ValueError(str(e)) from e
    return value


def _hosts_file(value: Path) -> Path:
    """``--hosts FILE``: read now, so that a line that is not hosts(5) is told at start."""
    try:
        parse_hosts(value.read_text(errors="replace"))
    except PolicyError as e:
        raise ValueError(f"{value}: {e}") from e
    return value


def _folder(value: Path) -> Path:
    path = value.expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder")
    return path


Size = Annotated[int, BeforeValidator(_size)]
"""Bytes, written as a number or as text with a unit ("2GiB")."""
HubUrls = Annotated[tuple[str, ...], BeforeValidator(_hub_urls)]
"""The hubs of one market: a URL, several separated by commas, or a list of either."""
HubUrl = Annotated[str, AfterValidator(_hub_url)]
"""One hub's URL (ws:// or wss://)."""
File = Annotated[Path, AfterValidator(_file)]
"""A file that exists and can be read."""
Folder = Annotated[Path, AfterValidator(_folder)]
"""A folder, made when needed: anything but an existing file."""
Seconds = Annotated[float, Field(ge=0)]
OutboundSetting = Annotated[Literal["none", "any"] | Path, AfterValidator(_outbound)]
"""What containers may reach: none, any, or the sites a file of rules lists (:mod:`kiln.protocol.outbound`)."""
HostsFile = Annotated[File, AfterValidator(_hosts_file)]
"""Names the outbound proxy resolves before DNS, in hosts(5) format."""

PRICE_KEYS: Final = {"start": "start", "cpu-hour": "cpu_hour", "env-hour": "env_hour"}
"""The rates of ``--price`` as written (``cpu_hour`` is taken too) -> :class:`Price`'s fields."""


def parse_price(value: object) -> Price:
    """A provider's price from ``start=0.01,cpu-hour=0.20,env-hour=0.05`` (credits; any subset,
    the rest 0) or a TOML table of the same keys; ValueError saying what is wrong."""
    if isinstance(value, Price):
        return value
    if isinstance(value, str):
        pairs: list[tuple[str, object]] = []
        for part in value.split(","):
            key, sep, amount = part.strip().partition("=")
            if not sep:
                raise ValueError(f"a price is start=C,cpu-hour=C,env-hour=C (credits), not {value!r}")
            pairs.append((key.strip(), amount.strip()))
    elif isinstance(value, dict):
        pairs = [(str(key), amount) for key, amount in value.items()]
    else:
        raise ValueError(f"a price is start=C,cpu-hour=C,env-hour=C (credits), not {value!r}")
    rates: dict[str, int] = {}
    for rate, written in pairs:
        field = PRICE_KEYS.get(rate.replace("_", "-"))
        if field is None:
            raise ValueError(f"a price has no rate {rate!r}: it has {', '.join(PRICE_KEYS)}")
        if field in rates:
            raise ValueError(f"the price names {rate!r} twice")
        try:
            rates[field] = to_micro(written, rate)
        except UsageError as e:
            raise ValueError(e.message) from e
    return Price.micro(**rates)


PriceSetting = Annotated[Price, BeforeValidator(parse_price)]
"""A provider's price in credits: ``start=0.01,cpu-hour=0.20,env-hour=0.05`` or a table of those keys."""


def read_token(path: Path) -> str:
    """The token in the file ``path``, without its trailing newline; UsageError naming the file otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise UsageError(f"the token file {path} does not exist") from e
    except UnicodeDecodeError as e:
        raise UsageError(f"the token file {path} is not UTF-8 text") from e
    except OSError as e:
        raise UsageError(f"cannot read the token file {path}: {e.strerror or e}") from e
    token = text.removesuffix("\n").removesuffix("\r")
    if not token:
        raise UsageError(f"the token file {path} is empty")
    return token


def one_token(token: str | None, token_file: Path | None, what: str) -> str | None:
    """The token given, or the one in ``token_file``; ValueError when both are (``what`` names it)."""
    if token is not None and token_file is not None:
        raise ValueError(f"give {what} (--token) or the file that holds it (--token-file), not both")
    return read_token(token_file) if token_file is not None else token


class ConfigFile(InitSettingsSource):
    """The TOML file of ``--config``: keys as flags are named (dashes or underscores), relative
    paths from the file's folder. A file that is missing or not TOML is a UsageError."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        self.path = path
        self.written: dict[str, str] = {}
        """Each key as the file spells it, by the setting it gives."""
        if not path.is_file():
            raise UsageError(f"no config file {path}" if not path.exists() else f"the config {path} is not a file")
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"{path} is not valid TOML: {e}") from e
        except OSError as e:
            raise UsageError(f"cannot read the config {path}: {e.strerror or e}") from e
        values: dict[str, Any] = {}
        for key, value in data.items():
            name = key.replace("-", "_")
            if name == "config":
                raise UsageError(f"{path}: a config file cannot name another (config)")
            if name in values:
                raise UsageError(f"{path}: {self.written[name]!r} and {key!r} are the same key")
            self.written[name] = key
            field = settings_cls.model_fields.get(name)
            if isinstance(value, str) and field is not None and _is_path(field) and value not in _words(field):
                value = str(path.parent / Path(value).expanduser())
            values[name] = value
        super().__init__(settings_cls, values)


def _is_path(field: FieldInfo) -> bool:
    """Whether the setting is a path (``Path``, ``File | None``, ...): the file's are relative to its folder."""

    def holds_path(annotation: object) -> bool:
        return annotation is Path or any(holds_path(arg) for arg in get_args(annotation))

    return holds_path(field.annotation)


def _words(field: FieldInfo) -> set[object]:
    """The words a setting takes besides a path (``--outbound none|any|FILE``): never made paths."""

    def words(annotation: object) -> set[object]:
        if get_origin(annotation) is Literal:
            return set(get_args(annotation))
        return set().union(*(words(arg) for arg in get_args(annotation)))

    return words(field.annotation)


class DialEnvironment(EnvSettingsSource):
    """``KILN_HUB``, ``KILN_TOKEN`` and ``KILN_CA`` (an empty one counts as unset): the only
    variables a command reads for its settings. Each is plain text, never JSON: ``KILN_HUB``
    separates several hubs with commas."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls, env_prefix="KILN_", env_ignore_empty=True)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name not in ENVIRONMENT:
            return None, field_name, False
        return super().get_field_value(field, field_name)

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        return value  # the settings' own validators read the text


class _Below(PydanticBaseSettingsSource):
    """``source``, less the token and the token file when a source above it names either."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        source: PydanticBaseSettingsSource,
        above: list[PydanticBaseSettingsSource],
    ) -> None:
        super().__init__(settings_cls)
        self.source = source
        self.above = above

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ gives everything

    def __call__(self) -> dict[str, Any]:
        values = self.source()
        if any(key in source() for source in self.above for key in TOKEN):
            values = {key: value for key, value in values.items() if key not in TOKEN}
        return values


class _Settings(BaseSettings):
    """Flags, then the ``config`` file (if the model has one), then the environment (if it reads it)."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=False)

    reads_environment: ClassVar[bool] = False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(init_settings, InitSettingsSource)
        config = init_settings.init_kwargs.get("config")
        sources: list[PydanticBaseSettingsSource] = [init_settings]
        if config is not None:
            sources.append(ConfigFile(settings_cls, Path(config).expanduser()))
        if cls.reads_environment:
            sources.append(DialEnvironment(settings_cls))
        return tuple(
            source if n == 0 else _Below(settings_cls, source, sources[:n]) for n, source in enumerate(sources)
        )


class DialSettings(_Settings):
    """Where the hub is and how to join it: every command that dials."""

    reads_environment: ClassVar[bool] = True

    hub: HubUrls = (DEFAULT_HUB,)
    token: Annotated[str | None, Field(repr=False)] = None
    token_file: File | None = None
    ca: File | None = None

    @model_validator(mode="after")
    def _one_token(self) -> DialSettings:
        self.token = one_token(self.token, self.token_file, "the token")
        return self


class ProviderSettings(DialSettings):
    """``kiln provider``: every flag, from the command line or ``--config provider.toml``."""

    config: Path | None = None
    verbose: bool = False
    name: Annotated[str, Field(min_length=1, max_length=64)]
    cpus: Annotated[float, Field(gt=0)] | None = None
    memory: Size | None = None
    storage: Size | None = None
    label: dict[str, str] = {}
    pids_limit: Annotated[int, Field(ge=1)] = 256
    stream_idle_timeout: Annotated[float, Field(gt=0)] = 30.0
    image_cache: Size = 20 * 2**30
    data_dir: Folder | None = None
    pull: bool = False
    allow_root: bool = False
    grace: Seconds = 120.0
    name_wait: Seconds = 30.0
    max_containers: Annotated[int, Field(ge=1, le=4096)] = 256
    images: list[Annotated[str, Field(min_length=1, max_length=255)]] = []
    price: PriceSetting | None = None
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    metrics_host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    outbound: OutboundSetting = "none"
    outbound_private: list[Annotated[str, AfterValidator(_outbound_private)]] = []
    hosts: HostsFile | None = None


class DoctorSettings(ProviderSettings):
    """``kiln doctor``: a provider's settings (``--config provider.toml`` too), none required."""

    name: Annotated[str, Field(min_length=1, max_length=64)] | None = None  # type: ignore[assignment]
    hub: HubUrls | None = None  # type: ignore[assignment]  # none given: the hub is not checked


class HubSettings(_Settings):
    """``kiln hub``: every flag, from the command line or ``--config hub.toml``; no environment."""

    config: Path | None = None
    verbose: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 7465
    token: Annotated[str | None, Field(repr=False)] = None
    token_file: File | None = None
    data_dir: Folder | None = None
    db: Annotated[str, Field(min_length=1)] | None = None
    advertise: HubUrl | None = None
    store_limit: Size = 20 * 2**30
    max_image_size: Size = 20 * 2**30
    max_expansion: Annotated[float, Field(ge=1)] = 32.0
    create_timeout: Annotated[float, Field(gt=0)] = 120.0
    destroy_timeout: Annotated[float, Field(gt=0)] = 60.0
    credit_timeout: Annotated[float, Field(gt=0)] = 120.0
    max_activities: Annotated[int, Field(ge=1)] = 1024
    grace: Seconds = 60.0
    max_connections_per_address: Annotated[int, Field(ge=1)] = 4096
    max_waiting_per_address: Annotated[int, Field(ge=1)] = 256
    max_connections_per_credential: Annotated[int, Field(ge=1)] = 64
    max_failed_hellos: Annotated[int, Field(ge=1)] = 30
    usage_retention: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 90.0
    fee: Annotated[float, Field(ge=0, allow_inf_nan=False), AfterValidator(_fee)] = 0.0
    capture_interval: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 60.0
    public_metrics: bool = False
    publish_listen: Annotated[str, AfterValidator(_listen)] | None = None
    tls_cert: File | None = None
    tls_key: File | None = None

    @model_validator(mode="after")
    def _check(self) -> HubSettings:
        self.token = one_token(self.token, self.token_file, "the shared token")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both --tls-cert and --tls-key (to serve wss://), or neither")
        return self


S = TypeVar("S", bound=_Settings)


def load(model: type[S], flags: dict[str, Any]) -> S:
    """``model`` from the flags given (``config`` among them names the file), the file and the
    environment; raises UsageError with one line that says what is wrong, and where."""
    try:
        return model(**flags)
    except ValidationError as e:
        raise UsageError(_explain(model, flags, e)) from e


def _explain(model: type[_Settings], flags: dict[str, Any], error: ValidationError) -> str:
    """The first error, with where its value came from: the flag, the file's key, or the variable."""
    first = error.errors()[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    name = str(first["loc"][0]) if first["loc"] else ""
    config = flags.get("config")
    file = ConfigFile(model, Path(config).expanduser()) if config is not None else None
    written = file.written.get(name, name.replace("_", "-")) if file is not None else name
    if first["type"] == "extra_forbidden":
        where = file.path if file is not None else "the settings"
        return f"{where}: unknown key {written!r} (the keys are the flags' names)"
    flag = "--" + name.replace("_", "-")
    if first["type"] == "missing":
        return f"give {flag}" + (f" (or {written} = ... in {file.path})" if file is not None else "")
    if not name:
        return message
    if name in flags:
        where = flag
    elif file is not None and name in file():
        where = f"{written} in {file.path}"
    elif name in ENVIRONMENT and model.reads_environment and os.environ.get(ENVIRONMENT[name]):
        where = f"${ENVIRONMENT[name]}"
    else:
        where = flag
    return f"{where}: {message}"
