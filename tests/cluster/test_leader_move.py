"""Failure 4: leadership moves without a dead connection.

A stalled leader (``Cluster.freeze``) loses its queues and drops its consumer
streams with no frame, while its connections stay up and answer Ping: an idle
consumer sees only silence. It must notice within a few
``leader_check_interval``s (GetStats names another leader while messages
wait) and resubscribe at the new leader. Without the check it would wait
forever: the node never sends anything again on that subscription.
"""

from __future__ import annotations

import time
from typing import Any

from fila import AsyncClient
from fila import Client
from fila import ClientEvent
from fila.testing import Cluster

from .cluster_helpers import FAST
from .cluster_helpers import addrs
from .cluster_helpers import run
from .cluster_helpers import wait_until

FREEZE = 4.0  # longer than BOUND: a consumer that only recovers when the node thaws fails
#: A few leader_check_intervals (0.2 s) plus a resubscribe; well inside the freeze.
BOUND = 2.5


def _setup(cluster: Cluster) -> None:
    cluster.create_queue("other", leader=1)
    cluster.create_queue("q", leader=2)  # frozen below; node 3 (least loaded) takes over


def test_sync_idle_consumer_follows_the_new_leader(cluster: Cluster) -> None:
    _setup(cluster)
    events: list[ClientEvent] = []
    with Client(addrs(cluster, 1, 2, 3), on_event=events.append, **FAST) as c:
        with c.consume("q") as consumer:
            assert consumer.get(0.5) is None  # idle at node 2
            cluster.freeze(2, FREEZE)
            assert cluster.leader_of("q") == 3
            started = time.monotonic()
            ids = [c.enqueue("q", None, b"%d" % i) for i in range(5)]
            got: list[Any] = []
            while len(got) < 5 and time.monotonic() - started < BOUND:
                msg = consumer.get(0.05)
                if msg is not None:
                    got.append(msg)
                    consumer.ack(msg)
            took = time.monotonic() - started
            # The event follows the ConsumeOk, which may arrive in the same read as the first deliveries.
            wait_until(lambda: any(e.kind == "resubscribed" for e in events), 5)
    assert sorted(m.id for m in got) == sorted(ids), f"received {len(got)} of 5 within {took:.2f}s"
    kinds = [(e.kind, e.address) for e in events if e.kind in ("subscription_lost", "resubscribed")]
    assert kinds == [("subscription_lost", cluster.node(2).address), ("resubscribed", cluster.node(3).address)]


def test_async_idle_consumer_follows_the_new_leader(cluster: Cluster) -> None:
    _setup(cluster)

    async def body() -> tuple[list[str], list[str], float]:
        async with AsyncClient(addrs(cluster, 1, 2, 3), **FAST) as c:
            async with c.consume("q") as consumer:
                assert await consumer.get(0.5) is None
                cluster.freeze(2, FREEZE)
                started = time.monotonic()
                ids = [await c.enqueue("q", None, b"%d" % i) for i in range(5)]
                got: list[str] = []
                while len(got) < 5 and time.monotonic() - started < BOUND:
                    msg = await consumer.get(0.05)
                    if msg is not None:
                        got.append(msg.id)
                        consumer.ack(msg)
                return ids, got, time.monotonic() - started

    ids, got, took = run(body())
    assert sorted(got) == sorted(ids), f"received {len(got)} of 5 within {took:.2f}s"
