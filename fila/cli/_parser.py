"""The ``fila-py`` command tree (standard library ``argparse``).

It mirrors Fila's Rust CLI (``fila``): the same commands, arguments and
global flags, which are accepted before or after the subcommand. Global flags
default to "not given" (``SUPPRESS``) on every parser, so a flag given before
the subcommand is not overwritten by the subcommand's default; the real
defaults are applied afterwards by :func:`resolve_globals`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any
from typing import NoReturn

DEFAULT_ADDR = "localhost:5555"
DEFAULT_PORT = 5555

GLOBAL_FLAGS = ("addr", "tls", "tls_ca_cert", "tls_cert", "tls_key", "api_key", "json", "debug")


class UsageError(Exception):
    """Bad arguments: reported on one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise :class:`UsageError` (one line) instead of printing the usage."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


Handler = Callable[[Any], int]


def _add_global_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("global options (accepted before or after the command)")
    s = argparse.SUPPRESS
    g.add_argument(
        "--addr",
        metavar="HOST:PORT",
        default=s,
        help=f"broker address (default: $FILA_ADDR, else {DEFAULT_ADDR})",
    )
    g.add_argument("--tls", action="store_true", default=s, help="use TLS, verified against the system trust store")
    g.add_argument(
        "--tls-ca-cert", metavar="FILE", default=s, help="CA certificate (PEM) that signed the server's; implies --tls"
    )
    g.add_argument("--tls-cert", metavar="FILE", default=s, help="client certificate (PEM) for mTLS; needs --tls-key")
    g.add_argument("--tls-key", metavar="FILE", default=s, help="client private key (PEM) for mTLS; needs --tls-cert")
    g.add_argument("--api-key", metavar="KEY", default=s, help="API key (default: $FILA_API_KEY)")
    g.add_argument("--json", action="store_true", default=s, help="print JSON for scripts (keys: docs/cli.md)")
    g.add_argument("--debug", action="store_true", default=s, help="on an error, show the traceback; debug logging")


def _leaf(
    sub: argparse._SubParsersAction[Parser], name: str, handler: Handler, help: str, description: str | None = None
) -> Parser:
    p = sub.add_parser(name, help=help, description=description or help)
    p.set_defaults(handler=handler)
    _add_global_flags(p)
    return p


