"""An in-process cluster double: several FIBP nodes over one replicated queue state.

:class:`Cluster` runs ``n`` :class:`~fila.testing.Broker` nodes on one event
loop, each on a port of its own with node ids 1..n in its HandshakeOk, all
over **one** shared :class:`~fila.testing.scheduler.Scheduler` (what the real
cluster's replicated log makes identical on every node) and one API-key
store. Every queue has a leader node; the client-visible rules of a real
3-node Fila cluster (``shared/SERVER.md`` §14 and §16.3) are applied on top.

What it simulates (each default is the real server's):

* **Leaders**: CreateQueue picks the least-loaded live node (fewest
  leaderships, then the lowest id), so queues created one after another are
  led by 1, 2, 3, 1 …; for ``election_delay`` seconds after creation the
  queue has no leader (the server: 1–6 ms).
* **Consume** is accepted only at the queue's leader. Elsewhere it gets
  NotLeader ``not the leader for this queue`` with ``leader_addr`` when that
  node knows the leader's client address (``hints="join-order"``: a node
  learns only the addresses of nodes that joined before it, so node 1 never
  sends a hint; ``"all"`` / ``"none"``; per node in :attr:`Cluster.knows`),
  and while the queue has no leader, NotLeader without metadata at the node
  that created it and QueueNotFound ``queue raft group not found`` elsewhere.
  ``<queue>.dlq`` has no Raft group: Consume on it gets QueueNotFound.
* **Enqueue / Ack / Nack** work at every node: a non-leader forwards them to
  the leader. Per item (text in ``message_id`` for Enqueue, code only for
  Ack/Nack): NotLeader ``no leader available`` while the queue has no leader;
  QueueNotFound ``queue raft group not found`` for a queue without a group;
  ``0xFF forward error: connect: Connection refused (os error 111)`` while the
  leader is dead and not yet replaced (the first forward from a node that had
  a connection to it gets ``forward error: rpc: connection closed`` instead,
  as the server's cached peer connection fails first).
* **Truncated batches** (``truncate_batches=True``): a forwarded frame keeps
  only the first item of each queue but reports every item ok (the others
  get ids that exist nowhere, or Ok for acks that did nothing); at the leader
  every item is applied but only the first is replicated, so the others are
  undone when leadership moves (enqueued messages vanish, acked ones come
  back). One item per frame is stored correctly.
* **Acks at the leader** are answered MessageNotFound although they take
  effect (``leader_acks_not_found=True``); a forwarded ack answers Ok for
  every item, even unknown ids.
* **Stats**: GetStats and ListQueues name each queue's leader
  (``leader_node_id``; 0 without one), ``replication_count`` = n,
  ``cluster_node_count`` = n. Only the leader reports a queue's depth,
  in-flight count, consumers and fairness keys; every other node reports 0
  and no keys (``follower_stats=True``; measured on the server: followers'
  local schedulers hold none of the queue's messages). CreateQueue of an existing queue and DeleteQueue
  of a missing one answer Ok, as the meta Raft group does.
* :meth:`Cluster.kill`: the node's listener and connections die at once; for
  ``failover_delay`` seconds (the server: ~2 s) the survivors still name it
  as the leader of its queues (Consume gets NotLeader pointing at it,
  forwards fail as above), then a survivor leads. :meth:`Cluster.revive`
  starts it again, on the same port, as a follower.
* :meth:`Cluster.freeze`: the node's scheduler and Raft stall for
  ``seconds``: its consumer streams are dropped with no frame, leadership of
  its queues moves to another node, its connections stay up and answer Ping
  at once, and every other request on them waits until the stall ends.
* :meth:`Cluster.transfer` moves one queue's leadership now.
* A new leader starts from the replicated state: messages leased at the old
  leader are pending again at once (``release_leases_on_failover=True``;
  leases are not replicated), and consumers registered anywhere but at the
  new leader are dropped silently.

What it does not simulate: Raft itself (terms, votes, logs, snapshots,
membership changes, a replication factor below n); leader elections that
take time after a freeze or a transfer (only after kill and creation);
duplicate deliveries in the first ~200 ms of a new leader; a former
leader's stale local stats (it reports 0 like any follower); requests that hang because a frozen leader was not yet
replaced; persistence across a restart of the whole cluster beyond the
in-memory state; the outcome of a CreateQueue whose script fails to compile
(the double answers LuaCompilationError; the server answers Ok and leaves the
queue half-made). Config, API keys and ACLs are simply shared.

Use it with ``with Cluster() as c:`` (background thread), ``async with``, or
the ``fila_cluster`` / ``fila_cluster_factory`` pytest fixtures; point a
client at :attr:`Cluster.address` (every node, comma-separated).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from collections.abc import Coroutine
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Any
from typing import TypeVar

from ..protocol.constants import ErrorCode
from ..protocol.constants import Opcode
from ..protocol.pure import decode_ack
from ..protocol.pure import decode_enqueue
from ..protocol.pure import decode_nack
from ..protocol.pure import encode_ack_result
from ..protocol.pure import encode_enqueue_result
from ..protocol.pure import encode_nack_result
from ._loop import CALL_TIMEOUT
from ._loop import LoopThread
from .auth import AuthStore
from .broker import Broker
from .broker import BrokerError
from .faults import Faults
from .handlers import Handlers
from .hooks import Hook
from .scheduler import DLQ_SUFFIX
from .scheduler import Queue
from .scheduler import Scheduler
from .scheduler import StoredMessage

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["Cluster"]

log = logging.getLogger("fila")

T = TypeVar("T")


RAFT_GROUP_NOT_FOUND = "queue raft group not found"
NO_LEADER = "no leader available"
NOT_LEADER = "not the leader for this queue"
FORWARD_CONNECT = "forward error: connect: Connection refused (os error 111)"
FORWARD_CLOSED = "forward error: rpc: connection closed"

_HINTS = ("join-order", "all", "none")


@dataclass
class _Group:
    """One queue's Raft group as the clients see it."""

    leader: int  # the node every node names as leader (once elected)
    elected_at: float  # monotonic time the first leader is elected (0 = already)
    origin: int  # the node that handled CreateQueue (it has the group at once)
    unreplicated: set[str] = field(default_factory=set)  # stored at the leader only
    unreplicated_acks: list[StoredMessage] = field(default_factory=list)  # acked at the leader only
    move: asyncio.TimerHandle | None = None  # a pending failover

    def leader_at(self, now: float) -> int:
        return self.leader if now >= self.elected_at else 0


