"""The admin commands (the Rust CLI's command tree) against a test broker, for people and with --json."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import one_line_error
from cli_helpers import run_cli

from fila import Client
from fila.cli import EXIT_SERVER
from fila.testing import Broker
from fila.testing import lua_available


def ok(broker: Broker, *args: str) -> str:
    proc = run_cli("--addr", broker.address, *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def ok_json(broker: Broker, *args: str) -> Any:
    out = ok(broker, *args, "--json")
    assert len(out.splitlines()) == 1
    return json.loads(out)


def test_queue_create_list_inspect_delete(broker: Broker) -> None:
    assert ok(broker, "queue", "create", "orders", "--visibility-timeout", "5000") == 'Created queue "orders"\n'
    assert ok_json(broker, "queue", "create", "a-much-longer-queue-name") == {
        "queue": "a-much-longer-queue-name",
        "created": True,
    }
    proc = run_cli("--addr", broker.address, "queue", "create", "orders")
    one_line_error(proc, EXIT_SERVER, "QueueAlreadyExistsError")
    with Client(broker.address) as c:
        c.enqueue("orders", None, b"1")
        c.enqueue("orders", {"k": "v"}, b"2")

    table = ok(broker, "queue", "list").splitlines()
    assert re.split(r"\s+", table[0]) == ["NAME", "DEPTH", "IN_FLIGHT", "CONSUMERS"]
    rows = {line.split()[0]: line.split()[1:] for line in table[1:]}
    assert rows["orders"] == ["2", "0", "0"]
    assert rows["orders.dlq"] == ["0", "0", "0"]
    widths = {len(line) for line in table}  # aligned: the number columns end in the same place
    assert len(widths) == 1

    listed = ok_json(broker, "queue", "list")["queues"]
    orders = next(q for q in listed if q["name"] == "orders")
    assert orders == {"name": "orders", "depth": 2, "in_flight": 0, "consumers": 0, "leader_node_id": 0}

    text = ok(broker, "queue", "inspect", "orders")
    assert text.startswith("Queue: orders\n  Depth:                2\n  In-flight:            0\n")
    assert re.search(r"KEY\s+PENDING\s+DEFICIT\s+WEIGHT\n\s+default\s+2\s+", text)
    stats = ok_json(broker, "queue", "inspect", "orders")
    assert stats["queue"] == "orders" and stats["depth"] == 2 and stats["in_flight"] == 0
    assert set(stats) == {
        "queue",
        "depth",
        "in_flight",
        "active_fairness_keys",
        "active_consumers",
        "quantum",
        "leader_node_id",
        "replication_count",
        "fairness_keys",
        "throttle_keys",
    }
    assert stats["fairness_keys"] == [{"key": "default", "pending": 2, "deficit": 0, "weight": 1}]

    assert ok(broker, "queue", "delete", "orders") == 'Deleted queue "orders"\n'
    assert ok_json(broker, "queue", "delete", "a-much-longer-queue-name") == {
        "queue": "a-much-longer-queue-name",
        "deleted": True,
    }
    assert "orders" not in {q["name"] for q in ok_json(broker, "queue", "list")["queues"]}


@pytest.mark.skipif(not lua_available(), reason="Lua hooks need lupa")
def test_queue_create_takes_scripts_inline_or_from_a_file(broker: Broker, tmp_path: Path) -> None:
    script = tmp_path / "hook.lua"
    script.write_text('function on_enqueue(msg) return { fairness_key = msg.headers["tenant"] or "none" } end\n')
    ok(broker, "queue", "create", "hooked", "--on-enqueue", str(script))
    ok(broker, "enqueue", "hooked", "--data", "x", "--header", "tenant=acme")
    keys = [k["key"] for k in ok_json(broker, "queue", "inspect", "hooked")["fairness_keys"]]
    assert keys == ["acme"]
    proc = run_cli("--addr", broker.address, "queue", "create", "broken", "--on-enqueue", "function (")
    one_line_error(proc, EXIT_SERVER, "LuaCompilationError")


def test_config_set_get_list(broker: Broker) -> None:
    assert ok(broker, "config", "set", "app.color", "blue") == 'Set "app.color" = "blue"\n'
    assert ok_json(broker, "config", "set", "app.size", "10") == {"key": "app.size", "value": "10"}
    assert ok(broker, "config", "get", "app.color") == "app.color: blue\n"
    assert ok(broker, "config", "get", "app.missing") == "app.missing: (not set)\n"
    assert ok_json(broker, "config", "get", "app.missing") == {"key": "app.missing", "value": ""}
    assert ok(broker, "config", "list", "--prefix", "app.").splitlines() == [
        "KEY        VALUE",
        "app.color  blue",
        "app.size   10",
    ]
    assert ok_json(broker, "config", "list", "--prefix", "app.s") == {"entries": [{"key": "app.size", "value": "10"}]}
    assert ok(broker, "config", "list", "--prefix", "zzz") == 'No config entries matching prefix "zzz".\n'


def test_redrive_moves_dead_letters_back(broker: Broker) -> None:
    broker.create_queue("jobs", on_failure=lambda msg: {"action": "dlq"})
    with Client(broker.address) as c:
        for i in range(3):
            c.enqueue("jobs", None, b"%d" % i)
        with c.consume("jobs") as consumer:
            for _ in range(3):
                msg = consumer.get(timeout=10)
                assert msg is not None
                c.nack("jobs", msg.id, "boom")
    assert ok_json(broker, "queue", "inspect", "jobs.dlq")["depth"] == 3
    assert ok(broker, "redrive", "jobs.dlq", "--count", "1") == 'Redrive complete: 1 message moved from "jobs.dlq"\n'
    assert ok_json(broker, "redrive", "jobs.dlq") == {"dlq": "jobs.dlq", "redriven": 2}
    assert ok_json(broker, "queue", "inspect", "jobs")["depth"] == 3


def test_auth_create_list_acl_revoke(broker: Broker) -> None:
    text = ok(broker, "auth", "create", "--name", "ci")
    assert text.startswith('Created API key "ci"\n  Key ID     : ')
    assert "Store the token securely" in text
    created = ok_json(broker, "auth", "create", "--name", "ops", "--superadmin", "--expires-at", "4102444800000")
    assert set(created) == {"name", "key_id", "token", "is_superadmin"}
    assert created["name"] == "ops" and created["is_superadmin"] is True and len(created["token"]) == 32
    key_id = created["key_id"]

    keys = {k["key_id"]: k for k in ok_json(broker, "auth", "list")["keys"]}
    assert keys[key_id]["name"] == "ops"
    assert keys[key_id]["expires_at_ms"] == 4102444800000
    assert keys[key_id]["is_superadmin"] is True
    table = ok(broker, "auth", "list").splitlines()
    assert re.split(r"\s+", table[0]) == ["KEY_ID", "NAME", "CREATED_AT_MS", "EXPIRES_AT_MS", "SUPERADMIN"]
    assert any(line.startswith(key_id) and "4102444800000" in line for line in table)

    out = ok(broker, "auth", "acl", "set", key_id, "--perm", "produce:orders", "--perm", "consume:orders.*")
    assert out == f"ACL updated for key {key_id}\n"
    assert ok(broker, "auth", "acl", "get", key_id) == (
        f"Key ID : {key_id}\nSuperadmin: yes (all permissions granted)\nPermissions:\n"
        "  produce:orders\n  consume:orders.*\n"
    )
    acl = ok_json(broker, "auth", "acl", "get", key_id)
    assert acl == {
        "key_id": key_id,
        "is_superadmin": True,
        "permissions": [{"kind": "produce", "pattern": "orders"}, {"kind": "consume", "pattern": "orders.*"}],
    }
    assert ok_json(broker, "auth", "acl", "set", key_id) == {"key_id": key_id, "permissions": []}

    assert ok(broker, "auth", "revoke", key_id) == f"Revoked API key {key_id}\n"
    proc = run_cli("--addr", broker.address, "auth", "revoke", key_id)
    one_line_error(proc, EXIT_SERVER, "ApiKeyNotFoundError")
    assert key_id not in {k["key_id"] for k in ok_json(broker, "auth", "list")["keys"]}
