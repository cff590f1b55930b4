"""End-to-end client benchmarks, on the engine of ``fila-py bench`` (:mod:`fila._bench`).

    python benchmarks/bench_e2e.py [--messages 100000] [--size 64]
    python benchmarks/bench_e2e.py --addr HOST:PORT [--api-key KEY]   # any server
    python benchmarks/bench_e2e.py --async                             # asyncio rows only (--sync: sync rows only)

Without ``--addr`` it starts one ``python -m fila.testing`` broker in a child
process. Then it runs the client side once per codec twin, each in a
subprocess of its own (``FILA_NO_EXTENSIONS=1`` for the pure twin), and prints
a markdown table. Reported per scenario: throughput (messages per second of
wall time) and **client CPU per message** (process time of the client process
— every thread — divided by the messages; the broker is another process).
Numbers only; nothing here asserts on time.

Scenarios, for ``Client`` (sync) and ``AsyncClient``:

* consume + ack (``consumer.ack``), until every ack is answered;
* produce with ``enqueue_nowait`` + AUTO accumulation, then ``flush()``
  (asyncio also: awaiting every future with ``asyncio.gather``, whose own cost
  is then included);
* produce with ``enqueue_many`` (batches of 1000);
* enqueue→delivery latency p50/p99/p99.9 at a fixed rate (500 msg/s), in a
  paced phase of its own: the consumer blocks in ``get(timeout=…)`` (sync) or
  iterates (``async for``) and acks with ``consumer.ack``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from fila import _bench  # noqa: E402

WARMUP = 2000
MODES = ("sync", "async")
TWINS = {"cython": "0", "python": "1"}  # FILA_NO_EXTENSIONS per twin


# ------------------------------------------------------------ client side


def _record(phase: _bench.Phase) -> dict[str, float]:
    return {"rate": phase.rate, "cpu_us": phase.cpu_us_per_msg}


def _latency(lat: _bench.Latency) -> dict[str, float]:
    return {"rate": lat.rate, "p50_ms": lat.p50_ms, "p99_ms": lat.p99_ms, "p999_ms": lat.p999_ms, "n": lat.messages}


def client_main(
    addr: str,
    n: int,
    size: int,
    latency_rate: float,
    latency_seconds: float,
    modes: Sequence[str] = MODES,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every scenario of ``modes`` against ``addr``; one JSON-able dict of results."""
    import fila

    opts = {"request_timeout": 120.0, **(options or {})}
    payload = b"x" * size
    count = max(1, int(latency_rate * latency_seconds))
    interval = 1.0 / latency_rate
    out: dict[str, Any] = {"codec": fila.CODEC_IMPLEMENTATION}
    with contextlib.ExitStack() as stack:

        def queue(prefix: str) -> str:
            return stack.enter_context(_bench.scratch_queue(addr, opts, prefix=f"bench-e2e-{prefix}"))

        if "sync" in modes:
            q, q_many, q_lat = queue("nowait"), queue("many"), queue("lat")
            _bench.produce_nowait(addr, q, WARMUP, payload, options=opts)  # warm-up: connections, code paths
            _bench.consume_ack(addr, q, WARMUP, options=opts)
            out["produce_nowait"] = _record(_bench.produce_nowait(addr, q, n, payload, options=opts))
            out["consume_ack"] = _record(_bench.consume_ack(addr, q, n, options=opts))
            out["produce_many"] = _record(_bench.produce_many(addr, q_many, n, payload, options=opts))
            out["latency"] = _latency(_bench.latency(addr, q_lat, count, interval, payload, options=opts))
        if "async" in modes:
            q, q_gather, q_many, q_lat = queue("async"), queue("gather"), queue("async-many"), queue("async-lat")

            async def run_async() -> None:
                await _bench.produce_nowait_async(addr, q, WARMUP, payload, options=opts)
                await _bench.consume_ack_async(addr, q, WARMUP, options=opts)
                phase = await _bench.produce_nowait_async(addr, q, n, payload, options=opts)
                out["produce_async_nowait"] = _record(phase)
                out["consume_ack_async"] = _record(await _bench.consume_ack_async(addr, q, n, options=opts))
                phase = await _bench.produce_nowait_async(addr, q_gather, n, payload, gather=True, options=opts)
                out["produce_async_gather"] = _record(phase)
                out["produce_async_many"] = _record(
                    await _bench.produce_many_async(addr, q_many, n, payload, options=opts)
                )
                lat = await _bench.latency_async(addr, q_lat, count, interval, payload, options=opts)
                out["latency_async"] = _latency(lat)

            asyncio.run(run_async())
    return out


# ------------------------------------------------------------ runner side


@contextlib.contextmanager
def _server(addr: str | None, broker_args: Sequence[str]) -> Iterator[str]:
    if addr:
        yield addr
    else:
        with _bench.embedded_broker(broker_args) as embedded:
            yield embedded


