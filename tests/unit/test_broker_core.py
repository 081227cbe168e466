"""The broker core with a fake clock and fake sinks: CONNECT rules, timers, wills, takeover,
QoS 1/2 flows both ways, flow control, slow consumers, $SYS. No sockets, no sleeping."""

from __future__ import annotations

import pytest

from culex.core.broker import InertHost
from culex.core.limits import Limits
from culex.core.message import Message
from culex.core.states import State
from culex.protocol.codec import decode_packet, encode_connect, encode_publish, encode_subscribe
from culex.protocol.packets import (
    Connack,
    Connect,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Will,
)
from culex.protocol.reader import FrameReader
from tests.unit.core_helpers import FakeClient, Harness, only_publishes, payloads


@pytest.fixture
def harness() -> Harness:
    return Harness()


def subscriber(harness: Harness, topic_filter: str, qos: int = 0,
               client_id: str = "sub", clean_session: bool = True) -> FakeClient:
    client = harness.connected(client_id, clean_session=clean_session)
    assert client.subscribe((topic_filter, qos)) == [qos]
    assert client.received_packets() == []
    return client


# -- CONNECT --------------------------------------------------------------------------------

class TestConnect:
    def test_accepted_with_clean_session_has_no_session_present(self, harness: Harness) -> None:
        client = harness.client()
        connack = client.connect("c1", clean_session=True)
        assert (connack.return_code, connack.session_present) == (0, False)
        assert not client.closed
        assert client.connection.state is State.CONNECTED
        assert harness.broker.stats.clients_connected == 1

    def test_session_present_only_for_a_stored_clean_0_session(self, harness: Harness) -> None:
        first = harness.client()
        assert first.connect("c1", clean_session=False).session_present is False
        first.disconnect()
        assert first.closed

        second = harness.client()
        assert second.connect("c1", clean_session=False).session_present is True
        second.disconnect()

        # clean session 1 discards the stored session: never "present"
        third = harness.client()
        assert third.connect("c1", clean_session=True).session_present is False
        third.disconnect()

        # ... and the session it had ended with its connection
        fourth = harness.client()
        assert fourth.connect("c1", clean_session=False).session_present is False

    def test_clean_1_session_does_not_survive_for_a_later_clean_0(self,
                                                                  harness: Harness) -> None:
        first = harness.connected("c1", clean_session=True)
        first.lose()
        assert harness.broker.sessions.get("c1") is None
        assert harness.client().connect("c1", clean_session=False).session_present is False

    def test_empty_id_with_clean_0_is_refused_0x02_and_closed(self, harness: Harness) -> None:
        client = harness.client()
        connack = client.connect("", clean_session=False)
        assert (connack.return_code, connack.session_present) == (0x02, False)
        assert client.closed
        assert client.connection.state is State.CLOSED
        assert harness.broker.stats.clients_connected == 0
        assert len(harness.broker.sessions) == 0

    def test_mqtt_31_with_empty_id_is_refused_0x02(self, harness: Harness) -> None:
        client = harness.client()
        connack = client.connect("", clean_session=True, protocol_name="MQIsdp",
                                 protocol_level=3)
        assert connack.return_code == 0x02
        assert client.closed

    def test_mqtt_31_with_an_id_is_accepted(self, harness: Harness) -> None:
        client = harness.client()
        connack = client.connect("old-client", protocol_name="MQIsdp", protocol_level=3)
        assert connack.return_code == 0
        assert client.connection.protocol_level == 3
        assert not client.closed

    @pytest.mark.parametrize(("name", "level"), [("MQTT", 3), ("MQTT", 6), ("MQTT", 0),
                                                 ("MQIsdp", 4)])
    def test_unsupported_protocol_level_is_refused_0x01(self, harness: Harness, name: str,
                                                        level: int) -> None:
        client = harness.client()
        connack = client.connect("c1", protocol_name=name, protocol_level=level)
        assert (connack.return_code, connack.session_present) == (0x01, False)
        assert client.closed
        assert harness.broker.stats.clients_connected == 0

    def test_empty_id_with_clean_1_gets_a_generated_unique_id(self, harness: Harness) -> None:
        one = harness.client()
        two = harness.client()
        assert one.connect("", clean_session=True).return_code == 0
        assert two.connect("", clean_session=True).return_code == 0
        ids = {one.connection.client_id, two.connection.client_id}
        assert len(ids) == 2, "two anonymous clients must not take each other over"
        assert all(cid.startswith("culex-") and len(cid) > len("culex-") for cid in ids)
        assert not one.closed and not two.closed
        assert harness.broker.stats.clients_connected == 2
        assert {s.client_id for s in harness.broker.sessions} == ids
        # and each one works as a client
        assert one.subscribe(("t", 0)) == [0]
        two.publish("t", b"hi")
        assert payloads(one.received_packets()) == [b"hi"]

    def test_max_connections_refuses_0x03(self) -> None:
        harness = Harness(Limits(max_connections=1))
        first = harness.connected("a")
        second = harness.client()
        connack = second.connect("b")
        assert connack.return_code == 0x03
        assert second.closed
        assert not first.closed
        assert harness.broker.stats.clients_connected == 1
        # the slot frees when the first client leaves
        first.disconnect()
        assert harness.client().connect("c").return_code == 0

    @pytest.mark.parametrize(("keepalive", "code"), [(60, 0x02), (0, 0x02), (31, 0x02),
                                                     (30, 0), (1, 0)])
    def test_max_keepalive(self, keepalive: int, code: int) -> None:
        harness = Harness(Limits(max_keepalive=30))
        client = harness.client()
        assert client.connect("c1", keepalive=keepalive).return_code == code
        assert client.closed is (code != 0)

    def test_default_limits_allow_keepalive_0(self, harness: Harness) -> None:
        assert harness.client().connect("c1", keepalive=0).return_code == 0

    def test_connect_split_across_reads_is_accepted(self, harness: Harness) -> None:
        client = harness.client()
        data = encode_connect(Connect("split"))
        for byte in data:
            client.send(bytes((byte,)))
        packets = client.received_packets()
        assert len(packets) == 1
        assert getattr(packets[0], "return_code", None) == 0

    def test_packet_before_connect_closes_without_connack(self, harness: Harness) -> None:
        client = harness.client()
        client.pingreq()
        assert client.received_packets() == []
        assert client.closed

    def test_pingreq_gets_pingresp(self, harness: Harness) -> None:
        client = harness.connected("c1")
        client.pingreq()
        assert client.received_packets() == [Pingresp()]