def _group(
    sub: argparse._SubParsersAction[Parser], name: str, help: str, dest: str
) -> argparse._SubParsersAction[Parser]:
    p = sub.add_parser(name, help=help, description=help)
    _add_global_flags(p)
    return p.add_subparsers(dest=dest, metavar="COMMAND", required=True, parser_class=Parser)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser(prog: str, commands: Any, version: str) -> Parser:
    """The whole tree; ``commands`` supplies the handlers (``cmd_queue_create`` …)."""
    c = commands
    root = Parser(
        prog=prog,
        description=(
            "Fila command line: benchmark a broker (or an embedded test broker), administer it "
            "(the commands and flags of Fila's own `fila` CLI), enqueue and consume messages."
        ),
        epilog=(
            f"Try `{prog} bench` (no server needed). Exit status: 0 ok, 1 server error, 2 usage error, "
            "3 connection failure, 4 other failure, 130 interrupted. See docs/cli.md."
        ),
    )
    root.add_argument("--version", action="version", version=version)
    _add_global_flags(root)
    sub = root.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)

    # bench
    p = _leaf(
        sub,
        "bench",
        c.cmd_bench,
        "measure produce and consume throughput, client CPU and latency",
        "Create a scratch queue, produce N messages, consume and ack them, delete the queue; then measure "
        "enqueue→delivery latency in a paced phase. Without --addr it starts an embedded fila.testing broker "
        "in a separate process (its CPU is not counted as client CPU).",
    )
    p.add_argument("--messages", "-n", type=_positive, default=50_000, metavar="N", help="messages (default 50000)")
    p.add_argument("--payload-size", type=_non_negative, default=64, metavar="B", help="payload bytes (default 64)")
    p.add_argument("--producers", type=_positive, default=1, metavar="P", help="producer connections (default 1)")
    p.add_argument("--consumers", type=_positive, default=1, metavar="C", help="consumer connections (default 1)")
    p.add_argument("--async", dest="use_async", action="store_true", help="use AsyncClient instead of Client")
    p.add_argument(
        "--latency-messages",
        type=_positive,
        default=500,
        metavar="N",
        help="messages in the paced latency phase (default 500)",
    )
    p.add_argument(
        "--latency-interval-ms",
        type=float,
        default=2.0,
        metavar="MS",
        help="time between two messages in the latency phase (default 2)",
    )

    # serve: fila.testing's own options
    p = sub.add_parser(
        "serve",
        help="run a fila.testing broker in the foreground (same options as python -m fila.testing)",
        description="Run an in-process Fila test broker in the foreground; prints host:port, stops on Ctrl-C.",
        add_help=False,
    )
    p.set_defaults(handler=c.cmd_serve, serve_actions=_copy_testing_options(p))

    # queue
    q = _group(sub, "queue", "manage queues", "queue_command")
    p = _leaf(q, "create", c.cmd_queue_create, "create a queue (and its dead-letter queue NAME.dlq)")
    p.add_argument("name", metavar="NAME", help="queue name")
    p.add_argument("--on-enqueue", metavar="SCRIPT", help="Lua run on enqueue: a file path or the script itself")
    p.add_argument("--on-failure", metavar="SCRIPT", help="Lua run on nack: a file path or the script itself")
    p.add_argument(
        "--visibility-timeout",
        type=_non_negative,
        metavar="MS",
        help="lease time in milliseconds (default: the server's, 30000)",
    )
    p = _leaf(q, "delete", c.cmd_queue_delete, "delete a queue")
    p.add_argument("name", metavar="NAME", help="queue name")
    _leaf(q, "list", c.cmd_queue_list, "list queues with depth, in-flight and consumer counts")
    p = _leaf(q, "inspect", c.cmd_queue_inspect, "show a queue's statistics (fairness keys, throttles)")
    p.add_argument("name", metavar="NAME", help="queue name")

    # config
    g = _group(sub, "config", "manage runtime configuration", "config_command")
    p = _leaf(g, "set", c.cmd_config_set, "set a runtime config value")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    p = _leaf(g, "get", c.cmd_config_get, "get a runtime config value")
    p.add_argument("key", metavar="KEY")
    p = _leaf(g, "list", c.cmd_config_list, "list config entries")
    p.add_argument("--prefix", default="", metavar="P", help="only keys starting with P")

    # redrive
    p = _leaf(sub, "redrive", c.cmd_redrive, "move messages from a dead-letter queue back to its source queue")
    p.add_argument("dlq", metavar="DLQ_NAME", help='dead-letter queue name (e.g. "orders.dlq")')
    p.add_argument("--count", type=_non_negative, default=0, metavar="N", help="most messages to move (0 = all)")

    # auth
    a = _group(sub, "auth", "manage API keys and ACLs", "auth_command")
    p = _leaf(a, "create", c.cmd_auth_create, "create an API key (the token is shown once)")
    p.add_argument("--name", required=True, metavar="NAME", help="human-readable name for the key")
    p.add_argument(
        "--expires-at", type=_non_negative, metavar="MS", help="expiry, Unix time in milliseconds (default: never)"
    )
    p.add_argument("--superadmin", action="store_true", help="grant superadmin (bypasses every ACL check)")
    p = _leaf(a, "revoke", c.cmd_auth_revoke, "revoke an API key")
    p.add_argument("key_id", metavar="KEY_ID", help="key id (from `auth create` or `auth list`)")
    _leaf(a, "list", c.cmd_auth_list, "list API keys")
    acl = _group(a, "acl", "manage the permissions of an API key", "acl_command")
    p = _leaf(
        acl,
        "set",
        c.cmd_auth_acl_set,
        "replace the permissions of an API key",
        "Replace the permissions of an API key. Each --perm is KIND:PATTERN, KIND one of produce, consume, "
        "admin, and PATTERN a queue name or wildcard (*, orders.*). No --perm clears the permissions.",
    )
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument(
        "--perm", dest="perms", action="append", default=[], metavar="KIND:PATTERN", help="a permission (repeatable)"
    )
    p = _leaf(acl, "get", c.cmd_auth_acl_get, "show the permissions of an API key")
    p.add_argument("key_id", metavar="KEY_ID")

    # enqueue / consume
    p = _leaf(
        sub,
        "enqueue",
        c.cmd_enqueue,
        "enqueue one message; prints its id",
        "Enqueue one message. The payload is --data, the contents of --file, or standard input.",
    )
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("--header", dest="headers", action="append", default=[], metavar="K=V", help="a header (repeatable)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="STR", help="the payload, as text (UTF-8)")
    src.add_argument("--file", metavar="PATH", help="read the payload from PATH ('-' = standard input)")
    p = _leaf(
        sub,
        "consume",
        c.cmd_consume,
        "consume messages and print one line each",
        "Consume messages from QUEUE, printing one line per message (with --json, one JSON object per line), "
        "and ack each after printing it. Runs until --count messages, --timeout, or Ctrl-C.",
    )
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("--count", type=_positive, metavar="N", help="stop after N messages (default: run until stopped)")
    p.add_argument("--no-ack", action="store_true", help="do not ack (the messages come back after their lease)")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS", help="stop when no message came for SECONDS")
    return root


def _copy_testing_options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    """Give ``serve`` the options of ``python -m fila.testing`` (so its help is theirs); returns them."""
    from ..testing.__main__ import _parser as testing_parser

    p.add_argument("-h", "--help", action="help", help="show this help message and exit")
    copied: list[argparse.Action] = []
    for action in testing_parser()._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        p._add_action(action)
        copied.append(action)
    return copied


def serve_argv(args: argparse.Namespace) -> list[str]:
    """Rebuild the ``python -m fila.testing`` argument list from a parsed ``serve`` command (non-defaults only)."""
    argv: list[str] = []
    for action in args.serve_actions:
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(action.option_strings[0] if value else action.option_strings[-1])
        elif isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            argv.append(action.option_strings[-1])
        else:
            argv += [action.option_strings[-1], str(value)]
    return argv


def resolve_globals(args: argparse.Namespace) -> None:
    """Fill in the global flags that were not given: environment, then built-in defaults."""
    given = vars(args)
    args.addr_given = "addr" in given
    if not args.addr_given:
        args.addr = os.environ.get("FILA_ADDR") or DEFAULT_ADDR
    args.addr = normalize_addr(args.addr)
    if "api_key" not in given:
        args.api_key = os.environ.get("FILA_API_KEY") or None
    for flag in ("tls", "json", "debug"):
        if flag not in given:
            setattr(args, flag, False)
    for opt in ("tls_ca_cert", "tls_cert", "tls_key"):
        if opt not in given:
            setattr(args, opt, None)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")


def normalize_addr(addr: str) -> str:
    """``HOST:PORT``; an ``http://``/``https://`` prefix is dropped (as the Rust CLI does), a missing port is 5555."""
    for prefix in ("http://", "https://"):
        if addr.startswith(prefix):
            addr = addr[len(prefix) :]
    addr = addr.rstrip("/")
    host, sep, port = addr.rpartition(":")
    if not sep or host.endswith(":") or (host.count(":") and not host.startswith("[")):
        # no port (a bare host name, or an unbracketed IPv6 address)
        if not addr:
            raise UsageError("--addr: empty address (expected HOST:PORT)")
        return f"{addr}:{DEFAULT_PORT}"
    if not host:
        raise UsageError(f"--addr: no host in {addr!r} (expected HOST:PORT)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--addr: bad port {port!r} in {addr!r} (expected HOST:PORT)")
    return addr
