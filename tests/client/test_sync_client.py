"""Client (sync): every operation's success and failure paths against fila.testing over TCP.

The API is fila-python 0.3.0's (``enqueue(queue, headers, payload)``, result
types of fila.types, the exception tree of fila.errors) plus this package's
extras (``enqueue_nowait``, ``flush``, ``ack_many`` / ``nack_many``, the
Consumer object, timeouts).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import gc
import logging
import threading
import uuid

import pytest
from client_helpers import run_threads
from client_helpers import wait_until

import fila
from fila import AccumulatorMode
from fila import AclEntry
from fila import AclPermission
from fila import ApiKeyInfo
from fila import Client
from fila import ConsumeMessage
from fila import CreateApiKeyResult
from fila import EnqueueResult
from fila import ErrorCode
from fila import FairnessKeyStat
from fila import Linger
from fila import QueueInfo
from fila import StatsResult
from fila import ThrottleKeyStat
from fila import errors as E
from fila.testing import Broker


def drain(consumer: fila.Consumer, n: int, timeout: float = 10.0) -> list[ConsumeMessage]:
    out = []
    while len(out) < n:
        m = consumer.get(timeout=timeout)
        assert m is not None, f"only {len(out)} of {n} messages arrived"
        out.append(m)
    return out


def names(c: Client) -> list[str]:
    return [q.name for q in c.list_queues()]


def is_message_id(mid: object) -> bool:
    """The broker's ids are UUIDv7 text."""
    return isinstance(mid, str) and len(mid) == 36 and uuid.UUID(mid).version == 7


# ---------------------------------------------------------------- addresses
# parse_address itself is tested in tests/core/test_settings.py.


@pytest.mark.parametrize("addr", ["example.com", "host:notaport", "[::1]", ""])
def test_bad_address_raises_before_any_io(addr: str) -> None:
    with pytest.raises(ValueError, match="invalid address"):
        Client(addr)


