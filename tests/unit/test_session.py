"""Sessions: resume after reconnect (DUP, same ids, PUBREL, then the queue), offline queueing
and its bound, clean session 1 discarding everything; and the Session class on its own."""

from __future__ import annotations

from types import SimpleNamespace

from culex.core.limits import Limits
from culex.core.message import Message
from culex.core.session import Session, SessionTable
from culex.protocol.codec import decode_packet
from culex.protocol.packets import Connack, Publish, Pubrel
from culex.protocol.reader import FrameReader
from tests.unit.core_helpers import FakeClient, Harness, payloads


def persistent_subscriber(harness: Harness, topic_filter: str = "t", qos: int = 1,
                          client_id: str = "sub") -> FakeClient:
    client = harness.connected(client_id, clean_session=False)
    assert client.subscribe((topic_filter, qos)) == [qos]
    return client


class TestResume:
    def test_inflight_resent_with_dup_and_same_ids_then_queued(self) -> None:
        harness = Harness()
        sub = persistent_subscriber(harness)
        pub = harness.connected("pub")
        pub.publish("t", b"m1", qos=1)
        pub.publish("t", b"m2", qos=1)
        online = sub.publishes()
        assert [(p.payload, p.dup) for p in online] == [(b"m1", False), (b"m2", False)]
        sub.lose()  # no PUBACKs: both stay in flight

        pub.publish("t", b"m3", qos=1)
        pub.publish("t", b"lost", qos=0)  # QoS 0 is not queued for an offline client
        pub.publish("t", b"m4", qos=2)  # granted 1: queued at QoS 1

        again = harness.client()
        connack = again.connect("sub", clean_session=False)
        assert (connack.return_code, connack.session_present) == (0, True)
        resumed = again.publishes()
        assert [(p.payload, p.dup, p.qos) for p in resumed] == [
            (b"m1", True, 1), (b"m2", True, 1), (b"m3", False, 1), (b"m4", False, 1)]
        assert [p.packet_id for p in resumed[:2]] == [p.packet_id for p in online]
        assert len({p.packet_id for p in resumed}) == 4
        again.ack_all(resumed)
        session = harness.broker.sessions.get("sub")
        assert session is not None and session.inflight == {} and not session.queue

    def test_connack_comes_before_the_resent_messages(self) -> None:
        harness = Harness()
        sub = persistent_subscriber(harness)
        sub.lose()
        harness.connected("pub").publish("t", b"queued", qos=1)
        again = harness.client()
        again.connect("sub", clean_session=False)
        reader = FrameReader(10**9, connect_only=False)
        packets = [decode_packet(*frame) for frame in reader.feed(bytes(again.sink.data))]
        assert isinstance(packets[0], Connack)
        assert payloads(packets[1:]) == [b"queued"]

    def test_resume_respects_the_inflight_window(self) -> None:
        harness = Harness(Limits(max_inflight_messages=2))
        sub = persistent_subscriber(harness)
        pub = harness.connected("pub")
        for index in range(2):
            pub.publish("t", b"%d" % index, qos=1)
        online = sub.publishes()
        assert len(online) == 2
        sub.lose()
        for index in range(2, 5):
            pub.publish("t", b"%d" % index, qos=1)
        again = harness.client()
        assert again.connect("sub", clean_session=False).session_present
        resumed = again.publishes()
        assert [(p.payload, p.dup) for p in resumed] == [(b"0", True), (b"1", True)]
        again.puback(resumed[0].packet_id)
        [next_one] = again.publishes()
        assert (next_one.payload, next_one.dup) == (b"2", False)
        assert next_one.packet_id != resumed[1].packet_id

    def test_pubrel_resent_for_a_pubrecd_qos2_message(self) -> None:
        harness = Harness()
        sub = persistent_subscriber(harness, qos=2)
        harness.connected("pub").publish("t", b"q2", qos=2)
        [message] = sub.publishes()
        sub.pubrec(message.packet_id)
        assert sub.received_packets() == [Pubrel(message.packet_id)]
        sub.lose()

        again = harness.client()
        assert again.connect("sub", clean_session=False).session_present
        assert again.received_packets() == [Pubrel(message.packet_id)], \
            "the PUBREL, not the PUBLISH, is re-sent once PUBREC was received"
        again.pubcomp(message.packet_id)
        session = harness.broker.sessions.get("sub")
        assert session is not None and session.inflight == {}
        # and after PUBCOMP, another reconnect re-sends nothing
        again.lose()
        third = harness.client()
        assert third.connect("sub", clean_session=False).session_present
        assert third.received_packets() == []

    def test_unacknowledged_qos2_publish_resent_with_dup(self) -> None:
        harness = Harness()
        sub = persistent_subscriber(harness, qos=2)
        harness.connected("pub").publish("t", b"q2", qos=2)
        [message] = sub.publishes()
        sub.lose()
        again = harness.client()
        again.connect("sub", clean_session=False)
        [resent] = again.publishes()
        assert (resent.packet_id, resent.dup, resent.qos, resent.payload) == (
            message.packet_id, True, 2, b"q2")

    def test_subscriptions_survive_and_route_after_reconnect(self) -> None:
        harness = Harness()
        sub = persistent_subscriber(harness, "a/+")
        sub.disconnect()
        again = harness.client()
        assert again.connect("sub", clean_session=False).session_present
        harness.connected("pub").publish("a/b", b"live", qos=1)
        [message] = again.publishes()
        assert message.payload == b"live"

    def test_offline_subscriber_does_not_block_qos0_to_online_ones(self) -> None:
        harness = Harness()
        persistent_subscriber(harness, qos=0, client_id="offline").lose()
        online = harness.connected("online")
        assert online.subscribe(("t", 0)) == [0]
        harness.connected("pub").publish("t", b"q0")
        assert payloads(online.received_packets()) == [b"q0"]
        again = harness.client()
        assert again.connect("offline", clean_session=False).session_present
        assert again.received_packets() == [], "QoS 0 is not queued for an offline client"

    def test_clean_1_reconnect_discards_everything(self) -> None:
        harness = Harness()
        sub = persistent_subscriber(harness)
        pub = harness.connected("pub")
        pub.publish("t", b"inflight", qos=1)
        assert len(sub.publishes()) == 1
        sub.lose()
        pub.publish("t", b"queued", qos=1)

        clean = harness.client()
        connack = clean.connect("sub", clean_session=True)
        assert (connack.return_code, connack.session_present) == (0, False)
        assert clean.received_packets() == []
        pub.publish("t", b"after", qos=1)
        assert clean.received_packets() == [], "the subscription went with the session"
        assert harness.broker.subscriptions.count == 0
        clean.disconnect()
        assert harness.broker.sessions.get("sub") is None

    def test_queue_bound_drops_and_counts(self) -> None:
        harness = Harness(Limits(max_queued_messages=5))
        sub = persistent_subscriber(harness)
        sub.lose()
        pub = harness.connected("pub")
        for index in range(8):
            pub.publish("t", b"%d" % index, qos=1)
        assert harness.broker.stats.publishes_dropped == 3
        again = harness.client()
        assert again.connect("sub", clean_session=False).session_present
        delivered = again.publishes()
        assert payloads(delivered) == [b"0", b"1", b"2", b"3", b"4"]
        again.ack_all(delivered)
        assert again.received_packets() == []
        # once drained the queue accepts again
        pub.publish("t", b"later", qos=1)
        assert payloads(again.received_packets()) == [b"later"]
        assert harness.broker.stats.publishes_dropped == 3

    def test_queue_bound_applies_behind_a_full_window(self) -> None:
        harness = Harness(Limits(max_inflight_messages=1, max_queued_messages=2))
        sub = persistent_subscriber(harness)
        pub = harness.connected("pub")
        for index in range(5):
            pub.publish("t", b"%d" % index, qos=1)
        assert harness.broker.stats.publishes_dropped == 2
        got: list[bytes] = []
        while batch := sub.publishes():
            got += payloads(batch)
            sub.ack_all(batch)
        assert got == [b"0", b"1", b"2"]

    def test_offline_clean_0_session_counts_as_disconnected(self) -> None:
        harness = Harness()
        persistent_subscriber(harness).lose()
        assert harness.broker.stats.clients_connected == 0
        assert len(harness.broker.sessions) == 1
        values = harness.broker.sys.values(0.0)
        assert values["$SYS/broker/clients/disconnected"] == "1"
        assert values["$SYS/broker/clients/total"] == "1"


