"""Wills across nodes: the will of a client whose node dies goes out once, from another node
(which takes it from the dead node's store in Redis), and not again when that node is back;
a node paused past its lease, whose wills were published meanwhile, does not publish them a
second time when the client it still serves goes. Real nodes, a real Redis, kill -9 and
SIGSTOP."""

from __future__ import annotations

import signal

from tests.cluster.conftest import TEST_LEASE, NodeFactory
from tests.cluster.redis_servers import RedisServer
from tests.cluster.test_session_moves import pause
from tests.integration.clients import Clients, Will
from tests.robustness.durability_clients import commit_barrier

DOWN_NOTICED = 4 * TEST_LEASE  # its lease runs out, and a heartbeat of the other sees it


def test_the_will_of_a_client_whose_node_dies_goes_out_once_from_another_node(
        redis_server: RedisServer, cluster_nodes: NodeFactory) -> None:
    first, second = cluster_nodes([redis_server.url], names=("node-a", "node-b"))
    with Clients(first) as a, Clients(second) as b:
        watcher = a.subscriber("wills/#", 1)
        b.paho("doomed", will=Will("wills/doomed", b"gone", 1))
        commit_barrier(second)  # the will is in node-b's store
        second.kill()
        got = watcher.drain(1, timeout=DOWN_NOTICED + 5)
        assert [(m.topic, m.payload) for m in got] == [("wills/doomed", b"gone")]
        first.wait_for_log("client doomed: publishing its will to 'wills/doomed' (connected "
                           "to node-b")
        second.start()
        watcher.assert_no_message(timeout=2.0)  # node-b has no will of it left to publish


def test_a_node_paused_past_its_lease_does_not_publish_again_a_will_published_meanwhile(
        redis_server: RedisServer, cluster_nodes: NodeFactory) -> None:
    first, second = cluster_nodes([redis_server.url], names=("node-a", "node-b"))
    with Clients(first) as a, Clients(second) as b:
        watcher = a.subscriber("wills/#", 1)
        sleeper = b.raw("sleeper", will=Will("wills/sleeper", b"asleep", 1))
        commit_barrier(second)
        pause(second, signal.SIGSTOP)
        try:
            got = watcher.drain(1, timeout=DOWN_NOTICED + 5)
            assert [(m.topic, m.payload) for m in got] == [("wills/sleeper", b"asleep")]
        finally:
            pause(second, signal.SIGCONT)
        second.wait_for_log("wills of clients still connected here were published by "
                            "another node", timeout=DOWN_NOTICED)
        sleeper.drop()  # an abnormal close: its will would go out, had it not already
        watcher.assert_no_message(timeout=2.0)
        # A will set after the pause is that node's own again.
        b.raw("after", will=Will("wills/after", b"later", 1)).drop()
        assert [(m.topic, m.payload) for m in watcher.drain(1)] == [("wills/after", b"later")]
