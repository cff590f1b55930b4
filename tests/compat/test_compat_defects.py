"""The 12 defects of fila-python 0.3.0 (SEED_API.md §6), each shown ABSENT, sync and asyncio.

Every test says what 0.3.0's behaviour would have done to it. Waits poll
conditions with deadlines; the only deliberate idle periods are in D4, where
idleness is the condition under test.
"""

from __future__ import annotations

import asyncio
import gc
import struct
import tempfile
import threading
import time
from typing import Any

import pytest
from compat_helpers import RequestSpy
from compat_helpers import await_until
from compat_helpers import error_frame
from compat_helpers import raw_frame
from compat_helpers import run
from compat_helpers import wait_until
from compat_helpers import within

import fila
from fila import errors as E
from fila.protocol import pure
from fila.protocol.constants import ErrorCode
from fila.protocol.constants import Opcode
from fila.protocol.messages import encode_message
from fila.testing import Broker

BIG = 16 * 1024 * 1024 + 1024 * 1024  # 17 MiB: above the 16 MiB frame limit


def addr_of(b: Broker) -> str:
    return f"127.0.0.1:{b.port}"


def _retrying(fn: Any, timeout: float = 10.0) -> Any:
    """``fn()`` once a reconnect has happened: connection errors from a dying connection are retried."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except E.FilaConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# ===================================================================== D1


# (code, class it must be, class 0.3.0 wrongly raised)
D1_CASES = [
    (ErrorCode.UNAUTHORIZED, fila.UnauthorizedError, fila.UnavailableError),
    (ErrorCode.FORBIDDEN, fila.ForbiddenError, fila.UnauthorizedError),
    (ErrorCode.CHANNEL_FULL, fila.ChannelFullError, fila.ProtocolError),
    (ErrorCode.INVALID_FRAME, fila.InvalidArgumentError, fila.ChannelFullError),
    (ErrorCode.LUA_COMPILATION_ERROR, fila.LuaError, fila.InvalidArgumentError),
    (ErrorCode.API_KEY_NOT_FOUND, fila.ApiKeyNotFoundError, fila.ForbiddenError),
    (ErrorCode.NOT_A_DLQ, fila.InvalidArgumentError, fila.PermissionDeniedError),
    (ErrorCode.PARENT_QUEUE_NOT_FOUND, fila.QueueNotFoundError, fila.ResourceExhaustedError),
    (ErrorCode.STORAGE_ERROR, fila.ProtocolError, fila.EnqueueError),
]


@pytest.mark.parametrize(
    ("code", "right", "wrong"), D1_CASES, ids=lambda v: v.name if isinstance(v, int) else v.__name__
)
def test_d1_codes_map_to_the_servers_meaning(code: int, right: type, wrong: type) -> None:
    err = E.error_for_code(code, "m")
    assert isinstance(err, right) and not isinstance(err, wrong)


def test_d1_live_codes_sync(broker_factory: Any) -> None:
    b = broker_factory(api_key="root")
    with pytest.raises(fila.UnauthorizedError):  # 0.3.0: UnavailableError
        fila.Client(addr_of(b), api_key="nope")
    with fila.Client(addr_of(b), api_key="root", request_timeout=0.5) as c:
        c.create_queue("q")
        with pytest.raises(fila.LuaError):  # 0.3.0: InvalidArgumentError
            c.create_queue("lua", on_enqueue="this is not lua")
        with pytest.raises(fila.ApiKeyNotFoundError):  # 0.3.0: ForbiddenError
            c.revoke_api_key("unknown")
        with pytest.raises(fila.InvalidArgumentError):  # 0.3.0: PermissionDeniedError
            c.redrive("q", 0)
        b.faults.fail_next(1000, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.LIST_QUEUES)
        with pytest.raises(fila.ChannelFullError):  # 0.3.0: ProtocolError
            c.list_queues()
        b.faults.reset()
        key = c.create_api_key("k")
    with fila.Client(addr_of(b), api_key=key.raw_key) as limited:
        with pytest.raises(fila.ForbiddenError):  # 0.3.0: UnauthorizedError
            limited.enqueue("q", None, b"x")


def test_d1_live_codes_async(broker_factory: Any) -> None:
    b = broker_factory(api_key="root")

    async def body() -> None:
        with pytest.raises(fila.UnauthorizedError):
            async with fila.AsyncClient(addr_of(b), api_key="nope"):
                pass
        async with fila.AsyncClient(addr_of(b), api_key="root") as c:
            await c.create_queue("q")
            with pytest.raises(fila.LuaError):
                await c.create_queue("lua", on_enqueue="this is not lua")
            with pytest.raises(fila.ApiKeyNotFoundError):
                await c.get_acl("unknown")
            with pytest.raises(fila.InvalidArgumentError):
                await c.redrive("q", 0)
            key = await c.create_api_key("k")
        async with fila.AsyncClient(addr_of(b), api_key=key.raw_key) as limited:
            with pytest.raises(fila.ForbiddenError):
                await limited.consume("q")

    run(body())


# ===================================================================== D2


def test_d2_cancel_consume_carries_the_consume_request_id(broker: Broker, spy: RequestSpy, client: fila.Client) -> None:
    """0.3.0 sent CancelConsume with a new request id: the server ignored it and kept pushing."""
    client.create_queue("q")
    stream = client.consume("q")
    assert client.get_stats("q").active_consumers == 1
    stream.close()
    wait_until(lambda: spy.count(Opcode.CANCEL_CONSUME) == 1, what="CancelConsume")
    ((_, consume_rid, _),) = spy.of(Opcode.CONSUME)
    ((_, cancel_rid, active_rid),) = spy.of(Opcode.CANCEL_CONSUME)
    assert cancel_rid == consume_rid == active_rid  # it named the live subscription


def test_d2_after_closing_a_consumer_messages_go_to_the_other(broker: Broker, addr: str) -> None:
    with fila.Client(addr) as c1, fila.Client(addr) as c2:
        c1.create_queue("q")
        first = c1.consume("q")
        second = c2.consume("q")
        assert c1.get_stats("q").active_consumers == 2
        first.close()
        wait_until(lambda: c1.get_stats("q").active_consumers == 1, what="one consumer left")
        ids = [c1.enqueue("q", None, b"%d" % i) for i in range(6)]
        got = within(10, lambda: [next(second).id for _ in range(6)])
        assert sorted(got) == sorted(ids)
        assert c1.get_stats("q").in_flight == 6  # nothing leased to the closed consumer


def test_d2_async_cancel(broker: Broker, spy: RequestSpy, addr: str) -> None:
    async def body() -> None:
        async with fila.AsyncClient(addr) as c, fila.AsyncClient(addr) as other:
            await c.create_queue("q")
            first = await c.consume("q")
            second = await other.consume("q")
            await first.aclose()
            await await_until(lambda: spy.count(Opcode.CANCEL_CONSUME) == 1, what="CancelConsume")
            ((_, cancel_rid, active_rid),) = spy.of(Opcode.CANCEL_CONSUME)
            assert cancel_rid == active_rid
            ids = [await c.enqueue("q", None, b"%d" % i) for i in range(4)]
            got = [(await asyncio.wait_for(second.__anext__(), 10)).id for _ in range(4)]
            assert sorted(got) == sorted(ids)
            assert (await c.get_stats("q")).active_consumers == 1
            await second.aclose()

    run(body())


# ===================================================================== D3


def test_d3_ack_while_a_consumer_streams_on_the_same_client(client: fila.Client) -> None:
    """0.3.0: ack() read a pushed Delivery as its AckResult; that message never reached the iterator."""
    client.create_queue("q")
    n = 30
    ids = {client.enqueue("q", None, b"%d" % i) for i in range(n)}
    stream = client.consume("q")

    def consume_and_ack() -> set[str]:
        seen: set[str] = set()
        for m in stream:
            client.ack(m.queue, m.id)  # requests interleave with the deliveries still arriving
            seen.add(m.id)
            if len(seen) == n:
                return seen
        return seen

    assert within(20, consume_and_ack) == ids
    assert client.get_stats("q").depth == 0


def test_d3_concurrent_threads_get_their_own_replies(client: fila.Client) -> None:
    for i in range(8):
        client.set_config(f"t.{i}", f"value-{i}")
    errors: list[str] = []

    def worker(i: int) -> None:
        for _ in range(25):
            got = client.get_config(f"t.{i}")
            if got != f"value-{i}":
                errors.append(f"thread {i} got {got!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_d3_a_late_reply_does_not_answer_the_next_request(broker: Broker, client: fila.Client) -> None:
    """0.3.0 took whatever frame came next as the reply: after a timeout, every reply was one behind."""
    client.set_config("a", "1")
    client.set_config("b", "2")
    broker.faults.delay(0.5, opcode=Opcode.GET_CONFIG, count=1)
    with pytest.raises(E.RequestTimeoutError) as info:
        client.get_config("a", timeout=0.1)
    assert isinstance(info.value, fila.FilaError) and isinstance(info.value, TimeoutError)
    assert client.get_config("b") == "2"  # not "1", the late answer to "a"
    assert client.get_config("a") == "1"


def test_d3_async_ack_while_another_task_awaits_the_stream(addr: str) -> None:
    """0.3.0: RuntimeError: readexactly() called while another coroutine is already waiting."""

    async def body() -> None:
        async with fila.AsyncClient(addr) as c:
            await c.create_queue("q")
            await c.enqueue("q", None, b"first")
            stream = await c.consume("q")
            first = await asyncio.wait_for(stream.__anext__(), 10)
            waiting = asyncio.ensure_future(stream.__anext__())  # a task blocked on the stream
            await asyncio.sleep(0)
            await c.ack(first.queue, first.id)
            values = await asyncio.gather(*(c.get_config(f"k{i}") for i in range(50)))
            assert values == [""] * 50
            mid = await c.enqueue("q", None, b"second")
            assert (await asyncio.wait_for(waiting, 10)).id == mid
            await stream.aclose()

    run(body())


def test_d3_async_late_reply(broker: Broker, addr: str) -> None:
    async def body() -> None:
        async with fila.AsyncClient(addr) as c:
            await c.set_config("a", "1")
            await c.set_config("b", "2")
            broker.faults.delay(0.5, opcode=Opcode.GET_CONFIG, count=1)
            with pytest.raises(E.RequestTimeoutError):
                await c.get_config("a", timeout=0.1)
            assert await c.get_config("b") == "2"
            results = await asyncio.gather(*(c.get_config(k) for k in "abab"))
            assert results == ["1", "2", "1", "2"]

    run(body())


# ===================================================================== D4

IDLE = 1.5  # seconds: three times every timeout configured below


def test_d4_idle_consumer_and_client_stay_connected(broker: Broker, spy: RequestSpy, addr: str) -> None:
    """0.3.0 left the 10 s connect timeout on the socket: an idle stream ended silently.

    Here every timeout is 0.5 s and keepalive is off, so a socket timeout
    left over from connecting (or a request timeout applied to reads) would
    kill both connections during the idle period: the stream would then
    resubscribe (a second Consume) and the client reconnect (new broker
    connections). Neither may happen.
    """
    with fila.Client(addr, connect_timeout=0.5, request_timeout=0.5, keepalive_interval=None) as c:
        c.create_queue("q")
        stream = c.consume("q")
        before = set(broker.connections)
        time.sleep(IDLE)  # idleness is what is tested
        mid = c.enqueue("q", None, b"after idle")
        assert within(5, next, stream).id == mid
        assert set(broker.connections) == before
        assert spy.count(Opcode.CONSUME) == 1


def test_d4_slow_reply_within_the_callers_timeout_is_fine(broker: Broker, addr: str) -> None:
    """0.3.0: a reply slower than 10 s raised a raw TimeoutError. The per-call timeout decides here."""
    with fila.Client(addr, request_timeout=0.2) as c:
        broker.faults.delay(0.6, opcode=Opcode.GET_CONFIG, count=1)
        assert c.get_config("k", timeout=5) == ""
        broker.faults.delay(5, opcode=Opcode.GET_CONFIG, count=1)
        t0 = time.monotonic()
        with pytest.raises(E.RequestTimeoutError):
            c.get_config("k")  # the client's request_timeout
        assert time.monotonic() - t0 < 3
        broker.faults.clear_delay()


def test_d4_async_idle_and_hung_server(broker: Broker, spy: RequestSpy, addr: str) -> None:
    """0.3.0 async bounded only the connect: a hung server hung every await."""

    async def body() -> None:
        async with fila.AsyncClient(addr, connect_timeout=0.5, request_timeout=0.5, keepalive_interval=None) as c:
            await c.create_queue("q")
            stream = await c.consume("q")
            before = set(broker.connections)
            await asyncio.sleep(IDLE)
            mid = await c.enqueue("q", None, b"x")
            assert (await asyncio.wait_for(stream.__anext__(), 5)).id == mid
            assert set(broker.connections) == before and spy.count(Opcode.CONSUME) == 1
            broker.faults.delay(30, opcode=Opcode.LIST_QUEUES)
            t0 = time.monotonic()
            with pytest.raises(E.RequestTimeoutError):
                await c.list_queues()
            with pytest.raises(E.RequestTimeoutError):
                await c.list_queues(timeout=0.1)
            assert time.monotonic() - t0 < 5
            broker.faults.clear_delay()
            await stream.aclose()

    run(body())


# ===================================================================== D5


def test_d5_lost_connection_resubscribes_instead_of_ending(broker: Broker, spy: RequestSpy, addr: str) -> None:
    """0.3.0 swallowed the connection error: the for loop just ended, as if the stream were over."""
    with fila.Client(addr, reconnect_initial_delay=0.01) as c:
        c.create_queue("q")
        stream = c.consume("q")
        broker.faults.close_all()
        wait_until(lambda: spy.count(Opcode.CONSUME) == 2, what="the stream to resubscribe")
        with fila.Client(addr) as producer:
            mid = producer.enqueue("q", None, b"after the drop")
        assert within(10, next, stream).id == mid  # not StopIteration


def test_d5_final_failure_raises_instead_of_ending(broker_factory: Any) -> None:
    b = broker_factory(api_key="root")
    addr = addr_of(b)
    with fila.Client(addr, api_key="root") as admin:
        admin.create_queue("q")
        key = admin.create_api_key("consumer")
        admin.set_acl(key.key_id, [("consume", "q")])
        with fila.Client(addr, api_key=key.raw_key, reconnect_initial_delay=0.01) as c:
            stream = c.consume("q")
            admin.set_acl(key.key_id, [])  # the resubscribe will be refused
            b.faults.close_all()
            with pytest.raises(fila.ForbiddenError):
                within(10, next, stream)


def test_d5_async_lost_connection_and_final_failure(broker_factory: Any) -> None:
    """0.3.0 async let a raw asyncio.IncompleteReadError escape on server close."""
    b = broker_factory(api_key="root")
    addr = addr_of(b)

    async def body() -> None:
        async with fila.AsyncClient(addr, api_key="root") as admin:
            await admin.create_queue("q")
            key = await admin.create_api_key("consumer")
            await admin.set_acl(key.key_id, [("consume", "q"), ("produce", "q")])
            async with fila.AsyncClient(addr, api_key=key.raw_key, reconnect_initial_delay=0.01) as c:
                stream = await c.consume("q")
                b.faults.close_all()

                async def resubscribed() -> bool:
                    try:
                        return (await admin.get_stats("q")).active_consumers == 1
                    except E.FilaConnectionError:
                        return False

                await await_until(resubscribed, what="the stream to resubscribe")
                async with fila.AsyncClient(addr, api_key="root") as producer:
                    mid = await producer.enqueue("q", None, b"x")
                assert (await asyncio.wait_for(stream.__anext__(), 10)).id == mid
                await admin.set_acl(key.key_id, [])
                b.faults.close_all()
                with pytest.raises(fila.ForbiddenError):
                    async for _ in stream:
                        pass

    run(body())


# ===================================================================== D6


def test_d6_never_iterated_stream_cancels_on_close_and_gc(broker: Broker, spy: RequestSpy, client: fila.Client) -> None:
    """0.3.0 cancelled only in the generator's finally: a stream never started never cancelled."""
    client.create_queue("q")
    stream = client.consume("q")
    stream.close()
    wait_until(lambda: client.get_stats("q").active_consumers == 0, what="close to cancel")
    assert spy.count(Opcode.CANCEL_CONSUME) == 1
    dropped = client.consume("q")
    assert client.get_stats("q").active_consumers == 1
    del dropped
    gc.collect()
    wait_until(lambda: client.get_stats("q").active_consumers == 0, what="garbage collection to cancel")


