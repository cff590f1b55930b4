"""Deliveries never wait on our delayed ACK (the server's Nagle; README "Performance").

The real server, and ``fila.testing`` like it, leaves Nagle's algorithm on.
A consumer that acks each message through ``consumer.ack`` makes the server
write an AckResult and then, a moment later, the next Delivery; Nagle holds
that Delivery until our ACK of the AckResult arrives, and Linux delays that
ACK by up to 40 ms. A client that does nothing about it sees enqueue →
delivery medians of 20–40 ms at a low rate (22 ms measured against this
double, 41.6 ms against the real server); with ``TCP_QUICKACK`` re-armed after
each read it is well under a millisecond. The bound of 20 ms on the median of
50 messages sits between the two: a loaded machine adds single milliseconds,
not the tens that the stall costs on every other message.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import threading
import time

import pytest
from client_helpers import run

from fila import AsyncClient
from fila import Client
from fila.testing import Broker

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "TCP_QUICKACK"),
    reason="this platform has no TCP_QUICKACK; the README says what remains there",
)

COUNT = 50
GAP = 0.004  # a low rate: each message alone on the wire
BOUND_MS = 20.0


def _stamp() -> bytes:
    return repr(time.perf_counter()).encode()


def _latency(payload: bytes) -> float:
    return (time.perf_counter() - float(payload)) * 1000.0


def test_nagle_is_on_in_the_double(broker: Broker) -> None:
    # The premise: the double does not set TCP_NODELAY on accepted sockets (the server never does).
    assert broker.nagle is True


def test_sync_consumer_ack_does_not_wait_for_delayed_ack(broker: Broker) -> None:
    latencies: list[float] = []
    with Client(broker.address) as client:
        client.create_queue("lat")
        consumer = client.consume("lat")

        def read() -> None:
            for msg in consumer:
                latencies.append(_latency(msg.payload))
                consumer.ack(msg)
                if len(latencies) == COUNT:
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        for _ in range(COUNT):
            client.enqueue("lat", None, _stamp())
            time.sleep(GAP)
        reader.join(30)
        assert not reader.is_alive(), f"only {len(latencies)} of {COUNT} messages arrived"
        consumer.close()
    median = statistics.median(latencies)
    assert median < BOUND_MS, f"median enqueue→delivery {median:.1f} ms: deliveries wait on the delayed ACK"


def test_async_consumer_ack_does_not_wait_for_delayed_ack(broker: Broker) -> None:
    async def body() -> list[float]:
        latencies: list[float] = []
        async with AsyncClient(broker.address) as client:
            await client.create_queue("alat")
            consumer = await client.consume("alat")

            async def read() -> None:
                async for msg in consumer:
                    latencies.append(_latency(msg.payload))
                    consumer.ack(msg)
                    if len(latencies) == COUNT:
                        return

            reader = asyncio.ensure_future(read())
            for _ in range(COUNT):
                await client.enqueue("alat", None, _stamp())
                await asyncio.sleep(GAP)
            await asyncio.wait_for(reader, 30)
            await consumer.close()
        return latencies

    latencies = run(body())
    median = statistics.median(latencies)
    assert median < BOUND_MS, f"median enqueue→delivery {median:.1f} ms: deliveries wait on the delayed ACK"
