"""What each ``fila-py`` command does. Every handler takes the parsed arguments and returns the exit status."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from . import _output as out
from ._parser import UsageError
from ._parser import serve_argv

ACL_KINDS = ("produce", "consume", "admin")


# ------------------------------------------------------------------ connecting


def _read_pem(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from None


def client_options(args: argparse.Namespace) -> dict[str, Any]:
    """Client keyword arguments from the global flags (certificate files are read here)."""
    ca = _read_pem(args.tls_ca_cert, "--tls-ca-cert") if args.tls_ca_cert else None
    cert = _read_pem(args.tls_cert, "--tls-cert") if args.tls_cert else None
    key = _read_pem(args.tls_key, "--tls-key") if args.tls_key else None
    opts: dict[str, Any] = {"api_key": args.api_key}
    if args.tls or ca is not None or cert is not None:
        opts.update(tls=True, ca_cert=ca, client_cert=cert, client_key=key)
    return opts


@contextlib.contextmanager
def connect(args: argparse.Namespace) -> Iterator[Any]:
    """A connected :class:`fila.Client` for the global flags, closed afterwards."""
    from .. import Client

    client = Client(args.addr, **client_options(args))
    try:
        yield client
    finally:
        client.close()


def _emit(args: argparse.Namespace, text: str, data: dict[str, Any]) -> int:
    if args.json:
        out.dump_json(data)
    else:
        print(text, flush=True)
    return 0


def _script(value: str | None, flag: str) -> str | None:
    """A Lua option: the contents of the file it names, else the text itself (inline Lua)."""
    if value is None:
        return None
    if os.path.isfile(value):
        try:
            with open(value, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{flag}: cannot read {value}: {exc}") from None
    return value


# ------------------------------------------------------------------ queue


def cmd_queue_create(args: argparse.Namespace) -> int:
    on_enqueue = _script(args.on_enqueue, "--on-enqueue")
    on_failure = _script(args.on_failure, "--on-failure")
    with connect(args) as client:
        client.create_queue(
            args.name,
            on_enqueue=on_enqueue,
            on_failure=on_failure,
            visibility_timeout_ms=args.visibility_timeout or 0,
        )
    return _emit(args, f'Created queue "{args.name}"', {"queue": args.name, "created": True})


def cmd_queue_delete(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.delete_queue(args.name)
    return _emit(args, f'Deleted queue "{args.name}"', {"queue": args.name, "deleted": True})


def cmd_queue_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        queues = list(client.list_queues())
    queues.sort(key=lambda q: q.name)
    data = {
        "queues": [
            {
                "name": q.name,
                "depth": q.depth,
                "in_flight": q.in_flight,
                "consumers": q.active_consumers,
                "leader_node_id": q.leader_node_id,
            }
            for q in queues
        ]
    }
    if not queues:
        return _emit(args, "No queues found.", data)
    headers: tuple[str, ...] = ("NAME", "DEPTH", "IN_FLIGHT", "CONSUMERS")
    rows: list[tuple[object, ...]] = [(q.name, q.depth, q.in_flight, q.active_consumers) for q in queues]
    if any(q.leader_node_id for q in queues):
        headers += ("LEADER",)
        rows = [(*r, q.leader_node_id) for r, q in zip(rows, queues, strict=True)]
    return _emit(args, out.table(headers, rows, right=range(1, len(headers))), data)


def cmd_queue_inspect(args: argparse.Namespace) -> int:
    with connect(args) as client:
        stats = client.get_stats(args.name)
    return _emit(args, out.stats_text(args.name, stats), out.stats_dict(args.name, stats))


# ------------------------------------------------------------------ config


def cmd_config_set(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.set_config(args.key, args.value)
    return _emit(args, f'Set "{args.key}" = "{args.value}"', {"key": args.key, "value": args.value})


def cmd_config_get(args: argparse.Namespace) -> int:
    with connect(args) as client:
        value = client.get_config(args.key)
    text = f"{args.key}: {value}" if value else f"{args.key}: (not set)"
    return _emit(args, text, {"key": args.key, "value": value})


def cmd_config_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        entries = dict(client.list_config(args.prefix))
    items = sorted(entries.items())
    data = {"entries": [{"key": k, "value": v} for k, v in items]}
    if not items:
        empty = f'No config entries matching prefix "{args.prefix}".' if args.prefix else "No config entries found."
        return _emit(args, empty, data)
    return _emit(args, out.table(("KEY", "VALUE"), items), data)


# ------------------------------------------------------------------ redrive


def cmd_redrive(args: argparse.Namespace) -> int:
    with connect(args) as client:
        moved = client.redrive(args.dlq, args.count)
    text = f'Redrive complete: {out.plural(moved, "message")} moved from "{args.dlq}"'
    return _emit(args, text, {"dlq": args.dlq, "redriven": moved})


# ------------------------------------------------------------------ auth


def cmd_auth_create(args: argparse.Namespace) -> int:
    with connect(args) as client:
        r = client.create_api_key(args.name, expires_at_ms=args.expires_at or 0, superadmin=args.superadmin)
    lines = [f'Created API key "{args.name}"', f"  Key ID     : {r.key_id}", f"  Token      : {r.raw_key}"]
    if r.is_superadmin:
        lines.append("  Superadmin : yes")
    lines.append("Store the token securely — it will not be shown again.")
    data = {"name": args.name, "key_id": r.key_id, "token": r.raw_key, "is_superadmin": r.is_superadmin}
    return _emit(args, "\n".join(lines), data)


def cmd_auth_revoke(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.revoke_api_key(args.key_id)
    return _emit(args, f"Revoked API key {args.key_id}", {"key_id": args.key_id, "revoked": True})


def cmd_auth_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        keys = list(client.list_api_keys())
    data = {
        "keys": [
            {
                "key_id": k.key_id,
                "name": k.name,
                "created_at_ms": k.created_at,
                "expires_at_ms": k.expires_at,
                "is_superadmin": k.is_superadmin,
            }
            for k in keys
        ]
    }
    if not keys:
        return _emit(args, "No API keys found.", data)
    rows = [(k.key_id, k.name, k.created_at, k.expires_at or "never", "yes" if k.is_superadmin else "no") for k in keys]
    return _emit(args, out.table(("KEY_ID", "NAME", "CREATED_AT_MS", "EXPIRES_AT_MS", "SUPERADMIN"), rows), data)


def _parse_perm(text: str) -> tuple[str, str]:
    kind, sep, pattern = text.partition(":")
    if not sep:
        raise UsageError(f'--perm: invalid permission format "{text}": expected KIND:PATTERN (e.g. produce:orders)')
    if kind not in ACL_KINDS:
        raise UsageError(f'--perm: invalid permission kind "{kind}": must be one of: {", ".join(ACL_KINDS)}')
    return kind, pattern


def cmd_auth_acl_set(args: argparse.Namespace) -> int:
    perms = [_parse_perm(p) for p in args.perms]
    with connect(args) as client:
        client.set_acl(args.key_id, perms)
    data = {"key_id": args.key_id, "permissions": [{"kind": k, "pattern": p} for k, p in perms]}
    return _emit(args, f"ACL updated for key {args.key_id}", data)


def cmd_auth_acl_get(args: argparse.Namespace) -> int:
    with connect(args) as client:
        acl = client.get_acl(args.key_id)
    perms = [(p.kind, p.pattern) for p in acl.permissions]
    lines = [f"Key ID : {acl.key_id}"]
    if acl.is_superadmin:
        lines.append("Superadmin: yes (all permissions granted)")
    if not perms and not acl.is_superadmin:
        lines.append("Permissions: (none)")
    elif perms:
        lines.append("Permissions:")
        lines += [f"  {k}:{p}" for k, p in perms]
    data = {
        "key_id": acl.key_id,
        "is_superadmin": acl.is_superadmin,
        "permissions": [{"kind": k, "pattern": p} for k, p in perms],
    }
    return _emit(args, "\n".join(lines), data)


# ------------------------------------------------------------------ enqueue / consume


def _headers(items: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f'--header: expected K=V, got "{item}"')
        headers[key] = value
    return headers


def _payload(args: argparse.Namespace) -> bytes:
    if args.data is not None:
        return str(args.data).encode("utf-8", "surrogateescape")
    if args.file is not None and args.file != "-":
        try:
            with open(args.file, "rb") as f:
                return f.read()
        except OSError as exc:
            raise UsageError(f"--file: cannot read {args.file}: {exc.strerror or exc}") from None
    if args.file is None and sys.stdin.isatty():
        raise UsageError("no payload: give --data STR or --file PATH, or pipe it on standard input")
    return sys.stdin.buffer.read()


def cmd_enqueue(args: argparse.Namespace) -> int:
    headers = _headers(args.headers)
    payload = _payload(args)
    with connect(args) as client:
        message_id = client.enqueue(args.queue, headers or None, payload)
    return _emit(args, message_id, {"queue": args.queue, "message_id": message_id})


def cmd_consume(args: argparse.Namespace) -> int:
    limit = args.count
    idle = args.timeout
    got = 0
    with connect(args) as client, client.consume(args.queue) as consumer:
        last = time.monotonic()
        while limit is None or got < limit:
            wait = 1.0 if idle is None else max(0.0, min(1.0, last + idle - time.monotonic()))
            msg = consumer.get(timeout=wait)
            if msg is None:
                if idle is not None and time.monotonic() - last >= idle:
                    break
                continue
            last = time.monotonic()
            if args.json:
                out.dump_json(out.message_dict(msg))
            else:
                print(out.message_line(msg), flush=True)
            if not args.no_ack:
                consumer.ack(msg)
            got += 1
        flush = getattr(consumer, "flush", None)
        if flush is not None:
            flush(10.0)
    return 0


# ------------------------------------------------------------------ serve / bench


def cmd_serve(args: argparse.Namespace) -> int:
    from ..testing.__main__ import main as testing_main

    return testing_main(serve_argv(args))


def cmd_bench(args: argparse.Namespace) -> int:
    from .. import _bench

    try:
        config = _bench.BenchConfig(
            messages=args.messages,
            payload_size=args.payload_size,
            producers=args.producers,
            consumers=args.consumers,
            use_async=args.use_async,
            latency_messages=args.latency_messages,
            latency_interval=args.latency_interval_ms / 1e3,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    progress = _bench.Progress()
    reporter = _progress_reporter(progress)
    try:
        with contextlib.ExitStack() as stack:
            if args.addr_given:
                addr, options, server = args.addr, client_options(args), f"server: {args.addr}"
            else:
                addr = stack.enter_context(_bench.embedded_broker())
                options = {}
                server = f"server: embedded fila.testing broker at {addr} (separate process, CPU not counted)"
            if reporter is not None:
                stack.enter_context(reporter)
            result = _bench.run(addr, config, options=options, progress=progress, embedded=not args.addr_given)
    finally:
        if reporter is not None:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
    data = result.as_dict()
    if args.json:
        out.dump_json(data)
    else:
        print(out.bench_text(data, server), flush=True)
    return 0


def _progress_reporter(progress: Any) -> Any:
    """A live progress line on stderr, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None
    from .._bench import ProgressReporter

    def write(phase: str, done: int, total: int) -> None:
        pct = done * 100 // total if total else 0
        sys.stderr.write(f"\r\033[Kfila bench: {phase:<8} {done:>10,}/{total:,} ({pct}%)")
        sys.stderr.flush()

    return ProgressReporter(progress, write)