def test_d6_async_never_iterated(broker: Broker, spy: RequestSpy, addr: str) -> None:
    async def body() -> None:
        async with fila.AsyncClient(addr) as c:
            await c.create_queue("q")
            stream = await c.consume("q")
            await stream.aclose()
            await await_until(lambda: _consumers(c, 0), what="aclose to cancel")
            assert spy.count(Opcode.CANCEL_CONSUME) == 1
            dropped = await c.consume("q")
            assert (await c.get_stats("q")).active_consumers == 1
            del dropped
            gc.collect()
            await await_until(lambda: _consumers(c, 0), what="garbage collection to cancel")

    run(body())


async def _consumers(c: fila.AsyncClient, n: int, queue: str = "q") -> bool:
    return (await c.get_stats(queue)).active_consumers == n


# ===================================================================== D7


def test_d7_stream_survives_the_clients_reconnects(broker_factory: Any) -> None:
    """0.3.0's sync stream read whatever connection the client had now: after a reconnect, nothing."""
    leader = broker_factory(node_id=2)
    follower = broker_factory(node_id=1)
    leader.create_queue("q")
    follower.create_queue("q")
    follower.faults.not_leader(leader_addr=leader)
    leader_spy = RequestSpy(leader)
    with fila.Client(addr_of(follower)) as c, fila.Client(addr_of(leader)) as producer:
        stream = c.consume("q")  # the hint is followed by the stream only
        producer.enqueue("q", None, b"1")
        assert within(10, next, stream).payload == b"1"
        assert c.get_stats("q").leader_node_id == 1  # the client's requests stay where they were sent
        follower.faults.close_all()  # the client's own connection drops and is reopened on next use
        assert _retrying(lambda: c.get_stats("q")).leader_node_id == 1
        producer.enqueue("q", None, b"2")
        assert within(10, next, stream).payload == b"2"
        assert leader_spy.count(Opcode.CONSUME) == 1  # the stream never had to resubscribe