#: What a follower's GetStats shows of a queue it does not lead (its local scheduler holds none of it).
_EMPTY_STATS: dict[str, Any] = {
    "depth": 0,
    "in_flight": 0,
    "active_fairness_keys": 0,
    "active_consumers": 0,
    "per_key_stats": [],
}


class _NodeFaults(Faults):
    """A node's faults, plus the stall of :meth:`Cluster.freeze` (every request but Ping waits)."""

    def __init__(self, broker: Broker) -> None:
        self.frozen_until = 0.0
        super().__init__(broker)

    def _rearm(self) -> None:
        super()._rearm()
        if self.frozen_until:
            self.request_armed = True

    def take_delay(self, opcode: int) -> float:
        left = self.frozen_until - time.monotonic() if self.frozen_until else 0.0
        if left > 0 and opcode != Opcode.PING:
            return max(left, super().take_delay(opcode))
        return super().take_delay(opcode)


class _NodeHandlers(Handlers):
    """One node's opcode table: the cluster's rules on top of the single-node handlers."""

    def __init__(self, broker: Broker, cluster: Cluster) -> None:
        super().__init__(broker)
        self.cluster = cluster
        self.node_id = broker.node_id

    def enqueue(self, conn: Connection, rid: int, payload: bytes) -> None:
        self._batch(
            conn, rid, payload, "enqueue", "produce",
            decode_enqueue, lambda items: self.cluster._enqueue(self.node_id, items),
            encode_enqueue_result, Opcode.ENQUEUE_RESULT,
        )  # fmt: skip

    def ack(self, conn: Connection, rid: int, payload: bytes) -> None:
        self._batch(
            conn, rid, payload, "ack", "consume",
            decode_ack, lambda items: self.cluster._ack(self.node_id, items),
            encode_ack_result, Opcode.ACK_RESULT,
        )  # fmt: skip

    def nack(self, conn: Connection, rid: int, payload: bytes) -> None:
        self._batch(
            conn, rid, payload, "nack", "consume",
            decode_nack, lambda items: self.cluster._nack(self.node_id, items),
            encode_nack_result, Opcode.NACK_RESULT,
        )  # fmt: skip

    def consume_refusal(self, queue: str) -> tuple[int, str, dict[str, str] | None] | None:
        return super().consume_refusal(queue) or self.cluster._consume_refusal(self.node_id, queue)

    def create_queue(self, conn: Connection, rid: int, payload: bytes) -> None:
        body = self._decode(conn, rid, "create_queue", Opcode.CREATE_QUEUE, payload)
        if body is None or not self._queue_admin(conn, rid, body["name"]):
            return
        code, text = self.cluster._create(
            self.node_id,
            body["name"],
            body["on_enqueue_script"],
            body["on_failure_script"],
            body["visibility_timeout_ms"],
        )
        self._reply(conn, Opcode.CREATE_QUEUE_RESULT, rid, {"error_code": code, "queue_id": text})

    def delete_queue(self, conn: Connection, rid: int, payload: bytes) -> None:
        body = self._decode(conn, rid, "delete_queue", Opcode.DELETE_QUEUE, payload)
        if body is None or not self._queue_admin(conn, rid, body["queue"]):
            return
        self.cluster._delete(body["queue"])
        self._reply(conn, Opcode.DELETE_QUEUE_RESULT, rid, {"error_code": 0})

    def get_stats(self, conn: Connection, rid: int, payload: bytes) -> None:
        body = self._decode(conn, rid, "get_stats", Opcode.GET_STATS, payload)
        if body is None or not self._global_admin(conn, rid):
            return
        stats = self.scheduler.stats(body["queue"])
        if stats is None:
            conn.send_error(rid, ErrorCode.QUEUE_NOT_FOUND, "queue not found")
            return
        g = self.cluster._group(body["queue"])
        if g is not None:
            stats["leader_node_id"] = g.leader_at(time.monotonic())
            stats["replication_count"] = len(self.cluster.nodes)
        if not self.cluster._holds(self.node_id, body["queue"]):
            stats.update(_EMPTY_STATS)
        self._reply(conn, Opcode.GET_STATS_RESULT, rid, stats)

    def list_queues(self, conn: Connection, rid: int, payload: bytes) -> None:
        if not self._global_admin(conn, rid):
            return
        queues = self.scheduler.list_queues()
        now = time.monotonic()
        for q in queues:
            g = self.cluster._group(q["name"])
            q["leader_node_id"] = g.leader_at(now) if g is not None else 0
            if not self.cluster._holds(self.node_id, q["name"]):
                q.update(depth=0, in_flight=0, active_consumers=0)
        fields = {"error_code": 0, "cluster_node_count": len(self.cluster.nodes), "queues": queues}
        self._reply(conn, Opcode.LIST_QUEUES_RESULT, rid, fields)


