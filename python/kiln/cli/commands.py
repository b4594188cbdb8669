"""The commands that ask a hub something or run one thing there, and those that read a hub's data folder.

Each takes its :class:`~kiln.cli.settings.DialSettings` (where the hub is, the token, the CA)
and the command's own flags, prints a table or a record (or, with ``--json``, one JSON
document: :mod:`kiln.cli.output`), and returns the exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from kiln.cli.output import ago, note, print_json, print_table, when
from kiln.cli.settings import DialSettings
from kiln.hub.ledger import MINT
from kiln.protocol.errors import UsageError
from kiln.protocol.sizes import format_size

if TYPE_CHECKING:
    from kiln.hub.io.state import HubState
    from kiln.protocol.messages import ImageInfo
    from kiln.requestor.client import connect

EXIT_TIMEOUT: Final = 124
"""``kiln run``'s code when ``--timeout`` killed the command (as timeout(1) exits)."""
CLIENT_NAME: Final = "kiln-cli"


def _connect(settings: DialSettings) -> connect:
    import kiln

    return kiln.connect(settings.hub, token=settings.token, name=CLIENT_NAME, ssl=settings.ca)


async def market(settings: DialSettings, args: argparse.Namespace) -> int:
    async with _connect(settings) as requestor:
        providers = await requestor.market(image=args.image, labels=dict(args.label), limit=args.limit)
    if args.json:
        print_json({"providers": providers})
        return 0
    if not providers:
        print("no providers")
    else:
        from kiln.protocol.money import format_price

        rows = [("NAME", "CPUS", "MEMORY", "ACTIVITIES", "PRICE", "REPUTATION", "OUTBOUND", "IMAGES")]
        for p in providers:
            memory = f"{format_size(p.free.memory)}/{format_size(p.offered.memory)}"
            reputation = "-" if p.reputation is None else f"{p.reputation:.2f}"  # a hub before 1.5 tells none
            cpus = f"{p.free.cpus:g}/{p.offered.cpus:g}"
            images = ", ".join(p.images) or "-"
            row = (p.name, cpus, memory, str(p.activities), format_price(p.price), reputation, _outbound(p.outbound))
            rows.append((*row, images))
        print_table(rows)
    if len(providers) == args.limit:
        print(f"(the first {args.limit} by name; --limit shows more, --image and --label fewer)")
    return 0


def _outbound(policy: str | list[str] | None) -> str:
    """A provider's outbound policy in a column: ``-`` (none), ``any``, or its first rules."""
    if policy is None or isinstance(policy, str):
        return policy or "-"
    shown = ",".join(policy[:2])
    return shown if len(policy) <= 2 else f"{shown},+{len(policy) - 2}"


async def activities(settings: DialSettings, args: argparse.Namespace) -> int:
    from kiln.protocol.messages import MAX_LISTED

    async with _connect(settings) as requestor:
        listed = await requestor.list_activities(all=args.all)
    more = f" (the first {MAX_LISTED} by id; there may be more)" if len(listed) == MAX_LISTED else ""
    if args.json:
        print_json({"activities": listed})
        if more:
            note(f"the first {MAX_LISTED} by id; there may be more")
        return 0
    now = time.time()
    rows = [("ID", "REQUESTOR", "CREDENTIAL", "PROVIDER", "STATE", "CPUS", "MEMORY", "SINCE")]
    for a in listed:
        credential = "-" if a.credential is None else str(a.credential)
        memory = format_size(a.resources.memory)
        since = "-" if a.started is None else ago(a.started, now)
        rows.append((a.id, a.requestor, credential, a.provider, a.state, f"{a.resources.cpus:g}", memory, since))
    if listed:
        print_table(rows)
    if args.all:
        print(f"{len(listed)} activities at the hub{more}")
    else:
        # A requestor's own are its connection's: this one's new, so only --all shows anything.
        print(f"{len(listed)} activities held by this connection; --all lists every requestor's (an admin token)")
    return 0


