"""Request handlers: decode, check the ACL, act on the scheduler, answer.

One method per opcode, each following SERVER.md §6: decoding happens before
the ACL check; whole-request failures are Error frames, per-item problems go
in the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any

from ..errors import DecodeError
from ..errors import EncodeError
from ..protocol.constants import ErrorCode
from ..protocol.constants import Opcode
from ..protocol.messages import decode_body
from ..protocol.messages import encode_message
from ..protocol.pure import Frame
from ..protocol.pure import decode_ack
from ..protocol.pure import decode_enqueue
from ..protocol.pure import decode_nack
from ..protocol.pure import encode_ack_result
from ..protocol.pure import encode_enqueue_result
from ..protocol.pure import encode_nack_result
from .auth import PERMISSION_KINDS
from .scheduler import CommandFailed

if TYPE_CHECKING:
    from .broker import Broker
    from .connection import Connection

__all__ = ["Handlers"]

NO_ADMIN = "key does not have admin permission"

Handler = Callable[["Connection", int, bytes], None]


class Handlers:
    """The opcode table of one broker."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.scheduler = broker.scheduler
        self.auth = broker.auth
        self.faults = broker.faults
        self.table: dict[int, Handler] = {
            Opcode.PING: self.ping,
            Opcode.DISCONNECT: self.disconnect,
            Opcode.CANCEL_CONSUME: self.cancel_consume,
            Opcode.ENQUEUE: self.enqueue,
            Opcode.CONSUME: self.consume,
            Opcode.ACK: self.ack,
            Opcode.NACK: self.nack,
            Opcode.CREATE_QUEUE: self.create_queue,
            Opcode.DELETE_QUEUE: self.delete_queue,
            Opcode.GET_STATS: self.get_stats,
            Opcode.LIST_QUEUES: self.list_queues,
            Opcode.SET_CONFIG: self.set_config,
            Opcode.GET_CONFIG: self.get_config,
            Opcode.LIST_CONFIG: self.list_config,
            Opcode.REDRIVE: self.redrive,
            Opcode.CREATE_API_KEY: self.create_api_key,
            Opcode.REVOKE_API_KEY: self.revoke_api_key,
            Opcode.LIST_API_KEYS: self.list_api_keys,
            Opcode.SET_ACL: self.set_acl,
            Opcode.GET_ACL: self.get_acl,
        }

    def dispatch(self, conn: Connection, frame: Frame) -> None:
        opcode = frame.opcode
        handler = self.table.get(opcode)
        if handler is None:
            conn.send_error(frame.request_id, ErrorCode.INVALID_FRAME, f"unknown or unsupported opcode: 0x{opcode:02x}")
            return
        if self.faults.request_armed:
            injected = self.faults.take_failure(opcode)
            if injected is not None:
                conn.send_error(frame.request_id, injected[0], injected[1], injected[2])
                return
        handler(conn, frame.request_id, frame.payload)

    # ------------------------------------------------------------ helpers

    def _decode(self, conn: Connection, rid: int, op: str, opcode: int, payload: bytes) -> dict[str, Any] | None:
        try:
            return decode_body(opcode, payload)
        except DecodeError as exc:
            conn.send_error(rid, ErrorCode.INVALID_FRAME, f"invalid {op} frame: {exc.detail}")
            return None

    def _batch(
        self,
        conn: Connection,
        rid: int,
        payload: bytes,
        op: str,
        kind: str,
        decode: Callable[[bytes], list[Any]],
        run: Callable[[list[Any]], list[Any]],
        encode: Callable[[int, list[Any]], bytes],
        opcode: int,
    ) -> None:
        """Enqueue, Ack and Nack: decode the items, check ``kind`` on each queue, run, answer."""
        try:
            items = decode(payload)
        except DecodeError as exc:
            conn.send_error(rid, ErrorCode.INVALID_FRAME, f"invalid {op} frame: {exc.detail}")
            return
        if not self._check_each(conn, rid, kind, [item[0] for item in items]):
            return
        try:
            results = run(items)
        except CommandFailed as exc:
            conn.send_error(rid, exc.code, exc.message)
            return
        conn.send(encode(rid, results), opcode)

    def _reply(self, conn: Connection, opcode: int, rid: int, fields: dict[str, Any]) -> None:
        try:
            frame = encode_message(opcode, rid, fields)
        except EncodeError:
            # A string over 65,535 bytes (a DLQ name of a queue named with 65,532+ bytes):
            # the server's encoder panics and the connection task dies, with no frame.
            conn.abort()
            return
        conn.send(frame, opcode)

    def _global_admin(self, conn: Connection, rid: int) -> bool:
        if self.auth.global_admin(conn.identity):
            return True
        conn.send_error(rid, ErrorCode.FORBIDDEN, NO_ADMIN)
        return False

    def _any_admin(self, conn: Connection, rid: int) -> bool:
        if self.auth.any_admin(conn.identity):
            return True
        conn.send_error(rid, ErrorCode.FORBIDDEN, NO_ADMIN)
        return False

    def _queue_admin(self, conn: Connection, rid: int, queue: str) -> bool:
        if not self._any_admin(conn, rid):
            return False
        if not self.auth.allowed(conn.identity, "admin", queue):
            conn.send_error(rid, ErrorCode.FORBIDDEN, f'no admin permission on queue "{queue}"')
            return False
        return True

    def _check_each(self, conn: Connection, rid: int, kind: str, queues: list[str]) -> bool:
        auth = self.auth
        if not auth.enabled:
            return True
        seen: set[str] = set()
        for q in queues:
            if q in seen:
                continue
            seen.add(q)
            if not auth.allowed(conn.identity, kind, q):
                conn.send_error(rid, ErrorCode.FORBIDDEN, f'no {kind} permission on queue "{q}"')
                return False
        return True

    # ------------------------------------------------------------ control

    def ping(self, conn: Connection, rid: int, payload: bytes) -> None:
        conn.send(encode_message(Opcode.PONG, rid), Opcode.PONG)

    def disconnect(self, conn: Connection, rid: int, payload: bytes) -> None:
        conn.close()

    def cancel_consume(self, conn: Connection, rid: int, payload: bytes) -> None:
        sub = conn.subscription
        if sub is not None and sub.request_id == rid:
            conn.unsubscribe()

    # ----------------------------------------------------------- hot path

    def enqueue(self, conn: Connection, rid: int, payload: bytes) -> None:
        self._batch(
            conn, rid, payload, "enqueue", "produce",
            decode_enqueue, self.scheduler.enqueue, encode_enqueue_result, Opcode.ENQUEUE_RESULT,
        )  # fmt: skip

    def consume(self, conn: Connection, rid: int, payload: bytes) -> None:
        body = self._decode(conn, rid, "consume", Opcode.CONSUME, payload)
        if body is None:
            return
        queue = body["queue"]
        if not self.auth.allowed(conn.identity, "consume", queue):
            conn.send_error(rid, ErrorCode.FORBIDDEN, f'no consume permission on queue "{queue}"')
            return
        refusal = self.consume_refusal(queue)
        if refusal is not None:
            conn.send_error(rid, *refusal)
            return
        conn.unsubscribe()
        # Register first (for the consumer id); deliveries it triggers are
        # queued and written after ConsumeOk.
        consumer = self.scheduler.register(conn, rid, queue)
        conn.subscription = consumer
        conn.send(encode_message(Opcode.CONSUME_OK, rid, {"consumer_id": consumer.consumer_id}), Opcode.CONSUME_OK)

    def consume_refusal(self, queue: str) -> tuple[int, str, dict[str, str] | None] | None:
        """``(code, message, metadata)`` of the Error frame refusing a Consume of ``queue``, or None.

        Here only injected NotLeader (``faults.not_leader``); a cluster node adds its leadership rules.
        """
        refuse, leader = self.faults.redirect_for(queue)
        if refuse:
            return ErrorCode.NOT_LEADER, "not the leader for this queue", {"leader_addr": leader} if leader else None
        return None

    def ack(self, conn: Connection, rid: int, payload: bytes) -> None:
        self._batch(
            conn, rid, payload, "ack", "consume",
            decode_ack, self.scheduler.ack, encode_ack_result, Opcode.ACK_RESULT,
        )  # fmt: skip

    def nack(self, conn: Connection, rid: int, payload: bytes) -> None:
        self._batch(
            conn, rid, payload, "nack", "consume",
            decode_nack, self.scheduler.nack, encode_nack_result, Opcode.NACK_RESULT,
        )  # fmt: skip

    # -------------------------------------------------------------- admin

    def create_queue(self, conn: Connection, rid: int, payload: bytes) -> None:
        body = self._decode(conn, rid, "create_queue", Opcode.CREATE_QUEUE, payload)
        if body is None or not self._queue_admin(conn, rid, body["name"]):
            return
        code, text = self.scheduler.create_queue(
            body["name"], body["on_enqueue_script"], body["on_failure_script"], body["visibility_timeout_ms"]
        )
        self._reply(conn, Opcode.CREATE_QUEUE_RESULT, rid, {"error_code": code, "queue_id": text})

    def delete_queue(self, conn: Connection, rid: int, payload: bytes) -> None:
        body = self._decode(conn, rid, "delete_queue", Opcode.DELETE_QUEUE, payload)
        if body is None or not self._queue_admin(conn, rid, body["queue"]):
            return
        code = self.scheduler.delete_queue(body["queue"])
        self._reply(conn, Opcode.DELETE_QUEUE_RESULT, rid, {"error_code": code})

    def get_stats(self, conn: Connection, rid: int, payload: bytes) -> None:
        body = self._decode(conn, rid, "get_stats", Opcode.GET_STATS, payload)
        if body is None or not self._global_admin(conn, rid):
            return
        stats = self.scheduler.stats(body["queue"])
        if stats is None:
            conn.send_error(rid, ErrorCode.QUEUE_NOT_FOUND, "queue not found")
            return
        node = self.broker.node_id
        if node:
            stats["leader_node_id"] = node
            stats["replication_count"] = 1
        self._reply(conn, Opcode.GET_STATS_RESULT, rid, stats)

    def list_queues(self, conn: Connection, rid: int, payload: bytes) -> None:
        if not self._global_admin(conn, rid):
            return
        queues = self.scheduler.list_queues()
        node = self.broker.node_id
        if node:
            for q in queues:
                q["leader_node_id"] = node
        self._reply(
            conn,
            Opcode.LIST_QUEUES_RESULT,
            rid,
            {"error_code": 0, "cluster_node_count": 1 if node else 0, "queues": queues},
        )

    def set_config(self, conn: Connection, rid: int, payload: bytes) -> None:
        body = self._decode(conn, rid, "set_config", Opcode.SET_CONFIG, payload)
        if body is None or not self._global_admin(conn, rid):
            return
        code = self.scheduler.set_config(body["key"], body["value"])
        self._reply(conn, Opcode.SET_CONFIG_RESULT, rid, {"error_code": code})

    def get_config(self, conn: Connection, rid: int, payload: bytes) -> None:
        body = self._decode(conn, rid, "get_config", Opcode.GET_CONFIG, payload)
        if body is None or not self._global_admin(conn, rid):
            return
        value = self.scheduler.config.get(body["key"], "")
        self._reply(conn, Opcode.GET_CONFIG_RESULT, rid, {"error_code": 0, "value": value})

    def list_config(self, conn: Connection, rid: int, payload: bytes) -> None:
        body = self._decode(conn, rid, "list_config", Opcode.LIST_CONFIG, payload)
        if body is None or not self._global_admin(conn, rid):
            return
        entries = self.scheduler.list_config(body["prefix"])
        self._reply(conn, Opcode.LIST_CONFIG_RESULT, rid, {"error_code": 0, "entries": entries})

    def redrive(self, conn: Connection, rid: int, payload: bytes) -> None:
        body = self._decode(conn, rid, "redrive", Opcode.REDRIVE, payload)
        if body is None or not self._global_admin(conn, rid):
            return
        code, message, moved = self.scheduler.redrive(body["dlq_queue"], body["count"])
        if code:
            conn.send_error(rid, code, message)
            return
        self._reply(conn, Opcode.REDRIVE_RESULT, rid, {"error_code": 0, "redriven": moved})

    # --------------------------------------------------------------- auth

    def create_api_key(self, conn: Connection, rid: int, payload: bytes) -> None:
        body = self._decode(conn, rid, "create_api_key", Opcode.CREATE_API_KEY, payload)
        if body is None or not self._any_admin(conn, rid):
            return
        auth = self.auth
        if body["is_superadmin"] and not auth.is_superadmin(conn.identity):
            conn.send_error(rid, ErrorCode.FORBIDDEN, "only superadmin keys can create other superadmin keys")
            return
        key, token = auth.create(body["name"], body["expires_at_ms"], body["is_superadmin"])
        self._reply(
            conn,
            Opcode.CREATE_API_KEY_RESULT,
            rid,
            {"error_code": 0, "key_id": key.key_id, "key": token, "is_superadmin": key.is_superadmin},
        )

    def revoke_api_key(self, conn: Connection, rid: int, payload: bytes) -> None:
        body = self._decode(conn, rid, "revoke_api_key", Opcode.REVOKE_API_KEY, payload)
        if body is None or not self._global_admin(conn, rid):
            return
        found = self.auth.revoke(body["key_id"])
        code = ErrorCode.OK if found else ErrorCode.API_KEY_NOT_FOUND
        self._reply(conn, Opcode.REVOKE_API_KEY_RESULT, rid, {"error_code": code})

    def list_api_keys(self, conn: Connection, rid: int, payload: bytes) -> None:
        if not self._global_admin(conn, rid):
            return
        keys = [
            {
                "key_id": k.key_id,
                "name": k.name,
                "created_at_ms": k.created_at_ms,
                "expires_at_ms": k.expires_at_ms,
                "is_superadmin": k.is_superadmin,
            }
            for k in self.auth.listed()
        ][:0xFFFF]
        self._reply(conn, Opcode.LIST_API_KEYS_RESULT, rid, {"error_code": 0, "keys": keys})

    def set_acl(self, conn: Connection, rid: int, payload: bytes) -> None:
        body = self._decode(conn, rid, "set_acl", Opcode.SET_ACL, payload)
        if body is None or not self._any_admin(conn, rid):
            return
        auth = self.auth
        perms = [(p["kind"], p["pattern"]) for p in body["permissions"]]
        if not auth.can_grant(conn.identity, [pattern for _, pattern in perms]):
            conn.send_error(rid, ErrorCode.FORBIDDEN, "one or more permissions exceed the caller's admin scope")
            return
        for kind, _ in perms:
            if kind not in PERMISSION_KINDS:
                conn.send_error(
                    rid,
                    ErrorCode.INVALID_CONFIG_VALUE,
                    f'invalid permission kind "{kind}": expected produce, consume, or admin',
                )
                return
        key = auth.keys.get(body["key_id"])
        if key is None:
            code = ErrorCode.API_KEY_NOT_FOUND
        else:
            key.permissions = perms
            code = ErrorCode.OK
        self._reply(conn, Opcode.SET_ACL_RESULT, rid, {"error_code": code})

    def get_acl(self, conn: Connection, rid: int, payload: bytes) -> None:
        body = self._decode(conn, rid, "get_acl", Opcode.GET_ACL, payload)
        if body is None or not self._global_admin(conn, rid):
            return
        key = self.auth.keys.get(body["key_id"])
        if key is None:
            fields = {
                "error_code": ErrorCode.API_KEY_NOT_FOUND,
                "key_id": body["key_id"],
                "is_superadmin": False,
                "permissions": [],
            }
        else:
            fields = {
                "error_code": 0,
                "key_id": key.key_id,
                "is_superadmin": key.is_superadmin,
                "permissions": [{"kind": k, "pattern": p} for k, p in key.permissions],
            }
        self._reply(conn, Opcode.GET_ACL_RESULT, rid, fields)