def test_d7_async_stream_survives_the_clients_reconnects(broker_factory: Any) -> None:
    leader = broker_factory(node_id=2)
    follower = broker_factory(node_id=1)
    leader.create_queue("q")
    follower.create_queue("q")
    follower.faults.not_leader(leader_addr=leader)

    async def body() -> None:
        async with fila.AsyncClient(addr_of(follower)) as c, fila.AsyncClient(addr_of(leader)) as producer:
            stream = await c.consume("q")
            await producer.enqueue("q", None, b"1")
            assert (await asyncio.wait_for(stream.__anext__(), 10)).payload == b"1"
            follower.faults.close_all()

            async def client_back() -> bool:
                try:
                    return (await c.get_stats("q")).leader_node_id == 1
                except E.FilaConnectionError:
                    return False

            await await_until(client_back, what="the client to reconnect")
            await producer.enqueue("q", None, b"2")
            assert (await asyncio.wait_for(stream.__anext__(), 10)).payload == b"2"
            await stream.aclose()

    run(body())


# ===================================================================== D8

MODES = [fila.AccumulatorMode.AUTO, fila.Linger(50, 10), fila.AccumulatorMode.DISABLED]


@pytest.mark.parametrize("mode", MODES, ids=repr)
def test_d8_enqueue_after_close_raises_promptly(addr: str, mode: Any) -> None:
    """0.3.0 blocked forever in AUTO/Linger mode (raw OSError in DISABLED)."""
    c = fila.Client(addr, accumulator_mode=mode)
    c.create_queue("q")
    c.close()
    t0 = time.monotonic()
    with pytest.raises(E.ClientClosedError) as info:
        within(5, c.enqueue, "q", None, b"x")
    assert isinstance(info.value, fila.FilaError) and time.monotonic() - t0 < 2
    with pytest.raises(E.ClientClosedError):
        within(5, c.get_stats, "q")


