"""Deficit round robin across a queue's fairness keys (SERVER.md §8.1–§8.3).

Keys are served in the order each was first (re)activated. A round credits
every active key ``weight × quantum``; a key then serves ``weight`` messages
per turn (one deficit each) before the turn passes to the next key with a
positive deficit. With weights 3 and 1 the order is A A A B A A A B …
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["Drr"]

T = TypeVar("T")


class Drr(Generic[T]):
    """Pending items per fairness key plus the DRR turn state."""

    __slots__ = ("_in_round", "_ring", "_served", "deficit", "pending", "quantum", "size", "weight")

    def __init__(self, quantum: int) -> None:
        self.quantum = max(1, quantum)
        self.pending: dict[str, deque[T]] = {}
        self._ring: deque[str] = deque()  # head = the key whose turn it is
        self.deficit: dict[str, int] = {}
        self.weight: dict[str, int] = {}
        self._in_round = False
        self._served = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def keys(self) -> Iterator[str]:
        """Active keys in DRR order."""
        return iter(self._ring)

    def push(self, key: str, item: T, weight: int, *, front: bool = False) -> None:
        """Add ``item`` to ``key`` (at the back, or the front to undo a take)."""
        q = self.pending.get(key)
        if q is None:
            q = self.pending[key] = deque()
            self._ring.append(key)
            # A key that joins during a round is credited at once (see Broker docs).
            self.deficit[key] = max(1, weight) * self.quantum if self._in_round else 0
        if front:
            q.appendleft(item)
        else:
            q.append(item)
            self.weight[key] = max(1, weight)
        self.size += 1

    def current(self) -> str | None:
        """The key to serve next, starting a new round when every deficit is spent."""
        ring = self._ring
        n = len(ring)
        if not n:
            self._in_round = False
            return None
        if not self._in_round:
            self._start_round()
        for _ in range(2):
            for _ in range(n):
                key = ring[0]
                if self.deficit[key] > 0 and self._served < self.weight[key]:
                    return key
                ring.rotate(-1)
                self._served = 0
            self._start_round()
        return ring[0]

    def _start_round(self) -> None:
        self._in_round = True
        self._served = 0
        q = self.quantum
        for key in self._ring:
            self.deficit[key] += self.weight[key] * q

    def take(self, key: str) -> T:
        """Remove and return the head item of ``key`` (the key from :meth:`current`)."""
        q = self.pending[key]
        item = q.popleft()
        self.size -= 1
        self.deficit[key] -= 1
        self._served += 1
        if not q:
            self._drop(key)
        return item

    def skip(self, key: str) -> None:
        """``key`` is throttled: it gives up its deficit for this round."""
        self.deficit[key] = 0
        if self._ring and self._ring[0] == key:
            self._ring.rotate(-1)
            self._served = 0

    def peek(self, key: str) -> T:
        return self.pending[key][0]

    def remove(self, key: str, item: T) -> None:
        """Remove one specific pending item (redrive)."""
        q = self.pending[key]
        q.remove(item)
        self.size -= 1
        if not q:
            self._drop(key)

    def _drop(self, key: str) -> None:
        del self.pending[key]
        del self.deficit[key]
        del self.weight[key]
        ring = self._ring
        if ring and ring[0] == key:
            ring.popleft()
            self._served = 0
        else:
            ring.remove(key)
        if not ring:
            self._in_round = False

    def items(self) -> Iterator[T]:
        for q in self.pending.values():
            yield from q
