"""Every fault-injection knob of ``broker.faults``."""

from __future__ import annotations

import time
from collections.abc import Callable

from fila.protocol.constants import ErrorCode
from fila.protocol.constants import Opcode
from fila.protocol.messages import decode_body
from fila.protocol.messages import encode_message
from fila.testing import Broker

from .conftest import Closed
from .conftest import Wire
from .conftest import wait_until


def test_fail_next_channel_full_then_recovers(broker: Broker, wire: Wire) -> None:
    wire.create_queue("q")
    broker.faults.fail_next(2)
    for _ in range(2):
        body = wire.error("EnqueueRequest", {"messages": [{"queue": "q", "headers": {}, "payload": b""}]})
        assert body == {"error_code": ErrorCode.CHANNEL_FULL, "message": "scheduler overloaded", "metadata": {}}
    assert wire.enqueue("q")
    assert wire.stats("q")["depth"] == 1  # the failed requests were not executed


def test_fail_next_skips_requests_a_server_never_fails_that_way(broker: Broker, wire: Wire) -> None:
    broker.faults.fail_next(1)
    assert wire.call("Ping")[0] == Opcode.PONG
    assert wire.ok("ListApiKeysRequest") == {"error_code": 0, "keys": []}
    assert wire.error("ListQueuesRequest")["error_code"] == ErrorCode.CHANNEL_FULL


def test_fail_next_internal_error_for_one_opcode(broker: Broker, wire: Wire) -> None:
    wire.create_queue("q")
    broker.faults.fail_next(1, code=ErrorCode.INTERNAL_ERROR, opcode=Opcode.ACK)
    assert wire.enqueue("q")
    body = wire.error("AckRequest", {"items": []})
    assert (body["error_code"], body["message"]) == (ErrorCode.INTERNAL_ERROR, "scheduler unavailable")
    assert wire.ok("AckRequest", {"items": []}) == {"results": []}


def test_fail_next_on_consume_and_custom_message(broker: Broker, wire: Wire) -> None:
    broker.faults.fail_next(1, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.CONSUME, message="busy")
    assert wire.error("ConsumeRequest", {"queue": "q"})["message"] == "busy"
    wire.consume("q")


def test_close_all(broker: Broker, connect: Callable[..., Wire]) -> None:
    a, b = connect(), connect()
    wait_until(lambda: broker.connection_count == 2, what="connections")
    assert broker.faults.close_all() == 2
    assert a.assert_closed() == [] and b.assert_closed() == []
    c = connect()  # new connections are fine
    assert c.call("Ping")[0] == Opcode.PONG


def test_close_after_frames(broker: Broker, wire: Wire) -> None:
    broker.faults.close_after_frames(2)
    wire.send(encode_message("Ping", 1) + encode_message("Ping", 2) + encode_message("Ping", 3))
    frames = wire.assert_closed()
    assert [f.request_id for f in frames] == [1, 2]


def test_close_mid_frame(broker: Broker, wire: Wire) -> None:
    wire.create_queue("q")
    broker.faults.close_mid_frame(opcode=Opcode.ENQUEUE_RESULT)
    assert wire.call("Ping")[0] == Opcode.PONG  # other opcodes are untouched
    wire.send_msg("EnqueueRequest", 5, {"messages": [{"queue": "q", "headers": {}, "payload": b"abc"}]})
    assert wire.assert_closed() == []
    assert wire.reader.buffered > 0  # half a frame arrived


def _wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_delay_holds_responses_in_order(broker: Broker, connect: Callable[..., Wire]) -> None:
    slow, other = connect(), connect()
    broker.faults.delay(60, opcode=Opcode.LIST_QUEUES)
    slow.send(encode_message("ListQueuesRequest", 1) + encode_message("Ping", 2))
    assert other.call("Ping")[0] == Opcode.PONG  # other connections are not held
    slow.assert_silent(0.1)  # the Ping waits behind the held ListQueues
    broker.faults.clear_delay()  # releases the held request
    assert [slow.recv_frame().request_id for _ in range(2)] == [1, 2]
    assert slow.call("ListQueuesRequest")[0] == Opcode.LIST_QUEUES_RESULT


def test_delay_count(broker: Broker, connect: Callable[..., Wire]) -> None:
    held, free = connect(), connect()
    broker.faults.delay(60, count=1)
    held.send_msg("Ping", 1)
    _wait_until(lambda: broker.faults.held == 1)
    held.assert_silent(0.05)
    assert free.call("Ping")[0] == Opcode.PONG  # the one delayed request used the count up
    broker.faults.clear_delay()
    assert held.recv_frame().request_id == 1