# -- timers ---------------------------------------------------------------------------------

class TestConnectTimeout:
    def test_silent_connection_closed_at_connect_timeout_not_before(self,
                                                                    harness: Harness) -> None:
        client = harness.client()
        harness.tick(5.0)
        harness.tick(9.99)
        assert not client.closed
        assert client.connection.state is State.AWAITING_CONNECT
        harness.tick(10.0)
        assert client.closed
        assert client.sink.data == b"", "no CONNACK for a client that never sent CONNECT"
        assert client.connection not in harness.broker.connections

    def test_custom_connect_timeout(self) -> None:
        harness = Harness(Limits(connect_timeout=2.5))
        client = harness.client()
        harness.tick(2.4)
        assert not client.closed
        harness.tick(2.6)
        assert client.closed

    def test_partial_connect_does_not_extend_the_timeout(self, harness: Harness) -> None:
        client = harness.client()
        data = encode_connect(Connect("slow"))
        harness.tick(9.0)
        client.send(data[:3])  # slowloris: a byte now and then is not a CONNECT
        harness.tick(10.0)
        assert client.closed

    def test_connected_client_with_keepalive_0_survives_the_connect_timeout(
            self, harness: Harness) -> None:
        client = harness.connected("c1", keepalive=0)
        harness.tick(10.0)
        harness.tick(1_000_000.0)
        assert not client.closed
        assert client.connection.state is State.CONNECTED


class TestKeepAlive:
    def test_expires_after_one_and_a_half_keepalives(self, harness: Harness) -> None:
        client = harness.connected("c1", keepalive=10)
        harness.tick(10.0)
        harness.tick(14.9)
        assert not client.closed
        harness.tick(15.1)
        assert client.closed
        assert client.connection.state is State.CLOSED
        assert harness.broker.stats.clients_connected == 0

    def test_short_keepalive_expires_before_the_connect_timeout(self,
                                                                harness: Harness) -> None:
        client = harness.connected("c1", keepalive=2)
        harness.tick(2.9)
        assert not client.closed
        harness.tick(3.1)
        assert client.closed

    def test_activity_pushes_the_deadline(self, harness: Harness) -> None:
        client = harness.connected("c1", keepalive=10)
        harness.tick(10.0)
        client.pingreq()
        assert client.received_packets() == [Pingresp()]
        harness.tick(15.1)
        assert not client.closed, "the PINGREQ at t=10 moved the deadline to t=25"
        harness.tick(20.0)
        client.publish("t", b"x")  # any packet counts as activity
        harness.tick(34.9)
        assert not client.closed, "the PUBLISH at t=20 moved the deadline to t=35"
        harness.tick(35.1)
        assert client.closed

    def test_keepalive_0_never_expires(self, harness: Harness) -> None:
        client = harness.connected("c1", keepalive=0)
        for now in (15.0, 100.0, 65535 * 1.5 + 1, 10.0**7):
            harness.tick(now)
        assert not client.closed

    def test_will_published_on_keepalive_expiry(self, harness: Harness) -> None:
        watcher = subscriber(harness, "wills/#", qos=1)
        harness.connected("dying", keepalive=4, will=Will("wills/dying", b"gone", 1))
        harness.tick(5.9)
        assert watcher.received_packets() == []
        harness.tick(6.1)
        [will] = watcher.publishes()
        assert (will.topic, will.payload, will.qos) == ("wills/dying", b"gone", 1)


