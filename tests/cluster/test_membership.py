"""Membership: nodes on a real Redis Cluster of three masters; a node that joins late learns
the others' subscriptions and retained messages before it serves; a node that stops or dies
stops being routed to (its lease runs out), and one that comes back is routed to again."""

from __future__ import annotations

from tests.cluster.conftest import NodeFactory
from tests.integration.clients import Clients


def test_three_nodes_on_a_redis_cluster(redis_cluster_urls: list[str],
                                        cluster_nodes: NodeFactory) -> None:
    nodes = cluster_nodes(redis_cluster_urls)
    with Clients(nodes[0]) as first, Clients(nodes[1]) as second, Clients(nodes[2]) as third:
        subscribers = [clients.paho(f"rc-sub-{index}")
                       for index, clients in enumerate((first, second, third))]
        for subscriber in subscribers:
            subscriber.subscribe("rc/#", 2)
        third.paho("rc-pub").publish("rc/x", b"across shards", 2)
        first.paho("rc-retain").publish("rc/kept", b"kept", 1, retain=True)
        for subscriber in subscribers:
            got = subscriber.drain(2)
            assert sorted((m.topic, m.payload) for m in got) == [("rc/kept", b"kept"),
                                                                 ("rc/x", b"across shards")]


def test_a_late_node_knows_the_others_before_it_serves(redis_cluster_urls: list[str],
                                                       cluster_nodes: NodeFactory) -> None:
    nodes = cluster_nodes(redis_cluster_urls, names=("node-a", "node-b"))
    with Clients(nodes[0]) as clients:
        clients.paho("early-retainer").publish("late/kept", b"old news", 1, retain=True)
        subscriber = clients.paho("early-sub")
        subscriber.subscribe("late/#", 1)
        assert [m.payload for m in subscriber.drain(1)] == [b"old news"]
        (third,) = cluster_nodes(redis_cluster_urls, names=("node-c",))
        with Clients(third) as late:
            # Its very first client: the other nodes' filters and retained store are there.
            late_sub = late.paho("late-sub")
            late_sub.subscribe("late/#", 1)
            assert [(m.payload, m.retain) for m in late_sub.drain(1)] == [(b"old news", True)]
            late.paho("late-pub").publish("late/news", b"fresh", 1)
            assert [m.payload for m in subscriber.drain(1)] == [b"fresh"]
    assert "cluster: node-c serves with 2 other node(s): node-a, node-b" in third.log_text()


def test_a_dead_node_stops_being_routed_to_and_comes_back(redis_cluster_urls: list[str],
                                                          cluster_nodes: NodeFactory) -> None:
    """kill -9 of node-b: a QoS 1 publish on node-a that went to node-b waits for node-b's
    barrier answer; node-b's lease runs out, its link is dropped and the PUBACK comes (node-c's
    subscriber has the message). Started again, node-b is routed to again."""
    first, second, third = cluster_nodes(redis_cluster_urls)
    with Clients(first) as a, Clients(second) as b, Clients(third) as c:
        doomed = b.paho("on-b")
        doomed.subscribe("life/#", 1)
        survivor = c.paho("on-c")
        survivor.subscribe("life/#", 1)
        publisher = a.paho("on-a")
        publisher.publish("life/1", b"before", 1)
        assert [m.payload for m in doomed.drain(1)] == [b"before"]
        second.kill()
        publisher.publish("life/2", b"during", 1, timeout=3 * 2 + 2)  # within the lease, +2 s
        assert [m.payload for m in survivor.drain(2)] == [b"before", b"during"]
        first.wait_for_log("cluster: link to member 1 dropped")
        second.start()
        back = Clients(second)
        try:
            again = back.paho("on-b-again")
            again.subscribe("life/#", 1)
            publisher.publish("life/3", b"after", 1)
            assert [m.payload for m in again.drain(1)] == [b"after"]
        finally:
            back.close()
    assert "Traceback" not in first.log_text() + third.log_text()
