"""AsyncClient: the same operations, transports and faults as the sync suite, under asyncio.

Written against the public API (fila-python 0.3.0's plus this package's
extras): ``enqueue(queue, headers, payload)``, ``await client.consume(q)`` /
``async with client.consume(q)``, ``accumulator_mode=``, per-call ``timeout=``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import struct
import time
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Any

import pytest
from client_helpers import run

import fila
from fila import AccumulatorMode
from fila import AclPermission
from fila import AsyncClient
from fila import Linger
from fila import errors as E
from fila.protocol import pure
from fila.protocol.constants import MAX_FRAME_SIZE
from fila.protocol.constants import ErrorCode
from fila.protocol.constants import Opcode
from fila.protocol.messages import encode_message
from fila.testing import Broker


async def drain(consumer: fila.AsyncConsumer, n: int, timeout: float = 10.0) -> list[fila.ConsumeMessage]:
    out = []
    while len(out) < n:
        m = await consumer.get(timeout=timeout)
        assert m is not None, f"only {len(out)} of {n} messages arrived"
        out.append(m)
    return out


async def eventually(pred: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await pred():
                return True
        except E.FilaConnectionError:
            pass
        await asyncio.sleep(0.02)
    return False


# ------------------------------------------------------------ scripted peer


def _frame(opcode: int, rid: int, body: bytes) -> bytes:
    return struct.pack(">IBBI", 6 + len(body), opcode, 0, rid) + body


def _handshake_ok() -> bytes:
    return encode_message(
        Opcode.HANDSHAKE_OK, 0, {"negotiated_version": 1, "node_id": 0, "max_frame_size": MAX_FRAME_SIZE}
    )


class AioPeer:
    """A scripted FIBP server on the test's own loop: handshake, then ``respond(opcode, rid, payload)``."""

    def __init__(self, respond: Callable[[int, int, bytes], bytes | None], handshake: bytes | None = None) -> None:
        self.respond = respond
        self.handshake = _handshake_ok() if handshake is None else handshake
        self.server: asyncio.AbstractServer | None = None
        self.address = ""

    async def __aenter__(self) -> AioPeer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            greeted = False
            while True:
                (length,) = struct.unpack(">I", await reader.readexactly(4))
                head = await reader.readexactly(length)
                opcode, rid, payload = head[0], int.from_bytes(head[2:6], "big"), head[6:]
                if not greeted:
                    greeted = True
                    writer.write(self.handshake)
                    continue
                if opcode == Opcode.DISCONNECT:
                    break
                out = self.respond(opcode, rid, payload)
                if out:
                    writer.write(out)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


# ---------------------------------------------------------------- producing


def test_enqueue_consume_ack(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address) as c:
            await c.create_queue("orders")
            mid = await c.enqueue("orders", {"k": "v"}, b"hello")
            async with c.consume("orders") as consumer:
                (m,) = await drain(consumer, 1)
                assert (m.id, m.payload, m.headers, m.queue) == (mid, b"hello", {"k": "v"}, "orders")
                await c.ack(m.queue, m.id)
            with pytest.raises(E.MessageNotFoundError):
                await c.ack("orders", mid)
            with pytest.raises(E.QueueNotFoundError):
                await c.enqueue("missing", None, b"x")
            assert (await c.get_stats("orders")).depth == 0

    run(body())


@pytest.mark.parametrize("mode", [AccumulatorMode.AUTO, AccumulatorMode.DISABLED, Linger(5, 50), None], ids=repr)
def test_enqueue_nowait_every_mode(broker: Broker, mode: Any) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address, accumulator_mode=mode) as c:
            await c.create_queue("q")
            futs = [c.enqueue_nowait("q", None, b"%d" % i) for i in range(300)]
            bad = c.enqueue_nowait("missing", None, b"x")
            assert isinstance(futs[0], asyncio.Future)
            ids = await asyncio.gather(*futs)
            assert len(set(ids)) == 300 and ids == sorted(ids)
            with pytest.raises(E.QueueNotFoundError):
                await bad
            assert (await c.get_stats("q")).depth == 300

    run(body())


