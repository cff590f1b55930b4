"""Build- and import-time switches, parsed the same way by ``setup.py`` and ``fila``.

This module must stay importable on its own (``setup.py`` loads it by path,
before the package is built), so it uses nothing but the standard library.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

NO_EXTENSIONS_VAR = "FILA_NO_EXTENSIONS"


def extensions_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``FILA_NO_EXTENSIONS`` asks for pure Python.

    Any non-empty value other than ``"0"`` (surrounding blanks ignored) counts
    as set; ``""`` and ``"0"`` mean "not set".
    """
    env = os.environ if environ is None else environ
    value = env.get(NO_EXTENSIONS_VAR, "").strip()
    return value not in ("", "0")
