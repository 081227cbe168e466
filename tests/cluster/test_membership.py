"""Membership: nodes on a real Redis Cluster of three masters; a node that joins late learns
the others' subscriptions and retained messages before it serves; a node that stops or dies
stops being routed to (its lease runs out), and one that comes back is routed to again; a
node gone for good is forgotten (`culex cluster forget`)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from redis import Redis

from culex.cluster import keys
from tests.cluster.conftest import NodeFactory, offline_session, publish_numbered
from tests.cluster.redis_servers import RedisServer
from tests.cluster.test_session_moves import pause
from tests.conftest import BrokerProcess
from tests.integration.clients import Clients, wait_until


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
    assert "cluster: node-c serves with 2 other member(s): node-a, node-b" in third.log_text()


def test_a_dead_nodes_persistent_sessions_miss_nothing(redis_cluster_urls: list[str],
                                                        cluster_nodes: NodeFactory) -> None:
    """kill -9 of node-b, which holds a persistent session: QoS 1 and 2 messages published on
    node-a while it is down are acknowledged once node-b's lease has run out (they are in its
    stream by then), a node started meanwhile routes to node-b too (its filters are in Redis),
    and when node-b comes back its session gets every one of them, QoS 2 once."""
    first, second = cluster_nodes(redis_cluster_urls, names=("node-a", "node-b"))
    with Clients(first) as a:
        with Clients(second) as b:
            durable = b.paho("durable-on-b", clean_session=False)
            durable.subscribe("life/#", 2)
            durable.disconnect()
        publisher = a.paho("on-a")
        publisher.publish("life/0", b"before", 1)
        second.kill()
        for number in range(1, 4):
            publisher.publish(f"life/{number}", f"during {number}".encode(), number % 2 + 1,
                              timeout=2 * 2 + 3)  # node-b's lease runs out first
        first.wait_for_log("cluster: node-b is down")
        (third,) = cluster_nodes(redis_cluster_urls, names=("node-c",))
        assert "node-b is down" in third.wait_for_log("cluster: node-c serves")
        with Clients(third) as c:
            c.paho("on-c").publish("life/4", b"from a newcomer", 2)
        second.start()
        with Clients(second) as b:
            back = b.paho("durable-on-b", clean_session=False)
            assert back.connect_result is not None and back.connect_result.session_present
            got = back.drain(5)
            assert sorted((m.topic, m.payload) for m in got) == [
                ("life/0", b"before"), ("life/1", b"during 1"), ("life/2", b"during 2"),
                ("life/3", b"during 3"), ("life/4", b"from a newcomer")]
            back.disconnect()
    first.wait_for_log("cluster: linked to node-b again (member 1, epoch 2)")  # a new epoch


def test_a_node_started_while_another_dies_routes_to_its_sessions(
        redis_server: RedisServer, cluster_nodes: NodeFactory) -> None:
    """node-c starts while node-b is paused within its lease: node-c links to it and waits
    for its filters, which never come. Once node-b's lease has run out node-c routes by the
    filters Redis keeps for it, so what is published on node-c reaches node-b's persistent
    session when node-b is back."""
    _first, second = cluster_nodes([redis_server.url], names=("node-a", "node-b"))
    with Clients(second) as b:
        durable = b.paho("durable-on-b", clean_session=False)
        durable.subscribe("dying/#", 1)
        durable.disconnect()
    pause(second, signal.SIGSTOP)
    (third,) = cluster_nodes([redis_server.url], names=("node-c",))
    third.wait_for_log("cluster: linked to node-b (member 1, epoch 1)")
    third.wait_for_log("cluster: node-c serves", timeout=10)
    with Clients(third) as c:
        c.paho("on-c").publish("dying/1", b"for node-b", 1)
    second.kill()
    second.start()
    with Clients(second) as b:
        back = b.paho("durable-on-b", clean_session=False)
        assert back.connect_result is not None and back.connect_result.session_present
        assert [m.payload for m in back.drain(1)] == [b"for node-b"]


def test_what_a_dead_member_committed_to_send_is_written_for_it(
        redis_server: RedisServer, cluster_nodes: NodeFactory) -> None:
    """node-x died with an entry for node-z committed in its outbox (in Redis) and not yet
    written to node-z's stream. node-a, finding node-x down, writes it there under node-x's
    own name and numbers, so that it reaches node-z before whatever waits for node-x's
    answer goes on (a session moving off node-z meanwhile would miss it)."""
    redis = redis_server.client()
    redis.sadd(keys.MEMBERS, "node-x")
    redis.hset(keys.INDEX, "node-x", 7)
    redis.hset("culex:{node-x}:outbox", "3 41", b"node-z\0the records")
    cluster_nodes([redis_server.url], names=("node-a",))
    deadline = time.monotonic() + 10
    while not (found := redis.xrange(keys.stream_key("node-z"))) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [fields for _id, fields in found] == [
        {b"f": b"node-x", b"e": b"3", b"i": b"7", b"s": b"41", b"r": b"the records"}]


def cluster_command(node: BrokerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`culex cluster ...` with the configuration of `node`."""
    return subprocess.run([sys.executable, "-m", "culex", "cluster", *args, "--config",
                           str(node.config_path)], capture_output=True, text=True, timeout=30,
                          check=False)


