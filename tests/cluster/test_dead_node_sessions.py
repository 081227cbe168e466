"""A session whose node died is served by another node at once, from the dead node's store in
Redis (`[storage] backend = "redis"`, the default when clustered), with real nodes on a real
Redis and a real kill -9:

- the client reconnects to another node: Session Present 1, its subscriptions, and the
  messages queued for it before the kill, at once;
- what was published to it while its node was down, before it reconnected, comes right after
  the CONNACK, read from the dead node's stream in Redis: the dead node need never come back;
  when it does, what it sends on (and what reached the session both ways) comes once;
- a node paused past its lease (SIGSTOP): its session is taken from its store likewise, and
  the node, when it runs again, sends nothing the session already had.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.cluster.conftest import offline_session, publish_numbered
from tests.cluster.test_session_moves import pause
from tests.conftest import BrokerProcess
from tests.integration.clients import Clients, wait_until
from tests.robustness.durability_clients import commit_barrier


def wait_down(node: BrokerProcess) -> None:
    """Until `node` has seen node A down: with workers, each of its workers has seen each of
    node A's (a heartbeat, at most 0.5 s, after the first of them)."""
    node.wait_for_log("is down", timeout=10)
    time.sleep(1.0)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("qos", [1, 2])
def test_a_dead_nodes_session_is_served_elsewhere_at_once(
        nodes: list[BrokerProcess], per_node: list[Clients], qos: int) -> None:
    first, second, _third = nodes
    a, b, c = per_node
    offline_session(a, "stranded", "stranded/#", qos)
    publisher = c.paho("stranded-pub")
    # acknowledged: queued for the session, in node A's store
    publish_numbered(publisher, "stranded", range(3), qos)
    first.kill()
    wait_down(second)
    publish_numbered(publisher, "stranded", range(3, 5), qos)  # to node A's stream, it down
    moved = b.raw()
    started = time.monotonic()
    assert moved.connect("stranded", clean=False).session_present
    took = time.monotonic() - started
    got = [moved.receive(timeout=10).payload for _ in range(5)]
    # What the dead node held, then what its stream holds for the session (read from Redis).
    assert got == [b"0", b"1", b"2", b"3", b"4"], "what the dead node had did not come at once"
    second.wait_for_log("client stranded: session taken over from node-a")
    second.wait_for_log("client stranded: 2 messages from the stream of node-a")
    # Routed to node B now (and still to node A's stream, for node A's other sessions).
    publish_numbered(publisher, "stranded", range(5, 7), qos)
    assert [moved.receive(timeout=10).payload for _ in range(2)] == [b"5", b"6"]
    moved.assert_silent(0.5)
    first.start()
    # Node A, back, reads node B's SETTLED after 3 and 4 and sends them on: they came
    # already, and so did 5 and 6, which reached both nodes.
    first.wait_for_log("client stranded: its session was taken from this member's store")
    moved.assert_silent()
    print(f"CONNECT to CONNACK with the dead node's session: {took * 1000:.1f} ms")


@pytest.mark.timeout(90)
def test_what_a_dead_node_got_comes_once_though_the_node_that_took_over_died_too(
        nodes: list[BrokerProcess], per_node: list[Clients]) -> None:
    """Node B takes the session of dead node A, with what node A's stream holds for it, gets
    messages directly, and is killed too: node A, back, sends what it got before node B's
    SETTLED, and node B, back, remembers (stored) that the session had all of it: nothing
    comes twice."""
    first, second, _third = nodes
    a, b, c = per_node
    offline_session(a, "twice-stranded", "twice/#")
    first.kill()
    wait_down(second)
    publisher = c.paho("twice-pub")
    publish_numbered(publisher, "twice", range(3))  # to node A's stream only
    moved = b.raw()
    assert moved.connect("twice-stranded", clean=False).session_present
    second.wait_for_log("client twice-stranded: session taken over from node-a")
    assert [moved.receive(timeout=10).payload for _ in range(3)] == [b"0", b"1", b"2"]
    publish_numbered(publisher, "twice", range(3, 6))  # to node B, and to node A's stream
    assert [moved.receive(timeout=10).payload for _ in range(3)] == [b"3", b"4", b"5"]
    moved.assert_silent(0.3)
    commit_barrier(second)  # the PUBACKs of 3, 4 and 5 are committed
    second.kill()
    first.start()
    # Node A serves again: it has read its stream, and sent node B what it got before.
    assert wait_until(lambda: first.log_text().count(" serving: listeners") == 2, 20)
    second.start()
    back = b.raw()
    assert back.connect("twice-stranded", clean=False).session_present
    back.assert_silent()


@pytest.mark.timeout(60)
def test_a_paused_nodes_session_is_taken_from_its_store(
        nodes: list[BrokerProcess], per_node: list[Clients]) -> None:
    first, second, _third = nodes
    a, b, c = per_node
    offline_session(a, "sleeper", "wake/#")
    publisher = c.paho("wake-pub")
    publish_numbered(publisher, "wake", range(3))
    pause(first, signal.SIGSTOP)
    try:
        wait_down(second)
        new = b.raw()
        assert new.connect("sleeper", clean=False).session_present
        assert [new.receive().payload for _ in range(3)] == [b"0", b"1", b"2"]
        publisher.publish("wake/3", b"3", 1)
        assert new.receive().payload == b"3"
    finally:
        pause(first, signal.SIGCONT)
    first.wait_for_log("client sleeper: claimed by", timeout=10)
    # Node A still held 0, 1 and 2 in memory, and 3 reached its stream: none comes again.
    new.assert_silent(1.0)
