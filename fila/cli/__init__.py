"""``fila-py`` (also ``python -m fila``): benchmark, administer and use a Fila broker from the shell.

The command tree and global flags are those of Fila's Rust CLI (``fila``), so
its documentation transfers; ``bench``, ``serve``, ``enqueue`` and
``consume`` are additions. The reference is docs/cli.md.

Errors are one line on stderr, ``<prog>: error: <ErrorClass>: <message>``
(``--debug`` adds the traceback), and the exit status says what kind of
failure it was (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import traceback
from collections.abc import Sequence

from ._parser import UsageError
from ._parser import build_parser
from ._parser import resolve_globals

__all__ = [
    "EXIT_CONNECTION",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_OTHER",
    "EXIT_SERVER",
    "EXIT_USAGE",
    "main",
]

EXIT_OK = 0
#: The server answered with an error (queue not found, forbidden, unauthorized …).
EXIT_SERVER = 1
#: Bad arguments or options, unreadable input files.
EXIT_USAGE = 2
#: No connection: refused, unreachable, TLS handshake failed, connection lost, timed out.
EXIT_CONNECTION = 3
#: Anything else (a benchmark that could not complete, an unexpected error).
EXIT_OTHER = 4
#: Stopped with Ctrl-C (SIGINT).
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_SERVER: "the server answered with an error",
    EXIT_USAGE: "usage error",
    EXIT_CONNECTION: "connection failure",
    EXIT_OTHER: "other failure",
    EXIT_INTERRUPTED: "interrupted",
}

DEFAULT_PROG = "fila-py"


def _version(prog: str) -> str:
    from .. import CODEC_IMPLEMENTATION
    from .. import __version__

    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{prog} {__version__} (codec {CODEC_IMPLEMENTATION}, {python})"


def exit_code(exc: BaseException) -> int:
    """The exit status for an exception that ended a command."""
    from .. import errors

    connection_errors = tuple(t for t in (getattr(errors, "FilaConnectionError", None),) if isinstance(t, type))
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if connection_errors and isinstance(exc, connection_errors):
        return EXIT_CONNECTION
    encode_error = getattr(errors, "EncodeError", None)
    if isinstance(encode_error, type) and isinstance(exc, encode_error):
        return EXIT_USAGE  # refused by the client before sending (e.g. a name over 65535 bytes)
    if isinstance(exc, errors.FilaError):
        return EXIT_SERVER
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return EXIT_CONNECTION
    if isinstance(exc, ValueError):
        return EXIT_USAGE  # an argument the client rejected
    return EXIT_OTHER


def describe(exc: BaseException, addr: str | None = None) -> str:
    """``ErrorClass: message`` on one line, with the server's metadata when there is any."""
    name = type(exc).__name__
    message = getattr(exc, "message", None)
    if not isinstance(message, str) or not message:
        message = str(exc)
    if isinstance(exc, OSError) and addr and addr not in message and exit_code(exc) == EXIT_CONNECTION:
        message = f"{addr}: {message}" if message else addr
    metadata = getattr(exc, "metadata", None)
    if isinstance(metadata, dict) and metadata:
        message += " (" + ", ".join(f"{k}={v}" for k, v in sorted(metadata.items())) + ")"
    message = " ".join(message.split())  # one line
    return f"{name}: {message}" if message else name


def _setup_logging(prog: str, debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if debug:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter(f"{prog}: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    # The client logs its own recovery (reconnects, retries) at WARNING and below; the command
    # reports the outcome itself, so without --debug only errors the command cannot see are shown.
    root.setLevel(logging.DEBUG if debug else logging.ERROR)


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run one command; returns the exit status (the console script passes it to ``sys.exit``)."""
    from . import _commands

    prog = prog or DEFAULT_PROG
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    args: argparse.Namespace | None = None
    try:
        parser = build_parser(prog, _commands, _version(prog))
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:  # --help, --version
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        resolve_globals(args)
        debug = args.debug
        if args.handler is not _commands.cmd_serve:  # serve configures its own logging (-v)
            _setup_logging(prog, debug)
        code: int = args.handler(args)
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    except UsageError as exc:
        print(f"{prog}: usage error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except Exception as exc:
        if debug:
            traceback.print_exc()
        addr = getattr(args, "addr", None)
        print(f"{prog}: error: {describe(exc, addr)}", file=sys.stderr, flush=True)
        return exit_code(exc)


def _silence_stdout() -> None:
    """The reader of stdout went away (``| head``): stop Python from complaining at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
