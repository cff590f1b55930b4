"""Runs the end-to-end benchmark briefly (both twins, broker in another process) and prints its table.

A smoke run of ``bench_e2e.py``: it checks that every scenario produced a
number, never how large it is. Run the script itself for real figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_e2e


@pytest.mark.slow
def test_client_e2e_table(capsys: pytest.CaptureFixture[str]) -> None:
    results = bench_e2e.run_all(3000, 64, 200.0, 1.0, ["--delivery-batch-size", "1"])
    assert {r["codec"] for r in results} <= {"cython", "python"} and len(results) == 2
    for r in results:
        for key in ("produce_nowait", "produce_async_nowait", "produce_many", "consume_ack", "latency"):
            assert key in r
    with capsys.disabled():
        print()
        print(bench_e2e.table(results, 64))
