"""Chooses the codec twin at import: the only importer of ``fila._speedups``.

``FILA_NO_EXTENSIONS`` (any non-empty value but ``0``) forces pure Python;
a non-CPython interpreter or a failed import falls back to it silently
(``fila.protocol.IMPLEMENTATION`` then says ``"python"``).
"""

from __future__ import annotations

import importlib
import platform
from types import ModuleType

from .._env import extensions_disabled
from . import pure


def _choose() -> ModuleType:
    if extensions_disabled() or platform.python_implementation() != "CPython":
        return pure
    try:
        return importlib.import_module("fila._speedups._codec")
    except ImportError:
        return pure


twin: ModuleType = _choose()
IMPLEMENTATION: str = twin.IMPLEMENTATION
