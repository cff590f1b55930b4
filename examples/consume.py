"""Consume: ack, nack, and dead-lettering through an on_failure hook (sync, then asyncio).

python -m fila.testing --port 5555 &      # Lua hooks in the test broker need `pip install lupa`
python examples/consume.py [addr]          # safe to run again and again
"""

import asyncio
import sys

from fila import AsyncClient
from fila import Client
from fila.errors import QueueNotFoundError

addr = sys.argv[1] if len(sys.argv) > 1 else "localhost:5555"
QUEUE = "consume-demo"

# Without an on_failure hook a nacked message is retried forever; this one
# sends it to the dead-letter queue (consume-demo.dlq) at its third failure.
ON_FAILURE = """
function on_failure(msg)
  if msg.attempts >= 3 then return { action = "dlq" } end
  return { action = "retry" }
end
"""

with Client(addr) as client:
    try:
        client.delete_queue(QUEUE)  # start clean on every run (deletes consume-demo.dlq too)
    except QueueNotFoundError:
        pass
    client.create_queue(QUEUE, on_failure=ON_FAILURE, visibility_timeout_ms=10_000)
    client.enqueue_many([(QUEUE, {"n": str(i)}, b"job %d" % i) for i in range(3)] + [(QUEUE, None, b"bad job")])

    with client.consume(QUEUE) as consumer:  # its own connection; subscribed on return
        while (msg := consumer.get(timeout=1.0)) is not None:
            if msg.payload.startswith(b"bad"):
                print(f"nack {msg.payload!r} (attempt {msg.attempt_count})")
                consumer.nack(msg, "cannot parse")  # retried twice, then dead-lettered by the hook
            else:
                print(f"ack  {msg.payload!r} headers={msg.headers}")
                consumer.ack(msg)  # batched over the consumer's connection
        consumer.flush()  # wait until every ack/nack is answered

    with client.consume(QUEUE + ".dlq") as dead:
        msg = dead.get(timeout=2.0)
        if msg is not None:
            print(f"dead letter {msg.payload!r}: attempts={msg.attempt_count} queue={msg.queue}")
            client.ack(msg.queue, msg.id)  # blocking ack with its answer; note msg.queue is the DLQ
    print("depth now:", client.get_stats(QUEUE).depth)


async def main() -> None:
    async with AsyncClient(addr) as client:
        msg_id = await client.enqueue(QUEUE, None, b"async hello")
        async with client.consume(QUEUE) as consumer:
            async for msg in consumer:
                print("async got", msg.payload)
                await client.ack(msg.queue, msg.id)
                if msg.id == msg_id:
                    break


asyncio.run(main())
