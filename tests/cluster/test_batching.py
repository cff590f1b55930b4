"""Failure 1: batches through a non-leader are truncated by today's servers.

A forwarded (or replicated) Enqueue/Ack keeps only its first item while the
result reports every item ok. On a cluster node the client therefore sends one
item per frame (``cluster_batching=False``, the default): every id it
confirms exists. A client that batched would confirm ids that exist nowhere;
``cluster_batching=True`` shows that happening against the double.
"""

from __future__ import annotations

from typing import Any

import pytest

from fila import AsyncClient
from fila import Client
from fila.testing import Cluster

from .cluster_helpers import FAST
from .cluster_helpers import addrs
from .cluster_helpers import run
from .cluster_helpers import wait_until

N = 200


def _produce_sync(c: Client) -> list[str]:
    ids = [r.message_id for r in c.enqueue_many([("q", None, b"m%d" % i) for i in range(N)])]
    futs = [c.enqueue_nowait("q", None, b"n%d" % i) for i in range(N)]  # the accumulator batches these
    assert c.flush(10)
    return ids + [f.result(0) for f in futs]


async def _produce_async(c: AsyncClient) -> list[str]:
    ids = [r.message_id for r in await c.enqueue_many([("q", None, b"m%d" % i) for i in range(N)])]
    futs = [c.enqueue_nowait("q", None, b"n%d" % i) for i in range(N)]
    assert await c.flush(10)
    return ids + [f.result() for f in futs]


@pytest.mark.parametrize("flavor", ["sync", "async"])
def test_every_confirmed_id_exists(cluster: Cluster, flavor: str) -> None:
    """Fails on a client that puts several items in one frame: the follower forwards only the first."""
    cluster.create_queue("q", leader=2)
    if flavor == "sync":
        with Client(addrs(cluster, 1), **FAST) as c:  # node 1: every request is forwarded
            ids = _produce_sync(c)
    else:

        async def body() -> list[str]:
            async with AsyncClient(addrs(cluster, 1), **FAST) as c:
                return await _produce_async(c)

        ids = run(body())
    assert len(ids) == len(set(ids)) == 2 * N
    assert set(ids) == cluster.message_ids("q")
    assert cluster.counters["truncated"] == 0


@pytest.mark.parametrize("flavor", ["sync", "async"])
def test_cluster_batching_shows_the_truncation(cluster: Cluster, flavor: str) -> None:
    """``cluster_batching=True`` batches again; against the server's truncation, confirmed ids go missing."""
    cluster.create_queue("q", leader=2)
    if flavor == "sync":
        with Client(addrs(cluster, 1), cluster_batching=True, **FAST) as c:
            ids = _produce_sync(c)
    else:

        async def body() -> list[str]:
            async with AsyncClient(addrs(cluster, 1), cluster_batching=True, **FAST) as c:
                return await _produce_async(c)

        ids = run(body())
    stored = cluster.message_ids("q")
    assert len(ids) == 2 * N and stored < set(ids)
    assert len(stored) <= N  # enqueue_many alone sent N items in one frame and stored one
    assert cluster.counters["truncated"] == 2 * N - len(stored)


@pytest.mark.parametrize("batching", [False, True])
def test_ack_many_through_a_follower(cluster: Cluster, batching: bool) -> None:
    """Acks are forwarded too: one per frame removes every message; a batch would remove only its first."""
    cluster.create_queue("q", leader=2)
    with Client(addrs(cluster, 1), **FAST) as producer:
        producer.enqueue_many([("q", None, b"%d" % i) for i in range(20)])
    with Client(addrs(cluster, 1), cluster_batching=batching, **FAST) as c:
        with c.consume("q") as consumer:  # subscribed at the leader (node 2)
            msgs: list[Any] = []
            assert wait_until(lambda: msgs.extend(filter(None, [consumer.get(0.05)])) or len(msgs) == 20)
            errors = c.ack_many(msgs)  # on the client's connection: node 1 forwards them
    assert errors == [None] * 20  # a forwarded ack always answers ok ...
    left = cluster.stats("q")
    assert left is not None
    # ... but only one item per forwarded frame takes effect
    assert left["depth"] == (19 if batching else 0)
