"""The ``kiln`` command's flags: argparse for their shape, help and usage errors.

A setting's flag (``--hub``, ``--memory``, ...) has no default here: argparse leaves out what
was not given, so that :func:`kiln.cli.settings.load` can put the flags given above the
``--config`` file and the environment, and the settings models hold the defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

from kiln.__about__ import __version__
from kiln.cli.settings import DEFAULT_HUB
from kiln.protocol.errors import KilnError
from kiln.protocol.sizes import parse_size

UNSET = argparse.SUPPRESS
DB_HELP: Final = (
    "the hub's database: a postgresql://user@host/db URL that several hubs share, or a SQLite file "
    "(default: hub.db in --data-dir)"
)
"""The default of every setting's flag: not given, so the file, the environment or the default decides."""


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"a label is key=value, not {text!r}")
    return key, value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except KilnError as e:
        raise argparse.ArgumentTypeError(e.message) from e


def _port(text: str, low: int = 1) -> int:
    if not (text.isascii() and text.isdigit() and low <= int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"a port is a number from {low} to 65535, not {text!r}")
    return int(text)


def _local_port(text: str) -> int:
    return _port(text, 0)


def _dial(command: argparse.ArgumentParser) -> None:
    """The flags of every command that dials a hub (each also from the environment)."""
    hub = (
        "the hub, ws://host:port or wss://host:port; repeated (or URLs separated by commas), the hubs of one "
        f"market, dialled in turn when one dies (default: $KILN_HUB, else {DEFAULT_HUB})"
    )
    command.add_argument("--hub", action="append", default=UNSET, metavar="URL", help=hub)
    command.add_argument("--token", default=UNSET, help="the token to join with (default: $KILN_TOKEN)")
    command.add_argument(
        "--token-file",
        type=Path,
        default=UNSET,
        metavar="FILE",
        help="read the token from FILE (its trailing newline dropped): it then shows in no process list",
    )
    command.add_argument(
        "--ca",
        type=Path,
        default=UNSET,
        metavar="FILE",
        help="trust a wss:// hub whose certificate this CA (PEM) signed (default: $KILN_CA, else "
        "the system's trust store)",
    )


def _json(command: argparse.ArgumentParser) -> None:
    text = "print one JSON document on stdout instead (sizes in bytes, times in Unix seconds)"
    command.add_argument("--json", action="store_true", help=text)


