"""Produce messages: one at a time, non-blocking with AUTO batching, and in a batch.

python -m fila.testing &          # a test broker on localhost:5555
python examples/produce.py [addr]
"""

import sys

from fila import Client

addr = sys.argv[1] if len(sys.argv) > 1 else "localhost:5555"

with Client(addr) as client:
    try:
        client.create_queue("orders")
    except Exception:
        pass  # already there

    msg_id = client.enqueue("orders", b'{"id": 1}', headers={"tenant": "acme"})
    print("enqueued", msg_id)

    # High throughput: submit without waiting; the accumulator batches into frames.
    futures = [client.enqueue_nowait("orders", b"order %d" % i) for i in range(1000)]
    print("enqueued", sum(1 for f in futures if f.result()), "more")

    results = client.enqueue_many([("orders", b"a"), ("no-such-queue", b"b")])
    for r in results:
        print("ok" if r.ok else "failed", r.message_id or r.error)