class Cluster(LoopThread):
    """``n`` FIBP nodes (ids 1..n) sharing one queue state, with a leader per queue.

    Options (defaults as the real server behaves): ``election_delay``
    seconds without a leader after CreateQueue; ``failover_delay`` seconds
    before a dead leader's queues get a new one; ``hints`` which leader
    addresses a node puts in NotLeader (``"join-order"``, ``"all"``,
    ``"none"``); ``truncate_batches`` (forwarded and replicated frames keep
    their first item only); ``leader_acks_not_found`` (the leader answers
    MessageNotFound to acks that took effect); ``dlq_raft_group`` (False:
    ``<queue>.dlq`` cannot be consumed); ``release_leases_on_failover`` (a new
    leader delivers what the old one had leased); ``follower_stats`` (a node
    that does not lead a queue reports it empty in GetStats / ListQueues, as
    its local scheduler holds none of its messages). Other keyword arguments
    (``api_key``, TLS files, ``visibility_timeout_ms``, ``nagle`` …) go to
    every node's :class:`~fila.testing.Broker`. The module docstring lists
    what is simulated and what is not.

    :attr:`counters` counts the simulated cluster behaviours as they happen
    (``"truncated"``, ``"unreplicated"``, ``"no_leader"``,
    ``"raft_group_not_found"``, ``"not_leader"``, ``"forward_connect"``,
    ``"forward_closed"``, ``"ack_not_found"``, ``"failover"``, ``"dropped"``),
    so a test can show that a path was taken.
    """

    def __init__(
        self,
        n: int = 3,
        *,
        host: str = "127.0.0.1",
        election_delay: float = 0.005,
        failover_delay: float = 2.0,
        hints: str = "join-order",
        truncate_batches: bool = True,
        leader_acks_not_found: bool = True,
        dlq_raft_group: bool = False,
        release_leases_on_failover: bool = True,
        follower_stats: bool = True,
        **broker_options: Any,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if election_delay < 0 or failover_delay < 0:
            raise ValueError("election_delay and failover_delay must be >= 0")
        if hints not in _HINTS:
            raise ValueError(f"hints must be one of {', '.join(_HINTS)}; got {hints!r}")
        for key in ("node_id", "port"):
            if key in broker_options:
                raise ValueError(f"{key} is chosen by the cluster (node ids 1..n, a free port each)")
        self.election_delay = float(election_delay)
        self.failover_delay = float(failover_delay)
        self.truncate_batches = bool(truncate_batches)
        self.leader_acks_not_found = bool(leader_acks_not_found)
        self.dlq_raft_group = bool(dlq_raft_group)
        self.release_leases_on_failover = bool(release_leases_on_failover)
        self.follower_stats = bool(follower_stats)
        self.counters: Counter[str] = Counter()
        self.nodes: list[Broker] = []
        first: Broker | None = None
        for i in range(1, n + 1):
            node = Broker(host, 0, node_id=i, **broker_options)
            if first is None:
                first = node
            else:  # one replicated state: queues, messages, leases, config, keys
                node.scheduler = first.scheduler
                node.auth = first.auth
            node.faults = _NodeFaults(node)
            node.handlers = _NodeHandlers(node, self)
            self.nodes.append(node)
        assert first is not None
        self.scheduler: Scheduler = first.scheduler
        self.auth: AuthStore = first.auth
        ids = range(1, n + 1)
        #: Per node id, the node ids whose client address it knows (and so names in NotLeader).
        self.knows: dict[int, set[int]] = {
            i: ({j for j in ids if j <= i} if hints == "join-order" else set(ids) if hints == "all" else set())
            for i in ids
        }
        self._groups: dict[str, _Group] = {}
        self._dead: set[int] = set()
        self._streams: set[tuple[int, int]] = set()  # (from, to): a cached forward connection
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._thread: threading.Thread | None = None
        self._timers: set[asyncio.TimerHandle] = set()

    # ------------------------------------------------------------ nodes

    def node(self, node_id: int) -> Broker:
        """The node with id ``node_id`` (1-based)."""
        if not 1 <= node_id <= len(self.nodes):
            raise ValueError(f"no node {node_id}: node ids are 1..{len(self.nodes)}")
        return self.nodes[node_id - 1]

    @property
    def addresses(self) -> list[str]:
        """Every node's ``host:port``, by node id."""
        return [b.address for b in self.nodes]

    @property
    def address(self) -> str:
        """Every node's address, comma-separated: what a client takes as ``addr``."""
        return ",".join(self.addresses)

    def alive(self, node_id: int) -> bool:
        return node_id not in self._dead

    def __repr__(self) -> str:
        state = "running" if self._loop is not None else "stopped"
        return f"<fila.testing.Cluster {len(self.nodes)} nodes {self.address} {state}>"

    # ------------------------------------------------------- lifecycle

    async def start_async(self) -> Cluster:
        """Start every node on the current event loop."""
        if self._loop is not None:
            raise RuntimeError("cluster already started")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        try:
            for node in self.nodes:
                await node.start_async()
        except BaseException:
            await self.stop_async()
            raise
        return self

    async def stop_async(self) -> None:
        for handle in list(self._timers):
            handle.cancel()
        self._timers.clear()
        for g in self._groups.values():
            g.move = None
        for node in self.nodes:
            await node.stop_async()
        self._loop = None
        self._loop_thread = None


    def _run(self, coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run a coroutine on the loop and wait for it (from another thread), or schedule it (on the loop)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the cluster is not running")
        if self._loop_thread == threading.get_ident():
            raise RuntimeError("call the *_async variant from the cluster's own loop")
        return asyncio.run_coroutine_threadsafe(coro(), loop).result(CALL_TIMEOUT)

    def _later(self, delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        assert self._loop is not None

        def fire() -> None:
            self._timers.discard(handle)
            fn()

        handle = self._loop.call_later(delay, fire)
        self._timers.add(handle)
        return handle

    # --------------------------------------------------------- failures

    def kill(self, node_id: int) -> None:
        """Node ``node_id`` dies: its listener and connections close now (no frame); see :meth:`kill_async`."""
        self.node(node_id)
        self._run(lambda: self.kill_async(node_id))

    async def kill_async(self, node_id: int) -> None:
        """Kill a node from the cluster's loop.

        For ``failover_delay`` seconds every survivor still names it as the
        leader of its queues; then each of them moves to a live node.
        """
        node = self.node(node_id)
        if node_id in self._dead:
            return
        self._dead.add(node_id)
        await node.stop_async()
        for name, g in self._groups.items():
            if g.leader == node_id and g.move is None:
                g.move = self._later(self.failover_delay, functools.partial(self._failover, name))

    def revive(self, node_id: int) -> None:
        """Start a killed node again on its old port; it rejoins as a follower."""
        self.node(node_id)
        self._run(lambda: self.revive_async(node_id))

    async def revive_async(self, node_id: int) -> None:
        node = self.node(node_id)
        if node_id not in self._dead:
            return
        await node.start_async()
        self._dead.discard(node_id)
        for pair in [p for p in self._streams if node_id in p]:
            self._streams.discard(pair)

    def freeze(self, node_id: int, seconds: float) -> None:
        """Stall node ``node_id`` for ``seconds`` (module docstring): it loses its queues and consumer streams."""
        self.node(node_id)
        if seconds <= 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        self.call(lambda: self._freeze(node_id, seconds))

    def _freeze(self, node_id: int, seconds: float) -> None:
        node = self.node(node_id)
        faults = node.faults
        assert isinstance(faults, _NodeFaults)
        faults.frozen_until = time.monotonic() + seconds
        faults._rearm()
        dropped = [c for lst in self.scheduler.consumers.values() for c in lst if _node_of(c) == node_id]
        for c in dropped:
            self.scheduler.unregister(c)
        self.counters["dropped"] += len(dropped)
        for name, g in self._groups.items():
            if g.leader == node_id:
                target = self._candidate(exclude=node_id)
                if target:
                    self._set_leader(name, target)

        def thaw() -> None:
            faults.frozen_until = 0.0
            faults._rearm()

        self._later(seconds, thaw)

    def frozen(self, node_id: int) -> bool:
        faults = self.node(node_id).faults
        return isinstance(faults, _NodeFaults) and faults.frozen_until > time.monotonic()

    def transfer(self, queue: str, to: int) -> None:
        """Move ``queue``'s leadership to node ``to`` now (consumers elsewhere are dropped silently)."""
        self.node(to)

        def run() -> None:
            if queue not in self._groups:
                raise BrokerError(f"no queue {queue!r}")
            self._set_leader(queue, to)

        self.call(run)

    # ------------------------------------------------------- inspection

    def leader_of(self, queue: str) -> int:
        """The node id every node names as ``queue``'s leader now (0: none yet or no such queue)."""

        def get() -> int:
            g = self._group(queue)
            return 0 if g is None else g.leader_at(time.monotonic())

        return self.call(get)

    def wait_for_leader(self, queue: str, timeout: float = 10.0, *, other_than: int = 0) -> int:
        """Wait until ``queue`` has a leader (other than ``other_than``); its node id."""
        deadline = time.monotonic() + timeout
        while True:
            leader = self.leader_of(queue)
            if leader and leader != other_than:
                return leader
            if time.monotonic() >= deadline:
                raise BrokerError(f"queue {queue!r} has no leader (other than {other_than}) after {timeout}s")
            time.sleep(0.005)

    def message_ids(self, queue: str) -> set[str]:
        """Ids of the messages ``queue`` holds now, pending or leased."""

        def get() -> set[str]:
            q = self.scheduler.queues.get(queue)
            if q is None:
                return set()
            return {m.id for m in q.drr.items()} | set(q.leased)

        return self.call(get)

    def stats(self, queue: str) -> dict[str, Any] | None:
        """GetStats fields of ``queue`` as its leader answers them, or None when it does not exist."""

        def get() -> dict[str, Any] | None:
            stats = self.scheduler.stats(queue)
            g = self._group(queue)
            if stats is not None and g is not None:
                stats["leader_node_id"] = g.leader_at(time.monotonic())
                stats["replication_count"] = len(self.nodes)
            return stats

        return self.call(get)

    # --------------------------------------------------------- admin

    def create_queue(
        self,
        name: str,
        *,
        on_enqueue: str | Hook | None = None,
        on_failure: str | Hook | None = None,
        visibility_timeout_ms: int = 0,
        leader: int | None = None,
        elected: bool = True,
    ) -> int:
        """Create a queue (and ``<name>.dlq``); returns its leader's node id.

        ``leader`` picks the node (default: the least-loaded live one);
        ``elected=False`` leaves the usual ``election_delay`` without a
        leader, as a CreateQueue request does.
        """
        if leader is not None:
            self.node(leader)

        def run() -> int:
            origin = leader or self._candidate()
            code, text = self._create(origin, name, on_enqueue, on_failure, visibility_timeout_ms, leader)
            if code != ErrorCode.OK:
                raise BrokerError(f"cannot create queue {name!r}: {ErrorCode(code).name}: {text}")
            g = self._groups[name]
            if elected:
                g.elected_at = 0.0
            return g.leader

        return self.call(run)

    # ----------------------------------------------------- the rules

    def _group(self, queue: str) -> _Group | None:
        g = self._groups.get(queue)
        if g is None and self.dlq_raft_group and queue.endswith(DLQ_SUFFIX):
            g = self._groups.get(queue[: -len(DLQ_SUFFIX)])
        return g

    def _holds(self, me: int, queue: str) -> bool:
        """Whether node ``me``'s local scheduler holds ``queue``'s messages (it leads it, or its parent)."""
        if not self.follower_stats:
            return True
        g = self._groups.get(queue)
        if g is None and queue.endswith(DLQ_SUFFIX):
            g = self._groups.get(queue[: -len(DLQ_SUFFIX)])
        return g is None or g.leader_at(time.monotonic()) == me

    def _leaderships(self) -> Counter[int]:
        return Counter(g.leader for g in self._groups.values())

    def _candidate(self, exclude: int = 0) -> int:
        """The live, unstalled node with the fewest leaderships (then the lowest id); 0 if none."""
        counts = self._leaderships()
        live = [
            b.node_id
            for b in self.nodes
            if b.node_id != exclude and b.node_id not in self._dead and not self.frozen(b.node_id)
        ]
        if not live:
            return 0
        return min(live, key=lambda i: (counts[i], i))

    def _create(
        self,
        origin: int,
        name: str,
        on_enqueue: str | Hook | None,
        on_failure: str | Hook | None,
        visibility_timeout_ms: int,
        leader: int | None = None,
    ) -> tuple[int, str]:
        if name in self._groups:
            return ErrorCode.OK, name  # the meta group answers Ok; nothing changes
        code, text = self.scheduler.create_queue(name, on_enqueue, on_failure, visibility_timeout_ms)
        if code == ErrorCode.QUEUE_ALREADY_EXISTS:  # made outside the cluster (e.g. a node's create_queue)
            code = ErrorCode.OK
        if code != ErrorCode.OK:
            return code, text
        chosen = leader or self._candidate() or origin
        self._groups[name] = _Group(chosen, time.monotonic() + self.election_delay, origin)
        return ErrorCode.OK, name

    def _delete(self, name: str) -> None:
        g = self._groups.pop(name, None)
        if g is not None and g.move is not None:
            g.move.cancel()
            self._timers.discard(g.move)
        self.scheduler.delete_queue(name)
        self.scheduler.drop_consumers(name)

    def _consume_refusal(self, me: int, queue: str) -> tuple[int, str, dict[str, str] | None] | None:
        """Why node ``me`` refuses a Consume on ``queue`` (code, message, metadata), or None to accept."""
        g = self._group(queue)
        if g is None:
            self.counters["raft_group_not_found"] += 1
            return ErrorCode.QUEUE_NOT_FOUND, RAFT_GROUP_NOT_FOUND, None
        leader = g.leader_at(time.monotonic())
        if leader == me:
            return None
        if not leader and me != g.origin:
            self.counters["raft_group_not_found"] += 1
            return ErrorCode.QUEUE_NOT_FOUND, RAFT_GROUP_NOT_FOUND, None
        self.counters["not_leader"] += 1
        meta = {"leader_addr": self.node(leader).address} if leader and leader in self.knows.get(me, ()) else None
        return ErrorCode.NOT_LEADER, NOT_LEADER, meta

    def _route(self, me: int, queue: str) -> tuple[str, int, str]:
        """How node ``me`` handles a write to ``queue``: ``("local"|"forward"|"fail", code, text)``."""
        g = self._group(queue)
        if g is None:
            self.counters["raft_group_not_found"] += 1
            return "fail", ErrorCode.QUEUE_NOT_FOUND, RAFT_GROUP_NOT_FOUND
        leader = g.leader_at(time.monotonic())
        if not leader:
            self.counters["no_leader"] += 1
            return "fail", ErrorCode.NOT_LEADER, NO_LEADER
        if leader == me:
            return "local", 0, ""
        if leader in self._dead:
            if (me, leader) in self._streams:  # the cached connection to it fails first
                self._streams.discard((me, leader))
                self.counters["forward_closed"] += 1
                return "fail", ErrorCode.INTERNAL_ERROR, FORWARD_CLOSED
            self.counters["forward_connect"] += 1
            return "fail", ErrorCode.INTERNAL_ERROR, FORWARD_CONNECT
        self._streams.add((me, leader))
        return "forward", 0, ""

    @staticmethod
    def _by_queue(items: list[Any]) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(item[0], []).append(i)
        return groups

    def _enqueue(self, me: int, items: list[tuple[str, dict[str, str], bytes]]) -> list[tuple[int, str]]:
        results: list[tuple[int, str] | None] = [None] * len(items)
        store: list[int] = []  # indexes to store, in request order
        unreplicated: list[int] = []
        phantom: list[int] = []
        for queue, idxs in self._by_queue(items).items():
            how, code, text = self._route(me, queue)
            if how == "fail":
                for i in idxs:
                    results[i] = (code, text)
                continue
            if len(idxs) > 1 and self.truncate_batches:
                if how == "forward":
                    store.append(idxs[0])
                    phantom.extend(idxs[1:])
                    self.counters["truncated"] += len(idxs) - 1
                    continue
                unreplicated.extend(idxs[1:])
            store.extend(idxs)
        if store:
            store.sort()
            stored = self.scheduler.enqueue([items[i] for i in store])
            for i, r in zip(store, stored, strict=True):
                results[i] = r
        for i in phantom:
            results[i] = (0, self.scheduler.ids.next())  # reported ok, stored nowhere
        for i in unreplicated:
            done = results[i]
            if done is not None and done[0] == 0:
                g = self._group(items[i][0])
                if g is not None:
                    g.unreplicated.add(done[1])
                    self.counters["unreplicated"] += 1
        return [r if r is not None else (ErrorCode.INTERNAL_ERROR, "") for r in results]

    def _ack(self, me: int, items: list[tuple[str, str]]) -> list[int]:
        codes: list[int] = [0] * len(items)
        for queue, idxs in self._by_queue(items).items():
            how, code, _ = self._route(me, queue)
            if how == "fail":
                for i in idxs:
                    codes[i] = code  # Ack/Nack items carry no text
                continue
            if how == "forward":
                apply = idxs[:1] if self.truncate_batches else idxs
                self.counters["truncated"] += len(idxs) - len(apply)
                self.scheduler.ack([items[i] for i in apply])  # the leader's answers are not passed on
                continue
            q = self.scheduler.queues.get(queue)
            g = self._group(queue)
            if self.truncate_batches and len(idxs) > 1 and q is not None and g is not None:
                for i in idxs[1:]:
                    m = q.find_leased(items[i][1])
                    if m is not None:
                        g.unreplicated_acks.append(m)
                        self.counters["unreplicated"] += 1
            local = self.scheduler.ack([items[i] for i in idxs])
            for i, c in zip(idxs, local, strict=True):
                if self.leader_acks_not_found:
                    codes[i] = ErrorCode.MESSAGE_NOT_FOUND
                    self.counters["ack_not_found"] += c == 0
                else:
                    codes[i] = c
        return codes

    def _nack(self, me: int, items: list[tuple[str, str, str]]) -> list[int]:
        codes: list[int] = [0] * len(items)
        for queue, idxs in self._by_queue(items).items():
            how, code, _ = self._route(me, queue)
            if how == "fail":
                for i in idxs:
                    codes[i] = code
                continue
            if how == "forward":
                apply = idxs[:1] if self.truncate_batches else idxs
                self.counters["truncated"] += len(idxs) - len(apply)
                self.scheduler.nack([items[i] for i in apply])
                continue
            for i, c in zip(idxs, self.scheduler.nack([items[i] for i in idxs]), strict=True):
                codes[i] = c
        return codes

    # ------------------------------------------------------ leadership

    def _failover(self, name: str) -> None:
        g = self._groups.get(name)
        if g is None:
            return
        g.move = None
        if g.leader not in self._dead:
            return  # revived meanwhile: it still leads
        target = self._candidate()
        if not target:  # nobody left to lead: try again later
            g.move = self._later(self.failover_delay or 0.1, lambda: self._failover(name))
            return
        self.counters["failover"] += 1
        self._set_leader(name, target)

    def _set_leader(self, name: str, leader: int) -> None:
        """``leader`` leads ``name`` from now on, starting from the replicated state."""
        g = self._groups[name]
        g.leader = leader
        g.elected_at = 0.0
        if g.move is not None:
            g.move.cancel()
            self._timers.discard(g.move)
            g.move = None
        s = self.scheduler
        names = [name] + ([name + DLQ_SUFFIX] if self.dlq_raft_group else [])
        dropped = [c for n in names for c in s.consumers.get(n, ()) if _node_of(c) != leader]
        for c in dropped:
            s.unregister(c)
        self.counters["dropped"] += len(dropped)
        q = s.queues.get(name)
        if q is not None:
            self._undo_unreplicated(q, g)
            if self.release_leases_on_failover:
                for m in list(q.leased.values()):
                    q.end_lease(m)
                    q.drr.push(m.fairness_key, m, m.weight)
                q.prune_lease_order()
            s.deliver(q)
        g.unreplicated.clear()
        g.unreplicated_acks.clear()

    @staticmethod
    def _undo_unreplicated(q: Queue, g: _Group) -> None:
        """What only the old leader stored is gone; what only it acked is back."""
        if g.unreplicated:
            for m in [m for m in q.drr.items() if m.id in g.unreplicated]:
                q.drr.remove(m.fairness_key, m)
            for mid in g.unreplicated & set(q.leased):
                q.end_lease(q.leased[mid])
        for m in g.unreplicated_acks:
            if m.id not in q.leased:
                q.drr.push(m.fairness_key, m, m.weight)


def _node_of(consumer: Any) -> int:
    """The node id of the connection a consumer is registered on."""
    broker = getattr(consumer.sink, "broker", None)
    return int(getattr(broker, "node_id", 0))
