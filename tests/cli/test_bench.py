"""``bench``: sane numbers from the embedded broker (a separate process) and from a given server.

Never asserts on speed: only that every figure is there and consistent.
"""

from __future__ import annotations

import json
from typing import Any

from cli_helpers import one_line_error
from cli_helpers import run_cli

import fila
from fila import Client
from fila.cli import EXIT_CONNECTION
from fila.testing import Broker


def check_result(r: dict[str, Any], messages: int, mode: str) -> None:
    assert r["codec"] == fila.CODEC_IMPLEMENTATION
    assert r["fila_version"] == fila.__version__
    assert r["mode"] == mode and r["messages"] == messages and r["payload_size"] == 64
    for phase in ("produce", "consume"):
        p = r[phase]
        assert p["messages"] == messages
        assert p["seconds"] > 0 and p["msg_per_s"] > 0 and p["cpu_us_per_msg"] > 0
    lat = r["latency"]
    assert lat["messages"] > 0 and lat["interval_ms"] == 2.0
    assert 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["p999_ms"] <= lat["max_ms"]


def test_bench_json_against_the_embedded_broker() -> None:
    proc = run_cli("bench", "--messages", "2000", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress line when stderr is not a terminal
    r = json.loads(proc.stdout)
    check_result(r, 2000, "sync")
    assert r["embedded"] is True and r["server"] == "embedded"
    assert r["latency"]["messages"] == 500


def test_bench_async_with_several_producers_and_consumers_against_a_server(broker: Broker) -> None:
    proc = run_cli(
        "bench",
        "--addr",
        broker.address,
        "--async",
        "--messages",
        "1500",
        "--producers",
        "2",
        "--consumers",
        "3",
        "--latency-messages",
        "50",
        "--json",
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    check_result(r, 1500, "async")
    assert (r["producers"], r["consumers"], r["embedded"], r["server"]) == (2, 3, False, broker.address)
    with Client(broker.address) as c:  # the scratch queue and its DLQ are gone
        assert not [q.name for q in c.list_queues() if q.name.startswith("fila-bench")]


def test_bench_report_for_people(broker: Broker) -> None:
    proc = run_cli("bench", "--addr", broker.address, "-n", "1000", "--latency-messages", "30", timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("fila bench: 1,000 messages of 64 B, 1 producer, 1 consumer, Client (sync), codec ")
    assert lines[1] == f"server: {broker.address}"
    assert lines[3].split() == ["phase", "messages", "seconds", "msg/s", "client", "CPU", "µs/msg"]
    assert lines[4].split()[:2] == ["produce", "1,000"] and lines[5].split()[:2] == ["consume+ack", "1,000"]
    assert lines[-1].startswith("enqueue→delivery latency, 1 message every 2 ms (30 messages): p50 ")


def test_bench_against_an_unreachable_server() -> None:
    one_line_error(run_cli("bench", "--addr", "localhost:1"), EXIT_CONNECTION, "ConnectError")
