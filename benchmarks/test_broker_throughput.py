"""Throughput of the test broker: enqueue → deliver → ack over loopback.

One producer connection sends batched Enqueue frames (pipelined, a bounded
window), one consumer connection acks everything it receives in one Ack
frame per read. Both use raw sockets and the codec. The numbers are printed
(run with ``-s``); nothing here asserts on time. ``FILA_BENCH_MESSAGES``
sets the message count (default 100 000), ``FILA_BENCH_BATCH`` the enqueue
batch size (default 100).

Two setups: the broker in a child process (``python -m fila.testing``; the
clients get their own core) and in-process on a background thread (what a
test suite using the ``fila_broker`` fixture sees).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from fila.protocol import IMPLEMENTATION
from fila.protocol import decode_delivery
from fila.protocol import encode_ack
from fila.protocol import encode_enqueue
from fila.protocol.constants import Opcode
from fila.protocol.messages import encode_message
from fila.protocol.pure import FrameReader
from fila.testing import Broker

MESSAGES = int(os.environ.get("FILA_BENCH_MESSAGES", "100000"))
BATCH = int(os.environ.get("FILA_BENCH_BATCH", "100"))
WINDOW = 8  # enqueue frames in flight
PAYLOAD = b"x" * 64
DEADLINE_S = 120.0


def _connect(host: str, port: int) -> tuple[socket.socket, FrameReader]:
    s = socket.create_connection((host, port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    s.sendall(encode_message("Handshake", 0, {"protocol_version": 1, "api_key": None}))
    reader = FrameReader()
    frames: list = []
    while not frames:
        frames = reader.feed(_recv(s, 65536))
    assert frames[0].opcode == Opcode.HANDSHAKE_OK
    return s, reader


def _recv(s: socket.socket, n: int) -> bytes:
    """``s.recv(n)``, then TCP_QUICKACK re-armed as the clients do (fila/_quickack.py): the broker
    keeps Nagle on, as the server does, and this measures the broker, not our delayed ACKs."""
    data = s.recv(n)
    if _QUICKACK is not None:
        s.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
    return data


_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def _run(host: str, port: int) -> dict[str, float]:
    admin, reader = _connect(host, port)
    admin.sendall(
        encode_message(
            "CreateQueueRequest",
            1,
            {"name": "bench", "on_enqueue_script": None, "on_failure_script": None, "visibility_timeout_ms": 0},
        )
    )
    while not reader.feed(_recv(admin, 65536)):
        pass
    admin.close()

    received = 0
    consumer_error: list[BaseException] = []
    consumer_ready = threading.Event()
    deadline = time.monotonic() + DEADLINE_S

    def consume() -> None:
        nonlocal received
        try:
            s, r = _connect(host, port)
            s.sendall(encode_message("ConsumeRequest", 1, {"queue": "bench"}))
            rid = 2
            ok = False
            while not ok:
                ok = any(f.opcode == Opcode.CONSUME_OK for f in r.feed(_recv(s, 65536)))
            consumer_ready.set()
            while received < MESSAGES and time.monotonic() < deadline:
                acks = []
                for f in r.feed(_recv(s, 1 << 20)):
                    if f.opcode == Opcode.DELIVERY:
                        acks.extend((m.queue, m.id) for m in decode_delivery(f.payload))
                if acks:
                    received += len(acks)
                    rid += 1
                    s.sendall(encode_ack(rid, acks))
            s.close()
        except BaseException as exc:
            consumer_error.append(exc)
            consumer_ready.set()

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    consumer_ready.wait(30)
    prod, pr = _connect(host, port)
    batch = [("bench", None, PAYLOAD)] * BATCH
    start = time.perf_counter()
    outstanding = 0
    results = 0
    for i in range(MESSAGES // BATCH):
        prod.sendall(encode_enqueue(i + 10, batch))
        outstanding += 1
        while outstanding >= WINDOW:
            for f in pr.feed(_recv(prod, 1 << 20)):
                if f.opcode == Opcode.ENQUEUE_RESULT:
                    outstanding -= 1
                    results += 1
    enqueued_at = time.perf_counter()
    while outstanding:
        for f in pr.feed(_recv(prod, 1 << 20)):
            if f.opcode == Opcode.ENQUEUE_RESULT:
                outstanding -= 1
    t.join(DEADLINE_S)
    end = time.perf_counter()
    prod.close()
    if consumer_error:
        raise consumer_error[0]
    total = (MESSAGES // BATCH) * BATCH
    return {
        "messages": float(received),
        "seconds": end - start,
        "end_to_end_msg_per_s": total / (end - start),
        "enqueue_msg_per_s": total / (enqueued_at - start),
    }


def _report(label: str, numbers: dict[str, float]) -> None:
    print(
        f"\n[{label}] codec={IMPLEMENTATION} {int(numbers['messages'])} messages of {len(PAYLOAD)} B, "
        f"batches of {BATCH}: {numbers['end_to_end_msg_per_s']:,.0f} msg/s enqueue→deliver→ack "
        f"({numbers['seconds']:.2f} s; producer side {numbers['enqueue_msg_per_s']:,.0f} msg/s)"
    )


@pytest.fixture
def broker_process() -> Iterator[tuple[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fila.testing", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        host, port = proc.stdout.readline().strip().rsplit(":", 1)
        yield host, int(port)
    finally:
        proc.terminate()
        proc.wait(10)


def test_throughput_broker_in_child_process(broker_process: tuple[str, int]) -> None:
    numbers = _run(*broker_process)
    _report("broker process", numbers)
    assert numbers["messages"] >= (MESSAGES // BATCH) * BATCH


def test_throughput_broker_in_thread() -> None:
    with Broker() as b:
        numbers = _run(b.host, b.port)
    _report("broker thread", numbers)
    assert numbers["messages"] >= (MESSAGES // BATCH) * BATCH
