"""``--help`` of every command, ``--version``, and the console script's entry point."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from pathlib import Path

import pytest
from cli_helpers import FILA_HOME
from cli_helpers import run_cli

import fila
from fila.cli import main

COMMANDS = [
    [],
    ["bench"],
    ["serve"],
    ["queue"],
    ["queue", "create"],
    ["queue", "delete"],
    ["queue", "list"],
    ["queue", "inspect"],
    ["config"],
    ["config", "set"],
    ["config", "get"],
    ["config", "list"],
    ["redrive"],
    ["auth"],
    ["auth", "create"],
    ["auth", "revoke"],
    ["auth", "list"],
    ["auth", "acl"],
    ["auth", "acl", "set"],
    ["auth", "acl", "get"],
    ["enqueue"],
    ["consume"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "fila-py")
def test_help_of_every_command(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"], prog="fila-py") == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("usage: " + " ".join(["fila-py", *command]))
    assert captured.err == ""
    if command and command[0] != "serve":
        assert "--addr HOST:PORT" in captured.out  # the global flags, accepted after the command too


def test_help_and_version_as_a_subprocess() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m fila")
    for command in ("bench", "serve", "queue", "config", "redrive", "auth", "enqueue", "consume"):
        assert f"    {command} " in proc.stdout
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip().startswith(f"python -m fila {fila.__version__} (codec {fila.CODEC_IMPLEMENTATION}")


def test_serve_help_lists_the_test_broker_options() -> None:
    proc = run_cli("serve", "--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--host", "--port", "--api-key", "--tls-cert", "--tls-key", "--tls-ca", "--verbose"):
        assert option in proc.stdout


def test_the_console_script_is_fila_py() -> None:
    """``fila-py`` runs :func:`fila.cli.main` (from the installed metadata, else from pyproject.toml)."""
    scripts = [ep for ep in importlib.metadata.entry_points(group="console_scripts") if ep.name == "fila-py"]
    if scripts:
        assert scripts[0].value == "fila.cli:main"
        assert scripts[0].load() is main
        return
    pyproject = Path(FILA_HOME) / "pyproject.toml"
    if not pyproject.is_file() or sys.version_info < (3, 11):
        pytest.skip("neither installed entry-point metadata nor a readable pyproject.toml")
    tomllib = importlib.import_module("tomllib")  # 3.11+
    with pyproject.open("rb") as f:
        assert tomllib.load(f)["project"]["scripts"]["fila-py"] == "fila.cli:main"
