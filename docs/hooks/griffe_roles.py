"""A griffe extension: the Sphinx roles of Kiln's docstrings as links of the site.

The docstrings are written for ``help()`` and editors, with Sphinx roles
(``:class:`~kiln.ConnectionLost```, ``:meth:`push_image```) and ``::`` before an example.
mkdocstrings reads Markdown, so this turns each role into an optional cross-reference to the
object it names (its canonical path: ``kiln.ConnectionLost`` is
``kiln.protocol.errors.ConnectionLost``), shown as code, and each ``::`` into a colon. A role
that names nothing griffe knows stays plain code: a docstring cannot break the build, and an
optional reference to an object no page renders is shown without a link.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?P<role>class|meth|func|attr|data|mod|exc|obj):`(?P<target>[^`]+)`")
LITERAL_MARK = re.compile(r"(?m)(\S)::$|^\s*::\s*$")


def resolve(obj: griffe.Object, collection: Any, target: str) -> str | None:
    """The canonical path of ``target`` as named from ``obj``'s docstring, or None."""
    candidates = [target]
    first, _, rest = target.partition(".")
    try:
        candidates.append(obj.resolve(first) + (f".{rest}" if rest else ""))
    except (griffe.NameResolutionError, KeyError, ValueError):
        pass
    if obj.parent is not None:  # a method naming a sibling method or attribute
        candidates.append(f"{obj.parent.path}.{target}")
    for path in candidates:
        try:
            found = collection[path]
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
        try:
            return str(found.final_target.path if isinstance(found, griffe.Alias) else found.path)
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
    return None


def rewrite(obj: griffe.Object, collection: Any, text: str) -> str:
    def link(match: re.Match[str]) -> str:
        role, target = match["role"], match["target"].strip()
        short = target.startswith("~")
        target = target.lstrip("~.")
        shown = target.rpartition(".")[2] if short else target
        if role in ("meth", "func"):
            shown += "()"
        path = resolve(obj, collection, target)
        if path is None:
            return f"`{shown}`"
        return f'<autoref identifier="{path}" optional><code>{shown}</code></autoref>'

    text = ROLE.sub(link, text)
    return LITERAL_MARK.sub(lambda m: f"{m.group(1)}:" if m.group(1) else "", text)


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring of a package once it is loaded (when every name can resolve)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        seen: set[str] = set()
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if obj.path in seen:
                continue
            seen.add(obj.path)
            if obj.docstring is not None:
                obj.docstring.value = rewrite(obj, loader.modules_collection, obj.docstring.value)
            stack.extend(member for member in obj.members.values() if not isinstance(member, griffe.Alias))