# -- wills ----------------------------------------------------------------------------------

class TestWill:
    def test_published_on_connection_lost(self, harness: Harness) -> None:
        watcher = subscriber(harness, "w")
        client = harness.connected("c1", will=Will("w", b"bye"))
        assert watcher.received_packets() == []
        client.lose()
        [will] = watcher.publishes()
        assert (will.topic, will.payload, will.qos, will.retain) == ("w", b"bye", 0, False)

    def test_published_on_protocol_violation_second_connect(self, harness: Harness) -> None:
        watcher = subscriber(harness, "w")
        client = harness.connected("c1", will=Will("w", b"violated"))
        client.send(encode_connect(Connect("c1")))
        assert client.closed
        assert client.received_packets() == [], "no second CONNACK"
        assert payloads(watcher.received_packets()) == [b"violated"]

    def test_published_on_takeover(self, harness: Harness) -> None:
        watcher = subscriber(harness, "w")
        old = harness.connected("c1", will=Will("w", b"taken over"))
        harness.connected("c1")
        assert old.closed
        assert payloads(watcher.received_packets()) == [b"taken over"]

    def test_not_published_after_disconnect(self, harness: Harness) -> None:
        watcher = subscriber(harness, "w")
        client = harness.connected("c1", will=Will("w", b"bye", 1, True))
        client.disconnect()
        assert client.closed
        client.lose()  # the transport reports the close afterwards
        harness.tick(100.0)
        assert watcher.received_packets() == []
        assert harness.broker.retained.get("w") is None

    def test_not_published_when_connect_refused(self) -> None:
        harness = Harness(Limits(max_connections=2))
        watcher = subscriber(harness, "w")
        harness.connected("other")
        refused = harness.client()
        assert refused.connect("c1", will=Will("w", b"never")).return_code == 0x03
        refused.lose()
        assert watcher.received_packets() == []

    def test_not_published_on_server_shutdown(self, harness: Harness) -> None:
        watcher_sink_before = subscriber(harness, "w")
        client = harness.connected("c1", will=Will("w", b"bye"))
        harness.broker.close_all()
        assert client.sink.closed and watcher_sink_before.sink.closed
        assert b"bye" not in bytes(watcher_sink_before.sink.data)

    @pytest.mark.parametrize(("will_qos", "granted", "expected"), [
        (0, 2, 0), (1, 2, 1), (2, 2, 2), (2, 1, 1), (1, 0, 0)])
    def test_qos_honoured(self, harness: Harness, will_qos: int, granted: int,
                          expected: int) -> None:
        watcher = subscriber(harness, "w", qos=granted)
        client = harness.connected("c1", will=Will("w", b"bye", will_qos))
        client.lose()
        [will] = watcher.publishes()
        assert will.qos == expected
        assert (will.packet_id != 0) is (expected > 0)

    def test_retained_will_becomes_the_retained_message(self, harness: Harness) -> None:
        watcher = subscriber(harness, "status/#", qos=1)
        client = harness.connected("c1", will=Will("status/c1", b"offline", 1, retain=True))
        client.lose()
        [live] = watcher.publishes()
        assert (live.payload, live.retain) == (b"offline", False), \
            "existing subscribers get the will as a normal message"
        stored = harness.broker.retained.get("status/c1")
        assert stored is not None and stored.payload == b"offline"
        late = harness.connected("late")
        assert late.subscribe(("status/+", 1)) == [1]
        [retained] = late.publishes()
        assert (retained.topic, retained.payload, retained.retain, retained.qos) == (
            "status/c1", b"offline", True, 1)

    def test_non_retained_will_is_not_stored(self, harness: Harness) -> None:
        client = harness.connected("c1", will=Will("w", b"bye", 1, retain=False))
        client.lose()
        assert harness.broker.retained.get("w") is None

    def test_published_on_malformed_input(self, harness: Harness) -> None:
        watcher = subscriber(harness, "w")
        client = harness.connected("c1", will=Will("w", b"garbage"))
        client.send(b"\x00\x00")  # packet type 0 is reserved
        assert client.closed
        assert payloads(watcher.received_packets()) == [b"garbage"]

    def test_published_on_publish_to_a_wildcard_topic(self, harness: Harness) -> None:
        watcher = subscriber(harness, "#")
        client = harness.connected("c1", will=Will("w", b"bad topic"))
        client.publish("a/+", b"x")
        assert client.closed
        assert payloads(watcher.received_packets()) == [b"bad topic"]

    def test_own_will_reaches_the_taking_over_clean_0_session(self,
                                                              harness: Harness) -> None:
        old = harness.connected("c1", clean_session=False, will=Will("w", b"mine", 1))
        assert old.subscribe(("w", 1)) == [1]
        new = harness.client()
        assert new.connect("c1", clean_session=False).session_present
        [will] = new.publishes()
        assert (will.payload, will.qos) == (b"mine", 1)
        assert old.received_packets() == []

    def test_invalid_will_topic_closes_without_connack(self, harness: Harness) -> None:
        client = harness.client()
        client.send(encode_connect(Connect("c1", will=Will("w/#", b"x"))))
        assert client.closed
        assert client.received_packets() == []
        assert harness.broker.stats.clients_connected == 0


