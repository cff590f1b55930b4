"""Failures: one line on stderr naming the error class, and an exit status per kind of failure."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import one_line_error
from cli_helpers import run_cli

from fila.cli import EXIT_CONNECTION
from fila.cli import EXIT_SERVER
from fila.cli import EXIT_USAGE
from fila.cli import main
from fila.testing import Broker

UNREACHABLE = "localhost:1"


@pytest.mark.parametrize(
    "args",
    [
        ["--addr", UNREACHABLE, "queue", "list"],
        ["queue", "list", "--addr", UNREACHABLE],  # global flags after the command
        ["--json", "config", "get", "k", "--addr", UNREACHABLE],
    ],
)
def test_an_unreachable_server_is_one_line_and_the_connection_status(args: list[str]) -> None:
    proc = run_cli(*args)
    one_line_error(proc, EXIT_CONNECTION, "error: ConnectError", "localhost:1")
    assert proc.stdout == ""


def test_fila_addr_is_the_default_address() -> None:
    proc = run_cli("queue", "list", env={"FILA_ADDR": UNREACHABLE})
    one_line_error(proc, EXIT_CONNECTION, "localhost:1")


def test_debug_shows_the_traceback() -> None:
    proc = run_cli("--debug", "--addr", UNREACHABLE, "queue", "list")
    assert proc.returncode == EXIT_CONNECTION
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("python -m fila: error: ConnectError")


PARSE_ERRORS = [
    ([], "required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["queue"], "required: COMMAND"),
    (["queue", "create"], "required: NAME"),
    (["queue", "create", "q", "--visibility-timeout", "-5"], "must be >= 0"),
    (["redrive", "x.dlq", "--count", "many"], "expected a whole number"),
    (["consume", "q", "--count", "0"], "must be >= 1"),
    (["auth", "create"], "--name"),
    (["enqueue", "q", "--data", "x", "--file", "f"], "not allowed with argument"),
    (["bench", "--messages", "0"], "must be >= 1"),
    (["--tls-cert", "c.pem", "queue", "list"], "--tls-cert and --tls-key go together"),
    (["--addr", "localhost:http", "queue", "list"], "bad port"),
]


@pytest.mark.parametrize(("args", "needle"), PARSE_ERRORS, ids=lambda a: " ".join(a) if isinstance(a, list) else "")
def test_argument_errors_are_one_line_and_status_2(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args, prog="fila-py") == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("fila-py: usage error: ")
    assert needle in captured.err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["queue", "create"], "required: NAME (see 'python -m fila queue create --help')"),
        (["auth", "acl", "set", "id", "--perm", "produce"], "expected KIND:PATTERN"),
        (["auth", "acl", "set", "id", "--perm", "write:q"], 'invalid permission kind "write"'),
        (["enqueue", "q", "--data", "x", "--header", "novalue"], "expected K=V"),
        (["queue", "list", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_usage_errors_in_a_subprocess(args: list[str], needle: str) -> None:
    proc = run_cli(*args)
    one_line_error(proc, EXIT_USAGE, "python -m fila: usage error: ", needle)
    assert proc.stdout == ""


def test_an_unreadable_certificate_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    proc = run_cli("--tls-ca-cert", str(missing), "--addr", UNREACHABLE, "queue", "list")
    one_line_error(proc, EXIT_USAGE, "--tls-ca-cert", "nope.pem")


def test_a_server_error_is_one_line_with_class_and_message(broker: Broker) -> None:
    proc = run_cli("--addr", broker.address, "queue", "delete", "no-such-queue")
    one_line_error(proc, EXIT_SERVER, "error: QueueNotFoundError:", "not found")
    broker.create_queue("not-a-dlq")
    proc = run_cli("--addr", broker.address, "redrive", "not-a-dlq")
    one_line_error(proc, EXIT_SERVER, "NotADLQError", "not a dead-letter queue")
