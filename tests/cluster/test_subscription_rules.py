"""The two consumer rules the cluster double exposed, at the level of the sans-I/O core.

* A follower reports a queue empty in GetStats (its local scheduler holds none
  of it): a leader check answered by a node other than the named leader must
  not wait for a backlog it cannot see.
* When the leader moved to a listed node the client has not met, the consumer
  tries the nodes it has not met, not the node that dropped it.
"""

from __future__ import annotations

from fila._core import Nodes
from fila._core import Settings
from fila._core import Subscription
from fila.errors import ConnectionLostError

ADDRS = ["10.0.0.1:5555", "10.0.0.2:5555", "10.0.0.3:5555"]


def _sub() -> Subscription:
    nodes = Nodes(Settings(ADDRS))
    nodes.learned(ADDRS[0], 1)
    nodes.learned(ADDRS[1], 2)
    sub = Subscription(nodes, "q", 0.0)
    sub.target = nodes.at(ADDRS[1])
    assert sub.subscribed(node_id=2)
    return sub


def test_a_followers_empty_stats_do_not_hide_a_move() -> None:
    sub = _sub()
    assert sub.leader_moved(node_id=2, leader_node_id=3, ready=0, answered_by=1)  # a follower answered
    assert not sub.leader_moved(node_id=2, leader_node_id=3, ready=0, answered_by=3)  # the leader: nothing waits
    assert sub.leader_moved(node_id=2, leader_node_id=3, ready=4, answered_by=3)
    assert not sub.leader_moved(node_id=2, leader_node_id=2, ready=4, answered_by=1)  # still ours
    assert not sub.leader_moved(node_id=2, leader_node_id=0, ready=4, answered_by=1)  # no leader named


def test_a_move_to_an_unmet_node_tries_the_unmet_nodes() -> None:
    sub = _sub()
    decision = sub.lost(ConnectionLostError("moved"), 1.0, leader_node_id=3)
    assert decision.action == "subscribe" and decision.delay == 0.0
    assert decision.settings is not None and decision.settings.address == ADDRS[2]