def test_ipv6_address_connects(broker_factory) -> None:  # type: ignore[no-untyped-def]
    try:
        b = broker_factory(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with Client(f"[::1]:{b.port}", request_timeout=5) as c:
        c.create_queue("v6")
        assert is_message_id(c.enqueue("v6", None, b"x"))
        assert c.get_stats("v6").depth == 1


# -------------------------------------------------------------- hot path


def test_enqueue_consume_ack(broker: Broker) -> None:
    with Client(broker.address, request_timeout=10) as c:
        assert c.create_queue("orders") is None
        mid = c.enqueue("orders", {"k": "v"}, b"hello")
        assert is_message_id(mid)
        # 0.3.0's parameters are positional-or-keyword: keyword calls must keep working
        mid2 = c.enqueue(queue="orders", headers=None, payload=b"kw")
        assert is_message_id(mid2) and mid2 > mid
        with c.consume("orders") as consumer:
            msg, msg2 = drain(consumer, 2)
            assert isinstance(msg, ConsumeMessage)
            assert [f.name for f in dataclasses.fields(msg)] == [
                "id",
                "headers",
                "payload",
                "fairness_key",
                "attempt_count",
                "queue",
                "weight",
                "throttle_keys",
                "enqueued_at",
                "leased_at",
            ]
            assert (msg.id, msg.queue, msg.payload, msg.headers) == (mid, "orders", b"hello", {"k": "v"})
            assert (msg2.id, msg2.headers, msg2.payload) == (mid2, {}, b"kw")
            assert msg.attempt_count == 0 and msg.fairness_key == "default"
            assert msg.throttle_keys == [] and msg.weight == 1
            assert (msg.enqueued_at, msg.leased_at) == (0, 0)  # the server always sends 0 (SERVER.md)
            assert c.ack(msg.queue, msg.id) is None
            c.ack(queue="orders", msg_id=msg2.id)
        assert c.get_stats("orders").depth == 0
        with pytest.raises(E.MessageNotFoundError):
            c.ack("orders", mid)


def test_enqueue_to_missing_queue_raises(broker: Broker) -> None:
    with Client(broker.address) as c:
        with pytest.raises(E.QueueNotFoundError) as info:
            c.enqueue("nope", None, b"x")
        assert info.value.code == ErrorCode.QUEUE_NOT_FOUND
        assert "nope" in str(info.value)


def test_enqueue_rejects_bad_arguments_before_sending(broker: Broker) -> None:
    with Client(broker.address) as c:
        with pytest.raises(TypeError):
            c.enqueue_nowait("q", None, "not bytes")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            c.enqueue_nowait(1, None, b"x")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            c.enqueue_nowait("q", [("a", "b")], b"x")  # type: ignore[arg-type]
        # the 0.2 argument order (queue, payload, headers) is refused with a hint, not sent
        with pytest.raises(TypeError, match=r"enqueue\(queue, headers, payload\)"):
            c.enqueue("q", b"x", {"k": "v"})  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            c.enqueue("q", b"x")  # type: ignore[call-arg]  # all three are required
        with pytest.raises(TypeError):
            c.enqueue_many([("q", b"x")])  # type: ignore[list-item]
        assert broker.connection_count == 1 and names(c) == []


def test_unencodable_item_fails_alone(broker: Broker) -> None:
    with Client(broker.address, accumulator_mode=Linger(50, 100)) as c:
        c.create_queue("q")
        good = c.enqueue_nowait("q", None, b"1")
        bad = c.enqueue_nowait("q", {"k": 5}, b"2")  # type: ignore[dict-item]
        good2 = c.enqueue_nowait("q", None, b"3")
        assert is_message_id(good.result(10)) and is_message_id(good2.result(10))
        with pytest.raises(E.EncodeError):
            bad.result(10)
        assert c.get_stats("q").depth == 2


def test_enqueue_many_per_item_results(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("a")
        c.create_queue("b")
        res = c.enqueue_many([("a", None, b"1"), ("missing", None, b"2"), ("b", {"h": "v"}, b"3")])
        assert all(type(r) is EnqueueResult for r in res)
        assert [r.is_success for r in res] == [True, False, True]
        ok, failed = res[0], res[1]
        assert is_message_id(ok.message_id) and ok.error is None and ok.exception is None and ok.code is None
        assert failed.message_id is None
        assert failed.error is not None and failed.error.startswith("error 0x01")  # 0.3.0's prefix, then the text
        assert "missing" in failed.error
        assert isinstance(failed.exception, E.QueueNotFoundError) and failed.code == ErrorCode.QUEUE_NOT_FOUND
        assert c.enqueue_many([]) == []
        assert c.get_stats("a").depth == 1 and c.get_stats("b").depth == 1


def test_enqueue_many_whole_request_error_raises(broker_factory) -> None:  # type: ignore[no-untyped-def]
    # 0.3.0: an Error frame answering the whole Enqueue raises; only per-message codes become results.
    b = broker_factory(api_key="root")
    with Client(b.address, api_key="root") as admin:
        admin.create_queue("ok")
        admin.create_queue("secret")
        key = admin.create_api_key("p")
        admin.set_acl(key.key_id, [AclPermission("produce", "ok")])
    with Client(b.address, api_key=key.raw_key) as c:
        with pytest.raises(E.ForbiddenError) as info:
            c.enqueue_many([("ok", None, b"1"), ("secret", None, b"2")])
        assert info.value.code == ErrorCode.FORBIDDEN and "secret" in str(info.value)
        res = c.enqueue_many([("ok", None, b"3")])
        assert [r.is_success for r in res] == [True]
    with Client(b.address, api_key="root") as admin:
        assert admin.get_stats("ok").depth == 1 and admin.get_stats("secret").depth == 0


@pytest.mark.parametrize(
    "mode", [AccumulatorMode.AUTO, AccumulatorMode.DISABLED, None, Linger(5, 50), Linger(1000, 10)], ids=repr
)
def test_enqueue_nowait_every_mode_resolves_every_future(broker: Broker, mode: object) -> None:
    with Client(broker.address, accumulator_mode=mode) as c:  # type: ignore[arg-type]
        c.create_queue("q")
        futs = [c.enqueue_nowait("q", None, b"%d" % i) for i in range(500)]
        futs.append(c.enqueue_nowait("missing", None, b"x"))
        ids = [f.result(10) for f in futs[:-1]]
        assert len(set(ids)) == 500
        assert ids == sorted(ids)  # the server's ids increase: order was kept
        with pytest.raises(E.QueueNotFoundError):
            futs[-1].result(10)
        assert c.get_stats("q").depth == 500


def test_max_accumulator_messages_caps_batches(broker: Broker) -> None:
    with Client(broker.address, max_accumulator_messages=7) as c:
        c.create_queue("q")
        sizes: list[int] = []
        send = c._acc._send
        c._acc._send = lambda items, futs, size: (sizes.append(len(items)), send(items, futs, size))  # type: ignore[method-assign]
        futs = [c.enqueue_nowait("q", None, b"x") for _ in range(200)]
        assert len({f.result(10) for f in futs}) == 200
        assert sum(sizes) == 200 and max(sizes) <= 7


def test_nowait_futures_are_real_futures(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        seen: list[str] = []
        futs = [c.enqueue_nowait("q", None, b"x") for _ in range(20)]
        futs[0].add_done_callback(lambda f: seen.append(f.result()))
        done, not_done = cf.wait(futs, timeout=10)
        assert not not_done and len(done) == 20
        assert all(isinstance(f, cf.Future) for f in futs)
        assert wait_until(lambda: seen == [futs[0].result()])
        assert {f.result() for f in cf.as_completed(futs, timeout=10)} == {f.result() for f in futs}
        assert len({f.result() for f in futs}) == 20


def test_close_flushes_linger_batch(broker: Broker) -> None:
    c = Client(broker.address, accumulator_mode=Linger(60_000, 1000))
    c.create_queue("q")
    futs = [c.enqueue_nowait("q", None, b"%d" % i) for i in range(10)]
    assert not any(f.done() for f in futs)  # the linger window (60 s) holds them
    c.close()
    # close sent them: every future has its id now, without waiting
    ids = [f.result(0) for f in futs]
    assert all(is_message_id(i) for i in ids) and len(set(ids)) == 10
    with Client(broker.address) as c2:
        assert c2.get_stats("q").depth == 10
        with c2.consume("q") as consumer:
            assert sorted(m.id for m in drain(consumer, 10)) == sorted(ids)


def test_flush_sends_what_the_accumulator_holds(broker: Broker) -> None:
    with Client(broker.address, accumulator_mode=Linger(60_000, 1000)) as c:
        c.create_queue("q")
        futs = [c.enqueue_nowait("q", None, b"x") for _ in range(5)]
        assert not any(f.done() for f in futs)
        assert c.flush(10) is True
        assert all(f.done() and is_message_id(f.result(0)) for f in futs)


def test_closed_client_refuses_calls(broker: Broker) -> None:
    c = Client(broker.address)
    c.create_queue("q")
    c.close()
    c.close()  # twice is fine
    assert c.closed
    for call in (
        lambda: c.enqueue("q", None, b"x"),
        lambda: c.enqueue_nowait("q", None, b"x"),
        lambda: c.list_queues(),
        lambda: c.consume("q"),
    ):
        with pytest.raises(E.ClientClosedError) as info:
            call()
        # catchable as 0.3.0's FilaError and as a built-in ConnectionError
        assert isinstance(info.value, fila.FilaError) and isinstance(info.value, ConnectionError)


def test_nack_redelivers_with_attempt_count(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        c.enqueue("q", None, b"x")
        with c.consume("q") as consumer:
            (m,) = drain(consumer, 1)
            assert c.nack(m.queue, m.id, "boom") is None
            (again,) = drain(consumer, 1)
            assert again.id == m.id and again.attempt_count == 1
            consumer.ack(again)
            assert consumer.flush(10)
        with pytest.raises(E.MessageNotFoundError):
            c.nack("q", m.id, "late")
        with pytest.raises(TypeError):
            c.nack("q", m.id)  # type: ignore[call-arg]  # the error text is required (0.3.0)


def test_ack_many_nack_many_per_item(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        c.enqueue_many([("q", None, b"1"), ("q", None, b"2"), ("q", None, b"3")])
        with c.consume("q") as consumer:
            m1, m2, m3 = drain(consumer, 3)
            res = c.ack_many([m1, ("q", "00000000-0000-0000-0000-000000000000")])
            assert res[0] is None and isinstance(res[1], E.MessageNotFoundError)
            res = c.nack_many([(m2, "e"), ("q", m3.id, "e"), ("q", m1.id, "e")])
            assert res[:2] == [None, None] and isinstance(res[2], E.MessageNotFoundError)
        assert c.ack_many([]) == [] and c.nack_many([]) == []


def test_consumer_batched_acks_and_nacks(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        c.enqueue_many([("q", None, b"%d" % i) for i in range(200)])
        with c.consume("q") as consumer:
            msgs = drain(consumer, 200)
            for m in msgs[:150]:
                consumer.ack(m)
            for m in msgs[150:]:
                consumer.nack(m, "retry me")
            assert consumer.flush(10)
            again = drain(consumer, 50)
            assert sorted(m.id for m in again) == sorted(m.id for m in msgs[150:])
            assert {m.attempt_count for m in again} == {1}
            for m in again:
                consumer.ack(m)
            assert consumer.flush(10)
        stats = c.get_stats("q")
        assert stats.depth == 0 and stats.in_flight == 0


def test_consumer_ack_failure_is_logged(broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        c.enqueue("q", None, b"x")
        with c.consume("q") as consumer:
            (m,) = drain(consumer, 1)
            consumer.ack(m)
            assert consumer.flush(10)
            with caplog.at_level(logging.WARNING, logger="fila"):
                consumer.ack(m)
                assert consumer.flush(10)
        failures = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(m.id in text and "message not found" in text for text in failures), failures


def test_consume_iterator_and_break_cancels(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        c.enqueue_many([("q", None, b"%d" % i) for i in range(5)])
        consumer = c.consume("q")
        for m in consumer:
            assert m.payload == b"0"
            consumer.ack(m)
            break
        consumer.close()
        assert consumer.closed
        assert list(consumer) == []  # a closed consumer iterates as empty
        assert wait_until(lambda: c.get_stats("q").active_consumers == 0)


def test_cancel_stops_deliveries(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        consumer = c.consume("q")
        c.enqueue("q", None, b"first")
        drain(consumer, 1)
        consumer.close()
        c.enqueue("q", None, b"second")
        with c.consume("q") as other:
            (m,) = drain(other, 1)
            assert m.payload == b"second"  # not leased to the cancelled subscription
        assert consumer.get(timeout=0.2) is None


def test_consumer_garbage_collected_cancels(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        consumer = c.consume("q")
        assert c.get_stats("q").active_consumers == 1
        del consumer
        gc.collect()
        assert wait_until(lambda: c.get_stats("q").active_consumers == 0)


def test_several_consumers_on_one_client(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("a")
        c.create_queue("b")
        with c.consume("a") as ca, c.consume("b") as cb:
            c.enqueue("a", None, b"for a")
            c.enqueue("b", None, b"for b")
            assert drain(ca, 1)[0].payload == b"for a"
            assert drain(cb, 1)[0].payload == b"for b"
            assert c.get_stats("a").active_consumers == 1


def test_consume_forbidden_raises_at_once(broker_factory) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(api_key="root")
    with Client(b.address, api_key="root") as admin:
        admin.create_queue("q")
        key = admin.create_api_key("nobody")
    with Client(b.address, api_key=key.raw_key) as c:
        with pytest.raises(E.ForbiddenError):
            c.consume("q")


# ------------------------------------------------------------------ admin


def test_admin_operations(broker: Broker) -> None:
    with Client(broker.address) as c:
        assert c.create_queue("jobs", visibility_timeout_ms=5000) is None
        with pytest.raises(E.QueueAlreadyExistsError):
            c.create_queue("jobs")
        queues = c.list_queues()
        assert type(queues) is list and [q.name for q in queues] == ["jobs", "jobs.dlq"]
        info = queues[0]
        assert (info.depth, info.in_flight, info.active_consumers, info.leader_node_id) == (0, 0, 0, 0)
        c.enqueue("jobs", None, b"x")
        st = c.get_stats("jobs")
        assert (st.depth, st.in_flight, st.active_consumers) == (1, 0, 0)
        assert st.per_key_stats and st.per_key_stats[0].key == "default" and st.per_key_stats[0].pending_count == 1
        with pytest.raises(E.QueueNotFoundError):
            c.get_stats("nope")
        assert c.set_config("throttle.k", "10,20") is None
        c.set_config("app.a", "1")
        assert c.get_config("app.a") == "1"
        assert c.get_config("unset") == ""
        assert c.list_config("app.") == {"app.a": "1"}
        assert "throttle.k" in c.list_config()
        with pytest.raises(E.InvalidConfigValueError):
            c.set_config("throttle.bad", "not numbers")
        with pytest.raises(E.NotADLQError):
            c.redrive("jobs")
        with pytest.raises(E.QueueNotFoundError):
            c.redrive("ghost.dlq", 0)
        assert c.redrive("jobs.dlq", 0) == 0
        assert c.delete_queue("jobs") is None
        with pytest.raises(E.QueueNotFoundError):
            c.delete_queue("jobs")


def test_dlq_and_redrive(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("work")
        c.enqueue("work", None, b"x")
        # Without an on_failure hook the server retries; use the DLQ directly via redrive semantics.
        c.enqueue("work.dlq", None, b"dead")
        assert c.redrive("work.dlq", 0) == 1
        assert c.get_stats("work").depth == 2
        assert c.get_stats("work.dlq").depth == 0


def test_stats_and_list_queues_results(broker: Broker) -> None:
    # Was: isinstance checks only. Now the exact 0.3.0 result types with the values the
    # broker holds; a wrong field mapping (e.g. tokens and burst swapped) fails here.
    with Client(broker.address) as c:
        c.create_queue("t")
        c.set_config("throttle.k", "10,20")
        c.enqueue_many([("t", None, b"1"), ("t", None, b"2")])
        st = c.get_stats("t")
        assert type(st) is StatsResult
        assert (st.depth, st.in_flight, st.active_fairness_keys, st.active_consumers) == (2, 0, 1, 0)
        assert (st.quantum, st.leader_node_id, st.replication_count) == (1000, 0, 0)
        assert st.per_key_stats == [FairnessKeyStat("default", 2, st.per_key_stats[0].current_deficit, 1)]
        assert st.per_throttle_stats == [ThrottleKeyStat("k", 20.0, 10.0, 20.0)]
        assert c.list_queues() == [QueueInfo("t", 2, 0, 0, 0), QueueInfo("t.dlq", 0, 0, 0, 0)]


def test_lua_compilation_error(broker: Broker) -> None:
    pytest.importorskip("lupa")  # Lua hooks: the optional [lua] extra
    # Was: the message is non-empty. Now: 0.3.0's LuaError class, code 0x04, and Lua's own text.
    with Client(broker.address) as c:
        with pytest.raises(E.LuaCompilationError) as info:
            c.create_queue("bad", on_enqueue="this is not lua (")
        assert isinstance(info.value, fila.LuaError) and info.value.code == ErrorCode.LUA_COMPILATION_ERROR
        assert "syntax error" in info.value.message and "'bad'" in str(info.value)
        assert names(c) == []


# ------------------------------------------------------------------- auth


def test_auth_operations(broker_factory) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(api_key="bootstrap-secret")
    with Client(b.address, api_key="bootstrap-secret") as admin:
        key = admin.create_api_key("svc")
        assert type(key) is CreateApiKeyResult and key.is_superadmin is False
        assert key.raw_key not in repr(key) and key.key_id in repr(key)
        listed = admin.list_api_keys()
        assert all(type(k) is ApiKeyInfo for k in listed)
        assert [(k.key_id, k.name, k.is_superadmin, k.expires_at) for k in listed] == [(key.key_id, "svc", False, 0)]
        assert listed[0].created_at > 0
        admin.set_acl(key.key_id, [("produce", "orders.*"), AclPermission("consume", "orders.*")])
        acl = admin.get_acl(key.key_id)
        assert acl == AclEntry(
            key.key_id, False, [AclPermission("produce", "orders.*"), AclPermission("consume", "orders.*")]
        )
        admin.set_acl(key.key_id, acl.permissions)  # the same type in and out
        with pytest.raises(E.InvalidConfigValueError):
            admin.set_acl(key.key_id, [("write", "*")])
        with pytest.raises(TypeError):
            admin.set_acl(key.key_id, ["produce:*"])  # type: ignore[list-item]
        admin.create_queue("orders.us")
        with Client(b.address, api_key=key.raw_key) as svc:  # the raw key is the token
            assert is_message_id(svc.enqueue("orders.us", None, b"x"))
            with pytest.raises(E.ForbiddenError):
                svc.list_queues()
        assert admin.get_stats("orders.us").depth == 1
        assert admin.revoke_api_key(key.key_id) is None
        assert admin.list_api_keys() == []
        with pytest.raises(E.ApiKeyNotFoundError):
            admin.revoke_api_key(key.key_id)
        with pytest.raises(E.ApiKeyNotFoundError):
            admin.get_acl(key.key_id)
        with pytest.raises(E.UnauthorizedError):
            Client(b.address, api_key=key.raw_key)  # the handshake is in the constructor
        sa = admin.create_api_key("ops", superadmin=True)
        assert sa.is_superadmin and admin.get_acl(sa.key_id).is_superadmin


def test_missing_and_bad_api_key(broker_factory) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(api_key="right")
    with pytest.raises(E.UnauthorizedError) as info:
        Client(b.address)
    assert "required" in info.value.message and info.value.code == ErrorCode.UNAUTHORIZED
    with pytest.raises(E.UnauthorizedError):
        Client(b.address, api_key="wrong")
    assert wait_until(lambda: b.connection_count == 0)  # refused connections are not left open


def test_api_key_never_in_repr_or_logs(broker_factory, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    secret = "s3cr3t-key-value"
    b = broker_factory(api_key=secret)
    with caplog.at_level(logging.DEBUG, logger="fila"):
        with Client(b.address, api_key=secret) as c:
            c.create_queue("q")
            assert secret not in repr(c) and secret not in repr(c._settings)
            with c.consume("q") as consumer:
                assert secret not in repr(consumer)
        with pytest.raises(E.UnauthorizedError) as info:
            Client(b.address, api_key=secret + "-wrong")
        assert secret not in str(info.value)
    assert caplog.records and all(secret not in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------ concurrency


def test_eight_threads_exactly_once(broker: Broker) -> None:
    per_thread = 250
    with Client(broker.address) as c:
        c.create_queue("conc")
        counts: dict[str, int] = {}
        lock = threading.Lock()
        done = threading.Event()
        total = 8 * per_thread

        def consume() -> None:
            with c.consume("conc") as consumer:
                while not done.is_set():
                    m = consumer.get(timeout=0.2)
                    if m is None:
                        continue
                    c.ack(m.queue, m.id)
                    with lock:
                        counts[m.id] = counts.get(m.id, 0) + 1
                        if len(counts) == total:
                            done.set()

        consumers = [threading.Thread(target=consume, daemon=True) for _ in range(2)]
        for t in consumers:
            t.start()
        ids: list[list[str]] = [[] for _ in range(8)]

        def produce(i: int) -> None:
            for j in range(per_thread):
                if j % 2:
                    ids[i].append(c.enqueue("conc", None, b"%d-%d" % (i, j)))
                else:
                    ids[i].append(c.enqueue_nowait("conc", None, b"%d-%d" % (i, j)).result(10))

        run_threads(produce, 8)
        assert done.wait(30), f"consumed {len(counts)} of {total}"
        for t in consumers:
            t.join(10)
        all_ids = {x for lst in ids for x in lst}
        assert len(all_ids) == total
        assert set(counts) == all_ids and set(counts.values()) == {1}
        assert c.get_stats("conc").depth == 0


def test_admin_calls_from_many_threads_share_one_connection(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")

        def work(i: int) -> None:
            for _ in range(20):
                assert "q" in names(c)
                c.set_config(f"t{i}", str(i))
                assert c.get_config(f"t{i}") == str(i)

        run_threads(work, 8)
        assert broker.connection_count == 1
