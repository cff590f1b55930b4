"""End-to-end client benchmarks against a ``python -m fila.testing`` broker in another process.

    python benchmarks/bench_e2e.py [--messages 100000] [--size 64]

Starts one broker process, then runs the client side once per codec twin, each
in a subprocess of its own (``FILA_NO_EXTENSIONS`` set for the pure twin), and
prints a markdown table. Reported per scenario: throughput (messages per
second of wall time) and **client CPU per message** (process time of the
client process — every thread — divided by the messages). Numbers only;
nothing here asserts on time.

Scenarios: produce with ``enqueue_nowait`` + AUTO batching (sync and asyncio; for asyncio
also awaiting every future with ``asyncio.gather``, whose own cost is then included),
produce with ``enqueue_many`` (batches of 1000), consume with batched acks
(``Consumer.ack``), and enqueue→delivery latency p50/p99 at a fixed rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------ client side


def _measure(fn: Any, n: int) -> dict[str, float]:
    c0 = time.process_time()
    w0 = time.perf_counter()
    fn()
    w1 = time.perf_counter()
    c1 = time.process_time()
    return {"rate": n / (w1 - w0), "cpu_us": (c1 - c0) / n * 1e6}


def client_main(addr: str, n: int, size: int, latency_rate: float, latency_seconds: float) -> dict[str, Any]:
    import fila
    from fila import AsyncClient, Client

    payload = b"x" * size
    out: dict[str, Any] = {"codec": fila.CODEC_IMPLEMENTATION}
    run_id = f"{os.getpid()}"

    with Client(addr, request_timeout=120) as c:
        q_nowait, q_many, q_async, q_lat = (f"{p}-{run_id}" for p in ("nowait", "many", "async", "lat"))
        for q in (q_nowait, q_many, q_async, q_lat):
            c.create_queue(q)

        # warm-up (connections, code paths)
        for f in [c.enqueue_nowait(q_nowait, payload) for _ in range(2000)]:
            f.result(60)

        def produce_nowait() -> None:
            futs = [c.enqueue_nowait(q_nowait, payload) for _ in range(n)]
            c.flush(120)
            futs[-1].result(120)

        out["produce_nowait"] = _measure(produce_nowait, n)

        batch = [(q_many, payload)] * 1000

        def produce_many() -> None:
            for _ in range(n // 1000):
                c.enqueue_many(batch)

        out["produce_many"] = _measure(produce_many, n // 1000 * 1000)

        async def produce_async() -> None:
            async with AsyncClient(addr, request_timeout=120) as ac:
                for f in [ac.enqueue_nowait(q_async, payload) for _ in range(2000)]:
                    await f
                # Like the sync scenario: submit, flush (every future resolved), take the last.
                c0 = time.process_time()
                w0 = time.perf_counter()
                futs = [ac.enqueue_nowait(q_async, payload) for _ in range(n)]
                await ac.flush(120)
                await futs[-1]
                out["produce_async_nowait"] = {
                    "rate": n / (time.perf_counter() - w0),
                    "cpu_us": (time.process_time() - c0) / n * 1e6,
                }
                # The same, awaiting every future with asyncio.gather: gather's own per-future
                # callbacks (about as much CPU as the client itself) are in this number.
                c0 = time.process_time()
                w0 = time.perf_counter()
                futs = [ac.enqueue_nowait(q_async, payload) for _ in range(n)]
                await asyncio.gather(*futs)
                out["produce_async_gather"] = {
                    "rate": n / (time.perf_counter() - w0),
                    "cpu_us": (time.process_time() - c0) / n * 1e6,
                }

        asyncio.run(produce_async())

        # consume + ack what produce_nowait stored (n + the warm-up)
        total = n + 2000

        def consume() -> None:
            got = 0
            with c.consume(q_nowait) as consumer:
                while got < total:
                    m = consumer.get(timeout=30)
                    if m is None:
                        raise RuntimeError(f"consumer stalled after {got} messages")
                    consumer.ack(m)
                    got += 1
                consumer.flush(60)

        out["consume_ack"] = _measure(consume, total)

        # latency at a fixed moderate rate
        lat: list[float] = []
        count = int(latency_rate * latency_seconds)
        with c.consume(q_lat) as consumer:
            interval = 1.0 / latency_rate
            start = time.perf_counter()
            sent = 0
            while sent < count or len(lat) < count:
                now = time.perf_counter()
                if sent < count and now >= start + sent * interval:
                    c.enqueue_nowait(q_lat, b"%.9f" % now + payload[: max(0, size - 20)])
                    sent += 1
                    continue
                m = consumer.get(timeout=0 if sent < count else 10)
                if m is not None:
                    lat.append(time.perf_counter() - float(m.payload[:20].split(b"x")[0]))
                    consumer.ack(m)
                elif sent >= count:
                    break
        lat.sort()
        if lat:
            out["latency"] = {
                "rate": latency_rate,
                "p50_ms": lat[len(lat) // 2] * 1e3,
                "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
                "n": len(lat),
            }
    return out


# ------------------------------------------------------------ runner side


def run_all(
    n: int, size: int, latency_rate: float, latency_seconds: float, broker_args: list[str]
) -> list[dict[str, Any]]:
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    broker = subprocess.Popen(
        [sys.executable, "-m", "fila.testing", "--port", str(port), *broker_args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or broker.poll() is not None:
                    raise RuntimeError("the broker did not start") from None
                time.sleep(0.05)
        results = []
        for twin_env in ({"FILA_NO_EXTENSIONS": "0"}, {"FILA_NO_EXTENSIONS": "1"}):
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--client",
                    f"127.0.0.1:{port}",
                    "--messages",
                    str(n),
                    "--size",
                    str(size),
                    "--latency-rate",
                    str(latency_rate),
                    "--latency-seconds",
                    str(latency_seconds),
                ],
                env=dict(env, **twin_env),
                capture_output=True,
                text=True,
                timeout=1800,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"client run failed:\n{proc.stderr}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        return results
    finally:
        broker.terminate()
        try:
            broker.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            broker.kill()


def table(results: list[dict[str, Any]], size: int) -> str:
    rows = [
        ("produce, `enqueue_nowait` + AUTO (sync)", "produce_nowait"),
        ("produce, `enqueue_nowait` + AUTO (asyncio)", "produce_async_nowait"),
        ("produce, `enqueue_nowait` + AUTO (asyncio), `await asyncio.gather(*futures)`", "produce_async_gather"),
        ("produce, `enqueue_many` ×1000 (sync)", "produce_many"),
        ("consume + batched ack (sync)", "consume_ack"),
    ]
    head = (
        f"| scenario ({size} B payloads) | "
        + " | ".join(f"{r['codec']}: msg/s | {r['codec']}: client CPU µs/msg" for r in results)
        + " |"
    )
    lines = [head, "|---" + "|---:" * (2 * len(results)) + "|"]
    for label, key in rows:
        cells = []
        for r in results:
            m = r.get(key)
            cells += [f"{m['rate']:,.0f}", f"{m['cpu_us']:.2f}"] if m else ["–", "–"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lat = [r.get("latency") for r in results]
    if all(lat):
        cells = []
        for m in lat:
            assert m is not None
            cells += [f"p50 {m['p50_ms']:.2f} ms", f"p99 {m['p99_ms']:.2f} ms"]
        lines.append(f"| enqueue→delivery latency at {lat[0]['rate']:.0f} msg/s | " + " | ".join(cells) + " |")  # type: ignore[index]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--latency-rate", type=float, default=500.0)
    ap.add_argument("--latency-seconds", type=float, default=4.0)
    ap.add_argument("--delivery-batch-size", type=int, default=1, help="broker option (1 = like the real server)")
    ap.add_argument("--client", metavar="ADDR", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.client:
        res = client_main(args.client, args.messages, args.size, args.latency_rate, args.latency_seconds)
        print(json.dumps(res))
        return
    results = run_all(
        args.messages,
        args.size,
        args.latency_rate,
        args.latency_seconds,
        ["--delivery-batch-size", str(args.delivery_batch_size)],
    )
    print(table(results, args.size))


if __name__ == "__main__":
    main()
