"""Socket- and scheduling-level timing that a client sees on the real server.

Each test names the SERVER.md fact it encodes. The timing tests assert only
wide bounds: lower bounds (which a slow machine cannot break) or upper bounds
far above what the same step takes on an idle machine.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from fila.protocol.constants import Opcode
from fila.protocol.messages import encode_message
from fila.testing import Broker
from fila.testing import TestPKI
from fila.testing import client_context

from .conftest import Wire
from .conftest import wait_until

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="relies on Linux's delayed ACK (~40 ms)")


def _connections(broker: Broker) -> list[dict[str, Any]]:
    return broker.call(lambda: [c.describe() for c in broker.connections])


# ------------------------------------------------------------------ Nagle


def test_accepted_sockets_keep_nagle_on(fila_broker_factory: Callable[..., Broker]) -> None:
    # SERVER.md §16.1: the server never sets TCP_NODELAY on a client connection.
    # asyncio sets it on every TCP transport; the broker clears it again.
    for nagle in (True, False):
        b = fila_broker_factory(nagle=nagle)
        w = Wire(b)
        try:
            (conn,) = _connections(b)
            assert conn["nodelay"] is (not nagle)
        finally:
            w.close()


def test_tls_sockets_keep_nagle_on(fila_broker_factory: Callable[..., Broker], fila_test_pki: TestPKI) -> None:
    # SERVER.md §16.1 and §3.1: TLS runs over the same accepted TCP socket, Nagle on.
    b = fila_broker_factory(tls_cert=fila_test_pki.server_cert, tls_key=fila_test_pki.server_key)
    w = Wire(b, ssl_context=client_context(fila_test_pki.ca_cert))
    try:
        assert w.call("Ping")[0] == Opcode.PONG
        (conn,) = _connections(b)
        assert conn["nodelay"] is False
    finally:
        w.close()


def _enqueue_to_delivery_ms(broker: Broker, n: int = 20, warmup: int = 3) -> list[float]:
    """A producer enqueues one message at a time; a consumer on its own connection
    acks each delivery and waits for the AckResult before the next enqueue."""
    producer, consumer = Wire(broker), Wire(broker)
    try:
        producer.create_queue("nagle")
        consumer.consume("nagle")
        samples = []
        for i in range(warmup + n):
            t0 = time.perf_counter()
            producer.enqueue("nagle")
            m = consumer.delivery()
            elapsed = time.perf_counter() - t0
            assert consumer.ack("nagle", m["message_id"]) == [0]
            if i >= warmup:
                samples.append(elapsed * 1000)
            time.sleep(0.002)  # about one message per 2 ms, as in the measurement of §16.1
        return samples
    finally:
        producer.close()
        consumer.close()


@linux_only
def test_nagle_holds_a_delivery_behind_an_unacknowledged_response(fila_broker_factory: Callable[..., Broker]) -> None:
    # SERVER.md §16.1: the AckResult goes out at once, but the next Delivery is
    # written while the AckResult is unacknowledged, so Nagle holds it until the
    # client's delayed ACK (~40 ms on Linux). Measured on the real server: p50 41.6 ms.
    slow = statistics.median(_enqueue_to_delivery_ms(fila_broker_factory()))
    fast = statistics.median(_enqueue_to_delivery_ms(fila_broker_factory(nagle=False)))
    assert slow > 15, f"median enqueue→delivery {slow:.2f} ms with Nagle on"
    assert fast < 10, f"median enqueue→delivery {fast:.2f} ms with TCP_NODELAY"


# ------------------------------------------------------------- frame writes


def _spy_writes(broker: Broker) -> list[bytes]:
    """Record every write of the broker's (only) connection from now on."""
    writes: list[bytes] = []

    def install() -> None:
        (conn,) = broker.connections
        t = conn.transport
        assert t is not None
        real = t.write

        def write(data: Any) -> None:
            writes.append(bytes(data))
            real(data)

        t.write = write  # type: ignore[method-assign]

    broker.call(install)
    return writes


