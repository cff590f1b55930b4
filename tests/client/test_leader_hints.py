"""NotLeader with a ``leader_addr`` hint, on every request path (fila-python 0.3.0 §3.5).

The real server sends the hint only on Consume (SERVER.md §14), but the
protocol allows it on any request; the client then sends the request again at
the leader once, and later requests go there too. The connection it leaves is
retired, not cut: requests still waiting on it get their own answers.
"""

from __future__ import annotations

from typing import Any

import pytest
from client_helpers import run

from fila import AccumulatorMode
from fila import AsyncClient
from fila import Client
from fila.protocol.constants import ErrorCode
from fila.protocol.constants import Opcode


@pytest.fixture
def pair(broker_factory: Any) -> tuple[Any, Any]:
    follower, leader = broker_factory(), broker_factory()
    for b in (follower, leader):
        with Client(b.address) as c:
            c.create_queue("q")
    return follower, leader


def _hint(follower: Any, leader: Any, opcode: int) -> None:
    follower.faults.fail_next(
        1, ErrorCode.NOT_LEADER, opcode, "not the leader", metadata={"leader_addr": leader.address}
    )


@pytest.mark.parametrize("mode", [AccumulatorMode.AUTO, AccumulatorMode.DISABLED])
def test_enqueue_follows_the_hint(pair: tuple[Any, Any], mode: AccumulatorMode) -> None:
    follower, leader = pair
    _hint(follower, leader, Opcode.ENQUEUE)
    with Client(follower.address, accumulator_mode=mode) as c:
        assert c.enqueue("q", None, b"x")
        assert c.enqueue("q", None, b"y")  # later requests go to the leader as well
        # Both messages are on the leader, none on the follower (it applied nothing).
        assert c.get_stats("q").depth == 2
    with Client(follower.address) as f:
        assert f.get_stats("q").depth == 0


def test_enqueue_many_follows_the_hint(pair: tuple[Any, Any]) -> None:
    follower, leader = pair
    _hint(follower, leader, Opcode.ENQUEUE)
    with Client(follower.address) as c:
        results = c.enqueue_many([("q", None, b"a"), ("q", None, b"b")])
        assert all(r.is_success for r in results)
        with Client(leader.address) as lc:
            consumer = lc.consume("q")
            msgs = [consumer.get(5), consumer.get(5)]
            assert all(m is not None for m in msgs)
            leader_client_stats = lc.get_stats("q")
            assert leader_client_stats.in_flight == 2
            consumer.close()


def test_admin_request_follows_the_hint_async(pair: tuple[Any, Any]) -> None:
    follower, leader = pair
    _hint(follower, leader, Opcode.GET_STATS)

    async def body() -> None:
        async with AsyncClient(follower.address) as c:
            await c.enqueue("q", None, b"only-on-follower")  # before the hint: stored on the follower
            stats = await c.get_stats("q")  # refused with the hint, answered by the leader
            assert stats.depth == 0
            await c.enqueue("q", None, b"on-leader")  # later requests go to the leader
            assert (await c.get_stats("q")).depth == 1

    run(body())
