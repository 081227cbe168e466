"""MQTT 5.0 end to end: paho-mqtt's MQTTv5 client, mosquitto_pub/sub -V mqttv5, and raw sockets
where the exact bytes the broker sends (reason codes, DISCONNECT) are the point. Mixed versions
on one broker: 3.1.1 and 5.0 clients exchange messages, properties reach only MQTT 5 clients."""

from __future__ import annotations

import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.reasoncodes import ReasonCode as PahoReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from culex.core.worker_links import owner_of
from culex.protocol.packets5 import (
    Connack5,
    Connect5,
    Disconnect5,
    Packet5,
    Publish5,
    Subscribe5,
    Subscription,
)
from culex.protocol.properties import Properties
from culex.protocol.v5 import (
    decode_packet_v5,
    encode_ack5,
    encode_connect5,
    encode_disconnect5,
    encode_publish5,
    encode_subscribe5,
)
from tests.conftest import AGAINST, BrokerFactory
from tests.integration.clients import Clients, Packet, RawClient, Will, mosquitto_pub

pytestmark = pytest.mark.skipif(AGAINST != "culex", reason="Culex's MQTT 5 support")

V5 = mqtt.MQTTv5



def props(packet_type: int = PacketTypes.PUBLISH, **values: Any) -> PahoProperties:
    """paho Properties from keyword arguments (paho's attribute names)."""
    built = PahoProperties(packet_type)
    for name, value in values.items():
        setattr(built, name, value)
    return built


def as_v5(packet: Packet) -> Packet5:
    """A packet the broker sent, decoded as MQTT 5."""
    return decode_packet_v5(packet.first_byte, packet.raw, len(packet.raw) - len(packet.body),
                            from_client=False)


def read5(raw: RawClient) -> Packet5:
    """The next packet the broker sent, decoded as MQTT 5."""
    return as_v5(raw.read_packet())


def v5_packets(raw: RawClient) -> list[Packet5]:
    """Everything the broker sent until it closed the connection, decoded as MQTT 5."""
    return [as_v5(packet) for packet in raw.wait_closed()]


def raw_v5(clients: Clients, client_id: str = "raw5", **connect: Any) -> RawClient:
    """A raw socket that sent an MQTT 5 CONNECT and got a successful CONNACK."""
    raw = clients.raw()
    raw.send(encode_connect5(Connect5(client_id, **connect)))
    connack = read5(raw)
    assert isinstance(connack, Connack5) and connack.reason_code == 0, connack
    return raw


def server_disconnect(raw: RawClient) -> int:
    """The reason code of the DISCONNECT the broker sent before closing the connection."""
    packets = v5_packets(raw)
    assert packets and isinstance(packets[-1], Disconnect5), packets
    return packets[-1].reason_code


# -- CONNECT / CONNACK -------------------------------------------------------------------------