def test_d8_close_drains_what_was_submitted(addr: str) -> None:
    c = fila.Client(addr, accumulator_mode=fila.Linger(60_000, 1000))
    c.create_queue("q")
    futures = [c.enqueue_nowait("q", None, b"%d" % i) for i in range(5)]
    results: list[Any] = []
    blocked = threading.Thread(target=lambda: results.append(c.enqueue("q", None, b"blocked")))
    blocked.start()
    wait_until(lambda: c._acc._items and len(c._acc._items) == 6, what="the blocked enqueue to be queued")
    within(10, c.close)
    blocked.join(5)
    assert all(isinstance(f.result(0), str) for f in futures) and isinstance(results[0], str)
    with fila.Client(addr) as check:
        assert check.get_stats("q").depth == 6


def test_d8_batch_failure_class_does_not_depend_on_batch_size(broker: Broker, addr: str) -> None:
    """0.3.0: a failed batch of 1 re-raised the original error; of 2+, wrapped it in EnqueueError."""
    broker.create_queue("q")
    broker.faults.fail_next(1000, code=ErrorCode.INTERNAL_ERROR, opcode=Opcode.ENQUEUE)
    with fila.Client(addr, accumulator_mode=fila.Linger(20, 10)) as c:
        futures = [c.enqueue_nowait("q", None, b"x") for _ in range(10)]
        errors = [f.exception(10) for f in futures]
        with pytest.raises(fila.ProtocolError) as single:
            c.enqueue("q", None, b"alone")
    assert {type(e) for e in errors} == {type(single.value)} == {E.InternalServerError}


