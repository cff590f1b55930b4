"""fila-python 0.3.0 programs against ``fila.AsyncClient`` and a ``fila.testing`` broker (SEED_API.md §3–§5)."""

from __future__ import annotations

import asyncio
import collections.abc
from typing import Any

import pytest
from compat_helpers import await_until
from compat_helpers import run
from test_compat_sync import ONE_SHOT_CODES
from test_compat_sync import UUID7

import fila
from fila import errors as E
from fila.protocol.constants import ErrorCode
from fila.protocol.constants import Opcode
from fila.testing import Broker


async def take(stream: Any, n: int, timeout: float = 10.0) -> list[fila.ConsumeMessage]:
    return [await asyncio.wait_for(stream.__anext__(), timeout) for _ in range(n)]


async def _consumers(c: fila.AsyncClient, queue: str, n: int) -> bool:
    return (await c.get_stats(queue)).active_consumers == n


def test_no_io_in_constructor_connects_on_aenter(broker: Broker, addr: str) -> None:
    async def body() -> None:
        c = fila.AsyncClient(addr)
        await asyncio.sleep(0)
        assert broker.connection_count == 0
        async with c as entered:
            assert entered is c
            assert broker.connection_count == 1
        lazy = fila.AsyncClient(addr)
        assert broker.connection_count <= 1
        await lazy.create_queue("lazy")  # the first call connects
        await lazy.close()

    run(body())


def test_close_is_harmless_twice_and_before_connecting(addr: str) -> None:
    async def body() -> None:
        never = fila.AsyncClient(addr)
        await never.close()
        await never.close()
        c = fila.AsyncClient(addr)
        await c.list_queues()
        await c.close()
        await c.close()

    run(body())


def test_unreachable_address_raises_connection_error_compatible_fila_error() -> None:
    async def body() -> None:
        c = fila.AsyncClient("127.0.0.1:1")
        with pytest.raises(fila.FilaError) as info:
            async with c:
                pass
        assert isinstance(info.value, ConnectionError) and isinstance(info.value, OSError)

    run(body(), timeout=15)


def test_enqueue_positional_keyword_and_enqueue_many(addr: str) -> None:
    async def body() -> None:
        async with fila.AsyncClient(addr) as c:
            await c.create_queue(name="orders")
            a = await c.enqueue("orders", {"k": "v"}, b"one")
            b = await c.enqueue(queue="orders", headers=None, payload=b"two")
            assert UUID7.match(a) and UUID7.match(b)
            results = await c.enqueue_many(messages=[("orders", None, b"3"), ("missing", {}, b"4")])
            assert [r.is_success for r in results] == [True, False]
            assert results[1].message_id is None and results[1].error.startswith("error 0x01")
            assert await c.enqueue_many([]) == []
            with pytest.raises(fila.QueueNotFoundError):
                await c.enqueue("missing", None, b"x")
            stream = await c.consume("orders")
            msgs = await take(stream, 3)
            assert [(m.id, m.payload, m.headers) for m in msgs[:2]] == [(a, b"one", {"k": "v"}), (b, b"two", {})]
            await stream.aclose()

    run(body())


def test_consume_must_be_awaited_and_iterates(broker: Broker, addr: str) -> None:
    async def body() -> None:
        async with fila.AsyncClient(addr) as c:
            await c.create_queue("events")
            call = c.consume("events")
            with pytest.raises(TypeError):
                async for _ in call:  # type: ignore[attr-defined]
                    pass
            stream = await call
            assert isinstance(stream, collections.abc.AsyncIterator)
            assert (await c.get_stats("events")).active_consumers == 1  # subscribed by the await
            ids = [await c.enqueue("events", None, b"%d" % i) for i in range(3)]
            first = await asyncio.wait_for(stream.__anext__(), 10)
            got = [first.id]
            async for m in stream:
                got.append(m.id)
                await c.ack(m.queue, m.id)
                if len(got) == 3:
                    break
            await c.ack(queue=first.queue, msg_id=first.id)
            assert got == ids
            await stream.aclose()
            assert (await c.get_stats("events")).depth == 0

    run(body())


def test_async_for_over_awaited_consume(addr: str) -> None:
    async def body() -> None:
        async with fila.AsyncClient(addr) as c:
            await c.create_queue("q")
            mid = await c.enqueue("q", None, b"x")
            async for m in await c.consume("q"):
                assert isinstance(m, fila.ConsumeMessage) and m.id == mid and m.queue == "q"
                assert m.attempt_count == 0 and isinstance(m.throttle_keys, list)
                break
            # The abandoned stream cancels (garbage collection); nacked after that, the message
            # cannot be redelivered to a stream nobody reads.
            await await_until(lambda: _consumers(c, "q", 0), what="the abandoned stream to cancel")
            await c.nack(queue=m.queue, msg_id=m.id, error="again")
            stream = await c.consume("q")
            (again,) = await take(stream, 1)
            assert again.id == mid and again.attempt_count == 1
            await stream.aclose()

    run(body())


