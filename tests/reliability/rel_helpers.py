"""Helpers of the reliability suite: bounded waits, a watchdog, event capture, a child-process broker,
memory / descriptor / thread accounting.

Nothing here sleeps to make a test pass: every wait is for a condition, with a deadline.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
import time
import traceback
import tracemalloc
from collections.abc import Callable
from collections.abc import Coroutine
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import fila
from fila import ClientEvent

FILA_HOME = str(Path(fila.__file__).resolve().parent.parent)

#: Generous upper bound for one fast test body; only a hang (deadlock, lost wake-up) reaches it.
WATCHDOG = 120.0


# ------------------------------------------------------------------ waiting


def wait_for(pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition", interval: float = 0.005) -> None:
    """Poll ``pred`` until true; fail the test (saying ``what``) if ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def async_wait_for(
    pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition", interval: float = 0.005
) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def _stacks() -> str:
    frames = sys._current_frames()
    out = []
    for t in threading.enumerate():
        f = frames.get(t.ident or -1)
        if f is not None:
            out.append(f"--- thread {t.name} ---\n" + "".join(traceback.format_stack(f)))
    return "\n".join(out)


def watchdog(fn: Callable[[], Any], timeout: float = WATCHDOG, what: str = "test body") -> Any:
    """Run ``fn`` in a thread; fail with every thread's stack if it is still running after ``timeout``.

    A deadlock then fails the test instead of hanging the suite.
    """
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=target, name="reliability-body", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"{what} still running after {timeout}s (deadlock?)\n{_stacks()}")
    if error:
        raise error[0]
    return result[0] if result else None


def run_async(coro_fn: Callable[[], Coroutine[Any, Any, Any]], timeout: float = WATCHDOG) -> Any:
    """``asyncio.run`` of ``coro_fn()`` under the watchdog (a blocked loop cannot hide behind wait_for)."""
    return watchdog(lambda: asyncio.run(coro_fn()), timeout, "asyncio test body")


# ------------------------------------------------------------------- events


class Events:
    """An ``on_event`` callback that records every :class:`fila.ClientEvent`, with waits on them."""

    def __init__(self) -> None:
        self.events: list[ClientEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: ClientEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def kinds(self) -> list[str]:
        with self._cond:
            return [e.kind for e in self.events]

    def of(self, kind: str) -> list[ClientEvent]:
        with self._cond:
            return [e for e in self.events if e.kind == kind]

    def wait(self, kind: str, count: int = 1, timeout: float = 20.0) -> list[ClientEvent]:
        """Block until ``count`` events of ``kind`` were seen (fail at the deadline)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [e for e in self.events if e.kind == kind]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no {count}× {kind!r} event within {timeout}s; saw {[e.kind for e in self.events]}")
                self._cond.wait(left)

    async def await_kind(self, kind: str, count: int = 1, timeout: float = 20.0) -> list[ClientEvent]:
        await async_wait_for(lambda: len(self.of(kind)) >= count, timeout, f"{count}× {kind!r} event")
        return self.of(kind)


# ------------------------------------------------------------------ process


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def fila_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("fila") and "testing-broker" not in t.name)


@contextmanager
def traced() -> Iterator[Callable[[], tuple[int, int]]]:
    """tracemalloc on for the block; yields ``sample() -> (current, peak)`` in bytes."""
    was = tracemalloc.is_tracing()
    if not was:
        tracemalloc.start()
    try:
        yield tracemalloc.get_traced_memory
    finally:
        if not was:
            tracemalloc.stop()


def settled_memory() -> int:
    """Traced bytes after a full collection."""
    gc.collect()
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


# ------------------------------------------------------------------- report


def report(what: str, **numbers: Any) -> None:
    """Append one JSON line of measured numbers to ``$FILA_RELIABILITY_REPORT`` (if set) for the README."""
    path = os.environ.get("FILA_RELIABILITY_REPORT")
    if not path:
        return
    import json

    record = {"what": what, "codec": fila.CODEC_IMPLEMENTATION, **numbers}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


# ------------------------------------------------------------------- broker


def broker_messages(broker: Any, queue: str) -> dict[str, bytes]:
    """Every message the in-process broker holds for ``queue`` (pending and leased): id -> payload."""

    def read() -> dict[str, bytes]:
        q = broker.scheduler.queues.get(queue)
        if q is None:
            return {}
        out = {m.id: m.payload for dq in q.drr.pending.values() for m in dq}
        out.update({mid: m.payload for mid, m in q.leased.items()})
        return out

    result: dict[str, bytes] = broker.call(read)
    return result


class ProcBroker:
    """``python -m fila.testing`` in a child process (same codec twin, same source tree)."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    def __enter__(self) -> ProcBroker:
        env = dict(os.environ)
        env["PYTHONPATH"] = FILA_HOME
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fila.testing", "--port", "0", "--no-nagle", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()  # the broker prints its address once listening
        if not line:
            self.proc.kill()
            raise RuntimeError("the child broker did not start")
        self.address = line
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.kill()
                proc.wait(15)
            if proc.stdout is not None:
                proc.stdout.close()