def test_every_frame_is_its_own_write(broker: Broker, wire: Wire) -> None:
    # SERVER.md §2.1: the server flushes after each frame, so frames are never
    # coalesced into one write (which would hide Nagle's delays, §16.1).
    wire.create_queue("q")
    wire.consume("q")
    writes = _spy_writes(broker)
    enqueue = {"messages": [{"queue": "q", "headers": {}, "payload": b"m%d" % i} for i in range(3)]}
    wire.send(encode_message("EnqueueRequest", 7, enqueue) + encode_message("Ping", 8))
    assert wire.response(7).opcode == Opcode.ENQUEUE_RESULT
    assert wire.response(8).opcode == Opcode.PONG
    for _ in range(3):
        wire.delivery()
    wait_until(lambda: len(writes) >= 5, what="five writes")
    assert [(int.from_bytes(w[:4], "big") + 4, w[4]) for w in writes] == [
        (len(writes[0]), Opcode.ENQUEUE_RESULT),
        (len(writes[1]), Opcode.PONG),
        (len(writes[2]), Opcode.DELIVERY),
        (len(writes[3]), Opcode.DELIVERY),
        (len(writes[4]), Opcode.DELIVERY),
    ]


def test_deliveries_wait_while_requests_are_waiting(wire: Wire) -> None:
    # SERVER.md §4: a Delivery reaches the socket only when no complete request
    # is waiting in the read buffer, so pipelined requests are answered first.
    wire.create_queue("q")
    rid = wire.consume("q")
    enqueue = {"messages": [{"queue": "q", "headers": {}, "payload": b"x"}]}
    wire.send(encode_message("EnqueueRequest", 20, enqueue) + encode_message("Ping", 21) + encode_message("Ping", 22))
    seen = [(f.opcode, f.request_id) for f in (wire.recv_frame() for _ in range(4))]
    assert seen == [(Opcode.ENQUEUE_RESULT, 20), (Opcode.PONG, 21), (Opcode.PONG, 22), (Opcode.DELIVERY, rid)]


# ------------------------------------------------------ buffers and passes


def test_a_busy_connection_holds_64_plus_256_leases(broker: Broker, connect: Callable[..., Wire]) -> None:
    # SERVER.md §7.11 and §7.4: the scheduler leases into a 64-slot ready buffer
    # per consumer; a task moves them on into the connection's 256-slot outbound
    # buffer (holding one more while that is full); nothing is written while the
    # connection is busy with a request (§4). Then the consumer is full: the
    # lease is undone and the rest stays pending (§7.2).
    admin, consumer = connect(), connect()
    admin.create_queue("q")
    admin.enqueue_many([("q", b"x")] * 500)
    broker.faults.delay(60, opcode=Opcode.PING)  # keeps the consumer's connection busy
    consumer.send(encode_message("ConsumeRequest", 1, {"queue": "q"}) + encode_message("Ping", 2))
    assert consumer.recv_frame().opcode == Opcode.CONSUME_OK
    # Each GetStats is a scheduler command, so each is followed by a pass.
    wait_until(lambda: admin.stats("q")["in_flight"] == 64 + 1 + 256, what="321 leases")
    time.sleep(0.1)  # idle passes too
    assert admin.stats("q")["in_flight"] == 321
    broker.faults.clear_delay()
    assert consumer.response(2).opcode == Opcode.PONG
    got = len(consumer.deliveries)
    while got < 500:
        consumer.delivery()
        got += 1


def test_freed_room_is_refilled_by_the_next_scheduler_pass(fila_broker_factory: Callable[..., Broker]) -> None:
    # SERVER.md §7.3 and §7.11: the scheduler learns that a consumer's buffers
    # drained only on its next pass. A new subscription gets the 64 its ready
    # buffer holds (its task starts after ConsumeOk); then a Ping (no scheduler
    # command) starts no pass, while an Ack does: not itself, but the scheduler
    # iteration that follows it.
    b = fila_broker_factory(lease_check_interval=5.0)  # no idle pass during the test
    w = Wire(b)
    try:
        w.create_queue("q")
        w.enqueue_many([("q", b"x")] * 100)
        w.consume("q")
        first = [w.delivery() for _ in range(64)]
        w.no_delivery(0.3)
        assert w.call("Ping")[0] == Opcode.PONG
        w.no_delivery(0.3)
        assert w.ack("q", first[0]["message_id"]) == [0]
        rest = [w.delivery(timeout=2.5) for _ in range(36)]  # well before the idle pass at 5 s
        assert len({m["message_id"] for m in first + rest}) == 100
    finally:
        w.close()


