"""The ``kiln`` command: run a hub or a provider, look at the market, run one command.

::

    kiln hub --host 127.0.0.1 --port 7465
    kiln provider --hub ws://127.0.0.1:7465 --name p1 --cpus 2 --memory 2GiB --image-cache 20GiB
    kiln hub --tls-cert hub.pem --tls-key hub.key                      # serves wss://
    kiln provider --hub wss://hub.example:7465 --ca ca.pem --name p1   # --ca on every command that dials
    kiln market --hub ws://127.0.0.1:7465
    kiln activities --hub ws://127.0.0.1:7465 --all --token T     # every requestor's activities (an admin token)
    kiln run --hub ws://127.0.0.1:7465 kiln-busybox:latest -- sh -c 'echo hi'
    kiln image busybox
    kiln image push wordcount:1 --hub ws://127.0.0.1:7465        # or: --file wordcount.tar
    kiln image ls --hub ws://127.0.0.1:7465
    kiln image rm wordcount:1 --hub ws://127.0.0.1:7465
    kiln token create --role provider --name p1      # prints the token; ls and revoke manage them
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from kiln.__about__ import __version__
from kiln.protocol.errors import KilnError, UsageError
from kiln.protocol.sizes import format_size, parse_size

DEFAULT_HUB = "ws://127.0.0.1:7465"


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln", description="Run work in containers on other people's machines.")
    parser.add_argument("--version", action="version", version=f"kiln {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    hub = sub.add_parser("hub", help="run the hub: the market and the relay")
    hub.add_argument("--host", default="127.0.0.1")
    hub.add_argument("--port", type=int, default=7465, help="0 picks a free port (printed)")
    hub.add_argument(
        "--token",
        default=None,
        help="a shared token that admits any role under any free name (with or without credentials: kiln token)",
    )
    hub.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the image store and hub.db (credentials, sessions, activities, usage) live: a hub started "
        "again on it takes its activities back (default: $XDG_DATA_HOME/kiln/hub, i.e. ~/.local/share/kiln/hub)",
    )
    hub.add_argument(
        "--store-limit", type=_size, default="20GiB", help="most bytes the image store holds (default 20GiB)"
    )
    hub.add_argument("--create-timeout", type=float, default=120.0, metavar="S",
                     help="drop a provider that takes longer to start a container (its image still loading counts "
                     "as progress; default 120)")  # fmt: skip
    hub.add_argument("--destroy-timeout", type=float, default=60.0, metavar="S",
                     help="drop a provider that takes longer to remove a container (default 60)")  # fmt: skip
    hub.add_argument("--credit-timeout", type=float, default=120.0, metavar="S",
                     help="abort a requestor's upload or command input that its provider grants no credit for "
                     "this long (default 120)")  # fmt: skip
    hub.add_argument("--max-activities", type=int, default=1024, metavar="N",
                     help="activities one requestor connection may hold at once (default 1024)")  # fmt: skip
    hub.add_argument("--grace", type=float, default=60.0, metavar="S",
                     help="keep a requestor's activities this long after its connection drops, or after the hub "
                     "restarts, for it to reconnect and take them back (default 60; 0: none)")  # fmt: skip
    hub.add_argument("--tls-cert", type=Path, default=None, metavar="FILE",
                     help="serve wss:// with this PEM certificate (and intermediates); needs --tls-key")  # fmt: skip
    hub.add_argument("--tls-key", type=Path, default=None, metavar="FILE",
                     help="the certificate's unencrypted private key (PEM)")  # fmt: skip

    provider = sub.add_parser("provider", help="share this machine's Docker engine through a hub")
    provider.add_argument("--hub", default=DEFAULT_HUB)
    provider.add_argument("--name", required=True)
    provider.add_argument("--cpus", type=float, default=None, help="CPUs to share (default: all)")
    provider.add_argument("--memory", type=_size, default=None, help="memory to share, e.g. 2GiB (default: 3/4)")
    provider.add_argument(
        "--storage",
        type=_size,
        default=None,
        help="storage to share (default: 10GiB, never more than the disk of --data-dir has free); each container "
        "writes only to a volume of the size it rented (256MiB when it named none), at /golem and /tmp",
    )
    provider.add_argument("--label", type=_label, action="append", default=[], help="key=value, repeatable")
    provider.add_argument("--token", default=None)
    provider.add_argument("--pids-limit", type=int, default=256)
    provider.add_argument(
        "--stream-idle-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="abort an upload or download that moves nothing for this long (default 30)",
    )
    provider.add_argument(
        "--image-cache",
        type=_size,
        default=parse_size("20GiB"),
        metavar="SIZE",
        help="images loaded for requestors to keep; past it the least recently used go (default 20GiB)",
    )
    provider.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the provider keeps its record of images and its containers' volumes "
        "(default ~/.local/share/kiln/provider/NAME)",
    )
    provider.add_argument(
        "--pull",
        action="store_true",
        help="pull an image this machine lacks from its registry when a rent names it (default: refuse)",
    )
    provider.add_argument(
        "--allow-root",
        action="store_true",
        help="let a requestor that asks (user='root') run its commands as root in its container, still "
        "without capabilities or network (default: commands run as the image's USER, else uid 65534)",
    )
    provider.add_argument(
        "--grace",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="keep containers running this long after losing the hub, for a restarted hub to hand them back to "
        "their requestors (default 120)",
    )
    provider.add_argument(
        "--name-wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to retry while another provider holds --name (default 30)",
    )

    market = sub.add_parser("market", help="list the providers a hub knows")
    market.add_argument("--hub", default=DEFAULT_HUB)
    market.add_argument("--token", default=None)
    market.add_argument("--image", default=None, help="only providers that hold this image")
    market.add_argument("--label", type=_label, action="append", default=[], help="key=value, repeatable")
    market.add_argument("--limit", type=int, default=100, help="list at most this many (1-1000, by name)")

    activities = sub.add_parser("activities", help="list every requestor's activities at a hub (--all, an admin token)")
    activities.add_argument("--hub", default=DEFAULT_HUB)
    activities.add_argument("--token", default=None)
    activities.add_argument(
        "--all",
        action="store_true",
        help="every activity at the hub (needs an admin token: kiln token create); "
        "without it, only this connection's, which are none",
    )

    run = sub.add_parser("run", help="rent one container, run one command in it, print its output as it comes")
    run.add_argument("--hub", default=DEFAULT_HUB)
    run.add_argument("--token", default=None)
    run.add_argument("--cpus", type=float, default=1.0)
    run.add_argument("--memory", type=_size, default=parse_size("256MiB"))
    run.add_argument("--timeout", type=float, default=None)
    run.add_argument("-i", "--stdin", action="store_true", help="pass this command's stdin to the command")
    run.add_argument("--user", choices=["root"], default=None, help="run as root (on a provider with --allow-root)")
    run.add_argument("image")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="the command, after --")

    image = sub.add_parser("image", help="build images for local use; push, list and remove images in a hub's store")
    images = image.add_subparsers(dest="image_command", required=True)
    busybox = images.add_parser("busybox", help="build kiln-busybox:latest FROM scratch (needs kiln[provider])")
    busybox.add_argument("--tag", default="kiln-busybox:latest")
    push = images.add_parser(
        "push", help="store an image in the hub: from the local engine (docker save REF) or a file (--file)"
    )
    push.add_argument("ref", nargs="?", default=None, help="an image of the local Docker engine, e.g. wordcount:1")
    push.add_argument("--file", default=None, help="an archive docker save wrote (no Docker needed)")
    push.add_argument("--tag", action="append", default=[], help="tag it also with this name, repeatable")
    ls = images.add_parser("ls", help="list the images in the hub's store")
    rm = images.add_parser("rm", help="remove an image (by tag or sha256: digest) from the hub's store")
    rm.add_argument("ref")
    for command in (push, ls, rm):
        command.add_argument("--hub", default=DEFAULT_HUB)
        command.add_argument("--token", default=None)
    for command in (provider, market, activities, run, push, ls, rm):
        command.add_argument(
            "--ca",
            type=Path,
            default=None,
            metavar="FILE",
            help="trust a wss:// hub whose certificate this CA (PEM) signed (default: the system's trust store)",
        )

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
    return parser


async def _market(args: argparse.Namespace) -> int:
    import kiln

    async with kiln.connect(args.hub, token=args.token, name="kiln-cli", ssl=args.ca) as requestor:
        providers = await requestor.market(image=args.image, labels=dict(args.label), limit=args.limit)
    if not providers:
        print("no providers")
    for p in providers:
        print(
            f"{p.name:16} cpus {p.free.cpus:g}/{p.offered.cpus:g}  memory {format_size(p.free.memory)}/"
            f"{format_size(p.offered.memory)}  activities {p.activities}  images {', '.join(p.images) or '-'}"
        )
    if len(providers) == args.limit:
        print(f"(the first {args.limit} by name; --limit shows more, --image and --label fewer)")
    return 0


async def _activities(args: argparse.Namespace) -> int:
    import kiln
    from kiln.protocol.messages import MAX_LISTED

    async with kiln.connect(args.hub, token=args.token, name="kiln-cli", ssl=args.ca) as requestor:
        listed = await requestor.list_activities(all=args.all)
    now = time.time()
    rows = [("ID", "REQUESTOR", "CREDENTIAL", "PROVIDER", "STATE", "CPUS", "MEMORY", "SINCE")]
    rows += [
        (a.id, a.requestor, "-" if a.credential is None else str(a.credential), a.provider, a.state,
         f"{a.resources.cpus:g}", format_size(a.resources.memory), "-" if a.started is None else _ago(a.started, now))
        for a in listed
    ]  # fmt: skip
    if listed:
        _print_table(rows)
    more = f" (the first {MAX_LISTED} by id; there may be more)" if len(listed) == MAX_LISTED else ""
    if args.all:
        print(f"{len(listed)} activities at the hub{more}")
    else:
        # A requestor's own are its connection's: this one's new, so only --all shows anything.
        print(f"{len(listed)} activities held by this connection; --all lists every requestor's (an admin token)")
    return 0


async def _run(args: argparse.Namespace) -> int:
    import kiln

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("kiln run: give the command after --", file=sys.stderr)
        return 2
    out = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
    async with (
        kiln.connect(args.hub, token=args.token, name="kiln-cli", ssl=args.ca) as requestor,
        requestor.rent(args.image, kiln.Demand(cpus=args.cpus, memory=args.memory), user=args.user) as act,
    ):
        async for event in act.stream(argv, timeout=args.timeout, stdin=_stdin() if args.stdin else None):
            if event.result is not None:
                return event.result.exit_code
            out[event.kind].write(event.data)
            out[event.kind].flush()
    raise AssertionError("a stream ends with its result")


async def _stdin() -> AsyncIterator[bytes]:
    """This process's stdin, chunk by chunk as it comes (a pipe, a file, a terminal)."""
    while chunk := await asyncio.to_thread(os.read, sys.stdin.fileno(), 256 * 1024):
        yield chunk


