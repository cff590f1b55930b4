"""Queue administration: create, stats, config, redrive, delete.

python -m fila.testing &
python examples/admin.py [addr]
"""

import sys

from fila import Client
from fila.errors import QueueAlreadyExistsError

addr = sys.argv[1] if len(sys.argv) > 1 else "localhost:5555"

with Client(addr) as client:
    try:
        client.create_queue("jobs", visibility_timeout_ms=60_000)
    except QueueAlreadyExistsError:
        pass
    client.enqueue("jobs", b"work")
    stats = client.get_stats("jobs")
    print(f"jobs: depth={stats.depth} in_flight={stats.in_flight} consumers={stats.active_consumers}")
    for q in client.list_queues():
        print(" ", q.name, q.depth)
    client.set_config("throttle.api", "100,200")  # rate, burst
    print(client.list_config("throttle."))
    print("redriven:", client.redrive("jobs.dlq"))
    client.delete_queue("jobs")
