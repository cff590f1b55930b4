"""Global flags against brokers with API-key auth, TLS and mTLS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import one_line_error
from cli_helpers import run_cli

from fila.cli import EXIT_CONNECTION
from fila.cli import EXIT_SERVER
from fila.testing import Broker
from fila.testing import TestPKI

ROOT_KEY = "cli-root-key"


@pytest.fixture(scope="module")
def auth_broker() -> Iterator[Broker]:
    b = Broker(api_key=ROOT_KEY)
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    pytest.importorskip("cryptography", reason="the test PKI needs the cryptography package")
    from fila.testing import make_test_pki

    return make_test_pki(tmp_path_factory.mktemp("cli-pki"))


@pytest.fixture(scope="module")
def tls_broker(pki: TestPKI) -> Iterator[Broker]:
    b = Broker(tls_cert=pki.server_cert, tls_key=pki.server_key)
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def mtls_broker(pki: TestPKI) -> Iterator[Broker]:
    b = Broker(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca_cert)
    b.start()
    yield b
    b.stop()


def test_api_key_from_the_flag_or_the_environment(auth_broker: Broker) -> None:
    proc = run_cli("--addr", auth_broker.address, "queue", "list")
    one_line_error(proc, EXIT_SERVER, "UnauthorizedError")
    proc = run_cli("--addr", auth_broker.address, "--api-key", "wrong", "queue", "list")
    one_line_error(proc, EXIT_SERVER, "UnauthorizedError")
    proc = run_cli("queue", "create", "secured", "--addr", auth_broker.address, "--api-key", ROOT_KEY)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("--addr", auth_broker.address, "queue", "list", "--json", env={"FILA_API_KEY": ROOT_KEY})
    assert proc.returncode == 0, proc.stderr
    assert "secured" in {q["name"] for q in json.loads(proc.stdout)["queues"]}


def test_a_scoped_key_is_forbidden_outside_its_acl(auth_broker: Broker) -> None:
    env = {"FILA_API_KEY": ROOT_KEY, "FILA_ADDR": auth_broker.address}
    created = json.loads(run_cli("auth", "create", "--name", "producer", "--json", env=env).stdout)
    proc = run_cli("auth", "acl", "set", created["key_id"], "--perm", "produce:secured", env=env)
    assert proc.returncode == 0, proc.stderr
    scoped = {"FILA_API_KEY": created["token"], "FILA_ADDR": auth_broker.address}
    proc = run_cli("enqueue", "secured", "--data", "ok", env=scoped)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("queue", "delete", "secured", env=scoped)
    one_line_error(proc, EXIT_SERVER, "ForbiddenError")


def test_bench_with_an_api_key(auth_broker: Broker) -> None:
    args = ["--messages", "300", "--latency-messages", "10", "--json"]
    proc = run_cli("bench", "--addr", auth_broker.address, "--api-key", ROOT_KEY, *args, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["consume"]["messages"] == 300


def test_tls_with_a_ca_certificate(tls_broker: Broker, pki: TestPKI) -> None:
    proc = run_cli("--addr", tls_broker.address, "--tls-ca-cert", str(pki.ca_cert), "queue", "create", "tq")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("queue", "list", "--addr", tls_broker.address, "--tls-ca-cert", str(pki.ca_cert))
    assert proc.returncode == 0 and "tq" in proc.stdout, proc.stderr


def test_tls_failures_are_connection_failures(tls_broker: Broker, pki: TestPKI) -> None:
    # the system trust store does not know the test CA
    one_line_error(run_cli("--addr", tls_broker.address, "--tls", "queue", "list"), EXIT_CONNECTION)
    # a CA that did not sign the server's certificate
    proc = run_cli("--addr", tls_broker.address, "--tls-ca-cert", str(pki.other_ca_cert), "queue", "list")
    one_line_error(proc, EXIT_CONNECTION)


def test_mtls_needs_the_client_certificate(mtls_broker: Broker, pki: TestPKI) -> None:
    tls = ["--addr", mtls_broker.address, "--tls-ca-cert", str(pki.ca_cert)]
    client = ["--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]
    proc = run_cli(*tls, *client, "queue", "list")
    assert proc.returncode == 0, proc.stderr
    one_line_error(run_cli(*tls, "queue", "list"), EXIT_CONNECTION)


def test_a_key_file_that_is_not_pem_is_refused(mtls_broker: Broker, pki: TestPKI, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    args = ["--addr", mtls_broker.address, "--tls-ca-cert", str(pki.ca_cert), "--tls-cert", str(pki.client_cert)]
    proc = run_cli(*args, "--tls-key", str(junk), "queue", "list")
    assert proc.returncode != 0
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
