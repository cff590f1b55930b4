"""fila-python 0.3.0 programs against ``fila.Client`` and a ``fila.testing`` broker (SEED_API.md §3–§5).

Calls are written the way 0.3.0 callers write them: positional
``enqueue(queue, headers, payload)``, keyword calls with 0.3.0's parameter
names, ``for msg in client.consume(q)``, ``except fila.<0.3.0 class>``.
"""

from __future__ import annotations

import collections.abc
import re
import threading
import time
from typing import Any

import pytest
from compat_helpers import within

import fila
from fila import errors as E
from fila.protocol.constants import ErrorCode
from fila.protocol.constants import Opcode
from fila.testing import Broker

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def take(stream: Any, n: int, timeout: float = 10.0) -> list[fila.ConsumeMessage]:
    """``n`` messages through ``next(stream)`` (0.3.0's iterator protocol), failing instead of hanging."""
    return within(timeout, lambda: [next(stream) for _ in range(n)])


# -------------------------------------------------------------- lifecycle


def test_client_connects_in_constructor(broker: Broker, addr: str) -> None:
    assert broker.connection_count == 0
    c = fila.Client(addr)
    try:
        assert broker.connection_count == 1  # connected and handshaken before __init__ returned
    finally:
        c.close()


def test_unreachable_address_raises_connection_error_compatible_fila_error() -> None:
    t0 = time.monotonic()
    with pytest.raises(fila.FilaError) as info:
        within(15, fila.Client, "127.0.0.1:1")
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, OSError)
    assert time.monotonic() - t0 < 10


def test_context_manager_and_close_twice(addr: str) -> None:
    with fila.Client(addr) as c:
        assert isinstance(c, fila.Client)
        c.create_queue("cm")
    c.close()
    c.close()
    c2 = fila.Client(addr, accumulator_mode=fila.AccumulatorMode.DISABLED)
    c2.close()
    c2.close()


def test_exit_does_not_suppress_exceptions(addr: str) -> None:
    with pytest.raises(KeyError), fila.Client(addr):
        raise KeyError("boom")


# -------------------------------------------------------------- producing


def test_enqueue_positional_keyword_and_none_headers(client: fila.Client) -> None:
    client.create_queue("orders")
    a = client.enqueue("orders", {"k": "v"}, b"one")
    b = client.enqueue(queue="orders", headers=None, payload=b"two")
    c = client.enqueue("orders", headers={}, payload=b"three")
    for mid in (a, b, c):
        assert isinstance(mid, str) and UUID7.match(mid), mid
    msgs = take(client.consume("orders"), 3)
    assert [(m.id, m.payload, m.headers) for m in msgs] == [
        (a, b"one", {"k": "v"}),
        (b, b"two", {}),
        (c, b"three", {}),
    ]


def test_enqueue_many_results_in_order_with_per_item_errors(client: fila.Client) -> None:
    client.create_queue("a")
    client.create_queue("b")
    results = client.enqueue_many([("a", {"x": "1"}, b"1"), ("missing", None, b"2"), ("b", None, b"3")])
    assert isinstance(results, list) and all(isinstance(r, fila.EnqueueResult) for r in results)
    assert [r.is_success for r in results] == [True, False, True]
    assert UUID7.match(results[0].message_id) and results[0].error is None
    assert results[1].message_id is None
    assert results[1].error.startswith("error 0x01")
    assert client.enqueue_many(messages=[]) == []
    assert client.get_stats("a").depth == 1 and client.get_stats("b").depth == 1


