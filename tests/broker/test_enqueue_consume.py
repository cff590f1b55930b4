"""SERVER.md §6.3–§6.5, §7: Enqueue, Consume, deliveries, CancelConsume."""

from __future__ import annotations

import re
from collections.abc import Callable

from fila.protocol.constants import ErrorCode
from fila.protocol.constants import Opcode
from fila.protocol.messages import decode_body
from fila.protocol.pure import encode_frame
from fila.testing import Broker

from .conftest import Wire

UUID_V7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_enqueue_results_per_item_in_order(wire: Wire) -> None:
    wire.create_queue("a")
    wire.create_queue("b")
    results = wire.enqueue_many([("a", b"1"), ("missing", b"2"), ("b", b"3")])
    assert [r["error_code"] for r in results] == [0, ErrorCode.QUEUE_NOT_FOUND, 0]
    assert results[1]["message_id"] == ""
    assert UUID_V7.match(results[0]["message_id"]) and UUID_V7.match(results[2]["message_id"])
    assert wire.stats("a")["depth"] == 1 and wire.stats("b")["depth"] == 1


def test_enqueue_of_zero_messages(wire: Wire) -> None:
    assert wire.ok("EnqueueRequest", {"messages": []}) == {"results": []}


def test_message_ids_strictly_increase_within_a_batch_and_across(wire: Wire) -> None:
    wire.create_queue("q")
    ids = [r["message_id"] for r in wire.enqueue_many([("q", b"")] * 500)]
    ids += [r["message_id"] for r in wire.enqueue_many([("q", b"")] * 500)]
    assert ids == sorted(ids) and len(set(ids)) == 1000


def test_delivery_carries_the_message_with_defaults(wire: Wire) -> None:
    wire.create_queue("q")
    rid = wire.consume("q")
    mid = wire.enqueue("q", b"payload", {"h": "v", "k": "w"})
    m = wire.delivery()
    assert m == {
        "rid": rid,
        "message_id": mid,
        "queue": "q",
        "headers": {"h": "v", "k": "w"},
        "payload": b"payload",
        "fairness_key": "default",
        "weight": 1,
        "throttle_keys": [],
        "attempt_count": 0,
        "enqueued_at": 0,
        "leased_at": 0,
    }


def test_one_message_per_delivery_frame_by_default(wire: Wire) -> None:
    wire.create_queue("q")
    wire.enqueue_many([("q", b"1"), ("q", b"2"), ("q", b"3")])
    rid = next(wire.rids)
    wire.send_msg("ConsumeRequest", rid, {"queue": "q"})
    assert wire.recv_frame().opcode == Opcode.CONSUME_OK  # ConsumeOk precedes the deliveries
    for expected in (b"1", b"2", b"3"):
        f = wire.recv_frame()
        msgs = decode_body(f.opcode, f.payload)["messages"]
        assert f.opcode == Opcode.DELIVERY and f.request_id == rid
        assert [m["payload"] for m in msgs] == [expected]


def test_delivery_batch_size_packs_several_messages_per_frame(fila_broker_factory: Callable[..., Broker]) -> None:
    b = fila_broker_factory(delivery_batch_size=4)
    w = Wire(b)
    try:
        w.create_queue("q")
        w.enqueue_many([("q", bytes([i])) for i in range(6)])
        rid = next(w.rids)
        w.send_msg("ConsumeRequest", rid, {"queue": "q"})
        assert w.recv_frame().opcode == Opcode.CONSUME_OK
        sizes = []
        while sum(sizes) < 6:
            f = w.recv_frame()
            sizes.append(len(decode_body(f.opcode, f.payload)["messages"]))
        assert sizes == [4, 2]
    finally:
        w.close()


def test_enqueue_result_precedes_deliveries_on_the_same_connection(wire: Wire) -> None:
    wire.create_queue("q")
    rid = wire.consume("q")
    wire.send_msg("EnqueueRequest", 99, {"messages": [{"queue": "q", "headers": {}, "payload": b"x"}]})
    first, second = wire.recv_frame(), wire.recv_frame()
    assert (first.opcode, first.request_id) == (Opcode.ENQUEUE_RESULT, 99)
    assert (second.opcode, second.request_id) == (Opcode.DELIVERY, rid)


