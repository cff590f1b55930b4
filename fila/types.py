"""Result and message types handed to users."""

from __future__ import annotations

from .protocol import Message

__all__ = ["Message"]
