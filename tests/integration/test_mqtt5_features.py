"""MQTT 5 extras end to end over real sockets: Topic Aliases both ways (paho, mosquitto_sub and
raw bytes for what a well-behaved client never sends), the Will Delay Interval, request/response
with Response Information, Request Problem Information and server redirection."""

from __future__ import annotations

import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes

from culex.protocol.packets5 import Connack5, Connect5, Puback5, Publish5, Subscribe5, Subscription
from culex.protocol.properties import Properties
from culex.protocol.v5 import encode_connect5, encode_publish5, encode_subscribe5
from tests.conftest import AGAINST, BrokerFactory
from tests.integration.clients import SUBACK, Clients, Will, mosquitto_pub
from tests.integration.test_mqtt5 import props, raw_v5, read5, server_disconnect

pytestmark = pytest.mark.skipif(AGAINST != "culex", reason="Culex's MQTT 5 support")

V5 = mqtt.MQTTv5




def alias_of(message: Any) -> int | None:
    return getattr(message.properties, "TopicAlias", None)


# -- Topic Alias, inbound -------------------------------------------------------------------------

def test_paho_publisher_aliases_reach_subscribers_with_the_real_topic(clients: Clients) -> None:
    v5_sub = clients.subscriber("al/#", 1, protocol=V5)
    v311_sub = clients.subscriber("al/#", 1)
    publisher = clients.paho(protocol=V5)
    assert publisher.connack_properties.TopicAliasMaximum == 10
    for topic, qos, payload in (("al/one", 0, b"1"), ("", 1, b"2"), ("al/two", 1, b"3"),
                                ("", 0, b"4")):
        assert publisher.publish(topic, payload, qos, properties=props(TopicAlias=7)) == 0
    got = v5_sub.get_many(4)
    assert [(m.topic, m.payload, alias_of(m)) for m in got] == [
        ("al/one", b"1", None), ("al/one", b"2", None), ("al/two", b"3", None),
        ("al/two", b"4", None)]
    assert [(m.topic, m.payload) for m in v311_sub.get_many(4)] == [
        ("al/one", b"1"), ("al/one", b"2"), ("al/two", b"3"), ("al/two", b"4")]


@pytest.mark.parametrize(("publishes", "reason"), [
    ([Publish5("t", b"", properties=Properties(topic_alias=0))], 0x94),
    ([Publish5("t", b"", properties=Properties(topic_alias=11))], 0x94),
    ([Publish5("t", b"", properties=Properties(topic_alias=1)),
      Publish5("", b"", properties=Properties(topic_alias=2))], 0x82),
    ([Publish5("", b"")], 0x82),
], ids=["alias-0", "above-maximum", "unknown-alias", "empty-topic"])
def test_invalid_inbound_aliases_disconnect_with_the_exact_reason(
        clients: Clients, publishes: list[Publish5], reason: int) -> None:
    raw = raw_v5(clients)
    for publish in publishes:
        raw.send(encode_publish5(publish))
    assert server_disconnect(raw) == reason