def run_all(
    n: int,
    size: int,
    latency_rate: float,
    latency_seconds: float,
    broker_args: Sequence[str] = (),
    *,
    addr: str | None = None,
    modes: Sequence[str] = MODES,
    twins: Sequence[str] = tuple(TWINS),
    api_key: str | None = None,
) -> list[dict[str, Any]]:
    """Run the client side once per twin, each in its own process, against ``addr`` or an embedded broker."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if api_key:
        env["FILA_API_KEY"] = api_key
    results = []
    with _server(addr, broker_args) as server:
        for twin in twins:
            cmd = [
                sys.executable,
                __file__,
                "--client",
                server,
                "--messages",
                str(n),
                "--size",
                str(size),
                "--latency-rate",
                str(latency_rate),
                "--latency-seconds",
                str(latency_seconds),
            ]
            if list(modes) != list(MODES):
                cmd.append(f"--{modes[0]}")
            proc = subprocess.run(
                cmd, env=dict(env, FILA_NO_EXTENSIONS=TWINS[twin]), capture_output=True, text=True, timeout=1800
            )
            if proc.returncode != 0:
                raise RuntimeError(f"client run ({twin} twin) failed:\n{proc.stderr}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


ROWS = [
    ("consume + ack, `consumer.ack` (sync)", "consume_ack"),
    ("consume + ack, `consumer.ack` (asyncio)", "consume_ack_async"),
    ("produce, `enqueue_nowait` + AUTO, then `flush()` (sync)", "produce_nowait"),
    ("produce, `enqueue_nowait` + AUTO, then `flush()` (asyncio)", "produce_async_nowait"),
    ("produce, `enqueue_nowait` + AUTO, then `asyncio.gather(*futures)` (asyncio)", "produce_async_gather"),
    ("produce, `enqueue_many` ×1000 (sync)", "produce_many"),
    ("produce, `enqueue_many` ×1000 (asyncio)", "produce_async_many"),
]
LATENCY_ROWS = [("sync consumer", "latency"), ("AsyncClient consumer", "latency_async")]


def table(results: list[dict[str, Any]], size: int) -> str:
    """A markdown table: one row per scenario that ran, two columns (msg/s, client CPU µs/msg) per twin."""
    head = (
        f"| scenario ({size} B payloads) | "
        + " | ".join(f"{r['codec']} msg/s | {r['codec']} client CPU µs/msg" for r in results)
        + " |"
    )
    lines = [head, "|---" + "|---:" * (2 * len(results)) + "|"]
    for label, key in ROWS:
        if not any(key in r for r in results):
            continue
        cells = []
        for r in results:
            m = r.get(key)
            cells += [f"{m['rate']:,.0f}", f"{m['cpu_us']:.2f}"] if m else ["–", "–"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for label, key in LATENCY_ROWS:
        lat = [r.get(key) for r in results]
        if not any(lat):
            continue
        rate = next(m["rate"] for m in lat if m)
        cells = []
        for m in lat:
            cells += (
                [f"p50 {m['p50_ms']:.2f} · p99 {m['p99_ms']:.2f} · p99.9 {m['p999_ms']:.2f} ms", ""] if m else ["–", ""]
            )
        lines.append(f"| enqueue→delivery at {rate:.0f} msg/s, {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=64, help="payload bytes (default 64)")
    ap.add_argument("--addr", metavar="HOST:PORT", help="benchmark this server (default: an embedded fila.testing)")
    ap.add_argument("--api-key", default=os.environ.get("FILA_API_KEY"), help="API key for --addr")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--sync", action="store_true", help="only the Client (sync) scenarios")
    mode.add_argument("--async", dest="use_async", action="store_true", help="only the AsyncClient scenarios")
    ap.add_argument("--twin", choices=("both", *TWINS), default="both", help="codec twin(s) to run (default both)")
    ap.add_argument("--latency-rate", type=float, default=500.0, help="msg/s in the latency phase (default 500)")
    ap.add_argument("--latency-seconds", type=float, default=4.0, help="length of the latency phase (default 4)")
    ap.add_argument("--delivery-batch-size", type=int, default=1, help="embedded broker option (1 = like the server)")
    ap.add_argument("--json", action="store_true", help="print the raw results instead of the table")
    ap.add_argument("--client", metavar="ADDR", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    modes = ("sync",) if args.sync else ("async",) if args.use_async else MODES
    if args.client:
        options = {"api_key": os.environ.get("FILA_API_KEY") or None}
        res = client_main(
            args.client, args.messages, args.size, args.latency_rate, args.latency_seconds, modes, options
        )
        print(json.dumps(res))
        return
    results = run_all(
        args.messages,
        args.size,
        args.latency_rate,
        args.latency_seconds,
        ["--delivery-batch-size", str(args.delivery_batch_size)],
        addr=args.addr,
        modes=modes,
        twins=tuple(TWINS) if args.twin == "both" else (args.twin,),
        api_key=args.api_key,
    )
    print(json.dumps(results, indent=1) if args.json else table(results, args.size))


if __name__ == "__main__":
    main()
