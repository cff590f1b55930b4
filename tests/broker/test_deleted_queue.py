"""SERVER.md §10.2, §16.2: DeleteQueue while messages are leased.

The server deletes the queue's config, scripts, pending messages and DRR
state, but neither the leases nor the leased messages, and its consumers
stay registered on the name. So Ack/Nack of those messages still answer 0;
a nacked or expired one is pending again under the queue's name: it goes to
the consumers still registered there (even before the name is created
again), and a queue created with that name counts and delivers it.
"""

from __future__ import annotations

from collections.abc import Callable

from fila.protocol.constants import ErrorCode
from fila.testing import Broker

from .conftest import Clock
from .conftest import Wire
from .conftest import wait_until


def _delete(w: Wire, name: str) -> None:
    assert w.ok("DeleteQueueRequest", {"queue": name}) == {"error_code": 0}


def test_ack_of_a_message_leased_before_the_delete_is_ok(wire: Wire) -> None:
    wire.create_queue("q")
    wire.consume("q")
    mid = wire.enqueue("q")
    wire.delivery()
    _delete(wire, "q")
    assert wire.ack("q", mid) == [0]
    assert wire.ack("q", mid) == [ErrorCode.MESSAGE_NOT_FOUND]  # gone for good
    wire.create_queue("q")
    assert wire.stats("q")["depth"] == 0
    wire.no_delivery(0.2)


def test_nacked_message_goes_to_the_old_consumer_and_counts_once_recreated(connect: Callable[..., Wire]) -> None:
    consumer, admin = connect(), connect()
    admin.create_queue("q")
    consumer.consume("q")
    mid = admin.enqueue("q")
    assert consumer.delivery()["attempt_count"] == 0
    _delete(admin, "q")
    assert admin.nack("q", mid) == [0]
    m = consumer.delivery()  # the consumer is still registered on the name
    assert (m["message_id"], m["queue"], m["attempt_count"]) == (mid, "q", 1)
    assert admin.error("GetStatsRequest", {"queue": "q"})["error_code"] == ErrorCode.QUEUE_NOT_FOUND
    assert admin.ok("ListQueuesRequest")["queues"] == []
    admin.create_queue("q")
    s = admin.stats("q")
    assert (s["depth"], s["in_flight"], s["active_consumers"]) == (1, 1, 1)
    assert admin.ack("q", mid) == [0]
    assert admin.stats("q")["depth"] == 0


def test_expired_message_waits_for_a_queue_of_that_name(connect: Callable[..., Wire], clock: Clock) -> None:
    first, admin = connect(), connect()
    admin.create_queue("q", visibility_timeout_ms=60_000)
    rid = first.consume("q")
    mid = admin.enqueue("q")
    first.delivery()
    first.send_msg("CancelConsume", rid)
    wait_until(lambda: admin.stats("q")["active_consumers"] == 0, what="unregister")
    _delete(admin, "q")
    clock.advance(61)  # the lease expires on the next tick: pending again under "q"
    time_for_a_tick = 0.3
    first.no_delivery(time_for_a_tick)
    admin.create_queue("q")
    s = admin.stats("q")
    assert (s["depth"], s["in_flight"]) == (1, 0)
    assert [(k["key"], k["pending_count"]) for k in s["per_key_stats"]] == [("default", 1)]
    second = connect()
    second.consume("q")
    m = second.delivery()
    assert (m["message_id"], m["attempt_count"]) == (mid, 1)


def test_leases_from_before_the_delete_are_not_counted_in_flight(wire: Wire) -> None:
    wire.create_queue("q")
    wire.enqueue_many([("q", b"")] * 2)
    rid = wire.consume("q")
    ids = [wire.delivery()["message_id"] for _ in range(2)]
    wire.send_msg("CancelConsume", rid)
    _delete(wire, "q")
    wire.create_queue("q")
    s = wire.stats("q")
    assert (s["depth"], s["in_flight"]) == (0, 0)  # still leased, but not counted
    assert wire.ack("q", *ids) == [0, 0]


def test_pending_messages_are_dropped_and_the_name_takes_no_enqueues(wire: Wire) -> None:
    wire.create_queue("q")
    wire.enqueue_many([("q", b"")] * 2)  # never leased
    _delete(wire, "q")
    (result,) = wire.enqueue_many([("q", b"")])
    assert result == {"error_code": ErrorCode.QUEUE_NOT_FOUND, "message_id": ""}
    wire.create_queue("q")
    assert wire.stats("q")["depth"] == 0
    wire.consume("q")
    wire.no_delivery(0.2)


def test_the_auto_dlq_goes_the_same_way(broker: Broker, connect: Callable[..., Wire]) -> None:
    consumer, admin = connect(), connect()
    broker.create_queue("q", on_failure=lambda m: {"action": "dlq"})
    consumer.consume("q")
    mid = admin.enqueue("q")
    consumer.delivery()
    assert admin.nack("q", mid) == [0]  # moved to q.dlq
    consumer.consume("q.dlq")
    assert consumer.delivery()["queue"] == "q.dlq"
    _delete(admin, "q")
    assert admin.error("GetStatsRequest", {"queue": "q.dlq"})["error_code"] == ErrorCode.QUEUE_NOT_FOUND
    assert admin.nack("q.dlq", mid) == [0]  # no config left: retried under the old DLQ name
    m = consumer.delivery()
    assert (m["message_id"], m["queue"], m["attempt_count"]) == (mid, "q.dlq", 2)
    assert admin.ack("q.dlq", mid) == [0]
