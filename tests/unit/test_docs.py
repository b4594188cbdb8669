"""The documentation does what it says: its examples run, its front door is short, its
references are generated from the code.

Every fenced ``python`` and ``js`` block of the quickstart, the tutorials and the README runs
against a real hub and real providers (tests/docker/test_docs_blocks.py): Python blocks as
scripts, JavaScript blocks with Node (``kiln-client`` resolving to this tree's js-client), and
the web page tutorial's blocks in Chromium with the browser entry served. The conventions, which
docs/development/docs.md states for writers:

- A block is a whole program. It dials ``ws://127.0.0.1:7465``; the test puts the cluster's URL there.
- ``# prints: TEXT`` (``// prints: TEXT`` in JavaScript) in a block says its output holds TEXT;
  every block that runs has at least one, and the test checks each and the exit status.
- ``<!-- docs-test: skip -->`` on the line before a fence keeps a fragment from running. The
  counts in :data:`EXPECTED` are of the blocks that run, so a page cannot stop being tested
  without this file saying so.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
HUB_IN_DOCS = "ws://127.0.0.1:7465"
SKIP = "<!-- docs-test: skip -->"
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\s`]*)")
PRINTS = re.compile(r"(?:#|//) prints: (?P<text>.+?)\s*$", re.MULTILINE)
KINDS = {"python": "python", "py": "python", "js": "node", "javascript": "node", "mjs": "node"}

PAGES = [
    "README.md",
    "docs/quickstart.md",
    "docs/tutorials/python.md",
    "docs/tutorials/node.md",
    "docs/tutorials/web-page.md",
]
BROWSER_PAGES = {"docs/tutorials/web-page.md"}
EXPECTED = {
    ("README.md", "python"): 1,
    ("README.md", "node"): 1,
    ("docs/quickstart.md", "python"): 2,
    ("docs/tutorials/python.md", "python"): 10,
    ("docs/tutorials/node.md", "node"): 10,
    ("docs/tutorials/web-page.md", "browser"): 2,
}
"""How many blocks of each page run, and where: change it with the page."""


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    kind: str  # "python", "node" or "browser"
    code: str

    @property
    def id(self) -> str:
        return f"{Path(self.page).stem}:{self.line}"

    @property
    def prints(self) -> list[str]:
        return [m["text"] for m in PRINTS.finditer(self.code)]


def fenced_blocks(text: str) -> Iterator[tuple[int, str, str, bool]]:
    """``(line, info, code, skipped)`` of each fenced block of a Markdown text (its first line is 1)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        fence, indent = opening["fence"], len(opening["indent"])
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not re.match(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", lines[j]):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        yield i + 1, opening["info"].lower(), "\n".join(body) + "\n", before == SKIP
        i = j + 1


def blocks_of(page: str) -> list[Block]:
    found = []
    for line, info, code, skipped in fenced_blocks((ROOT / page).read_text()):
        kind = KINDS.get(info)
        if kind is None or skipped:
            continue
        found.append(Block(page, line, "browser" if kind == "node" and page in BROWSER_PAGES else kind, code))
    return found


BLOCKS = [block for page in PAGES for block in blocks_of(page)]


def test_every_page_runs_the_blocks_it_should() -> None:
    counted: dict[tuple[str, str], int] = {}
    for block in BLOCKS:
        counted[block.page, block.kind] = counted.get((block.page, block.kind), 0) + 1
    assert counted == EXPECTED, "a page gained or lost a runnable block: update EXPECTED with it"
    for block in BLOCKS:
        assert block.prints, f"{block.page}:{block.line}: a block that runs says what it prints (# prints: ...)"
        assert HUB_IN_DOCS in block.code, f"{block.page}:{block.line}: a block dials {HUB_IN_DOCS}"


def test_the_fence_reader_finds_blocks_skips_and_languages() -> None:
    text = "intro\n\n```python\nprint(1)  # prints: 1\n```\n\n" + SKIP + "\n```js\npart(\n```\n\n````md\n```\n````\n"
    assert list(fenced_blocks(text)) == [
        (3, "python", "print(1)  # prints: 1\n", False),
        (8, "js", "part(\n", True),
        (12, "md", "```\n", False),
    ]


README_LINK = re.compile(r"\]\((?!https?:|mailto:|#)(?P<target>[^)\s]+)\)")


def test_the_readme_is_a_front_door() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150, "README.md is the front door: at most 150 lines; the rest goes in docs/"
    targets = [m["target"].partition("#")[0] for m in README_LINK.finditer(text)]
    assert targets, "the README links into the site"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README.md links to files that are not in the repository: {missing}"
    assert any(t.startswith("docs/") for t in targets)


def test_every_config_file_the_docs_show_is_one_kiln_reads(tmp_path: Path) -> None:
    """The ``/etc/kiln/hub.toml`` and ``provider.toml`` examples load through the settings
    ``kiln hub --config`` and ``kiln provider --config`` use (their files made to exist here)."""
    from kiln.cli.settings import HubSettings, ProviderSettings, load
    from kiln.protocol.errors import KilnError

    models: dict[str, type[HubSettings] | type[ProviderSettings]] = {
        "hub.toml": HubSettings,
        "provider.toml": ProviderSettings,
    }
    shown = 0
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for line, info, code, _ in fenced_blocks(page.read_text()):
            named = re.match(r"# /etc/kiln/(hub|provider)\.toml", code)
            if info != "toml" or named is None:
                continue
            shown += 1
            # Every file it names exists here, as on the machine it is written for.
            text = re.sub(r'"/etc/kiln/([^"]+)"', lambda m: f'"{tmp_path / m[1]}"', code)
            text = re.sub(r'"/var/lib/kiln/([^"]+)"', lambda m: f'"{tmp_path / "lib" / m[1]}"', text)
            for name in re.findall(r'"/etc/kiln/([^"]+)"', code):
                (tmp_path / name).write_text("kiln_secret\n")
            config = tmp_path / f"{named[1]}.toml"
            config.write_text(text)
            where = f"{page.relative_to(ROOT)}:{line}"
            try:
                load(models[config.name], {"config": str(config)})
            except KilnError as e:
                pytest.fail(f"{where}: kiln cannot read this config: {e.message}")
    assert shown >= 2, "the hub and provider guides show their config files"


def _hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", ROOT / "docs" / "hooks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _commands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _commands(sub)


def test_the_cli_reference_has_every_command_and_flag() -> None:
    from kiln.cli import build_parser

    page = _hook("cli_reference").render(build_parser())
    for command in _commands(build_parser()):
        assert f"`{command.prog}`" in page, command.prog
        for action in command._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}`" in page, f"{command.prog} {flag}"


def check_run(block: Block, returncode: int, output: str) -> None:
    where = f"{block.page}:{block.line}"
    assert returncode == 0, f"{where} exited with {returncode}:\n{output}"
    for text in block.prints:
        assert text in output, f"{where} should print {text!r}; it printed:\n{output}"


def test_a_block_that_fails_is_reported(tmp_path: Path) -> None:
    """The checks can fail: a wrong exit status or a missing line is named with its page and line."""
    block = Block("docs/x.md", 7, "python", "print('a')  # prints: b\n")
    with pytest.raises(AssertionError, match=r"docs/x.md:7 should print 'b'"):
        check_run(block, 0, "a\n")
    with pytest.raises(AssertionError, match=r"docs/x.md:7 exited with 1"):
        check_run(block, 1, "b\n")