def test_max_topic_alias_0_announces_and_refuses_aliases(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(limits={"max_topic_alias": 0})
    with Clients(broker) as clients:
        raw = clients.raw()
        raw.send(encode_connect5(Connect5("noalias")))
        connack = read5(raw)
        assert isinstance(connack, Connack5)
        assert connack.properties.topic_alias_maximum == 0
        raw.send(encode_publish5(Publish5("t", b"", properties=Properties(topic_alias=1))))
        assert server_disconnect(raw) == 0x94


# -- Topic Alias, outbound ------------------------------------------------------------------------

def test_outbound_aliases_to_a_paho_subscriber_that_allows_two(clients: Clients) -> None:
    sub = clients.paho("aliasing", protocol=V5, connect=False)
    sub.connect(properties=props(PacketTypes.CONNECT, TopicAliasMaximum=2))
    assert sub.subscribe("out/#", 1) == [1]
    publisher = clients.paho(protocol=V5)
    for topic, qos in (("out/1", 0), ("out/1", 1), ("out/2", 1), ("out/3", 0), ("out/2", 0),
                       ("out/3", 1)):
        publisher.publish(topic, topic.encode(), qos)
    got = sub.get_many(6)
    # paho does not resolve aliases it receives: what it shows is what the broker sent.
    assert [(m.topic, alias_of(m), m.payload) for m in got] == [
        ("out/1", 1, b"out/1"), ("", 1, b"out/1"), ("out/2", 2, b"out/2"),
        ("out/3", None, b"out/3"), ("", 2, b"out/2"), ("out/3", None, b"out/3")]


def test_aliased_publish_bytes_on_a_raw_socket(clients: Clients) -> None:
    # (mosquitto_sub 2.0.11 cannot take aliases: its library treats an empty topic as an
    # error, so it must not announce a Topic Alias Maximum, and then gets none.)
    raw = raw_v5(clients, "rawsub", properties=Properties(topic_alias_maximum=1))
    raw.send(encode_subscribe5(Subscribe5(1, [Subscription("ra/#", 0)])))
    assert raw.expect(SUBACK).raw == b"\x90\x04\x00\x01\x00\x00"
    # QoS 1 from three publishers in turn: each acknowledged before the next starts, so the
    # three arrive in order even when they come through other worker processes (delivered at
    # the subscription's QoS 0, so the bytes are those of QoS 0 PUBLISHes).
    mosquitto_pub(clients.broker, "-t", "ra/t", "-m", "a", "-q", "1", version="mqttv5")
    mosquitto_pub(clients.broker, "-t", "ra/t", "-m", "b", "-q", "1", version="mqttv5")
    mosquitto_pub(clients.broker, "-t", "ra/u", "-m", "c", "-q", "1", version="mqttv5")
    assert [raw.read_packet().raw for _ in range(3)] == [
        b"\x30\x0b\x00\x04ra/t\x03\x23\x00\x01a",   # topic + alias 1
        b"\x30\x07\x00\x00\x03\x23\x00\x01b",        # alias 1 alone
        b"\x30\x08\x00\x04ra/u\x00c"]                # table full: as published


def test_topic_alias_out_none_sends_no_aliases(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(mqtt5={"topic_alias_out": "none"})
    with Clients(broker) as clients:
        sub = clients.paho("plain", protocol=V5, connect=False)
        sub.connect(properties=props(PacketTypes.CONNECT, TopicAliasMaximum=5))
        assert sub.subscribe("n/t", 0) == [0]
        publisher = clients.paho(protocol=V5)
        publisher.publish("n/t", b"1")
        publisher.publish("n/t", b"2")
        assert [(m.topic, alias_of(m)) for m in sub.get_many(2)] == [("n/t", None)] * 2


# -- Will Delay Interval --------------------------------------------------------------------------

def delayed_will_client(clients: Clients, delay: int, **will_props: Any) -> Any:
    client = clients.paho("mortal", protocol=V5, clean_session=False, connect=False,
                          will=Will("wd/t", b"bye", 1),
                          will_properties=props(PacketTypes.WILLMESSAGE,
                                                WillDelayInterval=delay, **will_props))
    client.connect(properties=props(PacketTypes.CONNECT, SessionExpiryInterval=60))
    return client


def test_will_published_after_its_delay_with_its_properties(clients: Clients) -> None:
    watcher = clients.subscriber("wd/t", 1, protocol=V5)
    client = delayed_will_client(clients, 2, ContentType="text/x", ResponseTopic="wd/re",
                                 CorrelationData=b"\x07", UserProperty=[("k", "v")],
                                 MessageExpiryInterval=60)
    client.drop()
    dropped = time.monotonic()
    message = watcher.get(timeout=6)
    assert time.monotonic() - dropped >= 1.5
    assert (message.topic, message.payload) == ("wd/t", b"bye")
    received = message.properties
    assert (received.ContentType, received.ResponseTopic, received.CorrelationData,
            received.UserProperty) == ("text/x", "wd/re", b"\x07", [("k", "v")])
    assert 58 <= received.MessageExpiryInterval <= 60
    assert not hasattr(received, "WillDelayInterval")


def test_reconnect_within_the_will_delay_suppresses_the_will(clients: Clients) -> None:
    watcher = clients.subscriber("wd/t", 1, protocol=V5)
    delayed_will_client(clients, 2).drop()
    time.sleep(0.5)
    back = clients.paho("mortal", protocol=V5, clean_session=False, connect=False)
    assert back.connect(properties=props(PacketTypes.CONNECT,
                                         SessionExpiryInterval=60)).session_present
    watcher.assert_no_message(timeout=3.0)


# -- Request/Response, Response Information -------------------------------------------------------

def test_request_response_round_trip_with_response_information(
        broker_factory: BrokerFactory) -> None:
    broker = broker_factory(mqtt5={"response_information": "replies/"})
    with Clients(broker) as clients:
        responder = clients.subscriber("service/req", 1, protocol=V5)
        requester = clients.paho("asker", protocol=V5, connect=False)
        requester.connect(properties=props(PacketTypes.CONNECT, RequestResponseInformation=1))
        reply_topic = requester.connack_properties.ResponseInformation
        assert reply_topic == "replies/asker"
        assert requester.subscribe(reply_topic, 1) == [1]
        requester.publish("service/req", b"ping", 1,
                          properties=props(ResponseTopic=reply_topic, CorrelationData=b"42"))
        request = responder.get()
        assert (request.properties.ResponseTopic, request.properties.CorrelationData) == (
            reply_topic, b"42")
        responder.publish(request.properties.ResponseTopic, b"pong", 1,
                          properties=props(CorrelationData=request.properties.CorrelationData))
        answer = requester.get()
        assert (answer.topic, answer.payload, answer.properties.CorrelationData) == (
            "replies/asker", b"pong", b"42")
        silent = clients.paho("quiet", protocol=V5)  # did not ask: gets none [MQTT-3.1.2-28]
        assert not hasattr(silent.connack_properties, "ResponseInformation")


# -- Request Problem Information ------------------------------------------------------------------

@pytest.mark.parametrize(("requested", "reason_string"), [
    (None, "not authorized to publish to this topic"), (0, None)])
def test_request_problem_information_0_strips_reason_strings_from_acks(
        clients: Clients, requested: int | None, reason_string: str | None) -> None:
    raw = raw_v5(clients, properties=Properties(request_problem_information=requested))
    raw.send(encode_publish5(Publish5("$SYS/x", b"", 1, packet_id=3)))
    assert read5(raw) == Puback5(3, 0x87, Properties(reason_string=reason_string))


# -- server redirection ---------------------------------------------------------------------------

@pytest.mark.parametrize(("moved", "code"), [(False, 0x9C), (True, 0x9D)])
def test_server_reference_redirects_every_client(broker_factory: BrokerFactory, moved: bool,
                                                 code: int) -> None:
    broker = broker_factory(mqtt5={"server_reference": "next.example:1884",
                                   "server_moved": moved})
    with Clients(broker) as clients:
        paho = clients.paho("v5", protocol=V5, connect=False)
        assert paho.connect(expect_rc=None).return_code == code
        assert paho.connack_properties.ServerReference == "next.example:1884"
        old = clients.paho("v311", connect=False)
        assert old.connect(expect_rc=None).return_code == 3
    assert "refused with CONNACK" in broker.log_text()
