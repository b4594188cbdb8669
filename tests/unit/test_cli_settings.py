"""The command line's settings: the flags given over the ``--config`` file over the environment
(``KILN_HUB``, ``KILN_TOKEN``, ``KILN_CA``) over the defaults; a token read from a file; and
every mistake one line naming where the bad value came from. ``kiln market`` against a real
hub, joined by the environment or a file: tests/service/test_cli_settings_env.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.cli.app import _flags
from kiln.cli.parser import build_parser
from kiln.cli.settings import DEFAULT_HUB, DialSettings, DoctorSettings, HubSettings, ProviderSettings, load
from kiln.protocol.errors import UsageError
from kiln.protocol.messages import Price

SHARED = "shared-t0ken"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KILN_HUB", "KILN_TOKEN", "KILN_CA"):
        monkeypatch.delenv(name, raising=False)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def refused(model: type[DialSettings] | type[HubSettings], flags: dict[str, object]) -> str:
    with pytest.raises(UsageError) as caught:
        load(model, flags)
    assert "\n" not in caught.value.message
    return caught.value.message


def test_flags_beat_the_file_which_beats_the_environment_which_beats_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load(DialSettings, {}).hub == (DEFAULT_HUB,)
    monkeypatch.setenv("KILN_HUB", "ws://env.example:7465")
    monkeypatch.setenv("KILN_TOKEN", "from-env")
    assert (load(DialSettings, {}).hub, load(DialSettings, {}).token) == (("ws://env.example:7465",), "from-env")
    config = write(
        tmp_path / "provider.toml",
        """
