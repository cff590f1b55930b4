"""Deficit round robin across a queue's fairness keys (SERVER.md §8.1–§8.3).

The server's algorithm, step for step, so that delivery order and the
deficits GetStats reports match it:

* a key joins the active list (at the back, deficit 0) when a message for it
  is stored, retried, reclaimed or redriven; its weight becomes that
  message's weight (at least 1);
* a delivery pass starts a round only if none is running: every active key
  gets ``weight × quantum`` and the turn goes back to the first key;
* the turn is the first key, from the current position, with a positive
  deficit; a key serves ``weight`` messages, then the turn moves past it;
* a throttled key loses its remaining deficit and the turn moves past it;
* when no key has a positive deficit the round is over and the pass ends
  (the next pass starts the next round);
* a key with nothing pending is dropped when a pass reaches it.

With weights 3 and 1 the order is A A A B A A A B …
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic
from typing import TypeVar

__all__ = ["Drr"]

T = TypeVar("T")


class Drr(Generic[T]):
    """A queue's pending items per fairness key plus the server's DRR state."""

    __slots__ = (
        "_burst",
        "_burst_key",
        "_position",
        "active",
        "deficit",
        "pending",
        "quantum",
        "round_active",
        "size",
        "weight",
    )

    def __init__(self, quantum: int) -> None:
        self.quantum = max(1, quantum)
        self.pending: dict[str, deque[T]] = {}
        self.active: list[str] = []  # active keys in round-robin order
        self.deficit: dict[str, int] = {}
        self.weight: dict[str, int] = {}
        self.round_active = False
        self._position = 0
        self._burst = 0
        self._burst_key: str | None = None
        self.size = 0  # pending items over all keys

    def __len__(self) -> int:
        return self.size

    def keys(self) -> Iterator[str]:
        """Active keys in DRR order (GetStats ``per_key_stats``)."""
        return iter(self.active)

    # ------------------------------------------------------------ pending

    def push(self, key: str, item: T, weight: int) -> None:
        """Make ``item`` pending at the back of ``key`` (stored, retried, reclaimed, redriven)."""
        self.add_key(key, weight)
        q = self.pending.get(key)
        if q is None:
            q = self.pending[key] = deque()
        q.append(item)
        self.size += 1

    def push_front(self, key: str, item: T) -> None:
        """Put back an item just taken from ``key`` (nobody could take it)."""
        q = self.pending.get(key)
        if q is None:
            q = self.pending[key] = deque()
        q.appendleft(item)
        self.size += 1

    def peek(self, key: str) -> T | None:
        q = self.pending.get(key)
        return q[0] if q else None

    def pop(self, key: str) -> T:
        """Remove and return the head item of ``key``."""
        item = self.pending[key].popleft()
        self.size -= 1
        return item

    def remove(self, key: str, item: T) -> None:
        """Remove one specific pending item (redrive); an emptied key leaves the active list."""
        q = self.pending[key]
        q.remove(item)
        self.size -= 1
        if not q:
            del self.pending[key]
            self.remove_key(key)

    def items(self) -> Iterator[T]:
        for q in self.pending.values():
            yield from q

    # ---------------------------------------------------------------- DRR

    def add_key(self, key: str, weight: int) -> None:
        """Activate ``key`` (deficit 0 until the next round) and set its weight."""
        self.weight[key] = max(1, weight)
        if key not in self.deficit:
            self.active.append(key)
            self.deficit[key] = 0

    def remove_key(self, key: str) -> None:
        """Drop ``key`` from the active list, keeping the turn where it was."""
        if key not in self.deficit:
            return
        idx = self.active.index(key)
        del self.active[idx]
        del self.deficit[key]
        del self.weight[key]
        if not self.active:
            self._position = 0
            self.round_active = False
            self._burst = 0
            self._burst_key = None
            return
        if idx < self._position:
            self._position -= 1
        elif self._position >= len(self.active):
            self._position = 0
        if self._burst_key == key:
            self._burst = 0
            self._burst_key = None

    def drop_empty(self, key: str) -> None:
        """A pass found nothing pending for ``key``: forget it."""
        self.pending.pop(key, None)
        self.remove_key(key)

    def start_round(self) -> bool:
        """Credit every active key ``weight × quantum`` unless a round is running."""
        if self.round_active or not self.active:
            return False
        q = self.quantum
        deficit = self.deficit
        weight = self.weight
        for key in self.active:
            deficit[key] += weight[key] * q
        self._position = 0
        self.round_active = True
        self._burst = 0
        self._burst_key = None
        return True

    def next_key(self) -> str | None:
        """The key whose turn it is, or None when the round is over."""
        active = self.active
        n = len(active)
        if not n:
            return None
        deficit = self.deficit
        start = self._position
        for i in range(n):
            key = active[(start + i) % n]
            if deficit[key] > 0:
                return key
        self.round_active = False
        return None

    def consume(self, key: str) -> None:
        """``key`` delivered one message: one deficit; after ``weight`` of them the turn moves on."""
        self.deficit[key] -= 1
        if self._burst_key != key:
            self._burst_key = key
            self._burst = 1
        else:
            self._burst += 1
        if self._burst >= self.weight[key]:
            self._burst = 0
            self._burst_key = None
            self._position = (self.active.index(key) + 1) % len(self.active)

    def drain(self, key: str) -> None:
        """``key`` is throttled: it gives up its deficit and the turn moves past it."""
        self.deficit[key] = 0
        if self._burst_key == key:
            self._burst = 0
            self._burst_key = None
        self._position = (self.active.index(key) + 1) % len(self.active)
