"""Settings and parse_address: where and how to connect, and the API key kept out of sight."""

from __future__ import annotations

import ssl

import pytest

from fila._core import Settings
from fila._core import format_address
from fila._core import parse_address
from fila.protocol import Opcode
from fila.protocol.messages import decode_body

from .helpers import one_frame

SECRET = "s3cr3t-api-key"


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("localhost:5555", ("localhost", 5555)),
        ("10.0.0.1:7000", ("10.0.0.1", 7000)),
        (" host:1 ", ("host", 1)),
        ("[::1]:6000", ("::1", 6000)),
        ("[fe80::1%eth0]:65535", ("fe80::1%eth0", 65535)),
    ],
)
def test_parse_address(addr: str, expected: tuple[str, int]) -> None:
    assert parse_address(addr) == expected


@pytest.mark.parametrize(
    "addr",
    ["", "example.com", "host:notaport", "host:0", "host:70000", "host:", "[::1", "[::1]", "[::1]x", ":5555"],
)
def test_parse_address_rejects(addr: str) -> None:
    with pytest.raises(ValueError, match="invalid address"):
        parse_address(addr)


def test_parse_address_wants_a_str() -> None:
    with pytest.raises(TypeError):
        parse_address(("localhost", 5555))  # type: ignore[arg-type]


def test_format_address_round_trips() -> None:
    for host, port in (("localhost", 1), ("::1", 5555)):
        assert parse_address(format_address(host, port)) == (host, port)


def test_repr_hides_the_api_key() -> None:
    s = Settings("h:1", api_key=SECRET)
    assert SECRET not in repr(s) and "api_key=<set>" in repr(s)
    assert "api_key=None" in repr(Settings("h:1"))
    with pytest.raises(AttributeError):
        s.__dict__  # noqa: B018  (slots only: the key cannot leak through vars())
    r = s.redirected("other:2")
    assert SECRET not in repr(r) and r.address == "other:2"


def test_handshake_frame_carries_the_key_once() -> None:
    f = one_frame(Settings("h:1", api_key=SECRET).handshake_frame())
    assert (f.opcode, f.request_id) == (Opcode.HANDSHAKE, 0)
    assert decode_body("Handshake", f.payload) == {"protocol_version": 1, "api_key": SECRET}
    f = one_frame(Settings("h:1").handshake_frame())
    assert decode_body("Handshake", f.payload) == {"protocol_version": 1, "api_key": None}


def test_redirected_keeps_everything_but_the_address() -> None:
    ctx = ssl.create_default_context()
    s = Settings("a.example:1", api_key=SECRET, ssl_context=ctx, request_timeout=3, consumer_buffer=7)
    r = s.redirected("b.example:2")
    assert (r.host, r.port, r.server_hostname) == ("b.example", 2, "b.example")
    assert r.ssl_context is ctx and r.request_timeout == 3 and r.consumer_buffer == 7
    assert r.handshake_frame() == s.handshake_frame()
    assert (s.host, s.port, s.server_hostname) == ("a.example", 1, "a.example")  # the original is unchanged
    with pytest.raises(ValueError):
        s.redirected("garbage")


@pytest.mark.parametrize(
    "kw",
    [
        {"connect_timeout": 0},
        {"request_timeout": -1},
        {"keepalive_timeout": 0},
        {"keepalive_interval": 0},
        {"keepalive_interval": True},  # a bool is not a number of seconds
        {"keepalive_interval": "5"},  # a ValueError like every other timeout, not a raw TypeError
        {"leader_check_interval": 0},
        {"leader_check_interval": "2"},
        {"resubscribe_attempts": 0},
        {"reconnect_initial": 0},
        {"reconnect_max": -1},
        {"request_timeout": True},
        {"consumer_buffer": 0},
        {"consumer_buffer": True},
    ],
    ids=repr,
)
def test_bad_settings_are_refused(kw: dict) -> None:
    with pytest.raises(ValueError):
        Settings("h:1", **kw)


def test_api_key_must_be_a_str() -> None:
    with pytest.raises(TypeError):
        Settings("h:1", api_key=b"bytes")  # type: ignore[arg-type]


def test_keepalive_and_leader_checks_can_be_turned_off() -> None:
    s = Settings("h:1", keepalive_interval=None, leader_check_interval=None)
    assert s.keepalive_interval is None and s.leader_check_interval is None


def test_several_addresses() -> None:
    s = Settings("a:1, b:2")
    assert s.nodes == ("a:1", "b:2") and (s.host, s.port) == ("a", 1)
    assert Settings(["[::1]:5", "c:3"]).nodes == ("[::1]:5", "c:3")
    with pytest.raises(TypeError):
        Settings([])
