"""Produce messages: one at a time, without waiting (AUTO batching + flush), and as a batch.

python -m fila.testing --port 5555 &      # or any Fila server
python examples/produce.py [addr]          # safe to run again and again
"""

import sys

from fila import Client
from fila.errors import QueueAlreadyExistsError

addr = sys.argv[1] if len(sys.argv) > 1 else "localhost:5555"

with Client(addr) as client:  # connects and handshakes here (ConnectError if nobody answers)
    try:
        client.create_queue("orders")  # also creates "orders.dlq"
    except QueueAlreadyExistsError:
        pass  # a previous run made it

    # One message: queue, headers, payload; returns the broker's id (UUIDv7 text).
    msg_id = client.enqueue("orders", {"tenant": "acme"}, b'{"id": 1}')
    print("enqueued", msg_id)

    # Many messages without waiting: each call returns a Future; the accumulator
    # packs what is submitted while a frame is in flight into the next frame.
    futures = [client.enqueue_nowait("orders", None, b"order %d" % i) for i in range(1000)]
    client.flush()  # every future has its answer now
    print("enqueued", sum(1 for f in futures if f.exception() is None), "more without waiting")

    # A batch you already hold: one EnqueueResult per message; one failure never fails the others.
    for r in client.enqueue_many([("orders", None, b"a"), ("no-such-queue", None, b"b")]):
        print("ok" if r.is_success else "failed", r.message_id or r.error)
