"""Client (sync): every operation's success and failure paths against fila.testing over TCP."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading

import pytest
from client_helpers import run_threads

import fila
from fila import AccumulatorMode, Client, EnqueueResult, Linger, Permission
from fila import errors as E
from fila._connection import parse_address
from fila.testing import Broker


def drain(consumer: fila.Consumer, n: int, timeout: float = 10.0) -> list[fila.Message]:
    out = []
    while len(out) < n:
        m = consumer.get(timeout=timeout)
        assert m is not None, f"only {len(out)} of {n} messages arrived"
        out.append(m)
    return out


# ---------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("localhost:5555", ("localhost", 5555)),
        ("example.com", ("example.com", 5555)),
        ("10.0.0.1:7000", ("10.0.0.1", 7000)),
        ("[::1]:6000", ("::1", 6000)),
        ("[::1]", ("::1", 5555)),
        ("::1", ("::1", 5555)),
    ],
)
def test_parse_address(addr: str, expected: tuple[str, int]) -> None:
    assert parse_address(addr) == expected


@pytest.mark.parametrize("addr", ["", "host:notaport", "host:0", "host:70000", "[::1", "[::1]x", ":5555"])
def test_parse_address_rejects(addr: str) -> None:
    with pytest.raises(ValueError):
        parse_address(addr)


def test_ipv6_address_connects(broker_factory) -> None:  # type: ignore[no-untyped-def]
    try:
        b = broker_factory(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with Client(f"[::1]:{b.port}", request_timeout=5) as c:
        c.create_queue("v6")
        assert c.enqueue("v6", b"x")


# -------------------------------------------------------------- hot path


def test_enqueue_consume_ack(broker: Broker) -> None:
    with Client(broker.address, request_timeout=10) as c:
        c.create_queue("orders")
        mid = c.enqueue("orders", b"hello", {"k": "v"})
        assert isinstance(mid, str) and len(mid) == 36
        with c.consume("orders") as consumer:
            (msg,) = drain(consumer, 1)
            assert (msg.id, msg.queue, msg.payload, msg.headers) == (mid, "orders", b"hello", {"k": "v"})
            assert msg.attempt_count == 0
            c.ack(msg.queue, msg.id)
        assert c.get_stats("orders").depth == 0
        with pytest.raises(E.MessageNotFoundError):
            c.ack("orders", mid)


def test_enqueue_to_missing_queue_raises(broker: Broker) -> None:
    with Client(broker.address) as c:
        with pytest.raises(E.QueueNotFoundError) as info:
            c.enqueue("nope", b"x")
        assert info.value.code == fila.protocol.ErrorCode.QUEUE_NOT_FOUND


def test_enqueue_rejects_bad_arguments_before_sending(broker: Broker) -> None:
    with Client(broker.address) as c:
        with pytest.raises(TypeError):
            c.enqueue_nowait("q", "not bytes")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            c.enqueue_nowait(1, b"x")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            c.enqueue_nowait("q", b"x", headers=[("a", "b")])  # type: ignore[arg-type]


def test_unencodable_item_fails_alone(broker: Broker) -> None:
    with Client(broker.address, accumulator=Linger(50, 100)) as c:
        c.create_queue("q")
        good = c.enqueue_nowait("q", b"1")
        bad = c.enqueue_nowait("q", b"2", {"k": 5})  # type: ignore[dict-item]
        good2 = c.enqueue_nowait("q", b"3")
        assert good.result(10) and good2.result(10)
        with pytest.raises(E.EncodeError):
            bad.result(10)


def test_enqueue_many_per_item_results(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("a")
        c.create_queue("b")
        res = c.enqueue_many([("a", b"1"), ("missing", b"2", None), ("b", b"3", {"h": "v"})])
        assert [r.ok for r in res] == [True, False, True]
        assert isinstance(res[1].error, E.QueueNotFoundError)
        assert res[1].message_id is None
        assert res[0].unwrap() == res[0].message_id
        with pytest.raises(E.QueueNotFoundError):
            res[1].unwrap()
        assert c.enqueue_many([]) == []
        assert isinstance(res[0], EnqueueResult)


def test_enqueue_many_whole_frame_error_becomes_per_item(broker_factory) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(api_key="root")
    with Client(b.address, api_key="root") as admin:
        admin.create_queue("ok")
        admin.create_queue("secret")
        key = admin.create_api_key("p")
        admin.set_acl(key.key_id, [Permission.produce("ok")])
    with Client(b.address, api_key=key.key) as c:
        res = c.enqueue_many([("ok", b"1"), ("secret", b"2")])
        assert all(isinstance(r.error, E.ForbiddenError) for r in res)


@pytest.mark.parametrize(
    "mode", [AccumulatorMode.AUTO, AccumulatorMode.DISABLED, Linger(5, 50), Linger(1000, 10)], ids=repr
)
def test_enqueue_nowait_every_mode_resolves_every_future(broker: Broker, mode: object) -> None:
    with Client(broker.address, accumulator=mode) as c:  # type: ignore[arg-type]
        c.create_queue("q")
        futs = [c.enqueue_nowait("q", b"%d" % i) for i in range(500)]
        futs.append(c.enqueue_nowait("missing", b"x"))
        ids = [f.result(10) for f in futs[:-1]]
        assert len(set(ids)) == 500
        assert ids == sorted(ids)  # the server's ids increase: order was kept
        with pytest.raises(E.QueueNotFoundError):
            futs[-1].result(10)
        assert c.get_stats("q").depth == 500


def test_nowait_futures_are_real_futures(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        seen: list[str] = []
        futs = [c.enqueue_nowait("q", b"x") for _ in range(20)]
        futs[0].add_done_callback(lambda f: seen.append(f.result()))
        done, not_done = cf.wait(futs, timeout=10)
        assert not not_done and len(done) == 20
        assert all(isinstance(f, cf.Future) for f in futs)
        assert seen == [futs[0].result()]
        assert [f.result() for f in cf.as_completed(futs, timeout=10)]


def test_close_flushes_linger_batch(broker: Broker) -> None:
    c = Client(broker.address, accumulator=Linger(60_000, 1000))
    c.create_queue("q")
    futs = [c.enqueue_nowait("q", b"x") for _ in range(10)]
    c.close()
    assert all(isinstance(f.result(0), str) for f in futs)
    with Client(broker.address) as c2:
        assert c2.get_stats("q").depth == 10


def test_closed_client_refuses_calls(broker: Broker) -> None:
    c = Client(broker.address)
    c.create_queue("q")
    c.close()
    c.close()  # twice is fine
    with pytest.raises(E.ClientClosedError):
        c.enqueue("q", b"x")
    with pytest.raises(E.ClientClosedError):
        c.enqueue_nowait("q", b"x")
    with pytest.raises(E.ClientClosedError):
        c.list_queues()
    with pytest.raises(E.ClientClosedError):
        c.consume("q")
    assert isinstance(E.ClientClosedError("x"), fila.FilaError)


def test_nack_redelivers_with_attempt_count(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        c.enqueue("q", b"x")
        with c.consume("q") as consumer:
            (m,) = drain(consumer, 1)
            c.nack(m.queue, m.id, "boom")
            (again,) = drain(consumer, 1)
            assert again.id == m.id and again.attempt_count == 1
            consumer.ack(again)
            assert consumer.flush(10)
        with pytest.raises(E.MessageNotFoundError):
            c.nack("q", m.id, "late")


def test_ack_many_nack_many_per_item(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        c.enqueue_many([("q", b"1"), ("q", b"2"), ("q", b"3")])
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
        c.enqueue_many([("q", b"%d" % i) for i in range(200)])
        with c.consume("q") as consumer:
            for m in drain(consumer, 200):
                consumer.ack(m)
            assert consumer.flush(10)
        stats = c.get_stats("q")
        assert stats.depth == 0 and stats.in_flight == 0


def test_consumer_ack_failure_is_logged(broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        c.enqueue("q", b"x")
        with c.consume("q") as consumer:
            (m,) = drain(consumer, 1)
            consumer.ack(m)
            assert consumer.flush(10)
            with caplog.at_level(logging.WARNING, logger="fila"):
                consumer.ack(m)
                assert consumer.flush(10)
        assert any("MESSAGE_NOT_FOUND" in r.getMessage() for r in caplog.records)


def test_consume_iterator_and_break_cancels(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        c.enqueue_many([("q", b"%d" % i) for i in range(5)])
        consumer = c.consume("q")
        for m in consumer:
            consumer.ack(m)
            break
        consumer.close()
        assert consumer.closed
        assert list(consumer) == []  # a closed consumer iterates as empty
        assert c.get_stats("q").active_consumers == 0


def test_cancel_stops_deliveries(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("q")
        consumer = c.consume("q")
        c.enqueue("q", b"first")
        drain(consumer, 1)
        consumer.close()
        c.enqueue("q", b"second")
        with c.consume("q") as other:
            (m,) = drain(other, 1)
            assert m.payload == b"second"
        assert consumer.get(timeout=0.2) is None


def test_consumer_garbage_collected_cancels(broker: Broker) -> None:
    import gc
    import time

    with Client(broker.address) as c:
        c.create_queue("q")
        consumer = c.consume("q")
        assert c.get_stats("q").active_consumers == 1
        del consumer
        gc.collect()
        deadline = time.monotonic() + 10
        while c.get_stats("q").active_consumers and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.get_stats("q").active_consumers == 0


def test_several_consumers_on_one_client(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("a")
        c.create_queue("b")
        with c.consume("a") as ca, c.consume("b") as cb:
            c.enqueue("a", b"for a")
            c.enqueue("b", b"for b")
            assert drain(ca, 1)[0].payload == b"for a"
            assert drain(cb, 1)[0].payload == b"for b"
            assert c.get_stats("a").active_consumers == 1


def test_consume_forbidden_raises_at_once(broker_factory) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(api_key="root")
    with Client(b.address, api_key="root") as admin:
        admin.create_queue("q")
        key = admin.create_api_key("nobody")
    with Client(b.address, api_key=key.key) as c:
        with pytest.raises(E.ForbiddenError):
            c.consume("q")


# ------------------------------------------------------------------ admin


def test_admin_operations(broker: Broker) -> None:
    with Client(broker.address) as c:
        assert c.create_queue("jobs", visibility_timeout_ms=5000) == "jobs"
        with pytest.raises(E.QueueAlreadyExistsError):
            c.create_queue("jobs")
        queues = c.list_queues()
        assert "jobs" in queues and "jobs.dlq" in queues.names
        assert queues.cluster_node_count == 0 and len(queues) == 2
        info = next(q for q in queues if q.name == "jobs")
        assert info.depth == 0
        c.enqueue("jobs", b"x")
        st = c.get_stats("jobs")
        assert (st.depth, st.in_flight, st.active_consumers) == (1, 0, 0)
        assert st.per_key and st.per_key[0].key == "default" and st.per_key[0].pending == 1
        with pytest.raises(E.QueueNotFoundError):
            c.get_stats("nope")
        c.set_config("throttle.k", "10,20")
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
            c.redrive("ghost.dlq")
        assert c.redrive("jobs.dlq", 0) == 0
        c.delete_queue("jobs")
        with pytest.raises(E.QueueNotFoundError):
            c.delete_queue("jobs")


def test_dlq_and_redrive(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("work")
        c.enqueue("work", b"x")
        # Without an on_failure hook the server retries; use the DLQ directly via redrive semantics.
        c.enqueue("work.dlq", b"dead")
        assert c.redrive("work.dlq", 0) == 1
        assert c.get_stats("work").depth == 2


def test_stats_and_list_queues_types(broker: Broker) -> None:
    with Client(broker.address) as c:
        c.create_queue("t")
        st = c.get_stats("t")
        assert isinstance(st, fila.Stats) and isinstance(st.per_throttle, tuple)
        assert all(isinstance(q, fila.QueueInfo) for q in c.list_queues())


def test_lua_compilation_error(broker: Broker) -> None:
    with Client(broker.address) as c:
        with pytest.raises(E.LuaCompilationError) as info:
            c.create_queue("bad", on_enqueue="this is not lua (")
        assert info.value.message


# ------------------------------------------------------------------- auth


def test_auth_operations(broker_factory) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(api_key="bootstrap-secret")
    with Client(b.address, api_key="bootstrap-secret") as admin:
        key = admin.create_api_key("svc", superadmin=False)
        assert key.key and key.key_id and key.is_superadmin is False
        assert key.key not in repr(key)
        listed = admin.list_api_keys()
        assert [k.key_id for k in listed] == [key.key_id] and listed[0].name == "svc"
        perms = [Permission.produce("orders.*"), Permission("consume", "orders.*")]
        admin.set_acl(key.key_id, perms)
        acl = admin.get_acl(key.key_id)
        assert acl.key_id == key.key_id and list(acl.permissions) == perms and not acl.is_superadmin
        admin.set_acl(key.key_id, acl.permissions)  # the same type in and out
        with pytest.raises(E.InvalidConfigValueError):
            admin.set_acl(key.key_id, [("write", "*")])
        with pytest.raises(TypeError):
            admin.set_acl(key.key_id, ["produce:*"])  # type: ignore[list-item]
        admin.create_queue("orders.us")
        with Client(b.address, api_key=key.key) as svc:
            assert svc.enqueue("orders.us", b"x")
            with pytest.raises(E.ForbiddenError):
                svc.list_queues()
        admin.revoke_api_key(key.key_id)
        with pytest.raises(E.ApiKeyNotFoundError):
            admin.revoke_api_key(key.key_id)
        with pytest.raises(E.ApiKeyNotFoundError):
            admin.get_acl(key.key_id)
        revoked = Client(b.address, api_key=key.key)
        with pytest.raises(E.UnauthorizedError):
            revoked.connect()
        revoked.close()


def test_missing_and_bad_api_key(broker_factory) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(api_key="right")
    with pytest.raises(E.UnauthorizedError) as info:
        Client(b.address).connect()
    assert "required" in info.value.message
    with pytest.raises(E.UnauthorizedError):
        Client(b.address, api_key="wrong").list_queues()


def test_api_key_never_in_repr_or_logs(broker_factory, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    secret = "s3cr3t-key-value"
    b = broker_factory(api_key=secret)
    with caplog.at_level(logging.DEBUG, logger="fila"):
        with Client(b.address, api_key=secret) as c:
            c.create_queue("q")
            assert secret not in repr(c) and secret not in repr(c._settings)
            with c.consume("q") as consumer:
                assert secret not in repr(consumer)
    assert all(secret not in r.getMessage() for r in caplog.records)


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
                    ids[i].append(c.enqueue("conc", b"%d-%d" % (i, j)))
                else:
                    ids[i].append(c.enqueue_nowait("conc", b"%d-%d" % (i, j)).result(10))

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
                assert "q" in c.list_queues()
                c.set_config(f"t{i}", str(i))
                assert c.get_config(f"t{i}") == str(i)

        run_threads(work, 8)
        assert broker.connection_count == 1
