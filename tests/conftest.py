"""Suite-wide fixtures: every codec test runs on both twins.

``FILA_EXPECT_EXTENSIONS=1`` declares that the compiled twin must be the
active one; the session then refuses to start without it (a failure, never a
skip). ``FILA_NO_EXTENSIONS=1`` runs everything on the pure twin; tests that
need the compiled module directly are then skipped.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

import fila
from fila._env import extensions_disabled
from fila.protocol import pure


def _expect_extensions() -> bool:
    return os.environ.get("FILA_EXPECT_EXTENSIONS", "").strip() not in ("", "0")


def _load_cython() -> tuple[ModuleType | None, str]:
    if extensions_disabled():
        return None, "FILA_NO_EXTENSIONS is set"
    try:
        return importlib.import_module("fila._speedups._codec"), ""
    except ImportError as exc:
        return None, f"the compiled twin did not import: {exc}"


_CYTHON, _WHY_NOT = _load_cython()


_DOUBLE_ONLY = tuple(Path(__file__).parent / d for d in ("broker",))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """tests/broker tests the double itself: it keeps the double when FILA_SERVER / FILA_SERVER_BIN are set."""
    for item in items:
        if any(item.path.is_relative_to(d) for d in _DOUBLE_ONLY):
            item.add_marker(pytest.mark.fila_double)


def pytest_configure(config: pytest.Config) -> None:
    # also registered by the fila.testing plugin; repeated here for runs where the plugin is not installed
    config.addinivalue_line("markers", "fila_double: always use the in-process fila.testing Broker")
    if _expect_extensions() and (fila.CODEC_IMPLEMENTATION != "cython" or _CYTHON is None):
        raise pytest.UsageError(
            "FILA_EXPECT_EXTENSIONS=1 but the Cython codec is not active "
            f"(fila.CODEC_IMPLEMENTATION={fila.CODEC_IMPLEMENTATION!r}; {_WHY_NOT or 'selector chose pure'}). "
            "Build it with `pip install -e . --no-build-isolation` or unset the variable."
        )


def pytest_report_header(config: pytest.Config) -> str:
    return f"fila codec: {fila.CODEC_IMPLEMENTATION} (compiled twin: {'loaded' if _CYTHON else _WHY_NOT})"


@pytest.fixture(scope="session")
def pure_codec() -> ModuleType:
    """The pure-Python twin (always available)."""
    return pure


@pytest.fixture(scope="session")
def cython_codec() -> ModuleType:
    """The compiled twin; a failure when extensions are expected, else a skip."""
    if _CYTHON is None:
        if _expect_extensions():
            pytest.fail(f"compiled codec expected but missing: {_WHY_NOT}")
        pytest.skip(f"compiled codec not available: {_WHY_NOT}")
    return _CYTHON


@pytest.fixture(scope="session", params=["python", "cython"])
def codec(request: pytest.FixtureRequest) -> ModuleType:
    """Each codec twin in turn."""
    if request.param == "python":
        return pure
    return request.getfixturevalue("cython_codec")  # type: ignore[no-any-return]
