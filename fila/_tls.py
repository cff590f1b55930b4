"""TLS client contexts from PEM given in memory.

``ssl`` can only load a certificate chain from a file path, so the client
certificate and its private key are handed to it through an anonymous
in-memory file (``memfd`` on Linux, read via ``/proc/self/fd``); elsewhere
through a 0600 temporary file that is deleted right after loading. The key
never stays on disk.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
import tempfile

__all__ = ["make_ssl_context"]

log = logging.getLogger("fila")

PemInput = bytes | bytearray | str | os.PathLike[str]

ALPN_PROTOCOL = "fila/1"


def _pem(value: PemInput, what: str) -> bytes:
    if isinstance(value, os.PathLike):
        try:
            with open(value, "rb") as f:
                value = f.read()
        except OSError as exc:
            raise ValueError(f"{what}: cannot read {os.fspath(value)!r}: {exc.strerror}") from None
    if isinstance(value, str):
        value = value.encode("ascii", "strict")
    elif isinstance(value, bytearray):
        value = bytes(value)
    elif not isinstance(value, bytes):
        raise TypeError(f"{what} must be PEM bytes (or str, or a path to a PEM file), got {type(value).__name__}")
    if b"-----BEGIN" not in value:
        raise ValueError(f"{what} does not look like PEM (no '-----BEGIN' line)")
    return value


def make_ssl_context(
    tls: bool,
    ca_cert: PemInput | None = None,
    client_cert: PemInput | None = None,
    client_key: PemInput | None = None,
) -> ssl.SSLContext | None:
    """The client context, or ``None`` for plain TCP.

    TLS is on when ``tls`` is true or ``ca_cert`` is given. Without ``ca_cert``
    the system trust store is used. Hostname verification is always on.
    """
    if (client_cert is not None or client_key is not None) and not (tls or ca_cert is not None):
        raise ValueError("client_cert and client_key require ca_cert or tls=True")
    if (client_cert is None) != (client_key is None):
        given, missing = ("client_cert", "client_key") if client_key is None else ("client_key", "client_cert")
        raise ValueError(f"{given} was given without {missing}: mTLS needs both the certificate and its key")
    if not (tls or ca_cert is not None):
        return None
    if ca_cert is not None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=_pem(ca_cert, "ca_cert").decode("ascii"))
    else:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.set_alpn_protocols([ALPN_PROTOCOL])
    except NotImplementedError:  # pragma: no cover - OpenSSL without ALPN
        pass
    if client_cert is not None and client_key is not None:
        _load_chain(ctx, _pem(client_cert, "client_cert"), _pem(client_key, "client_key"))
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    data = cert.rstrip(b"\n") + b"\n" + key
    try:
        if sys.platform.startswith("linux") and hasattr(os, "memfd_create"):
            _load_via_memfd(ctx, data)
        else:
            _load_via_tempfile(ctx, data)
    except ssl.SSLError as exc:
        raise ValueError(f"client_cert / client_key could not be loaded (do they match?): {exc}") from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _load_via_memfd(ctx: ssl.SSLContext, data: bytes) -> None:
    fd = os.memfd_create("fila-tls", getattr(os, "MFD_CLOEXEC", 0))
    try:
        _write_all(fd, data)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _load_via_tempfile(ctx: ssl.SSLContext, data: bytes) -> None:
    fd, path = tempfile.mkstemp(prefix="fila-tls-", suffix=".pem")  # created 0600
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        ctx.load_cert_chain(path)
    finally:
        try:
            os.unlink(path)
        except OSError:  # pragma: no cover
            log.warning("could not remove the temporary key file %s", path)
