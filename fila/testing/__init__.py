"""fila.testing: an in-process FIBP broker that behaves like the Fila server.

Use :class:`Broker` in tests (or ``python -m fila.testing`` from a shell,
or the ``fila_broker`` / ``fila_broker_factory`` pytest fixtures). It is
built to the server's observed behaviour (``shared/SERVER.md``); faults are
injected through ``broker.faults`` (:class:`Faults`).

Deliberate differences from the real server:

* **State is in memory**, in the :class:`Broker` object: it survives
  ``stop()``/``start()`` (as the server's survives a restart), but a restart
  rebuilds nothing (throttle tokens, DRR rounds, Lua globals and circuit
  breakers carry on).
* **Every close unregisters the consumer**, abnormal closes included (the
  server leaves "ghost" consumers after an IO or frame error, §13.6).
  Leased messages still wait for their visibility timeout, as on the server.
* **Timing switches**: by default the broker times things as the server
  does (Nagle on, one write per frame, leases reclaimed only when the
  scheduler is idle); ``nagle=False`` sets TCP_NODELAY and
  ``idle_reclaim=False`` reclaims on a fixed tick even under traffic.
* **Throttle buckets refill continuously** (when checked, and in GetStats);
  the server refills them once per scheduler loop iteration.
* **Consumers** are served in plain round-robin in registration order.
* **Races settled one way**: the server's scheduler, subscription tasks and
  connection loops run concurrently; here a new subscription's first pass
  fills only its 64-slot ready buffer, and a connection writes all waiting
  deliveries before reading its next request.
* **Lua hooks need ``lupa``**: without it a CreateQueue carrying a script
  gets LuaCompilationError explaining that ``lupa`` is missing. With it they
  run as on the server (one Lua 5.4 state for all queues, top-level code
  re-run on every call, the same globals, limits, conversions and error
  texts), except that reading a result counts toward the script's
  instruction limit. Hooks can always be given as Python callables through
  :meth:`Broker.create_queue` (no limit applies to those; same conversions).
* **A failed CreateQueue leaves no script behind** (the server keeps the
  on_enqueue compiled before a failing on_failure: a server bug).
* **Too-long names and keys do not crash the double**: DeleteQueue of a queue
  named with 65,532+ bytes, or an Enqueue whose hook returns a fairness key
  over 65,535 bytes, stops the server's scheduler; a throttle key that long
  silences the server's subscription (the double answers StorageError).
* **API keys are not visible in the config store** (the server stores them
  as ``auth:key:<id>`` entries that ListConfig/GetConfig and ``fila.get``
  can see).
* **Cluster simulation** (``node_id`` ≠ 0, ``faults.not_leader``,
  ``faults.drop_subscriptions``) is a simulation: with ``node_id`` set,
  stats report ``leader_node_id = node_id``, ``replication_count = 1`` and
  ``cluster_node_count = 1``; nothing is forwarded or replicated.
  :class:`Cluster` (``fila.testing.cluster``; fixtures ``fila_cluster`` /
  ``fila_cluster_factory``) is the multi-node double: n nodes over one
  shared state, a leader per queue, forwarding, failover and the real
  cluster's known defects; its module docstring lists what it simulates.
* **Injected failures** (``faults.fail_next``) are checked before the
  request is decoded, so they win over InvalidFrame and Forbidden.
* A bad frame (oversize, ``length < 6``, continuation error) closes the
  connection without answering frames that arrived in the same read.
* StorageError comes only from the too-long throttle keys above; a batch is
  stored within one loop turn, so it is atomic to observers.

To run the same tests against a real server, set ``FILA_SERVER=host:port``
or ``FILA_SERVER_BIN=/path/to/fila-server``: the pytest fixtures then hand
out an :class:`ExternalServer` (``fila.testing.external``) instead.
"""

from __future__ import annotations

from .broker import Broker
from .broker import BrokerError
from .cluster import Cluster
from .external import ExternalServer
from .external import ExternalServerError
from .faults import SCHEDULER_OPCODES
from .faults import Faults
from .hooks import lua_available
from .tls import TestPKI
from .tls import client_context
from .tls import make_test_pki
from .tls import server_context

__all__ = [
    "SCHEDULER_OPCODES",
    "Broker",
    "BrokerError",
    "Cluster",
    "ExternalServer",
    "ExternalServerError",
    "Faults",
    "TestPKI",
    "client_context",
    "lua_available",
    "make_test_pki",
    "server_context",
]