# -- takeover -------------------------------------------------------------------------------

class TestTakeover:
    def test_second_connection_closes_the_first_and_the_session_continues(
            self, harness: Harness) -> None:
        old = harness.connected("c1", clean_session=False)
        assert old.subscribe(("t", 1)) == [1]
        new = harness.client()
        connack = new.connect("c1", clean_session=False)
        assert (connack.return_code, connack.session_present) == (0, True)
        assert old.closed
        assert old.connection.state is State.CLOSED
        assert not new.closed
        assert harness.broker.stats.clients_connected == 1

        publisher = harness.connected("pub")
        publisher.publish("t", b"after", qos=1)
        [message] = new.publishes()
        assert (message.payload, message.qos) == (b"after", 1)
        assert old.received_packets() == [], "nothing more goes to the replaced connection"

    def test_old_connection_ignores_further_input(self, harness: Harness) -> None:
        watcher = subscriber(harness, "t")
        old = harness.connected("c1")
        harness.connected("c1")
        old.publish("t", b"ghost")
        assert watcher.received_packets() == []

    def test_takeover_with_clean_1_drops_the_old_session(self, harness: Harness) -> None:
        old = harness.connected("c1", clean_session=False)
        assert old.subscribe(("t", 1)) == [1]
        new = harness.client()
        assert new.connect("c1", clean_session=True).session_present is False
        assert old.closed
        harness.connected("pub").publish("t", b"x", qos=1)
        assert new.received_packets() == []
        assert harness.broker.subscriptions.count == 0

    def test_in_flight_message_resent_on_the_new_connection(self, harness: Harness) -> None:
        old = harness.connected("c1", clean_session=False)
        assert old.subscribe(("t", 1)) == [1]
        harness.connected("pub").publish("t", b"m", qos=1)
        [first] = old.publishes()
        new = harness.client()
        assert new.connect("c1", clean_session=False).session_present
        [again] = new.publishes()
        assert (again.payload, again.packet_id, again.dup) == (b"m", first.packet_id, True)


# -- QoS flows ------------------------------------------------------------------------------

class TestInboundQoS:
    def test_qos1_publish_gets_puback_and_is_routed(self, harness: Harness) -> None:
        watcher = subscriber(harness, "t", qos=1)
        client = harness.connected("pub")
        client.publish("t", b"one", qos=1, packet_id=77)
        assert client.received_packets() == [Puback(77)]
        [message] = watcher.publishes()
        assert (message.payload, message.qos) == (b"one", 1)

    def test_qos2_flow_pubrec_pubrel_pubcomp(self, harness: Harness) -> None:
        watcher = subscriber(harness, "t", qos=2)
        client = harness.connected("pub")
        client.publish("t", b"two", qos=2, packet_id=5)
        assert client.received_packets() == [Pubrec(5)]
        assert payloads(watcher.received_packets()) == [b"two"]
        client.pubrel(5)
        assert client.received_packets() == [Pubcomp(5)]
        assert watcher.received_packets() == []
        assert client.connection.session is not None
        assert client.connection.session.awaiting_release == set()

    def test_duplicate_qos2_before_pubrel_is_delivered_once(self, harness: Harness) -> None:
        watcher = subscriber(harness, "t")
        client = harness.connected("pub")
        client.publish("t", b"once", qos=2, packet_id=9)
        client.publish("t", b"once", qos=2, packet_id=9, dup=True)
        assert client.received_packets() == [Pubrec(9), Pubrec(9)]
        assert payloads(watcher.received_packets()) == [b"once"]
        client.pubrel(9)
        assert client.received_packets() == [Pubcomp(9)]

    def test_same_id_after_pubrel_is_a_new_message(self, harness: Harness) -> None:
        watcher = subscriber(harness, "t")
        client = harness.connected("pub")
        client.publish("t", b"first", qos=2, packet_id=9)
        client.pubrel(9)
        client.publish("t", b"second", qos=2, packet_id=9)
        assert client.received_packets() == [Pubrec(9), Pubcomp(9), Pubrec(9)]
        assert payloads(watcher.received_packets()) == [b"first", b"second"]

    def test_pubrel_for_unknown_id_still_gets_pubcomp(self, harness: Harness) -> None:
        client = harness.connected("pub")
        client.pubrel(1234)
        assert client.received_packets() == [Pubcomp(1234)]

    def test_qos2_dedupe_survives_reconnect_of_a_clean_0_session(self,
                                                                 harness: Harness) -> None:
        watcher = subscriber(harness, "t")
        client = harness.connected("pub", clean_session=False)
        client.publish("t", b"x", qos=2, packet_id=3)
        client.lose()
        again = harness.connected("pub", clean_session=False)
        again.publish("t", b"x", qos=2, packet_id=3, dup=True)
        assert again.received_packets() == [Pubrec(3)]
        assert payloads(watcher.received_packets()) == [b"x"]