def stream_entries(redis: Redis, node: str) -> int:
    """What the streams of `node`'s members hold."""
    names = [name.decode() for name in redis.smembers(keys.MEMBERS)] + [node, f"{node}/0",
                                                                         f"{node}/1"]
    return sum(redis.xlen(keys.stream_key(name)) for name in set(names)
               if name == node or name.startswith(f"{node}/"))


def test_a_node_gone_for_good_is_forgotten_and_its_sessions_stay_reachable(
        redis_server: RedisServer, nodes: list[BrokerProcess],
        per_node: list[Clients]) -> None:
    """`culex cluster forget node-b` refuses while node-b runs; once it is dead, it takes it
    out of the membership: the other nodes stop routing to it (its stream stops growing)
    without a restart, and take the sessions it held, with what its stream held for them,
    collecting from then on; a client of one, connecting to another node, gets its session
    with all of that."""
    first, second, third = nodes
    a, b, c = per_node
    offline_session(b, "forgotten", "gone/#")
    refused = cluster_command(first, "forget", "node-b")
    assert refused.returncode == 2 and "the lease is alive" in refused.stderr, refused
    listed = cluster_command(first, "members")
    assert listed.returncode == 0 and "node-b" in listed.stdout, listed
    assert " down " not in listed.stdout, listed.stdout
    second.kill()
    first.wait_for_log("is down", timeout=10)
    time.sleep(1.0)
    publisher = a.paho("forgotten-pub")
    publish_numbered(publisher, "gone", range(2))  # into node-b's stream, node-b down
    forgot = cluster_command(first, "forget", "node-b")
    assert forgot.returncode == 0 and "forgotten" in forgot.stdout, forgot
    listed = cluster_command(first, "members")
    assert "node-b" not in listed.stdout and " live " in listed.stdout, listed.stdout
    assert wait_until(lambda: first.log_text().count("was removed from the cluster") >= len(
        [line for line in forgot.stdout.splitlines() if "forgotten" in line]), 10)
    assert wait_until(lambda: any(
        "client forgotten: 2 messages from the stream of node-b" in node.log_text()
        for node in (first, third)), 10), "node-b's session not taken by another node"
    time.sleep(1.0)  # every worker of every node has had a heartbeat since
    with Redis.from_url(redis_server.url) as redis:
        before = stream_entries(redis, "node-b")
        publish_numbered(publisher, "gone", range(2, 4))
        time.sleep(0.5)
        assert stream_entries(redis, "node-b") == before, "still routed to node-b"
    moved = c.raw()
    assert moved.connect("forgotten", clean=False).session_present
    # 0 and 1 from node-b's stream; 2 and 3 published after the forget, kept by the taker.
    assert [moved.receive(timeout=10).payload for _ in range(4)] == [b"0", b"1", b"2", b"3"]
    publish_numbered(publisher, "gone", range(4, 5))
    assert moved.receive(timeout=10).payload == b"4"