def test_delay_ends_by_itself(broker: Broker, wire: Wire) -> None:
    broker.faults.delay(0.05, count=1)
    wire.send_msg("Ping", 1)
    assert wire.recv_frame().request_id == 1  # released by the timer, no clear_delay
    assert wire.call("Ping")[0] == Opcode.PONG


def test_reset_releases_held_requests(broker: Broker, wire: Wire) -> None:
    broker.faults.delay(60)
    wire.send_msg("Ping", 1)
    wire.assert_silent(0.05)
    broker.faults.reset()
    assert wire.recv_frame().request_id == 1


def test_pause_and_resume_reading(broker: Broker, wire: Wire) -> None:
    broker.faults.pause_reading()
    wire.send_msg("Ping", 1)
    wire.assert_silent(0.2)
    broker.faults.resume_reading()
    assert wire.recv_frame().request_id == 1


def test_paused_reading_fills_the_client_socket(broker: Broker, wire: Wire) -> None:
    broker.faults.pause_reading()
    wire.sock.settimeout(0.5)
    chunk = encode_message("Ping", 7) * 10000
    sent = 0
    try:
        for _ in range(2000):
            sent += wire.sock.send(chunk)
    except (TimeoutError, BlockingIOError):
        pass
    assert sent < 2000 * len(chunk)  # writes blocked: backpressure
    broker.faults.resume_reading()
    assert wire.recv_frame().opcode == Opcode.PONG


def test_not_leader_with_and_without_leader_addr(fila_broker_factory: Callable[..., Broker]) -> None:
    follower = fila_broker_factory(node_id=2)
    leader = fila_broker_factory(node_id=1)
    follower.faults.not_leader(leader)
    w = Wire(follower)
    try:
        body = w.error("ConsumeRequest", {"queue": "q"})
        assert body == {
            "error_code": ErrorCode.NOT_LEADER,
            "message": "not the leader for this queue",
            "metadata": {"leader_addr": leader.address},
        }
        follower.faults.not_leader()
        assert w.error("ConsumeRequest", {"queue": "q"})["metadata"] == {}
        follower.faults.not_leader("127.0.0.1:9", queue="other")
        w.consume("q")  # only "other" is redirected
        follower.faults.clear_not_leader()
        w.consume("other")
    finally:
        w.close()
    again = Wire(leader)
    try:
        assert again.handshake_ok is not None and again.handshake_ok["node_id"] == 1
        again.consume("q")
    finally:
        again.close()


def test_drop_subscriptions_goes_quiet(broker: Broker, wire: Wire) -> None:
    wire.create_queue("q")
    wire.consume("q")
    assert broker.faults.drop_subscriptions() == 1
    wire.enqueue("q")
    wire.no_delivery(0.2)
    assert wire.stats("q")["active_consumers"] == 0
    wire.consume("q")
    assert wire.delivery()["attempt_count"] == 0


def test_reset_disarms_everything(broker: Broker, wire: Wire) -> None:
    broker.faults.fail_next(5)
    broker.faults.delay(5)
    broker.faults.not_leader()
    broker.faults.close_after_frames(1)
    broker.faults.reset()
    assert wire.call("ListQueuesRequest")[0] == Opcode.LIST_QUEUES_RESULT
    wire.consume("q")


def test_faults_work_from_async_code() -> None:
    import asyncio

    async def main() -> None:
        async with Broker() as b:
            b.faults.fail_next(1, opcode=Opcode.PING)
            reader, writer = await asyncio.open_connection(b.host, b.port)
            writer.write(encode_message("Handshake", 0, {"protocol_version": 1, "api_key": None}))
            writer.write(encode_message("Ping", 3))
            await writer.drain()
            data = b""
            while len(data) < 24:
                chunk = await asyncio.wait_for(reader.read(4096), 5)
                if not chunk:
                    raise Closed("closed")
                data += chunk
            assert data[4] == Opcode.HANDSHAKE_OK
            err = data[24:]
            while len(err) < 10 or len(err) < 4 + int.from_bytes(err[:4], "big"):
                err += await asyncio.wait_for(reader.read(4096), 5)
            assert decode_body(Opcode.ERROR, err[10:])["error_code"] == ErrorCode.CHANNEL_FULL
            writer.close()

    asyncio.run(asyncio.wait_for(main(), 20))