def test_connack_properties_announce_limits_and_features(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(limits={"receive_maximum": 7, "max_packet_size": 100_000})
    with Clients(broker) as clients:
        client = clients.paho("", protocol=V5)
        connack = client.connack_properties
        assert connack.AssignedClientIdentifier.startswith("culex-")
        assert connack.ReceiveMaximum == 7
        assert connack.MaximumPacketSize == 100_000
        assert connack.TopicAliasMaximum == 10
        assert connack.RetainAvailable == 1
        assert connack.WildcardSubscriptionAvailable == 1
        assert connack.SubscriptionIdentifierAvailable == 1
        assert connack.SharedSubscriptionAvailable == 1
        assert not hasattr(connack, "ServerKeepAlive")


def test_server_keep_alive_when_max_keepalive_clamps(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(limits={"max_keepalive": 30})
    with Clients(broker) as clients:
        client = clients.paho("clamped", protocol=V5, keepalive=120)
        assert client.connack_properties.ServerKeepAlive == 30


def test_refusals_use_v5_reason_codes(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(limits={"max_client_id_length": 8, "max_connections": 1})
    with Clients(broker) as clients:
        client = clients.paho("much-too-long-id", protocol=V5, connect=False)
        assert client.connect(expect_rc=None).return_code == 0x85
        clients.paho("first", protocol=V5)
        busy = clients.paho("second", protocol=V5, connect=False)
        assert busy.connect(expect_rc=None).return_code == 0x89


# -- PUBLISH both ways ---------------------------------------------------------------------------


def test_publish_properties_forwarded_to_v5_and_stripped_for_311(clients: Clients) -> None:
    v5_sub = clients.subscriber("p/t", 1, protocol=V5)
    v311_sub = clients.subscriber("p/t", 1)
    publisher = clients.paho(protocol=V5)
    sent = props(PayloadFormatIndicator=1, MessageExpiryInterval=60, ContentType="text/plain",
                 ResponseTopic="p/reply", CorrelationData=b"\x00\x01",
                 UserProperty=[("b", "2"), ("a", "1"), ("b", "3")])
    assert publisher.publish("p/t", b"hello", qos=1, properties=sent) == 0
    got = v5_sub.get()
    assert (got.topic, got.payload, got.qos) == ("p/t", b"hello", 1)
    received = got.properties
    assert received.PayloadFormatIndicator == 1
    assert 59 <= received.MessageExpiryInterval <= 60
    assert received.ContentType == "text/plain"
    assert received.ResponseTopic == "p/reply"
    assert received.CorrelationData == b"\x00\x01"
    assert received.UserProperty == [("b", "2"), ("a", "1"), ("b", "3")]
    plain = v311_sub.get()
    assert (plain.topic, plain.payload, plain.qos) == ("p/t", b"hello", 1)


def test_311_subscriber_gets_exact_311_bytes_from_a_v5_publisher(clients: Clients) -> None:
    raw = clients.raw("old-sub")
    assert raw.subscribe([("x/y", 0)]) == [0]
    publisher = clients.paho(protocol=V5)
    publisher.publish("x/y", b"data", properties=props(UserProperty=[("k", "v")]))
    publisher.publish("x/y", b"bare")  # the raw-frame fast path must convert it as well
    assert raw.expect(3).raw == b"\x30\x09\x00\x03x/ydata"
    assert raw.expect(3).raw == b"\x30\x09\x00\x03x/ybare"


def test_v5_subscriber_gets_311_messages_with_an_empty_property_block(clients: Clients) -> None:
    raw = raw_v5(clients, "new-sub")
    raw.send(encode_subscribe5(Subscribe5(1, [Subscription("m/#", 1)])))
    raw.expect(9)
    old = clients.raw("old-pub")
    old.publish("m/a", b"zero")
    old.publish("m/b", b"one", qos=1)
    # QoS 0: header, topic, property length 0, payload.
    assert raw.expect(3).raw == b"\x30\x0a\x00\x03m/a\x00zero"
    one = raw.expect(3)
    assert one.raw == b"\x32\x0b\x00\x03m/b" + one.raw[7:9] + b"\x00one"


def test_mosquitto_clients_v5_user_properties(clients: Clients) -> None:
    sub = clients.mosquitto_sub("-t", "mq/#", "-q", "1", version="mqttv5")
    sub.wait_subscribed()
    paho_sub = clients.subscriber("mq/#", 1, protocol=V5)
    mosquitto_pub(clients.broker, "-t", "mq/one", "-m", "via-mosquitto", "-q", "1",
                  "-D", "publish", "user-property", "origin", "cli", version="mqttv5")
    assert sub.next_message().payload == b"via-mosquitto"
    got = paho_sub.get()
    assert got.properties.UserProperty == [("origin", "cli")]


def test_puback_reason_codes(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(limits={"max_queued_messages": 1})
    # 0x97 comes from the publisher's own worker: with worker processes it can only know the
    # queues of the sessions it owns (README, "Worker processes"), so these two share one.
    assert owner_of("publisher", 2) == owner_of("parked", 2)
    with Clients(broker) as clients:
        publisher = clients.paho("publisher", protocol=V5)
        assert publisher.publish("nobody/here", b"x", qos=1) == 0x10
        assert publisher.publish("$SYS/forged", b"x", qos=1) == 0x87
        # A persistent session (expiry > 0), offline, with room for one message.
        sub = clients.paho("parked", protocol=V5, clean_session=False, connect=False)
        sub.connect(properties=props(PacketTypes.CONNECT, SessionExpiryInterval=300))
        assert sub.subscribe("q/full", 1) == [1]
        sub.disconnect()
        assert publisher.publish("q/full", b"fits", qos=1) == 0
        assert publisher.publish("q/full", b"overflows", qos=1) == 0x97


# -- SUBSCRIBE options and reason codes ----------------------------------------------------------


def test_no_local(clients: Clients) -> None:
    client = clients.paho("self", protocol=V5)
    assert client.subscribe("loop/t", options=SubscribeOptions(qos=1, noLocal=True)) == [1]
    other = clients.subscriber("loop/t", 1, protocol=V5)
    client.publish("loop/t", b"q0")
    client.publish("loop/t", b"q1", qos=1)
    assert [m.payload for m in other.get_many(2)] == [b"q0", b"q1"]
    client.assert_no_message()


def test_retain_as_published(clients: Clients) -> None:
    keeps = clients.paho(protocol=V5)
    assert keeps.subscribe("rap/t", options=SubscribeOptions(qos=1, retainAsPublished=True)) \
        == [1]
    clears = clients.subscriber("rap/t", 1, protocol=V5)
    publisher = clients.paho(protocol=V5)
    publisher.publish("rap/t", b"kept", qos=1, retain=True)
    publisher.publish("rap/t", b"zero", retain=True)
    assert [(m.payload, m.retain) for m in keeps.get_many(2)] == [(b"kept", True),
                                                                   (b"zero", True)]
    assert [(m.payload, m.retain) for m in clears.get_many(2)] == [(b"kept", False),
                                                                    (b"zero", False)]
    publisher.publish("rap/t", b"", retain=True)


@pytest.mark.parametrize(("handling", "first", "again"), [(0, True, True), (1, True, False),
                                                          (2, False, False)])
def test_retain_handling(clients: Clients, handling: int, first: bool, again: bool) -> None:
    clients.paho(protocol=V5).publish("rh/t", b"stored", qos=1, retain=True)
    client = clients.paho(protocol=V5)
    options = SubscribeOptions(qos=1, retainHandling=handling)
    for expected in (first, again):
        assert client.subscribe("rh/t", options=options) == [1]
        if expected:
            message = client.get()
            assert (message.payload, message.retain) == (b"stored", True)
        else:
            client.assert_no_message()


def test_suback_reason_codes(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(limits={"max_subscriptions": 2})
    with Clients(broker) as clients:
        # paho refuses to send an invalid filter, so these bytes go out raw.
        raw = raw_v5(clients)
        raw.send(encode_subscribe5(Subscribe5(3, [
            Subscription("ok/1", 2), Subscription("bad/#/filter", 1),
            Subscription("$share//t", 1), Subscription("$share/g+/t", 1),
            Subscription("$share/group", 1), Subscription("$share/group/t", 1),
            Subscription("ok/2", 0)])))
        assert raw.expect(9).raw == b"\x90\x0a\x00\x03\x00\x02\x8f\x8f\x8f\x8f\x01\x97"


def test_unsuback_reason_codes(clients: Clients) -> None:
    client = clients.subscriber("u/t", 1, protocol=V5)
    assert client.unsubscribe(["u/t", "never/subscribed"]) == [0x00, 0x11]
    assert client.unsubscribe("u/t") == [0x11]


# -- DISCONNECT both ways ------------------------------------------------------------------------


def test_session_taken_over_0x8e(clients: Clients) -> None:
    first = clients.paho("twice", protocol=V5)
    clients.paho("twice", protocol=V5)
    assert first.disconnected.wait(5)
    assert first.disconnect_reason == 0x8E


def test_keep_alive_timeout_0x8d(clients: Clients) -> None:
    raw = raw_v5(clients, keepalive=1)
    assert server_disconnect(raw) == 0x8D


def test_packet_too_large_0x95(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(limits={"max_packet_size": 1000})
    with Clients(broker) as clients:
        raw = raw_v5(clients)
        raw.send(encode_publish5(Publish5("big", b"x" * 2000)))
        assert server_disconnect(raw) == 0x95


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x36\x06\x00\x01t\x00\x01x", 0x81),                    # PUBLISH at QoS 3
    (encode_connect5(Connect5("again")), 0x82),              # second CONNECT
    (encode_publish5(Publish5("t", b"", properties=Properties(topic_alias=11))), 0x94),
    (b"\xf0\x00", 0x82),                                      # AUTH without enhanced auth
], ids=["malformed", "protocol-error", "topic-alias", "auth"])
def test_protocol_violations_get_disconnect_with_reason(clients: Clients, data: bytes,
                                                        reason: int) -> None:
    raw = raw_v5(clients)
    raw.send(data)
    assert server_disconnect(raw) == reason


def test_receive_maximum_exceeded_0x93(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(limits={"receive_maximum": 2})
    with Clients(broker) as clients:
        raw = raw_v5(clients)
        for packet_id in (1, 2, 3):  # QoS 2, never released
            raw.send(encode_publish5(Publish5("rm/t", b"x", qos=2, packet_id=packet_id)))
        packets = v5_packets(raw)
        assert [type(p).__name__ for p in packets] == [
            "Pubrec5", "Pubrec5", "Disconnect5"]
        last = packets[-1]
        assert isinstance(last, Disconnect5) and last.reason_code == 0x93


def test_disconnect_reaches_a_client_that_pipelined_more(broker_factory: BrokerFactory) -> None:
    """A client that sent more behind the packet we refuse still reads our DISCONNECT and a
    clean end of stream, and its own late writes do not fail: the broker half-closes and keeps
    reading (discarding) instead of closing with unread bytes, which would be a reset."""
    broker = broker_factory(limits={"receive_maximum": 2})
    with Clients(broker) as clients:
        raw = raw_v5(clients)
        burst = b"".join(encode_publish5(Publish5("rm/t", b"x", qos=2, packet_id=packet_id))
                         for packet_id in (1, 2, 3))
        raw.send(burst + b"\xc0\x00" * 50_000)  # 100 kB pipelined behind the third PUBLISH
        time.sleep(0.3)  # the broker has refused and half-closed by now
        raw.send(b"\xc0\x00" * 1000)  # still accepted: not reset
        packets = v5_packets(raw)  # every packet up to a clean EOF (a reset would raise)
        assert [type(p).__name__ for p in packets] == ["Pubrec5", "Pubrec5", "Disconnect5"]
        last = packets[-1]
        assert isinstance(last, Disconnect5) and last.reason_code == 0x93


def test_server_shutting_down_0x8b(broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    with Clients(broker) as clients:
        raw = raw_v5(clients)
        assert broker.stop() == 0
        assert server_disconnect(raw) == 0x8B


@pytest.mark.parametrize(("reason", "published"), [(0x04, True), (0x00, False)])
def test_disconnect_with_will_message(clients: Clients, reason: int, published: bool) -> None:
    watcher = clients.subscriber("will/t", 1, protocol=V5)
    client = clients.paho("mortal", protocol=V5, will=Will("will/t", b"bye", 1),
                          will_properties=props(PacketTypes.WILLMESSAGE,
                                                ContentType="text/farewell"))
    client.client.disconnect(reasoncode=PahoReasonCode(PacketTypes.DISCONNECT,
                                                       identifier=reason))
    assert client.disconnected.wait(5)
    if published:
        message = watcher.get()
        assert message.payload == b"bye"
        assert message.properties.ContentType == "text/farewell"
    else:
        watcher.assert_no_message()


# -- Session Expiry Interval ---------------------------------------------------------------------


def session_client(clients: Clients, expiry: int | None, *, clean_start: bool = False) -> Any:
    client = clients.paho("expiring", protocol=V5, clean_session=clean_start, connect=False)
    properties = None if expiry is None else props(PacketTypes.CONNECT,
                                                   SessionExpiryInterval=expiry)
    return client, client.connect(properties=properties).session_present


def test_session_expiry_zero_ends_with_the_connection(clients: Clients) -> None:
    client, present = session_client(clients, None)
    assert present is False
    client.subscribe("se/t", 1)
    client.disconnect()
    assert session_client(clients, 60)[1] is False


def test_session_kept_for_its_expiry_then_discarded(clients: Clients) -> None:
    client, _ = session_client(clients, 2)
    client.subscribe("se/t", 1)
    client.disconnect()
    clients.paho(protocol=V5).publish("se/t", b"queued", qos=1)
    client, present = session_client(clients, 2)
    assert present is True
    assert client.get().payload == b"queued"
    client.disconnect()
    time.sleep(2.6)
    assert session_client(clients, 2)[1] is False


def test_clean_start_discards_a_kept_session(clients: Clients) -> None:
    client, _ = session_client(clients, 0xFFFFFFFF)
    client.disconnect()
    assert session_client(clients, 0xFFFFFFFF, clean_start=True)[1] is False


def test_disconnect_may_shorten_but_not_raise_from_zero(clients: Clients) -> None:
    client, _ = session_client(clients, 600)
    client.client.disconnect(properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    assert client.disconnected.wait(5)
    assert session_client(clients, None)[1] is False
    # paho closes its socket right after its own DISCONNECT, so the answer is read raw.
    raw = raw_v5(clients, "zero")
    raw.send(encode_disconnect5(0, Properties(session_expiry_interval=60)))
    assert server_disconnect(raw) == 0x82


def test_v5_session_survives_a_restart(broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    with Clients(broker) as clients:
        client, _ = session_client(clients, 3600)
        assert client.subscribe("keep/t", 1) == [1]
        client.disconnect()
        assert session_client(clients, None)[1] is True  # resumed, now ends at disconnect
        client = clients.paho("short", protocol=V5, clean_session=False, connect=False)
        client.connect(properties=props(PacketTypes.CONNECT, SessionExpiryInterval=3600))
        client.disconnect()
    assert broker.stop() == 0
    broker.start()
    with Clients(broker) as clients:
        kept = clients.paho("short", protocol=V5, clean_session=False, connect=False)
        assert kept.connect().session_present is True
        gone = clients.paho("expiring", protocol=V5, clean_session=False, connect=False)
        assert gone.connect().session_present is False


def test_raw_v5_acks_carry_reason_codes(clients: Clients) -> None:
    raw = raw_v5(clients)
    raw.send(encode_publish5(Publish5("nobody", b"x", qos=1, packet_id=7)))
    assert raw.expect(4).raw == encode_ack5(PacketTypes.PUBACK, 7, 0x10)
    raw.send(encode_publish5(Publish5("nobody", b"x", qos=2, packet_id=8)))
    assert raw.expect(5).raw == encode_ack5(PacketTypes.PUBREC, 8, 0x10)
    raw.send(encode_ack5(PacketTypes.PUBREL, 8))
    assert raw.expect(7).raw == encode_ack5(PacketTypes.PUBCOMP, 8)
    raw.send(encode_ack5(PacketTypes.PUBREL, 9))
    assert raw.expect(7).raw == encode_ack5(PacketTypes.PUBCOMP, 9, 0x92)


def test_client_maximum_packet_size_is_respected(clients: Clients) -> None:
    client = clients.paho("tiny", protocol=V5, connect=False)
    client.connect(properties=props(PacketTypes.CONNECT, MaximumPacketSize=100))
    assert client.subscribe("mps/#", 1) == [1]
    publisher = clients.paho(protocol=V5)
    publisher.publish("mps/big", b"x" * 200, qos=1)
    publisher.publish("mps/small", b"fits", qos=1)
    message = client.get()
    assert (message.topic, message.payload) == ("mps/small", b"fits")
    client.assert_no_message()


def test_payload_format_invalid_0x99(clients: Clients) -> None:
    watcher = clients.subscriber("pfi/#", 1, protocol=V5)
    publisher = clients.paho(protocol=V5)
    utf8 = props(PayloadFormatIndicator=1)
    assert publisher.publish("pfi/bad", b"\xff\xfe", qos=1, properties=utf8) == 0x99
    assert publisher.publish("pfi/good", "grüße".encode(), qos=1, properties=utf8) == 0
    message = watcher.get()
    assert (message.topic, message.payload) == ("pfi/good", "grüße".encode())
    watcher.assert_no_message()


def test_maximum_qos(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(limits={"max_qos": 1})
    with Clients(broker) as clients:
        client = clients.paho(protocol=V5)
        assert client.connack_properties.MaximumQoS == 1
        assert client.subscribe("mq/t", 2) == [1]
        assert clients.paho().subscribe("mq/t", 2) == [1]  # 3.1.1: granted less as well
        raw = raw_v5(clients)
        raw.send(encode_publish5(Publish5("mq/t", b"", qos=2, packet_id=1)))
        assert server_disconnect(raw) == 0x9B
