"""Queue administration: create, stats, config, redrive, delete.

python -m fila.testing --port 5555 &
python examples/admin.py [addr]            # safe to run again and again
"""

import sys

from fila import Client
from fila.errors import QueueAlreadyExistsError

addr = sys.argv[1] if len(sys.argv) > 1 else "localhost:5555"

with Client(addr) as client:
    try:
        client.create_queue("jobs", visibility_timeout_ms=60_000)  # also on_enqueue= / on_failure= (Lua)
    except QueueAlreadyExistsError:
        pass
    client.enqueue("jobs", None, b"work")

    stats = client.get_stats("jobs")  # StatsResult; per_key_stats / per_throttle_stats lists too
    print(f"jobs: depth={stats.depth} in_flight={stats.in_flight} consumers={stats.active_consumers}")
    for q in client.list_queues():  # QueueInfo for every queue, DLQs included
        print(f"  {q.name}: depth={q.depth}")

    client.set_config("throttle.api", "100,200")  # a token bucket: 100 per second, bursts of 200
    print("config:", client.list_config("throttle."))
    client.set_config("throttle.api", "")  # an empty value deletes the key (and the bucket)

    print("redriven:", client.redrive("jobs.dlq"))  # count=0: every dead letter back to "jobs"
    client.delete_queue("jobs")  # and jobs.dlq
