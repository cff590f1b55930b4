"""The cluster double itself: each rule of shared/SERVER.md §14 / §16.3 it claims to reproduce.

Checked with plain FIBP connections (:class:`Raw`), so no client logic hides
what a node answers.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from fila import Client
from fila.protocol.constants import ErrorCode
from fila.testing import Cluster

from .cluster_helpers import FAST
from .cluster_helpers import Raw
from .cluster_helpers import wait_until

NO_SCRIPT: dict[str, Any] = {"on_enqueue_script": None, "on_failure_script": None, "visibility_timeout_ms": 0}


def _consume(node: Any, queue: str) -> tuple[int, dict[str, Any]]:
    with Raw(node.address) as r:
        return r.call("ConsumeRequest", {"queue": queue})


def test_node_ids_leaders_and_stats(cluster: Cluster) -> None:
    for b in cluster.nodes:
        with Raw(b.address) as r:
            assert r.node_id == b.node_id
    with Client(cluster.address, **FAST) as c:
        for name in ("a", "b", "c", "d"):
            c.create_queue(name)
        leaders = [cluster.wait_for_leader(name) for name in "abcd"]
        assert leaders == [1, 2, 3, 1]  # the least-loaded node, then the lowest id
        stats = c.get_stats("b")
        assert (stats.leader_node_id, stats.replication_count) == (2, 3)
        listed = {q.name: q.leader_node_id for q in c.list_queues()}
        assert listed == {"a": 1, "b": 2, "c": 3, "d": 1, "a.dlq": 0, "b.dlq": 0, "c.dlq": 0, "d.dlq": 0}
        assert c.get_stats("a.dlq").leader_node_id == 0
    with Raw(cluster.node(1).address) as r:
        r.enqueue([("b", {}, b"x"), ("a", {}, b"y")])
        # Only the leader's local scheduler holds a queue's messages: a follower reports it empty.
        assert r.call("GetStatsRequest", {"queue": "b"})[1]["depth"] == 0
        assert r.call("GetStatsRequest", {"queue": "a"})[1]["depth"] == 1
    with Raw(cluster.node(2).address) as r:
        assert r.call("GetStatsRequest", {"queue": "b"})[1]["depth"] == 1
        listed = {q["name"]: q["depth"] for q in r.call("ListQueuesRequest")[1]["queues"]}
        assert (listed["a"], listed["b"]) == (0, 1)


@pytest.mark.parametrize("hints", ["join-order", "all", "none"])
def test_consume_at_a_follower_gets_not_leader(make_cluster: Any, hints: str) -> None:
    cluster = make_cluster(hints=hints)
    for name, leader in (("on1", 1), ("on3", 3)):
        cluster.create_queue(name, leader=leader)
    expected = {
        # (queue, asked node): does the NotLeader name the leader?
        ("on1", 2): hints != "none",
        ("on1", 3): hints != "none",
        ("on3", 1): hints == "all",  # under join-order node 1 never learns a later node's address
        ("on3", 2): hints == "all",
    }
    for (queue, asked), hinted in expected.items():
        opcode, body = _consume(cluster.node(asked), queue)
        assert body["error_code"] == ErrorCode.NOT_LEADER and body["message"] == "not the leader for this queue"
        leader = cluster.node(cluster.leader_of(queue)).address
        assert body["metadata"] == ({"leader_addr": leader} if hinted else {}), (queue, asked)
    assert _consume(cluster.node(3), "on3")[0] == 0x13  # ConsumeOk at the leader


def test_dlq_and_unknown_queues_have_no_raft_group(cluster: Cluster) -> None:
    leader = cluster.create_queue("q")
    for queue in ("q.dlq", "missing"):
        _, body = _consume(cluster.node(leader), queue)
        assert (body["error_code"], body["message"]) == (ErrorCode.QUEUE_NOT_FOUND, "queue raft group not found")
    with Raw(cluster.node(leader).address) as r:
        assert r.enqueue([("missing", {}, b"x")]) == [(ErrorCode.QUEUE_NOT_FOUND, "queue raft group not found")]


def test_no_leader_right_after_create_queue(make_cluster: Any) -> None:
    cluster = make_cluster(election_delay=0.5)
    with Raw(cluster.node(1).address) as r:
        opcode, body = r.call("CreateQueueRequest", {"name": "q", **NO_SCRIPT})
        assert body["error_code"] == 0
        assert r.enqueue([("q", {}, b"x")]) == [(ErrorCode.NOT_LEADER, "no leader available")]
        assert r.call("ConsumeRequest", {"queue": "q"})[1]["metadata"] == {}  # NotLeader, nobody to name
        assert r.call("GetStatsRequest", {"queue": "q"})[1]["leader_node_id"] == 0
    _, body = _consume(cluster.node(2), "q")
    assert (body["error_code"], body["message"]) == (ErrorCode.QUEUE_NOT_FOUND, "queue raft group not found")
    assert cluster.wait_for_leader("q") == 1
    with Raw(cluster.node(2).address) as r:
        assert r.enqueue([("q", {}, b"x")])[0][0] == 0


def test_batches_are_truncated_through_a_follower_and_unreplicated_at_the_leader(cluster: Cluster) -> None:
    leader = cluster.create_queue("q", leader=2)
    items = [("q", {}, b"%d" % i) for i in range(5)]
    with Raw(cluster.node(1).address) as follower:
        results = follower.enqueue(items)
    assert [code for code, _ in results] == [0] * 5  # every item reported ok ...
    assert cluster.message_ids("q") == {results[0][1]}  # ... only the first stored
    with Raw(cluster.node(leader).address) as r:
        at_leader = r.enqueue(items)
    assert {mid for _, mid in at_leader} <= cluster.message_ids("q")  # stored at the leader ...
    cluster.transfer("q", 3)
    assert cluster.message_ids("q") == {results[0][1], at_leader[0][1]}  # ... but only the first was replicated
    assert cluster.counters["truncated"] == 4 and cluster.counters["unreplicated"] == 4


def test_acks_at_the_leader_answer_message_not_found(cluster: Cluster) -> None:
    leader = cluster.create_queue("q", leader=2)
    with Raw(cluster.node(1).address) as producer:
        ids = [producer.enqueue([("q", {}, b"%d" % i)])[0][1] for i in range(2)]
        assert producer.ack([("q", "no-such-id")]) == [0]  # a forwarded ack: Ok, whatever it did
    with Raw(cluster.node(leader).address) as consumer:
        assert consumer.call("ConsumeRequest", {"queue": "q"})[0] == 0x13
        got = []
        assert wait_until(lambda: got.extend(consumer.deliveries(0.1)) or len(got) == 2, 5)
        assert consumer.ack([("q", ids[0])]) == [ErrorCode.MESSAGE_NOT_FOUND]  # ... yet it took effect
    assert cluster.message_ids("q") == {ids[1]}


def test_kill_keeps_naming_the_dead_leader_for_the_failover_delay(make_cluster: Any) -> None:
    cluster = make_cluster(failover_delay=1.0)
    cluster.create_queue("q", leader=3)
    with Raw(cluster.node(1).address) as r:
        assert r.enqueue([("q", {}, b"before")])[0][0] == 0  # node 1 now has a connection to node 3
        killed = time.monotonic()
        cluster.kill(3)
        assert r.enqueue([("q", {}, b"x")]) == [(0xFF, "forward error: rpc: connection closed")]
        assert r.enqueue([("q", {}, b"x")]) == [(0xFF, "forward error: connect: Connection refused (os error 111)")]
        assert r.call("GetStatsRequest", {"queue": "q"})[1]["leader_node_id"] == 3
        assert cluster.wait_for_leader("q", other_than=3) in (1, 2)
        assert time.monotonic() - killed >= 0.9
        assert r.enqueue([("q", {}, b"after")])[0][0] == 0
    with pytest.raises(OSError):
        Raw(cluster.node(3).address)
    cluster.revive(3)
    with Raw(cluster.node(3).address) as r:
        assert r.node_id == 3
        assert r.call("ConsumeRequest", {"queue": "q"})[1]["error_code"] == ErrorCode.NOT_LEADER  # a follower now


def test_freeze_drops_streams_silently_and_answers_only_ping(cluster: Cluster) -> None:
    leader = cluster.create_queue("q", leader=2)
    with Raw(cluster.node(leader).address) as consumer:
        assert consumer.call("ConsumeRequest", {"queue": "q"})[0] == 0x13
        cluster.freeze(leader, 1.0)
        assert cluster.leader_of("q") != leader
        started = time.monotonic()
        assert consumer.call("Ping")[0] == 0x04  # answered at once
        assert time.monotonic() - started < 0.5
        with Raw(cluster.node(1).address) as producer:
            assert producer.enqueue([("q", {}, b"x")])[0][0] == 0
        assert consumer.deliveries(0.3) == []  # the stream went quiet, with no frame
        opcode, body = consumer.call("GetStatsRequest", {"queue": "q"})  # waits for the stall to end
        assert time.monotonic() - started >= 0.9
        assert body["leader_node_id"] == cluster.leader_of("q") != leader


def test_transfer_releases_leases_and_drops_old_consumers(cluster: Cluster) -> None:
    cluster.create_queue("q", leader=1)
    with Raw(cluster.node(1).address) as old, Raw(cluster.node(2).address) as new:
        assert old.call("ConsumeRequest", {"queue": "q"})[0] == 0x13
        mid = old.enqueue([("q", {}, b"x")])[0][1]
        assert [m.id for m in old.deliveries(1.0)] == [mid]
        cluster.transfer("q", 2)
        assert new.call("ConsumeRequest", {"queue": "q"})[0] == 0x13
        got: list[Any] = []
        assert wait_until(lambda: got.extend(new.deliveries(0.1)) or got, 5)
        assert [m.id for m in got] == [mid]  # the new leader did not inherit the old lease
        new.enqueue([("q", {}, b"y")])
        assert old.deliveries(0.2) == []
