"""Never wait on the peer's delayed ACK: ``TCP_QUICKACK`` re-armed after each read.

The Fila server leaves Nagle's algorithm on (it never sets ``TCP_NODELAY``),
so a frame it writes while an earlier one is still unacknowledged waits until
our ACK arrives — and Linux delays that ACK by up to 40 ms when we have
nothing to send back. On a consumer's connection that is the next Delivery
waiting behind an AckResult: tens of milliseconds per message at low rates.
Where ``TCP_QUICKACK`` exists (Linux), both drivers re-arm it after every
read so the kernel acknowledges at once. It is one ``setsockopt`` per
``recv``, and a ``recv`` carries many frames under load (the README's
benchmark table measures its cost). Elsewhere (macOS, Windows) there is no
such option; see the README's performance section for what remains.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

__all__ = ["USE_QUICKACK", "quickack"]

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)

#: Re-arm TCP_QUICKACK after each read where the platform has it (benchmarks turn it off to measure it).
USE_QUICKACK = True


def quickack(sock: Any) -> Callable[[], None] | None:
    """A function that re-arms ``TCP_QUICKACK`` on ``sock``, or None where the platform has no such option."""
    if _QUICKACK is None or not USE_QUICKACK:
        return None
    setsockopt = sock.setsockopt
    level, opt = socket.IPPROTO_TCP, _QUICKACK

    def rearm() -> None:
        try:
            setsockopt(level, opt, 1)
        except OSError:  # pragma: no cover - the socket is closing
            pass

    return rearm