class TestOutboundQoS:
    def test_qos1_delivery_and_puback(self, harness: Harness) -> None:
        watcher = subscriber(harness, "t", qos=1)
        harness.connected("pub").publish("t", b"m", qos=1)
        [message] = watcher.publishes()
        assert message.qos == 1 and message.packet_id != 0 and not message.dup
        session = watcher.connection.session
        assert session is not None and list(session.inflight) == [message.packet_id]
        watcher.puback(message.packet_id)
        assert session.inflight == {}
        assert watcher.received_packets() == []

    def test_qos2_delivery_pubrec_pubrel_pubcomp(self, harness: Harness) -> None:
        watcher = subscriber(harness, "t", qos=2)
        harness.connected("pub").publish("t", b"m", qos=2)
        [message] = watcher.publishes()
        assert message.qos == 2
        session = watcher.connection.session
        assert session is not None
        watcher.pubrec(message.packet_id)
        assert watcher.received_packets() == [Pubrel(message.packet_id)]
        assert message.packet_id in session.inflight, "in flight until PUBCOMP"
        watcher.pubcomp(message.packet_id)
        assert session.inflight == {}

    def test_wrong_acks_do_not_complete_a_flow(self, harness: Harness) -> None:
        watcher = subscriber(harness, "t", qos=2)
        harness.connected("pub").publish("t", b"m", qos=2)
        [message] = watcher.publishes()
        session = watcher.connection.session
        assert session is not None
        watcher.pubcomp(message.packet_id)  # before PUBREC
        watcher.puback(message.packet_id)  # wrong ack type
        assert message.packet_id in session.inflight
        assert not watcher.closed

    @pytest.mark.parametrize(("published", "granted", "expected"), [
        (0, 0, 0), (0, 1, 0), (0, 2, 0), (1, 0, 0), (1, 1, 1), (1, 2, 1),
        (2, 0, 0), (2, 1, 1), (2, 2, 2)])
    def test_delivered_at_min_of_published_and_granted(self, harness: Harness, published: int,
                                                       granted: int, expected: int) -> None:
        watcher = subscriber(harness, "t", qos=granted)
        harness.connected("pub").publish("t", b"m", qos=published)
        [message] = watcher.publishes()
        assert message.qos == expected
        assert message.payload == b"m"

    def test_overlapping_subscriptions_deliver_once_at_max_qos(self,
                                                               harness: Harness) -> None:
        watcher = harness.connected("sub")
        assert watcher.subscribe(("a/#", 0), ("a/+", 2), ("a/b", 1)) == [0, 2, 1]
        harness.connected("pub").publish("a/b", b"m", qos=2)
        [message] = watcher.publishes()
        assert message.qos == 2

    def test_resubscribe_replaces_the_qos(self, harness: Harness) -> None:
        watcher = subscriber(harness, "t", qos=2)
        assert watcher.subscribe(("t", 0)) == [0]
        harness.connected("pub").publish("t", b"m", qos=2)
        [message] = watcher.publishes()
        assert message.qos == 0
        assert harness.broker.subscriptions.count == 1

    def test_unsubscribe_stops_delivery(self, harness: Harness) -> None:
        watcher = subscriber(harness, "t", qos=1)
        watcher.unsubscribe("t")
        harness.connected("pub").publish("t", b"m", qos=1)
        assert watcher.received_packets() == []
        assert harness.broker.subscriptions.count == 0

    def test_publisher_subscribed_to_its_own_topic_receives_it(self,
                                                               harness: Harness) -> None:
        client = subscriber(harness, "t", qos=1, client_id="self")
        client.publish("t", b"echo", qos=1, packet_id=4)
        packets = client.received_packets()
        assert Puback(4) in packets
        assert payloads(packets) == [b"echo"]


# -- flow control ---------------------------------------------------------------------------

