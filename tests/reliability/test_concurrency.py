"""Concurrency: many producers and consumers on one client, a fixed count of messages.

Sync: 8 producer threads (``enqueue``, AUTO batching) and 4 consumer
threads, each with its own :class:`fila.Consumer` of the same client.
asyncio: 100 producer tasks and 4 consumer tasks on one
:class:`fila.AsyncClient`. Every message is acked through its consumer's
batched ``ack``.

Proved: every produced id is consumed exactly once (our own id sets: the
produced set equals the consumed set and no id is seen twice — the queue's
30 s visibility timeout is far beyond the run, so a second delivery would be
a client or broker bug), every ack is applied (the double's stats end with
depth 0, nothing in flight, no consumer left), and nothing deadlocks (the
watchdog fails the test with every thread's stack after a generous bound).
Fast: 4,000 messages; slow: 100,000.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from fila import AsyncClient
from fila import Client

from .rel_helpers import report
from .rel_helpers import run_async
from .rel_helpers import wait_for
from .rel_helpers import watchdog

QUEUE = "conc"
SIZES = [pytest.param(4_000, id="4k"), pytest.param(100_000, id="100k", marks=pytest.mark.slow)]


def _check(broker: Any, n: int, produced: list[str], consumed: list[str], dups: list[str]) -> None:
    assert len(produced) == n and len(set(produced)) == n, "an enqueue lost or duplicated an id"
    # Fails on a message delivered twice or never.
    assert not dups, f"{len(dups)} messages were delivered twice, e.g. {dups[:3]}"
    assert set(consumed) == set(produced)
    stats = broker.stats(QUEUE)
    # Fails if an ack was lost (the message would still be in flight, then come back).
    assert (stats["depth"], stats["in_flight"]) == (0, 0), stats
    # The closed consumers' Disconnects reach the broker a moment later.
    wait_for(lambda: broker.stats(QUEUE)["active_consumers"] == 0, 10, "the consumers to be unregistered")


@pytest.mark.parametrize("n", SIZES)
def test_sync_8_producers_4_consumers(broker: Any, n: int) -> None:
    # Fails on a lost or duplicated id, a lost ack (depth/in_flight not 0), or a deadlock (watchdog).
    broker.create_queue(QUEUE)
    produced: list[str] = []
    consumed: list[str] = []
    dups: list[str] = []
    seen: set[str] = set()
    lock = threading.Lock()
    all_in = threading.Event()

    def body() -> None:
        with Client(broker.address, request_timeout=60) as client:

            def produce(t: int) -> None:
                for i in range(t, n, 8):
                    mid = client.enqueue(QUEUE, {"p": str(t)}, str(i).encode())
                    with lock:
                        produced.append(mid)

            def consume(c: int) -> None:
                with client.consume(QUEUE, buffer_size=64) as consumer:
                    while not all_in.is_set():
                        msg = consumer.get(timeout=0.1)
                        if msg is None:
                            continue
                        with lock:
                            if msg.id in seen:
                                dups.append(msg.id)
                            seen.add(msg.id)
                            consumed.append(msg.id)
                            if len(seen) == n:
                                all_in.set()
                        consumer.ack(msg)
                    assert consumer.flush(60)

            threads = [threading.Thread(target=produce, args=(t,), name=f"producer-{t}") for t in range(8)]
            threads += [threading.Thread(target=consume, args=(c,), name=f"consumer-{c}") for c in range(4)]
            start = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            report("concurrency", flavour="sync", n=n, seconds=round(time.monotonic() - start, 2))

    watchdog(body, 1800 if n > 10_000 else 120)
    _check(broker, n, produced, consumed, dups)


@pytest.mark.parametrize("n", SIZES)
def test_async_100_producers_4_consumers(broker: Any, n: int) -> None:
    # Fails on a lost or duplicated id, a lost ack (depth/in_flight not 0), or a blocked loop (watchdog).
    broker.create_queue(QUEUE)
    produced: list[str] = []
    consumed: list[str] = []
    dups: list[str] = []
    seen: set[str] = set()

    async def body() -> None:
        async with AsyncClient(broker.address, request_timeout=60) as client:
            all_in = asyncio.Event()

            async def produce(t: int) -> None:
                for i in range(t, n, 100):
                    produced.append(await client.enqueue(QUEUE, {"p": str(t)}, str(i).encode()))

            async def consume(c: int) -> None:
                async with client.consume(QUEUE, buffer_size=64) as consumer:
                    while not all_in.is_set():
                        msg = await consumer.get(timeout=0.1)
                        if msg is None:
                            continue
                        if msg.id in seen:
                            dups.append(msg.id)
                        seen.add(msg.id)
                        consumed.append(msg.id)
                        if len(seen) == n:
                            all_in.set()
                        consumer.ack(msg)
                    assert await consumer.flush(60)

            start = time.monotonic()
            await asyncio.gather(*(produce(t) for t in range(100)), *(consume(c) for c in range(4)))
            report("concurrency", flavour="asyncio", n=n, seconds=round(time.monotonic() - start, 2))

    run_async(body, 1800 if n > 10_000 else 120)
    _check(broker, n, produced, consumed, dups)