def test_an_idle_scheduler_runs_a_pass_every_interval(fila_broker_factory: Callable[..., Broker]) -> None:
    # SERVER.md §7.3: without commands the scheduler still runs a delivery pass
    # each time it has been idle idle_timeout_ms (100 ms; lease_check_interval here).
    b = fila_broker_factory(lease_check_interval=0.3)
    w = Wire(b)
    try:
        w.create_queue("q")
        w.enqueue_many([("q", b"x")] * 100)
        start = time.monotonic()
        w.consume("q")
        for _ in range(64):
            w.delivery()
        w.delivery(timeout=5)  # the 65th comes with the idle pass, not before
        assert time.monotonic() - start >= 0.25
    finally:
        w.close()


# ----------------------------------------------------------- lease expiry


def _redelivered_under_traffic(broker: Broker, busy_for: float) -> tuple[bool, float]:
    """Lease one message (100 ms visibility), keep another connection busy with
    GetStats for ``busy_for`` s; whether it came back meanwhile, or else how long
    after the traffic stopped."""
    consumer, admin = Wire(broker), Wire(broker)
    try:
        admin.create_queue("q", visibility_timeout_ms=100)
        consumer.consume("q")
        admin.enqueue("q")
        assert consumer.delivery()["attempt_count"] == 0
        end = time.monotonic() + busy_for
        while time.monotonic() < end:
            admin.stats("q")
            time.sleep(0.01)
        quiet = time.monotonic()
        try:
            m = consumer.delivery(timeout=0.1)  # already there: it came back during the traffic
        except AssertionError:
            m = consumer.delivery(timeout=5)
            assert m["attempt_count"] == 1
            return False, time.monotonic() - quiet
        assert m["attempt_count"] == 1
        return True, 0.0
    finally:
        consumer.close()
        admin.close()


def test_leases_expire_only_when_the_scheduler_is_idle(fila_broker_factory: Callable[..., Broker]) -> None:
    # SERVER.md §7.6: the scheduler scans for expired leases only after
    # idle_timeout_ms (100 ms; lease_check_interval here) without any command,
    # so steady request traffic postpones redelivery indefinitely.
    b = fila_broker_factory(lease_check_interval=0.5)
    back_during, after = _redelivered_under_traffic(b, busy_for=1.2)
    assert not back_during, "redelivered although the scheduler was never idle"
    assert after >= 0.3  # the scan waits for 0.5 s without a command


def test_idle_reclaim_off_reclaims_on_a_fixed_tick(fila_broker_factory: Callable[..., Broker]) -> None:
    b = fila_broker_factory(lease_check_interval=0.05, idle_reclaim=False)
    back_during, _ = _redelivered_under_traffic(b, busy_for=1.2)
    assert back_during


def test_deliveries_buffered_at_cancel_still_arrive(broker: Broker, connect: Callable[..., Wire]) -> None:
    # SERVER.md §6.5 and §7.7: CancelConsume unregisters the consumer, but what
    # its buffers hold stays leased and is still written, under the old request id.
    admin, consumer = connect(), connect()
    admin.create_queue("q")
    admin.enqueue_many([("q", b"x")] * 400)
    broker.faults.delay(60, opcode=Opcode.PING)  # keeps the consumer's connection busy
    consumer.send(
        encode_message("ConsumeRequest", 1, {"queue": "q"})
        + encode_message("Ping", 2)
        + encode_message("CancelConsume", 1)
    )
    assert consumer.recv_frame().opcode == Opcode.CONSUME_OK
    wait_until(lambda: admin.stats("q")["in_flight"] == 321, what="321 leases")
    broker.faults.clear_delay()
    assert consumer.response(2).opcode == Opcode.PONG
    assert {consumer.delivery()["rid"] for _ in range(321)} == {1}
    consumer.no_delivery(0.3)
    stats = admin.stats("q")
    assert (stats["in_flight"], stats["depth"], stats["active_consumers"]) == (321, 400, 0)


def test_cli_timing_switches() -> None:
    from fila.testing.__main__ import _broker
    from fila.testing.__main__ import _parser

    default = _broker(_parser().parse_args([]))
    assert (default.nagle, default.idle_reclaim, default.lease_check_interval) == (True, True, 0.1)
    args = _parser().parse_args(["--no-nagle", "--no-idle-reclaim", "--lease-check-interval", "0.05"])
    switched = _broker(args)
    assert (switched.nagle, switched.idle_reclaim, switched.lease_check_interval) == (False, False, 0.05)