# -- the Session class on its own -------------------------------------------------------------

class RecordingConnection:
    """Stands in for Connection: records what the session sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bytes]] = []
        # The session reads the broker's clock (message expiry) through its connection.
        self.broker = SimpleNamespace(now=0.0)

    def send_publish(self, frames: list[bytes]) -> None:
        packet = decode_packet(*FrameReader(10**9, connect_only=False).feed(b"".join(frames))[0])
        assert isinstance(packet, Publish)
        self.sent.append(("publish", packet.packet_id, packet.payload))

    def send_pubrel(self, packet_id: int) -> None:
        self.sent.append(("pubrel", packet_id, b""))


def online_session(max_inflight: int = 3, max_queued: int = 10) -> tuple[Session,
                                                                         RecordingConnection]:
    session = Session("s", False, max_inflight, max_queued)
    connection = RecordingConnection()
    session.connection = connection  # type: ignore[assignment]
    return session, connection


def msg(payload: bytes, qos: int = 1) -> Message:
    return Message("t", payload, qos)


class TestSessionClass:
    def test_packet_ids_wrap_and_skip_ids_in_flight(self) -> None:
        session = Session("s", False, 10, 10)
        session.send_window()[1] = object()  # type: ignore[assignment]
        session.send_window()[2] = object()  # type: ignore[assignment]
        assert session.allocate_packet_id() == 3
        session._next_packet_id = 65535
        assert session.allocate_packet_id() == 65535
        assert session.allocate_packet_id() == 3, "wraps to 1, skipping 1 and 2 in flight"
        assert session.allocate_packet_id() == 4

    def test_packet_id_is_never_zero(self) -> None:
        session = Session("s", False, 10, 10)
        seen = {session.allocate_packet_id() for _ in range(70_000)}
        assert 0 not in seen
        assert seen == set(range(1, 65536))

    def test_deliver_sends_until_the_window_is_full_then_queues(self) -> None:
        session, connection = online_session(max_inflight=2, max_queued=1)
        assert session.deliver(msg(b"a"), 1)
        assert session.deliver(msg(b"b"), 1)
        assert session.deliver(msg(b"c"), 1)
        assert not session.deliver(msg(b"d"), 1), "queue of 1 is full"
        assert [s[2] for s in connection.sent] == [b"a", b"b"]
        assert len(session.queue) == 1

    def test_acknowledge_pumps_the_queue(self) -> None:
        session, connection = online_session(max_inflight=1)
        session.deliver(msg(b"a"), 1)
        session.deliver(msg(b"b"), 1)
        [(_, first_id, _)] = connection.sent
        assert session.acknowledge(first_id, 1)
        assert [s[2] for s in connection.sent] == [b"a", b"b"]
        assert not session.acknowledge(first_id, 1), "already completed"

    def test_acknowledge_checks_the_qos_flow(self) -> None:
        session, connection = online_session()
        session.deliver(msg(b"q2", 2), 2)
        [(_, packet_id, _)] = connection.sent
        assert not session.acknowledge(packet_id, 1), "PUBACK does not complete QoS 2"
        assert not session.acknowledge(packet_id, 2), "PUBCOMP before PUBREC"
        assert session.release(packet_id)
        assert session.inflight[packet_id].released
        assert session.acknowledge(packet_id, 2)
        assert session.inflight == {}

    def test_release_unknown_or_qos1_is_refused(self) -> None:
        session, connection = online_session()
        session.deliver(msg(b"q1"), 1)
        [(_, packet_id, _)] = connection.sent
        assert not session.release(packet_id)
        assert not session.release(999)

    def test_offline_deliver_queues_and_resume_sends(self) -> None:
        session = Session("s", False, 2, 10)
        for payload in (b"a", b"b", b"c"):
            assert session.deliver(msg(payload), 1)
        assert session.inflight == {} and len(session.queue) == 3
        connection = RecordingConnection()
        session.connection = connection  # type: ignore[assignment]
        session.resume()
        assert [s[2] for s in connection.sent] == [b"a", b"b"]
        assert len(session.queue) == 1

    def test_resume_order_follows_send_order_with_pubrel_in_place(self) -> None:
        session, connection = online_session(max_inflight=5)
        session.deliver(msg(b"a", 2), 2)
        session.deliver(msg(b"b", 1), 1)
        first_id = connection.sent[0][1]
        session.release(first_id)
        session.connection = None
        replay = RecordingConnection()
        session.connection = replay  # type: ignore[assignment]
        session.resume()
        assert replay.sent == [("pubrel", first_id, b""),
                               ("publish", connection.sent[1][1], b"b")]

    def test_overflowing_flag_resets_when_the_queue_drains(self) -> None:
        session, _ = online_session(max_inflight=1, max_queued=1)
        session.deliver(msg(b"a"), 1)
        session.deliver(msg(b"b"), 1)
        session.overflowing = True
        packet_id = next(iter(session.inflight))
        session.acknowledge(packet_id, 1)
        assert not session.overflowing


class TestSessionTable:
    def test_put_get_delete_len_iter(self) -> None:
        store = SessionTable()
        one = Session("one", False, 1, 1)
        two = Session("two", True, 1, 1)
        store.put(one)
        store.put(two)
        assert store.get("one") is one and len(store) == 2
        assert set(store) == {one, two}
        store.delete("one")
        store.delete("missing")
        assert store.get("one") is None and len(store) == 1

    def test_iteration_tolerates_deletion(self) -> None:
        store = SessionTable()
        for name in "abc":
            store.put(Session(name, False, 1, 1))
        for session in store:
            store.delete(session.client_id)
        assert len(store) == 0
