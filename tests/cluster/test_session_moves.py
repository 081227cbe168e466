"""Sessions that move between nodes (core/session_moves.py), with real nodes on a real Redis:

- a persistent session created on node A resumes on node B with its subscriptions and queued
  messages, and its in-flight QoS 1/2 state (exactly once across the move);
- a connection on node B takes the client id over from node A: the old connection is closed
  (DISCONNECT 0x8E "Session taken over" for MQTT 5);
- a node paused past its lease (SIGSTOP, then SIGCONT) does not deliver for a session whose id
  another node claimed meanwhile;
- with `[storage] backend = "sqlite"`, a node killed while it holds a session hands what that
  session held to the node its client went to, when it comes back: nothing acknowledged is
  lost (with the default, Redis, the other node takes it at once: test_dead_node_sessions.py).
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.cluster.conftest import NodeFactory, clients_of, offline_session, publish_numbered
from tests.cluster.redis_servers import RedisServer
from tests.conftest import BrokerProcess
from tests.integration.clients import (
    CONNACK,
    PUBLISH,
    PUBREL,
    Clients,
    ConnectResult,
    PahoClient,
    RawClient,
    connect_packet,
    pubcomp,
    publish_packet,
    pubrec,
    pubrel,
)

SESSION_TAKEN_OVER = 0x8E


@pytest.fixture
def three_nodes(redis_server: RedisServer, cluster_nodes: NodeFactory) -> list[BrokerProcess]:
    return cluster_nodes([redis_server.url])


@pytest.fixture
def sqlite_nodes(redis_server: RedisServer, cluster_nodes: NodeFactory) -> list[BrokerProcess]:
    """Nodes that keep their state in their own SQLite file: a session is reachable only
    through its node (test_dead_node_sessions.py: the default, in Redis)."""
    return cluster_nodes([redis_server.url], storage={"backend": "sqlite"})


@pytest.fixture
def per_sqlite_node(sqlite_nodes: list[BrokerProcess]) -> Iterator[list[Clients]]:
    yield from clients_of(sqlite_nodes)


@pytest.fixture
def per_node1(three_nodes: list[BrokerProcess]) -> Iterator[list[Clients]]:
    yield from clients_of(three_nodes)


def persistent(clients: Clients, client_id: str,
               protocol: mqtt.MQTTProtocolVersion) -> tuple[PahoClient, ConnectResult]:
    """A client that keeps its session: clean session 0, or Clean Start 0 with an expiry."""
    client = clients.paho(client_id, protocol=protocol, clean_session=False, connect=False)
    properties = None
    if protocol == mqtt.MQTTv5:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
    return client, client.connect(properties=properties)


def pause(node: BrokerProcess, signal_number: signal.Signals) -> None:
    assert node.proc is not None
    os.killpg(node.proc.pid, signal_number)


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["3.1.1", "5.0"])
def test_persistent_session_resumes_on_another_node_with_its_queued_messages(
        nodes: list[BrokerProcess], per_node: list[Clients],
        protocol: mqtt.MQTTProtocolVersion) -> None:
    first, result = persistent(per_node[0], "mover", protocol)
    assert not result.session_present
    assert first.subscribe("moving/#", 2) == [2]
    first.disconnect()
    publisher = per_node[2].paho("mover-pub", protocol=protocol)
    expected = []
    for qos in (1, 2):
        for number in range(5):
            publisher.publish(f"moving/{qos}/{number}", f"{qos}-{number}".encode(), qos)
            expected.append((f"moving/{qos}/{number}", qos))

    second, result = persistent(per_node[1], "mover", protocol)
    assert result.session_present, "the session did not come along"
    got = second.drain(len(expected))
    assert [(m.topic, m.qos) for m in got] == expected  # in order, once each
    # Its subscription moved with it: routed to node B now, and only there.
    publisher.publish("moving/after", b"after", 1)
    assert [m.payload for m in second.drain(1)] == [b"after"]
    nodes[1].wait_for_log("client mover: session taken over from member")
    nodes[0].wait_for_log("client mover: session handed to member")
    second.disconnect()

    # And back to node A: the session follows again, and nothing is queued twice.
    publisher.publish("moving/back", b"back", 1)
    third, result = persistent(per_node[0], "mover", protocol)
    assert result.session_present
    assert [m.payload for m in third.drain(1)] == [b"back"]


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["3.1.1", "5.0"])
def test_takeover_across_nodes_closes_the_old_connection(
        per_node1: list[Clients], protocol: mqtt.MQTTProtocolVersion) -> None:
    old = per_node1[0].paho("twin", protocol=protocol)
    assert old.subscribe("twin/#", 1) == [1]
    new = per_node1[1].paho("twin", protocol=protocol)  # Clean Start 1: a new session
    assert not new.connect_result or not new.connect_result.session_present
    assert old.disconnected.wait(5), "the old connection on node A is still open"
    if protocol == mqtt.MQTTv5:
        assert old.disconnect_reason == SESSION_TAKEN_OVER
    # The old session ended with it (Clean Start 1): its subscription is gone everywhere.
    assert new.subscribe("other/#", 1) == [1]
    per_node1[2].paho("twin-pub").publish("twin/x", b"x", 1)
    new.assert_no_message()


def test_in_flight_qos2_state_moves_exactly_once(per_node1: list[Clients]) -> None:
    """Outbound: one QoS 2 message past PUBREC (PUBREL is what is owed) and one not yet
    acknowledged; inbound: a QoS 2 message received (PUBREC sent) and not yet released.
    On node B: PUBREL again for the first, the second again with DUP, and the client's PUBREL
    completes the inbound one without delivering it twice."""
    a, b, c = per_node1
    watcher = c.paho("exactly-once-watcher")
    assert watcher.subscribe("inbound/#", 2) == [2]
    old = a.raw("carrier", clean=False)
    assert old.subscribe([("outbound/#", 2)]) == [2]
    publisher = c.paho("carrier-pub")
    publisher.publish("outbound/1", b"one", 2)
    publisher.publish("outbound/2", b"two", 2)
    first = old.expect_publish()
    second = old.expect_publish()
    assert [first.payload, second.payload] == [b"one", b"two"]
    old.send(pubrec(first.packet_id))
    assert old.expect(PUBREL).packet_id == first.packet_id
    old.send(publish_packet("inbound/x", b"in", qos=2, packet_id=7))
    assert old.read_packet().raw == pubrec(7)
    old.drop()

    new = b.raw()
    assert new.connect("carrier", clean=False).session_present
    resent = [new.read_packet(), new.read_packet()]
    assert resent[0].raw == pubrel(first.packet_id)
    again = resent[1].publish()
    assert (again.payload, again.dup, again.packet_id) == (b"two", True, second.packet_id)
    new.send(pubcomp(first.packet_id))
    new.complete(again)
    new.send(pubrel(7))
    assert new.read_packet().raw == pubcomp(7)
    assert [m.payload for m in watcher.drain(1)] == [b"in"]  # once, not again after PUBREL
    new.assert_silent()


def test_a_paused_node_does_not_deliver_for_sessions_claimed_elsewhere(
        sqlite_nodes: list[BrokerProcess], per_sqlite_node: list[Clients]) -> None:
    first, second, _third = sqlite_nodes
    a, b, c = per_sqlite_node
    old = a.raw("sleeper", clean=False)
    assert old.subscribe([("wake/#", 1)]) == [1]
    publisher = c.paho("wake-pub")
    publisher.publish("wake/first", b"first", 1)
    assert old.receive().payload == b"first"  # node C routes wake/# to node A
    pause(first, signal.SIGSTOP)
    try:
        second.wait_for_log("cluster: node-a is down", timeout=10)
        new = b.raw()
        assert not new.connect("sleeper", clean=False).session_present
        assert new.subscribe([("wake/#", 1)]) == [1]
        for number in range(5):
            publisher.publish(f"wake/{number}", str(number).encode(), 1)
        got = [new.receive().payload for _ in range(5)]
        assert got == [str(number).encode() for number in range(5)]
    finally:
        pause(first, signal.SIGCONT)
    first.wait_for_log("client sleeper: claimed by", timeout=10)
    # The old connection is closed without one of the messages its node read afterwards.
    assert not [packet for packet in old.wait_closed() if packet.type == PUBLISH]
    new.assert_silent()
    # Node A serves on: its own new subscriber gets what is published now.
    fresh = a.paho("after-pause")
    assert fresh.subscribe("wake/#", 1) == [1]
    c.paho("wake-pub-2").publish("wake/late", b"late", 1)
    assert [m.payload for m in fresh.drain(1)] == [b"late"]
    assert new.receive().payload == b"late"


def test_a_killed_node_hands_its_sessions_over_when_it_comes_back(
        sqlite_nodes: list[BrokerProcess], per_sqlite_node: list[Clients]) -> None:
    first, second, _third = sqlite_nodes
    a, b, c = per_sqlite_node
    offline_session(a, "stranded", "stranded/#")
    publish_numbered(c.paho("stranded-pub"), "stranded", range(3))  # acknowledged
    first.kill()
    second.wait_for_log("cluster: node-a is down", timeout=10)
    moved = b.raw()
    assert not moved.connect("stranded", clean=False).session_present  # its node is dead
    first.start()
    first.wait_for_log("client stranded: claimed by", timeout=10)
    got = [moved.receive(timeout=10).payload for _ in range(3)]
    assert got == [b"0", b"1", b"2"]
    moved.assert_silent()


def test_messages_published_while_a_session_moves_arrive_once(
        three_nodes: list[BrokerProcess], per_node1: list[Clients]) -> None:
    """QoS 2 publishers on all three nodes publish without pause while a persistent session
    moves from node to node eight times: the session gets every message they had
    acknowledged, each once and each publisher's in order, whichever node it was on and
    whichever way a message came (the old node collects until every node routes to the new
    one, what came both ways is recognised by its cluster-wide id, and what the old node
    collected goes ahead of what came to the new one directly)."""
    a, b, c = per_node1
    first = a.raw("nomad", clean=False)
    assert first.subscribe([("roam/#", 2)]) == [2]
    first.disconnect()
    stop = threading.Event()
    acknowledged: list[bytes] = []
    lock = threading.Lock()

    def publish(clients: Clients, name: str) -> None:
        publisher = clients.paho(f"roam-pub-{name}")
        number = 0
        while not stop.is_set():
            payload = f"{name}-{number}".encode()
            publisher.publish("roam/x", payload, 2)
            with lock:
                acknowledged.append(payload)
            number += 1
            time.sleep(0.002)

    publishers = [threading.Thread(target=publish, args=(clients, name), daemon=True)
                  for clients, name in ((a, "a"), (b, "b"), (c, "c"))]
    for thread in publishers:
        thread.start()
    received: list[bytes] = []
    try:
        for hop in range(8):
            holder = per_node1[(hop + 1) % 2].raw()
            assert holder.connect("nomad", clean=False).session_present
            received += drain_qos2(holder, 0.3, until_quiet=False)
            holder.disconnect()
    finally:
        stop.set()
        for thread in publishers:
            thread.join(10)
    last = a.raw()
    assert last.connect("nomad", clean=False).session_present
    received += drain_qos2(last, 1.0, until_quiet=True)
    missing = set(acknowledged) - set(received)
    twice = sorted({payload for payload in received if received.count(payload) > 1})
    assert len(acknowledged) > 100, len(acknowledged)  # about 700 on an idle machine
    assert not missing, (f"{len(missing)} of {len(acknowledged)} never arrived: "
                         f"{sorted(missing)[:10]}")
    assert not twice, f"delivered twice: {twice[:10]}"
    for name in "abc":  # what reached the old node during a move comes before what came after
        numbers = [int(payload.split(b"-")[1]) for payload in received
                   if payload.startswith(f"{name}-".encode())]
        late = [(earlier, later) for earlier, later in itertools.pairwise(numbers)
                if later < earlier]
        assert not late, f"roam-pub-{name}: out of order at {late[:10]}"


def drain_qos2(client: RawClient, seconds: float, *, until_quiet: bool) -> list[bytes]:
    """The QoS 2 messages that come for `seconds` (or until `seconds` pass without a packet),
    each answered (PUBREC, then PUBCOMP for its PUBREL); one counts when its PUBREC goes out."""
    got = []
    deadline = time.monotonic() + seconds
    while True:
        wait = seconds if until_quiet else deadline - time.monotonic()
        if wait <= 0:
            return got
        try:
            packet = client.read_packet(wait)
        except TimeoutError:
            return got
        if packet.type == PUBLISH:
            message = packet.publish()
            got.append(message.payload)
            client.send(pubrec(message.packet_id))
        elif packet.type == PUBREL:
            client.send(pubcomp(packet.packet_id))


def queued_on_b(nodes: list[BrokerProcess], clients: list[Clients], client_id: str) -> None:
    """Once every node serves (node B may then be paused for less than its lease): a
    persistent session `client_id` on node B, with three QoS 1 messages queued."""
    for node in nodes:
        node.wait_for_log("serving:")
    offline_session(clients[1], client_id, f"{client_id}/#")
    publish_numbered(clients[0].paho(f"{client_id}-pub"), client_id, range(3))


def assert_resumed(client: RawClient) -> None:
    """`client`'s CONNECT is answered with its session and its three queued messages."""
    connack = client.expect(CONNACK, timeout=10)
    assert connack.body == b"\x01\x00"  # Session Present 1
    got = [client.expect_publish() for _ in range(3)]
    assert [message.payload for message in got] == [b"0", b"1", b"2"]


