"""Consume and acknowledge messages (sync, then asyncio).

python -m fila.testing &
python examples/produce.py && python examples/consume.py [addr]
"""

import asyncio
import sys

from fila import AsyncClient, Client

addr = sys.argv[1] if len(sys.argv) > 1 else "localhost:5555"

with Client(addr) as client:
    with client.consume("orders") as consumer:
        while (msg := consumer.get(timeout=1.0)) is not None:
            if msg.payload.startswith(b"bad"):
                consumer.nack(msg, "cannot parse")  # retried, then dead-lettered
            else:
                consumer.ack(msg)  # batched over the consumer's connection
        consumer.flush()
    print("queue depth now", client.get_stats("orders").depth)


async def main() -> None:
    async with AsyncClient(addr) as client:
        await client.enqueue("orders", b"async hello")
        async with client.consume("orders") as consumer:
            async for msg in consumer:
                print("async got", msg.payload)
                await client.ack(msg.queue, msg.id)
                break


asyncio.run(main())