def test_d8_leader_hint_followed_on_the_accumulated_path(fake_server: Any, broker: Broker, addr: str) -> None:
    # 0.3.0 lost leader_addr on the accumulated path and never followed it. Now a NotLeader
    # hint sends the batch again at the leader: every future resolves to an id stored there.
    broker.create_queue("q")

    def respond(op: int, rid: int, payload: bytes) -> bytes | None:
        if op == Opcode.ENQUEUE:
            return error_frame(rid, ErrorCode.NOT_LEADER, "not the leader", {"leader_addr": addr})
        return None

    s = fake_server(respond)
    with fila.Client(s.address, accumulator_mode=fila.Linger(20, 10)) as c:
        futures = [c.enqueue_nowait("q", None, b"x") for _ in range(3)]
        assert all(isinstance(f.result(10), str) for f in futures)
    assert broker.stats("q")["depth"] == 3


def test_d8_leader_addr_kept_when_the_hint_leads_nowhere(fake_server: Any) -> None:
    # Two peers that each name the other as leader: the hint is followed once, then the
    # NotLeaderError reaches every caller with its leader_addr (0.3.0 dropped it).
    hints: dict[str, str] = {}

    def make(name: str) -> Any:
        def respond(op: int, rid: int, payload: bytes) -> bytes | None:
            if op == Opcode.ENQUEUE:
                return error_frame(rid, ErrorCode.NOT_LEADER, "not the leader", {"leader_addr": hints[name]})
            return None

        return fake_server(respond)

    a, b = make("a"), make("b")
    hints["a"], hints["b"] = b.address, a.address
    with fila.Client(a.address, accumulator_mode=fila.Linger(20, 10)) as c:
        futures = [c.enqueue_nowait("q", None, b"x") for _ in range(3)]
        for f in futures:
            err = f.exception(10)
            assert isinstance(err, fila.NotLeaderError) and err.leader_addr == a.address


