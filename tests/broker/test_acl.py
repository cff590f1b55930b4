"""SERVER.md §11, §6.16–§6.20: API keys, permissions and delegation."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator

import pytest

from fila.protocol.constants import ErrorCode
from fila.protocol.constants import Opcode
from fila.protocol.messages import decode_body
from fila.testing import Broker

from .conftest import Wire

FORBIDDEN = ErrorCode.FORBIDDEN
NO_ADMIN = "key does not have admin permission"


@pytest.fixture
def secure(fila_broker_factory: Callable[..., Broker]) -> Broker:
    return fila_broker_factory(api_key="boot")


@pytest.fixture
def as_key(secure: Broker) -> Iterator[Callable[..., Wire]]:
    wires: list[Wire] = []

    def make(*permissions: tuple[str, str], superadmin: bool = False) -> Wire:
        _, token = secure.create_api_key("k", is_superadmin=superadmin, permissions=permissions)
        w = Wire(secure, api_key=token)
        wires.append(w)
        return w

    yield make
    for w in wires:
        w.close()


@pytest.fixture
def root(secure: Broker) -> Iterator[Wire]:
    w = Wire(secure, api_key="boot")
    yield w
    w.close()


def _forbidden(w: Wire, type_name: str, fields: dict[str, object] | None = None) -> str:
    body = w.error(type_name, fields)
    assert body["error_code"] == FORBIDDEN and body["metadata"] == {}
    return body["message"]  # type: ignore[no-any-return]


def test_produce_permission_per_queue(root: Wire, as_key: Callable[..., Wire]) -> None:
    root.create_queue("orders.us")
    root.create_queue("other")
    w = as_key(("produce", "orders.*"))
    assert w.enqueue("orders.us")
    msg = _forbidden(
        w,
        "EnqueueRequest",
        {
            "messages": [
                {"queue": "orders.us", "headers": {}, "payload": b""},
                {"queue": "other", "headers": {}, "payload": b""},
            ]
        },
    )
    assert msg == 'no produce permission on queue "other"'
    assert root.stats("orders.us")["depth"] == 1  # nothing of the refused batch was stored


def test_pattern_rules(root: Wire, as_key: Callable[..., Wire]) -> None:
    for q in ("orders", "orders.dlq", "ordersX"):
        root.create_queue(q)
    w = as_key(("produce", "orders.*"), ("produce", "orders*"))
    assert w.enqueue("orders.dlq")
    assert "orders" in _forbidden(
        w, "EnqueueRequest", {"messages": [{"queue": "orders", "headers": {}, "payload": b""}]}
    )
    assert "ordersX" in _forbidden(
        w, "EnqueueRequest", {"messages": [{"queue": "ordersX", "headers": {}, "payload": b""}]}
    )


def test_consume_ack_nack_need_consume(root: Wire, as_key: Callable[..., Wire]) -> None:
    root.create_queue("q")
    mid = root.enqueue("q")
    producer = as_key(("produce", "*"))
    assert _forbidden(producer, "ConsumeRequest", {"queue": "q"}) == 'no consume permission on queue "q"'
    msg = _forbidden(producer, "AckRequest", {"items": [{"queue": "q", "message_id": mid}]})
    assert msg == 'no consume permission on queue "q"'
    assert _forbidden(producer, "NackRequest", {"items": [{"queue": "q", "message_id": mid, "error": ""}]})
    consumer = as_key(("consume", "q"))
    consumer.consume("q")
    assert consumer.ack("q", consumer.delivery()["message_id"]) == [0]


def test_decode_errors_win_over_acl(as_key: Callable[..., Wire]) -> None:
    w = as_key()
    w.send(b"\x00\x00\x00\x07\x12\x00\x00\x00\x00\x05\x00")
    f = w.response(5)
    assert decode_body(f.opcode, f.payload)["error_code"] == ErrorCode.INVALID_FRAME


def test_queue_admin_ops(root: Wire, as_key: Callable[..., Wire]) -> None:
    nobody = as_key(("produce", "*"))
    fields = {"name": "orders.x", "on_enqueue_script": None, "on_failure_script": None, "visibility_timeout_ms": 0}
    assert _forbidden(nobody, "CreateQueueRequest", fields) == NO_ADMIN
    scoped = as_key(("admin", "orders.*"))
    assert scoped.ok("CreateQueueRequest", fields)["error_code"] == 0
    assert (
        _forbidden(scoped, "CreateQueueRequest", {**fields, "name": "billing"})
        == 'no admin permission on queue "billing"'
    )
    assert _forbidden(scoped, "DeleteQueueRequest", {"queue": "billing"}) == 'no admin permission on queue "billing"'
    assert scoped.ok("DeleteQueueRequest", {"queue": "orders.x"}) == {"error_code": 0}


@pytest.mark.parametrize(
    ("type_name", "fields"),
    [
        ("GetStatsRequest", {"queue": "orders.a"}),
        ("ListQueuesRequest", None),
        ("SetConfigRequest", {"key": "k", "value": "v"}),
        ("GetConfigRequest", {"key": "k"}),
        ("ListConfigRequest", {"prefix": ""}),
        ("RedriveRequest", {"dlq_queue": "orders.a.dlq", "count": 0}),
        ("RevokeApiKeyRequest", {"key_id": "x"}),
        ("ListApiKeysRequest", None),
        ("GetAclRequest", {"key_id": "x"}),
    ],
)
def test_global_admin_ops_refuse_scoped_admins(
    root: Wire, as_key: Callable[..., Wire], type_name: str, fields: dict[str, object] | None
) -> None:
    root.create_queue("orders.a")
    scoped = as_key(("admin", "orders.*"))
    assert _forbidden(scoped, type_name, fields) == NO_ADMIN
    glob = as_key(("admin", "*"))
    assert glob.call(type_name, fields)[0] != Opcode.ERROR or type_name == "RedriveRequest"


def test_create_api_key_rules(root: Wire, as_key: Callable[..., Wire]) -> None:
    fields = {"name": "n", "expires_at_ms": 0, "is_superadmin": False}
    assert _forbidden(as_key(("consume", "*")), "CreateApiKeyRequest", fields) == NO_ADMIN
    scoped = as_key(("admin", "orders.*"))
    assert scoped.ok("CreateApiKeyRequest", fields)["is_superadmin"] is False
    msg = _forbidden(scoped, "CreateApiKeyRequest", {**fields, "is_superadmin": True})
    assert msg == "only superadmin keys can create other superadmin keys"
    glob = as_key(("admin", "*"))
    assert _forbidden(glob, "CreateApiKeyRequest", {**fields, "is_superadmin": True})
    sup = as_key(superadmin=True)
    assert sup.ok("CreateApiKeyRequest", {**fields, "is_superadmin": True})["is_superadmin"] is True
    assert root.ok("CreateApiKeyRequest", {**fields, "is_superadmin": True})["is_superadmin"] is True


def test_list_revoke_get_set_acl(root: Wire) -> None:
    created = root.ok("CreateApiKeyRequest", {"name": "svc", "expires_at_ms": 123, "is_superadmin": False})
    (listed,) = root.ok("ListApiKeysRequest")["keys"]
    assert listed["key_id"] == created["key_id"] and listed["name"] == "svc" and listed["expires_at_ms"] == 123
    assert listed["created_at_ms"] > 0
    kid = created["key_id"]
    perms = [
        {"kind": "produce", "pattern": "a"},
        {"kind": "produce", "pattern": "a"},
        {"kind": "admin", "pattern": "b.*"},
    ]
    assert root.ok("SetAclRequest", {"key_id": kid, "permissions": perms}) == {"error_code": 0}
    assert root.ok("GetAclRequest", {"key_id": kid}) == {
        "error_code": 0,
        "key_id": kid,
        "is_superadmin": False,
        "permissions": perms,
    }
    assert root.ok("SetAclRequest", {"key_id": "nope", "permissions": []}) == {
        "error_code": ErrorCode.API_KEY_NOT_FOUND
    }
    assert root.ok("GetAclRequest", {"key_id": "nope"}) == {
        "error_code": ErrorCode.API_KEY_NOT_FOUND,
        "key_id": "nope",
        "is_superadmin": False,
        "permissions": [],
    }
    assert root.ok("RevokeApiKeyRequest", {"key_id": kid}) == {"error_code": 0}
    assert root.ok("RevokeApiKeyRequest", {"key_id": kid}) == {"error_code": ErrorCode.API_KEY_NOT_FOUND}


def test_set_acl_invalid_kind_is_an_error_frame(root: Wire) -> None:
    kid = root.ok("CreateApiKeyRequest", {"name": "n", "expires_at_ms": 0, "is_superadmin": False})["key_id"]
    body = root.error("SetAclRequest", {"key_id": kid, "permissions": [{"kind": "read", "pattern": "*"}]})
    assert body["error_code"] == ErrorCode.INVALID_CONFIG_VALUE
    assert body["message"] == 'invalid permission kind "read": expected produce, consume, or admin'


@pytest.mark.parametrize(
    ("admin", "granted", "allowed"),
    [
        ("*", "*", True),
        ("*", "anything", True),
        ("orders.*", "orders.*", True),
        ("orders.*", "orders.us", True),
        ("orders.*", "orders.us.*", True),
        ("orders.*", "orders", False),
        ("orders.*", "*", False),
        ("orders.*", "billing", False),
        ("orders", "orders", True),
        ("orders", "orders.x", False),
    ],
)
def test_delegation_scope(root: Wire, as_key: Callable[..., Wire], admin: str, granted: str, allowed: bool) -> None:
    kid = root.ok("CreateApiKeyRequest", {"name": "t", "expires_at_ms": 0, "is_superadmin": False})["key_id"]
    caller = as_key(("admin", admin))
    fields = {"key_id": kid, "permissions": [{"kind": "consume", "pattern": granted}]}
    if allowed:
        assert caller.ok("SetAclRequest", fields) == {"error_code": 0}
    else:
        assert _forbidden(caller, "SetAclRequest", fields) == "one or more permissions exceed the caller's admin scope"


def test_delegation_is_checked_before_the_kind(root: Wire, as_key: Callable[..., Wire]) -> None:
    caller = as_key(("admin", "orders.*"))
    fields = {"key_id": "x", "permissions": [{"kind": "bogus", "pattern": "*"}]}
    assert _forbidden(caller, "SetAclRequest", fields) == "one or more permissions exceed the caller's admin scope"
    assert _forbidden(as_key(("produce", "*")), "SetAclRequest", fields) == NO_ADMIN


def test_revocation_and_acl_changes_apply_to_the_next_request(secure: Broker, root: Wire) -> None:
    root.create_queue("q")
    kid, token = secure.create_api_key("k", permissions=[("produce", "q"), ("consume", "q")])
    w = Wire(secure, api_key=token)
    try:
        assert w.enqueue("q")
        w.consume("q")
        root.ok("SetAclRequest", {"key_id": kid, "permissions": [{"kind": "consume", "pattern": "q"}]})
        assert _forbidden(w, "EnqueueRequest", {"messages": [{"queue": "q", "headers": {}, "payload": b""}]})
        assert w.delivery()  # an active subscription keeps delivering
        root.ok("RevokeApiKeyRequest", {"key_id": kid})
        assert _forbidden(w, "ConsumeRequest", {"queue": "q"}) == 'no consume permission on queue "q"'
        assert w.call("Ping")[0] == Opcode.PONG  # no ACL on Ping
        w.send_msg("CancelConsume", 1)
        assert w.call("Ping")[0] == Opcode.PONG
    finally:
        w.close()


def test_auth_off_allows_everything(wire: Wire) -> None:
    created = wire.ok("CreateApiKeyRequest", {"name": "n", "expires_at_ms": 0, "is_superadmin": True})
    assert created["is_superadmin"] is True
    assert len(wire.ok("ListApiKeysRequest")["keys"]) == 1
