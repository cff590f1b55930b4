"""Failure 3: a redirect without a hint.

Under the server's join-order rule node 1 never learns the client address of
a node that joined after it, so its NotLeader carries no ``leader_addr``,
indefinitely. The consumer must find the leader through GetStats
``leader_node_id`` (and the node ids learned in handshakes) instead of
retrying the same node until its request timeout.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from fila import AsyncClient
from fila import Client
from fila import ClientEvent
from fila.testing import Cluster

from .cluster_helpers import FAST
from .cluster_helpers import addrs
from .cluster_helpers import run

#: Far more than a located subscribe needs; a consumer that retried NotLeader until its request timeout
#: (10 s here) would take all of it, then fail.
BOUND = 3.0


@pytest.mark.parametrize("hints", ["join-order", "none"])
def test_sync_consumer_locates_the_leader(make_cluster: Any, hints: str) -> None:
    cluster = make_cluster(hints=hints)
    cluster.create_queue("other", leader=1)
    cluster.create_queue("q", leader=3)  # node 1 and node 2 cannot name node 3
    events: list[ClientEvent] = []
    with Client(addrs(cluster, 1, 2, 3), on_event=events.append, **FAST) as c:
        mid = c.enqueue("q", None, b"x")
        started = time.monotonic()
        with c.consume("q") as consumer:
            took = time.monotonic() - started
            msg = consumer.get(5)
    assert msg is not None and msg.id == mid
    assert took < BOUND, f"subscribing took {took:.2f}s"
    assert cluster.counters["not_leader"] >= 1  # it was refused without a hint first


@pytest.mark.parametrize("hints", ["join-order", "none"])
def test_async_consumer_locates_the_leader(make_cluster: Any, hints: str) -> None:
    cluster = make_cluster(hints=hints)
    cluster.create_queue("other", leader=1)
    cluster.create_queue("q", leader=3)

    async def body() -> float:
        async with AsyncClient(addrs(cluster, 1, 2, 3), **FAST) as c:
            mid = await c.enqueue("q", None, b"x")
            started = time.monotonic()
            async with c.consume("q") as consumer:
                took = time.monotonic() - started
                msg = await consumer.get(5)
                assert msg is not None and msg.id == mid
            return took

    took = run(body())
    assert took < BOUND, f"subscribing took {took:.2f}s"
    assert cluster.counters["not_leader"] >= 1


def test_hint_is_followed_when_there_is_one(cluster: Cluster) -> None:
    """Node 3 knows every address: its NotLeader names the leader and the consumer goes straight there."""
    cluster.create_queue("q", leader=1)
    events: list[ClientEvent] = []
    with Client(addrs(cluster, 3), on_event=events.append, **FAST) as c:
        with c.consume("q") as consumer:
            c.enqueue("q", None, b"x")
            assert consumer.get(5) is not None
    assert [e.address for e in events if e.kind == "redirected"] == [cluster.node(1).address]