def test_a_session_asked_for_on_its_way_goes_on_once_it_is_there(
        three_nodes: list[BrokerProcess], per_node1: list[Clients]) -> None:
    """Node C asks node B for a session, and before B answers (paused, within its lease) the
    client connects to node A, which asks C: C passes the session on to A once it has come,
    rather than answering A that it has none. A's connection gets it all, C's is closed."""
    _first, second, third = three_nodes
    a, _b, c = per_node1
    queued_on_b(three_nodes, per_node1, "relay")
    pause(second, signal.SIGSTOP)
    try:
        on_c = c.raw()
        on_c.send(connect_packet("relay", clean=False))
        third.wait_for_log("client relay: held by node-b", timeout=5)
        on_a = a.raw()
        on_a.send(connect_packet("relay", clean=False))
        on_a.assert_silent(0.5)  # no CONNACK while its session is on its way to node C
    finally:
        pause(second, signal.SIGCONT)
    assert_resumed(on_a)
    on_c.wait_closed()
    on_a.assert_silent()


def test_a_node_that_starts_again_hands_on_a_session_that_came_while_it_was_down(
        three_nodes: list[BrokerProcess], per_node1: list[Clients]) -> None:
    """Node C asks node B for a session and is killed; the client connects to node A, which
    asks C; then B answers C. C's stream now holds A's question before B's answer: C, started
    again, answers once it has read both, with the session."""
    first, second, third = three_nodes
    a, _b, c = per_node1
    queued_on_b(three_nodes, per_node1, "relay-2")
    pause(second, signal.SIGSTOP)
    try:
        c.raw().send(connect_packet("relay-2", clean=False))
        third.wait_for_log("client relay-2: held by node-b", timeout=5)
        third.kill()
        on_a = a.raw()
        on_a.send(connect_packet("relay-2", clean=False))
        first.wait_for_log("client relay-2: held by node-c", timeout=5)
    finally:
        pause(second, signal.SIGCONT)
    second.wait_for_log("client relay-2: session handed to member 2", timeout=5)
    third.start()
    assert_resumed(on_a)
    on_a.assert_silent()
