"""Leaks: long runs of the same work leave no trace in memory, file descriptors or threads.

The broker runs in a child process, so the traced memory, ``/proc/self/fd``
and the thread list are the client's alone. Each test runs a warm-up first
(caches, interned strings, the first reconnect), then measures:

* message cycles: ``enqueue_nowait`` → the consumer's ``get`` → ``ack``, in
  rounds of 100 messages, on one client and one consumer;
* connection cycles: a new client connects, enqueues one message, opens a
  consumer, takes the message, acks it, and everything is closed.

Asserted, sync and asyncio: traced memory after a full collection grows by
at most :data:`GROWTH` (64 KiB) over the measured run — a leak of one bare
``object()`` per cycle (16 bytes plus its reference) exceeds it at 5,000
cycles, which was checked by injecting one; the open file
descriptors and the ``fila-*`` threads are exactly as before. Fast: 5,000
message cycles and 200 connection cycles; slow: 1,000,000 and 10,000.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fila import AsyncClient
from fila import Client

from .rel_helpers import ProcBroker
from .rel_helpers import fd_count
from .rel_helpers import fila_threads
from .rel_helpers import report
from .rel_helpers import run_async
from .rel_helpers import settled_memory
from .rel_helpers import traced
from .rel_helpers import watchdog

QUEUE = "leak"
PAYLOAD = b"x" * 200
ROUND = 100
GROWTH = 64 * 1024

CYCLES = [pytest.param(5_000, id="5k"), pytest.param(1_000_000, id="1M", marks=pytest.mark.slow)]
CONNECTS = [pytest.param(200, id="200"), pytest.param(10_000, id="10k", marks=pytest.mark.slow)]


State = tuple[int, int, list[str]]


def _check(what: str, flavour: str, count: int, before: State, after: State) -> None:
    growth = after[0] - before[0]
    report(
        what,
        flavour=flavour,
        cycles=count,
        growth=growth,
        fds_before=before[1],
        fds_after=after[1],
        threads=len(after[2]),
    )
    # Fails on a per-cycle leak of memory, of a socket (or any descriptor), or of a thread.
    assert growth <= GROWTH, f"{what}: traced memory grew by {growth} bytes over {count} cycles"
    assert after[1] == before[1], f"{what}: {before[1]} descriptors before, {after[1]} after"
    assert after[2] == before[2], f"{what}: threads {before[2]} before, {after[2]} after"


def _state() -> State:
    return settled_memory(), fd_count(), fila_threads()


@pytest.mark.parametrize("n", CYCLES)
def test_sync_message_cycles(proc_broker: ProcBroker, n: int) -> None:
    # Fails on traced-memory growth above GROWTH, or any change in open descriptors or fila threads, over the measured
    # cycles.
    def body() -> None:
        with traced(), Client(proc_broker.address, request_timeout=60) as client:
            client.create_queue(QUEUE)
            consumer = client.consume(QUEUE)

            def cycles(k: int) -> None:
                for _ in range(k // ROUND):
                    futs = [client.enqueue_nowait(QUEUE, None, PAYLOAD) for _ in range(ROUND)]
                    for f in futs:
                        f.result(60)
                    for _ in range(ROUND):
                        msg = consumer.get(timeout=60)
                        assert msg is not None
                        consumer.ack(msg)
                assert consumer.flush(60)

            cycles(2_000)
            before = _state()
            cycles(n)
            after = _state()
            consumer.close()
            _check("message cycles", "sync", n, before, after)
            assert client.get_stats(QUEUE).depth == 0

    watchdog(body, 3600 if n > 100_000 else 120)


@pytest.mark.parametrize("n", CYCLES)
def test_async_message_cycles(proc_broker: ProcBroker, n: int) -> None:
    # Fails on traced-memory growth above GROWTH, or any change in open descriptors or fila threads, over the measured
    # cycles.
    async def body() -> None:
        with traced():
            async with AsyncClient(proc_broker.address, request_timeout=60) as client:
                await client.create_queue(QUEUE)
                consumer = await client.consume(QUEUE)

                async def cycles(k: int) -> None:
                    for _ in range(k // ROUND):
                        futs = [client.enqueue_nowait(QUEUE, None, PAYLOAD) for _ in range(ROUND)]
                        await asyncio.gather(*futs)
                        for _ in range(ROUND):
                            msg = await consumer.get(timeout=60)
                            assert msg is not None
                            consumer.ack(msg)
                    assert await consumer.flush(60)

                await cycles(2_000)
                before = _state()
                await cycles(n)
                after = _state()
                await consumer.close()
                _check("message cycles", "asyncio", n, before, after)
                assert (await client.get_stats(QUEUE)).depth == 0

    run_async(body, 3600 if n > 100_000 else 120)


def _sync_connect_cycle(addr: str) -> None:
    with Client(addr) as client:
        client.enqueue(QUEUE, None, PAYLOAD)
        with client.consume(QUEUE) as consumer:
            msg = consumer.get(timeout=30)
            assert msg is not None
            consumer.ack(msg)
            assert consumer.flush(30)


@pytest.mark.parametrize("n", CONNECTS)
def test_sync_connect_cycles(proc_broker: ProcBroker, n: int) -> None:
    # Fails if a closed client or consumer leaves memory, a socket or a thread behind.
    with Client(proc_broker.address) as admin:
        admin.create_queue(QUEUE)

    def body() -> None:
        with traced():
            for _ in range(20):
                _sync_connect_cycle(proc_broker.address)
            before = _state()
            for _ in range(n):
                _sync_connect_cycle(proc_broker.address)
            after = _state()
        _check("connect cycles", "sync", n, before, after)

    watchdog(body, 3600 if n > 1000 else 120)
    with Client(proc_broker.address) as admin:
        stats = admin.get_stats(QUEUE)
        assert (stats.depth, stats.active_consumers) == (0, 0)


async def _async_connect_cycle(addr: str) -> None:
    async with AsyncClient(addr) as client:
        await client.enqueue(QUEUE, None, PAYLOAD)
        async with client.consume(QUEUE) as consumer:
            msg = await consumer.get(timeout=30)
            assert msg is not None
            consumer.ack(msg)
            assert await consumer.flush(30)


@pytest.mark.parametrize("n", CONNECTS)
def test_async_connect_cycles(proc_broker: ProcBroker, n: int) -> None:
    # Fails if a closed client or consumer leaves memory, a socket or a task's connection behind.
    with Client(proc_broker.address) as admin:
        admin.create_queue(QUEUE)

    async def body() -> Any:
        with traced():
            for _ in range(20):
                await _async_connect_cycle(proc_broker.address)
            before = _state()
            for _ in range(n):
                await _async_connect_cycle(proc_broker.address)
            after = _state()
        _check("connect cycles", "asyncio", n, before, after)

    run_async(body, 3600 if n > 1000 else 120)
    with Client(proc_broker.address) as admin:
        stats = admin.get_stats(QUEUE)
        assert (stats.depth, stats.active_consumers) == (0, 0)
