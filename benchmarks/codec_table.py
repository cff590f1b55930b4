"""Print the codec benchmark table (markdown): pure vs Cython, ns per message.

Runs the workloads of ``codec_workloads.py`` with ``timeit`` (GC on), takes
the median and the minimum of the repeats, and prints one row per workload.
Usage: ``python benchmarks/codec_table.py [--repeat N] [--min-time SECONDS]``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import platform
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # the workloads, and this checkout's fila

from codec_workloads import WORKLOADS  # noqa: E402

from fila.protocol import pure  # noqa: E402


def measure(run: Callable[[], Any], units: int, repeat: int, min_time: float) -> tuple[float, float]:
    """(median, min) nanoseconds per unit."""
    gc.enable()
    timer = timeit.Timer(run)
    number, _ = timer.autorange()
    number = max(1, int(number * min_time / 0.2))
    times = [t / number / units * 1e9 for t in timer.repeat(repeat=repeat, number=number)]
    return statistics.median(times), min(times)


def fmt(ns: float) -> str:
    return f"{ns:,.0f}" if ns >= 100 else f"{ns:.1f}"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, Python {platform.python_version()} ({platform.python_implementation()}), {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per repeat, about")
    args = parser.parse_args()
    cython = importlib.import_module("fila._speedups._codec")
    print(f"Machine: {machine()}; median of {args.repeat} repeats (min in brackets), GC on.\n")
    print("| workload | pure ns/msg | cython ns/msg | ratio |")
    print("|---|---:|---:|---:|")
    for name, make in WORKLOADS.items():
        p_med, p_min = measure(*make(pure), args.repeat, args.min_time)
        c_med, c_min = measure(*make(cython), args.repeat, args.min_time)
        print(f"| {name} | {fmt(p_med)} ({fmt(p_min)}) | {fmt(c_med)} ({fmt(c_min)}) | {p_med / c_med:.1f}× |")


if __name__ == "__main__":
    main()
