"""Helpers shared by the client suites (bounded-time runners)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
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
