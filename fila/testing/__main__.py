"""``python -m fila.testing``: run a test broker in the foreground.

Prints the address (``host:port``) on the first line of stdout, then serves
until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from ..protocol.constants import DEFAULT_PORT
from .broker import Broker


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fila.testing", description="Run an in-process Fila test broker.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to bind, 0 = any free (default {DEFAULT_PORT})"
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("FILA_BOOTSTRAP_APIKEY") or None,
        help="bootstrap (superadmin) API key; turns auth on (default: $FILA_BOOTSTRAP_APIKEY)",
    )
    p.add_argument("--tls-cert", help="server certificate (PEM file); enables TLS")
    p.add_argument("--tls-key", help="server private key (PEM file)")
    p.add_argument("--tls-ca", help="CA bundle (PEM file); requires client certificates (mTLS)")
    p.add_argument("--node-id", type=int, default=0, help="node id in HandshakeOk (non-zero simulates a cluster node)")
    p.add_argument("--visibility-timeout-ms", type=int, default=30_000, help="default lease time (default 30000)")
    p.add_argument("--delivery-batch-size", type=int, default=1, help="most messages per Delivery frame (default 1)")
    p.add_argument(
        "--lease-check-interval",
        type=float,
        default=0.1,
        help="seconds without a request before the idle delivery pass and lease scan (default 0.1)",
    )
    p.add_argument(
        "--nagle",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep Nagle on for client sockets, as the server does; --no-nagle sets TCP_NODELAY (default on)",
    )
    p.add_argument(
        "--idle-reclaim",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reclaim expired leases only when idle, as the server does; --no-idle-reclaim uses a fixed tick "
        "(default on)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug output to stderr")
    return p


def _broker(args: argparse.Namespace) -> Broker:
    return Broker(
        args.host,
        args.port,
        api_key=args.api_key,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        node_id=args.node_id,
        visibility_timeout_ms=args.visibility_timeout_ms,
        delivery_batch_size=args.delivery_batch_size,
        lease_check_interval=args.lease_check_interval,
        nagle=args.nagle,
        idle_reclaim=args.idle_reclaim,
    )


async def _serve(args: argparse.Namespace) -> None:
    broker = _broker(args)
    await broker.start_async()
    print(broker.address, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    try:
        await stop.wait()
    finally:
        await broker.stop_async()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        print("error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    if args.tls_ca is not None and args.tls_cert is None:
        print("error: --tls-ca needs --tls-cert and --tls-key", file=sys.stderr)
        return 2
    if args.lease_check_interval <= 0:
        print("error: --lease-check-interval must be positive", file=sys.stderr)
        return 2
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    try:
        asyncio.run(_serve(args))
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