def test_d8_async_enqueue_after_close(addr: str) -> None:
    # SEED §3.2: a closed AsyncClient stays usable — a later call reconnects. D8: whatever the
    # mode, the call after close() answers promptly (the 5 s guard fails a hang), and the
    # message it confirms is really stored.
    async def body() -> None:
        for mode in MODES:
            c = fila.AsyncClient(addr, accumulator_mode=mode)
            await c.create_queue(f"d8-{id(mode)}")
            await c.close()
            assert c.closed
            mid = await asyncio.wait_for(c.enqueue(f"d8-{id(mode)}", None, b"x"), 5)
            assert not c.closed
            stats = await asyncio.wait_for(c.get_stats(f"d8-{id(mode)}"), 5)
            assert stats.depth == 1 and isinstance(mid, str)
            await c.delete_queue(f"d8-{id(mode)}")
            await c.close()

    run(body())


# ===================================================================== D9


def test_d9_error_frame_metadata_is_kept(fake_server: Any) -> None:
    meta = {"retry_after_ms": "7", "x-custom": "kept", "detail": "queue orders"}

    def respond(op: int, rid: int, payload: bytes) -> bytes | None:
        return error_frame(rid, ErrorCode.FORBIDDEN, "denied by policy", meta)

    s = fake_server(respond)
    with fila.Client(s.address) as c:
        with pytest.raises(fila.ForbiddenError) as info:
            c.get_config("k")
    assert info.value.metadata == meta and info.value.message == "denied by policy"

    async def body() -> None:
        async with fila.AsyncClient(s.address) as ac:
            with pytest.raises(fila.ForbiddenError) as ainfo:
                await ac.list_queues()
            assert ainfo.value.metadata == meta

    run(body())


def test_d9_per_item_text_is_kept(fake_server: Any) -> None:
    text = "forward error: node 3 timed out"

    def respond(op: int, rid: int, payload: bytes) -> bytes | None:
        if op == Opcode.ENQUEUE:  # per-item texts as a cluster node sends them (0xFF: not retried)
            items = pure.decode_enqueue(payload)
            return pure.encode_enqueue_result(rid, [(ErrorCode.INTERNAL_ERROR, text)] * len(items))
        return None

    s = fake_server(respond)
    with fila.Client(s.address, accumulator_mode=fila.AccumulatorMode.DISABLED) as c:
        (r,) = c.enqueue_many([("q", None, b"x")])
        assert r.message_id is None and r.error.startswith("error 0xff") and text in r.error
        with pytest.raises(fila.ProtocolError) as info:
            c.enqueue("q", None, b"x")
        assert text in str(info.value)

    async def body() -> None:
        async with fila.AsyncClient(s.address) as ac:
            (ar,) = await ac.enqueue_many([("q", None, b"x")])
            assert ar.error.startswith("error 0xff") and text in ar.error

    run(body())


def test_d9_lua_error_text_is_kept(client: fila.Client) -> None:
    """0.3.0 replaced admin failures' text with '<method> failed' (the server puts Lua's error in queue_id)."""
    with pytest.raises(fila.LuaError) as info:
        client.create_queue("bad", on_enqueue="function on_enqueue(msg) return {")
    assert "create_queue failed" not in str(info.value)
    assert "lua" in info.value.message.lower() and len(info.value.message) > 20


# ==================================================================== D10


def test_d10_lone_client_cert_or_key_is_refused(pki: Any) -> None:
    """0.3.0 silently ignored a client_cert without client_key (and vice versa)."""
    for kwargs in ({"client_cert": pki.client_cert_pem}, {"client_key": pki.client_key_pem}):
        for cls in (fila.Client, fila.AsyncClient):
            with pytest.raises(ValueError):
                cls("127.0.0.1:1", tls=True, **kwargs)
            with pytest.raises(ValueError):
                cls("127.0.0.1:1", ca_cert=pki.ca_cert_pem, **kwargs)


