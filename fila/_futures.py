"""Cheap ``concurrent.futures.Future`` objects for the producer hot path.

A stock ``Future`` builds its own ``threading.Condition`` (an RLock and a
Python-level object) and ``set_result`` takes and notifies it: about 1.6 µs
per message, most of the client's CPU budget. :class:`BatchFuture` is a real
``concurrent.futures.Future`` subclass whose futures share one condition per
client; a whole Enqueue answer is applied under one acquisition with one
``notify_all``. Because a shared condition can wake a waiter for someone
else's future, ``result`` and ``exception`` wait in a loop until *their*
future is done or the timeout passes.

This relies on the attribute names of CPython's ``concurrent.futures._base``
(unchanged since 3.2). :data:`FAST` is False when they are not there, and
the module then hands out stock futures resolved with ``set_result``.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import _base
from typing import Any

from .errors import error_for_code

__all__ = ["FAST", "BatchFuture", "FutureFactory", "fail", "resolve"]

log = logging.getLogger("fila")

_PENDING: Any = getattr(_base, "PENDING", None)
_FINISHED: Any = getattr(_base, "FINISHED", None)
_CANCELLED_STATES = (getattr(_base, "CANCELLED", None), getattr(_base, "CANCELLED_AND_NOTIFIED", None))
_EXPECTED = {"_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks"}


def _internals_match() -> bool:
    try:
        return _PENDING is not None and _FINISHED is not None and set(vars(cf.Future())) == _EXPECTED
    except Exception:  # pragma: no cover
        return False


FAST = _internals_match()


class BatchFuture(cf.Future):  # type: ignore[type-arg]
    """A ``concurrent.futures.Future`` sharing its condition with its siblings."""

    def __init__(self, condition: threading.Condition) -> None:
        self._condition = condition
        self._state = _PENDING
        self._result = None
        self._exception = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Any] = []

    def _wait(self, timeout: float | None) -> None:
        # Called with the condition held; returns when done, cancelled or timed out.
        cond = self._condition
        if timeout is None:
            while self._state is _PENDING or self._state == "RUNNING":
                cond.wait()
            return
        deadline = time.monotonic() + timeout
        while self._state is _PENDING or self._state == "RUNNING":
            left = deadline - time.monotonic()
            if left <= 0:
                return
            cond.wait(left)

    def result(self, timeout: float | None = None) -> Any:
        with self._condition:
            self._wait(timeout)
        return super().result(0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        with self._condition:
            self._wait(timeout)
        return super().exception(0)


class FutureFactory:
    """Makes the futures of one client and resolves them in bulk."""

    __slots__ = ("condition", "new")

    def __init__(self) -> None:
        self.condition = threading.Condition()
        cond = self.condition
        if FAST:
            self.new: Callable[[], cf.Future[Any]] = lambda: BatchFuture(cond)
        else:  # pragma: no cover - other interpreters
            self.new = cf.Future

    def resolve(self, futs: Sequence[Any], outcomes: Sequence[Any], is_error: Callable[[Any], bool]) -> None:
        """Set each future to its outcome (an exception when ``is_error(outcome)``)."""
        if not FAST:  # pragma: no cover
            for fut, out in zip(futs, outcomes, strict=True):
                _set_slow(fut, out, is_error(out))
            return
        late: list[Any] = []
        cond = self.condition
        with cond:
            for fut, out in zip(futs, outcomes, strict=True):
                if fut is None or fut._state is not _PENDING:
                    continue
                if is_error(out):
                    fut._exception = out
                    fut._state = _FINISHED
                    if fut._waiters:
                        for w in fut._waiters:
                            w.add_exception(fut)
                else:
                    fut._result = out
                    fut._state = _FINISHED
                    if fut._waiters:
                        for w in fut._waiters:
                            w.add_result(fut)
                if fut._done_callbacks:
                    late.append(fut)
            cond.notify_all()
        for fut in late:
            fut._invoke_callbacks()

    def resolve_enqueue(self, futs: Sequence[Any], results: Sequence[tuple[int, str]]) -> None:
        """Apply an EnqueueResult: ``(0, id)`` → the id; ``(code, text)`` → that code's error."""
        if not FAST:  # pragma: no cover
            for fut, (code, mid) in zip(futs, results, strict=True):
                _set_slow(fut, error_for_code(code, mid) if code else mid, bool(code))
            return
        late: list[Any] = []
        cond = self.condition
        with cond:
            for fut, (code, mid) in zip(futs, results, strict=True):
                if fut is None or fut._state is not _PENDING:
                    continue
                if code:
                    fut._exception = error_for_code(code, mid)
                    fut._state = _FINISHED
                    for w in fut._waiters:
                        w.add_exception(fut)
                else:
                    fut._result = mid
                    fut._state = _FINISHED
                    if fut._waiters:
                        for w in fut._waiters:
                            w.add_result(fut)
                if fut._done_callbacks:
                    late.append(fut)
            cond.notify_all()
        for fut in late:
            fut._invoke_callbacks()

    def fail(self, futs: Sequence[Any], exc: BaseException) -> None:
        """Fail every (pending) future with ``exc``."""
        self.resolve(futs, [exc] * len(futs), _always)


def _always(_: Any) -> bool:
    return True


def _set_slow(fut: Any, out: Any, error: bool) -> None:  # pragma: no cover
    if fut is None or fut.done():
        return
    try:
        if error:
            fut.set_exception(out)
        else:
            fut.set_result(out)
    except cf.InvalidStateError:
        pass


def resolve(factory: FutureFactory, futs: Sequence[Any], outcomes: Sequence[Any]) -> None:
    """Resolve with outcomes that are exceptions or values."""
    factory.resolve(futs, outcomes, _is_exception)


def fail(factory: FutureFactory, futs: Sequence[Any], exc: BaseException) -> None:
    factory.fail(futs, exc)


def _is_exception(out: Any) -> bool:
    return isinstance(out, BaseException)