def test_flush_sends_what_lingers(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address, accumulator_mode=Linger(60_000, 1000)) as c:
            assert await c.flush(1) is True  # nothing queued yet
            await c.create_queue("q")
            futs = [c.enqueue_nowait("q", {"i": str(i)}, b"x") for i in range(25)]
            await asyncio.sleep(0)
            assert not any(f.done() for f in futs)  # still lingering
            assert await c.flush(timeout=10) is True
            assert all(f.done() and isinstance(f.result(), str) for f in futs)
            assert (await c.get_stats("q")).depth == 25

    run(body())


def test_enqueue_many_and_ack_many(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address) as c:
            await c.create_queue("a")
            res = await c.enqueue_many([("a", None, b"1"), ("nope", None, b"2"), ("a", {"h": "v"}, b"3")])
            assert [r.is_success for r in res] == [True, False, True]
            assert res[1].message_id is None and res[1].error is not None and res[1].error.startswith("error 0x01")
            assert isinstance(res[1].exception, E.QueueNotFoundError) and res[1].code == ErrorCode.QUEUE_NOT_FOUND
            assert await c.enqueue_many([]) == []
            async with c.consume("a") as consumer:
                m1, m2 = await drain(consumer, 2)
                assert m2.headers == {"h": "v"}
                assert await c.ack_many([m1]) == [None]
                out = await c.ack_many([("a", m1.id), ("a", "not-a-uuid")])
                assert all(isinstance(x, E.MessageNotFoundError) for x in out)
                assert await c.nack_many([(m2, "err")]) == [None]
                (again,) = await drain(consumer, 1)
                assert again.id == m2.id and again.attempt_count == 1
                consumer.ack(again)
                assert await consumer.flush(10)
            assert (await c.get_stats("a")).depth == 0

    run(body())


def test_enqueue_many_whole_request_refusal_raises(broker_factory: Any) -> None:
    b = broker_factory(api_key="root")

    async def body() -> None:
        async with AsyncClient(b.address, api_key="root") as admin:
            await admin.create_queue("ok")
            await admin.create_queue("secret")
            key = await admin.create_api_key("p")
            await admin.set_acl(key.key_id, [AclPermission("produce", "ok")])
        async with AsyncClient(b.address, api_key=key.raw_key) as c:
            assert [r.is_success for r in await c.enqueue_many([("ok", None, b"1")])] == [True]
            with pytest.raises(E.ForbiddenError):  # one Error frame for the request: raised, as in 0.3.0
                await c.enqueue_many([("ok", None, b"1"), ("secret", None, b"2")])

    run(body())


# ---------------------------------------------------------------- consuming


def test_consumer_get_timeout_ack_nack_flush(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address) as c:
            await c.create_queue("q")
            consumer = await c.consume("q")
            assert isinstance(consumer, fila.AsyncConsumer)
            t0 = time.monotonic()
            assert await consumer.get(timeout=0.1) is None
            assert time.monotonic() - t0 < 2
            ids = [await c.enqueue("q", None, b"%d" % i) for i in range(3)]
            msgs = await drain(consumer, 3)
            assert [m.id for m in msgs] == ids
            consumer.ack(msgs[0])
            consumer.ack(msgs[1])
            consumer.nack(msgs[2], "transient")
            assert await consumer.flush(timeout=10) is True
            (again,) = await drain(consumer, 1)
            assert again.id == ids[2] and again.attempt_count == 1
            consumer.ack(again)
            assert await consumer.flush(10)
            assert (await c.get_stats("q")).depth == 0
            assert consumer.buffered == 0
            await consumer.close()
            assert consumer.closed and await consumer.get(timeout=0.1) is None

    run(body())


