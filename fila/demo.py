"""The demo: produce and consume N messages and print the throughput.

python -m fila.demo                    # starts an embedded fila.testing broker
python -m fila.demo localhost:5555     # or uses a running server
python -m fila.demo -n 200000 --size 64
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator

from . import CODEC_IMPLEMENTATION, Client

__all__ = ["main"]


@contextlib.contextmanager
def _server(addr: str | None) -> Iterator[str]:
    if addr:
        yield addr
        return
    from .testing import Broker

    with Broker() as broker:
        print(f"started an embedded fila.testing broker on {broker.address} (CPU figures include it)")
        yield broker.address


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m fila.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("addr", nargs="?", help="server address (default: start an embedded test broker)")
    ap.add_argument("-n", "--messages", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=64, help="payload bytes")
    ap.add_argument("--queue", default="fila-demo")
    ap.add_argument("--api-key", default=None)
    args = ap.parse_args(argv)
    n = args.messages
    payload = b"x" * args.size
    print(f"fila demo: {n} messages of {args.size} B, codec: {CODEC_IMPLEMENTATION}")
    with _server(args.addr) as addr, Client(addr, api_key=args.api_key, request_timeout=120) as client:
        with contextlib.suppress(Exception):
            client.create_queue(args.queue)
        c0, t0 = time.process_time(), time.perf_counter()
        futures = [client.enqueue_nowait(args.queue, payload) for _ in range(n)]
        client.flush()
        failed = sum(1 for f in futures if f.exception() is not None)
        t1, c1 = time.perf_counter(), time.process_time()
        print(
            f"produced {n - failed:>9,} in {t1 - t0:6.2f} s  {n / (t1 - t0):>10,.0f} msg/s"
            f"  client CPU {(c1 - c0) / n * 1e6:.2f} µs/msg"
        )
        got = 0
        c0, t0 = time.process_time(), time.perf_counter()
        with client.consume(args.queue) as consumer:
            while got < n - failed:
                msg = consumer.get(timeout=10)
                if msg is None:
                    break
                consumer.ack(msg)
                got += 1
            consumer.flush()
        t1, c1 = time.perf_counter(), time.process_time()
        print(
            f"consumed {got:>9,} in {t1 - t0:6.2f} s  {got / (t1 - t0):>10,.0f} msg/s"
            f"  client CPU {(c1 - c0) / max(got, 1) * 1e6:.2f} µs/msg (acked)"
        )
    return 0 if got == n - failed and not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
