"""The benchmark engine behind ``fila-py bench`` and ``benchmarks/bench_e2e.py``.

Each scenario runs one phase against a server and returns what it measured:
wall time, and **client CPU** — the process time of this process (every
thread; a broker in another process is not counted) — per message. Numbers
only: nothing here judges them.

* :func:`embedded_broker` starts ``python -m fila.testing --port 0`` in a child
  process and yields its address (read from the ready line on its stdout).
* Throughput phases: :func:`produce_nowait`, :func:`produce_many`,
  :func:`consume_ack` and their asyncio twins (``*_async``).
* :func:`latency` / :func:`latency_async`: enqueue→delivery time measured in a
  paced phase of its own (one message every ``interval`` seconds; the send
  time rides in a header; the consumer blocks in ``get(timeout=…)`` or
  iterates, and acks with ``consumer.ack``), so that the harness does not
  compete with the client's own threads for the GIL.
* :func:`run` is the whole ``bench`` command: scratch queue, warm-up,
  produce, consume + ack, latency, clean-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import os
import queue as queue_mod
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

log = logging.getLogger("fila.bench")

#: Header carrying the send time (``time.perf_counter_ns()``) in the latency phase.
SENT_AT_HEADER = "fila-bench-sent-ns"
#: Messages per progress update (and per event-loop yield when producing with asyncio).
CHUNK = 512
#: A phase fails when no message arrives for this long.
STALL_SECONDS = 30.0
#: Lease time of the scratch queue: long enough that nothing is redelivered during a run.
SCRATCH_VISIBILITY_MS = 600_000

ClientOptions = Mapping[str, Any]


class BenchError(Exception):
    """The benchmark could not complete (lost messages, a stalled consumer, a broker that did not start)."""


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class Phase:
    """One timed phase: ``messages`` handled in ``seconds`` of wall time using ``cpu_seconds`` of client CPU."""

    messages: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        """Messages per second of wall time."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_msg(self) -> float:
        """Client process CPU (µs) per message."""
        return self.cpu_seconds / self.messages * 1e6 if self.messages else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "messages": self.messages,
            "seconds": round(self.seconds, 6),
            "msg_per_s": round(self.rate, 1),
            "cpu_us_per_msg": round(self.cpu_us_per_msg, 3),
        }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of already sorted values."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class Latency:
    """Enqueue→delivery latency of a paced phase, in milliseconds."""

    messages: int
    interval_ms: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    consumer: str = "sync"

    @classmethod
    def from_samples(cls, samples_ns: Sequence[int], interval: float, consumer: str) -> Latency:
        ms = sorted(s / 1e6 for s in samples_ns)
        return cls(
            messages=len(ms),
            interval_ms=interval * 1e3,
            p50_ms=percentile(ms, 0.50),
            p99_ms=percentile(ms, 0.99),
            p999_ms=percentile(ms, 0.999),
            max_ms=ms[-1] if ms else 0.0,
            consumer=consumer,
        )

    @property
    def rate(self) -> float:
        """The paced send rate, messages per second."""
        return 1e3 / self.interval_ms if self.interval_ms > 0 else 0.0

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "messages": self.messages,
            "interval_ms": round(self.interval_ms, 3),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "p999_ms": round(self.p999_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "consumer": self.consumer,
        }


