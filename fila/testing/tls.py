"""TLS for the broker (standard ``ssl``), and test certificates.

:func:`server_context` builds the listener's context: TLS 1.2+, ALPN
``fila/1`` offered but not required, client certificates required when a CA
is given (mTLS). Certificates and keys may be file paths or PEM bytes.

:func:`make_test_pki` writes a throwaway CA, a server certificate for
``127.0.0.1``/``localhost`` and a client certificate, and returns their paths
and PEM bytes; it needs the ``cryptography`` package (a test-time dependency
only).
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Union

__all__ = ["PemSource", "TestPKI", "client_context", "make_test_pki", "server_context"]

PemSource = Union[str, "os.PathLike[str]", bytes]  # a file path, or PEM bytes
ALPN = "fila/1"


def _as_path(source: PemSource, stack: list[str]) -> str:
    if isinstance(source, bytes):
        fd, path = tempfile.mkstemp(suffix=".pem")
        with os.fdopen(fd, "wb") as f:
            f.write(source)
        stack.append(path)
        return path
    return os.fspath(source)


def server_context(cert: PemSource, key: PemSource, ca: PemSource | None = None) -> ssl.SSLContext:
    """The broker's TLS context; ``ca`` set → client certificates are required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    temps: list[str] = []
    try:
        ctx.load_cert_chain(_as_path(cert, temps), _as_path(key, temps))
        if ca is not None:
            if isinstance(ca, bytes):
                ctx.load_verify_locations(cadata=ca.decode("ascii"))
            else:
                ctx.load_verify_locations(cafile=os.fspath(ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
    finally:
        for path in temps:
            os.unlink(path)
    ctx.set_alpn_protocols([ALPN])
    return ctx


def client_context(ca: PemSource, cert: PemSource | None = None, key: PemSource | None = None) -> ssl.SSLContext:
    """A client context trusting ``ca`` (and presenting ``cert``/``key`` for mTLS)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if isinstance(ca, bytes):
        ctx.load_verify_locations(cadata=ca.decode("ascii"))
    else:
        ctx.load_verify_locations(cafile=os.fspath(ca))
    if cert is not None:
        temps: list[str] = []
        try:
            ctx.load_cert_chain(_as_path(cert, temps), None if key is None else _as_path(key, temps))
        finally:
            for path in temps:
                os.unlink(path)
    return ctx


@dataclass(frozen=True)
class TestPKI:
    """A throwaway PKI: each PEM file's path, and the same PEM as bytes.

    The paths suit :class:`~fila.testing.Broker` (which takes paths or bytes);
    the ``*_pem`` bytes are what :class:`fila.Client` takes::

        Broker(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca_cert)
        Client(addr, ca_cert=pki.ca_cert_pem, client_cert=pki.client_cert_pem, client_key=pki.client_key_pem)
    """

    __test__ = False  # not a pytest test class

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path
    other_client_cert: Path
    other_client_key: Path
    ca_cert_pem: bytes = b""
    server_cert_pem: bytes = b""
    server_key_pem: bytes = b""
    client_cert_pem: bytes = b""
    client_key_pem: bytes = b""
    other_ca_cert_pem: bytes = b""
    other_client_cert_pem: bytes = b""
    other_client_key_pem: bytes = b""

    def __repr__(self) -> str:  # the keys' bytes stay out of logs and test reports
        return f"TestPKI(directory={str(self.ca_cert.parent)!r})"


def make_test_pki(directory: str | os.PathLike[str]) -> TestPKI:
    """Write a CA, a server cert (127.0.0.1, localhost, ::1) and a client cert.

    Also writes a second, unrelated CA with a client certificate it signed,
    for testing that mTLS refuses strangers. Returns each file's path and its
    PEM bytes (:class:`TestPKI`). Needs ``cryptography``.
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID
        from cryptography.x509.oid import NameOID
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("make_test_pki needs the 'cryptography' package (pip install cryptography)") from exc
    import ipaddress

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)

    def key_pair() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def cert_pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def make_ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = key_pair()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def make_leaf(
        ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, cn: str, server: bool
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = key_pair()
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("::1")),
                    ]
                ),
                critical=False,
            )
        return key, builder.sign(ca_key, hashes.SHA256())

    ca_key, ca_cert = make_ca("fila test CA")
    server_key, server_cert = make_leaf(ca_key, ca_cert, "localhost", True)
    client_key, client_cert = make_leaf(ca_key, ca_cert, "fila test client", False)
    other_key, other_cert = make_ca("unrelated CA")
    stranger_key, stranger_cert = make_leaf(other_key, other_cert, "stranger", False)

    pem = {
        "ca_cert": cert_pem(ca_cert),
        "server_cert": cert_pem(server_cert),
        "server_key": key_pem(server_key),
        "client_cert": cert_pem(client_cert),
        "client_key": key_pem(client_key),
        "other_ca_cert": cert_pem(other_cert),
        "other_client_cert": cert_pem(stranger_cert),
        "other_client_key": key_pem(stranger_key),
    }
    paths = {
        "ca_cert": out / "ca.pem",
        "server_cert": out / "server.pem",
        "server_key": out / "server.key",
        "client_cert": out / "client.pem",
        "client_key": out / "client.key",
        "other_ca_cert": out / "other-ca.pem",
        "other_client_cert": out / "stranger.pem",
        "other_client_key": out / "stranger.key",
    }
    for field, path in paths.items():
        path.write_bytes(pem[field])
    return TestPKI(
        ca_cert=paths["ca_cert"],
        server_cert=paths["server_cert"],
        server_key=paths["server_key"],
        client_cert=paths["client_cert"],
        client_key=paths["client_key"],
        other_ca_cert=paths["other_ca_cert"],
        other_client_cert=paths["other_client_cert"],
        other_client_key=paths["other_client_key"],
        ca_cert_pem=pem["ca_cert"],
        server_cert_pem=pem["server_cert"],
        server_key_pem=pem["server_key"],
        client_cert_pem=pem["client_cert"],
        client_key_pem=pem["client_key"],
        other_ca_cert_pem=pem["other_ca_cert"],
        other_client_cert_pem=pem["other_client_cert"],
        other_client_key_pem=pem["other_client_key"],
    )
