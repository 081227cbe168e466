"""`[cluster] replicas`: an acknowledgement that rests on Redis alone (a message for a node that
is down, which its stream keeps) waits until that many replicas of the Redis primary have the
entry (WAIT). A real primary and a real replica, and a real Redis Cluster of three masters with
a replica each; the replicas killed and started again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from culex.cluster import keys
from tests.cluster.conftest import NodeFactory
from tests.cluster.redis_servers import RedisCluster, RedisServer
from tests.integration.clients import Clients, wait_until


@pytest.fixture
def primary_and_replica(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    primary = RedisServer(tmp_path / "primary").start()
    replica = RedisServer(tmp_path / "replica", replica_of=primary).start()
    yield primary, replica
    replica.stop()
    primary.stop()


def replicas_in_sync(primary: RedisServer) -> int:
    info = primary.client().info("replication")
    return sum(1 for key, value in info.items()
               if key.startswith("slave") and isinstance(value, dict)
               and value.get("state") == "online")


# Where the state is kept -> what the node logs while the replica is away, and once it is back.
# In Redis, the commit of the state (the outbox, with the entry) is what waits first.
LOGS = {"sqlite": ("0 of 1 Redis replica(s) confirmed the entries",
                   "cluster: the replicas confirm what is written again"),
        "redis": ("0 of 1 Redis replica(s) confirmed the commit",
                  "storage: commits succeed again")}


@pytest.fixture
def redis_cluster_with_replicas(tmp_path: Path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path / "redis-cluster", replicas=1).start()
    yield cluster
    cluster.stop()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_an_ack_for_a_down_node_waits_for_the_replica(
        primary_and_replica: tuple[RedisServer, RedisServer],
        cluster_nodes: NodeFactory, backend: str) -> None:
    primary, replica = primary_and_replica
    assert wait_until(lambda: replicas_in_sync(primary) == 1, timeout=10), "replica not in sync"
    acks_wait_for_replicas(cluster_nodes, [primary.url], [replica], backend)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_in_a_redis_cluster_an_ack_waits_for_the_replicas_of_the_primaries_written(
        redis_cluster_with_replicas: RedisCluster, cluster_nodes: NodeFactory,
        backend: str) -> None:
    """Each primary's share of a write is followed by its own WAIT (a WAIT counts only the
    writes on its connection): with the replicas of the primaries that hold node-a's state and
    node-b's stream gone, nothing is acknowledged, whatever the other primaries' replicas
    confirm."""
    cluster = redis_cluster_with_replicas
    assert wait_until(lambda: cluster.replicas_in_sync() == 3, timeout=20), "replicas not in sync"
    written = cluster.replicas_of(keys.stream_key("node-a"), keys.stream_key("node-b"))
    acks_wait_for_replicas(cluster_nodes, cluster.urls[:1], written, backend)


def acks_wait_for_replicas(cluster_nodes: NodeFactory, urls: list[str],
                           replicas: list[RedisServer], backend: str) -> None:
    """node-b is down, with a persistent subscriber: a QoS 1 PUBLISH on node-a for it is
    acknowledged while `replicas` run, not while they are killed, and once they are back."""
    first, second = cluster_nodes(urls, names=("node-a", "node-b"),
                                  cluster={"replicas": 1}, storage={"backend": backend})
    waiting, again = LOGS[backend]
    with Clients(first) as a:
        with Clients(second) as b:
            durable = b.paho("kept-on-b", clean_session=False)
            assert durable.subscribe("replicated/#", 1) == [1]
            durable.disconnect()
        publisher = a.paho("replicated-pub")
        second.kill()
        first.wait_for_log("cluster: node-b is down", timeout=10)
        publisher.publish("replicated/1", b"one", 1)  # the replica confirms it: PUBACK

        for replica in replicas:
            replica.kill()
        pending = publisher.client.publish("replicated/2", b"two", 1)
        first.wait_for_log(waiting, timeout=10)
        time.sleep(1.5)
        assert not pending.is_published(), "PUBACK before any replica had the message"
        for replica in replicas:
            replica.start()
        assert wait_until(pending.is_published, timeout=15), "no PUBACK once the replica is back"
        first.wait_for_log(again)

    second.start()
    with Clients(second) as b:
        back = b.paho("kept-on-b", clean_session=False)
        assert back.connect_result is not None and back.connect_result.session_present
        # Sent again while the replica was away: each message once all the same.
        assert sorted(m.payload for m in back.drain(2)) == [b"one", b"two"]

