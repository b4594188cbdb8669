"""``kiln``: parse the command line, load the command's settings, run it, and say how it went.

Exit codes:

* 0: done; and a clean stop of ``kiln hub``, ``kiln provider`` or ``kiln forward`` (SIGTERM, or Ctrl-C);
* 1: it failed: one line on stderr, ``kiln: <message> [<code>]`` (the code is the error's stable code);
* 2: a usage error, found before anything ran: a bad flag (argparse), a bad setting in a
  flag, the ``--config`` file or the environment, a token file that cannot be read;
* ``kiln run``: the command's own exit code; 124 when ``--timeout`` killed it, 127 when the
  image holds no such program (the provider says which on stderr);
* 130: another command interrupted with Ctrl-C; 141: whoever read its output stopped (``| head``).

No mistake on the command line ends in a traceback: whatever goes wrong is one line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence

from kiln.cli import commands, doctor, serve, units
from kiln.cli.parser import build_parser
from kiln.cli.settings import DialSettings, DoctorSettings, HubSettings, ProviderSettings, load
from kiln.protocol.errors import KilnError, UsageError
from kiln.protocol.money import to_micro

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

DIALS: dict[str, Callable[[DialSettings, argparse.Namespace], Awaitable[int]]] = {
    "market": commands.market,
    "activities": commands.activities,
    "run": commands.run,
    "forward": commands.forward,
    "image push": commands.image_push,
    "image ls": commands.image_ls,
    "image rm": commands.image_rm,
    "image share": commands.image_share,
    "balance": commands.balance,
}
"""The commands that dial a hub, by name."""


def _name(args: argparse.Namespace) -> str:
    sub = getattr(args, "image_command", None) or getattr(args, "token_command", None)
    sub = sub or getattr(args, "service_command", None) or getattr(args, "credit_command", None)
    sub = sub or getattr(args, "ledger_command", None)
    return f"{args.command} {sub}" if sub else str(args.command)


def _flags(args: argparse.Namespace, model: type[DialSettings] | type[HubSettings]) -> dict[str, object]:
    """The settings among the flags given (argparse left out the others)."""
    given = {key: value for key, value in vars(args).items() if key in model.model_fields}
    if "label" in given:
        given["label"] = dict(given["label"])  # pairs from --label k=v
    return given


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = _name(args)
    try:
        job = _prepare(command, args)
    except UsageError as e:
        print(f"kiln {command}: {e.message}", file=sys.stderr)
        return EXIT_USAGE
    serving = command in ("hub", "provider", "forward")
    try:
        return job()
    except KeyboardInterrupt:
        return 0 if serving else EXIT_INTERRUPTED  # Ctrl-C before the server's own handler was in place
    except KilnError as e:
        print(f"kiln: {e.message} [{e.code}]", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        # Whoever read stdout stopped (| head): end quietly, as a program killed by SIGPIPE would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as e:
        # A file or folder the command could not use (the data folder, say): said in one line.
        where = f" {e.filename}" if e.filename is not None else ""
        print(f"kiln: cannot use{where}: {e.strerror or e}", file=sys.stderr)
        return EXIT_FAILED


def _prepare(command: str, args: argparse.Namespace) -> Callable[[], int]:
    """Judge the command line (UsageError: exit 2) and return what runs the command."""
    verbose = bool(getattr(args, "verbose", False))
    if command == "hub":
        hub = load(HubSettings, _flags(args, HubSettings))
        return _in_loop(lambda: serve.hub(hub), hub.verbose)
    if command == "provider":
        provider = load(ProviderSettings, _flags(args, ProviderSettings))
        return _in_loop(lambda: serve.provider(provider), provider.verbose)
    if command == "doctor":
        checked = load(DoctorSettings, _flags(args, DoctorSettings))
        return _in_loop(lambda: doctor.run(checked, as_json=args.json), verbose, quiet=True)
    if command in DIALS:
        if command == "run":
            args.argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            if not args.argv:
                raise UsageError("give the command after --, e.g. kiln run IMAGE -- sh -c 'echo hi'")
        dial = load(DialSettings, _flags(args, DialSettings))
        return _in_loop(lambda: DIALS[command](dial, args), verbose)
    if command == "image busybox":
        return _in_loop(lambda: _busybox(args), verbose)
    if command.startswith("token"):
        return lambda: commands.token(args)
    if command == "usage":
        return lambda: commands.usage(args)
    if command == "credit grant":
        if to_micro(args.amount, "AMOUNT") == 0:
            raise UsageError("AMOUNT: grant more than 0 credits")
        return lambda: commands.credit(args)
    if command in ("ledger", "ledger check"):
        return lambda: commands.ledger(args)
    if command == "service print-unit":
        return lambda: _print(units.unit(args.role))
    raise AssertionError(command)


def _print(text: str) -> int:
    sys.stdout.write(text)
    return 0


async def _busybox(args: argparse.Namespace) -> int:
    serve.require_provider_extra()
    return await commands.image_busybox(args)


def _in_loop(job: Callable[[], Awaitable[int]], verbose: bool, *, quiet: bool = False) -> Callable[[], int]:
    """``job`` run in an event loop, with logging on stderr (``quiet``: warnings only, unless verbose)."""

    async def main() -> int:
        return await job()

    def run() -> int:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO,
            format="%(asctime)s %(name)s %(levelname)s %(message)s",
            stream=sys.stderr,
        )
        logging.getLogger("websockets").setLevel(logging.WARNING)
        try:
            return asyncio.run(main())
        except asyncio.CancelledError:
            return EXIT_INTERRUPTED

    return run
