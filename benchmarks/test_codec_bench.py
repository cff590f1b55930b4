"""pytest-benchmark suite: every codec workload on both twins in one run.

Numbers only, never a pass/fail on time. ``pytest benchmarks/test_codec_bench.py
--benchmark-group-by=group`` puts the twins side by side per workload.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest
from codec_workloads import WORKLOADS
from pytest_benchmark.fixture import BenchmarkFixture

from fila._env import extensions_disabled
from fila.protocol import pure


@pytest.fixture(scope="module", params=["python", "cython"])
def twin(request: pytest.FixtureRequest) -> ModuleType:
    """Each codec twin (the compiled one is skipped when it is not built or disabled)."""
    if request.param == "python":
        return pure
    if extensions_disabled():
        pytest.skip("FILA_NO_EXTENSIONS is set")
    try:
        return importlib.import_module("fila._speedups._codec")
    except ImportError as exc:
        pytest.skip(f"compiled codec not built: {exc}")


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_codec(benchmark: BenchmarkFixture, twin: ModuleType, workload: str) -> None:
    run, units = WORKLOADS[workload](twin)
    benchmark.group = workload
    benchmark.extra_info["units"] = units
    benchmark.extra_info["twin"] = twin.IMPLEMENTATION
    result = benchmark(run)
    assert result is not None
