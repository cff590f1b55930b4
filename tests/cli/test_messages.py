"""``enqueue`` and ``consume``: payload from --data, --file or stdin; one line (or JSON object) per message."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from cli_helpers import run_cli

from fila import Client
from fila.testing import Broker


def cli(broker: Broker, *args: str, input: bytes | None = None) -> str:
    proc = run_cli("--addr", broker.address, *args, input=input)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def test_enqueue_then_consume_as_json(broker: Broker, tmp_path: Path) -> None:
    broker.create_queue("inbox")
    first = cli(broker, "enqueue", "inbox", "--data", "hello\nworld", "--header", "a=1", "--header", "b=x=y").strip()
    assert len(first) == 36  # the message id, alone on its line
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\xff\x00binary")
    second = json.loads(cli(broker, "enqueue", "inbox", "--file", str(blob), "--json"))
    assert set(second) == {"queue", "message_id"} and second["queue"] == "inbox"
    third = cli(broker, "enqueue", "inbox", input=b"from stdin").strip()

    lines = cli(broker, "consume", "inbox", "--count", "3", "--json").splitlines()
    assert len(lines) == 3
    msgs = {m["id"]: m for m in map(json.loads, lines)}
    assert set(msgs) == {first, second["message_id"], third}
    m = msgs[first]
    assert set(m) == {
        "id",
        "queue",
        "headers",
        "payload",
        "payload_base64",
        "fairness_key",
        "weight",
        "throttle_keys",
        "attempt_count",
        "enqueued_at",
        "leased_at",
    }
    assert m["queue"] == "inbox" and m["headers"] == {"a": "1", "b": "x=y"}
    assert m["payload"] == "hello\nworld" and base64.b64decode(m["payload_base64"]) == b"hello\nworld"
    assert m["attempt_count"] == 0 and m["fairness_key"] == "default" and m["throttle_keys"] == []
    binary = msgs[second["message_id"]]
    assert binary["payload"] is None and base64.b64decode(binary["payload_base64"]) == b"\xff\x00binary"
    assert msgs[third]["payload"] == "from stdin"
    with Client(broker.address) as c:  # all acked
        stats = c.get_stats("inbox")
        assert (stats.depth, stats.in_flight) == (0, 0)


def test_consume_prints_one_line_per_message(broker: Broker) -> None:
    broker.create_queue("lines")
    with Client(broker.address) as c:
        ids = [c.enqueue("lines", {"k": "v"}, b"two\nlines"), c.enqueue("lines", None, b"\x01\xfe")]
    out = cli(broker, "consume", "lines", "--count", "2").splitlines()
    assert out == [
        f'{ids[0]}  attempt=0  key=default  headers={{"k":"v"}}  two\\nlines',
        f"{ids[1]}  attempt=0  key=default  \\x01\\xfe",
    ]


def test_consume_no_ack_leaves_the_message_leased(broker: Broker) -> None:
    broker.create_queue("unacked", visibility_timeout_ms=60_000)
    cli(broker, "enqueue", "unacked", "--data", "keep me")
    assert "keep me" in cli(broker, "consume", "unacked", "--count", "1", "--no-ack")
    with Client(broker.address) as c:
        stats = c.get_stats("unacked")
        assert (stats.depth, stats.in_flight) == (1, 1)


def test_consume_timeout_ends_quietly_on_an_empty_queue(broker: Broker) -> None:
    broker.create_queue("empty")
    proc = run_cli("--addr", broker.address, "consume", "empty", "--timeout", "0.3")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