def test_consume_on_a_missing_queue_succeeds_and_delivers_once_it_exists(connect: Callable[..., Wire]) -> None:
    consumer, admin = connect(), connect()
    consumer.consume("later")
    consumer.no_delivery(0.1)
    admin.create_queue("later")
    mid = admin.enqueue("later")
    assert consumer.delivery()["message_id"] == mid


def test_consumer_ids_are_uuid_v7(wire: Wire) -> None:
    wire.create_queue("q")
    rid = next(wire.rids)
    wire.send_msg("ConsumeRequest", rid, {"queue": "q"})
    body = decode_body(Opcode.CONSUME_OK, wire.response(rid).payload)
    assert UUID_V7.match(body["consumer_id"])


def test_round_robin_across_consumers(connect: Callable[..., Wire]) -> None:
    c1, c2, producer = connect(), connect(), connect()
    producer.create_queue("q")
    c1.consume("q")
    c2.consume("q")
    producer.enqueue_many([("q", bytes([i])) for i in range(10)])
    got1 = [c1.delivery()["payload"] for _ in range(5)]
    got2 = [c2.delivery()["payload"] for _ in range(5)]
    assert sorted(got1 + got2) == [bytes([i]) for i in range(10)]
    c1.no_delivery(0.1)
    c2.no_delivery(0.1)
    assert producer.stats("q")["active_consumers"] == 2


def test_a_second_consume_replaces_the_first_silently(wire: Wire) -> None:
    wire.create_queue("a")
    wire.create_queue("b")
    wire.consume("a")
    rid_b = wire.consume("b")
    assert wire.stats("a")["active_consumers"] == 0
    wire.enqueue("a")
    wire.enqueue("b", b"for-b")
    m = wire.delivery()
    assert (m["rid"], m["payload"]) == (rid_b, b"for-b")
    wire.no_delivery(0.1)


def test_failed_consume_keeps_the_existing_subscription(wire: Wire) -> None:
    wire.create_queue("q")
    rid = wire.consume("q")
    wire.send(b"\x00\x00\x00\x07\x12\x00\x00\x00\x00\x63\x00")  # truncated Consume
    assert wire.response(0x63).opcode == Opcode.ERROR
    wire.enqueue("q")
    assert wire.delivery()["rid"] == rid


def test_cancel_consume_stops_deliveries_and_sends_nothing(wire: Wire) -> None:
    wire.create_queue("q")
    rid = wire.consume("q")
    wire.send_msg("CancelConsume", 12345)  # unknown id: ignored, no reply
    wire.send_msg("CancelConsume", rid)
    assert wire.call("Ping")[0] == Opcode.PONG
    assert wire.stats("q")["active_consumers"] == 0
    wire.enqueue("q")
    wire.no_delivery(0.2)


def test_headers_with_a_repeated_key_keep_the_last_value(wire: Wire) -> None:
    wire.create_queue("q")
    payload = (
        b"\x00\x00\x00\x01"
        + b"\x00\x01q"
        + b"\x00\x02"
        + b"\x00\x01k\x00\x01a"
        + b"\x00\x01k\x00\x01b"
        + b"\x00\x00\x00\x00"
    )
    wire.send(encode_frame(Opcode.ENQUEUE, 7, payload))
    assert wire.response(7).opcode == Opcode.ENQUEUE_RESULT
    wire.consume("q")
    assert wire.delivery()["headers"] == {"k": "b"}


def test_one_message_goes_to_exactly_one_consumer(connect: Callable[..., Wire]) -> None:
    consumers = [connect() for _ in range(3)]
    producer = connect()
    producer.create_queue("q")
    for c in consumers:
        c.consume("q")
    ids = {producer.enqueue("q") for _ in range(30)}
    seen: list[str] = []
    for c in consumers:
        seen += [c.delivery()["message_id"] for _ in range(10)]
    assert sorted(seen) == sorted(ids)
