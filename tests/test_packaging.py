"""Packaging behaviour a user can observe: the codec switch, wheel contents, free threading.

These run in the normal suite (source tree or installed wheel). Each check of
the import-time selector starts a fresh interpreter, since the choice is made
once, at ``import fila``.
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

import pytest

import fila
from fila._env import NO_EXTENSIONS_VAR
from fila._env import extensions_disabled

# The directory that holds the ``fila`` package this test process imported: the
# child interpreters must import the very same one (installed wheel or tree).
FILA_HOME = str(Path(fila.__file__).resolve().parent.parent)

PROBE = (
    "import json, sys, fila; "
    "print(json.dumps({'codec': fila.CODEC_IMPLEMENTATION, 'file': fila.__file__, "
    "'gil': sys._is_gil_enabled() if hasattr(sys, '_is_gil_enabled') else None}))"
)


def _child_env(**overrides: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FILA_", "PYTHON"))}
    env["PYTHONPATH"] = FILA_HOME
    for key, value in overrides.items():
        if value is not None:
            env[key] = value
    return env


def _probe(python: str = sys.executable, *flags: str, **env: str | None) -> dict[str, object]:
    """``import fila`` in a fresh interpreter; what it chose, where from, and the GIL state."""
    out = subprocess.run(
        [python, *flags, "-c", PROBE],
        capture_output=True,
        text=True,
        env=_child_env(**env),
        cwd=os.path.dirname(FILA_HOME),
        timeout=60,
    )
    assert out.returncode == 0, f"import fila failed under {python}:\n{out.stderr}"
    result: dict[str, object] = json.loads(out.stdout)
    return result


# ------------------------------------------------------------ FILA_NO_EXTENSIONS parsing


@pytest.mark.parametrize(
    ("environ", "disabled"),
    [
        ({}, False),
        ({NO_EXTENSIONS_VAR: ""}, False),
        ({NO_EXTENSIONS_VAR: "0"}, False),
        ({NO_EXTENSIONS_VAR: " 0 "}, False),
        ({NO_EXTENSIONS_VAR: "   "}, False),
        ({NO_EXTENSIONS_VAR: "1"}, True),
        ({NO_EXTENSIONS_VAR: " 1\n"}, True),
        ({NO_EXTENSIONS_VAR: "yes"}, True),
        ({NO_EXTENSIONS_VAR: "true"}, True),
        ({NO_EXTENSIONS_VAR: "00"}, True),
        ({"OTHER": "1"}, False),
    ],
    ids=repr,
)
def test_extensions_disabled_parses_the_variable(environ: Mapping[str, str], disabled: bool) -> None:
    assert extensions_disabled(environ) is disabled


def test_extensions_disabled_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NO_EXTENSIONS_VAR, "1")
    assert extensions_disabled() is True
    monkeypatch.setenv(NO_EXTENSIONS_VAR, "0")
    assert extensions_disabled() is False
    monkeypatch.delenv(NO_EXTENSIONS_VAR)
    assert extensions_disabled() is False


# ------------------------------------------------------------ the import-time selector


def test_child_imports_the_same_fila() -> None:
    assert Path(str(_probe()["file"])).resolve() == Path(fila.__file__).resolve()


@pytest.mark.parametrize("value", ["1", "yes"])
def test_no_extensions_forces_the_pure_codec(value: str) -> None:
    assert _probe(**{NO_EXTENSIONS_VAR: value})["codec"] == "python"


@pytest.mark.parametrize("value", ["", "0"])
def test_empty_or_zero_means_not_set(value: str) -> None:
    unset = _probe()["codec"]
    assert _probe(**{NO_EXTENSIONS_VAR: value})["codec"] == unset


def test_default_choice_matches_this_process() -> None:
    """Without the variable a child picks what this process picked (unless this run forced pure)."""
    if extensions_disabled():
        pytest.skip(f"this run sets {NO_EXTENSIONS_VAR}, so its own choice is forced")
    assert _probe()["codec"] == fila.CODEC_IMPLEMENTATION


def test_expected_extension_is_active() -> None:
    """FILA_EXPECT_EXTENSIONS=1 (wheel builds, CI) means the compiled twin serves."""
    if os.environ.get("FILA_EXPECT_EXTENSIONS", "").strip() in ("", "0"):
        pytest.skip("FILA_EXPECT_EXTENSIONS is not set")
    assert fila.CODEC_IMPLEMENTATION == "cython"
    assert _probe()["codec"] == "cython"


# ------------------------------------------------------------ what an installed wheel carries


def _installed_files() -> list[str]:
    """Paths of ``fila/`` files recorded for an installed (non-editable) wheel; skip otherwise."""
    try:
        dist = importlib.metadata.distribution("fila-python")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("fila-python is not installed (running from the source tree)")
    if dist.read_text("RECORD") is None or "editable" in (dist.read_text("direct_url.json") or ""):
        pytest.skip("fila-python is not installed from a wheel here (source tree or editable install)")
    if Path(fila.__file__).resolve() != Path(str(dist.locate_file("fila/__init__.py"))).resolve():
        pytest.skip("the imported fila is not the installed distribution (source-tree run)")
    return [str(f).replace("\\", "/") for f in dist.files or ()]


def test_installed_wheel_has_no_sources_or_tests() -> None:
    files = _installed_files()
    assert not [f for f in files if f.endswith((".pyx", ".pxd", ".c"))]
    assert not [f for f in files if f.startswith("tests/")]


def test_installed_wheel_is_typed() -> None:
    files = _installed_files()
    assert "fila/py.typed" in files
    compiled = [f for f in files if f.startswith("fila/_speedups/") and f.endswith((".so", ".pyd"))]
    for module in compiled:
        assert module.split(".", 1)[0] + ".pyi" in files, f"{module} ships without a .pyi stub"


# ------------------------------------------------------------ free-threaded CPython


def _is_free_threaded(python: str) -> bool:
    out = subprocess.run(
        [python, "-c", "import sysconfig; print(bool(sysconfig.get_config_var('Py_GIL_DISABLED')))"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.returncode == 0 and out.stdout.strip() == "True"


def _free_threaded_python() -> str | None:
    """This interpreter if it is free-threaded, else one found on PATH or under pyenv."""
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return sys.executable
    candidates = [os.environ.get("FILA_FREETHREADED_PYTHON", "")]
    candidates += [shutil.which(f"python3.{minor}t") or "" for minor in range(20, 12, -1)]
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(os.path.join(pyenv, "versions", "*", "bin", "python3.*t")), reverse=True)
    return next((c for c in candidates if c and _is_free_threaded(c)), None)


def test_import_fila_keeps_the_gil_disabled() -> None:
    """``import fila`` on a free-threaded build must not turn the GIL back on.

    A compiled module that does not declare free-threading support re-enables
    the GIL (with a RuntimeWarning), which this catches. Under another
    interpreter than this one, fila comes from this process's tree, so the
    compiled twin is loaded only if it was built for that interpreter.
    """
    python = _free_threaded_python()
    if python is None:
        pytest.skip(
            "no free-threaded CPython here (this interpreter has a GIL; none named python3.1Xt on PATH, "
            "under pyenv, or in FILA_FREETHREADED_PYTHON)"
        )
    result = _probe(python, "-W", "error::RuntimeWarning")
    assert result["gil"] is False, f"the GIL is enabled after import fila under {python} ({result})"
    if python == sys.executable and os.environ.get("FILA_EXPECT_EXTENSIONS", "").strip() not in ("", "0"):
        assert result["codec"] == "cython"