def _push_progress(out: Callable[[str], None], every: float = 0.5) -> Callable[[int, int, int], None]:
    """A push's progress as lines: at most one each ``every`` seconds, and the last."""
    shown = [0.0]

    def progress(sent: int, total: int, skipped: int) -> None:
        now = time.monotonic()
        if sent < total and now - shown[0] < every:
            return
        shown[0] = now
        held = f"; {format_size(skipped)} the hub holds already" if skipped else ""
        out(f"sent {format_size(sent)} of {format_size(total)}{held}")

    return progress


async def _image_push(args: argparse.Namespace) -> int:
    import kiln
    from kiln.requestor.images import docker_save, read_archive

    if (args.ref is None) == (args.file is None):
        raise UsageError("kiln image push: give an image of the local engine (REF) or an archive (--file F.tar)")

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    async with contextlib.AsyncExitStack() as stack:
        path = args.file
        if path is None:
            say(f"saving {args.ref} from the local Docker engine")
            path = await stack.enter_async_context(docker_save(args.ref))
        await asyncio.to_thread(read_archive, path)  # a bad archive fails before any hub is dialled
        requestor = await stack.enter_async_context(
            kiln.connect(args.hub, token=args.token, name="kiln-cli", ssl=args.ca)
        )
        pushed = await requestor.push_image(path=path, tags=args.tag, progress=_push_progress(say))
    say(
        f"pushed {', '.join(pushed.tags) or 'an untagged image'}: {format_size(pushed.size)}, sent "
        f"{format_size(pushed.sent_bytes)}; {pushed.layers_skipped} of {pushed.layers} layers skipped "
        f"({format_size(pushed.skipped_bytes)}) because the hub has them"
    )
    print(pushed.digest, flush=True)
    return 0


