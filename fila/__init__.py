"""fila: the Python client for the Fila message broker (FIBP over TCP)."""

from __future__ import annotations

from . import errors
from .errors import FilaError
from .protocol import IMPLEMENTATION as CODEC_IMPLEMENTATION
from .types import Message

__version__ = "0.1.0"

__all__ = ["CODEC_IMPLEMENTATION", "FilaError", "Message", "errors", "__version__"]
