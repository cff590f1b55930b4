"""SERVER.md §6.10, §6.11, §10.3: GetStats and ListQueues."""

from __future__ import annotations

from collections.abc import Callable

from fila.protocol.constants import ErrorCode
from fila.testing import Broker

from .conftest import Wire


def test_empty_queue_reports_zeros(wire: Wire) -> None:
    wire.create_queue("q")
    assert wire.stats("q") == {
        "error_code": 0,
        "depth": 0,
        "in_flight": 0,
        "active_fairness_keys": 0,
        "active_consumers": 0,
        "quantum": 1000,
        "leader_node_id": 0,
        "replication_count": 0,
        "per_key_stats": [],
        "per_throttle_stats": [],
    }


def test_depth_is_pending_plus_in_flight(wire: Wire) -> None:
    wire.create_queue("q")
    wire.enqueue_many([("q", b"")] * 3)
    wire.consume("q")
    wire.delivery()
    s = wire.stats("q")
    assert (s["depth"], s["in_flight"], s["active_consumers"]) == (3, 3, 1)
    wire.send_msg("CancelConsume", 1)


def test_per_key_stats(broker: Broker, wire: Wire) -> None:
    broker.create_queue("q", on_enqueue=lambda m: {"fairness_key": m["headers"]["k"], "weight": int(m["headers"]["w"])})
    wire.enqueue("q", headers={"k": "a", "w": "3"})
    wire.enqueue("q", headers={"k": "a", "w": "3"})
    wire.enqueue("q", headers={"k": "b", "w": "0"})
    s = wire.stats("q")
    assert s["active_fairness_keys"] == 2
    assert s["per_key_stats"] == [
        {"key": "a", "pending_count": 2, "current_deficit": 0, "weight": 3},
        {"key": "b", "pending_count": 1, "current_deficit": 0, "weight": 1},
    ]


def test_get_stats_of_a_missing_queue_is_an_error_frame(wire: Wire) -> None:
    body = wire.error("GetStatsRequest", {"queue": "nope"})
    assert (body["error_code"], body["message"]) == (ErrorCode.QUEUE_NOT_FOUND, "queue not found")


def test_list_queues_sorted_bytewise_with_counts(wire: Wire) -> None:
    for name in ("b", "a", "B"):
        wire.create_queue(name)
    wire.enqueue("a")
    body = wire.ok("ListQueuesRequest")
    assert body["cluster_node_count"] == 0
    assert [q["name"] for q in body["queues"]] == ["B", "B.dlq", "a", "a.dlq", "b", "b.dlq"]
    a = body["queues"][2]
    assert a == {"name": "a", "depth": 1, "in_flight": 0, "active_consumers": 0, "leader_node_id": 0}


def test_throttle_buckets_are_global_in_stats(wire: Wire) -> None:
    wire.create_queue("q")
    wire.ok("SetConfigRequest", {"key": "throttle.t", "value": "2.5,4"})
    (bucket,) = wire.stats("q")["per_throttle_stats"]
    assert bucket["key"] == "t" and bucket["rate_per_second"] == 2.5 and bucket["burst"] == 4.0
    assert 3.9 <= bucket["tokens"] <= 4.0


def test_cluster_simulation_fills_leader_fields(fila_broker_factory: Callable[..., Broker]) -> None:
    b = fila_broker_factory(node_id=3)
    w = Wire(b)
    try:
        w.create_queue("q")
        s = w.stats("q")
        assert (s["leader_node_id"], s["replication_count"]) == (3, 1)
        body = w.ok("ListQueuesRequest")
        assert body["cluster_node_count"] == 1 and body["queues"][0]["leader_node_id"] == 3
    finally:
        w.close()


def test_a_dlq_name_too_long_for_the_wire_closes_list_queues(connect: Callable[..., Wire]) -> None:
    """SERVER.md §16.2: ``<name>.dlq`` of a 65,532-byte name is 65,536 bytes, more than a wire
    string holds; the server's encoder panics and the connection closes with no frame.

    Deliberate difference (README): DeleteQueue of that queue stops the server's scheduler
    (its storage keys carry a 16-bit length); the double deletes it and keeps working."""
    admin = connect()
    name = "x" * 65_532
    assert admin.create_queue(name)["error_code"] == 0
    admin.send_msg("ListQueuesRequest", 99)
    assert admin.assert_closed() == []
    other = connect()
    assert other.ok("DeleteQueueRequest", {"queue": name}) == {"error_code": 0}
    other.create_queue("q")
    assert [q["name"] for q in other.ok("ListQueuesRequest")["queues"]] == ["q", "q.dlq"]
