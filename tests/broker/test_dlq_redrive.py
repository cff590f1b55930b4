"""SERVER.md §9.2–§9.3, §10.2, §10.5, §6.15: dead-letter queues and Redrive."""

from __future__ import annotations

from typing import Any

import pytest

from fila.protocol.constants import ErrorCode
from fila.testing import Broker

from .conftest import Wire


def _to_dlq(msg: dict[str, Any]) -> dict[str, str]:
    return {"action": "dlq"}


def test_create_queue_also_creates_its_dlq(wire: Wire) -> None:
    assert wire.create_queue("orders") == {"error_code": 0, "queue_id": "orders"}
    names = [q["name"] for q in wire.ok("ListQueuesRequest")["queues"]]
    assert names == ["orders", "orders.dlq"]
    wire.create_queue("x.dlq")
    assert "x.dlq.dlq" not in [q["name"] for q in wire.ok("ListQueuesRequest")["queues"]]


def test_nack_to_dlq_through_on_failure(broker: Broker, wire: Wire) -> None:
    broker.create_queue("q", on_failure=_to_dlq)
    wire.consume("q")
    mid = wire.enqueue("q", b"p", {"h": "1"})
    wire.delivery()
    assert wire.nack("q", mid) == [0]
    wire.no_delivery(0.1)
    assert wire.stats("q.dlq")["depth"] == 1
    assert wire.ack("q", mid) == [ErrorCode.MESSAGE_NOT_FOUND]
    wire.consume("q.dlq")
    m = wire.delivery()
    assert (m["message_id"], m["queue"], m["attempt_count"], m["headers"]) == (mid, "q.dlq", 1, {"h": "1"})
    assert wire.ack("q", mid) == [ErrorCode.MESSAGE_NOT_FOUND]  # the parent name is wrong now
    assert wire.ack("q.dlq", mid) == [0]


def test_on_failure_sees_the_new_attempt_count(broker: Broker, wire: Wire) -> None:
    seen: list[dict[str, Any]] = []

    def on_failure(msg: dict[str, Any]) -> dict[str, str]:
        seen.append(msg)
        return {"action": "dlq" if msg["attempts"] >= 2 else "retry"}

    broker.create_queue("q", on_failure=on_failure)
    wire.consume("q")
    mid = wire.enqueue("q", headers={"a": "b"})
    wire.delivery()
    wire.nack("q", mid, error="first")
    assert wire.delivery()["attempt_count"] == 1
    wire.nack("q", mid, error="second")
    wire.no_delivery(0.1)
    assert seen == [
        {"headers": {"a": "b"}, "id": mid, "attempts": 1, "queue": "q", "error": "first"},
        {"headers": {"a": "b"}, "id": mid, "attempts": 2, "queue": "q", "error": "second"},
    ]
    assert wire.stats("q.dlq")["depth"] == 1


def test_missing_dlq_means_retry(broker: Broker, wire: Wire) -> None:
    broker.create_queue("q", on_failure=_to_dlq)
    broker.delete_queue("q.dlq")
    wire.consume("q")
    mid = wire.enqueue("q")
    wire.delivery()
    wire.nack("q", mid)
    assert wire.delivery()["attempt_count"] == 1


def test_without_on_failure_retries_forever(wire: Wire) -> None:
    wire.create_queue("q")
    wire.consume("q")
    mid = wire.enqueue("q")
    for attempt in range(6):
        assert wire.delivery()["attempt_count"] == attempt
        wire.nack("q", mid)


def test_delete_queue_drops_it_and_its_dlq(wire: Wire) -> None:
    wire.create_queue("q")
    wire.enqueue("q")
    assert wire.ok("DeleteQueueRequest", {"queue": "q"}) == {"error_code": 0}
    assert wire.ok("ListQueuesRequest")["queues"] == []
    assert wire.ok("DeleteQueueRequest", {"queue": "q"}) == {"error_code": ErrorCode.QUEUE_NOT_FOUND}
    wire.create_queue("q")
    assert wire.stats("q")["depth"] == 0


def test_consumers_of_a_deleted_queue_get_the_recreated_one(connect: Any) -> None:
    consumer, admin = connect(), connect()
    admin.create_queue("q")
    consumer.consume("q")
    admin.ok("DeleteQueueRequest", {"queue": "q"})
    admin.create_queue("q")
    mid = admin.enqueue("q")
    assert consumer.delivery()["message_id"] == mid


