"""Errors: one exception class per server error code, plus transport errors.

python -m fila.testing &
python examples/errors.py [addr]
"""

import sys

from fila import Client, errors

addr = sys.argv[1] if len(sys.argv) > 1 else "localhost:5555"

with Client(addr, request_timeout=5) as client:
    try:
        client.enqueue("does-not-exist", b"x")
    except errors.QueueNotFoundError as exc:
        print("per-message error:", exc.code.name, exc.message)
    try:
        client.ack("does-not-exist", "00000000-0000-0000-0000-000000000000")
    except errors.MessageNotFoundError as exc:
        print("ack error:", exc)
    try:
        client.redrive("not-a-dlq")
    except errors.ServerError as exc:  # base of every server error
        print("server error:", type(exc).__name__, exc.metadata)

try:
    Client("127.0.0.1:1", connect_timeout=1).list_queues()
except errors.FilaConnectionError as exc:  # ConnectError, ConnectionLostError, RequestTimeoutError...
    print("transport error:", exc, "| may have been applied:", exc.may_have_been_applied)
