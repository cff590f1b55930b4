"""Token buckets for ``throttle.<key>`` config entries (SERVER.md §8.4, §10.4)."""

from __future__ import annotations

import math
import time

__all__ = ["THROTTLE_PREFIX", "TokenBucket", "parse_throttle_value"]

THROTTLE_PREFIX = "throttle."


def parse_throttle_value(value: str) -> tuple[float, float] | None:
    """``"rate,burst"`` as two finite, non-negative floats, or None if invalid.

    Whitespace around each number is trimmed; NaN, infinities, negatives and
    anything that is not exactly two numbers are refused.
    """
    parts = value.split(",")
    if len(parts) != 2:
        return None
    out: list[float] = []
    for part in parts:
        text = part.strip()
        if not text or "_" in text:  # Python accepts 1_000; the server's parser does not
            return None
        try:
            number = float(text)
        except ValueError:
            return None
        if not math.isfinite(number) or number < 0:
            return None
        out.append(number)
    return out[0], out[1]


class TokenBucket:
    """Created full; refilled continuously at ``rate`` tokens/s up to ``burst``."""

    __slots__ = ("_last", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._last = time.monotonic()

    def refill(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        elapsed = now - self._last
        self._last = now
        if elapsed > 0 and self.rate > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        return self.tokens

    def update(self, rate: float, burst: float) -> None:
        """New limits; current tokens are kept, capped at the new burst."""
        self.refill()
        self.rate = rate
        self.burst = burst
        self.tokens = min(self.tokens, burst)
