"""SERVER.md §3.1: TLS and mutual TLS."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

import pytest

from fila.protocol.constants import Opcode
from fila.testing import Broker
from fila.testing import TestPKI
from fila.testing import client_context

from .conftest import Wire


def test_tls(fila_broker_factory: Callable[..., Broker], fila_test_pki: TestPKI) -> None:
    b = fila_broker_factory(tls_cert=fila_test_pki.server_cert, tls_key=fila_test_pki.server_key)
    assert b.tls
    w = Wire(b, ssl_context=client_context(fila_test_pki.ca_cert))
    try:
        assert w.call("Ping")[0] == Opcode.PONG
        assert w.sock.selected_alpn_protocol() is None  # type: ignore[attr-defined]
    finally:
        w.close()


def test_tls_with_pem_bytes_and_alpn(fila_broker_factory: Callable[..., Broker], fila_test_pki: TestPKI) -> None:
    b = fila_broker_factory(
        tls_cert=fila_test_pki.server_cert.read_bytes(), tls_key=fila_test_pki.server_key.read_bytes()
    )
    ctx = client_context(fila_test_pki.ca_cert.read_bytes())
    ctx.set_alpn_protocols(["fila/1"])
    w = Wire(b, ssl_context=ctx)
    try:
        assert w.sock.selected_alpn_protocol() == "fila/1"  # type: ignore[attr-defined]
    finally:
        w.close()


def test_plaintext_client_on_a_tls_port_is_closed(
    fila_broker_factory: Callable[..., Broker], fila_test_pki: TestPKI
) -> None:
    b = fila_broker_factory(tls_cert=fila_test_pki.server_cert, tls_key=fila_test_pki.server_key)
    w = Wire(b, handshake=False)
    try:
        w.send_msg("Handshake", 0, {"protocol_version": 1, "api_key": None})
        w.assert_closed()
    finally:
        w.close()


def test_mtls_requires_a_client_certificate(fila_broker_factory: Callable[..., Broker], fila_test_pki: TestPKI) -> None:
    p = fila_test_pki
    b = fila_broker_factory(tls_cert=p.server_cert, tls_key=p.server_key, tls_ca=p.ca_cert)
    good = Wire(b, ssl_context=client_context(p.ca_cert, p.client_cert, p.client_key))
    try:
        assert good.call("Ping")[0] == Opcode.PONG
    finally:
        good.close()
    for ctx in (client_context(p.ca_cert), client_context(p.ca_cert, p.other_client_cert, p.other_client_key)):
        with pytest.raises((ssl.SSLError, ConnectionError, AssertionError, socket.timeout, OSError)):
            w = Wire(b, ssl_context=ctx)  # TLS 1.3 may report the refusal on the first read
            w.close()


def test_cert_and_key_go_together(fila_test_pki: TestPKI) -> None:
    with pytest.raises(ValueError):
        Broker(tls_cert=fila_test_pki.server_cert)
    with pytest.raises(ValueError):
        Broker(tls_ca=fila_test_pki.ca_cert)