def test_d10_pem_bytes_tls_and_mtls(broker_factory: Any, pki: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    tls = broker_factory(tls_cert=pki.server_cert, tls_key=pki.server_key)
    mtls = broker_factory(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca_cert)

    def no_temp_files(*a: Any, **k: Any) -> Any:
        raise AssertionError("the private key must not be written to a named temporary file")

    import sys

    if sys.platform.startswith("linux"):
        monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_temp_files)
        monkeypatch.setattr(tempfile, "mkstemp", no_temp_files)
    with pytest.raises(fila.FilaError):  # tls=True trusts the system store only: the test CA is not in it
        fila.Client(addr_of(tls), tls=True, connect_timeout=5)
    with fila.Client(addr_of(tls), ca_cert=pki.ca_cert_pem) as c:  # CA as PEM bytes
        c.create_queue("q")
        assert c.enqueue("q", None, b"x")
    mt = {"ca_cert": pki.ca_cert_pem, "client_cert": pki.client_cert_pem, "client_key": pki.client_key_pem}
    with fila.Client(addr_of(mtls), **mt) as c:
        c.create_queue("q")
        stream = c.consume("q")
        mid = c.enqueue("q", None, b"y")
        assert within(10, next, stream).id == mid
    with pytest.raises(fila.FilaError) as info:  # mTLS server, no client certificate
        fila.Client(addr_of(mtls), ca_cert=pki.ca_cert_pem, connect_timeout=5)
    assert isinstance(info.value, ConnectionError)

    async def body() -> None:
        async with fila.AsyncClient(addr_of(mtls), **mt) as ac:
            assert await ac.enqueue("q", None, b"z")

    run(body())


# ==================================================================== D11


def test_d11_transport_failures_are_fila_errors_and_oserrors(broker: Broker, client: fila.Client) -> None:
    """0.3.0 let ConnectionError / asyncio.IncompleteReadError / ssl errors through raw."""
    client.create_queue("q")
    broker.faults.delay(30, opcode=Opcode.GET_CONFIG)
    box: list[BaseException] = []
    t = threading.Thread(target=lambda: _catch(box, client.get_config, "k"))
    t.start()
    wait_until(lambda: broker.faults.held == 1, what="the request to be held")
    broker.faults.close_all()
    t.join(10)
    (err,) = box
    assert isinstance(err, fila.FilaError) and isinstance(err, ConnectionError) and isinstance(err, OSError)
    assert isinstance(err, E.ConnectionLostError) and err.may_have_been_applied


def test_d11_truncated_answer_then_eof(broker: Broker, addr: str) -> None:
    with fila.Client(addr) as c:
        broker.faults.close_mid_frame(opcode=Opcode.GET_STATS_RESULT)
        c.create_queue("q")
        with pytest.raises(fila.FilaError) as cut:
            c.get_stats("q")
        assert isinstance(cut.value, OSError) and isinstance(cut.value, E.ConnectionLostError)
        assert cut.value.may_have_been_applied  # the request went out; part of its answer came back
        assert _retrying(lambda: c.get_stats("q")).depth == 0

    async def body() -> None:
        async with fila.AsyncClient(addr) as ac:
            broker.faults.close_mid_frame(opcode=Opcode.GET_STATS_RESULT)
            with pytest.raises(E.ConnectionLostError) as acut:
                await ac.get_stats("q")
            assert acut.value.may_have_been_applied and isinstance(acut.value, OSError)
            assert (await ac.get_stats("q")).depth == 0

    run(body())


