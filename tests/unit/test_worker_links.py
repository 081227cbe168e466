"""Worker processes without processes: two sans-I/O broker cores linked in memory.

Each `Harness` is one worker; `Link` carries the records one worker writes to the other when the
test pumps it, so the order of events across workers is the test's to choose (a real link is a
socket pair: the same bytes, a little later).
"""

from __future__ import annotations

import pytest

from culex.core.broker import WorkerSetup
from culex.core.limits import Limits
from culex.core.worker_links import (
    BARRIER,
    FORWARD,
    PUBLISH,
    ROUTE_ADD,
    WorkerLink,
    owner_of,
    record,
)
from culex.protocol.codec import encode_connect, encode_subscribe
from culex.protocol.packets import Connect, Puback, Publish, Suback, Subscribe
from tests.unit.core_helpers import FakeClient, FakeSink, Harness


class Link(FakeSink):
    """One direction of a link: what one worker wrote, for the other to read."""

    def __init__(self) -> None:
        super().__init__()
        self.delivered = 0


class Workers:
    """Two linked workers and their clients; `pump()` moves records until both are quiet."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.moved: list[tuple[int, bytes]] = []
        self.harnesses = [
            Harness(limits, workers=WorkerSetup(
                index, 2, hand_over=lambda worker, sink, data, address, user: self.moved.append(
                    (worker, data)), all_ready=lambda: None, link_lost=lambda index: None))
            for index in range(2)]
        self.clusters = []
        for harness in self.harnesses:
            assert harness.broker.links is not None
            self.clusters.append(harness.broker.links)
        self.links = {0: Link(), 1: Link()}  # writer index -> its link to the other
        for index, cluster in enumerate(self.clusters):
            cluster.attach(1 - index, self.links[index], 0.0)

    def pump(self) -> None:
        for _ in range(100):
            for harness in self.harnesses:
                harness.broker.flush()
            quiet = True
            for writer, link in self.links.items():
                new = bytes(link.data[link.delivered:])
                if new:
                    quiet = False
                    link.delivered = len(link.data)
                    self.clusters[1 - writer].data_received(writer, new, 0.0)
            if quiet:
                return
        raise AssertionError("the workers never went quiet")

    def client(self, client_id: str) -> FakeClient:
        """A client connected to the worker that owns `client_id` (as after a move)."""
        client = self.harnesses[owner_of(client_id, 2)].client()
        assert client.connect(client_id).return_code == 0
        self.pump()
        return client

    def subscribe(self, client: FakeClient, *topics: tuple[str, int]) -> None:
        client.send(encode_subscribe(Subscribe(client.next_packet_id(), list(topics))))
        self.pump()
        assert isinstance(client.received_packets()[0], Suback)


def ids_on_both_workers() -> tuple[str, str]:
    """Two client ids, one owned by each worker."""
    first = next(f"c{n}" for n in range(100) if owner_of(f"c{n}", 2) == 0)
    second = next(f"c{n}" for n in range(100) if owner_of(f"c{n}", 2) == 1)
    return first, second


def test_a_connect_for_the_other_worker_moves_with_every_byte_read() -> None:
    workers = Workers()
    _, one = ids_on_both_workers()
    client = workers.harnesses[0].client()
    connect = encode_connect(Connect(one, "MQTT", 4, True, 30))
    publish_and_partial = b"\x30\x05\x00\x01tx" + b"\x30\x05"
    client.send(connect + publish_and_partial)
    assert workers.moved == [(1, connect + publish_and_partial)]
    assert client.connection.closed and not client.sink.writes  # nothing answered here
    assert client.connection not in workers.harnesses[0].broker.connections


def test_subscription_on_one_worker_gets_messages_published_on_the_other() -> None:
    workers = Workers()
    zero, one = ids_on_both_workers()
    subscriber = workers.client(zero)
    workers.subscribe(subscriber, ("t/+", 1))
    publisher = workers.client(one)
    publisher.publish("t/a", b"qos0")
    publisher.publish("t/a", b"qos1", qos=1, packet_id=7)
    workers.pump()
    got = subscriber.publishes()
    assert [(p.payload, p.qos) for p in got] == [(b"qos0", 0), (b"qos1", 1)]


def test_suback_waits_until_the_other_worker_knows_the_route() -> None:
    workers = Workers()
    zero, _ = ids_on_both_workers()
    subscriber = workers.client(zero)
    subscriber.send(encode_subscribe(Subscribe(3, [("r/t", 0)])))
    assert subscriber.received_packets() == []  # the barrier is out, not yet answered
    assert subscriber.connection.reading is False  # and nothing may overtake it
    workers.pump()
    assert [type(p) for p in subscriber.received_packets()] == [Suback]
    assert subscriber.connection.reading is True
    assert workers.clusters[1].routes.match("r/t") == [(0, 0)]


def test_puback_of_a_retained_message_waits_for_every_other_worker() -> None:
    """After the PUBACK, a subscriber through any worker must find the message."""
    workers = Workers()
    _, one = ids_on_both_workers()
    publisher = workers.client(one)
    publisher.publish("q/t", b"x", qos=1, retain=True, packet_id=9)
    assert publisher.received_packets() == []
    workers.pump()
    assert [type(p) for p in publisher.received_packets()] == [Puback]
    assert workers.harnesses[0].broker.retained.get("q/t") is not None


def test_puback_of_a_message_routed_to_the_other_worker_leaves_at_once_without_sync() -> None:
    """Without a durable store the ack promises nothing of the other worker that the link's
    order does not keep. (With durability "sync" it waits for that worker's commit:
    tests/integration/test_workers.py kills such a broker with kill -9.)"""
    workers = Workers()
    zero, one = ids_on_both_workers()
    subscriber = workers.client(zero)
    workers.subscribe(subscriber, ("q/t", 1))
    publisher = workers.client(one)
    publisher.publish("q/t", b"x", qos=1, packet_id=9)
    assert [type(p) for p in publisher.received_packets()] == [Puback]
    workers.pump()
    assert [p.payload for p in subscriber.publishes()] == [b"x"]


def test_puback_of_a_message_no_other_worker_wanted_leaves_at_once() -> None:
    workers = Workers()
    _, one = ids_on_both_workers()
    publisher = workers.client(one)
    publisher.publish("nobody/t", b"x", qos=1, packet_id=9)
    assert [type(p) for p in publisher.received_packets()] == [Puback]


def test_retained_message_reaches_every_worker_and_the_newest_wins() -> None:
    workers = Workers()
    zero, one = ids_on_both_workers()
    first, second = workers.client(zero), workers.client(one)
    first.publish("ret/t", b"old", retain=True)
    workers.harnesses[1].tick(1.0)  # stamps are wall-clock time: this one is later
    second.publish("ret/t", b"new", retain=True)
    workers.pump()
    for harness in workers.harnesses:
        message = harness.broker.retained.get("ret/t")
        assert message is not None and message.payload == b"new"


def test_shared_group_with_members_on_both_workers_alternates() -> None:
    workers = Workers()
    zero, one = ids_on_both_workers()
    members = [workers.client(zero), workers.client(one)]
    for member in members:
        workers.subscribe(member, ("$share/g/s/t", 1))
    publisher = workers.client(next(f"p{n}" for n in range(50) if owner_of(f"p{n}", 2) == 1))
    for number in range(4):
        publisher.publish("s/t", str(number).encode(), qos=1, packet_id=number + 1)
        workers.pump()
    got = [sorted(p.payload for p in member.publishes()) for member in members]
    assert sorted(got[0] + got[1]) == [b"0", b"1", b"2", b"3"]
    assert len(got[0]) == len(got[1]) == 2



def test_a_full_subscriber_pauses_the_link_its_messages_come_on() -> None:
    """Back-pressure across workers: a local subscriber over its write buffer stops this
    worker reading the link (whose sender's buffer then fills, pausing the publishers there),
    and its draining resumes it."""
    workers = Workers()
    zero, one = ids_on_both_workers()
    subscriber = workers.client(zero)
    workers.subscribe(subscriber, ("bp/t", 0))
    publisher = workers.client(one)
    subscriber.connection.pause_writing(0.0)
    publisher.publish("bp/t", b"x")
    workers.pump()
    assert workers.clusters[0].links[1].reading is False
    assert workers.links[0].reading_paused  # worker 0's transport of its link to worker 1
    subscriber.connection.resume_writing()
    assert workers.clusters[0].links[1].reading is True
    assert [p.payload for p in subscriber.publishes()] == [b"x"]  # sent anyway, not dropped


def test_qos1_messages_from_one_read_of_the_link_wait_while_the_subscriber_queue_is_full(
) -> None:
    """A read of the link carries far more messages than a subscriber's queue holds. They
    are applied only until the queue is half full; the rest waits, unread, until the
    subscriber acknowledges, so none of the messages the other worker acknowledged is
    dropped at max_queued_messages."""
    workers = Workers(Limits(max_inflight_messages=5, max_queued_messages=20))
    zero, one = ids_on_both_workers()
    subscriber = workers.client(zero)
    workers.subscribe(subscriber, ("flood/t", 1))
    publisher = workers.client(one)
    sent = [str(n).encode() for n in range(100)]
    for packet_id, payload in enumerate(sent, 1):
        publisher.publish("flood/t", payload, qos=1, packet_id=packet_id)
    assert len(publisher.received_packets()) == 100  # all acknowledged (no sync store)
    workers.pump()  # the 100 records cross in one read
    peer = workers.clusters[0].links[1]
    assert peer.deferred and peer.reading is False
    got: list[bytes] = []
    for _ in range(100):
        packets = subscriber.received_packets()
        if not packets:
            break
        got += [p.payload for p in packets if isinstance(p, Publish)]
        subscriber.ack_all(packets)
        workers.pump()
    assert got == sent
    assert workers.harnesses[0].broker.stats.publishes_dropped == 0
    assert not peer.deferred and peer.reading is True


def test_a_full_link_pauses_the_publishers_that_feed_it() -> None:
    workers = Workers()
    zero, one = ids_on_both_workers()
    workers.subscribe(workers.client(zero), ("bp/t", 0))
    publisher = workers.client(one)
    workers.clusters[1].pause_writing(0, 0.0)  # the transport says: link to worker 0 is full
    publisher.publish("bp/t", b"x")
    assert publisher.connection.reading is False
    workers.clusters[1].resume_writing(0)
    assert publisher.connection.reading is True


def test_a_link_full_for_longer_than_the_stalled_reader_timeout_drops_nothing() -> None:
    """A client that reads nothing for stalled_reader_timeout loses its QoS 0 messages; a
    link does not: the worker behind it is alive and holds its own full subscribers to that
    rule, so its publishers here stay paused instead."""
    workers = Workers(Limits(stalled_reader_timeout=2.0))
    zero, one = ids_on_both_workers()
    subscriber = workers.client(zero)
    workers.subscribe(subscriber, ("slow/t", 0))
    publisher = workers.client(one)
    sending = workers.harnesses[1]
    workers.clusters[1].pause_writing(0, sending.now)
    publisher.publish("slow/t", b"1")
    sending.tick(sending.now + 5.0)
    publisher.publish("slow/t", b"2")  # read before its pause took effect
    assert publisher.connection.reading is False
    workers.clusters[1].resume_writing(0)
    workers.pump()
    assert [p.payload for p in subscriber.publishes()] == [b"1", b"2"]
    assert sending.broker.stats.publishes_dropped == 0


def test_a_worker_that_goes_away_is_forgotten() -> None:
    workers = Workers()
    zero, one = ids_on_both_workers()
    workers.subscribe(workers.client(zero), ("gone/t", 1))
    publisher = workers.client(one)
    assert workers.clusters[1].routes.match("gone/t") == [(0, 0)]
    workers.clusters[1].detach(0)
    assert workers.clusters[1].routes.match("gone/t") == []
    publisher.publish("gone/t", b"x", qos=1, packet_id=4)  # nothing to wait for any more
    assert [type(p) for p in publisher.received_packets()] == [Puback]


@pytest.mark.parametrize("step", [1, 3, 7, 4096])
def test_records_split_anywhere_come_out_whole(step: int) -> None:
    """A link delivers records cut anywhere: whole, byte by byte, or in odd pieces."""
    records = [(ROUTE_ADD, b"a/+"), (FORWARD, b"\x30\x05\x00\x01txy" * 300), (BARRIER, b""),
               (PUBLISH, bytes(range(256)) * 20)]
    stream = b"".join(record(kind, body) for kind, body in records)
    peer = WorkerLink(1, FakeSink(), 0.0, resume=lambda peer: None,
                      process=lambda peer, records: None)
    got = []
    for start in range(0, len(stream), step):
        got += peer.records(stream[start:start + step])
    assert got == records
    assert peer.records(b"") == []
