"""SERVER.md §6.6, §6.7, §9.1, §9.2: Ack and Nack."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from fila.protocol.constants import ErrorCode

from .conftest import Wire

NOT_FOUND = ErrorCode.MESSAGE_NOT_FOUND


def _leased(w: Wire, queue: str = "q", n: int = 1) -> list[str]:
    w.create_queue(queue)
    w.consume(queue)
    w.enqueue_many([(queue, b"x")] * n)
    return [w.delivery()["message_id"] for _ in range(n)]


def test_ack_deletes_the_message(wire: Wire) -> None:
    (mid,) = _leased(wire)
    assert wire.ack("q", mid) == [0]
    assert wire.ack("q", mid) == [NOT_FOUND]
    assert wire.stats("q")["depth"] == 0


def test_ack_not_found_cases(wire: Wire) -> None:
    (mid,) = _leased(wire)
    wire.create_queue("p")
    never_leased = wire.enqueue("p")
    assert wire.ack("q", str(uuid.uuid4())) == [NOT_FOUND]
    assert wire.ack("p", never_leased) == [NOT_FOUND]
    assert wire.ack("p", mid) == [NOT_FOUND]  # wrong queue
    assert wire.ack("nope", mid) == [NOT_FOUND]
    assert wire.ack("q", "not-a-uuid") == [NOT_FOUND]


def test_ack_accepts_other_uuid_spellings(wire: Wire) -> None:
    a, b, c = _leased(wire, n=3)
    assert wire.ack("q", a.upper(), uuid.UUID(b).hex, "{" + c + "}") == [0, 0, 0]


def test_same_id_twice_in_one_ack_batch_is_ok_twice(wire: Wire) -> None:
    (mid,) = _leased(wire)
    assert wire.ack("q", mid, mid) == [0, 0]


def test_ack_from_another_connection(connect: Callable[..., Wire]) -> None:
    holder, other = connect(), connect()
    (mid,) = _leased(holder)
    assert other.ack("q", mid) == [0]


def test_mixed_ack_batch(wire: Wire) -> None:
    a, b = _leased(wire, n=2)
    assert wire.ack("q", a, str(uuid.uuid4()), b) == [0, NOT_FOUND, 0]


def test_nack_retries_with_attempt_plus_one(wire: Wire) -> None:
    (mid,) = _leased(wire)
    assert wire.nack("q", mid) == [0]
    m = wire.delivery()
    assert (m["message_id"], m["attempt_count"]) == (mid, 1)
    assert wire.nack("q", mid) == [0]
    assert wire.delivery()["attempt_count"] == 2


def test_nack_repeated_in_one_batch_is_ok_then_not_found(connect: Callable[..., Wire]) -> None:
    holder, other = connect(), connect()
    (mid,) = _leased(holder)
    assert other.nack("q", mid, mid) == [0, NOT_FOUND]


def test_nack_unknown(wire: Wire) -> None:
    wire.create_queue("q")
    assert wire.nack("q", str(uuid.uuid4())) == [NOT_FOUND]
    assert wire.nack("missing", "x") == [NOT_FOUND]


def test_retried_message_goes_to_the_back(wire: Wire) -> None:
    wire.create_queue("q")
    first, second = (r["message_id"] for r in wire.enqueue_many([("q", b"1"), ("q", b"2")]))
    wire.consume("q")
    assert [wire.delivery()["message_id"] for _ in range(2)] == [first, second]
    wire.nack("q", first)
    m = wire.delivery()
    assert (m["message_id"], m["attempt_count"]) == (first, 1)