@pytest.mark.parametrize(
    "mode",
    [
        fila.AccumulatorMode.AUTO,
        fila.AccumulatorMode.DISABLED,
        fila.Linger(5, 10),
        fila.Linger(linger_ms=1, max_messages=1),
        None,
    ],
    ids=repr,
)
def test_accumulator_modes(addr: str, mode: Any) -> None:
    with fila.Client(addr, accumulator_mode=mode, max_accumulator_messages=50) as c:
        c.create_queue("acc")
        ids: list[str] = []
        lock = threading.Lock()

        def produce(i: int) -> None:
            for j in range(20):
                mid = c.enqueue("acc", {"i": str(i)}, b"%d-%d" % (i, j))
                with lock:
                    ids.append(mid)

        threads = [threading.Thread(target=produce, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert not any(t.is_alive() for t in threads)
        assert len(set(ids)) == 80
        assert c.get_stats("acc").depth == 80
        with pytest.raises(fila.QueueNotFoundError):
            c.enqueue("missing", None, b"x")


def test_accumulator_none_means_disabled(addr: str) -> None:
    with fila.Client(addr, accumulator_mode=None) as c:
        assert c._mode is fila.AccumulatorMode.DISABLED  # 0.3.0: any non-mode value behaves like DISABLED


# -------------------------------------------------------------- consuming


def test_consume_subscribes_before_returning_and_next_works(client: fila.Client) -> None:
    client.create_queue("sub")
    stream = client.consume("sub")
    assert isinstance(stream, collections.abc.Iterator) and iter(stream) is stream
    assert client.get_stats("sub").active_consumers == 1  # subscribed before any iteration
    mid = client.enqueue("sub", None, b"x")
    (m,) = take(stream, 1)
    assert isinstance(m, fila.ConsumeMessage) and m.id == mid


def test_for_loop_consume_ack_and_break(client: fila.Client) -> None:
    client.create_queue("loop")
    for i in range(3):
        client.enqueue("loop", None, b"%d" % i)

    def loop() -> list[bytes]:
        got = []
        for msg in client.consume("loop"):
            got.append(msg.payload)
            client.ack(msg.queue, msg.id)
            if len(got) == 3:
                break
        return got

    assert within(10, loop) == [b"0", b"1", b"2"]
    assert client.get_stats("loop").depth == 0


def test_consume_refusal_raises_from_the_call(broker_factory: Any) -> None:
    b = broker_factory(api_key="root")
    addr = f"127.0.0.1:{b.port}"
    with fila.Client(addr, api_key="root") as admin:
        admin.create_queue("private")
        key = admin.create_api_key("producer")
        admin.set_acl(key.key_id, [("produce", "private")])
    with fila.Client(addr, api_key=key.raw_key) as c:
        with pytest.raises(fila.ForbiddenError):
            c.consume("private")  # raised by the call itself, before any next()


def test_consume_message_fields(broker: Broker, client: fila.Client) -> None:
    broker.create_queue(
        "fields",
        on_enqueue=lambda m: {"fairness_key": m["headers"].get("tenant", "x"), "weight": 3, "throttle_keys": ["t1"]},
    )
    mid = client.enqueue("fields", {"tenant": "acme"}, b"body")
    stream = client.consume("fields")
    (m,) = take(stream, 1)
    assert (m.id, m.headers, m.payload, m.fairness_key, m.attempt_count, m.queue) == (
        mid, {"tenant": "acme"}, b"body", "acme", 0, "fields",
    )  # fmt: skip
    assert m.weight == 3 and m.throttle_keys == ["t1"]
    assert isinstance(m.enqueued_at, int) and isinstance(m.leased_at, int)
    client.nack("fields", m.id, "try again")
    (again,) = take(stream, 1)
    assert again.id == mid and again.attempt_count == 1


def test_ack_nack_keyword_calls_and_message_not_found(client: fila.Client) -> None:
    client.create_queue("kw")
    client.enqueue("kw", None, b"a")
    client.enqueue("kw", None, b"b")
    stream = client.consume("kw")
    m1, m2 = take(stream, 2)
    assert client.ack(queue="kw", msg_id=m1.id) is None
    assert client.nack(queue="kw", msg_id=m2.id, error="bad") is None
    (m2b,) = take(stream, 1)
    client.ack("kw", m2b.id)
    with pytest.raises(fila.MessageNotFoundError):
        client.ack("kw", m1.id)
    with pytest.raises(fila.MessageNotFoundError):
        client.nack("kw", "00000000-0000-7000-8000-000000000000", "x")


# -------------------------------------------------------------- admin / auth


def test_admin_ops_return_030_types(broker: Broker, client: fila.Client) -> None:
    assert client.create_queue(name="jobs") is None
    broker.create_queue(
        "fair",
        on_enqueue=lambda m: {"fairness_key": m["headers"]["k"], "weight": 2, "throttle_keys": []},
        on_failure=lambda m: {"action": "dlq"},
    )
    client.enqueue("fair", {"k": "a"}, b"1")
    client.enqueue("fair", {"k": "b"}, b"2")
    assert client.set_config(key="throttle.t", value="10,20") is None

    stats = client.get_stats(queue="fair")
    assert isinstance(stats, fila.StatsResult)
    assert (stats.depth, stats.in_flight, stats.active_fairness_keys, stats.active_consumers) == (2, 0, 2, 0)
    assert stats.quantum > 0 and isinstance(stats.leader_node_id, int) and isinstance(stats.replication_count, int)
    assert sorted(k.key for k in stats.per_key_stats) == ["a", "b"]
    assert all(isinstance(k, fila.FairnessKeyStat) and k.weight == 2 for k in stats.per_key_stats)
    (ts,) = [t for t in stats.per_throttle_stats if t.key == "t"]
    assert isinstance(ts, fila.ThrottleKeyStat) and (ts.rate_per_second, ts.burst) == (10.0, 20.0)

    queues = client.list_queues()
    assert isinstance(queues, list) and all(isinstance(q, fila.QueueInfo) for q in queues)
    by_name = {q.name: q for q in queues}
    assert {"jobs", "jobs.dlq", "fair", "fair.dlq"} <= set(by_name)
    assert by_name["fair"].depth == 2

    assert client.get_config(key="throttle.t") == "10,20"
    assert client.get_config("never.set") == ""
    client.set_config("app.a", "1")
    assert client.list_config(prefix="app.") == {"app.a": "1"}

    # Dead-letter one message, then redrive it back.
    stream = client.consume("fair")
    (m,) = take(stream, 1)
    client.nack(m.queue, m.id, "fail")
    stream.close()
    assert within(10, lambda: _wait_depth(client, "fair.dlq", 1))
    moved = client.redrive(dlq_queue="fair.dlq", count=0)
    assert moved == 1 and isinstance(moved, int)
    assert client.delete_queue(name="jobs") is None
    assert "jobs" not in {q.name for q in client.list_queues()}


def _wait_depth(client: fila.Client, queue: str, depth: int) -> bool:
    while client.get_stats(queue).depth != depth:
        time.sleep(0.01)
    return True


def test_auth_ops_return_030_types(broker_factory: Any) -> None:
    b = broker_factory(api_key="root")
    addr = f"127.0.0.1:{b.port}"
    with fila.Client(addr, api_key="root") as c:
        c.create_queue("jobs")
        created = c.create_api_key(name="svc")
        assert isinstance(created, fila.CreateApiKeyResult)
        assert isinstance(created.key_id, str) and isinstance(created.raw_key, str) and created.is_superadmin is False
        keys = c.list_api_keys()
        assert all(isinstance(k, fila.ApiKeyInfo) for k in keys)
        (info,) = [k for k in keys if k.key_id == created.key_id]
        assert info.name == "svc" and isinstance(info.created_at, int) and info.expires_at == 0
        assert c.set_acl(key_id=created.key_id, permissions=[("produce", "jobs"), ("consume", "jobs")]) is None
        acl = c.get_acl(key_id=created.key_id)
        assert isinstance(acl, fila.AclEntry) and acl.key_id == created.key_id and acl.is_superadmin is False
        assert acl.permissions == [fila.AclPermission("produce", "jobs"), fila.AclPermission("consume", "jobs")]
        with fila.Client(addr, api_key=created.raw_key) as svc:
            svc.enqueue("jobs", None, b"x")
            with pytest.raises(fila.ForbiddenError):
                svc.list_queues()
        assert c.revoke_api_key(key_id=created.key_id) is None
        assert created.key_id not in {k.key_id for k in c.list_api_keys()}


# ------------------------------------------------------- server codes → classes


def test_codes_the_broker_produces(broker: Broker, client: fila.Client) -> None:
    client.create_queue("q")
    with pytest.raises(fila.QueueNotFoundError):
        client.enqueue("missing", None, b"x")
    with pytest.raises(fila.QueueNotFoundError):
        client.get_stats("missing")
    with pytest.raises(fila.MessageNotFoundError):
        client.ack("q", "00000000-0000-7000-8000-000000000000")
    with pytest.raises(fila.QueueAlreadyExistsError):
        client.create_queue("q")
    with pytest.raises(fila.LuaError) as lua:
        client.create_queue("bad-lua", on_enqueue="function on_enqueue(msg) return {")
    assert isinstance(lua.value, E.LuaCompilationError)
    with pytest.raises(fila.InvalidArgumentError) as not_dlq:
        client.redrive("q", 0)
    assert isinstance(not_dlq.value, E.NotADLQError) and not isinstance(not_dlq.value, fila.PermissionDeniedError)
    client.create_queue("orphan.dlq")
    with pytest.raises(fila.QueueNotFoundError) as parent:
        client.redrive("orphan.dlq", 0)
    assert isinstance(parent.value, E.ParentQueueNotFoundError)
    with pytest.raises(fila.InvalidArgumentError) as cfg:
        client.set_config("throttle.k", "not-a-rate")
    assert isinstance(cfg.value, E.InvalidConfigValueError)
    for call in (
        lambda: client.revoke_api_key("no-such-key"),
        lambda: client.get_acl("no-such-key"),
        lambda: client.set_acl("no-such-key", [("produce", "q")]),
    ):
        with pytest.raises(fila.ApiKeyNotFoundError):
            call()


def test_codes_of_auth(broker_factory: Any) -> None:
    b = broker_factory(api_key="root")
    addr = f"127.0.0.1:{b.port}"
    for key in (None, "wrong-key"):
        with pytest.raises(fila.UnauthorizedError) as info:
            fila.Client(addr, api_key=key)
        assert not isinstance(info.value, fila.UnavailableError)
    with fila.Client(addr, api_key="root") as admin:
        admin.create_queue("jobs")
        key = admin.create_api_key("limited")
        admin.set_acl(key.key_id, [("produce", "jobs")])
    with fila.Client(addr, api_key=key.raw_key) as c:
        for call in (lambda: c.list_queues(), lambda: c.enqueue("other", None, b"x"), lambda: c.consume("jobs")):
            with pytest.raises(fila.ForbiddenError) as forbidden:
                call()
            assert not isinstance(forbidden.value, fila.UnauthorizedError)


def test_codes_by_fault_injection(broker: Broker, addr: str) -> None:
    with fila.Client(addr, request_timeout=0.5) as c:
        c.create_queue("q")
        broker.faults.fail_next(1000, code=ErrorCode.CHANNEL_FULL, opcode=Opcode.GET_STATS)
        with pytest.raises(fila.ChannelFullError):
            c.get_stats("q")  # retried with backoff until the timeout, then raised
        broker.faults.reset()
        broker.faults.fail_next(1000, code=ErrorCode.NODE_NOT_READY, opcode=Opcode.LIST_QUEUES)
        with pytest.raises(fila.UnavailableError) as nnr:
            c.list_queues()
        assert type(nnr.value) is E.NodeNotReadyError
        broker.faults.reset()
        broker.faults.fail_next(1, code=ErrorCode.INTERNAL_ERROR, opcode=Opcode.GET_CONFIG, message="boom")
        with pytest.raises(fila.ProtocolError) as internal:
            c.get_config("k")
        assert internal.value.code == 0xFF and str(internal.value).startswith("protocol error (code=0xff): ")
        assert "boom" in str(internal.value)
        broker.faults.not_leader()  # no leader hint
        with pytest.raises(fila.NotLeaderError) as nl:
            c.consume("q")
        assert nl.value.leader_addr is None


# The server's code → what a 0.3.0 program catches, and this package's refinement (fila.errors docstring).
SERVER_CODES = [
    (0x01, fila.QueueNotFoundError, E.QueueNotFoundError),
    (0x02, fila.MessageNotFoundError, E.MessageNotFoundError),
    (0x03, fila.QueueAlreadyExistsError, E.QueueAlreadyExistsError),
    (0x04, fila.LuaError, E.LuaCompilationError),
    (0x05, fila.ProtocolError, E.StorageError),
    (0x06, fila.InvalidArgumentError, E.NotADLQError),
    (0x07, fila.QueueNotFoundError, E.ParentQueueNotFoundError),
    (0x08, fila.InvalidArgumentError, E.InvalidConfigValueError),
    (0x09, fila.ChannelFullError, E.ChannelFullError),
    (0x0A, fila.UnauthorizedError, E.UnauthorizedError),
    (0x0B, fila.ForbiddenError, E.ForbiddenError),
    (0x0C, fila.NotLeaderError, E.NotLeaderError),
    (0x0D, fila.ProtocolError, E.UnsupportedVersionError),
    (0x0E, fila.InvalidArgumentError, E.InvalidFrameError),
    (0x0F, fila.ApiKeyNotFoundError, E.ApiKeyNotFoundError),
    (0x10, fila.UnavailableError, E.NodeNotReadyError),
    (0xFF, fila.ProtocolError, E.InternalServerError),
]


# Refusals that applied nothing are retried until the timeout before they raise (tested apart).
RETRIED = {ErrorCode.CHANNEL_FULL, ErrorCode.NODE_NOT_READY}
ONE_SHOT_CODES = [c for c in SERVER_CODES if c[0] not in RETRIED]


@pytest.mark.parametrize(("code", "base", "cls"), ONE_SHOT_CODES, ids=lambda v: repr(v))
def test_error_frame_of_every_code(broker: Broker, client: fila.Client, code: int, base: type, cls: type) -> None:
    broker.faults.fail_next(1, code=code, opcode=Opcode.GET_CONFIG, message=f"injected {code:#04x}")
    with pytest.raises(base) as info:
        client.get_config("k")
    assert type(info.value) is cls
    assert info.value.code == code
    assert f"injected {code:#04x}" in str(info.value)
    assert client.get_config("k") == ""  # the connection is still in step


@pytest.mark.parametrize(("code", "base", "cls"), [*SERVER_CODES, (0x42, fila.ProtocolError, E.InternalServerError)])
def test_error_for_code(code: int, base: type, cls: type) -> None:
    err = E.error_for_code(code, "text")
    assert type(err) is cls and isinstance(err, base) and isinstance(err, fila.FilaError)
    assert err.code == code and err.message == "text"
    if isinstance(err, fila.ProtocolError):
        assert str(err).startswith(f"protocol error (code=0x{code:02x}): ")
