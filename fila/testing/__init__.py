"""fila.testing: an in-process FIBP broker that behaves like the Fila server.

Use :class:`Broker` in tests (or ``python -m fila.testing`` from a shell,
or the ``fila_broker`` / ``fila_broker_factory`` pytest fixtures). It is
built to the server's observed behaviour (``shared/SERVER.md``); faults are
injected through ``broker.faults`` (:class:`Faults`).

Deliberate differences from the real server:

* **State is in memory only**: nothing survives :meth:`Broker.stop`; there
  is no storage, so StorageError (0x05) is never produced.
* **Every close unregisters the consumer**, abnormal closes included (the
  server leaves "ghost" consumers after an IO or frame error, §13.6).
  Leased messages still wait for their visibility timeout, as on the server.
* **Lease reclaim runs on a fixed tick** (``lease_check_interval``, 100 ms)
  even under constant traffic; the server scans only when idle.
* **DRR**: a fairness key that becomes active in the middle of a round is
  credited ``weight × quantum`` at once instead of waiting for the next
  round; active keys are pruned as soon as they have no pending message.
  The key's weight is the weight of its most recently stored message.
* **Consumers** are served in plain round-robin in registration order; a
  consumer is "full" when ``delivery_buffer`` (320 = 64 + 256) deliveries
  are queued unsent on its connection (the server has two buffers).
* **Backpressure**: when the client stops reading and the socket's write
  buffer fills, the broker also stops reading that connection's requests.
* **Lua hooks need ``lupa``**: without it a CreateQueue carrying a script
  gets LuaCompilationError explaining that ``lupa`` is missing. Hooks can
  always be given as Python callables through :meth:`Broker.create_queue`
  (no instruction or memory limit applies to those). Lua runs on Lua 5.4
  (``lupa.lua54`` when available); compilation error texts are Lua's own,
  prefixed ``lua compilation error:``. The top level of a script runs once,
  on first use.
* **API keys are not visible in the config store** (the server stores them
  as ``auth:key:<id>`` entries that ListConfig/GetConfig can see).
* **Cluster simulation** (``node_id`` ≠ 0, ``faults.not_leader``,
  ``faults.drop_subscriptions``) is a simulation: with ``node_id`` set,
  stats report ``leader_node_id = node_id``, ``replication_count = 1`` and
  ``cluster_node_count = 1``; nothing is forwarded or replicated.
* **Injected failures** (``faults.fail_next``) are checked before the
  request is decoded, so they win over InvalidFrame and Forbidden.
* A bad frame (oversize, ``length < 6``, continuation error) closes the
  connection without answering frames that arrived in the same read.
* Enqueue never reports StorageError; a batch is stored item by item (all
  within one loop turn, so it is still atomic to observers).
"""

from __future__ import annotations

from .broker import Broker, BrokerError
from .faults import SCHEDULER_OPCODES, Faults
from .hooks import lua_available
from .tls import TestPKI, client_context, make_test_pki, server_context

__all__ = [
    "SCHEDULER_OPCODES",
    "Broker",
    "BrokerError",
    "Faults",
    "TestPKI",
    "client_context",
    "lua_available",
    "make_test_pki",
    "server_context",
]
