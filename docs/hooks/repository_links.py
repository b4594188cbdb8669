"""A mkdocs hook: pages may include files of the repository and link to them.

- ``<!-- include: protocol/v1/PROTOCOL.md -->`` on a line of its own is replaced by that file
  (a path from the repository's root), so the spec and BENCHMARKS.md stay where they are and
  the site shows them as they are. Their relative links are read from where the file lives.
  Any other kind of file is put in as it is (inside a code fence, an example shown whole).
- A relative link to a file of the repository outside ``docs/`` (``../examples/browser.html``)
  becomes a link to the repository's web view when ``repo_url`` is set, else the path as code.
  A link to a file that does not exist is a warning, so ``mkdocs build --strict`` fails on it as
  it does on a broken link between pages.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.hooks.repository_links")

INCLUDE = re.compile(r"(?m)^<!-- include: (?P<path>\S+) -->[ \t]*$")
LINK = re.compile(r"(?<!!)\[(?P<label>[^\]\n]+)\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:|^#|^/", re.IGNORECASE)


def root_of(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).resolve().parent


def on_config(config: MkDocsConfig, **kwargs: Any) -> MkDocsConfig:
    """What ``mkdocs serve`` watches besides docs/: the included files and the code the references come from."""
    root = root_of(config)
    for path in ("protocol/v1/PROTOCOL.md", "BENCHMARKS.md", "python", "provider_runtime", "js-client/types"):
        if str(root / path) not in config.watch:
            config.watch.append(str(root / path))
    return config


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files, **kwargs: Any) -> str:
    root = root_of(config)
    docs = Path(config.docs_dir).resolve()
    here = (docs / page.file.src_path).parent
    repo_url = (config.repo_url or "").rstrip("/")

    def include(match: re.Match[str]) -> str:
        source = (root / match["path"]).resolve()
        if not source.is_relative_to(root) or not source.is_file():
            raise PluginError(f"{page.file.src_path}: cannot include {match['path']}: no such file in the repository")
        text = source.read_text(encoding="utf-8")
        # Markdown is read as a page (its links from where it lives); anything else is shown as it is.
        return relink(text, source.parent) if source.suffix == ".md" else text.rstrip("\n")

    def relink(text: str, base: Path) -> str:
        out: list[str] = []
        fenced = False
        for line in text.splitlines(keepends=True):
            if FENCE.match(line):
                fenced = not fenced
            out.append(line if fenced else LINK.sub(lambda m: rewrite(m, base), line))
        return "".join(out)

    def rewrite(match: re.Match[str], base: Path) -> str:
        label, target = match["label"], match["target"]
        if EXTERNAL.match(target):
            return match[0]
        path, _, anchor = target.partition("#")
        resolved = Path(posixpath.normpath((base / path).as_posix()))
        if resolved.is_relative_to(docs):
            if base == here:
                return match[0]  # a link between pages: mkdocs checks it
            relative = posixpath.relpath(resolved.as_posix(), here.as_posix())
            return f"[{label}]({relative}{'#' + anchor if anchor else ''})"
        if not resolved.is_relative_to(root) or not resolved.exists():
            log.warning("%s: the link %r names no file of the repository", page.file.src_path, target)
            return match[0]
        repo_path = resolved.relative_to(root).as_posix() + ("/" if resolved.is_dir() else "")
        if repo_url:
            kind = "tree" if resolved.is_dir() else "blob"
            return f"[{label}]({repo_url}/{kind}/main/{repo_path})"
        if label.strip("`") == repo_path or label.strip("`") == repo_path.rstrip("/"):
            return f"`{repo_path}`"
        return f"{label} (`{repo_path}`)"

    return relink(INCLUDE.sub(include, markdown), here)
