"""Helpers for the command-line tests: run ``python -m fila`` as a subprocess and check its errors.

Every command runs in a child interpreter that imports the same ``fila`` as
this test process (source tree or installed wheel) and inherits
``FILA_NO_EXTENSIONS``, so the suite exercises the CLI on the active twin.
``FILA_ADDR`` and ``FILA_API_KEY`` are never inherited from the outer shell.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import fila

FILA_HOME = str(Path(fila.__file__).resolve().parent.parent)


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FILA_ADDR", "FILA_API_KEY", "PYTHONPATH")}
    env["PYTHONPATH"] = FILA_HOME
    env.update(extra or {})
    return env


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python -m fila ARGS``; stdout and stderr as text."""
    proc = subprocess.run(
        [sys.executable, "-m", "fila", *args],
        input=input if input is not None else b"",
        capture_output=True,
        env=cli_env(env),
        timeout=timeout,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
    )


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """Assert exit status ``code`` and exactly one line on stderr (no traceback) containing each needle."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
