"""AsyncClient: the same operations, transports and faults as the sync suite, under asyncio."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from client_helpers import run

import fila
from fila import AccumulatorMode, AsyncClient, Linger, Permission
from fila import errors as E
from fila.protocol import ErrorCode, Opcode
from fila.testing import Broker


async def drain(consumer: fila.AsyncConsumer, n: int, timeout: float = 10.0) -> list[fila.Message]:
    out = []
    while len(out) < n:
        m = await consumer.get(timeout=timeout)
        assert m is not None, f"only {len(out)} of {n} messages arrived"
        out.append(m)
    return out


async def eventually(pred: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await pred():
                return True
        except E.FilaConnectionError:
            pass
        await asyncio.sleep(0.02)
    return False


def test_enqueue_consume_ack(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address) as c:
            await c.create_queue("orders")
            mid = await c.enqueue("orders", b"hello", {"k": "v"})
            async with c.consume("orders") as consumer:
                (m,) = await drain(consumer, 1)
                assert (m.id, m.payload, m.headers) == (mid, b"hello", {"k": "v"})
                await c.ack(m.queue, m.id)
            with pytest.raises(E.MessageNotFoundError):
                await c.ack("orders", mid)
            with pytest.raises(E.QueueNotFoundError):
                await c.enqueue("missing", b"x")

    run(body())


@pytest.mark.parametrize("mode", [AccumulatorMode.AUTO, AccumulatorMode.DISABLED, Linger(5, 50)], ids=repr)
def test_enqueue_nowait_every_mode(broker: Broker, mode: Any) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address, accumulator=mode) as c:
            await c.create_queue("q")
            futs = [c.enqueue_nowait("q", b"%d" % i) for i in range(300)]
            bad = c.enqueue_nowait("missing", b"x")
            ids = await asyncio.gather(*futs)
            assert isinstance(futs[0], asyncio.Future)
            assert len(set(ids)) == 300 and ids == sorted(ids)
            with pytest.raises(E.QueueNotFoundError):
                await bad
            assert (await c.get_stats("q")).depth == 300

    run(body())


def test_enqueue_many_and_ack_many(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address) as c:
            await c.create_queue("a")
            res = await c.enqueue_many([("a", b"1"), ("nope", b"2"), ("a", b"3", {"h": "v"})])
            assert [r.ok for r in res] == [True, False, True]
            assert isinstance(res[1].error, E.QueueNotFoundError)
            async with c.consume("a") as consumer:
                m1, m2 = await drain(consumer, 2)
                assert await c.ack_many([m1]) == [None]
                out = await c.ack_many([("a", m1.id), ("a", "not-a-uuid")])
                assert all(isinstance(x, E.MessageNotFoundError) for x in out)
                out = await c.nack_many([(m2, "err")])
                assert out == [None]
                (again,) = await drain(consumer, 1)
                assert again.id == m2.id and again.attempt_count == 1
                consumer.ack(again)
                assert await consumer.flush(10)
            assert (await c.get_stats("a")).depth == 0

    run(body())


def test_close_flushes_and_closed_client_refuses(broker: Broker) -> None:
    async def body() -> None:
        c = AsyncClient(broker.address, accumulator=Linger(60_000, 1000))
        await c.create_queue("q")
        futs = [c.enqueue_nowait("q", b"x") for _ in range(10)]
        await c.close()
        await c.close()
        assert all(f.done() and isinstance(f.result(), str) for f in futs)
        with pytest.raises(E.ClientClosedError):
            await c.list_queues()
        with pytest.raises(E.ClientClosedError):
            c.enqueue_nowait("q", b"x")

    run(body())


def test_admin_and_auth(broker_factory: Any) -> None:
    b = broker_factory(api_key="root")

    async def body() -> None:
        async with AsyncClient(b.address, api_key="root") as c:
            assert await c.create_queue("jobs") == "jobs"
            with pytest.raises(E.QueueAlreadyExistsError):
                await c.create_queue("jobs")
            assert "jobs.dlq" in await c.list_queues()
            assert (await c.get_stats("jobs")).depth == 0
            await c.set_config("app.x", "1")
            assert await c.get_config("app.x") == "1"
            assert await c.list_config("app.") == {"app.x": "1"}
            with pytest.raises(E.NotADLQError):
                await c.redrive("jobs")
            assert await c.redrive("jobs.dlq") == 0
            key = await c.create_api_key("svc")
            assert [k.key_id for k in await c.list_api_keys()] == [key.key_id]
            await c.set_acl(key.key_id, [Permission.produce("jobs")])
            acl = await c.get_acl(key.key_id)
            assert list(acl.permissions) == [Permission("produce", "jobs")]
            async with AsyncClient(b.address, api_key=key.key) as svc:
                assert await svc.enqueue("jobs", b"x")
                with pytest.raises(E.ForbiddenError):
                    await svc.list_queues()
                with pytest.raises(E.ForbiddenError):
                    await svc.consume("jobs").start()
            await c.revoke_api_key(key.key_id)
            with pytest.raises(E.ApiKeyNotFoundError):
                await c.revoke_api_key(key.key_id)
            await c.delete_queue("jobs")
        with pytest.raises(E.UnauthorizedError):
            await AsyncClient(b.address).connect()
        with pytest.raises(E.UnauthorizedError):
            await AsyncClient(b.address, api_key="bad").connect()

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
                        out.append(await c.enqueue("conc", b"%d" % j))
                    else:
                        out.append(await c.enqueue_nowait("conc", b"%d" % j))
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
            consumer = c.consume("q")
            await c.enqueue("q", b"first")
            await drain(consumer, 1)
            await consumer.close()
            assert await consumer.get(timeout=0.1) is None
            await c.enqueue("q", b"second")
            async for m in c.consume("q"):
                assert m.payload == b"second"
                break
            gc.collect()

            async def no_consumers() -> bool:
                return (await c.get_stats("q")).active_consumers == 0

            assert await eventually(no_consumers)

    run(body())


def test_connection_loss_fails_waiters_and_reconnects(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address) as c:
            await c.create_queue("q")
            broker.faults.delay(30, opcode=Opcode.LIST_QUEUES)
            tasks = [asyncio.ensure_future(c.list_queues()) for _ in range(3)]
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            broker.faults.close_all()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert time.monotonic() - t0 < 5
            assert all(isinstance(r, E.ConnectionLostError) and r.may_have_been_applied for r in results)
            broker.faults.clear_delay()
            assert "q" in await c.list_queues()

    run(body())


def test_channel_full_retry(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address) as c:
            await c.create_queue("q")
            broker.faults.fail_next(3, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.ENQUEUE)
            assert await c.enqueue("q", b"x")
            broker.faults.fail_next(2, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.GET_STATS)
            assert (await c.get_stats("q")).depth == 1

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
                    await lc.enqueue("q", b"one")
                    assert (await drain(consumer, 1))[0].payload == b"one"
                    leader.faults.close_all()

                    async def resubscribed() -> bool:
                        return (await lc.get_stats("q")).active_consumers == 1

                    assert await eventually(resubscribed)
                    await lc.enqueue("q", b"two")
                    assert (await drain(consumer, 1))[0].payload == b"two"

    run(body())


def test_backpressure_keeps_memory_bounded(broker: Broker) -> None:
    async def body() -> None:
        async with AsyncClient(broker.address, consumer_buffer=16) as c:
            await c.create_queue("bp")
            n = 5000  # 20 MiB: more than socket buffers hold
            await c.enqueue_many([("bp", b"x" * 4096) for _ in range(n)])
            bound = 16 + 256 * 1024 // 4096
            async with c.consume("bp") as consumer:
                await asyncio.sleep(1.0)
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
    payload = b"\x01\x02" * (8 * 1024 * 1024 + 100)

    async def body() -> None:
        async with AsyncClient(broker.address, request_timeout=60) as c:
            await c.create_queue("big")
            mid = await c.enqueue("big", payload)
            async with c.consume("big") as consumer:
                m = await consumer.get(timeout=60)
                assert m is not None and m.id == mid and m.payload == payload

    run(body(), timeout=120)


def _pem(p: Path) -> bytes:
    return Path(p).read_bytes()


def test_tls_and_mtls(broker_factory: Any, pki: Any) -> None:
    tls = broker_factory(tls_cert=pki.server_cert, tls_key=pki.server_key)
    mtls = broker_factory(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca_cert)

    async def body() -> None:
        async with AsyncClient(tls.address, ca_cert=_pem(pki.ca_cert)) as c:
            await c.create_queue("q")
            assert await c.enqueue("q", b"x")
        with pytest.raises(E.ConnectError):
            await AsyncClient(tls.address, ca_cert=_pem(pki.other_ca_cert), connect_timeout=5).connect()
        async with AsyncClient(
            mtls.address, ca_cert=_pem(pki.ca_cert), client_cert=_pem(pki.client_cert), client_key=_pem(pki.client_key)
        ) as c:
            await c.create_queue("q")
            async with c.consume("q") as consumer:
                await c.enqueue("q", b"y")
                assert (await drain(consumer, 1))[0].payload == b"y"
        with pytest.raises(E.FilaConnectionError):
            await AsyncClient(mtls.address, ca_cert=_pem(pki.ca_cert), connect_timeout=5).list_queues()

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