async def run(settings: DialSettings, args: argparse.Namespace) -> int:
    """The command's exit code; 124 when its timeout killed it. A program the image lacks
    exits 127 (the provider says which on the command's stderr)."""
    import kiln
    from kiln.requestor.activity import CommandTimeout

    argv: list[str] = args.argv
    out = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
    try:
        async with (
            _connect(settings) as requestor,
            requestor.rent(args.image, kiln.Demand(cpus=args.cpus, memory=args.memory), user=args.user) as act,
        ):
            async for event in act.stream(argv, timeout=args.timeout, stdin=_stdin() if args.stdin else None):
                if event.result is not None:
                    # Streamed, the output came as events; a provider that says why a program
                    # could not start puts that on stderr too, or (an older one) in the result.
                    out["stderr"].write(event.result.stderr_bytes)
                    out["stderr"].flush()
                    return event.result.exit_code
                out[event.kind].write(event.data)
                out[event.kind].flush()
    except CommandTimeout as e:
        note(f"kiln: {e.message} [{e.code}]")
        return EXIT_TIMEOUT
    raise AssertionError("a stream ends with its result")


async def forward(settings: DialSettings, args: argparse.Namespace) -> int:
    """Carry local connections to a port of an activity until SIGINT or SIGTERM (then 0)."""
    from kiln.requestor import ports

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with _connect(settings) as requestor:

            async def opener() -> ports.Streams:
                return await ports.open_connection(await requestor.connected(), args.activity, args.port)

            target = f"{args.activity}:{args.port}"
            async with await ports.forward(opener, target, local_port=args.local, host=args.bind) as fwd:
                if args.json:
                    print_json(
                        {"host": fwd.host, "port": fwd.port, "activity": args.activity, "target_port": args.port}
                    )
                else:
                    print(f"forwarding {fwd.host}:{fwd.port} -> {target}", flush=True)
                await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


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


async def image_push(settings: DialSettings, args: argparse.Namespace) -> int:
    """Push; the digest is the last line on stdout (or, with ``--json``, the pushed image's record)."""
    from kiln.requestor.images import inspect_engine_image, push_archive, read_archive, saving

    if (args.ref is None) == (args.file is None):
        raise UsageError("kiln image push: give an image of the local engine (REF) or an archive (--file F.tar)")
    path: Path | None = args.file
    if path is None:
        image = await inspect_engine_image(args.ref)  # an image the engine lacks fails before any hub is dialled
        note(f"saving {args.ref} from the local Docker engine (sent as it is saved)")
        async with _connect(settings) as requestor, saving(image) as saved:
            pushed = await push_archive(await requestor.connected(), saved, args.tag, _push_progress(note))
    else:
        if not await asyncio.to_thread(path.is_file):
            exists = await asyncio.to_thread(path.exists)
            raise UsageError(f"{path} is not a file" if exists else f"no such file: {path}")
        await asyncio.to_thread(read_archive, path)  # a bad archive fails before any hub is dialled
        async with _connect(settings) as requestor:
            pushed = await requestor.push_image(path=path, tags=args.tag, progress=_push_progress(note))
    note(
        f"pushed {', '.join(pushed.tags) or 'an untagged image'}: {format_size(pushed.size)}, sent "
        f"{format_size(pushed.sent_bytes)}; {pushed.layers_skipped} of {pushed.layers} layers skipped "
        f"({format_size(pushed.skipped_bytes)}) because the hub has them"
    )
    if args.json:
        print_json(pushed)
    else:
        print(pushed.digest, flush=True)
    return 0


async def image_ls(settings: DialSettings, args: argparse.Namespace) -> int:
    async with _connect(settings) as requestor:
        listed = await requestor.list_images()
    if args.json:
        print_json({"images": listed.images, "used": listed.used, "limit": listed.limit})
        return 0
    now = time.time()
    rows = [("DIGEST", "TAGS", "SIZE", "LAST USED", "PROVIDERS", "OWNERS", "SHARED")]
    for i in listed.images:
        digest = i.digest.removeprefix("sha256:")[:12]
        tags, providers, owners = _names(i.tags), _names(i.providers), _names(i.owners)
        rows.append((digest, tags, format_size(i.size), ago(i.last_used, now), providers, owners, _shared(i)))
    print_table(rows)
    print(f"{len(listed.images)} images, {format_size(listed.used)} of {format_size(listed.limit)} used")
    return 0


