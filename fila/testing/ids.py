"""Identifiers the broker hands out: message and consumer ids, API keys.

Message ids are UUIDv7 text that strictly increases within one broker
process, even inside one millisecond (SERVER.md §13.1): the 74 random bits
are seeded once per millisecond and then counted up.
"""

from __future__ import annotations

import os
import time
import uuid

__all__ = ["UuidV7", "canonical_uuid", "new_key_id", "new_token"]

_RANDOM_BITS = 74
_RAND_B_BITS = 62
_RAND_B_MASK = (1 << _RAND_B_BITS) - 1
_VERSION_VARIANT = (0x7 << 76) | (0b10 << 62)


class UuidV7:
    """A strictly increasing UUIDv7 generator (one per broker)."""

    __slots__ = ("_counter", "_last_ms")

    def __init__(self) -> None:
        self._last_ms = 0
        self._counter = 0

    def next(self) -> str:
        """The next id, lowercase hyphenated (36 characters)."""
        ms = time.time_ns() // 1_000_000
        if ms > self._last_ms:
            self._last_ms = ms
            # Leave the top random bit clear so a burst can count up without overflow.
            self._counter = int.from_bytes(os.urandom(10), "big") >> (80 - _RANDOM_BITS + 1)
        else:
            self._counter += 1
            if self._counter >> _RANDOM_BITS:
                self._last_ms += 1
                self._counter = 0
        c = self._counter
        value = (self._last_ms << 80) | _VERSION_VARIANT | ((c >> _RAND_B_BITS) << 64) | (c & _RAND_B_MASK)
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_key_id() -> str:
    """An API key id: UUIDv4, hyphenated."""
    return str(uuid.uuid4())


def new_token() -> str:
    """An API key token: UUIDv4 in 32-character lowercase hex."""
    return uuid.uuid4().hex


def canonical_uuid(text: str) -> str | None:
    """``text`` as lowercase hyphenated UUID text, or None if it is not a UUID.

    Accepts the hyphenated, simple (32 hex), braced and ``urn:uuid:`` forms,
    case-insensitively, as the server's id parser does.
    """
    try:
        return str(uuid.UUID(text))
    except (ValueError, TypeError):
        return None
