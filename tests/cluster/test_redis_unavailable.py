"""Redis unavailable: a QoS 1 message that crossed nodes gets no PUBACK while Redis is down
(never a false one), local traffic keeps flowing, and once Redis is back (its AOF replayed)
the nodes reconnect and resynchronise on their own: the message is delivered and acknowledged,
the client ids accepted meanwhile are claimed, and each step is logged."""

from __future__ import annotations

import time

from culex.cluster.keys import OWNERS
from tests.cluster.conftest import NodeFactory
from tests.cluster.redis_servers import RedisServer
from tests.integration.clients import Clients, wait_until


def test_redis_down_holds_cross_node_acks_and_recovers(redis_server: RedisServer,
                                                       cluster_nodes: NodeFactory) -> None:
    first, second = cluster_nodes([redis_server.url], names=("node-a", "node-b"))
    with Clients(first) as a, Clients(second) as b:
        remote = b.paho("remote-sub")
        remote.subscribe("outage/#", 1)
        local = a.paho("local-sub")
        local.subscribe("local/#", 0)
        publisher = a.paho("outage-pub")
        publisher.publish("outage/before", b"before", 1)
        assert [m.payload for m in remote.drain(1)] == [b"before"]

        redis_server.kill()
        crossing = publisher.client.publish("outage/during", b"during", 1)
        # Local QoS 0 traffic goes on while Redis is down.
        talker = a.paho("local-pub")
        talker.publish("local/x", b"still here", 0)
        assert local.get().payload == b"still here"
        first.wait_for_log("cluster: Redis unavailable")
        time.sleep(3)  # past the lease: the nodes' leases are gone when Redis comes back
        assert not crossing.is_published(), "PUBACK for a message no other node could have"

        redis_server.start()
        assert wait_until(crossing.is_published, timeout=15), "no PUBACK after Redis came back"
        assert [m.payload for m in remote.drain(1)] == [b"during"]
        first.wait_for_log("cluster: Redis answers again")
        # Resynchronised: routes work both ways, including a filter made after the outage.
        later = b.paho("after-outage-sub")
        later.subscribe("after/#", 1)
        publisher.publish("after/1", b"after", 1)
        assert [m.payload for m in later.drain(1)] == [b"after"]
        b.paho("b-pub").publish("local/y", b"from b", 0)
        assert local.get().payload == b"from b"
        # The client that connected during the outage is claimed as node-a's once Redis is back.
        owners = redis_server.client()
        assert wait_until(lambda: (owners.hget(OWNERS, "local-pub") or b"").startswith(
            b"node-a "), timeout=10), owners.hgetall(OWNERS)
        first.wait_for_log("cluster: client local-pub: accepted without a claim of its id")
