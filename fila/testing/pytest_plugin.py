"""pytest plugin (entry point ``fila``): fixtures that run a test broker.

* ``fila_broker`` — a started :class:`~fila.testing.Broker` with default
  options, stopped after the test.
* ``fila_broker_factory`` — call it with :class:`~fila.testing.Broker`
  keyword arguments to get more brokers (auth, TLS, cluster simulation …);
  all are stopped after the test.
* ``fila_cluster`` — a started 3-node :class:`~fila.testing.Cluster` (the
  cluster double), stopped after the test; ``fila_cluster_factory`` takes
  its keyword arguments. Always in-process.
* ``fila_test_pki`` — a throwaway CA, server and client certificates, as
  paths and as PEM bytes (:class:`~fila.testing.TestPKI`; session-scoped).
  It needs ``cryptography``: without it the test is skipped, or fails when
  ``FILA_REQUIRE_TEST_DEPS`` is set (to anything but ``""`` or ``0``), as in
  a suite whose requirements include it.

The brokers run in a background thread, so they serve sync and asyncio
tests alike.

Real-server mode (opt-in; without these variables nothing changes):

* ``FILA_SERVER=host:port`` — ``fila_broker`` is that running server
  (:class:`~fila.testing.external.ExternalServer`; it must run without
  auth). A test gets it only while the server holds no queues, config
  entries or API keys, and what the test creates is deleted after it, so
  start the server empty and dedicate it to the run; otherwise the test is
  skipped ("needs a fresh broker"). Factory calls with options (``api_key``,
  TLS …) or a second broker in one test are skipped, unless
  ``FILA_SERVER_BIN`` is set as well, which then starts them.
* ``FILA_SERVER_BIN=/path/to/fila-server`` — every broker is a fresh server
  process (temporary directory with its ``fila.toml`` and data, a free
  loopback port; ``api_key``, ``tls_cert``/``tls_key``/``tls_ca``,
  ``quantum`` and ``lease_check_interval`` become its configuration),
  stopped with SIGTERM after the test.

In both modes a test that touches what only the double has
(``broker.faults``, ``broker.scheduler``, ``broker.connections``,
``broker.nagle`` …) or asks for an option the server lacks (``node_id``,
``visibility_timeout_ms``, ``nagle=False`` …) is skipped, with the reason.
Mark a test ``@pytest.mark.fila_double`` to always get the in-process
double.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from collections.abc import Iterator
from typing import TYPE_CHECKING
from typing import Any

import pytest

if TYPE_CHECKING:
    from .broker import Broker
    from .cluster import Cluster
    from .tls import TestPKI


@pytest.fixture
def fila_broker_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., Broker]]:
    """A factory of started brokers: ``fila_broker_factory(api_key="k", node_id=2, ...)``.

    Honours ``FILA_SERVER`` / ``FILA_SERVER_BIN`` (module docstring): the
    brokers are then real servers, and options a real server cannot take
    skip the test. ``@pytest.mark.fila_double`` keeps the double.
    """
    from .external import BrokerFactory

    factory = BrokerFactory(double=request.node.get_closest_marker("fila_double") is not None)
    yield factory
    factory.close()


@pytest.fixture
def fila_broker(fila_broker_factory: Callable[..., Broker]) -> Broker:
    """A started broker on 127.0.0.1 with default options.

    With ``FILA_SERVER`` set it is that shared server (empty at the start
    of the test, emptied after it), with ``FILA_SERVER_BIN`` a fresh server
    process; see the module docstring.
    """
    return fila_broker_factory()


@pytest.fixture
def fila_cluster_factory() -> Iterator[Callable[..., Cluster]]:
    """A factory of started cluster doubles: ``fila_cluster_factory(n=3, failover_delay=0.5, ...)``.

    Takes :class:`~fila.testing.Cluster` keyword arguments; every cluster is
    stopped after the test. Always the in-process double (``FILA_SERVER`` /
    ``FILA_SERVER_BIN`` do not apply).
    """
    from .cluster import Cluster

    started: list[Cluster] = []

    def make(**options: Any) -> Cluster:
        cluster = Cluster(**options).start()
        started.append(cluster)
        return cluster

    yield make
    for cluster in reversed(started):
        cluster.stop()


@pytest.fixture
def fila_cluster(fila_cluster_factory: Callable[..., Cluster]) -> Cluster:
    """A started 3-node :class:`~fila.testing.Cluster` with the real server's defaults.

    Point a client at ``fila_cluster.address`` (every node, comma-separated).
    """
    return fila_cluster_factory()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fila_double: always use the in-process fila.testing Broker, even with FILA_SERVER(_BIN) set"
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    from .external import ENV_SERVER
    from .external import ENV_SERVER_BIN

    given = [f"{v}={os.environ[v].strip()}" for v in (ENV_SERVER, ENV_SERVER_BIN) if os.environ.get(v, "").strip()]
    return f"fila brokers: real server ({', '.join(given)})" if given else None


@pytest.fixture(scope="session")
def fila_test_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """Certificates for TLS tests: paths and PEM bytes (see :func:`fila.testing.make_test_pki`)."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        why = "fila_test_pki needs the 'cryptography' package (pip install cryptography)"
        if _require_test_deps():
            pytest.fail(f"{why}; FILA_REQUIRE_TEST_DEPS is set, so this is a failure, not a skip", pytrace=False)
        pytest.skip(why)
    from .tls import make_test_pki

    return make_test_pki(tmp_path_factory.mktemp("fila-pki"))


def _require_test_deps() -> bool:
    return os.environ.get("FILA_REQUIRE_TEST_DEPS", "").strip() not in ("", "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under ``FILA_REQUIRE_TEST_DEPS``, a ``pytest.importorskip("cryptography")`` fails instead of skipping."""
    outcome = yield
    if not _require_test_deps():
        return
    report = outcome.get_result()  # type: ignore[attr-defined]
    excinfo = call.excinfo
    if report.skipped and excinfo is not None and isinstance(excinfo.value, pytest.skip.Exception):
        reason = str(excinfo.value)
        if "cryptography" in reason and "import" in reason:
            report.outcome = "failed"
            report.longrepr = (
                f"{reason}\nFILA_REQUIRE_TEST_DEPS is set, so a missing test dependency is a failure, "
                "not a skip: pip install cryptography (it is in .ci/requirements.txt)"
            )