def _catch(box: list[BaseException], fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except BaseException as exc:
        box.append(exc)


def _malformed(op: int, rid: int, payload: bytes) -> bytes | None:
    if op == Opcode.GET_CONFIG:  # error code, then a string that claims 200 bytes and has 3
        return raw_frame(Opcode.GET_CONFIG_RESULT, rid, b"\x00" + struct.pack(">H", 200) + b"abc")
    if op == Opcode.ENQUEUE:  # two results announced, one present
        return raw_frame(Opcode.ENQUEUE_RESULT, rid, struct.pack(">I", 2) + b"\x00" + struct.pack(">H", 2) + b"id")
    if op == Opcode.LIST_QUEUES:  # a body that ends in the middle of a u16
        return raw_frame(Opcode.LIST_QUEUES_RESULT, rid, b"\x00\x00")
    return None


def test_d11_malformed_frames_raise_protocol_errors(fake_server: Any) -> None:
    """0.3.0 leaked IndexError / struct.error / UnicodeDecodeError from its reader."""
    s = fake_server(_malformed)
    with fila.Client(s.address, accumulator_mode=fila.AccumulatorMode.DISABLED, reconnect_initial_delay=0.01) as c:
        for call in (
            lambda: c.get_config("k"),
            lambda: c.enqueue("q", None, b"x"),
            lambda: c.enqueue_many([("q", None, b"x")]),
            lambda: c.list_queues(),
        ):
            with pytest.raises(fila.ProtocolError):
                within(10, _retrying, call)

    async def body() -> None:
        async with fila.AsyncClient(s.address, reconnect_initial_delay=0.01) as ac:
            for acall in (lambda: ac.get_config("k"), lambda: ac.enqueue("q", None, b"x"), lambda: ac.list_queues()):
                with pytest.raises(fila.ProtocolError):
                    await _aretrying(acall)

    run(body())


async def _aretrying(fn: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await fn()
        except E.FilaConnectionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


def test_d11_malformed_handshake_answer_is_a_connect_error(fake_server: Any) -> None:
    s = fake_server(lambda *a: None, handshake=lambda: b"HTTP/1.1 400 Bad Request\r\n\r\n")
    with pytest.raises(fila.FilaError) as info:
        within(10, fila.Client, s.address, connect_timeout=0.5)
    assert isinstance(info.value, ConnectionError)

    async def body() -> None:
        with pytest.raises(fila.FilaError):
            async with fila.AsyncClient(s.address, connect_timeout=0.5):
                pass

    run(body())


def test_d11_malformed_delivery(fake_server: Any) -> None:
    """A bad Delivery is a ProtocolError inside: at subscribe time it raises; later the stream resubscribes."""
    good = fila.ConsumeMessage("01a2330c-22ab-70e3-8917-8b6c8b0c8017", {}, b"ok", "default", 0, "q", 1, [])
    bad_delivery = struct.pack(">I", 1) + b"\xff\xff"  # a message id that claims 65,535 bytes
    state = {"consumes": 0}

    def respond(op: int, rid: int, payload: bytes) -> bytes | None:
        if op == Opcode.CONSUME:
            state["consumes"] += 1
            state["rid"] = rid
            ok = encode_message(Opcode.CONSUME_OK, rid, {"consumer_id": "c1"})
            if state["consumes"] == 1:  # ConsumeOk and a malformed Delivery in one read
                return ok + raw_frame(Opcode.DELIVERY, rid, bad_delivery)
            return ok + pure.encode_delivery(rid, [good])
        if op == Opcode.ACK:  # answered, then a malformed Delivery on the live stream
            n = len(pure.decode_ack(payload))
            return pure.encode_ack_result(rid, [0] * n) + raw_frame(Opcode.DELIVERY, state["rid"], bad_delivery)
        return None

    s = fake_server(respond)
    with fila.Client(s.address, reconnect_initial_delay=0.01) as c:
        with pytest.raises(fila.ProtocolError):
            c.consume("q")
        stream = c.consume("q")
        m = within(10, next, stream)
        assert m.payload == b"ok" and state["consumes"] == 2
        stream.ack(m)  # its answer is followed by a bad Delivery: the stream resubscribes
        m2 = within(10, next, stream)
        assert m2.payload == b"ok" and state["consumes"] == 3


# ==================================================================== D12


def test_d12_payload_above_the_frame_limit_round_trips(client: fila.Client) -> None:
    """0.3.0 sent it as one oversize frame; the server dropped the connection without an answer."""
    client.create_queue("big")
    payload = bytes(range(256)) * (BIG // 256)
    mid = client.enqueue("big", None, payload)
    m = within(60, next, client.consume("big"))
    assert m.id == mid and m.payload == payload


LONG = "x" * 65_536


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.enqueue(LONG, None, b"x"),
        lambda c: c.enqueue("q", {LONG: "v"}, b"x"),
        lambda c: c.enqueue("q", {"k": LONG}, b"x"),
        lambda c: c.enqueue_many([("q", None, b"x"), (LONG, None, b"y")]),
        lambda c: c.create_queue(LONG),
        lambda c: c.set_config("k", LONG),
        lambda c: c.nack("q", "id", LONG),
    ],
    ids=["queue", "header-key", "header-value", "enqueue_many", "create_queue", "config-value", "nack-error"],
)
def test_d12_strings_over_65535_bytes_raise_encode_errors(client: fila.Client, call: Any) -> None:
    """0.3.0 raised a raw struct.error."""
    client.create_queue("q")
    with pytest.raises(fila.FilaError) as info:
        within(10, call, client)
    assert isinstance(info.value, ValueError) and isinstance(info.value, E.EncodeError)
    assert not isinstance(info.value, struct.error)
    assert client.get_config("still-works") == ""


def test_d12_async(addr: str) -> None:
    async def body() -> None:
        async with fila.AsyncClient(addr) as c:
            await c.create_queue("q")
            for acall in (
                lambda: c.enqueue(LONG, None, b"x"),
                lambda: c.enqueue("q", {"k": LONG}, b"x"),
                lambda: c.create_queue(LONG),
                lambda: c.ack("q", LONG),
            ):
                with pytest.raises(E.EncodeError) as info:
                    await acall()
                assert isinstance(info.value, ValueError) and isinstance(info.value, fila.FilaError)
            payload = b"\x07" * BIG
            mid = await c.enqueue("q", None, payload)
            stream = await c.consume("q")
            m = await asyncio.wait_for(stream.__anext__(), 60)
            assert m.id == mid and m.payload == payload
            await stream.aclose()

    run(body(), timeout=90)
