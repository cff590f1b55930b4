"""A 0.3.0-style user program (program_v030.py) runs unchanged, as a separate process, on the active twin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fila.testing import Broker

PROGRAM = Path(__file__).with_name("program_v030.py")

EXPECTED = """\
enqueued 3
enqueue_many [True, False] error 0x01
got order-0 0 0
got order-1 1 0
got order-2 2 0
got bulk - 0
stats 0 0
queues ['orders', 'orders.dlq']
queue not found: ok
message not found: ok
config fast {'app.mode': 'fast'}
acl [('produce', 'orders'), ('consume', 'orders')]
keys ['svc']
redrive 0
deleted True
linger id 36
async got evt click True
async depth 0
async error QueueNotFoundError
done
"""


def test_030_program_runs_unchanged(broker: Broker) -> None:
    env = dict(os.environ)  # FILA_NO_EXTENSIONS passes through: the program runs on this run's twin
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).parents[2]), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, str(PROGRAM), f"127.0.0.1:{broker.port}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == EXPECTED, proc.stdout + proc.stderr