class TestInflightWindow:
    def test_window_of_three(self) -> None:
        harness = Harness(Limits(max_inflight_messages=3))
        watcher = subscriber(harness, "t", qos=1)
        publisher = harness.connected("pub")
        for index in range(6):
            publisher.publish("t", b"m%d" % index, qos=1)

        first = watcher.publishes()
        assert payloads(first) == [b"m0", b"m1", b"m2"]
        assert len({p.packet_id for p in first}) == 3
        session = watcher.connection.session
        assert session is not None and len(session.queue) == 3

        watcher.puback(first[0].packet_id)
        [fourth] = watcher.publishes()
        assert fourth.payload == b"m3"
        in_flight = {first[1].packet_id, first[2].packet_id, fourth.packet_id}
        assert len(in_flight) == 3, "packet ids unique among in-flight messages"
        assert set(session.inflight) == in_flight

        watcher.puback(first[1].packet_id)
        watcher.puback(first[2].packet_id)
        rest = watcher.publishes()
        assert payloads(rest) == [b"m4", b"m5"]
        assert fourth.packet_id not in {p.packet_id for p in rest}
        for message in [fourth, *rest]:
            watcher.puback(message.packet_id)
        assert session.inflight == {} and not session.queue
        assert watcher.received_packets() == []

    def test_qos2_holds_its_slot_until_pubcomp(self) -> None:
        harness = Harness(Limits(max_inflight_messages=1))
        watcher = subscriber(harness, "t", qos=2)
        publisher = harness.connected("pub")
        publisher.publish("t", b"a", qos=2)
        publisher.publish("t", b"b", qos=2)
        [first] = watcher.publishes()
        watcher.pubrec(first.packet_id)
        assert watcher.received_packets() == [Pubrel(first.packet_id)]
        watcher.pubcomp(first.packet_id)
        [second] = watcher.publishes()
        assert second.payload == b"b"

    def test_qos0_is_not_held_by_a_full_window(self) -> None:
        harness = Harness(Limits(max_inflight_messages=1))
        watcher = subscriber(harness, "t", qos=1)
        publisher = harness.connected("pub")
        publisher.publish("t", b"q1", qos=1)
        publisher.publish("t", b"q1-queued", qos=1)
        publisher.publish("t", b"q0", qos=0)
        assert payloads(watcher.received_packets()) == [b"q1", b"q0"]

    def test_many_messages_packet_ids_never_collide(self) -> None:
        harness = Harness(Limits(max_inflight_messages=5))
        watcher = subscriber(harness, "t", qos=1)
        publisher = harness.connected("pub")
        received: list[bytes] = []
        for index in range(200):
            publisher.publish("t", b"%d" % index, qos=1)
        session = watcher.connection.session
        assert session is not None
        while True:
            batch = watcher.publishes()
            if not batch:
                break
            assert len(session.inflight) <= 5
            received += payloads(batch)
            ids = [p.packet_id for p in batch]
            assert len(set(ids)) == len(ids)
            watcher.ack_all(batch)
        assert received == [b"%d" % i for i in range(200)]


class TestSlowConsumer:
    """A full subscriber pauses its publishers for up to `stalled_reader_timeout` (back-pressure,
    nothing lost); past that it is not reading, and its QoS 0 messages are dropped."""

    def test_full_subscriber_pauses_the_publisher_and_loses_nothing(
            self, harness: Harness) -> None:
        watcher = subscriber(harness, "t")
        publisher = harness.connected("pub")
        watcher.connection.pause_writing(harness.now)
        publisher.publish("t", b"one")
        publisher.publish("t", b"two")
        assert publisher.sink.reading_paused
        assert harness.broker.stats.publishes_dropped == 0
        watcher.connection.resume_writing()
        assert not publisher.sink.reading_paused
        assert payloads(watcher.received_packets()) == [b"one", b"two"]

    def test_a_read_stops_at_the_publish_that_fills_a_subscriber(
            self, harness: Harness) -> None:
        """Ten PUBLISHes in one read: the one that finds the subscriber full is sent anyway
        and pauses the publisher, the other nine wait, unread by the broker, until the
        subscriber drains; then they go, in order, and nothing is dropped."""
        watcher = subscriber(harness, "t")
        publisher = harness.connected("pub")
        watcher.connection.pause_writing(harness.now)
        publisher.send(b"".join(encode_publish(Publish("t", b"%d" % i)) for i in range(10)))
        assert payloads(watcher.received_packets()) == [b"0"]
        assert publisher.sink.reading_paused
        watcher.connection.resume_writing()
        harness.tick(harness.now + 0.1)
        assert payloads(watcher.received_packets()) == [b"%d" % i for i in range(1, 10)]
        assert not publisher.sink.reading_paused
        assert harness.broker.stats.publishes_dropped == 0

    def test_held_back_publishes_to_a_stalled_reader_are_dropped_once_it_is_given_up(
            self, harness: Harness) -> None:
        watcher = subscriber(harness, "t")
        publisher = harness.connected("pub")
        watcher.connection.pause_writing(harness.now)
        publisher.send(b"".join(encode_publish(Publish("t", b"%d" % i)) for i in range(10)))
        harness.tick(harness.now + 2.5)  # longer than stalled_reader_timeout (2 s)
        assert not publisher.sink.reading_paused
        assert payloads(watcher.received_packets()) == [b"0"]
        assert harness.broker.stats.publishes_dropped == 9

    def test_publisher_paused_by_two_subscribers_resumes_after_both(
            self, harness: Harness) -> None:
        first = subscriber(harness, "t", client_id="first")
        second = subscriber(harness, "t", client_id="second")
        publisher = harness.connected("pub")
        first.connection.pause_writing(harness.now)
        second.connection.pause_writing(harness.now)
        publisher.publish("t", b"m")
        first.connection.resume_writing()
        assert publisher.sink.reading_paused
        second.lose()
        assert not publisher.sink.reading_paused

    def test_stalled_reader_gets_qos0_dropped_and_counted(self, harness: Harness) -> None:
        watcher = subscriber(harness, "t", qos=1)
        watcher.connection.pause_writing(harness.now)
        publisher = harness.connected("pub")
        publisher.publish("t", b"waits")
        assert publisher.sink.reading_paused
        harness.tick(harness.now + 2.5)  # longer than stalled_reader_timeout (2 s)
        assert not publisher.sink.reading_paused
        publisher.publish("t", b"dropped", qos=0)
        publisher.publish("t", b"kept", qos=1)
        assert harness.broker.stats.publishes_dropped == 1
        assert payloads(watcher.received_packets()) == [b"waits", b"kept"]
        watcher.connection.resume_writing()
        publisher.publish("t", b"again", qos=0)
        assert payloads(watcher.received_packets()) == [b"again"]
        assert harness.broker.stats.publishes_dropped == 1

    def test_other_subscribers_are_not_affected(self, harness: Harness) -> None:
        slow = subscriber(harness, "t", client_id="slow")
        fast = subscriber(harness, "t", client_id="fast")
        slow.connection.pause_writing(harness.now - 5)
        harness.connected("pub").publish("t", b"m")
        assert payloads(fast.received_packets()) == [b"m"]
        assert slow.received_packets() == []
        assert harness.broker.stats.publishes_dropped == 1