@dataclass(frozen=True)
class BenchConfig:
    """What :func:`run` does."""

    messages: int = 50_000
    payload_size: int = 64
    producers: int = 1
    consumers: int = 1
    use_async: bool = False
    latency_messages: int = 500
    latency_interval: float = 0.002
    warmup: int | None = None  # default: min(1000, max(100, messages // 20))

    def __post_init__(self) -> None:
        for name in ("messages", "producers", "consumers", "latency_messages"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.payload_size < 0:
            raise ValueError(f"payload_size must be >= 0, got {self.payload_size}")
        if self.latency_interval <= 0:
            raise ValueError(f"latency_interval must be > 0, got {self.latency_interval}")


@dataclass(frozen=True)
class BenchResult:
    """Everything :func:`run` measured."""

    codec: str
    fila_version: str
    python: str
    server: str
    embedded: bool
    config: BenchConfig
    produce: Phase
    consume: Phase
    latency: Latency
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "fila_version": self.fila_version,
            "python": self.python,
            "server": self.server,
            "embedded": self.embedded,
            "mode": "async" if self.config.use_async else "sync",
            "messages": self.config.messages,
            "payload_size": self.config.payload_size,
            "producers": self.config.producers,
            "consumers": self.config.consumers,
            "produce": self.produce.as_dict(),
            "consume": self.consume.as_dict(),
            "latency": self.latency.as_dict(),
        }


# ------------------------------------------------------------------ progress


class Progress:
    """Counters the phases update every :data:`CHUNK` messages; :class:`ProgressReporter` reads them."""

    def __init__(self) -> None:
        self.phase = ""
        self.total = 0
        self.counts: list[int] = [0]

    def begin(self, phase: str, total: int, slots: int = 1) -> None:
        self.counts = [0] * max(1, slots)
        self.total = total
        self.phase = phase

    @property
    def done(self) -> int:
        return sum(self.counts)


class ProgressReporter:
    """A daemon thread that calls ``write(phase, done, total)`` every ``interval`` seconds while running."""

    def __init__(self, progress: Progress, write: Callable[[str, int, int], None], interval: float = 0.2) -> None:
        self._progress = progress
        self._write = write
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fila-bench-progress", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            p = self._progress
            if p.phase:
                self._write(p.phase, p.done, p.total)

    def __enter__(self) -> ProgressReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)


_NO_PROGRESS = Progress()


# ------------------------------------------------------------------ the embedded broker


def _package_home() -> str:
    """The directory holding the ``fila`` package this process imported (the child must import the same)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def embedded_broker(args: Sequence[str] = (), *, start_timeout: float = 30.0) -> Iterator[str]:
    """Run ``python -m fila.testing --host 127.0.0.1 --port 0 ARGS`` in a child process; yield its address.

    The child always uses the fastest codec it has (``FILA_NO_EXTENSIONS`` is
    not passed on), so that runs of the two client twins meet the same broker.
    It is stopped (SIGTERM, then kill) on exit.
    """
    env = {k: v for k, v in os.environ.items() if k != "FILA_NO_EXTENSIONS"}
    home = _package_home()
    env["PYTHONPATH"] = home + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "fila.testing", "--host", "127.0.0.1", "--port", "0", *args]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=env)
        try:
            addr = _read_ready_line(proc, start_timeout)
            if not addr:
                err.seek(0)
                lines = err.read().decode("utf-8", "replace").strip().splitlines()
                why = lines[-1] if lines else f"exit status {proc.poll()}"
                raise BenchError(f"the embedded broker did not start: {why}")
            log.debug("embedded broker (pid %d) on %s", proc.pid, addr)
            yield addr
        finally:
            _stop_process(proc)


def _read_ready_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The first stdout line of ``proc`` (its address), or "" if it exits or stays silent for ``timeout``."""
    assert proc.stdout is not None
    out = proc.stdout
    lines: queue_mod.Queue[bytes] = queue_mod.Queue()
    threading.Thread(target=lambda: lines.put(out.readline()), name="fila-bench-broker-ready", daemon=True).start()
    try:
        return lines.get(timeout=timeout).decode("utf-8", "replace").strip()
    except queue_mod.Empty:
        return ""


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


# ------------------------------------------------------------------ helpers


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _phase(n: int, start: tuple[float, float]) -> Phase:
    w1, c1 = _clock()
    return Phase(n, w1 - start[0], c1 - start[1])


