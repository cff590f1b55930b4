"""Cheap ``concurrent.futures.Future`` objects for the producer hot path.

A stock ``Future`` builds its own ``threading.Condition`` (an RLock and a
Python-level object) plus two lists in ``__init__``, and ``set_result`` takes
and notifies the condition: about 1.6 µs per message, most of the client's
CPU budget — and three objects per message for the garbage collector to
scan again and again while the caller keeps its futures.

:class:`BatchFuture` is a real ``concurrent.futures.Future`` subclass that
runs no ``__init__`` at all: its pending state, its condition (one per
client, a class attribute of a per-client subclass) and "no waiters / no
callbacks" are class attributes, so a new future is one bare object. The two
lists ``Future`` code expects (``_waiters``, ``_done_callbacks``) are made on
first use. A whole Enqueue answer is applied under one acquisition of the
shared condition with one ``notify_all``. Because a shared condition can
wake a waiter for someone else's future, ``result`` and ``exception`` wait
in a loop until *their* future is done or the timeout passes.

This relies on the attribute names of CPython's ``concurrent.futures._base``
(unchanged since 3.2). :data:`FAST` is False when they are not there, and
the module then hands out stock futures resolved with ``set_result``.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence
from concurrent.futures import _base
from typing import Any

from .errors import error_for_code

__all__ = ["FAST", "BatchFuture", "FutureFactory"]

_PENDING: Any = getattr(_base, "PENDING", None)
_FINISHED: Any = getattr(_base, "FINISHED", None)
_EXPECTED = {"_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks"}

#: The ``code`` of an outcome that already is an exception (see :meth:`FutureFactory.settle`).
FAILED = -1


def _internals_match() -> bool:
    try:
        return _PENDING is not None and _FINISHED is not None and set(vars(cf.Future())) == _EXPECTED
    except Exception:  # pragma: no cover
        return False


FAST = _internals_match()


class BatchFuture(cf.Future):  # type: ignore[type-arg]
    """A ``concurrent.futures.Future`` sharing its condition with its siblings.

    Instantiate the per-client subclass made by :class:`FutureFactory` (it
    carries the condition); the constructor takes no arguments and does
    nothing.
    """

    __init__ = object.__init__  # C-level: no Python frame per future

    # Class-level defaults, shadowed per instance only once something happens.
    _condition: threading.Condition
    _state = _PENDING
    _result = None
    _exception = None
    _w: list[Any] | None = None  # waiters (cf.wait / as_completed), made on first use
    _cb: list[Any] | None = None  # done callbacks, made on first use

    # ``Future`` code reads and appends to these under the condition (or after the
    # future finished, when nobody appends any more), so making them lazily is safe.
    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        w = self._w
        if w is None:
            w = self._w = []
        return w

    @property
    def _done_callbacks(self) -> list[Any]:
        cb = self._cb
        if cb is None:
            cb = self._cb = []
        return cb

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
        if FAST:
            # One subclass per client: its futures share this client's condition.
            self.new: Callable[[], cf.Future[Any]] = type(
                "BatchFuture", (BatchFuture,), {"__slots__": (), "_condition": self.condition}
            )
        else:  # pragma: no cover - other interpreters
            self.new = cf.Future

    def settle(
        self,
        futs: Sequence[Any],
        outcomes: Sequence[tuple[int, Any]],
        error_of: Callable[[int, int, Any], BaseException] | None = None,
    ) -> None:
        """Resolve each future from its ``(code, value)`` outcome.

        ``code`` 0: the result is ``value``; :data:`FAILED`: ``value`` is the
        exception; any other code: the error of that code with text
        ``value`` (an EnqueueResult item as it comes from the decoder), built by
        ``error_of(index, code, value)``. Futures that are None or already done
        are skipped.
        """
        make_error = error_of or _default_error
        if not FAST:  # pragma: no cover
            for i, (fut, (code, value)) in enumerate(zip(futs, outcomes, strict=True)):
                _set_slow(fut, value if code in (0, FAILED) else make_error(i, code, value), code != 0)
            return
        late: list[Any] = []
        with self.condition:
            for fut, (code, value) in zip(futs, outcomes, strict=True):
                if fut is None or fut._state is not _PENDING:
                    continue
                if code:
                    # Rare: the index is looked up only for a failed item.
                    fut._exception = value if code == FAILED else make_error(futs.index(fut), code, value)
                    fut._state = _FINISHED
                    if fut._w:
                        for w in fut._w:
                            w.add_exception(fut)
                else:
                    fut._result = value
                    fut._state = _FINISHED
                    if fut._w:
                        for w in fut._w:
                            w.add_result(fut)
                if fut._cb:
                    late.append(fut)
            self.condition.notify_all()
        for fut in late:
            fut._invoke_callbacks()

    def fail(self, futs: Sequence[Any], exc: BaseException) -> None:
        """Fail every (pending) future with ``exc``."""
        self.settle(futs, [(FAILED, exc)] * len(futs))


def _default_error(index: int, code: int, value: Any) -> BaseException:
    return error_for_code(code, value)


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
