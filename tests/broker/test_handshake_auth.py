"""SERVER.md §3: the handshake, version check and API-key authentication."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from fila.protocol.constants import ErrorCode
from fila.protocol.constants import Opcode
from fila.protocol.messages import decode_body
from fila.protocol.messages import encode_message
from fila.testing import Broker

from .conftest import Wire


def test_handshake_ok_bytes_match_the_server(connect: Callable[..., Wire]) -> None:
    w = connect(handshake=False)
    w.send(bytes.fromhex("00000009 01 00 00000000 0001 00".replace(" ", "")))
    f = w.recv_frame()
    raw = bytes.fromhex("00000014 02 00 00000000 0001 0000000000000000 01000000".replace(" ", ""))
    assert (f.opcode, f.flags, f.request_id, f.payload) == (0x02, 0, 0, raw[10:])


def test_handshake_ok_uses_request_id_zero_whatever_the_client_sent(connect: Callable[..., Wire]) -> None:
    w = connect(handshake=False)
    w.send_msg("Handshake", 77, {"protocol_version": 1, "api_key": None})
    f = w.recv_frame()
    assert f.opcode == Opcode.HANDSHAKE_OK and f.request_id == 0


@pytest.mark.parametrize("version", [0, 2, 65535])
def test_other_versions_are_refused_with_exact_bytes_then_closed(connect: Callable[..., Wire], version: int) -> None:
    w = connect(handshake=False)
    w.send_msg("Handshake", 5, {"protocol_version": version, "api_key": None})
    frames = w.assert_closed()
    expected = bytes.fromhex("0000003ffe00000000000d0024") + b"only protocol version 1 is supported"
    expected += bytes.fromhex("0001000b") + b"max_version" + bytes.fromhex("0001") + b"1"
    assert len(frames) == 1
    f = frames[0]
    assert encode_message(f.opcode, f.request_id, decode_body(f.opcode, f.payload)) == expected


def test_first_frame_not_a_handshake_gets_invalid_frame_with_its_request_id(connect: Callable[..., Wire]) -> None:
    w = connect(handshake=False)
    w.send_msg("Ping", 9)
    (f,) = w.assert_closed()
    assert f.opcode == Opcode.ERROR and f.request_id == 9
    assert decode_body(f.opcode, f.payload) == {
        "error_code": ErrorCode.INVALID_FRAME,
        "message": "expected Handshake frame",
        "metadata": {},
    }


def test_undecodable_handshake_is_closed_without_a_frame(connect: Callable[..., Wire]) -> None:
    w = connect(handshake=False)
    w.send(bytes.fromhex("00000007 01 00 00000000 00".replace(" ", "")))  # u16 version cut short
    assert w.assert_closed() == []


def test_oversize_handshake_is_closed_without_a_frame(connect: Callable[..., Wire]) -> None:
    w = connect(handshake=False)
    w.send(bytes.fromhex("01000001"))
    assert w.assert_closed() == []


def test_handshake_flags_are_ignored(connect: Callable[..., Wire]) -> None:
    w = connect(handshake=False)
    w.send(bytes.fromhex("00000009 01 01 00000000 0001 00".replace(" ", "")))
    assert w.recv_frame().opcode == Opcode.HANDSHAKE_OK


def test_requests_pipelined_behind_the_handshake_are_served(connect: Callable[..., Wire]) -> None:
    w = connect(handshake=False)
    w.send(encode_message("Handshake", 0, {"protocol_version": 1, "api_key": None}) + encode_message("Ping", 4))
    assert w.recv_frame().opcode == Opcode.HANDSHAKE_OK
    f = w.recv_frame()
    assert (f.opcode, f.request_id) == (Opcode.PONG, 4)


def test_auth_off_ignores_a_supplied_key(connect: Callable[..., Wire]) -> None:
    w = connect(api_key="anything")
    assert w.handshake_ok is not None


def test_node_id_in_handshake_ok(fila_broker_factory: Callable[..., Broker]) -> None:
    b = fila_broker_factory(node_id=7)
    w = Wire(b)
    try:
        assert w.handshake_ok == {"negotiated_version": 1, "node_id": 7, "max_frame_size": 16777216}
    finally:
        w.close()


class TestAuth:
    @pytest.fixture
    def secure(self, fila_broker_factory: Callable[..., Broker]) -> Broker:
        return fila_broker_factory(api_key="boot")

    def _refused(self, b: Broker, key: str | None) -> dict[str, object]:
        w = Wire(b, handshake=False)
        try:
            w.send_msg("Handshake", 3, {"protocol_version": 1, "api_key": key})
            (f,) = w.assert_closed()
            assert f.opcode == Opcode.ERROR and f.request_id == 0
            return decode_body(f.opcode, f.payload)
        finally:
            w.close()

    def test_missing_key(self, secure: Broker) -> None:
        body = self._refused(secure, None)
        assert (body["error_code"], body["message"]) == (ErrorCode.UNAUTHORIZED, "API key required")

    def test_unknown_key(self, secure: Broker) -> None:
        body = self._refused(secure, "nope")
        assert (body["error_code"], body["message"]) == (ErrorCode.UNAUTHORIZED, "invalid API key")

    def test_bootstrap_key_is_superadmin(self, secure: Broker) -> None:
        w = Wire(secure, api_key="boot")
        try:
            w.create_queue("q")
            assert w.ok("ListApiKeysRequest")["keys"] == []  # never listed
        finally:
            w.close()

    def test_stored_key_authenticates_and_expired_key_does_not(self, secure: Broker) -> None:
        w = Wire(secure, api_key="boot")
        try:
            key = w.ok("CreateApiKeyRequest", {"name": "a", "expires_at_ms": 0, "is_superadmin": False})
            assert len(key["key"]) == 32 and key["key"] == key["key"].lower()
            assert len(key["key_id"]) == 36
            past = w.ok(
                "CreateApiKeyRequest",
                {"name": "old", "expires_at_ms": int(time.time() * 1000) - 1000, "is_superadmin": False},
            )
        finally:
            w.close()
        ok = Wire(secure, api_key=key["key"])
        ok.close()
        body = self._refused(secure, past["key"])
        assert body["message"] == "invalid API key"

    def test_revoked_key_can_no_longer_handshake(self, secure: Broker) -> None:
        key_id, token = secure.create_api_key("x")
        assert secure.revoke_api_key(key_id)
        assert self._refused(secure, token)["message"] == "invalid API key"