hub = "wss://file.example:7465"
name = "p1"
cpus = 2
memory = 1073741824
image-cache = "2GiB"
label = {zone = "eu", disk = "ssd"}
pull = true
""",
    )
    settings = load(ProviderSettings, {"config": config, "cpus": 3.0, "label": {"zone": "us"}, "pull": False})
    assert settings.hub == ("wss://file.example:7465",), "the file over the environment"
    assert settings.token == "from-env", "what the file does not say comes from the environment"
    assert (settings.name, settings.cpus, settings.memory, settings.image_cache) == ("p1", 3.0, 2**30, 2 * 2**30)
    assert settings.label == {"zone": "us", "disk": "ssd"}, "a flag's label over the file's, the others kept"
    assert settings.pull is False, "--no-pull over the file's pull = true"
    assert (settings.storage, settings.grace, settings.pids_limit) == (None, 120.0, 256), "the defaults"
    assert load(ProviderSettings, {"config": config, "hub": ["ws://flag:1"]}).hub == ("ws://flag:1",)


def test_the_token_and_the_token_file_are_one_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = write(tmp_path / "provider.token", "s3cret\n")
    assert load(DialSettings, {"token_file": token}).token == "s3cret", "without its trailing newline"
    assert load(DialSettings, {"token_file": write(tmp_path / "crlf", "s3cret\r\n")}).token == "s3cret"
    assert load(DialSettings, {"token_file": write(tmp_path / "two", "s3cret\n\n")}).token == "s3cret\n"
    monkeypatch.setenv("KILN_TOKEN", "from-env")
    assert load(DialSettings, {"token_file": token}).token == "s3cret", "a flag's file over the environment's token"
    config = write(tmp_path / "provider.toml", 'name = "p1"\ntoken-file = "provider.token"\n')
    assert load(ProviderSettings, {"config": config}).token == "s3cret", "relative to the file's folder"
    assert load(ProviderSettings, {"config": config, "token": "flag"}).token == "flag", "a flag's token over the file"
    both = write(tmp_path / "both.toml", 'name = "p1"\ntoken = "a"\ntoken-file = "provider.token"\n')
    assert "not both" in refused(ProviderSettings, {"config": both})
    assert "not both" in refused(DialSettings, {"token": "a", "token_file": token})
    missing = tmp_path / "missing"
    assert refused(DialSettings, {"token_file": missing}) == f"--token-file: no such file: {missing}"
    assert refused(DialSettings, {"token_file": tmp_path}) == f"--token-file: {tmp_path} is not a file"
    empty = write(tmp_path / "empty", "\n")
    assert refused(DialSettings, {"token_file": empty}) == f"the token file {empty} is empty"
    assert load(HubSettings, {"token_file": token}).token == "s3cret", "the hub's shared token too"
    assert refused(HubSettings, {"token": "a", "token_file": token}) == (
        "give the shared token (--token) or the file that holds it (--token-file), not both"
    )


def test_the_file_spells_keys_as_the_flags_and_says_which_key_is_wrong(tmp_path: Path) -> None:
    underscores = write(tmp_path / "a.toml", 'name = "p1"\nimage_cache = 1024\nstream_idle_timeout = 5\n')
    assert load(ProviderSettings, {"config": underscores}).image_cache == 1024
    paths = write(tmp_path / "b.toml", 'name = "p1"\ndata-dir = "data"\nca = "/abs/ca.pem"\n')
    assert refused(ProviderSettings, {"config": paths}) == f"ca in {paths}: no such file: /abs/ca.pem"
    folder = load(ProviderSettings, {"config": write(tmp_path / "c.toml", 'name = "p1"\ndata-dir = "data"\n')})
    assert folder.data_dir == tmp_path / "data"
    cases = {
        'name = "p1"\ncolour = "blue"\n': "unknown key 'colour' (the keys are the flags' names)",
        'name = "p1"\nimage-cache = "lots"\n': "image-cache in {file}: not a size: 'lots'",
        'name = "p1"\nhub = "127.0.0.1:7465"\n': "hub in {file}: '127.0.0.1:7465' is not a hub URL (no ws:// or wss://",
        'name = "p1"\ncpus = -1\n': "cpus in {file}: Input should be greater than 0",
        'name = "p1"\nlabel = "zone=eu"\n': "label in {file}: Input should be a valid dictionary",
        'name = "p1\n': "{file} is not valid TOML",
        "cpus = 1\n": "give --name (or name = ... in {file})",
        'name = "p1"\nimage-cache = 1\nimage_cache = 2\n': "'image-cache' and 'image_cache' are the same key",
        'name = "p1"\nconfig = "other.toml"\n': "a config file cannot name another",
    }
    for n, (text, expected) in enumerate(cases.items()):
        file = write(tmp_path / f"bad{n}.toml", text)
        assert expected.format(file=file) in refused(ProviderSettings, {"config": file}), text
    assert refused(ProviderSettings, {"config": tmp_path / "none.toml"}) == f"no config file {tmp_path}/none.toml"
    hub = write(tmp_path / "hub.toml", 'store-limit = "1GiB"\nport = 0\ntls-cert = "hub.pem"\n')
    assert refused(HubSettings, {"config": hub}) == f"tls-cert in {hub}: no such file: {tmp_path}/hub.pem"


def test_the_environment_is_read_by_commands_that_dial_only_and_named_when_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILN_TOKEN", "meant-for-clients")
    assert load(HubSettings, {}).token is None, "a hub never opens with a client's token"
    monkeypatch.setenv("KILN_HUB", "http://hub.example:7465")
    assert refused(DialSettings, {}).startswith("$KILN_HUB: 'http://hub.example:7465' is not a hub URL (a hub speaks ")
    flagged = load(DialSettings, {"hub": ["ws://flag:1"]})
    assert flagged.hub == ("ws://flag:1",), "a flag given, the variable is not read"
    monkeypatch.setenv("KILN_HUB", "")
    assert load(DialSettings, {}).hub == (DEFAULT_HUB,), "an empty variable is none"
    monkeypatch.setenv("KILN_CA", str(tmp_path / "ca.pem"))
    assert refused(DialSettings, {}) == f"$KILN_CA: no such file: {tmp_path}/ca.pem"
    assert load(DoctorSettings, {"ca": write(tmp_path / "ca.pem", "x")}).hub is None, "doctor: no hub, none dialled"


def test_several_hubs_come_from_repeated_flags_a_variable_with_commas_or_a_files_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c = "ws://a.example:7465", "wss://b.example:7465", "ws://[::1]:7465"
    flags = _flags(build_parser().parse_args(["market", "--hub", a, "--hub", f"{b},{c}"]), DialSettings)
    assert load(DialSettings, flags).hub == (a, b, c), "in order, a flag's commas too"
    monkeypatch.setenv("KILN_HUB", f"{a}, {b},{a}")
    assert load(DialSettings, {}).hub == (a, b), "spaces after the commas go, a repeated hub counts once"
    as_list = write(tmp_path / "list.toml", f'name = "p1"\nhub = ["{b}", "{a}"]\n')
    assert load(ProviderSettings, {"config": as_list}).hub == (b, a), "the file over the environment, whole"
    as_text = write(tmp_path / "text.toml", f'name = "p1"\nhub = "{c},{b}"\n')
    assert load(ProviderSettings, {"config": as_text}).hub == (c, b)
    assert load(DoctorSettings, {}).hub == (a, b), "the doctor dials each"
    assert refused(DialSettings, {"hub": [a, "http://b.example:7465"]}) == (
        "--hub: 'http://b.example:7465' is not a hub URL (a hub speaks WebSocket, not HTTP): "
        "a hub URL looks like ws://host:7465 or wss://host:7465"
    ), "the bad one named"
    monkeypatch.setenv("KILN_HUB", f"{a},,{b}")
    assert refused(DialSettings, {}).startswith(f"$KILN_HUB: '{a},,{b}' holds an empty hub URL between its commas")
    monkeypatch.setenv("KILN_HUB", f'["{a}"]')
    assert "$KILN_HUB: '[\"ws://a.example:7465\"]' is not a hub URL" in refused(DialSettings, {}), "text, not JSON"
    numbers = write(tmp_path / "numbers.toml", 'name = "p1"\nhub = 7465\n')
    said = refused(ProviderSettings, {"config": numbers})
    assert said == f"hub in {numbers}: hub is a URL, or a list of URLs, not 7465"
    many = [f"ws://h{n}.example:7465" for n in range(17)]
    assert refused(DialSettings, {"hub": many}) == "--hub: 17 hub URLs given; a client takes at most 16"


def test_the_hubs_fee_is_a_fraction_below_one_counted_in_parts_per_million(tmp_path: Path) -> None:
    from kiln.cli.parser import build_parser
    from kiln.cli.settings import fee_ppm

    assert load(HubSettings, {}).fee == 0.0
    flags = vars(build_parser().parse_args(["hub", "--fee", "0.05"]))
    assert fee_ppm(load(HubSettings, {"fee": flags["fee"]}).fee) == 50_000
    config = tmp_path / "hub.toml"
    config.write_text("fee = 0.000001\n")
    assert fee_ppm(load(HubSettings, {"config": str(config)}).fee) == 1
    for fee, why in ((1.0, "below 1"), (-0.1, "greater than or equal to 0"), (0.0000001, "at most 6 decimals")):
        with pytest.raises(UsageError, match=why):
            load(HubSettings, {"fee": fee})


def test_the_hubs_capture_interval_is_60_s_unless_a_positive_number_of_seconds_is_given() -> None:
    from kiln.cli.parser import build_parser

    assert load(HubSettings, {}).capture_interval == 60.0
    flags = vars(build_parser().parse_args(["hub", "--capture-interval", "1.5"]))
    assert load(HubSettings, {"capture_interval": flags["capture_interval"]}).capture_interval == 1.5
    with pytest.raises(UsageError, match="capture-interval"):
        load(HubSettings, {"capture_interval": 0})


def test_a_providers_price_is_parsed_from_the_flag_or_the_file_and_refused_clearly(tmp_path: Path) -> None:
    argv = ["provider", "--name", "p1", "--price", "start=0.01,cpu-hour=0.20,env-hour=0.05"]
    flags = _flags(build_parser().parse_args(argv), ProviderSettings)
    assert load(ProviderSettings, flags).price == Price(start=0.01, cpu_hour=0.2, env_hour=0.05)
    assert load(ProviderSettings, {"name": "p1"}).price is None, "no --price: free"
    assert load(ProviderSettings, {"name": "p1", "price": " env-hour = 1 "}).price == Price.micro(env_hour=10**6)
    table = write(tmp_path / "p.toml", 'name = "p1"\nprice = {start = 0.5, cpu_hour = "0.25"}\n')
    assert load(ProviderSettings, {"config": table}).price == Price.micro(start=500_000, cpu_hour=250_000)
    cases = {
        "start=0.01,gpu-hour=1": "--price: a price has no rate 'gpu-hour': it has start, cpu-hour, env-hour",
        "start": "--price: a price is start=C,cpu-hour=C,env-hour=C (credits), not 'start'",
        "start=1,start=2": "--price: the price names 'start' twice",
        "start=-1": "--price: start -1 is out of range",
        "start=0.0000001": "--price: start 0.0000001 is finer than a micro-credit",
        "cpu-hour=lots": "--price: cpu-hour is a number of credits, not 'lots'",
    }
    for text, expected in cases.items():
        assert refused(ProviderSettings, {"name": "p1", "price": text}).startswith(expected), text
    bad = write(tmp_path / "bad.toml", 'name = "p1"\nprice = 3\n')
    assert "price in " in refused(ProviderSettings, {"config": bad})


def test_the_hubs_metrics_are_an_admins_unless_public_metrics_is_given(tmp_path: Path) -> None:
    from kiln.cli.parser import build_parser

    assert load(HubSettings, {}).public_metrics is False
    flags = vars(build_parser().parse_args(["hub", "--public-metrics"]))
    assert load(HubSettings, {"public_metrics": flags["public_metrics"]}).public_metrics is True
    assert "public_metrics" not in vars(build_parser().parse_args(["hub"])), "not given: the file decides"
    assert load(HubSettings, {"config": write(tmp_path / "hub.toml", "public-metrics = true\n")}).public_metrics