def _names(names: list[str] | None) -> str:
    """Names as ``kiln image ls`` shows them: comma-separated, or a dash for none."""
    return ", ".join(names or []) or "-"


def _shared(image: ImageInfo) -> str:
    """Whom an image is shared with, as ``kiln image ls`` shows it."""
    names = ["everyone"] if image.public else []
    return ", ".join([*names, *(image.shared or [])]) or "-"


async def image_share(settings: DialSettings, args: argparse.Namespace) -> int:
    if not args.with_ and not args.public:
        raise UsageError("kiln image share: name whom with --with NAME (repeatable), or --public")
    async with _connect(settings) as requestor:
        await requestor.share_image(args.ref, args.with_, public=args.public, revoke=args.revoke)
    whom = [*args.with_, *(["everyone"] if args.public else [])]
    if args.json:
        print_json({"image": args.ref, "with": args.with_, "public": args.public, "revoked": args.revoke})
    else:
        done, to = ("unshared", "from") if args.revoke else ("shared", "with")
        print(f"{done} {args.ref} {to} {', '.join(whom)}")
    return 0


async def image_rm(settings: DialSettings, args: argparse.Namespace) -> int:
    async with _connect(settings) as requestor:
        await requestor.remove_image(args.ref)
    if args.json:
        print_json({"removed": args.ref})
    else:
        print(f"removed {args.ref}")
    return 0


async def image_busybox(args: argparse.Namespace) -> int:
    from kiln_provider.docker_adapter import DockerAdapter

    image_id = await asyncio.to_thread(lambda: DockerAdapter("cli").build_busybox_image(args.tag))
    print(f"{args.tag} {image_id}")
    return 0


def _hub_data(data_dir: Path | None, *, make: bool = False) -> Path:
    """The hub's data folder. Only ``make`` (a credential made before the hub ever ran) starts
    a ``hub.db`` there: reading one that is not there would make an empty one in a mistyped
    folder, and show nothing as if the hub had nothing."""
    from kiln.hub.io.blobs import default_data_dir
    from kiln.hub.io.state import FILE_NAME

    folder = data_dir or default_data_dir()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--data-dir: {folder} is a file, not a folder")
    if not make and not (folder / FILE_NAME).is_file():
        given = "" if data_dir else " (the default)"
        raise UsageError(f"no hub data in {folder}{given}: give the --data-dir the hub runs with")
    return folder


def _state(args: argparse.Namespace, *, make: bool = False) -> HubState:
    """The hub's state that ``--db`` names, else the one in its ``--data-dir`` (see :func:`_hub_data`)."""
    from kiln.hub.io.sql import is_url
    from kiln.hub.io.state import HubState  # imported here, not at start: a quick CLI

    if args.db is not None:
        # Not HubState.open: a command is no hub, it has no hub id to keep (in a hub-id file of the working folder).
        return HubState(args.db if is_url(args.db) else Path(args.db))
    return HubState.in_dir(_hub_data(args.data_dir, make=make))


def token(args: argparse.Namespace) -> int:
    with _state(args, make=args.token_command == "create") as state:
        if args.token_command == "create":
            record, secret = state.create(args.role, args.name)
            bound = f" bound to the name {record.name!r}" if record.role == "provider" else ""
            note(f"created {record.role} credential {record.id}{bound} in {state.where}; its token:")
            if args.json:
                print_json({**_record(record), "token": secret})
            else:
                print(secret, flush=True)
        elif args.token_command == "ls":
            credentials = state.credentials()
            if args.json:
                print_json({"credentials": credentials})
                return 0
            rows = [("ID", "ROLE", "NAME", "CREATED", "REVOKED")]
            rows += [(str(c.id), c.role, c.name or "-", when(c.created), when(c.revoked)) for c in credentials]
            print_table(rows)
        else:
            record = state.revoke(args.which)
            if args.json:
                print_json(record)
            else:
                print(f"revoked {record.role} credential {record.id}" + (f" ({record.name})" if record.name else ""))
    return 0


