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

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
_env = runpy.run_path(str(HERE / "fila" / "_env.py"))
NO_EXTENSIONS = _env["extensions_disabled"]()

# Warnings in our code are errors; Cython's generated boilerplate is not ours,
# so the few warnings it is known to trip are let through.
if sys.platform == "win32":
    COMPILE_ARGS = ["/WX", "/O2"]
else:
    COMPILE_ARGS = [
        "-O2",
        "-Werror",
        "-Wall",
        "-Wno-unused-function",
        "-Wno-unreachable-code",
        "-Wno-unknown-warning-option",
    ]
if os.environ.get("FILA_DEBUG_BUILD"):
    COMPILE_ARGS = [a for a in COMPILE_ARGS if a != "-O2"] + ["-O0", "-g"]


class OptionalBuildExt(build_ext):
    """build_ext that falls back to pure Python when compiling fails."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means "pure"
            self._warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
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


def extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        sys.stderr.write("*** fila: Cython is not installed; building the pure-Python codec only.\n")
        if os.environ.get("FILA_REQUIRE_EXTENSIONS"):
            raise
        return []
    exts = [
        Extension(
            "fila._speedups._codec",
            ["fila/_speedups/_codec.pyx"],
            extra_compile_args=COMPILE_ARGS,
        )
    ]
    return cythonize(
        exts,
        compiler_directives={
            "language_level": "3",
            "freethreading_compatible": True,
            "embedsignature": True,
        },
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