class TestRedrive:
    @pytest.fixture
    def dead(self, broker: Broker, wire: Wire) -> list[str]:
        """Three messages in q.dlq, attempts 1."""
        calls = []

        def on_enqueue(msg: dict[str, Any]) -> dict[str, Any]:
            calls.append(msg)
            return {"fairness_key": msg["headers"].get("k", "default")}

        broker.create_queue("q", on_enqueue=on_enqueue, on_failure=_to_dlq)
        ids = [wire.enqueue("q", bytes([i]), {"k": "b" if i else "a"}) for i in range(3)]
        rid = wire.consume("q")
        got = [wire.delivery()["message_id"] for _ in range(3)]
        assert sorted(got) == sorted(ids)
        assert wire.nack("q", *ids) == [0, 0, 0]
        wire.send_msg("CancelConsume", rid)
        self.calls = calls
        return ids

    def _redrive(self, wire: Wire, name: str, count: int = 0) -> tuple[int, dict[str, Any]]:
        return wire.call("RedriveRequest", {"dlq_queue": name, "count": count})

    def test_redrive_moves_messages_back_with_attempts_reset(self, wire: Wire, dead: list[str]) -> None:
        before = len(self.calls)
        assert wire.ok("RedriveRequest", {"dlq_queue": "q.dlq", "count": 0}) == {"error_code": 0, "redriven": 3}
        assert len(self.calls) == before  # on_enqueue is not run again
        wire.consume("q")
        got = [wire.delivery() for _ in range(3)]
        assert sorted(m["message_id"] for m in got) == sorted(dead)
        assert {m["attempt_count"] for m in got} == {0}
        assert {m["queue"] for m in got} == {"q"}
        assert {m["fairness_key"] for m in got} == {"a", "b"}

    def test_redrive_count_and_storage_order(self, wire: Wire, dead: list[str]) -> None:
        assert wire.ok("RedriveRequest", {"dlq_queue": "q.dlq", "count": 2})["redriven"] == 2
        assert wire.stats("q.dlq")["depth"] == 1
        assert wire.stats("q")["depth"] == 2
        # key "a" sorts first, then "b" by enqueue order: the last "b" message stays
        wire.consume("q.dlq")
        assert wire.delivery()["message_id"] == dead[2]

    def test_storage_order_puts_shorter_fairness_keys_first(self, broker: Broker, wire: Wire) -> None:
        """SERVER.md §10.5 ([keys]): storage order is that of the message keys, where the
        fairness key sits behind a 16-bit length, so "b" comes before "aa"."""
        broker.create_queue("p", on_enqueue=lambda m: {"fairness_key": m["headers"]["k"]}, on_failure=_to_dlq)
        ids = {k: wire.enqueue("p", headers={"k": k}) for k in ("aa", "b", "a")}
        rid = wire.consume("p")
        wire.nack("p", *[wire.delivery()["message_id"] for _ in range(3)])
        wire.send_msg("CancelConsume", rid)
        for _ in range(3):
            assert wire.ok("RedriveRequest", {"dlq_queue": "p.dlq", "count": 1})["redriven"] == 1
        wire.consume("p")
        assert [wire.delivery()["message_id"] for _ in range(3)] == [ids["a"], ids["b"], ids["aa"]]

    def test_redrive_skips_leased_messages(self, wire: Wire, dead: list[str]) -> None:
        rid = wire.consume("q.dlq")
        leased = [wire.delivery()["message_id"] for _ in range(3)]
        wire.send_msg("CancelConsume", rid)
        assert wire.nack("q.dlq", leased[0]) == [0]  # a .dlq queue always retries: pending again
        assert wire.ok("RedriveRequest", {"dlq_queue": "q.dlq", "count": 0})["redriven"] == 1
        assert wire.stats("q.dlq")["in_flight"] == 2

    @pytest.mark.parametrize(
        ("name", "code", "message"),
        [
            ("nope.dlq", ErrorCode.QUEUE_NOT_FOUND, "queue not found"),
            ("q", ErrorCode.NOT_A_DLQ, "not a dead-letter queue"),
            ("orphan.dlq", ErrorCode.PARENT_QUEUE_NOT_FOUND, "parent queue not found"),
        ],
    )
    def test_redrive_errors_in_check_order(
        self, wire: Wire, dead: list[str], name: str, code: int, message: str
    ) -> None:
        wire.create_queue("orphan.dlq")
        body = wire.error("RedriveRequest", {"dlq_queue": name, "count": 0})
        assert (body["error_code"], body["message"], body["metadata"]) == (code, message, {})

    def test_empty_redrive(self, wire: Wire) -> None:
        wire.create_queue("z")
        assert wire.ok("RedriveRequest", {"dlq_queue": "z.dlq", "count": 5})["redriven"] == 0
