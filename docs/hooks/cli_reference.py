"""A mkdocs hook: the command-line reference, written from the parser ``kiln`` itself uses.

``reference/cli.md`` is not a file of docs/: at every build this walks
``kiln.cli.build_parser()`` (an ``argparse.ArgumentParser``) and its subcommands, and writes
one section per command with its usage, its description and a table of its arguments. A flag
added to the parser is in the site at the next build; nothing here names a flag.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

PAGE = "reference/cli.md"
WIDTH = 100

INTRO = """\
# Command line

Every command of `kiln`, its usage and its arguments, generated from the parser the command
itself uses (`kiln.cli.build_parser()`) each time the site is built. `kiln COMMAND --help`
prints the same. The guides show the commands in use: [Run a hub](../guides/hub.md),
[Run a provider](../guides/provider.md).
"""


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """``(name, help, parser)`` of each subcommand, in the order they were added."""
    found: list[tuple[str, str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found.append((name, helps.get(name, ""), sub))
    return found


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def argument_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.option_strings:
            names = ", ".join(f"`{o}`" for o in action.option_strings)
            if action.nargs != 0:
                metavar = action.metavar or (action.dest.upper() if not action.choices else None)
                if action.choices and not action.metavar:
                    metavar = "{" + ",".join(str(c) for c in action.choices) + "}"
                names += f" *{metavar}*"
        else:
            names = f"*{action.metavar or action.dest}*"
        default = action.default
        if isinstance(action, argparse._VersionAction) or default in (None, False, [], argparse.SUPPRESS):
            shown_default = ""
        else:
            shown_default = f"`{default}`"
        notes = []
        if action.required and action.option_strings:
            notes.append("required")
        if action.nargs == argparse.REMAINDER:
            notes.append("everything after it")
        if isinstance(action, argparse._AppendAction) and "repeatable" not in (action.help or ""):
            notes.append("repeatable")
        help_text = (action.help or "") % {"default": default, "prog": parser.prog} if action.help else ""
        if notes:
            help_text = f"{help_text} ({', '.join(notes)})" if help_text else ", ".join(notes)
        rows.append(f"| {cell(names)} | {cell(shown_default)} | {cell(help_text)} |")
    return rows


def usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    return formatter.format_help().strip()


def section(parser: argparse.ArgumentParser, summary: str, level: int) -> list[str]:
    lines = [f"{'#' * level} `{parser.prog}`", ""]
    if summary:
        lines += [summary[0].upper() + summary[1:] + ("" if summary.endswith(".") else "."), ""]
    if parser.description and parser.description != summary:
        lines += [parser.description, ""]
    lines += ["```text", usage(parser), "```", ""]
    rows = argument_rows(parser)
    if rows:
        lines += ["| argument | default | what it does |", "| --- | --- | --- |", *rows, ""]
    for _name, help_text, sub in subcommands(parser):
        lines += section(sub, help_text, min(level + 1, 4))
    return lines


def render(parser: argparse.ArgumentParser) -> str:
    """The reference page of ``parser`` and every subcommand under it, as Markdown."""
    lines = [INTRO]
    lines += section(parser, "", 2)
    return "\n".join(lines).rstrip() + "\n"


def build() -> str:
    root = Path(__file__).resolve().parents[2]
    for path in (root / "python", root / "provider_runtime"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    from kiln.cli import build_parser

    return render(build_parser())


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    files.append(File.generated(config, PAGE, content=build()))
    return files
