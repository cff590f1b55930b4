"""Builds the optional ``fila._speedups`` Cython extension.

``FILA_NO_EXTENSIONS=1`` builds without it (a pure ``py3-none-any`` wheel).
When the extension fails to compile the install still succeeds with the pure
codec (the extension is optional) and says so.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from setuptools import Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
_env = runpy.run_path(str(HERE / "fila" / "_env.py"))
NO_EXTENSIONS = _env["extensions_disabled"]()

# Warnings are errors in CI and wheel builds (FILA_REQUIRE_EXTENSIONS=1 or
# FILA_STRICT_BUILD=1), so our C stays warning-free; a user's sdist build with a
# newer compiler is not turned pure by a new warning. Cython's generated
# boilerplate is not ours, so the few warnings it is known to trip are let through.
STRICT = bool(os.environ.get("FILA_REQUIRE_EXTENSIONS") or os.environ.get("FILA_STRICT_BUILD"))
if sys.platform == "win32":
    COMPILE_ARGS = ["/O2"]
else:
    COMPILE_ARGS = [
        "-O2",
        "-Wall",
        "-Wno-unused-function",
        "-Wno-unreachable-code",
        "-Wno-unknown-warning-option",
    ]
    if STRICT:
        COMPILE_ARGS.append("-Werror")
if os.environ.get("FILA_DEBUG_BUILD"):
    COMPILE_ARGS = [a for a in COMPILE_ARGS if a != "-O2"] + ["-O0", "-g"]


class OptionalBuildExt(build_ext):
    """build_ext that falls back to pure Python when compiling fails."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            if os.environ.get("FILA_REQUIRE_EXTENSIONS"):
                raise
            self._warn(exc)

    def _warn(self, exc: BaseException) -> None:
        if os.environ.get("FILA_REQUIRE_EXTENSIONS"):
            raise exc
        sys.stderr.write(
            "\n*** fila: the C extension could not be built; installing the pure-Python "
            f"codec instead (fila.CODEC_IMPLEMENTATION will be 'python').\n*** reason: {exc}\n\n"
        )


CODEC_SOURCE = "fila/_speedups/_codec.pyx"


def _pure_only(reason: str) -> list[Extension]:
    """Build without the extension (or fail, under ``FILA_REQUIRE_EXTENSIONS``)."""
    if os.environ.get("FILA_REQUIRE_EXTENSIONS"):
        raise RuntimeError(f"fila: FILA_REQUIRE_EXTENSIONS is set but {reason}")
    sys.stderr.write(f"*** fila: {reason}; building the pure-Python codec only.\n")
    return []


CONSTANTS_GENERATOR = HERE / "scripts" / "gen-pxd"


def refresh_constants_pxd() -> None:
    """Regenerate ``fila/_speedups/_constants.pxd`` from ``fila/protocol/constants.py``.

    The .pxd is checked in (and shipped in the sdist); this keeps a build from
    ever compiling stale constants. Without the generator the shipped file is used.
    """
    if CONSTANTS_GENERATOR.is_file():
        runpy.run_path(str(CONSTANTS_GENERATOR))["write"]()


def extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    if not (HERE / CODEC_SOURCE).is_file():
        return _pure_only(f"{CODEC_SOURCE} is missing")
    try:
        from Cython.Build import cythonize
    except ImportError:
        return _pure_only("Cython is not installed")
    refresh_constants_pxd()
    exts = [
        Extension(
            "fila._speedups._codec",
            [CODEC_SOURCE],
            extra_compile_args=COMPILE_ARGS,
        )
    ]
    try:
        return cythonize(
            exts,
            compiler_directives={
                "language_level": "3",
                "freethreading_compatible": True,
                "embedsignature": True,
            },
        )
    except Exception as exc:  # a Cython error means "pure", like a C compile error
        return _pure_only(f"Cython could not translate {CODEC_SOURCE} ({exc})")


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