# -- $SYS -----------------------------------------------------------------------------------

class TestSys:
    def sys_values(self, packets: list[Publish]) -> dict[str, bytes]:
        return {p.topic: p.payload for p in packets}

    def test_published_every_interval_and_retained(self) -> None:
        harness = Harness(sys_interval=10.0)
        watcher = subscriber(harness, "$SYS/broker/#")
        publisher = harness.connected("pub")
        publisher.publish("a", b"1", retain=True)
        publisher.publish("b", b"2", qos=1)
        publisher.publish("c", b"3")
        harness.tick(0.5)
        first = watcher.publishes()
        values = self.sys_values(first)
        assert values["$SYS/broker/clients/connected"] == b"2"
        assert values["$SYS/broker/publish/messages/received"] == b"3"
        assert values["$SYS/broker/retained messages/count"] == b"1"
        assert values["$SYS/broker/version"].startswith(b"culex version ")
        assert all(p.topic.startswith("$SYS/broker/") for p in first)

        harness.tick(5.0)
        assert watcher.received_packets() == [], "nothing before the next interval"

        publisher.lose()
        harness.tick(10.5)
        values = self.sys_values(watcher.publishes())
        assert values["$SYS/broker/clients/connected"] == b"1"
        assert "$SYS/broker/version" not in values, "unchanged values are not republished"
        assert values["$SYS/broker/uptime"] == b"10 seconds"

        stored = harness.broker.retained.get("$SYS/broker/clients/connected")
        assert stored is not None and stored.payload == b"1" and stored.retain
        late = harness.connected("late")
        late.subscribe(("$SYS/broker/clients/connected", 0))
        [retained] = late.publishes()
        assert (retained.payload, retained.retain) == (b"1", True)

    def test_not_published_when_disabled(self, harness: Harness) -> None:
        watcher = subscriber(harness, "$SYS/#")
        harness.tick(100.0)
        assert watcher.received_packets() == []
        assert harness.broker.retained.count == 0

    def test_hash_subscriber_does_not_receive_sys(self) -> None:
        harness = Harness(sys_interval=1.0)
        watcher = subscriber(harness, "#")
        harness.tick(1.0)
        assert watcher.received_packets() == []

    def test_client_publish_to_sys_is_acknowledged_but_not_routed(self,
                                                                  harness: Harness) -> None:
        watcher = subscriber(harness, "$SYS/#", qos=1)
        client = harness.connected("c1")
        client.publish("$SYS/x", b"fake", qos=1, retain=True, packet_id=3)
        client.publish("$SYS/broker/clients/connected", b"999")
        assert client.received_packets() == [Puback(3)]
        assert not client.closed
        assert watcher.received_packets() == []
        assert harness.broker.retained.get("$SYS/x") is None

    def test_client_may_publish_to_other_dollar_topics(self, harness: Harness) -> None:
        watcher = subscriber(harness, "$app/#")
        harness.connected("c1").publish("$app/x", b"ok")
        assert payloads(watcher.received_packets()) == [b"ok"]


