"""Backpressure: a slow consumer facing a large backlog keeps the client's memory bounded.

The broker runs in a child process (its memory is not the client's). It
holds ``n`` ready messages of 1 KiB; a consumer with ``buffer_size=B``
handles messages slowly (a short pause per message stands for the work).
Proved, sync and asyncio:

* the consumer's buffer fills to ``B`` and reading stops there (TCP
  backpressure), whatever the backlog;
* while it is stopped, enqueues on the client's other connection (single
  calls and an ``enqueue_many``) still complete;
* while the consumer works, the client's traced memory (tracemalloc peak
  above the settled baseline) stays under
  ``BOUND = (B + RECV / SIZE) × (SIZE + 512) × 2 + 2 × RECV + 1 MiB``: the
  most messages the consumer can hold (its buffer, plus what one more socket
  read carries before reading stops: ``RECV`` = 256 KiB, the asyncio
  transport's read size; the sync driver reads 64 KiB) with their
  objects, twice over, plus two socket reads, plus a fixed allowance for the
  client's own objects and the producer's frames. It does not depend on
  ``n``: the slow variant (1,000,000 ready messages) asserts the same bound;
* ``flush()`` (and ``close()``) must read past the deliveries queued ahead of
  the ack answers on the consumer's connection, so reading resumes while
  they wait: that phase is bounded by the transport, not by ``B`` —
  ``BOUND + PIPE``, where ``PIPE`` is the kernel's largest receive and send
  buffers (``tcp_rmem``/``tcp_wmem`` maxima) plus the broker's 64 + 256
  queued deliveries. Both peaks are reported.

What would fail it: a consumer that keeps reading into an unbounded buffer,
a reader blocked by the paused consumer (enqueues would hang: the watchdog
fails the test), or per-message garbage kept alive.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc

import pytest

from fila import AsyncClient
from fila import Client

from .rel_helpers import ProcBroker
from .rel_helpers import async_wait_for
from .rel_helpers import report
from .rel_helpers import run_async
from .rel_helpers import settled_memory
from .rel_helpers import traced
from .rel_helpers import wait_for
from .rel_helpers import watchdog

QUEUE = "bp"
SIZE = 1024
B = 256
RECV = 256 * 1024
BOUND = (B + RECV // SIZE) * (SIZE + 512) * 2 + 2 * RECV + 1024 * 1024


def _pipe() -> int:
    """Bytes the transport can hold between the broker and the client (see the module docstring)."""
    total = (64 + 256) * (SIZE + 200)
    for name in ("tcp_rmem", "tcp_wmem"):
        try:
            with open(f"/proc/sys/net/ipv4/{name}") as f:
                total += int(f.read().split()[2])
        except OSError:  # pragma: no cover - not Linux
            total += 32 * 1024 * 1024
    return total


PIPE = _pipe()
HANDLE = 1_000  # messages handled slowly while measuring
PRODUCE = 500  # enqueues on the other connection while the consumer is stopped

SIZES = [pytest.param(20_000, id="20k"), pytest.param(1_000_000, id="1M", marks=pytest.mark.slow)]


def _preload(client: Client, n: int) -> None:
    client.create_queue(QUEUE)
    body = b"p" * SIZE
    for start in range(0, n, 10_000):
        results = client.enqueue_many([(QUEUE, None, body)] * min(10_000, n - start), timeout=120)
        assert all(r.is_success for r in results)


@pytest.mark.parametrize("n", SIZES)
def test_sync_slow_consumer(n: int) -> None:
    with ProcBroker() as broker, traced():

        def body() -> dict[str, int]:
            with Client(broker.address, request_timeout=120) as client:
                _preload(client, n)
                extra = [(QUEUE, None, b"e" * 100)] * PRODUCE
                base = settled_memory()
                tracemalloc.reset_peak()
                with client.consume(QUEUE, buffer_size=B) as consumer:
                    # The buffer fills to B and the consumer stops reading (it holds no more than B).
                    wait_for(lambda: consumer.buffered >= B, 30, "the consumer buffer to fill")
                    stats = client.get_stats(QUEUE)
                    # Enqueues on the other connection complete while the consumer is stopped.
                    for _ in range(20):
                        client.enqueue(QUEUE, None, b"single")
                    assert all(r.is_success for r in client.enqueue_many(extra))
                    assert consumer.buffered <= B + RECV // SIZE  # what one more socket read can carry
                    for _ in range(HANDLE):
                        msg = consumer.get(timeout=30)
                        assert msg is not None
                        time.sleep(0.0002)  # the slow work (not a wait for a condition)
                        consumer.ack(msg)
                    steady = tracemalloc.get_traced_memory()[1] - base
                    assert consumer.flush(30)
                flush = tracemalloc.get_traced_memory()[1] - base
                return {
                    "peak": steady,
                    "flush_peak": flush,
                    "ready": stats.depth - stats.in_flight,
                    "in_flight": stats.in_flight,
                }

        numbers = watchdog(body, 600 if n > 100_000 else 120)
    report("backpressure", flavour="sync", n=n, bound=BOUND, pipe=PIPE, **numbers)
    # Fails if the client's memory followed the backlog instead of the buffer.
    assert numbers["peak"] <= BOUND, numbers
    assert numbers["flush_peak"] <= BOUND + PIPE, numbers


@pytest.mark.parametrize("n", SIZES)
def test_async_slow_consumer(n: int) -> None:
    # Fails if the asyncio consumer keeps reading past its buffer (peak above BOUND), if enqueues hang behind the
    # paused consumer (watchdog), or if flush reads beyond the transport (BOUND + PIPE).
    with ProcBroker() as broker, traced():
        with Client(broker.address, request_timeout=120) as loader:
            _preload(loader, n)

        async def body() -> dict[str, int]:
            async with AsyncClient(broker.address, request_timeout=120) as client:
                extra = [(QUEUE, None, b"e" * 100)] * PRODUCE
                base = settled_memory()
                tracemalloc.reset_peak()
                async with client.consume(QUEUE, buffer_size=B) as consumer:
                    await async_wait_for(lambda: consumer.buffered >= B, 30, "the consumer buffer to fill")
                    stats = await client.get_stats(QUEUE)
                    await asyncio.gather(*(client.enqueue(QUEUE, None, b"single") for _ in range(20)))
                    assert all(r.is_success for r in await client.enqueue_many(extra))
                    assert consumer.buffered <= B + RECV // SIZE
                    for _ in range(HANDLE):
                        msg = await consumer.get(timeout=30)
                        assert msg is not None
                        await asyncio.sleep(0.0002)  # the slow work
                        consumer.ack(msg)
                    steady = tracemalloc.get_traced_memory()[1] - base
                    assert await consumer.flush(30)
                flush = tracemalloc.get_traced_memory()[1] - base
                return {
                    "peak": steady,
                    "flush_peak": flush,
                    "ready": stats.depth - stats.in_flight,
                    "in_flight": stats.in_flight,
                }

        numbers = run_async(body, 600 if n > 100_000 else 120)
    report("backpressure", flavour="asyncio", n=n, bound=BOUND, pipe=PIPE, **numbers)
    assert numbers["peak"] <= BOUND, numbers
    assert numbers["flush_peak"] <= BOUND + PIPE, numbers
