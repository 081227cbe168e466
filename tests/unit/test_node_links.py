"""Cluster nodes without Redis: a sans-I/O broker core built as a cluster member, its links'
records read straight from in-memory sinks (server/cluster_io.py carries the same bytes over
Redis Streams)."""

from __future__ import annotations

from culex.core.broker import Broker
from culex.core.message import Message
from culex.core.node_links import ClusterSetup, NodeLinks
from culex.core.worker_links import (
    PUBLISH,
    READY,
    ROUTE_ADD,
    WorkerLink,
    record,
    split_records,
)
from culex.protocol.codec import encode_subscribe
from culex.protocol.packets import Subscribe
from tests.unit.core_helpers import FakeSink, Harness


class NodeHarness(Harness):
    """A harness whose broker is member `member` of a cluster."""

    def __init__(self, member: int) -> None:
        super().__init__()
        self.lost: list[int] = []
        self.broker = Broker(cluster=ClusterSetup(member, self.lost.append))


def records(sink: FakeSink) -> list[tuple[int, bytes]]:
    found: list[tuple[int, bytes]] = []
    assert split_records(bytes(sink.data), found) == len(sink.data)
    return found


def test_a_new_link_gets_filters_retained_messages_and_ready_but_no_sys() -> None:
    node = NodeHarness(5)
    links = node.broker.links
    assert isinstance(links, NodeLinks)
    client = node.connected("any-client-id-at-all")  # never handed to another node
    client.send(encode_subscribe(Subscribe(1, [("room/+", 1)])))
    node.broker.publish(Message("room/1", b"warm", 1, retain=True))
    node.broker.publish(Message("$SYS/broker/uptime", b"5 seconds", 0, retain=True))
    sink = FakeSink()
    link = links.attach(9, sink, 0.0)
    assert isinstance(link, WorkerLink)
    node.broker.flush()
    kinds = records(sink)
    assert kinds[0] == (ROUTE_ADD, b"room/+")
    assert [kind for kind, _ in kinds] == [ROUTE_ADD, PUBLISH, READY]
    assert kinds[1][1].endswith(b"room/1warm")
    # $SYS is each node's own: published locally, never sent to another node.
    before = len(sink.data)
    node.broker.publish(Message("$SYS/broker/uptime", b"6 seconds", 0, retain=True))
    node.broker.flush()
    assert len(sink.data) == before


def test_a_member_is_ready_once_its_link_said_so() -> None:
    node = NodeHarness(0)
    links = node.broker.links
    assert isinstance(links, NodeLinks)
    assert links.ready(set())
    links.attach(1, FakeSink(), 0.0)
    assert not links.ready({1})
    links.data_received(1, record(READY, b""), 0.0)
    assert links.ready({1})
    links.detach(1)
    assert node.lost == [1]
    assert not links.ready({1})
