"""A griffe extension for the API reference: what static reading of the sources misses.

* ``fila._surface.twin_of`` gives each method of AsyncClient / AsyncConsumer
  the docstring of its sync twin at import time; this does the same copy on
  griffe's model of the package.
* Client and AsyncClient take their constructor from the private ClientBase,
  whose docstring describes the parameters: it is appended to theirs.
* The docstrings use Sphinx roles (``:class:`~fila.errors.ConnectError```);
  MkDocs renders Markdown, so each role becomes a code span (``ConnectError``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

TWINS = (("client.Client", "aio.AsyncClient"), ("client.Consumer", "aio.AsyncConsumer"))
ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|data|exc|obj|const):`~?([^`]+)`")
BASE_SENTENCE = re.compile(r"\s*See :class:`ClientBase`\s+for the parameters\.")


def _short(match: re.Match[str]) -> str:
    target = match.group(1)
    if match.group(0).split("`", 1)[1].startswith("~"):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _walk(obj: griffe.Object) -> Any:
    for member in obj.members.values():
        if member.is_alias:
            continue
        yield member
        if member.is_module or member.is_class:
            yield from _walk(member)  # type: ignore[arg-type]


class TwinDocstrings(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != "fila":
            return
        for sync_path, async_path in TWINS:
            sync, twin = pkg[sync_path], pkg[async_path]
            for name, member in twin.members.items():
                source = sync.members.get(name)
                if member.docstring is None and source is not None and source.docstring is not None:
                    member.docstring = griffe.Docstring(source.docstring.value, parent=member)
        base = pkg["_surface.ClientBase"].docstring
        for path in ("client.Client", "aio.AsyncClient"):
            cls = pkg[path]
            if base is not None and cls.docstring is not None:
                text = BASE_SENTENCE.sub("", cls.docstring.value)
                cls.docstring = griffe.Docstring(f"{text}\n\n{base.value}", parent=cls)
        for obj in [pkg, *_walk(pkg)]:
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = ROLE.sub(_short, obj.docstring.value)