def _first_failure(futures: Sequence[Any]) -> BaseException | None:
    """The first exception among finished futures (sync or asyncio), None when all succeeded."""
    for f in futures:
        if f.done() and not f.cancelled():
            exc = f.exception()
            if exc is not None:
                return exc  # type: ignore[no-any-return]
    return None


def _count_failures(futures: Sequence[Any]) -> int:
    return sum(1 for f in futures if f.cancelled() or f.exception() is not None)


def _raise_if_failed(futures: Sequence[Any], what: str) -> None:
    exc = _first_failure(futures)
    if exc is not None:
        log.debug("%s: %d of %d failed", what, _count_failures(futures), len(futures))
        raise exc


def _flush_consumer(consumer: Any, timeout: float) -> None:
    """Wait until the consumer's acks are answered, when the consumer batches them."""
    flush = getattr(consumer, "flush", None)
    if flush is not None and not flush(timeout):
        raise BenchError(f"acks were not answered within {timeout:.0f} s")


async def _flush_consumer_async(consumer: Any, timeout: float) -> None:
    flush = getattr(consumer, "flush", None)
    if flush is not None:
        ok = flush(timeout)
        if inspect.isawaitable(ok):
            ok = await ok
        if not ok:
            raise BenchError(f"acks were not answered within {timeout:.0f} s")


def _recorder(samples: list[int], counts: list[int], warmup: int) -> Callable[[Any], None]:
    """What both latency phases do with each delivered message: count it and, past the warm-up,
    keep its enqueue→delivery time (the send time rides in the ``SENT_AT_HEADER`` header)."""

    def record(msg: Any) -> None:
        now = time.perf_counter_ns()
        counts[0] += 1
        if counts[0] > warmup:
            samples.append(now - int(msg.headers[SENT_AT_HEADER]))

    return record


def _shares(n: int, parts: int) -> list[int]:
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _stalled(got: int, total: int) -> BenchError:
    return BenchError(f"no message arrived for {STALL_SECONDS:.0f} s after {got:,} of {total:,}")


def _new_client(addr: str, options: ClientOptions) -> Any:
    from . import Client

    return Client(addr, **options)


def _new_async_client(addr: str, options: ClientOptions) -> Any:
    from . import AsyncClient

    return AsyncClient(addr, **options)


# ------------------------------------------------------------------ sync phases


def produce_nowait(
    addr: str,
    queue: str,
    n: int,
    payload: bytes,
    *,
    producers: int = 1,
    options: ClientOptions | None = None,
    progress: Progress = _NO_PROGRESS,
) -> Phase:
    """``enqueue_nowait`` + AUTO accumulation, then ``flush()``; one client (connection) per producer thread."""
    opts = dict(options or {})
    clients = [_new_client(addr, opts) for _ in range(producers)]
    shares = _shares(n, producers)
    results: list[list[Any]] = [[] for _ in range(producers)]
    errors: list[BaseException] = []
    progress.begin("produce", n, producers)
    counts = progress.counts

    def work(slot: int) -> None:
        client = clients[slot]
        enqueue = client.enqueue_nowait
        futures = results[slot]
        append = futures.append
        todo = shares[slot]
        done = 0
        try:
            while done < todo:
                k = min(CHUNK, todo - done)
                for _ in range(k):
                    append(enqueue(queue, None, payload))
                done += k
                counts[slot] = done
            if not client.flush(STALL_SECONDS * 4):
                raise BenchError(f"enqueues were not answered within {STALL_SECONDS * 4:.0f} s")
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [
            threading.Thread(target=work, args=(i,), name=f"fila-bench-producer-{i}") for i in range(1, producers)
        ]
        start = _clock()
        for t in threads:
            t.start()
        work(0)
        for t in threads:
            t.join()
        phase = _phase(n, start)
        if errors:
            raise errors[0]
        for futures in results:
            _raise_if_failed(futures, "produce")
        return phase
    finally:
        for c in clients:
            c.close()


