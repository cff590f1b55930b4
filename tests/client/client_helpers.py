"""Helpers shared by the client suites (bounded-time runners and waits)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from collections.abc import Coroutine
from typing import Any

TEST_TIMEOUT = 60.0


def run(coro: Coroutine[Any, Any, Any], timeout: float = TEST_TIMEOUT) -> Any:
    """Run an async test body with a hard time limit."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def run_threads(fn: Callable[[int], None], n: int, timeout: float = TEST_TIMEOUT) -> None:
    """Run ``fn(i)`` in ``n`` threads; re-raise the first error; fail if any is still running at the timeout."""
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            fn(i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a worker thread did not finish in time"
    if errors:
        raise errors[0]


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01, ignore: Any = ()) -> bool:
    """Poll ``pred`` until it is true or ``timeout`` seconds passed; True if it became true.

    Exceptions of the types in ``ignore`` count as "not yet" (e.g. a call
    that raced a connection the broker just closed).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return True
        except ignore:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
