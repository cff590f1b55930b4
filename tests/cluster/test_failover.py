"""Failure 2 and failover under load: a node dies, the client carries on.

A client given every node's address survives the death of the node it was
connected to: requests move to another listed node (one sent on the dying
connection may fail with ``may_have_been_applied=True``, as on any lost
connection), consumers resubscribe at
the new leader (the survivors name the dead leader for ``failover_delay``
first). A client that knew only one address, or a consumer that kept
retrying the dead node, would never recover.

Under load (a producer and a consumer running through the kill of the
queue's leader): every confirmed message is consumed, messages whose ack was
confirmed before the kill never come back, and deliveries resume within
``RESUME_BOUND`` of the kill. Measured on the double with
``failover_delay=1.0``: about failover_delay + 0.1–0.3 s (the consumer's
reconnect backoff and the locate round trip).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from fila import AsyncClient
from fila import Client
from fila import ClientEvent
from fila.errors import FilaConnectionError
from fila.errors import FilaError
from fila.testing import Cluster

from .cluster_helpers import FAST
from .cluster_helpers import addrs
from .cluster_helpers import run
from .cluster_helpers import wait_until

FAILOVER = 1.0
#: Generous: the failover delay plus reconnect backoff (reconnect_max_delay=0.2) and scheduling noise.
RESUME_BOUND = FAILOVER + 4.0


@pytest.mark.parametrize("leader", [1, 2])
def test_sync_client_survives_the_death_of_its_node(cluster: Cluster, leader: int) -> None:
    """The client is connected to node 1; node 1 dies, leading the queue (1) or not (2)."""
    cluster.create_queue("q", leader=leader)
    events: list[ClientEvent] = []
    with Client(addrs(cluster, 1, 2, 3), on_event=events.append, **FAST) as c:
        assert c.node_id == 1
        with c.consume("q") as consumer:
            c.enqueue("q", None, b"before")
            first = consumer.get(5)
            assert first is not None
            consumer.ack(first)
            assert consumer.flush(5)
            cluster.kill(1)
            try:  # reconnects to node 2, retries until a leader is there
                mid = c.enqueue("q", None, b"after")
            except FilaConnectionError as exc:  # sent on the dying connection before the client saw it die
                assert exc.may_have_been_applied
                mid = c.enqueue("q", None, b"after")
            assert c.node_id != 1
            msg = consumer.get(10)
            assert msg is not None and msg.id == mid
            consumer.ack(msg)
    assert ("reconnected", cluster.node(2).address) in [(e.kind, e.address) for e in events]


@pytest.mark.parametrize("leader", [1, 2])
def test_async_client_survives_the_death_of_its_node(cluster: Cluster, leader: int) -> None:
    cluster.create_queue("q", leader=leader)

    async def body() -> None:
        async with AsyncClient(addrs(cluster, 1, 2, 3), **FAST) as c:
            async with c.consume("q") as consumer:
                await c.enqueue("q", None, b"before")
                first = await consumer.get(5)
                assert first is not None
                consumer.ack(first)
                assert await consumer.flush(5)
                await asyncio.get_running_loop().run_in_executor(None, cluster.kill, 1)
                try:
                    mid = await c.enqueue("q", None, b"after")
                except FilaConnectionError as exc:  # sent on the dying connection before the client saw it die
                    assert exc.may_have_been_applied
                    mid = await c.enqueue("q", None, b"after")
                assert c.node_id != 1
                msg = await consumer.get(10)
                assert msg is not None and msg.id == mid

    run(body())


class Load:
    """What a producer and a consumer saw around a kill: ids confirmed, received (with times), acked."""

    def __init__(self) -> None:
        self.confirmed: set[str] = set()
        self.uncertain: list[FilaError] = []
        self.received: list[tuple[float, str]] = []
        self.acked_before_kill: set[str] = set()
        self.killed_at = 0.0

    def check(self) -> float:
        """Assert the guarantees; the time from the kill to the first delivery after it."""
        seen = [mid for _, mid in self.received]
        missing = self.confirmed - set(seen)
        assert not missing, f"{len(missing)} confirmed messages never consumed"
        after = [(t, mid) for t, mid in self.received if t > self.killed_at]
        back = {mid for _, mid in after} & self.acked_before_kill
        assert not back, f"{len(back)} messages acked (and confirmed) before the kill came back"
        assert after, "no delivery after the kill"
        resumed = after[0][0] - self.killed_at
        assert resumed < RESUME_BOUND, f"deliveries resumed {resumed:.2f}s after the kill"
        for err in self.uncertain:  # only failures that may have been applied are allowed
            assert err.may_have_been_applied, err
        return resumed


def test_sync_failover_under_load(make_cluster: Any) -> None:
    cluster = make_cluster(failover_delay=FAILOVER, visibility_timeout_ms=60_000)
    cluster.create_queue("q", leader=2)
    load = Load()
    stop = threading.Event()
    with Client(addrs(cluster, 1, 2, 3), **FAST) as c:
        consumer = c.consume("q")

        def produce() -> None:
            i = 0
            while not stop.is_set():
                try:
                    load.confirmed.add(c.enqueue("q", None, b"%d" % i))
                except FilaError as exc:
                    load.uncertain.append(exc)
                i += 1
                time.sleep(0.005)

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        acked: set[str] = set()

        def take(until: float) -> None:
            while time.monotonic() < until:
                msg = consumer.get(0.05)
                if msg is not None:
                    load.received.append((time.monotonic(), msg.id))
                    consumer.ack(msg)
                    acked.add(msg.id)

        take(time.monotonic() + 0.5)
        assert consumer.flush(5)
        load.acked_before_kill = set(acked)
        load.killed_at = time.monotonic()
        cluster.kill(2)
        take(time.monotonic() + FAILOVER + 1.0)
        stop.set()
        producer.join(15)
        assert wait_until(lambda: take(time.monotonic() + 0.1) or load.confirmed <= {m for _, m in load.received})
        consumer.close()
    resumed = load.check()
    print(f"sync: deliveries resumed {resumed:.2f}s after the kill; {len(load.confirmed)} confirmed")


def test_async_failover_under_load(make_cluster: Any) -> None:
    cluster = make_cluster(failover_delay=FAILOVER, visibility_timeout_ms=60_000)
    cluster.create_queue("q", leader=2)
    load = Load()

    async def body() -> None:
        async with AsyncClient(addrs(cluster, 1, 2, 3), **FAST) as c:
            consumer = await c.consume("q")
            stop = asyncio.Event()

            async def produce() -> None:
                i = 0
                while not stop.is_set():
                    try:
                        load.confirmed.add(await c.enqueue("q", None, b"%d" % i))
                    except FilaError as exc:
                        load.uncertain.append(exc)
                    i += 1
                    await asyncio.sleep(0.005)

            async def take(until: float) -> None:
                while time.monotonic() < until:
                    msg = await consumer.get(0.05)
                    if msg is not None:
                        load.received.append((time.monotonic(), msg.id))
                        consumer.ack(msg)

            producer = asyncio.ensure_future(produce())
            await take(time.monotonic() + 0.5)
            assert await consumer.flush(5)
            load.acked_before_kill = {mid for _, mid in load.received}
            load.killed_at = time.monotonic()
            await asyncio.get_running_loop().run_in_executor(None, cluster.kill, 2)
            await take(time.monotonic() + FAILOVER + 1.0)
            stop.set()
            await producer
            deadline = time.monotonic() + 10
            while not load.confirmed <= {m for _, m in load.received} and time.monotonic() < deadline:
                await take(time.monotonic() + 0.1)
            await consumer.close()

    run(body())
    resumed = load.check()
    print(f"async: deliveries resumed {resumed:.2f}s after the kill; {len(load.confirmed)} confirmed")
