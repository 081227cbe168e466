"""MQTT 5 state across a kill -9 and a restart: message properties and Message Expiry.

A retained message, a message queued for an offline MQTT 5 session and a will keep their
properties (user properties in order, content type, response topic, correlation data); a
Message Expiry Interval keeps counting while the broker is down, so a message whose interval
ran out during the downtime is never delivered, and one that has time left arrives with the
interval reduced by the time it waited [MQTT-3.3.2-5, MQTT-3.3.2-6].
"""

from __future__ import annotations

import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from tests.conftest import AGAINST, BrokerFactory, BrokerProcess
from tests.integration.clients import Clients, PahoClient, Will

pytestmark = pytest.mark.skipif(AGAINST != "culex",
                                reason="Culex's own storage (mosquitto runs without persistence)")

V5 = mqtt.MQTTv5
USER_PROPERTIES = [("b", "2"), ("a", "1"), ("b", "3")]


def props(packet_type: int = PacketTypes.PUBLISH, **values: Any) -> PahoProperties:
    built = PahoProperties(packet_type)
    for name, value in values.items():
        setattr(built, name, value)
    return built


def rich(**extra: Any) -> PahoProperties:
    return props(ContentType="text/plain", ResponseTopic="reply/here",
                 CorrelationData=b"\x00\x01", UserProperty=USER_PROPERTIES, **extra)


def assert_rich(received: Any) -> None:
    assert received.ContentType == "text/plain"
    assert received.ResponseTopic == "reply/here"
    assert received.CorrelationData == b"\x00\x01"
    assert received.UserProperty == USER_PROPERTIES


def restart(broker: BrokerProcess, downtime: float = 0.0) -> None:
    broker.kill()
    time.sleep(downtime)
    broker.start()


def persistent_v5(clients: Clients, client_id: str) -> tuple[PahoClient, bool]:
    client = clients.paho(client_id, protocol=V5, clean_session=False, connect=False)
    result = client.connect(properties=props(PacketTypes.CONNECT, SessionExpiryInterval=3600))
    return client, result.session_present


def only_message_on_resumption(broker: BrokerProcess, client_id: str, topic: str,
                               payload: bytes) -> Any:
    """Resume `client_id`'s session after the restart: it must be present and deliver exactly
    one message, this one; returns that message's MQTT 5 properties."""
    with Clients(broker) as clients:
        client, present = persistent_v5(clients, client_id)
        assert present
        got = client.get()
        assert (got.topic, got.payload) == (topic, payload)
        client.assert_no_message()
        return got.properties


def test_retained_message_keeps_its_properties_and_expiry(broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    with Clients(broker) as clients:
        publisher = clients.paho("pub", protocol=V5)
        # 0x10: no subscriber yet, but the PUBACK still says it is stored (retained).
        assert publisher.publish("r/long", b"kept", qos=1, retain=True,
                                 properties=rich(MessageExpiryInterval=60)) == 0x10
        assert publisher.publish("r/short", b"gone", qos=1, retain=True,
                                 properties=rich(MessageExpiryInterval=2)) == 0x10
    restart(broker, downtime=2.5)
    with Clients(broker) as clients:
        subscriber = clients.subscriber("r/#", 1, protocol=V5)
        got = subscriber.get()
        assert (got.topic, got.payload, got.retain) == ("r/long", b"kept", True)
        assert_rich(got.properties)
        # It waited (at least) the downtime: the interval forwarded is reduced by it.
        assert 50 <= got.properties.MessageExpiryInterval <= 58, got.properties
        subscriber.assert_no_message()  # r/short expired while the broker was down


def test_queued_message_keeps_its_properties(broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    with Clients(broker) as clients:
        subscriber, present = persistent_v5(clients, "offline-sub")
        assert not present
        assert subscriber.subscribe("q/t", 1) == [1]
        subscriber.disconnect()
        publisher = clients.paho("pub", protocol=V5)
        assert publisher.publish("q/t", b"queued", qos=1,
                                 properties=rich(MessageExpiryInterval=600)) == 0
        assert publisher.publish("q/t", b"expires", qos=1,
                                 properties=rich(MessageExpiryInterval=1)) == 0
    restart(broker, downtime=1.5)
    # "expires" ran out while the broker was down.
    received = only_message_on_resumption(broker, "offline-sub", "q/t", b"queued")
    assert_rich(received)
    assert received.MessageExpiryInterval <= 599


def test_will_published_at_restart_keeps_its_properties(broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    with Clients(broker) as clients:
        watcher, _ = persistent_v5(clients, "watcher")
        assert watcher.subscribe("wills/#", 1) == [1]
        watcher.disconnect()
        will_properties = props(PacketTypes.WILLMESSAGE, ContentType="text/plain",
                                ResponseTopic="reply/here", CorrelationData=b"\x00\x01",
                                UserProperty=USER_PROPERTIES)
        dying = clients.paho("dying", protocol=V5, will=Will("wills/dying", b"gone", 1),
                             will_properties=will_properties)
        # A QoS 1 round trip after CONNECT: its PUBACK waits for the commit that holds the will.
        assert dying.publish("barrier", b"", qos=1) == 0x10
    restart(broker)
    assert_rich(only_message_on_resumption(broker, "watcher", "wills/dying", b"gone"))


def test_queued_message_keeps_its_subscription_identifiers(
        broker_factory: BrokerFactory) -> None:
    """Two overlapping subscriptions with identifiers 7 and 300000: the queued message carries
    both after a kill -9, as it would have before."""
    broker = broker_factory()
    with Clients(broker) as clients:
        subscriber, _ = persistent_v5(clients, "ids-sub")
        assert subscriber.subscribe("ids/+", 1,
                                    properties=props(PacketTypes.SUBSCRIBE,
                                                     SubscriptionIdentifier=7)) == [1]
        assert subscriber.subscribe("ids/#", 1,
                                    properties=props(PacketTypes.SUBSCRIBE,
                                                     SubscriptionIdentifier=300000)) == [1]
        subscriber.disconnect()
        publisher = clients.paho("pub", protocol=V5)
        assert publisher.publish("ids/a", b"queued", qos=1) == 0
    restart(broker)
    received = only_message_on_resumption(broker, "ids-sub", "ids/a", b"queued")
    assert sorted(received.SubscriptionIdentifier) == [7, 300000]
