"""Token buckets for ``throttle.<key>`` config entries (SERVER.md §8.4, §10.4)."""

from __future__ import annotations

import math
import re
import time

__all__ = ["THROTTLE_PREFIX", "TokenBucket", "parse_throttle_value", "rust_trim"]

THROTTLE_PREFIX = "throttle."

# Rust's ``str::trim`` strips the Unicode White_Space property, which is not
# Python's ``str.isspace`` (that also covers U+001C..U+001F).
_WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
# Rust's ``f64::from_str``: ASCII digits only, no underscores, no surrounding space.
_RUST_F64 = re.compile(
    r"[+-]?(?:inf|infinity|nan|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?)", re.ASCII | re.IGNORECASE
)


def rust_trim(text: str) -> str:
    """``text`` trimmed as Rust's ``str::trim`` trims it (Unicode White_Space)."""
    return text.strip(_WHITE_SPACE)


def parse_throttle_value(value: str) -> tuple[float, float] | None:
    """``"rate,burst"`` as two finite, non-negative floats, or None if invalid.

    Parsed as the server parses it (SERVER.md §10.4): split on ``,`` into
    exactly two parts, each trimmed of Unicode White_Space and read as a Rust
    ``f64`` (ASCII digits only, so no ``1_000``, no Arabic-Indic or
    full-width digits); NaN, infinities and negatives are refused.
    """
    parts = value.split(",")
    if len(parts) != 2:
        return None
    out: list[float] = []
    for part in parts:
        text = rust_trim(part)
        if _RUST_F64.fullmatch(text) is None:
            return None
        number = float(text)
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
