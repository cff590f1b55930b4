"""SERVER.md §7.4–§7.7: leases, visibility timeout and redelivery."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fila.testing import Broker

from .conftest import Clock
from .conftest import Wire
from .conftest import wait_until


def test_expired_lease_is_redelivered_with_attempt_plus_one(wire: Wire) -> None:
    wire.create_queue("q", visibility_timeout_ms=150)
    wire.consume("q")
    mid = wire.enqueue("q")
    assert wire.delivery()["attempt_count"] == 0
    m = wire.delivery(timeout=5)  # never acked: comes back after the timeout
    assert (m["message_id"], m["attempt_count"]) == (mid, 1)
    assert wire.ack("q", mid) == [0]


def test_lease_starts_at_delivery_even_if_unread(connect: Callable[..., Wire]) -> None:
    consumer, admin = connect(), connect()
    admin.create_queue("q")
    consumer.consume("q")
    admin.enqueue("q")
    wait_until(lambda: admin.stats("q")["in_flight"] == 1, what="the lease")
    assert admin.stats("q")["depth"] == 1


def test_leases_survive_disconnect_until_they_expire(connect: Callable[..., Wire], clock: Clock) -> None:
    first, admin = connect(), connect()
    admin.create_queue("q", visibility_timeout_ms=60_000)
    first.consume("q")
    mid = admin.enqueue("q")
    first.delivery()
    first.send_msg("Disconnect", 0)
    first.assert_closed()
    wait_until(lambda: admin.stats("q")["active_consumers"] == 0, what="unregister")
    assert admin.stats("q")["in_flight"] == 1  # not requeued on disconnect
    clock.advance(61)  # the lease expires on the next tick
    second = connect()
    second.consume("q")
    m = second.delivery(timeout=5)
    assert (m["message_id"], m["attempt_count"]) == (mid, 1)


def test_cancel_leaves_the_lease_in_place(wire: Wire) -> None:
    wire.create_queue("q", visibility_timeout_ms=60_000)
    rid = wire.consume("q")
    mid = wire.enqueue("q")
    wire.delivery()
    wire.send_msg("CancelConsume", rid)
    assert wire.stats("q")["in_flight"] == 1
    assert wire.ack("q", mid) == [0]


def test_default_visibility_timeout_is_broker_wide(fila_broker_factory: Callable[..., Broker]) -> None:
    b = fila_broker_factory(visibility_timeout_ms=100, lease_check_interval=0.02)
    w = Wire(b)
    try:
        w.create_queue("q")
        w.consume("q")
        w.enqueue("q")
        w.delivery()
        assert w.delivery(timeout=5)["attempt_count"] == 1
    finally:
        w.close()


@pytest.mark.parametrize(
    "timeout_ms",
    [
        17_000_000_000_000,  # now_ns + timeout × 10^6 passes 2**64: the expiry wraps into the past
        2**64 // 10**6 + 1,  # the product itself wraps, to 448 µs
        2**64 - 1,
    ],
)
def test_huge_visibility_timeouts_overflow_like_the_server(wire: Wire, timeout_ms: int) -> None:
    """SERVER.md §16.2: the server stamps a lease's expiry as now_ns + timeout_ms × 10^6 in
    wrapping u64 arithmetic; from about 1.66e13 ms the lease expires at once and the
    message comes back on every reclaim, with a rising attempt count."""
    wire.create_queue("q", visibility_timeout_ms=timeout_ms)
    wire.consume("q")
    mid = wire.enqueue("q")
    for attempt in range(3):
        m = wire.delivery(timeout=5)
        assert (m["message_id"], m["attempt_count"]) == (mid, attempt)


def test_a_visibility_timeout_below_the_overflow_holds(wire: Wire) -> None:
    wire.create_queue("q", visibility_timeout_ms=16_000_000_000_000)  # ~507 years
    wire.consume("q")
    wire.enqueue("q")
    assert wire.delivery()["attempt_count"] == 0
    wire.no_delivery(0.3)
