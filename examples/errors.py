"""Errors: one exception class per server error code, plus transport errors.

python -m fila.testing --port 5555 &
python examples/errors.py [addr]           # safe to run again and again
"""

import sys

from fila import Client
from fila import ErrorCode
from fila import errors

addr = sys.argv[1] if len(sys.argv) > 1 else "localhost:5555"

with Client(addr, request_timeout=5) as client:
    try:
        client.enqueue("does-not-exist", None, b"x")
    except errors.QueueNotFoundError as exc:
        print("enqueue:", ErrorCode(exc.code).name, "|", exc)
    try:
        client.ack("does-not-exist", "00000000-0000-0000-0000-000000000000")
    except errors.MessageNotFoundError as exc:
        print("ack:", exc)

    try:
        client.create_queue("errors-demo")
    except errors.QueueAlreadyExistsError:
        pass
    try:
        client.redrive("errors-demo")  # not a dead-letter queue
    except errors.InvalidArgumentError as exc:  # NotADLQError is one
        print("redrive:", type(exc).__name__, f"code=0x{exc.code:02x}", exc.metadata)

    for r in client.enqueue_many([("errors-demo", None, b"ok"), ("does-not-exist", None, b"lost")]):
        if not r.is_success:
            print("batch item:", r.error, "->", type(r.exception).__name__)

try:
    Client("127.0.0.1:1", connect_timeout=1)  # nothing listens there: the constructor raises
except errors.FilaConnectionError as exc:  # ConnectError; also ConnectionLostError, RequestTimeoutError...
    print("transport:", type(exc).__name__, "| may have been applied:", exc.may_have_been_applied)