# -- misc -----------------------------------------------------------------------------------

def test_connect_subscribe_publish_in_one_read(harness: Harness) -> None:
    client = harness.client()
    client.send(encode_connect(Connect("burst"))
                + encode_subscribe(Subscribe(1, [("t", 1)]))
                + encode_publish(Publish("t", b"me", 1, packet_id=2)))
    packets = client.received_packets()
    assert [type(p) for p in packets] == [Connack, Suback, Publish, Puback]
    assert payloads(packets) == [b"me"]


@pytest.mark.parametrize(("qos", "retain", "dup"), [
    (0, False, False), (0, True, False), (1, False, False), (1, True, True),
    (2, False, True), (2, True, False)])
def test_message_frames_encode_every_variant(qos: int, retain: bool, dup: bool) -> None:
    message = Message("a/b", b"payload", 2, True)
    data = b"".join(message.frames(qos, 513 if qos else 0, retain=retain, dup=dup and qos > 0))
    first, frame, offset = FrameReader(10**9, connect_only=False).feed(data)[0]
    assert decode_packet(first, frame, offset) == Publish(
        "a/b", b"payload", qos, retain, dup and qos > 0, 513 if qos else 0)


def test_message_shares_the_qos0_frame() -> None:
    message = Message("t", b"x")
    assert message.frames(0, 0)[0] is message.frames(0, 0)[0]
    assert message.head(0x32) is message.head(0x32)


def test_deep_topic_through_the_broker_without_recursion_error() -> None:
    levels = 65_000
    harness = Harness(Limits(max_topic_levels=levels + 1))
    topic = "/" * (levels - 1)  # 65,000 empty levels: the CVE-2019-11779 shape, 64,999 bytes
    watcher = harness.connected("deep")
    assert watcher.subscribe(("#", 0), ("+/#", 0), (topic, 1)) == [0, 0, 1]
    harness.connected("pub").publish(topic, b"deep", qos=1)
    [message] = watcher.publishes()
    assert (message.topic, message.qos) == (topic, 1)


def test_invalid_filter_gets_0x80_others_granted(harness: Harness) -> None:
    client = harness.connected("c1")
    assert client.subscribe(("ok/+", 1), ("bad/#/x", 1), ("a+", 0)) == [1, 0x80, 0x80]
    assert harness.broker.subscriptions.count == 1


def test_packets_are_batched_into_one_write_per_flush(harness: Harness) -> None:
    watcher = subscriber(harness, "t")
    publisher = harness.connected("pub")
    writes_before = len(watcher.sink.writes)
    for index in range(5):
        publisher.publish("t", b"%d" % index)
    harness.broker.flush()
    assert len(watcher.sink.writes) == writes_before + 1
    assert len(only_publishes(watcher.received_packets())) == 5


def test_wake_called_once_per_tick_with_output() -> None:
    wakes: list[None] = []

    class CountingHost(InertHost):
        def wake(self) -> None:
            wakes.append(None)

    harness = Harness(host=CountingHost())
    watchers = [subscriber(harness, "t", client_id=f"w{index}") for index in range(3)]
    publisher = harness.connected("pub")
    harness.broker.flush()
    wakes.clear()
    publisher.publish("t", b"1")
    publisher.publish("t", b"2")
    assert len(wakes) == 1, "three connections became ready in one tick: one wake"
    harness.broker.flush()
    publisher.publish("t", b"3")
    assert len(wakes) == 2, "after a flush the next output wakes the loop again"
    for watcher in watchers:
        assert payloads(watcher.received_packets()) == [b"1", b"2", b"3"]


@pytest.mark.parametrize(("qos", "retain", "dup"), [(1, False, False), (1, True, False),
                                                    (1, False, True), (2, False, True),
                                                    (2, True, True)])
def test_qos_deliveries_are_encoded_afresh_whatever_the_publisher_sent(
        qos: int, retain: bool, dup: bool) -> None:
    """The publisher's own head is reused for deliveries at its QoS (no re-encoding), but only
    when it has neither DUP nor RETAIN: a forwarded PUBLISH never carries the publisher's DUP
    or, to an existing subscription, its RETAIN [MQTT-3.3.1-9]."""
    harness = Harness()
    sub = harness.connected("sub")
    assert sub.subscribe(("t/x", 2)) == [2]
    pub = harness.connected("pub")
    pub.publish("t/x", b"payload", qos, retain, packet_id=7, dup=dup)
    sent = sub.received_frames()
    packet_id = int.from_bytes(sent[0][7:9], "big")  # whichever id the broker chose
    assert sent == [encode_publish(Publish("t/x", b"payload", qos, False, False, packet_id))]