def test_async_with_consume_closes_and_async_for(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address) as c:
            await c.create_queue("q")
            async with c.consume("q") as consumer:
                assert (await c.get_stats("q")).active_consumers == 1
                mid = await c.enqueue("q", None, b"x")
                async for m in consumer:
                    assert m.id == mid
                    consumer.ack(m)
                    break
            assert consumer.closed

            async def no_consumers() -> bool:
                return (await c.get_stats("q")).active_consumers == 0

            assert await eventually(no_consumers)
            stream = await c.consume("q")
            await stream.aclose()  # 0.3.0's async generator method
            assert stream.closed
            with pytest.raises(StopAsyncIteration):
                await stream.__anext__()

    run(body())


def test_many_tasks_exactly_once(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address) as c:
            await c.create_queue("conc")
            total = 2000
            counts: dict[str, int] = {}
            finished = asyncio.Event()

            async def consume() -> None:
                async with c.consume("conc") as consumer:
                    while not finished.is_set():
                        m = await consumer.get(timeout=0.2)
                        if m is None:
                            continue
                        consumer.ack(m)
                        counts[m.id] = counts.get(m.id, 0) + 1
                        if len(counts) == total:
                            finished.set()
                    assert await consumer.flush(10)

            async def produce(i: int) -> list[str]:
                out = []
                for j in range(total // 50):
                    if j % 2:
                        out.append(await c.enqueue("conc", None, b"%d" % j))
                    else:
                        out.append(await c.enqueue_nowait("conc", None, b"%d" % j))
                return out

            consumers = [asyncio.ensure_future(consume()) for _ in range(2)]
            ids = await asyncio.gather(*(produce(i) for i in range(50)))
            await asyncio.wait_for(finished.wait(), 30)
            await asyncio.gather(*consumers)
            all_ids = {x for lst in ids for x in lst}
            assert len(all_ids) == total and set(counts) == all_ids and set(counts.values()) == {1}
            assert (await c.get_stats("conc")).depth == 0

    run(body())


def test_cancel_stops_deliveries_and_gc_cancels(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address) as c:
            await c.create_queue("q")
            consumer = await c.consume("q")
            await c.enqueue("q", None, b"first")
            await drain(consumer, 1)
            await consumer.close()
            assert await consumer.get(timeout=0.1) is None
            await c.enqueue("q", None, b"second")
            async for m in await c.consume("q"):
                assert m.payload == b"second"
                break
            gc.collect()

            async def no_consumers() -> bool:
                return (await c.get_stats("q")).active_consumers == 0

            assert await eventually(no_consumers)

    run(body())


# ------------------------------------------------------------- admin / auth


def test_admin_and_auth(broker_factory: Any) -> None:
    pytest.importorskip("lupa")  # Lua hooks: the optional [lua] extra
    b = broker_factory(api_key="root")

    async def body() -> None:
        async with AsyncClient(b.address, api_key="root") as c:
            assert await c.create_queue("jobs") is None
            with pytest.raises(E.QueueAlreadyExistsError):
                await c.create_queue("jobs")
            names = [q.name for q in await c.list_queues()]
            assert "jobs.dlq" in names and all(isinstance(q, fila.QueueInfo) for q in await c.list_queues())
            stats = await c.get_stats("jobs")
            assert isinstance(stats, fila.StatsResult) and stats.depth == 0
            await c.set_config("app.x", "1")
            assert await c.get_config("app.x") == "1"
            assert await c.list_config("app.") == {"app.x": "1"}
            with pytest.raises(E.NotADLQError):
                await c.redrive("jobs")
            assert await c.redrive("jobs.dlq") == 0
            with pytest.raises(E.LuaCompilationError):
                await c.create_queue("lua", on_enqueue="function on_enqueue(msg) return {")
            await c.create_queue("hooked", on_enqueue="function on_enqueue(msg) return {fairness_key = 'k'} end",
                                 visibility_timeout_ms=5000)  # fmt: skip
            key = await c.create_api_key("svc")
            assert isinstance(key, fila.CreateApiKeyResult) and key.raw_key
            assert [k.key_id for k in await c.list_api_keys()] == [key.key_id]
            await c.set_acl(key.key_id, [AclPermission("produce", "jobs")])
            acl = await c.get_acl(key.key_id)
            assert acl.permissions == [AclPermission("produce", "jobs")] and not acl.is_superadmin
            async with AsyncClient(b.address, api_key=key.raw_key) as svc:
                assert await svc.enqueue("jobs", None, b"x")
                with pytest.raises(E.ForbiddenError):
                    await svc.list_queues()
                with pytest.raises(E.ForbiddenError):
                    await svc.consume("jobs")
            await c.revoke_api_key(key.key_id)
            with pytest.raises(E.ApiKeyNotFoundError):
                await c.revoke_api_key(key.key_id)
            with pytest.raises(E.ApiKeyNotFoundError):
                await c.get_acl(key.key_id)
            await c.delete_queue("jobs")
            with pytest.raises(E.QueueNotFoundError):
                await c.get_stats("jobs")
        with pytest.raises(E.UnauthorizedError):
            async with AsyncClient(b.address):
                pass
        with pytest.raises(E.UnauthorizedError):
            await AsyncClient(b.address, api_key="bad").list_queues()

    run(body())


# ---------------------------------------------------------------- lifecycle


def test_no_io_in_constructor_and_close_semantics(broker: Broker) -> None:
    async def body() -> None:
        c = AsyncClient(broker.address)
        await asyncio.sleep(0.05)
        assert broker.connection_count == 0 and c.node_id == 0
        await c.close()  # never connected: nothing to do
        await c.close()
        assert c.closed

        c = AsyncClient(broker.address)
        await c.create_queue("q")  # connects on first use
        consumer = await c.consume("q")
        await c.close()
        await c.close()
        assert consumer.closed  # the client's consumers close with it

        async def all_closed() -> bool:
            return broker.connection_count == 0

        assert await eventually(all_closed)

        # As fila-python 0.3.0's: a closed AsyncClient reconnects on its next call (the closed
        # consumer stays closed). Raising here, or hanging past the runner's bound, fails the test.
        assert [q.name for q in await c.list_queues()] == ["q", "q.dlq"]
        assert not c.closed and broker.connection_count == 1
        assert await c.enqueue("q", None, b"x")
        await c.close()
        assert await eventually(all_closed)

    run(body())


def test_close_flushes_and_a_closed_client_reconnects(broker: Broker) -> None:
    async def body() -> None:
        c = AsyncClient(broker.address, accumulator_mode=Linger(60_000, 1000))
        await c.create_queue("q")
        futs = [c.enqueue_nowait("q", None, b"x") for _ in range(10)]
        await c.close()
        await c.close()
        # close() sent what a 60 s linger window held and waited for every answer.
        assert all(f.done() and isinstance(f.result(), str) for f in futs)
        # A later call reconnects (0.3.0's behaviour) with a fresh accumulator: this message
        # is held by the linger window until flush() sends it.
        fut = c.enqueue_nowait("q", None, b"y")
        assert await c.flush(5) and isinstance(fut.result(), str)
        assert (await c.get_stats("q")).depth == 11
        await c.close()

    run(body())


def test_node_id(broker_factory: Any) -> None:
    b = broker_factory(node_id=7)

    async def body() -> None:
        async with AsyncClient(b.address) as c:
            assert c.node_id == 7
            assert "127.0.0.1" in repr(c)

    run(body())


# ---------------------------------------------------------- timeouts, faults


def test_per_call_timeouts(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address) as c:
            await c.create_queue("q")
            await c.enqueue("q", None, b"m")
            async with c.consume("q") as consumer:
                (m,) = await drain(consumer, 1)
            broker.faults.delay(30)  # every request from now on is held
            calls = [
                lambda: c.enqueue("q", None, b"x", timeout=0.2),
                lambda: c.enqueue_many([("q", None, b"x")], timeout=0.2),
                lambda: c.ack("q", m.id, timeout=0.2),
                lambda: c.nack("q", m.id, "e", timeout=0.2),
                lambda: c.get_stats("q", timeout=0.2),
                lambda: c.create_queue("other", timeout=0.2),
                lambda: c.list_api_keys(timeout=0.2),
            ]
            for call in calls:
                t0 = time.monotonic()
                with pytest.raises(E.RequestTimeoutError) as info:
                    await call()
                assert time.monotonic() - t0 < 3
                assert isinstance(info.value, TimeoutError) and isinstance(info.value, fila.FilaError)
            broker.faults.clear_delay()
            assert (await c.get_stats("q")).depth >= 1  # the connection is still usable

    run(body())


def test_request_timeout_default(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address, request_timeout=0.3) as c:
            broker.faults.delay(30, opcode=Opcode.GET_CONFIG)
            t0 = time.monotonic()
            with pytest.raises(E.RequestTimeoutError) as info:
                await c.get_config("k")
            assert info.value.may_have_been_applied and time.monotonic() - t0 < 3
            broker.faults.clear_delay()
            assert await c.get_config("k", timeout=5) == ""

    run(body())


def test_connection_loss_fails_waiters_and_reconnects(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address) as c:
            await c.create_queue("q")
            broker.faults.delay(30, opcode=Opcode.LIST_QUEUES)
            tasks = [asyncio.ensure_future(c.list_queues()) for _ in range(3)]

            async def held() -> bool:
                return broker.faults.held == 1

            assert await eventually(held)
            t0 = time.monotonic()
            broker.faults.close_all()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert time.monotonic() - t0 < 5
            assert all(isinstance(r, E.ConnectionLostError) and r.may_have_been_applied for r in results)
            assert all(isinstance(r, ConnectionError) for r in results)
            broker.faults.clear_delay()
            assert "q" in [q.name for q in await c.list_queues()]

    run(body())


def test_reconnect_after_the_broker_drops_the_connection(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address, reconnect_initial_delay=0.01) as c:
            await c.create_queue("q")
            for _ in range(3):
                broker.faults.close_all()

                async def works() -> bool:
                    return bool(await c.enqueue("q", None, b"x"))

                assert await eventually(works)
            futs = [c.enqueue_nowait("q", None, b"y") for _ in range(20)]
            assert len(set(await asyncio.gather(*futs))) == 20

    run(body())


def test_channel_full_retry(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address) as c:
            await c.create_queue("q")
            broker.faults.fail_next(3, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.ENQUEUE)
            assert await c.enqueue("q", None, b"x")
            broker.faults.fail_next(2, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.GET_STATS)
            assert (await c.get_stats("q")).depth == 1
            broker.faults.fail_next(2, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.ENQUEUE)
            res = await c.enqueue_many([("q", None, b"a"), ("q", None, b"b")])
            assert all(r.is_success for r in res)
            broker.faults.fail_next(2, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.ENQUEUE)
            futs = [c.enqueue_nowait("q", None, b"%d" % i) for i in range(10)]
            assert len(set(await asyncio.gather(*futs))) == 10
            assert (await c.get_stats("q")).depth == 13
            broker.faults.fail_next(10_000, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.GET_STATS)
            with pytest.raises(E.ChannelFullError):
                await c.get_stats("q", timeout=0.3)  # retried until the deadline, then raised
            broker.faults.reset()

    run(body())


def test_keepalive_declares_silent_peer_dead(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address, keepalive_interval=0.2, keepalive_timeout=0.3) as c:
            await c.create_queue("q")
            broker.faults.pause_reading()
            t0 = time.monotonic()
            with pytest.raises(E.ConnectionLostError, match="keepalive"):
                await c.get_config("k")
            assert time.monotonic() - t0 < 5
            broker.faults.resume_reading()
            assert await c.get_config("k") == ""

    run(body())


def test_consumer_resubscribes_and_redirects(broker_factory: Any) -> None:
    leader = broker_factory(node_id=2)
    follower = broker_factory(node_id=1)

    async def body() -> None:
        for b in (leader, follower):
            async with AsyncClient(b.address) as c:
                await c.create_queue("q")
        follower.faults.not_leader(leader_addr=leader)
        async with AsyncClient(follower.address, reconnect_initial_delay=0.05, reconnect_max_delay=0.2) as c:
            async with c.consume("q") as consumer:
                async with AsyncClient(leader.address) as lc:
                    await lc.enqueue("q", None, b"one")
                    assert (await drain(consumer, 1))[0].payload == b"one"
                    leader.faults.close_all()

                    async def resubscribed() -> bool:
                        return (await lc.get_stats("q")).active_consumers == 1

                    assert await eventually(resubscribed)
                    await lc.enqueue("q", None, b"two")
                    assert (await drain(consumer, 1))[0].payload == b"two"

    run(body())


def test_not_leader_without_hint_raises_from_consume(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address, request_timeout=0.5) as c:
            await c.create_queue("q")
            broker.faults.not_leader()
            with pytest.raises(E.NotLeaderError) as info:
                await c.consume("q")
            assert info.value.leader_addr is None
            broker.faults.clear_not_leader()
            async with c.consume("q") as consumer:
                await c.enqueue("q", None, b"x")
                assert (await drain(consumer, 1))[0].payload == b"x"

    run(body())


def test_backpressure_keeps_memory_bounded(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address, consumer_buffer=16) as c:
            await c.create_queue("bp")
            n = 5000  # 20 MiB: more than socket buffers hold
            await c.enqueue_many([("bp", None, b"x" * 4096) for _ in range(n)])
            bound = 16 + 256 * 1024 // 4096
            async with c.consume("bp") as consumer:
                await asyncio.sleep(1.0)  # the consumer is left unread: its buffer must not grow
                assert consumer.buffered <= bound
                in_flight = (await c.get_stats("bp")).in_flight
                assert in_flight < n
                for _ in range(n):
                    m = await consumer.get(timeout=10)
                    assert m is not None
                    consumer.ack(m)
                    assert consumer.buffered <= bound
                assert await consumer.flush(10)
            assert (await c.get_stats("bp")).depth == 0

    run(body())


def test_big_message_round_trip(broker: Broker) -> None:
    payload = b"\x01\x02" * (8 * 1024 * 1024 + 100)  # above the 16 MiB frame limit: continuation frames

    async def body() -> None:
        async with AsyncClient(broker.address, request_timeout=60) as c:
            await c.create_queue("big")
            mid = await c.enqueue("big", None, payload)
            async with c.consume("big") as consumer:
                m = await consumer.get(timeout=60)
                assert m is not None and m.id == mid and m.payload == payload

    run(body(), timeout=120)


# ------------------------------------------------------------ malformed input


def test_malformed_arguments_raise_before_sending(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address) as c:
            await c.create_queue("q")
            with pytest.raises(TypeError, match="headers, payload"):
                await c.enqueue("q", b"payload-in-headers-place", {"k": "v"})  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await c.enqueue("q", None, "text")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await c.enqueue_many([("q", b"x")])  # type: ignore[list-item]
            with pytest.raises(E.EncodeError) as info:
                await c.enqueue("q" * 70_000, None, b"x")
            assert isinstance(info.value, ValueError)
            with pytest.raises(E.EncodeError):
                await c.set_config("k", "v" * 70_000)
            with pytest.raises(E.EncodeError):
                await c.enqueue("q", {"k": "v" * 70_000}, b"x")
            assert (await c.get_stats("q")).depth == 0  # nothing was sent; the connection is fine

    run(body())


def test_malformed_answers_are_protocol_errors() -> None:
    def respond(op: int, rid: int, payload: bytes) -> bytes | None:
        if op == Opcode.GET_CONFIG:  # a string claiming 200 bytes, 3 present
            return _frame(Opcode.GET_CONFIG_RESULT, rid, b"\x00" + struct.pack(">H", 200) + b"abc")
        if op == Opcode.ENQUEUE:  # 2 results announced, 1 present
            return _frame(Opcode.ENQUEUE_RESULT, rid, struct.pack(">I", 2) + b"\x00\x00\x02id")
        if op == Opcode.LIST_QUEUES:  # the wrong answer opcode
            return encode_message(Opcode.GET_CONFIG_RESULT, rid, {"error_code": 0, "value": "v"})
        if op == Opcode.GET_STATS:  # noise the client must ignore, then the real answer (an Error frame)
            noise = _frame(0x77, rid, b"???") + pure.encode_enqueue_result(rid + 1000, [(0, "x")])
            return noise + encode_message(
                Opcode.ERROR, rid, {"error_code": ErrorCode.QUEUE_NOT_FOUND, "message": "no such queue", "metadata": {}}
            )
        return None

    async def body() -> None:
        async with AioPeer(respond) as peer, AsyncClient(peer.address, reconnect_initial_delay=0.01) as c:
            for call in (
                lambda: c.get_config("k"),
                lambda: c.enqueue("q", None, b"x"),
                lambda: c.enqueue_many([("q", None, b"x")]),
                lambda: c.list_queues(),
            ):
                for _ in range(50):  # a malformed answer also ends its connection: the next call reconnects
                    try:
                        await call()
                    except E.FilaConnectionError:
                        await asyncio.sleep(0.02)
                        continue
                    except E.ProtocolError:
                        break
                    raise AssertionError("a malformed answer was accepted")
                else:
                    raise AssertionError("never reached the peer")
            for _ in range(50):
                try:
                    await c.get_stats("q")
                except E.FilaConnectionError:
                    await asyncio.sleep(0.02)
                    continue
                except E.QueueNotFoundError as exc:
                    assert exc.message == "no such queue"
                    break
            else:
                raise AssertionError("the Error frame after the noise never arrived")

    run(body())


def test_garbage_handshake_is_a_connect_error() -> None:
    async def body() -> None:
        async with AioPeer(lambda *a: None, handshake=b"HTTP/1.1 400 Bad Request\r\n\r\n") as peer:
            with pytest.raises(E.ConnectError) as info:
                async with AsyncClient(peer.address, connect_timeout=0.5):
                    pass
            assert isinstance(info.value, ConnectionError)
        bad_version = encode_message(
            Opcode.HANDSHAKE_OK, 0, {"negotiated_version": 9, "node_id": 0, "max_frame_size": MAX_FRAME_SIZE}
        )
        async with AioPeer(lambda *a: None, handshake=bad_version) as peer:
            with pytest.raises(E.ProtocolError):
                await AsyncClient(peer.address, connect_timeout=2).list_queues()

    run(body())


def test_unreachable_address() -> None:
    async def body() -> None:
        c = AsyncClient("127.0.0.1:1", connect_timeout=2)
        with pytest.raises(E.ConnectError) as info:
            await c.list_queues()
        assert isinstance(info.value, OSError) and isinstance(info.value, fila.UnavailableError)
        await c.close()

    run(body())


# ---------------------------------------------------------------------- TLS


def test_tls_and_mtls(broker_factory: Any, pki: Any) -> None:
    tls = broker_factory(tls_cert=pki.server_cert, tls_key=pki.server_key)
    mtls = broker_factory(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca_cert)

    async def body() -> None:
        async with AsyncClient(tls.address, ca_cert=pki.ca_cert_pem) as c:
            await c.create_queue("q")
            assert await c.enqueue("q", None, b"x")
        with pytest.raises(E.ConnectError):
            await AsyncClient(tls.address, ca_cert=pki.other_ca_cert_pem, connect_timeout=5).list_queues()
        async with AsyncClient(
            mtls.address, ca_cert=pki.ca_cert_pem, client_cert=pki.client_cert_pem, client_key=pki.client_key_pem
        ) as c:
            await c.create_queue("q")
            async with c.consume("q") as consumer:
                await c.enqueue("q", None, b"y")
                assert (await drain(consumer, 1))[0].payload == b"y"
        with pytest.raises(E.FilaConnectionError):
            await AsyncClient(mtls.address, ca_cert=pki.ca_cert_pem, connect_timeout=5).list_queues()

    run(body())


def test_api_key_not_logged(broker_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    secret = "async-secret-key"
    b = broker_factory(api_key=secret)

    async def body() -> None:
        async with AsyncClient(b.address, api_key=secret) as c:
            assert secret not in repr(c)
            await c.create_queue("q")

    with caplog.at_level(logging.DEBUG, logger="fila"):
        run(body())
    assert all(secret not in r.getMessage() for r in caplog.records)
