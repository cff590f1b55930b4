"""A user program written against fila-python 0.3.0, unchanged (run by test_compat_program.py).

Usage: python program_v030.py HOST:PORT   (a broker without auth)

It prints one line per step; the test compares them with what 0.3.0 would print.
"""

from __future__ import annotations

import asyncio
import sys

from fila import AccumulatorMode
from fila import AsyncClient
from fila import Client
from fila import ConsumeMessage
from fila import FilaError
from fila import Linger
from fila import MessageNotFoundError
from fila import QueueNotFoundError
from fila import RPCError


def produce_and_consume(addr: str) -> None:
    with Client(addr) as client:
        client.create_queue("orders")
        for i in range(3):
            client.enqueue("orders", {"n": str(i)}, f"order-{i}".encode())
        print("enqueued 3")

        results = client.enqueue_many([("orders", None, b"bulk"), ("missing", None, b"lost")])
        print("enqueue_many", [r.is_success for r in results], results[1].error.split(":")[0])

        seen = 0
        for msg in client.consume("orders"):
            assert isinstance(msg, ConsumeMessage)
            print("got", msg.payload.decode(), msg.headers.get("n", "-"), msg.attempt_count)
            client.ack(msg.queue, msg.id)
            seen += 1
            if seen == 4:
                break

        stats = client.get_stats("orders")
        print("stats", stats.depth, stats.in_flight)
        print("queues", sorted(q.name for q in client.list_queues()))

        try:
            client.enqueue("nowhere", None, b"x")
        except QueueNotFoundError:
            print("queue not found: ok")
        try:
            client.ack("orders", "00000000-0000-7000-8000-000000000000")
        except MessageNotFoundError:
            print("message not found: ok")
        except RPCError as e:  # 0.3.0 programs sometimes catch RPCError too
            print("rpc error", e.code)


def admin(addr: str) -> None:
    with Client(addr, accumulator_mode=AccumulatorMode.DISABLED) as client:
        client.set_config("app.mode", "fast")
        print("config", client.get_config("app.mode"), client.list_config("app."))
        key = client.create_api_key("svc")
        client.set_acl(key.key_id, [("produce", "orders"), ("consume", "orders")])
        acl = client.get_acl(key.key_id)
        print("acl", [(p.kind, p.pattern) for p in acl.permissions])
        print("keys", [k.name for k in client.list_api_keys()])
        client.revoke_api_key(key.key_id)
        print("redrive", client.redrive("orders.dlq", 0))
        client.delete_queue("orders")
        print("deleted", "orders" not in [q.name for q in client.list_queues()])
    with Client(addr, accumulator_mode=Linger(5, 100)) as client:
        client.create_queue("linger")
        print("linger id", len(client.enqueue("linger", None, b"x")))


async def async_part(addr: str) -> None:
    async with AsyncClient(addr) as client:
        await client.create_queue("events")
        mid = await client.enqueue("events", {"kind": "click"}, b"evt")
        stream = await client.consume("events")
        async for msg in stream:
            print("async got", msg.payload.decode(), msg.headers["kind"], msg.id == mid)
            await client.ack(msg.queue, msg.id)
            break
        await stream.aclose()
        print("async depth", (await client.get_stats("events")).depth)
        try:
            await client.delete_queue("events")
            await client.get_stats("events")
        except FilaError as e:
            print("async error", type(e).__name__)


def main() -> int:
    addr = sys.argv[1]
    produce_and_consume(addr)
    admin(addr)
    asyncio.run(async_part(addr))
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
