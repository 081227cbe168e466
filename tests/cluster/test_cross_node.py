"""A publish on any node reaches the subscribers on every node: three Culex nodes on one real
Redis (and on a real Redis Cluster of three masters), real paho clients on different nodes."""

from __future__ import annotations

import contextlib
import queue
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from tests.conftest import BrokerProcess
from tests.integration.clients import Clients


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["3.1.1", "5.0"])
def test_publish_on_any_node_reaches_subscribers_on_every_node(
        per_node: list[Clients], protocol: mqtt.MQTTProtocolVersion) -> None:
    subscribers = [clients.paho(f"sub-{index}", protocol=protocol)
                   for index, clients in enumerate(per_node)]
    for subscriber in subscribers:
        assert subscriber.subscribe("cross/#", 2) == [2]
    for index, clients in enumerate(per_node):
        publisher = clients.paho(f"pub-{index}", protocol=protocol)
        for qos in (0, 1, 2):
            publisher.publish(f"cross/{index}/{qos}", f"from {index} at {qos}".encode(), qos)
        publisher.disconnect()
    for subscriber in subscribers:
        got = subscriber.drain(9)
        assert sorted((m.topic, m.payload, m.qos) for m in got) == sorted(
            (f"cross/{index}/{qos}", f"from {index} at {qos}".encode(), qos)
            for index in range(3) for qos in (0, 1, 2))


def test_retained_messages_are_cluster_wide(per_node: list[Clients]) -> None:
    publisher = per_node[0].paho("retainer")
    publisher.publish("state/lamp", b"on", 1, retain=True)
    publisher.publish("state/door", b"shut", 2, retain=True)
    publisher.publish("state/door", b"open", 1, retain=True)  # replaced everywhere
    for index, clients in enumerate(per_node):
        subscriber = clients.paho(f"late-{index}")
        subscriber.subscribe("state/#", 2)
        got = subscriber.drain(2)
        assert sorted((m.topic, m.payload, m.retain) for m in got) == [
            ("state/door", b"open", True), ("state/lamp", b"on", True)]
    # Cleared through another node: gone on every node.
    per_node[2].paho("clearer").publish("state/lamp", b"", 1, retain=True)
    for index, clients in enumerate(per_node):
        subscriber = clients.paho(f"after-clear-{index}")
        subscriber.subscribe("state/#", 1)
        assert [(m.topic, m.payload) for m in subscriber.drain(1)] == [("state/door", b"open")]


def test_shared_subscription_gives_each_message_to_one_member_in_the_whole_cluster(
        per_node: list[Clients]) -> None:
    members = [clients.paho(f"worker-{index}") for index, clients in enumerate(per_node)]
    for member in members:
        assert member.subscribe("$share/jobs/jobs/#", 1) == [1]
    publisher = per_node[0].paho("dispatcher")
    count = 60
    for number in range(count):
        publisher.publish(f"jobs/{number}", str(number).encode(), 1)
    shares: list[list[bytes]] = []
    for member in members:
        share = []
        with contextlib.suppress(queue.Empty):
            while True:
                share.append(member.messages.get(timeout=0.5).payload)
        shares.append(share)
    got = [payload for share in shares for payload in share]
    assert sorted(got, key=int) == [str(number).encode() for number in range(count)]
    # Round robin across nodes: every node's member took its turn.
    assert all(share for share in shares), [len(share) for share in shares]


def test_no_local_across_nodes(per_node: list[Clients]) -> None:
    """An MQTT 5 No Local subscription skips its own client's messages; the same client id's
    messages still reach a subscriber on another node."""
    own = per_node[0].paho("talker", protocol=mqtt.MQTTv5)
    assert own.subscribe("chat", options=SubscribeOptions(qos=1, noLocal=True)) == [1]
    other = per_node[1].paho("listener", protocol=mqtt.MQTTv5)
    assert other.subscribe("chat", options=SubscribeOptions(qos=1, noLocal=True)) == [1]
    own.publish("chat", b"hello", 1)
    other.publish("chat", b"hi back", 1)
    assert [m.payload for m in other.drain(1)] == [b"hello"]
    assert [m.payload for m in own.drain(1)] == [b"hi back"]


def test_subscription_made_after_start_is_routed_at_once_and_withdrawn_with_the_last(
        per_node: list[Clients]) -> None:
    """The SUBACK waits until every other node routes to the new filter, so a publish through
    another node right after it arrives; after UNSUBSCRIBE nothing is sent there."""
    publisher = per_node[2].paho("eager-publisher")
    for round_number in range(5):
        subscriber = per_node[round_number % 2].paho(f"eager-{round_number}")
        assert subscriber.subscribe(f"eager/{round_number}", 1) == [1]
        publisher.publish(f"eager/{round_number}", b"now", 1)
        assert subscriber.get().payload == b"now"
        subscriber.unsubscribe(f"eager/{round_number}")
        publisher.publish(f"eager/{round_number}", b"later", 1)
        subscriber.assert_no_message()


def test_sys_cluster_totals_count_every_member(nodes: list[BrokerProcess],
                                               per_node: list[Clients]) -> None:
    """`$SYS/cluster/...` sums every member's counters (each worker is a member); a member
    that goes down stops counting."""
    watcher = per_node[0].paho("sys-watcher")
    for index, clients in enumerate(per_node):
        for number in range(index + 1):  # 1, 2 and 3 more clients on nodes A, B and C
            clients.paho(f"counted-{index}-{number}")
    members = 3 * nodes[0].workers
    latest: dict[str, bytes] = {}

    def totals_reach(connected: int, counted: int) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                message = watcher.messages.get(timeout=0.2)
                latest[message.topic] = message.payload
            if latest.get("$SYS/cluster/clients/connected") == str(connected).encode() \
                    and latest.get("$SYS/cluster/members") == str(counted).encode():
                return True
        return False

    assert watcher.subscribe("$SYS/cluster/#", 0) == [0]
    assert totals_reach(7, members), latest
    nodes[2].kill()
    assert totals_reach(4, members - nodes[2].workers), latest
