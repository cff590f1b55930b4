"""A server object that runs on an event loop of its own in a background thread.

:class:`LoopThread` is what :class:`~fila.testing.Broker` and
:class:`~fila.testing.Cluster` share: ``start()``/``stop()`` in a daemon thread
with one event loop, the sync and async context managers, and :meth:`call` to
run a function on that loop from any thread. A subclass provides
``start_async()`` and ``stop_async()`` and sets ``_loop`` / ``_loop_thread``
in ``start_async``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

__all__ = ["CALL_TIMEOUT", "LoopThread"]

T = TypeVar("T")
S = TypeVar("S", bound="LoopThread")

#: How long a call from another thread waits for the loop.
CALL_TIMEOUT = 30.0


class LoopThread:
    """Start/stop on a background event loop; run functions on it from any thread."""

    _loop: asyncio.AbstractEventLoop | None
    _loop_thread: int | None
    _thread: threading.Thread | None

    async def start_async(self: S) -> S:
        raise NotImplementedError

    async def stop_async(self) -> None:
        raise NotImplementedError

    def _running(self) -> bool:
        """Already started (by :meth:`start` or :meth:`start_async`)."""
        return self._thread is not None or self._loop is not None

    def start(self: S) -> S:
        """Start in a background thread running its own event loop."""
        if self._running():
            raise RuntimeError(f"{type(self).__name__.lower()} already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:
                failure.append(exc)
                loop.close()
                ready.set()
                return
            # Signal readiness from inside the running loop: until then
            # ``call()`` would run loop code on the caller's thread.
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        name = f"fila-testing-{type(self).__name__.lower()}-{id(self):x}"
        thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread = thread
        thread.start()
        ready.wait()
        if failure:
            self._thread = None
            thread.join()
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop what :meth:`start` started (idempotent)."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        self._thread = None
        if loop is not None and loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self.stop_async(), loop)
            try:
                fut.result(CALL_TIMEOUT)
            finally:
                loop.call_soon_threadsafe(loop.stop)
        thread.join(CALL_TIMEOUT)

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self: S) -> S:
        return await self.start_async()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop_async()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the loop (directly when already there) and return its result."""
        loop = self._loop
        if loop is None or self._loop_thread == threading.get_ident() or not loop.is_running():
            return fn()
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(CALL_TIMEOUT)