def _record(record: object) -> dict[str, object]:
    from pydantic_core import to_jsonable_python

    shown = to_jsonable_python(record)
    assert isinstance(shown, dict)
    return shown


def usage(args: argparse.Namespace) -> int:
    with _state(args) as state:
        totals = state.usage_totals(args.by)
    if args.json:
        print_json({"by": args.by, "totals": totals})
    else:
        header = (args.by.upper(), "CREDENTIAL", "ACTIVITIES", "CPU-HOURS", "CPU-SECONDS USED", "GIB-HOURS")
        rows: list[tuple[str, ...]] = [header]
        for t in totals:
            credential = "-" if t.credential is None else str(t.credential)
            rented, used = f"{t.cpu_seconds_rented / 3600:.3f}", f"{t.cpu_seconds_used:.1f}"
            gib_hours = f"{t.memory_byte_seconds / 2**30 / 3600:.3f}"
            rows.append((t.who, credential, str(t.activities), rented, used, gib_hours))
        if args.by == "provider":
            rows = [row[:1] + row[2:] for row in rows]
        print_table(rows)
    note(f"{sum(t.activities for t in totals)} activities ended")
    return 0


def credit(args: argparse.Namespace) -> int:
    """``kiln credit grant``: credits into a requestor credential's account, from the mint."""
    from kiln.protocol.money import format_credits, to_micro

    amount = to_micro(args.amount, "AMOUNT")  # judged before (app._prepare): exit 2
    with _state(args) as state:
        granted = state.grant(args.requestor, amount)
        [(account, _)] = [entry for entry in granted.entries if entry[0] != MINT]
        balance = state.balance(account)
    if args.json:
        print_json({"transaction": granted.key, "account": account, "granted": amount, "balance": balance})
    else:
        now = format_credits(balance)
        print(f"granted {format_credits(amount)} credits to {args.requestor} ({account}): balance {now}")
    return 0


def ledger(args: argparse.Namespace) -> int:
    """``kiln ledger``: the latest transactions, one line per entry; ``kiln ledger check``: exit 1 on a problem."""
    from kiln.protocol.money import format_credits

    with _state(args) as state:
        if args.ledger_command == "check":
            problems = state.check()
            transactions, accounts = state.ledger_counts()
        else:
            if args.limit < 1:
                raise UsageError("--limit is at least 1")
            listed = state.transactions(args.account, args.activity, args.limit)
            matched = state.count_transactions(args.account, args.activity)
    if args.ledger_command == "check":
        if args.json:
            print_json({"ok": not problems, "problems": problems, "transactions": transactions, "accounts": accounts})
        else:
            for problem in problems:
                print(problem)
            verdict = f"{len(problems)} problems" if problems else "the ledger balances"
            print(f"{verdict}: {transactions} transactions, {accounts} accounts checked")
        return 1 if problems else 0
    if args.json:
        print_json({"transactions": listed, "matched": matched})
        return 0
    rows = [("ID", "TIME", "KIND", "ACTIVITY", "ACCOUNT", "AMOUNT")]
    for t in listed:
        first = (str(t.id), when(t.time), t.kind, t.activity or "-")
        for n, entry in enumerate(t.entries):
            rows.append(
                (*(first if n == 0 else ("", "", "", "")), entry.account, _signed(format_credits(entry.amount)))
            )
    if listed:
        print_table(rows)
    more = f" (the latest {len(listed)}; --limit shows more)" if len(listed) < matched else ""
    print(f"{matched} transactions{more}; amounts in credits")
    return 0


def _signed(amount: str) -> str:
    return amount if amount.startswith("-") or amount == "0" else f"+{amount}"


async def balance(settings: DialSettings, args: argparse.Namespace) -> int:
    """``kiln balance``: this token's account, asked of the hub."""
    from kiln.protocol.money import format_credits

    async with _connect(settings) as requestor:
        account = await requestor.balance()
    if args.json:
        print_json(account)
        return 0
    print(f"account    {account.account}")
    print(f"available  {format_credits(account.available_micro)} credits")
    print(f"held       {format_credits(account.held_micro)} credits (for live activities)")
    print(f"spent      {format_credits(account.spent_micro)} credits")
    return 0
