"""``serve``: fila.testing in the foreground, with python -m fila.testing's options."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from cli_helpers import cli_env
from cli_helpers import one_line_error
from cli_helpers import run_cli

from fila.cli import EXIT_SERVER


@contextmanager
def serve(*args: str) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fila", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert proc.stdout is not None
        addr = proc.stdout.readline().strip()
        assert addr.startswith("127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        yield addr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_serve_prints_its_address_and_serves_until_interrupted() -> None:
    with serve() as addr:
        assert run_cli("--addr", addr, "queue", "create", "served").returncode == 0
        assert "served" in run_cli("--addr", addr, "queue", "list").stdout


def test_serve_passes_options_through() -> None:
    with serve("--api-key", "boot", "--no-nagle") as addr:
        one_line_error(run_cli("--addr", addr, "queue", "list"), EXIT_SERVER, "UnauthorizedError")
        assert run_cli("--addr", addr, "--api-key", "boot", "queue", "list").returncode == 0