def _config(command: argparse.ArgumentParser, example: str) -> None:
    command.add_argument(
        "--config",
        type=Path,
        default=UNSET,
        metavar="FILE",
        help=f"read the flags from this TOML file, e.g. {example}: keys named as the flags "
        "(token-file = ...), flags given here win",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln", description="Run work in containers on other people's machines.")
    parser.add_argument("--version", action="version", version=f"kiln {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", default=UNSET, help="log more")
    sub = parser.add_subparsers(dest="command", required=True)
    _hub(sub)
    _provider(sub)

    market = sub.add_parser("market", help="list the providers a hub knows")
    _dial(market)
    market.add_argument("--image", default=None, help="only providers that hold this image")
    market.add_argument("--label", type=_label, action="append", default=[], help="key=value, repeatable")
    market.add_argument("--limit", type=int, default=100, help="list at most this many (1-1000, by name)")
    _json(market)

    activities = sub.add_parser("activities", help="list every requestor's activities at a hub (--all, an admin token)")
    _dial(activities)
    activities.add_argument(
        "--all",
        action="store_true",
        help="every activity at the hub (needs an admin token: kiln token create); "
        "without it, only this connection's, which are none",
    )
    _json(activities)

    run = sub.add_parser(
        "run",
        help="rent one container, run one command in it, print its output as it comes",
        description="Exits with the command's exit code; 124 when --timeout killed it, 127 when "
        "the image has no such program.",
    )
    _dial(run)
    run.add_argument("--cpus", type=float, default=1.0)
    run.add_argument("--memory", type=_size, default=parse_size("256MiB"))
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="kill the command after this long")
    run.add_argument("-i", "--stdin", action="store_true", help="pass this command's stdin to the command")
    run.add_argument("--user", choices=["root"], default=None, help="run as root (on a provider with --allow-root)")
    run.add_argument("image")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="the command, after --")

    forward = sub.add_parser(
        "forward",
        help="listen on a local port and carry each connection to a port in an activity's container",
        description="Prints the local address, then forwards until Ctrl-C or SIGTERM (exit 0). The activity "
        "is one of a live session of the same token (or any, on a hub without tokens).",
    )
    _dial(forward)
    forward.add_argument(
        "--local", type=_local_port, default=0, metavar="PORT", help="the local port (default: a free one)"
    )
    forward.add_argument("--bind", default="127.0.0.1", metavar="HOST", help="the local address (default: 127.0.0.1)")
    forward.add_argument("activity", metavar="ACTIVITY", help="the activity's id (kiln activities --all lists them)")
    forward.add_argument("port", type=_port, metavar="PORT", help="the port in its container")
    _json(forward)

    image = sub.add_parser("image", help="build images for local use; push, list and remove images in a hub's store")
    images = image.add_subparsers(dest="image_command", required=True)
    busybox = images.add_parser(
        "busybox",
        help="build kiln-busybox:latest FROM scratch, labelled org.kiln.offer=kiln-busybox so that providers offer it "
        "(needs kiln[provider])",
    )
    busybox.add_argument("--tag", default="kiln-busybox:latest")
    push = images.add_parser(
        "push", help="store an image in the hub: from the local engine (docker save REF) or a file (--file)"
    )
    push.add_argument("ref", nargs="?", default=None, help="an image of the local Docker engine, e.g. wordcount:1")
    push.add_argument("--file", type=Path, default=None, help="an archive docker save wrote (no Docker needed)")
    push.add_argument("--tag", action="append", default=[], help="tag it also with this name, repeatable")
    ls = images.add_parser(
        "ls", help="list the images in the hub's store you may see (yours, and those shared with you)"
    )
    rm = images.add_parser("rm", help="remove an image you pushed (by tag or sha256: digest) from the hub's store")
    rm.add_argument("ref")
    share = images.add_parser(
        "share", help="let other tenants rent an image you pushed (by its digest), or with --revoke no longer"
    )
    share.add_argument("ref", help="your image, by tag or sha256: digest")
    share.add_argument(
        "--with",
        dest="with_",
        action="append",
        default=[],
        metavar="NAME",
        help="a tenant: a credential's name (kiln token ls), #ID for its id, #open for requestors "
        "without a credential; repeatable",
    )
    share.add_argument("--public", action="store_true", help="share it with every tenant of the hub")
    share.add_argument("--revoke", action="store_true", help="take these shares back instead")
    for command in (push, ls, rm, share):
        _dial(command)
        _json(command)

    token = sub.add_parser("token", help="create, list and revoke the credentials a hub admits (its --data-dir)")
    tokens = token.add_subparsers(dest="token_command", required=True)
    create = tokens.add_parser("create", help="make a credential and print its token (shown only this once)")
    create.add_argument("--role", required=True, choices=["provider", "requestor", "admin"])
    create.add_argument("--name", default=None, help="a provider's: the one name it joins under (required)")
    token_ls = tokens.add_parser("ls", help="list credentials (never their tokens)")
    revoke = tokens.add_parser("revoke", help="revoke a credential; peers that joined with it are closed")
    revoke.add_argument("which", metavar="ID_OR_NAME")
    usage = sub.add_parser("usage", help="what each requestor (or provider) rented, from the hub's usage record")
    usage.add_argument("--by", choices=["requestor", "provider"], default="requestor")
    for command in (create, token_ls, revoke, usage):
        command.add_argument("--data-dir", type=Path, default=None, help="the hub's --data-dir (default as the hub's)")
        command.add_argument("--db", default=None, metavar="URL", help=DB_HELP)
        _json(command)
    _ledger(sub)

    doctor = sub.add_parser(
        "doctor",
        help="check what a provider needs on this machine, and the hub it would join",
        description="One line per check: ok, FAIL (with what to do) or skip. Exits 1 when any check fails.",
    )
    _dial(doctor)
    doctor.add_argument("--name", default=UNSET, help="the provider's name (its default --data-dir is named for it)")
    where = "the provider's --data-dir, where free disk is checked (default as the provider's)"
    doctor.add_argument("--data-dir", type=Path, default=UNSET, metavar="DIR", help=where)
    _config(doctor, "/etc/kiln/provider.toml (the provider's)")
    _json(doctor)

    service = sub.add_parser("service", help="run Kiln under systemd")
    services = service.add_subparsers(dest="service_command", required=True)
    unit = services.add_parser(
        "print-unit",
        help="print a systemd unit that runs the hub or a provider from /etc/kiln/ROLE.toml",
        description="e.g. kiln service print-unit provider > /etc/systemd/system/kiln-provider.service",
    )
    unit.add_argument("role", choices=["hub", "provider"])
    return parser


