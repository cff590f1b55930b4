"""How ``fila-py`` shows things: aligned tables and plain lines for people, one JSON document for scripts."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import TextIO


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, right: Sequence[int] = (), indent: str = ""
) -> str:
    """Columns padded to their widest cell and two spaces apart; column indexes in ``right`` are right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    last = len(headers) - 1

    def line(values: Sequence[str]) -> str:
        parts = []
        for i, v in enumerate(values):
            if i in right:
                parts.append(v.rjust(widths[i]))
            elif i == last:
                parts.append(v)  # no trailing blanks
            else:
                parts.append(v.ljust(widths[i]))
        return indent + "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in cells)])


def dump_json(obj: Any, out: TextIO | None = None) -> None:
    """One JSON document on one line."""
    print(json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")), file=out or sys.stdout, flush=True)


_CONTROL = {i: f"\\x{i:02x}" for i in range(32)} | {0x7F: "\\x7f", 9: "\\t", 10: "\\n", 13: "\\r"}


def one_line(data: bytes) -> str:
    """``data`` as UTF-8 text on one line: control characters escaped, bytes that are not UTF-8 as ``\\xNN``."""
    return data.decode("utf-8", "backslashreplace").translate(_CONTROL) if data else ""


def payload_fields(payload: bytes) -> dict[str, str | None]:
    """``payload`` (text, or null when not UTF-8) and ``payload_base64`` (always), for JSON output."""
    try:
        text: str | None = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {"payload": text, "payload_base64": base64.b64encode(payload).decode("ascii")}


def message_dict(msg: Any) -> dict[str, Any]:
    """A delivered message as the JSON object ``consume --json`` prints (keys documented in docs/cli.md)."""
    return {
        "id": msg.id,
        "queue": msg.queue,
        "headers": dict(msg.headers or {}),
        **payload_fields(bytes(msg.payload)),
        "fairness_key": msg.fairness_key,
        "weight": msg.weight,
        "throttle_keys": list(msg.throttle_keys or []),
        "attempt_count": msg.attempt_count,
        "enqueued_at": msg.enqueued_at,
        "leased_at": msg.leased_at,
    }


def message_line(msg: Any) -> str:
    """A delivered message on one line: id, attempt, fairness key, headers (if any), payload."""
    parts = [msg.id, f"attempt={msg.attempt_count}", f"key={one_line(msg.fairness_key.encode())}"]
    if msg.headers:
        parts.append("headers=" + json.dumps(dict(msg.headers), ensure_ascii=False, separators=(",", ":")))
    parts.append(one_line(bytes(msg.payload)))
    return "  ".join(parts)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def stats_dict(name: str, s: Any) -> dict[str, Any]:
    """``queue inspect --json``."""
    return {
        "queue": name,
        "depth": s.depth,
        "in_flight": s.in_flight,
        "active_fairness_keys": s.active_fairness_keys,
        "active_consumers": s.active_consumers,
        "quantum": s.quantum,
        "leader_node_id": s.leader_node_id,
        "replication_count": s.replication_count,
        "fairness_keys": [
            {"key": k.key, "pending": k.pending_count, "deficit": k.current_deficit, "weight": k.weight}
            for k in s.per_key_stats
        ],
        "throttle_keys": [
            {"key": t.key, "tokens": t.tokens, "rate_per_second": t.rate_per_second, "burst": t.burst}
            for t in s.per_throttle_stats
        ],
    }


def stats_text(name: str, s: Any) -> str:
    """``queue inspect``: the Rust CLI's layout."""
    lines = [
        f"Queue: {name}",
        f"  Depth:                {s.depth}",
        f"  In-flight:            {s.in_flight}",
        f"  Active fairness keys: {s.active_fairness_keys}",
        f"  Active consumers:     {s.active_consumers}",
        f"  Quantum:              {s.quantum}",
    ]
    if s.leader_node_id or s.replication_count:
        lines.append(f"  Raft leader:          node {s.leader_node_id}")
        lines.append(f"  Replicas:             {s.replication_count}")
    if s.per_key_stats:
        lines.append("")
        rows = [(k.key, k.pending_count, k.current_deficit, k.weight) for k in s.per_key_stats]
        lines.append(table(("KEY", "PENDING", "DEFICIT", "WEIGHT"), rows, right=(1, 2, 3), indent="  "))
    if s.per_throttle_stats:
        lines.append("")
        rows2 = [(t.key, f"{t.tokens:.1f}", f"{t.rate_per_second:.1f}", f"{t.burst:.1f}") for t in s.per_throttle_stats]
        lines.append(table(("KEY", "TOKENS", "RATE/S", "BURST"), rows2, right=(1, 2, 3), indent="  "))
    return "\n".join(lines)


def bench_text(result: Mapping[str, Any], server_line: str) -> str:
    """The human report of ``bench``."""
    r = result
    prod, cons, lat = r["produce"], r["consume"], r["latency"]
    head = (
        f"fila bench: {r['messages']:,} messages of {r['payload_size']} B, "
        f"{plural(r['producers'], 'producer')}, {plural(r['consumers'], 'consumer')}, "
        f"{'AsyncClient' if r['mode'] == 'async' else 'Client (sync)'}, codec {r['codec']}"
    )
    rows = [
        (
            name,
            f"{p['messages']:,}",
            f"{p['seconds']:.2f}",
            f"{p['msg_per_s']:,.0f}",
            f"{p['cpu_us_per_msg']:.2f}",
        )
        for name, p in (("produce", prod), ("consume+ack", cons))
    ]
    body = table(("phase", "messages", "seconds", "msg/s", "client CPU µs/msg"), rows, right=(1, 2, 3, 4))
    lat_line = (
        f"enqueue→delivery latency, 1 message every {lat['interval_ms']:g} ms ({lat['messages']:,} messages): "
        f"p50 {lat['p50_ms']:.2f} ms  p99 {lat['p99_ms']:.2f} ms  p99.9 {lat['p999_ms']:.2f} ms"
    )
    return "\n".join([head, server_line, "", body, "", lat_line])