def test_consume_refusal_raises_from_the_await(broker_factory: Any) -> None:
    b = broker_factory(api_key="root")
    addr = f"127.0.0.1:{b.port}"

    async def body() -> None:
        async with fila.AsyncClient(addr, api_key="root") as admin:
            await admin.create_queue("private")
            key = await admin.create_api_key("p")
            await admin.set_acl(key.key_id, [("produce", "private")])
        async with fila.AsyncClient(addr, api_key=key.raw_key) as c:
            with pytest.raises(fila.ForbiddenError):
                await c.consume("private")
        with pytest.raises(fila.UnauthorizedError):
            async with fila.AsyncClient(addr, api_key="wrong"):
                pass

    run(body())


def test_admin_and_auth_return_types(broker_factory: Any) -> None:
    b = broker_factory(api_key="root")
    addr = f"127.0.0.1:{b.port}"

    async def body() -> None:
        async with fila.AsyncClient(addr, api_key="root") as c:
            assert await c.create_queue("jobs") is None
            assert isinstance(await c.get_stats("jobs"), fila.StatsResult)
            queues = await c.list_queues()
            assert {q.name for q in queues} >= {"jobs", "jobs.dlq"}
            assert all(isinstance(q, fila.QueueInfo) for q in queues)
            assert await c.set_config("app.k", "v") is None
            assert await c.get_config("app.k") == "v"
            assert await c.list_config("app.") == {"app.k": "v"}
            assert await c.redrive("jobs.dlq", 0) == 0
            key = await c.create_api_key("svc")
            assert isinstance(key, fila.CreateApiKeyResult)
            assert any(isinstance(k, fila.ApiKeyInfo) and k.key_id == key.key_id for k in await c.list_api_keys())
            await c.set_acl(key.key_id, [("consume", "jobs")])
            acl = await c.get_acl(key.key_id)
            assert isinstance(acl, fila.AclEntry) and acl.permissions == [fila.AclPermission("consume", "jobs")]
            await c.revoke_api_key(key.key_id)
            with pytest.raises(fila.ApiKeyNotFoundError):
                await c.revoke_api_key(key.key_id)
            with pytest.raises(fila.QueueAlreadyExistsError):
                await c.create_queue("jobs")
            with pytest.raises(fila.InvalidArgumentError):
                await c.redrive("jobs", 0)
            assert await c.delete_queue("jobs") is None

    run(body())


@pytest.mark.parametrize(("code", "base", "cls"), ONE_SHOT_CODES, ids=lambda v: repr(v))
def test_error_frame_of_every_code(broker: Broker, addr: str, code: int, base: type, cls: type) -> None:
    async def body() -> None:
        async with fila.AsyncClient(addr) as c:
            broker.faults.fail_next(1, code=code, opcode=Opcode.GET_CONFIG, message="injected")
            with pytest.raises(base) as info:
                await c.get_config("k")
            assert type(info.value) is cls and info.value.code == code and "injected" in str(info.value)
            assert await c.get_config("k") == ""

    run(body())


def test_channel_full_and_not_leader(broker: Broker, addr: str) -> None:
    async def body() -> None:
        async with fila.AsyncClient(addr, request_timeout=0.5) as c:
            await c.create_queue("q")
            broker.faults.fail_next(1000, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.ENQUEUE)
            with pytest.raises(fila.ChannelFullError):
                await c.enqueue("q", None, b"x")
            broker.faults.reset()
            broker.faults.not_leader()
            with pytest.raises(fila.NotLeaderError):
                await c.consume("q")

    run(body())


def test_accepts_the_same_keywords_as_client(addr: str) -> None:
    async def body() -> None:
        for mode in (fila.AccumulatorMode.AUTO, fila.AccumulatorMode.DISABLED, fila.Linger(2, 10), None):
            async with fila.AsyncClient(addr, accumulator_mode=mode, max_accumulator_messages=100) as c:
                if mode is fila.AccumulatorMode.AUTO:
                    await c.create_queue("acc")
                ids = await asyncio.gather(*(c.enqueue("acc", None, b"x") for _ in range(20)))
                assert len(set(ids)) == 20

    run(body())


def test_errors_module_classes_are_the_public_ones() -> None:
    assert E.FilaError is fila.FilaError and E.RPCError is fila.ProtocolError