def _ledger(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``kiln credit``, ``kiln ledger`` (on the hub's data folder) and ``kiln balance`` (over the wire)."""
    credit = sub.add_parser("credit", help="put credits in requestors' accounts at a hub (its --data-dir)")
    credits = credit.add_subparsers(dest="credit_command", required=True)
    grant = credits.add_parser(
        "grant",
        help="grant credits to a requestor credential's account (the hub may be running)",
        description="Credits come from the hub's mint account: kiln ledger shows every grant.",
    )
    grant.add_argument("requestor", metavar="REQUESTOR", help="a requestor credential: its name, or #ID for its id")
    grant.add_argument("amount", metavar="AMOUNT", help="credits, e.g. 5 or 0.25 (at most 6 decimals)")
    ledger = sub.add_parser(
        "ledger",
        help="list the transactions of a hub's ledger (its --data-dir), newest first; kiln ledger check verifies it",
    )
    ledger.add_argument(
        "--account",
        default=None,
        metavar="A",
        help="only those of this account: requestor:ID (with its activities' captures), provider:NAME, hold:ACTIVITY, "
        "hub or mint",
    )
    ledger.add_argument("--activity", default=None, metavar="ID", help="only those of this activity")
    ledger.add_argument("--limit", type=int, default=100, metavar="N", help="list at most N (default 100)")
    checks = ledger.add_subparsers(dest="ledger_command", required=False, metavar="check")
    check = checks.add_parser(
        "check",
        help="verify that every transaction sums to zero and every balance equals its entries",
        description="Exits 1 when anything is wrong, with one line per problem.",
    )
    for command in (grant, ledger, check):
        # A subcommand's own default would overwrite what was given before its name: none here.
        default = None if command is not check else UNSET
        command.add_argument(
            "--data-dir", type=Path, default=default, help="the hub's --data-dir (default as the hub's)"
        )
        command.add_argument("--db", default=default, metavar="URL", help=DB_HELP)
        command.add_argument(
            "--json",
            action="store_true",
            default=False if command is not check else UNSET,
            help="print one JSON document on stdout instead (amounts in micro-credits)",
        )
    balance = sub.add_parser(
        "balance", help="this token's account at a hub: credits available, held for live activities, spent"
    )
    _dial(balance)
    balance.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout instead (credits, and micro-credits)"
    )


def _hub(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hub = sub.add_parser(
        "hub", help="run the hub: the market and the relay", description="Stops cleanly (exit 0) on SIGTERM or Ctrl-C."
    )
    _config(hub, "/etc/kiln/hub.toml")
    hub.add_argument("--host", default=UNSET, help="the address to listen on (default 127.0.0.1)")
    hub.add_argument("--port", type=int, default=UNSET, help="default 7465; 0 picks a free port (printed)")
    hub.add_argument(
        "--token",
        default=UNSET,
        help="a shared token that admits any role under any free name (with or without credentials: kiln token)",
    )
    hub.add_argument(
        "--token-file",
        type=Path,
        default=UNSET,
        metavar="FILE",
        help="read the shared token from FILE (its trailing newline dropped)",
    )
    hub.add_argument(
        "--data-dir",
        type=Path,
        default=UNSET,
        help="where the image store and hub.db (credentials, sessions, activities, usage) live: a hub started "
        "again on it takes its activities back (default: $XDG_DATA_HOME/kiln/hub, i.e. ~/.local/share/kiln/hub)",
    )
    hub.add_argument("--db", default=UNSET, metavar="URL", help=DB_HELP + ": hubs on one PostgreSQL are one market")
    hub.add_argument(
        "--advertise",
        default=UNSET,
        metavar="URL",
        help="with a PostgreSQL --db: the ws:// or wss:// URL the other hubs reach this one at (default: the "
        "address it listens on, which must then be theirs to reach: not 0.0.0.0)",
    )
    hub.add_argument(
        "--store-limit",
        type=_size,
        default=UNSET,
        help="most bytes the image store holds, each layer counted at the larger of its size and what its "
        "files take once extracted (default 20GiB)",
    )
    hub.add_argument(
        "--max-image-size",
        type=_size,
        default=UNSET,
        metavar="SIZE",
        help="refuse a push of an image whose layers take more than this once extracted (default 20GiB)",
    )
    hub.add_argument(
        "--max-expansion",
        type=float,
        default=UNSET,
        metavar="RATIO",
        help="refuse a layer whose files take more than RATIO times its size once extracted, past "
        "64MiB (a sparse-file bomb; default 32)",
    )
    hub.add_argument(
        "--create-timeout",
        type=float,
        default=UNSET,
        metavar="S",
        help="drop a provider that takes longer to start a container (its image still loading counts "
        "as progress; default 120)",
    )
    hub.add_argument(
        "--destroy-timeout",
        type=float,
        default=UNSET,
        metavar="S",
        help="drop a provider that takes longer to remove a container (default 60)",
    )
    hub.add_argument(
        "--credit-timeout",
        type=float,
        default=UNSET,
        metavar="S",
        help="abort a requestor's upload or command input that its provider grants no credit for "
        "this long (default 120)",
    )
    hub.add_argument(
        "--max-activities",
        type=int,
        default=UNSET,
        metavar="N",
        help="activities one requestor connection may hold at once (default 1024)",
    )
    hub.add_argument(
        "--grace",
        type=float,
        default=UNSET,
        metavar="S",
        help="keep a requestor's activities this long after its connection drops, or after the hub "
        "restarts, for it to reconnect and take them back (default 60; 0: none)",
    )
    hub.add_argument(
        "--max-connections-per-address",
        type=int,
        default=UNSET,
        metavar="N",
        help="connections one source address (an IPv6 /64) may hold; one more is refused with "
        "too_many, close 4008 (default 4096)",
    )
    hub.add_argument(
        "--max-waiting-per-address",
        type=int,
        default=UNSET,
        metavar="N",
        help="of those, connections that have not said hello yet (default 256)",
    )
    hub.add_argument(
        "--max-connections-per-credential",
        type=int,
        default=UNSET,
        metavar="N",
        help="connections one credential (kiln token) may hold; one more is refused with too_many, "
        "close 4008 (default 64)",
    )
    hub.add_argument(
        "--max-failed-hellos",
        type=int,
        default=UNSET,
        metavar="N",
        help="refused hellos (a wrong token, say) one source address may have a minute; past "
        "them every hello from there is refused unread (too_many, close 4009) till it refills "
        "(default 30)",
    )
    hub.add_argument(
        "--usage-retention",
        type=float,
        default=UNSET,
        metavar="DAYS",
        help="keep a usage row per ended activity this many days, then roll them up into one row per "
        "day, requestor and provider: kiln usage's totals stay (default 90)",
    )
    hub.add_argument(
        "--fee",
        type=float,
        default=UNSET,
        metavar="FRACTION",
        help="the hub's share of what requestors pay providers, e.g. 0.05 for 5%% (default 0); it goes to the "
        "ledger's hub account",
    )
    hub.add_argument(
        "--capture-interval",
        type=float,
        default=UNSET,
        metavar="S",
        help="seconds between two captures of what a running priced activity owes (default 60; shorter "
        "for tests: each is a write to hub.db per activity)",
    )
    hub.add_argument(
        "--public-metrics",
        action="store_true",
        default=UNSET,
        help="answer GET /metrics to anyone (default: an admin only, by a bearer token or the dashboard's "
        "login); /healthz is open either way",
    )
    hub.add_argument(
        "--publish-listen",
        default=UNSET,
        metavar="HOST:PORT",
        help="where to serve the ports requestors publish for browsers, under /s/<token>/ (over TLS with "
        "--tls-cert; default: --host and --port + 1, a free port with --port 0)",
    )
    hub.add_argument(
        "--tls-cert",
        type=Path,
        default=UNSET,
        metavar="FILE",
        help="serve wss:// with this PEM certificate (and intermediates); needs --tls-key",
    )
    hub.add_argument(
        "--tls-key", type=Path, default=UNSET, metavar="FILE", help="the certificate's unencrypted private key (PEM)"
    )


def _provider(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    provider = sub.add_parser(
        "provider",
        help="share this machine's Docker engine through a hub",
        description="Stops cleanly (exit 0) on SIGTERM or Ctrl-C: its containers are removed first.",
    )
    _config(provider, "/etc/kiln/provider.toml")
    _dial(provider)
    provider.add_argument("--name", default=UNSET, help="the name it offers under (required: here or in --config)")
    provider.add_argument("--cpus", type=float, default=UNSET, help="CPUs to share (default: all)")
    provider.add_argument("--memory", type=_size, default=UNSET, help="memory to share, e.g. 2GiB (default: 3/4)")
    provider.add_argument(
        "--storage",
        type=_size,
        default=UNSET,
        help="storage to share (default: 10GiB, never more than the disk of --data-dir has free); each container "
        "writes only to a volume of the size it rented (256MiB when it named none), at /golem and /tmp",
    )
    provider.add_argument(
        "--images",
        action="append",
        default=UNSET,
        metavar="PATTERN",
        help="offer the local images with a tag that matches (fnmatch, e.g. 'myapp:*'; repeatable); images "
        "labelled org.kiln.offer=<their name> (kiln image busybox) and those loaded for Kiln are offered anyway, "
        "and no other image on this Docker engine",
    )
    provider.add_argument(
        "--label",
        type=_label,
        action="append",
        default=UNSET,
        help="key=value, repeatable (added to the file's label table)",
    )
    provider.add_argument(
        "--max-containers",
        type=int,
        default=UNSET,
        metavar="N",
        help="the most containers at once (each has a volume on a loop device; default 256)",
    )
    provider.add_argument(
        "--price",
        default=UNSET,
        metavar="RATES",
        help="what an activity here costs, in credits: start=0.01,cpu-hour=0.20,env-hour=0.05 (any subset; "
        "cpu-hour per hour of CPU time used, env-hour per hour the container is held; default: free)",
    )
    provider.add_argument("--pids-limit", type=int, default=UNSET, help="processes per container (default 256)")
    provider.add_argument(
        "--stream-idle-timeout",
        type=float,
        default=UNSET,
        metavar="SECONDS",
        help="abort an upload or download that moves nothing for this long (default 30)",
    )
    provider.add_argument(
        "--image-cache",
        type=_size,
        default=UNSET,
        metavar="SIZE",
        help="images loaded for requestors to keep, counted at what their layers take extracted; past it the "
        "least recently used go, and no one image may take more (default 20GiB)",
    )
    provider.add_argument(
        "--data-dir",
        type=Path,
        default=UNSET,
        metavar="DIR",
        help="where the provider keeps its record of images and its containers' volumes "
        "(default ~/.local/share/kiln/provider/NAME)",
    )
    provider.add_argument(
        "--pull",
        action=argparse.BooleanOptionalAction,
        default=UNSET,
        help="pull an image this machine lacks from its registry when a rent names it (default: refuse)",
    )
    provider.add_argument(
        "--allow-root",
        action=argparse.BooleanOptionalAction,
        default=UNSET,
        help="let a requestor that asks (user='root') run its commands as root in its container, still "
        "without capabilities or network (default: commands run as the image's USER, else uid 65534)",
    )
    provider.add_argument(
        "--outbound",
        default=UNSET,
        metavar="none|any|FILE",
        help="what containers whose rent asks for it may reach, through a proxy the provider serves inside "
        "them: none (the default), any site, or the sites a FILE lists (one HOST:PORT a line, *.example.org:443 "
        "for the names under it, :* for any port, # comments)",
    )
    provider.add_argument(
        "--outbound-private",
        action="append",
        default=UNSET,
        metavar="HOST:PORT",
        help="let this exact name (or address) reach private, loopback or link-local addresses through the "
        "proxy (repeatable; default: every such address is refused, whatever a name resolves to)",
    )
    provider.add_argument(
        "--hosts",
        default=UNSET,
        metavar="FILE",
        help="names the proxy resolves from this file (hosts(5) format: ADDRESS NAME... a line) before DNS",
    )
    provider.add_argument(
        "--grace",
        type=float,
        default=UNSET,
        metavar="SECONDS",
        help="keep containers running this long after losing the hub, for a restarted hub to hand them back to "
        "their requestors (default 120)",
    )
    provider.add_argument(
        "--name-wait",
        type=float,
        default=UNSET,
        metavar="SECONDS",
        help="how long to retry while another provider holds --name (default 30)",
    )
    provider.add_argument(
        "--metrics-port",
        type=int,
        default=UNSET,
        metavar="PORT",
        help="serve Prometheus metrics (containers, CPU, memory, volumes, images) at http://HOST:PORT/metrics; "
        "0 picks a free port (logged) (default: none)",
    )
    provider.add_argument(
        "--metrics-host",
        default=UNSET,
        metavar="HOST",
        help="the address the metrics are served on (default 127.0.0.1: this machine only)",
    )