def _ago(then: float | None, now: float) -> str:
    if then is None:
        return "never"
    seconds = max(0.0, now - then)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


async def _image_ls(args: argparse.Namespace) -> int:
    import kiln

    async with kiln.connect(args.hub, token=args.token, name="kiln-cli", ssl=args.ca) as requestor:
        listed = await requestor.list_images()
    now = time.time()
    rows = [("DIGEST", "TAGS", "SIZE", "LAST USED", "PROVIDERS")]
    rows += [
        (i.digest.removeprefix("sha256:")[:12], ", ".join(i.tags) or "-", format_size(i.size), _ago(i.last_used, now),
         ", ".join(i.providers) or "-")
        for i in listed.images
    ]  # fmt: skip
    _print_table(rows)
    print(f"{len(listed.images)} images, {format_size(listed.used)} of {format_size(listed.limit)} used")
    return 0


async def _image_rm(args: argparse.Namespace) -> int:
    import kiln

    async with kiln.connect(args.hub, token=args.token, name="kiln-cli", ssl=args.ca) as requestor:
        await requestor.remove_image(args.ref)
    print(f"removed {args.ref}")
    return 0


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` (the header first) in columns two spaces apart."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _when(seconds: float | None) -> str:
    return "-" if seconds is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _token(args: argparse.Namespace) -> int:
    from kiln.hub.state import HubState
    from kiln.hub.store import default_data_dir

    with HubState.in_dir(args.data_dir or default_data_dir()) as state:
        if args.token_command == "create":
            record, token = state.create(args.role, args.name)
            bound = f" bound to the name {record.name!r}" if record.role == "provider" else ""
            print(f"created {record.role} credential {record.id}{bound} in {state.path}; its token:", file=sys.stderr)
            print(token, flush=True)
        elif args.token_command == "ls":
            rows = [("ID", "ROLE", "NAME", "CREATED", "REVOKED")]
            rows += [(str(c.id), c.role, c.name or "-", _when(c.created), _when(c.revoked))
                     for c in state.credentials()]  # fmt: skip
            _print_table(rows)
        else:
            record = state.revoke(args.which)
            print(f"revoked {record.role} credential {record.id}" + (f" ({record.name})" if record.name else ""))
    return 0


def _usage(args: argparse.Namespace) -> int:
    from kiln.hub.state import HubState
    from kiln.hub.store import default_data_dir

    with HubState.in_dir(args.data_dir or default_data_dir()) as state:
        totals = state.usage_totals(args.by)
    rows: list[tuple[str, ...]] = [(args.by.upper(), "CREDENTIAL", "ACTIVITIES", "CPU-HOURS", "CPU-SECONDS USED",
                                    "GIB-HOURS")]  # fmt: skip
    rows += [(t.who, "-" if t.credential is None else str(t.credential), str(t.activities),
              f"{t.cpu_seconds_rented / 3600:.3f}", f"{t.cpu_seconds_used:.1f}",
              f"{t.memory_byte_seconds / 2**30 / 3600:.3f}") for t in totals]  # fmt: skip
    if args.by == "provider":
        rows = [row[:1] + row[2:] for row in rows]
    _print_table(rows)
    print(f"{sum(t.activities for t in totals)} activities ended", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        if args.command == "token":
            return _token(args)
        if args.command == "usage":
            return _usage(args)
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, a provider's SIGTERM
            return asyncio.run(_main(args))
        return 130
    except KilnError as e:
        print(f"kiln: {e.message} [{e.code}]", file=sys.stderr)
        return 1


def _require_provider_extra() -> None:
    """The provider's commands need docker-py, which only ``kiln[provider]`` installs."""
    try:
        importlib.import_module("docker")
    except ModuleNotFoundError as e:
        raise UsageError("this command needs the provider's dependencies: pip install 'kiln[provider]'") from e


async def _main(args: argparse.Namespace) -> int:
    if args.command == "hub":
        from kiln.hub.server import run as run_hub
        from kiln.hub.tls import server_context

        if (args.tls_cert is None) != (args.tls_key is None):
            raise UsageError("kiln hub: give both --tls-cert and --tls-key (to serve wss://), or neither")
        tls = server_context(args.tls_cert, args.tls_key) if args.tls_cert is not None else None
        await run_hub(
            args.host, args.port, token=args.token, data_dir=args.data_dir, store_limit=args.store_limit,
            create_timeout=args.create_timeout, destroy_timeout=args.destroy_timeout,
            credit_timeout=args.credit_timeout, max_activities=args.max_activities, grace=args.grace, ssl=tls,
        )  # fmt: skip
        return 0
    if args.command == "provider":
        _require_provider_extra()
        from kiln_provider.docker_adapter import DockerAdapter
        from kiln_provider.image_cache import default_data_dir
        from kiln_provider.runtime import ProviderConfig, ProviderRuntime

        config = ProviderConfig(
            hub=args.hub, name=args.name, cpus=args.cpus, memory=args.memory, storage=args.storage,
            labels=dict(args.label), token=args.token, pids_limit=args.pids_limit,
            stream_idle_timeout=args.stream_idle_timeout, name_wait=args.name_wait,
            image_cache=args.image_cache, data_dir=args.data_dir, pull=args.pull, allow_root=args.allow_root,
            ca=args.ca, grace=args.grace,
        )  # fmt: skip
        volumes = (args.data_dir or default_data_dir(args.name)) / "volumes"
        adapter = await asyncio.to_thread(DockerAdapter, args.name, volumes=volumes)
        # No agent binary, or no way to bound what containers write, is a clear error now, not at the first rent.
        logging.getLogger("kiln.provider").info("task containers run the agent %s", adapter.agent)
        await asyncio.to_thread(adapter.volumes.check)
        # SIGTERM stops it as Ctrl-C does: its containers, and their volumes, are removed on the way out.
        main_task = asyncio.current_task()
        assert main_task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
        await ProviderRuntime(config, adapter).run()
        return 0
    if args.command == "market":
        return await _market(args)
    if args.command == "activities":
        return await _activities(args)
    if args.command == "run":
        return await _run(args)
    if args.command == "image" and args.image_command == "push":
        return await _image_push(args)
    if args.command == "image" and args.image_command == "ls":
        return await _image_ls(args)
    if args.command == "image" and args.image_command == "rm":
        return await _image_rm(args)
    if args.command == "image":
        _require_provider_extra()
        from kiln_provider.docker_adapter import DockerAdapter

        image_id = await asyncio.to_thread(lambda: DockerAdapter("cli").build_busybox_image(args.tag))
        print(f"{args.tag} {image_id}")
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
