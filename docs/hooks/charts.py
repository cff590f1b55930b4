"""The performance charts: drawn with matplotlib from docs/performance/results.json.

As an MkDocs hook (mkdocs.yml ``hooks:``) it adds the charts to the site as
generated files at build time, so no image is committed. From a shell:

    python docs/hooks/charts.py OUTDIR             # write the SVGs to OUTDIR
    python docs/hooks/charts.py --sync-from-readme # rewrite results.json from README.md's tables

results.json holds the numbers of the README's Performance tables (the same
measurements: ``python benchmarks/codec_table.py`` and ``python
benchmarks/bench_e2e.py``); tests/test_docs.py checks that the two agree.
"""

from __future__ import annotations

import io
import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "performance" / "results.json"
README = ROOT / "README.md"
CHART_DIR = "performance"  # under docs/, next to results.json
CHARTS = ("codec.svg", "e2e-throughput.svg", "e2e-cpu.svg")  # what render() draws

# ------------------------------------------------------------------ README tables


def _number(cell: str) -> float:
    """``"2,662"`` → 2662.0, ``"86k msg/s"`` → 86000.0."""
    m = re.search(r"([\d,]+(?:\.\d+)?)\s*(k)?", cell)
    if not m:
        raise ValueError(f"no number in table cell {cell!r}")
    value = float(m.group(1).replace(",", ""))
    return value * 1000 if m.group(2) else value


def _tables(markdown: str) -> list[list[list[str]]]:
    """Every Markdown table: rows of stripped cells, header first, separator row dropped."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def _table(tables: list[list[list[str]]], first_header: str) -> list[list[str]]:
    for t in tables:
        if t[0][0].startswith(first_header):
            return t
    raise ValueError(f"README.md has no table whose first column is headed {first_header!r}")


def _pair(cell: str) -> tuple[float, float]:
    """``"39,025 · 6.64"`` → (39025.0, 6.64): messages per second and client CPU µs per message."""
    rate, cpu = cell.split("·")
    return _number(rate), _number(cpu)


def _e2e_row(r: list[str]) -> dict[str, Any]:
    """One end-to-end row: against the double (cython, pure), then the real server (cython, pure)."""
    out: dict[str, Any] = {"scenario": r[0]}
    for prefix, cells in (("", r[1:3]), ("server_", r[3:5])):
        for twin, cell in zip(("cython", "pure"), cells, strict=True):
            rate, cpu = _pair(cell)
            out[f"{prefix}{twin}_msg_per_s"] = rate
            out[f"{prefix}{twin}_cpu_us_per_msg"] = cpu
    return out


def results_from_readme(readme: str | None = None) -> dict[str, Any]:
    """The Performance tables of README.md as the results.json structure."""
    text = README.read_text(encoding="utf-8") if readme is None else readme
    tables = _tables(text[text.index("## Performance") :])
    codec = _table(tables, "workload")
    e2e = _table(tables, "scenario")
    broker = _table(tables, "broker runs")
    return {
        "codec": {
            "command": "python benchmarks/codec_table.py",
            "unit": "ns per message",
            "rows": [{"workload": r[0], "pure": _number(r[1]), "cython": _number(r[2])} for r in codec[1:]],
        },
        "e2e": {
            "command": "python benchmarks/bench_e2e.py --messages 50000 [--addr HOST:PORT]",
            "rows": [_e2e_row(r) for r in e2e[1:] if not r[1].endswith("ms")],  # latency rows are prose
        },
        "broker": {
            "command": "pytest benchmarks/test_broker_throughput.py -s",
            "rows": [
                {"setup": r[0], "cython_msg_per_s": _number(r[1]), "pure_msg_per_s": _number(r[2])} for r in broker[1:]
            ],
        },
    }


# ------------------------------------------------------------------ charts


def _label(text: str) -> str:
    return "\n".join(textwrap.wrap(text.replace("`", ""), 42))


def render(results: dict[str, Any]) -> dict[str, bytes]:
    """The charts as SVG bytes, by file name (deterministic output)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "fila-docs", "svg.fonttype": "none", "font.size": 9})
    out: dict[str, bytes] = {}

    def save(name: str, fig: Any) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
        plt.close(fig)
        out[name] = buf.getvalue()

    def hbars(name: str, labels: list[str], series: list[tuple[str, list[float]]], xlabel: str, log: bool) -> None:
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(labels) + 1.0))
        height = 0.8 / len(series)
        for i, (title, values) in enumerate(series):
            ys = [y + (i - (len(series) - 1) / 2) * height for y in range(len(labels))]
            ax.barh(ys, values, height=height, label=title)
        ax.set_yticks(range(len(labels)), [_label(t) for t in labels])
        ax.invert_yaxis()
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(series), frameon=False)
        save(name, fig)

    codec = results["codec"]["rows"]
    hbars(
        "codec.svg",
        [r["workload"] for r in codec],
        [("pure Python", [r["pure"] for r in codec]), ("Cython", [r["cython"] for r in codec])],
        "ns per message (log scale; lower is better)",
        log=True,
    )
    e2e = results["e2e"]["rows"]
    hbars(
        "e2e-throughput.svg",
        [r["scenario"] for r in e2e],
        [("pure Python", [r["pure_msg_per_s"] for r in e2e]), ("Cython", [r["cython_msg_per_s"] for r in e2e])],
        "messages per second (higher is better)",
        log=False,
    )
    hbars(
        "e2e-cpu.svg",
        [r["scenario"] for r in e2e],
        [
            ("pure Python", [r["pure_cpu_us_per_msg"] for r in e2e]),
            ("Cython", [r["cython_cpu_us_per_msg"] for r in e2e]),
        ],
        "client CPU µs per message (lower is better)",
        log=False,
    )
    assert tuple(out) == CHARTS, f"update CHARTS: {tuple(out)}"
    return out


def load_results() -> dict[str, Any]:
    return json.loads(RESULTS.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


# ------------------------------------------------------------------ MkDocs hook


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for name, data in render(load_results()).items():
        files.append(File.generated(config, f"{CHART_DIR}/{name}", content=data))
    return files


def main(argv: list[str]) -> int:
    if argv == ["--sync-from-readme"]:
        RESULTS.write_text(json.dumps(results_from_readme(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {RESULTS.relative_to(ROOT)} from README.md")
        return 0
    if len(argv) != 1 or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    outdir = Path(argv[0])
    outdir.mkdir(parents=True, exist_ok=True)
    for name, data in render(load_results()).items():
        (outdir / name).write_bytes(data)
        print(outdir / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