def produce_many(
    addr: str,
    queue: str,
    n: int,
    payload: bytes,
    *,
    batch: int = 1000,
    options: ClientOptions | None = None,
    progress: Progress = _NO_PROGRESS,
) -> Phase:
    """``enqueue_many`` with batches of ``batch`` (``n`` rounded down to whole batches, at least one)."""
    batches = max(1, n // batch)
    items = [(queue, None, payload)] * batch
    progress.begin("produce", batches * batch)
    with _new_client(addr, dict(options or {})) as client:
        enqueue_many = client.enqueue_many
        start = _clock()
        for i in range(batches):
            for r in enqueue_many(items):
                if not r.is_success:
                    raise BenchError(f"enqueue_many: {r.error}")
            progress.counts[0] = (i + 1) * batch
        return _phase(batches * batch, start)


def consume_ack(
    addr: str,
    queue: str,
    n: int,
    *,
    consumers: int = 1,
    options: ClientOptions | None = None,
    progress: Progress = _NO_PROGRESS,
) -> Phase:
    """Consume ``n`` messages and ``consumer.ack`` each; ends when every ack is answered.

    One client (connection) per consumer; with several, each runs on a thread
    of its own and they share the ``n`` messages.
    """
    opts = dict(options or {})
    clients = [_new_client(addr, opts) for _ in range(consumers)]
    progress.begin("consume", n, consumers)
    try:
        if consumers == 1:
            return _consume_one(clients[0], queue, n, progress)
        return _consume_threads(clients, queue, n, progress)
    finally:
        for c in clients:
            c.close()


def _consume_one(client: Any, queue: str, n: int, progress: Progress) -> Phase:
    counts = progress.counts
    start = _clock()
    with client.consume(queue) as consumer:
        get = consumer.get
        ack = consumer.ack
        got = 0
        while got < n:
            for _ in range(min(CHUNK, n - got)):
                msg = get(timeout=STALL_SECONDS)
                if msg is None:
                    raise _stalled(got, n)
                ack(msg)
                got += 1
            counts[0] = got
        _flush_consumer(consumer, STALL_SECONDS)
        return _phase(n, start)


def _consume_threads(clients: list[Any], queue: str, n: int, progress: Progress) -> Phase:
    counts = progress.counts
    done = threading.Event()
    release = threading.Event()
    subscribed: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(slot: int) -> None:
        try:
            with clients[slot].consume(queue) as consumer:
                with lock:
                    subscribed.append(consumer)
                get = consumer.get
                ack = consumer.ack
                got = 0
                while not done.is_set():
                    msg = get(timeout=0.25)
                    if msg is None:
                        continue
                    ack(msg)
                    got += 1
                    counts[slot] = got
                    if sum(counts) >= n:
                        done.set()
                release.wait()
        except BaseException as exc:
            errors.append(exc)
            done.set()

    threads = [threading.Thread(target=work, args=(i,), name=f"fila-bench-consumer-{i}") for i in range(len(clients))]
    start = _clock()
    for t in threads:
        t.start()
    try:
        last, last_change = 0, time.monotonic()
        while not done.wait(0.5):
            now_done = sum(counts)
            if now_done != last:
                last, last_change = now_done, time.monotonic()
            elif time.monotonic() - last_change > STALL_SECONDS:
                raise _stalled(now_done, n)
        if errors:
            raise errors[0]
        with lock:
            for consumer in subscribed:
                _flush_consumer(consumer, STALL_SECONDS)
        return _phase(n, start)
    finally:
        done.set()
        release.set()
        for t in threads:
            t.join(10)


def latency(
    addr: str,
    queue: str,
    count: int,
    interval: float,
    payload: bytes,
    *,
    warmup: int = 20,
    options: ClientOptions | None = None,
    progress: Progress = _NO_PROGRESS,
) -> Latency:
    """Enqueue→delivery latency with a sync consumer: one message every ``interval`` s (blocking ``get``)."""
    opts = dict(options or {})
    total = count + warmup
    samples: list[int] = []
    errors: list[BaseException] = []
    progress.begin("latency", total)
    counts = progress.counts
    record = _recorder(samples, counts, warmup)
    with _new_client(addr, opts) as producer, _new_client(addr, opts) as consumer_client:
        with consumer_client.consume(queue) as consumer:

            def consume() -> None:
                try:
                    get = consumer.get
                    while counts[0] < total:
                        msg = get(timeout=STALL_SECONDS)
                        if msg is None:
                            raise _stalled(counts[0], total)
                        record(msg)
                        consumer.ack(msg)
                    _flush_consumer(consumer, STALL_SECONDS)
                except BaseException as exc:
                    errors.append(exc)

            thread = threading.Thread(target=consume, name="fila-bench-latency-consumer")
            thread.start()
            try:
                enqueue = producer.enqueue_nowait
                futures = []
                start = time.perf_counter()
                for i in range(total):
                    if errors:
                        break
                    delay = start + i * interval - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    futures.append(enqueue(queue, {SENT_AT_HEADER: str(time.perf_counter_ns())}, payload))
                producer.flush(STALL_SECONDS)
                _raise_if_failed(futures, "latency produce")
            except BaseException:
                consumer.close()  # wakes the consumer thread
                raise
            finally:
                thread.join(STALL_SECONDS * 2)
    if errors:
        raise errors[0]
    return Latency.from_samples(samples, interval, "sync")


# ------------------------------------------------------------------ asyncio phases


async def _open_async(addr: str, options: ClientOptions, count: int) -> list[Any]:
    clients = []
    try:
        for _ in range(count):
            client = _new_async_client(addr, options)
            await client.__aenter__()
            clients.append(client)
    except BaseException:
        await _close_async(clients)
        raise
    return clients


async def _close_async(clients: Sequence[Any]) -> None:
    for c in clients:
        with contextlib.suppress(Exception):
            await c.close()


async def produce_nowait_async(
    addr: str,
    queue: str,
    n: int,
    payload: bytes,
    *,
    producers: int = 1,
    gather: bool = False,
    options: ClientOptions | None = None,
    progress: Progress = _NO_PROGRESS,
) -> Phase:
    """AsyncClient ``enqueue_nowait``, then ``await flush()`` (or ``gather`` of the futures); a client per task."""
    clients = await _open_async(addr, dict(options or {}), producers)
    shares = _shares(n, producers)
    progress.begin("produce", n, producers)
    counts = progress.counts

    async def work(slot: int) -> list[Any]:
        client = clients[slot]
        enqueue = client.enqueue_nowait
        futures: list[Any] = []
        append = futures.append
        todo = shares[slot]
        done = 0
        while done < todo:
            k = min(CHUNK, todo - done)
            for _ in range(k):
                append(enqueue(queue, None, payload))
            done += k
            counts[slot] = done
            await asyncio.sleep(0)
        if gather:
            await asyncio.gather(*futures, return_exceptions=True)
        elif not await client.flush(STALL_SECONDS * 4):
            raise BenchError(f"enqueues were not answered within {STALL_SECONDS * 4:.0f} s")
        return futures

    try:
        start = _clock()
        results = await asyncio.gather(*(work(i) for i in range(producers)))
        phase = _phase(n, start)
        for futures in results:
            _raise_if_failed(futures, "produce")
        return phase
    finally:
        await _close_async(clients)


async def produce_many_async(
    addr: str,
    queue: str,
    n: int,
    payload: bytes,
    *,
    batch: int = 1000,
    options: ClientOptions | None = None,
    progress: Progress = _NO_PROGRESS,
) -> Phase:
    """AsyncClient ``enqueue_many`` with batches of ``batch``."""
    batches = max(1, n // batch)
    items = [(queue, None, payload)] * batch
    progress.begin("produce", batches * batch)
    (client,) = await _open_async(addr, dict(options or {}), 1)
    try:
        start = _clock()
        for i in range(batches):
            for r in await client.enqueue_many(items):
                if not r.is_success:
                    raise BenchError(f"enqueue_many: {r.error}")
            progress.counts[0] = (i + 1) * batch
        return _phase(batches * batch, start)
    finally:
        await _close_async([client])


async def consume_ack_async(
    addr: str,
    queue: str,
    n: int,
    *,
    consumers: int = 1,
    options: ClientOptions | None = None,
    progress: Progress = _NO_PROGRESS,
) -> Phase:
    """AsyncClient consumers (``async for``), each acking with ``consumer.ack``; one client per consumer task."""
    clients = await _open_async(addr, dict(options or {}), consumers)
    progress.begin("consume", n, consumers)
    counts = progress.counts
    done = asyncio.Event()
    release = asyncio.Event()
    subscribed: list[Any] = []

    async def work(slot: int) -> None:
        async with clients[slot].consume(queue) as consumer:
            subscribed.append(consumer)
            ack = consumer.ack  # batched, never awaited
            got = 0
            async for msg in consumer:
                ack(msg)
                got += 1
                counts[slot] = got
                if sum(counts) >= n:
                    done.set()
                    break
            await release.wait()

    tasks: list[asyncio.Task[None]] = []
    try:
        start = _clock()
        tasks = [asyncio.ensure_future(work(i)) for i in range(consumers)]
        await _wait_done(done, tasks, counts, n)
        for consumer in subscribed:
            await _flush_consumer_async(consumer, STALL_SECONDS)
        return _phase(n, start)
    finally:
        release.set()
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await _close_async(clients)


async def _wait_done(done: asyncio.Event, tasks: Sequence[asyncio.Task[None]], counts: list[int], n: int) -> None:
    """Wait for ``done``; raise a task's exception, or :class:`BenchError` when no progress for a while."""
    waiter = asyncio.ensure_future(done.wait())
    last, last_change = -1, time.monotonic()
    try:
        while not done.is_set():
            await asyncio.wait([waiter, *tasks], timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            if done.is_set():
                break
            if all(t.done() for t in tasks):
                raise BenchError(f"every consumer stopped after {sum(counts):,} of {n:,}")
            now_done = sum(counts)
            if now_done != last:
                last, last_change = now_done, time.monotonic()
            elif time.monotonic() - last_change > STALL_SECONDS:
                raise _stalled(now_done, n)
    finally:
        waiter.cancel()


async def latency_async(
    addr: str,
    queue: str,
    count: int,
    interval: float,
    payload: bytes,
    *,
    warmup: int = 20,
    options: ClientOptions | None = None,
    progress: Progress = _NO_PROGRESS,
) -> Latency:
    """Enqueue→delivery latency with an AsyncClient consumer (``async for``, ``consumer.ack``), paced sends."""
    total = count + warmup
    samples: list[int] = []
    progress.begin("latency", total)
    counts = progress.counts
    record = _recorder(samples, counts, warmup)
    producer, consumer_client = await _open_async(addr, dict(options or {}), 2)
    try:
        async with consumer_client.consume(queue) as consumer:
            async def consume() -> None:
                async for msg in consumer:
                    record(msg)
                    consumer.ack(msg)
                    if counts[0] >= total:
                        return

            task = asyncio.ensure_future(consume())
            try:
                enqueue = producer.enqueue_nowait
                futures = []
                start = time.perf_counter()
                for i in range(total):
                    if task.done():
                        break
                    await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
                    futures.append(enqueue(queue, {SENT_AT_HEADER: str(time.perf_counter_ns())}, payload))
                await producer.flush(STALL_SECONDS)
                _raise_if_failed(futures, "latency produce")
                try:
                    await asyncio.wait_for(asyncio.shield(task), STALL_SECONDS)
                except asyncio.TimeoutError:
                    raise _stalled(counts[0], total) from None
                await _flush_consumer_async(consumer, STALL_SECONDS)
            finally:
                if not task.done():
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await _close_async([producer, consumer_client])
    return Latency.from_samples(samples, interval, "async")


# ------------------------------------------------------------------ the bench command


def scratch_queue_name(prefix: str = "fila-bench") -> str:
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def scratch_queue(addr: str, options: ClientOptions | None = None, prefix: str = "fila-bench") -> Iterator[str]:
    """Create a uniquely named queue (long lease); delete it and its DLQ afterwards."""
    name = scratch_queue_name(prefix)
    with _new_client(addr, dict(options or {})) as admin:
        admin.create_queue(name, visibility_timeout_ms=SCRATCH_VISIBILITY_MS)
        try:
            yield name
        finally:
            for q in (name, name + ".dlq"):
                try:
                    admin.delete_queue(q)
                except Exception as exc:  # clean-up must not hide the real outcome
                    log.debug("could not delete scratch queue %r: %s", q, exc)


def run(
    addr: str,
    config: BenchConfig,
    *,
    options: ClientOptions | None = None,
    progress: Progress = _NO_PROGRESS,
    embedded: bool = False,
) -> BenchResult:
    """The ``bench`` command: warm-up, produce N, consume + ack N, then the paced latency phase."""
    import platform

    from . import CODEC_IMPLEMENTATION
    from . import __version__

    opts = {"request_timeout": STALL_SECONDS * 4, **dict(options or {})}
    payload = b"x" * config.payload_size
    warm = config.warmup if config.warmup is not None else min(1000, max(100, config.messages // 20))
    with scratch_queue(addr, opts) as queue:
        if config.use_async:
            produce, consume, lat = asyncio.run(_run_async(addr, queue, config, payload, warm, opts, progress))
        else:
            produce, consume, lat = _run_sync(addr, queue, config, payload, warm, opts, progress)
    progress.phase = ""
    return BenchResult(
        codec=CODEC_IMPLEMENTATION,
        fila_version=__version__,
        python=f"{platform.python_implementation()} {platform.python_version()}",
        server="embedded" if embedded else addr,
        embedded=embedded,
        config=config,
        produce=produce,
        consume=consume,
        latency=lat,
    )


def _run_sync(
    addr: str, queue: str, config: BenchConfig, payload: bytes, warm: int, opts: ClientOptions, progress: Progress
) -> tuple[Phase, Phase, Latency]:
    if warm:
        produce_nowait(addr, queue, warm, payload, options=opts)
        consume_ack(addr, queue, warm, options=opts)
    produce = produce_nowait(
        addr, queue, config.messages, payload, producers=config.producers, options=opts, progress=progress
    )
    consume = consume_ack(addr, queue, config.messages, consumers=config.consumers, options=opts, progress=progress)
    lat = latency(
        addr, queue, config.latency_messages, config.latency_interval, payload, options=opts, progress=progress
    )
    return produce, consume, lat


async def _run_async(
    addr: str, queue: str, config: BenchConfig, payload: bytes, warm: int, opts: ClientOptions, progress: Progress
) -> tuple[Phase, Phase, Latency]:
    if warm:
        await produce_nowait_async(addr, queue, warm, payload, options=opts)
        await consume_ack_async(addr, queue, warm, options=opts)
    produce = await produce_nowait_async(
        addr, queue, config.messages, payload, producers=config.producers, options=opts, progress=progress
    )
    consume = await consume_ack_async(
        addr, queue, config.messages, consumers=config.consumers, options=opts, progress=progress
    )
    lat = await latency_async(
        addr, queue, config.latency_messages, config.latency_interval, payload, options=opts, progress=progress
    )
    return produce, consume, lat
