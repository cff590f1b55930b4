"""Failure 5: transient cluster errors are retried, or surfaced with what they may mean.

* Right after CreateQueue the queue has no leader for a moment: enqueues get
  per-item NotLeader (``no leader available``), and Consume at another node
  QueueNotFound ``queue raft group not found``. Both pass by themselves.
* While a dead leader is not yet replaced, forwards fail per item with
  ``forward error: connect: …`` (nothing applied: retried) or
  ``forward error: rpc: connection closed`` (outcome unknown: surfaced, with
  ``may_have_been_applied=True``, never retried into a possible duplicate).
* A leader answers MessageNotFound to acks that took effect: not a warning.

The election window is widened (``election_delay``) so that every run hits it;
``cluster.counters`` shows it did.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from fila import AsyncClient
from fila import Client
from fila.errors import InternalServerError
from fila.testing import Cluster

from .cluster_helpers import FAST
from .cluster_helpers import addrs
from .cluster_helpers import run

WINDOW = 0.4  # seconds without a leader after CreateQueue


def test_sync_enqueue_right_after_create_queue(make_cluster: Any) -> None:
    """Fails if per-item NotLeader is final: the first enqueues would raise NotLeaderError."""
    cluster = make_cluster(election_delay=WINDOW)
    with Client(cluster.address, **FAST) as c:
        c.create_queue("q")
        first = c.enqueue("q", None, b"a")
        many = c.enqueue_many([("q", None, b"b"), ("q", None, b"c")])
        c.create_queue("r")
        fut = c.enqueue_nowait("r", None, b"d")
        assert c.flush(10)
        ids = {first, fut.result(0)} | {r.message_id for r in many}
    assert all(r.is_success for r in many)
    assert cluster.counters["no_leader"] >= 2
    assert ids == cluster.message_ids("q") | cluster.message_ids("r")


def test_async_enqueue_right_after_create_queue(make_cluster: Any) -> None:
    cluster = make_cluster(election_delay=WINDOW)

    async def body() -> set[str]:
        async with AsyncClient(cluster.address, **FAST) as c:
            await c.create_queue("q")
            first = await c.enqueue("q", None, b"a")
            many = await c.enqueue_many([("q", None, b"b"), ("q", None, b"c")])
            assert all(r.is_success for r in many)
            return {first} | {r.message_id for r in many}

    ids = run(body())
    assert cluster.counters["no_leader"] >= 1
    assert ids == cluster.message_ids("q")


def test_sync_consume_at_another_node_within_the_grace_period(make_cluster: Any) -> None:
    """Fails if QueueNotFound ``queue raft group not found`` is final for a consumer."""
    cluster = make_cluster(election_delay=WINDOW)
    with Client(addrs(cluster, 1), **FAST) as admin, Client(addrs(cluster, 2), **FAST) as c:
        admin.create_queue("q")  # made through node 1: node 2 has no Raft group for it yet
        with c.consume("q") as consumer:
            mid = c.enqueue("q", None, b"x")
            msg = consumer.get(5)
    assert msg is not None and msg.id == mid
    assert cluster.counters["raft_group_not_found"] >= 1


def test_async_consume_at_another_node_within_the_grace_period(make_cluster: Any) -> None:
    cluster = make_cluster(election_delay=WINDOW)

    async def body() -> None:
        async with AsyncClient(addrs(cluster, 1), **FAST) as admin, AsyncClient(addrs(cluster, 2), **FAST) as c:
            await admin.create_queue("q")
            async with c.consume("q") as consumer:
                mid = await c.enqueue("q", None, b"x")
                msg = await consumer.get(5)
                assert msg is not None and msg.id == mid

    run(body())
    assert cluster.counters["raft_group_not_found"] >= 1


@pytest.mark.parametrize("flavor", ["sync", "async"])
def test_forward_connect_errors_during_failover_are_retried(cluster: Cluster, flavor: str) -> None:
    """Fails if ``forward error: connect`` per item is final: the enqueue would raise InternalServerError."""
    cluster.create_queue("q", leader=3)
    cluster.kill(3)  # node 1 never forwarded to node 3: no cached connection, only connect errors
    started = time.monotonic()
    if flavor == "sync":
        with Client(addrs(cluster, 1), **FAST) as c:
            mid = c.enqueue("q", None, b"x")
            more = c.enqueue_many([("q", None, b"y")])[0].message_id
    else:

        async def body() -> tuple[str, str]:
            async with AsyncClient(addrs(cluster, 1), **FAST) as c:
                return await c.enqueue("q", None, b"x"), (await c.enqueue_many([("q", None, b"y")]))[0].message_id

        mid, more = run(body())
    assert time.monotonic() - started >= 0.3  # it waited for the failover (0.5 s here)
    assert cluster.counters["forward_connect"] >= 1
    assert {mid, more} == cluster.message_ids("q")


@pytest.mark.parametrize("flavor", ["sync", "async"])
def test_forward_rpc_closed_surfaces_as_maybe_applied(cluster: Cluster, flavor: str) -> None:
    """Fails if the client retried it (a possible duplicate) or hid that it may have been applied."""
    cluster.create_queue("q", leader=3)
    errors: list[BaseException] = []
    if flavor == "sync":
        with Client(addrs(cluster, 1), **FAST) as c:
            c.enqueue("q", None, b"before")  # node 1 now holds a connection to node 3
            cluster.kill(3)
            with pytest.raises(InternalServerError) as info:
                c.enqueue("q", None, b"x")
            errors.append(info.value)
    else:

        async def body() -> None:
            async with AsyncClient(addrs(cluster, 1), **FAST) as c:
                await c.enqueue("q", None, b"before")
                cluster.kill(3)
                result = (await c.enqueue_many([("q", None, b"x")]))[0]
                assert not result.is_success
                assert result.exception is not None
                errors.append(result.exception)

        run(body())
    (err,) = errors
    assert isinstance(err, InternalServerError)
    assert err.message == "forward error: rpc: connection closed"
    assert err.may_have_been_applied
    assert cluster.counters["forward_closed"] == 1


@pytest.mark.parametrize("flavor", ["sync", "async"])
def test_leader_message_not_found_on_acks_is_not_a_warning(
    cluster: Cluster, flavor: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Fails if the consumer logs the leader's MessageNotFound answers to its (effective) acks at WARNING."""
    cluster.create_queue("q", leader=2)
    caplog.set_level(logging.DEBUG, logger="fila")
    if flavor == "sync":
        with Client(addrs(cluster, 1), **FAST) as c:
            ids = [c.enqueue("q", None, b"%d" % i) for i in range(5)]
            with c.consume("q") as consumer:  # at the leader: its acks go there
                for _ in ids:
                    msg = consumer.get(5)
                    assert msg is not None
                    consumer.ack(msg)
                assert consumer.flush(5)
    else:

        async def body() -> None:
            async with AsyncClient(addrs(cluster, 1), **FAST) as c:
                for i in range(5):
                    await c.enqueue("q", None, b"%d" % i)
                async with c.consume("q") as consumer:
                    for _ in range(5):
                        msg = await consumer.get(5)
                        assert msg is not None
                        consumer.ack(msg)
                    assert await consumer.flush(5)

        run(body())
    assert cluster.counters["ack_not_found"] == 5  # the leader did answer MessageNotFound ...
    assert cluster.message_ids("q") == set()  # ... to acks that took effect
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "fila"]
    assert warnings == []
    assert any("not found" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
