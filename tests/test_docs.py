"""The documentation: the API reference covers the public API, links stay inside the repository,
the examples the guides include run (twice: they are idempotent).

Reads the Markdown and mkdocs.yml as text; MkDocs itself is not needed
(``bash scripts/docs`` builds the site, strictly, in CI).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import runpy
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import fila

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
DIRECTIVE = re.compile(r"^:::\s+([\w.]+)\s*$", re.MULTILINE)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")

pytestmark = pytest.mark.skipif(not DOCS.is_dir(), reason="no docs/ here (an installed copy of the tests)")


def _charts() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fila_docs_charts", DOCS / "hooks" / "charts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _resolve(dotted: str) -> Any:
    """Import the longest module prefix of ``dotted``, then getattr the rest."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _reference_directives() -> list[str]:
    return [m.group(1) for page in sorted(REFERENCE.glob("*.md")) for m in DIRECTIVE.finditer(page.read_text("utf-8"))]


def test_every_public_name_is_in_the_api_reference() -> None:
    """Each name of ``fila.__all__`` has a ``::: fila.NAME`` entry (or one for the same object elsewhere)."""
    documented = set(_reference_directives())
    missing = []
    for name in fila.__all__:
        if f"fila.{name}" in documented:
            continue
        obj = getattr(fila, name)
        if any(d.rsplit(".", 1)[-1] == name and _resolve(d) is obj for d in documented):
            continue
        missing.append(name)
    assert not missing, f"not in docs/reference/*.md (add a '::: fila.NAME' line): {missing}"


@pytest.mark.parametrize("dotted", sorted(set(_reference_directives()) if DOCS.is_dir() else []))
def test_reference_entries_resolve(dotted: str) -> None:
    _resolve(dotted)


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def _links(path: Path) -> list[str]:
    text = INLINE_CODE.sub("", FENCE.sub("", path.read_text("utf-8")))
    return [m.group(1) for m in LINK.finditer(text)]


@pytest.mark.parametrize("path", _markdown_files() if DOCS.is_dir() else [], ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_inside_the_repository(path: Path) -> None:
    """Relative links point at files of this repository (docs pages: inside docs/); none at ../shared."""
    text = path.read_text("utf-8")
    assert "../shared" not in text, f"{path.name} refers to ../shared, which a clone does not have"
    charts = _charts()
    generated = {DOCS / charts.CHART_DIR / name for name in charts.CHARTS}
    inside = DOCS if path.is_relative_to(DOCS) else ROOT
    bad = []
    for target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http:, https:, mailto: ..., or an anchor on the same page
        resolved = (path.parent / target.split("#", 1)[0]).resolve()
        if not resolved.is_relative_to(inside) or not (resolved.exists() or resolved in generated):
            bad.append(target)
    where = "docs/" if inside == DOCS else "the repository"
    assert not bad, f"{path.relative_to(ROOT)}: links to missing files, or to files outside {where}: {bad}"


def test_nav_pages_exist() -> None:
    nav = re.findall(r":\s*([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text("utf-8"), re.MULTILINE)
    assert nav, "mkdocs.yml has no nav"
    missing = [page for page in nav if not (DOCS / page).is_file()]
    assert not missing, f"mkdocs.yml's nav names pages that do not exist under docs/: {missing}"


def test_readme_marks_the_differences_list_for_the_docs() -> None:
    """docs/guides/testing.md includes README's list of fila.testing's differences between these markers."""
    readme = (ROOT / "README.md").read_text("utf-8")
    start, end = "--8<-- [start:differences]", "--8<-- [end:differences]"
    assert readme.count(start) == 1 and readme.count(end) == 1, "README.md lost a differences marker"
    section = readme[readme.index(start) : readme.index(end)]
    assert section.count("\n* ") >= 3, "the marked README section no longer holds the list of differences"


def test_performance_results_match_the_readme_tables() -> None:
    charts = _charts()
    committed = json.loads(charts.RESULTS.read_text("utf-8"))
    assert committed == charts.results_from_readme(), (
        "docs/performance/results.json differs from README.md's Performance tables: "
        "run `python docs/hooks/charts.py --sync-from-readme`"
    )


EXAMPLES = ["produce", "consume", "admin", "errors", "auth", "tls"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_twice_against_one_broker(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each script in examples/ (included by the guides) works, and works again on the same broker."""
    from fila.testing import Broker
    from fila.testing import lua_available

    if name == "consume" and not lua_available():
        pytest.skip("examples/consume.py's on_failure hook is Lua: the test broker needs lupa")
    if name == "tls":
        pytest.importorskip("cryptography")
    path = ROOT / "examples" / f"{name}.py"
    with Broker(api_key="bootstrap-key" if name == "auth" else None) as broker:
        for _ in range(2):
            monkeypatch.setattr(sys, "argv", [str(path), broker.address])
            runpy.run_path(str(path), run_name="__main__")
