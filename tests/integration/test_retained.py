"""Retained messages: set, replace, clear; retain flag on subscribe vs normal forwarding."""

from __future__ import annotations

import pytest

from tests.integration.clients import PAHO_PROTOCOLS, RAW_PROTOCOLS, Clients, publish_packet


@pytest.mark.parametrize("version", PAHO_PROTOCOLS)
def test_retained_delivered_on_subscribe_with_retain_flag(clients: Clients, version: str) -> None:
    protocol = PAHO_PROTOCOLS[version]
    publisher = clients.paho(protocol=protocol)
    publisher.publish("ret/t", b"state", qos=1, retain=True)
    publisher.disconnect()  # the retained message outlives its publisher
    subscriber = clients.paho(protocol=protocol)
    assert subscriber.subscribe("ret/t", 1) == [1]
    message = subscriber.get()
    assert (message.topic, message.payload, message.retain, message.qos) == (
        "ret/t", b"state", True, 1
    )


@pytest.mark.parametrize("version", PAHO_PROTOCOLS)
def test_retained_replaced_by_newer(clients: Clients, version: str) -> None:
    protocol = PAHO_PROTOCOLS[version]
    publisher = clients.paho(protocol=protocol)
    for payload in (b"v1", b"v2", b"v3"):
        publisher.publish("ret/replace", payload, qos=1, retain=True)
    subscriber = clients.paho(protocol=protocol)
    assert subscriber.subscribe("ret/replace", 1) == [1]
    assert subscriber.get().payload == b"v3"
    subscriber.assert_no_message()


@pytest.mark.parametrize("version", PAHO_PROTOCOLS)
def test_retained_cleared_by_empty_payload(clients: Clients, version: str) -> None:
    """An empty retained payload at any QoS clears the topic's retained message."""
    protocol = PAHO_PROTOCOLS[version]
    publisher = clients.paho(protocol=protocol)
    for clear_qos in (0, 1, 2):
        publisher.publish(f"ret/clear{clear_qos}", b"old", qos=1, retain=True)
        publisher.publish(f"ret/clear{clear_qos}", b"", qos=clear_qos, retain=True)
    subscriber = clients.paho(protocol=protocol)
    assert subscriber.subscribe("ret/#", 2) == [2]
    subscriber.assert_no_message()
    # The topic still works for new retained messages afterwards.
    publisher.publish("ret/clear0", b"new", qos=1, retain=True)
    assert subscriber.get().payload == b"new"
    late = clients.paho(protocol=protocol)
    assert late.subscribe("ret/#", 1) == [1]
    message = late.get()
    assert (message.topic, message.payload) == ("ret/clear0", b"new")


def test_qos0_retained_message_is_stored(clients: Clients) -> None:
    publisher = clients.paho()
    publisher.publish("ret/q0", b"zero", qos=0, retain=True)
    # QoS 0 has no ack to tell when the broker has it; one for a later message from the same
    # client does (with workers too: the ack waits until every worker has what came before).
    publisher.publish("ret/sync", b"", qos=1)
    subscriber = clients.paho()
    assert subscriber.subscribe("ret/q0", 2) == [2]
    message = subscriber.get()
    assert (message.payload, message.qos, message.retain) == (b"zero", 0, True)


@pytest.mark.parametrize(("stored_qos", "sub_qos"), [(2, 0), (2, 1), (2, 2), (1, 2), (0, 2)])
def test_retained_delivered_at_min_qos(clients: Clients, stored_qos: int, sub_qos: int) -> None:
    publisher = clients.paho()
    publisher.publish("ret/qos", b"q", qos=stored_qos, retain=True)
    publisher.publish("ret/sync", b"", qos=1)  # the QoS 0 case: see the test above
    subscriber = clients.paho()
    assert subscriber.subscribe("ret/qos", sub_qos) == [sub_qos]
    message = subscriber.get()
    assert (message.qos, message.retain) == (min(stored_qos, sub_qos), True)


@pytest.mark.parametrize("version", PAHO_PROTOCOLS)
def test_forwarding_to_existing_subscriber_has_retain_0(clients: Clients, version: str) -> None:
    protocol = PAHO_PROTOCOLS[version]
    subscriber = clients.subscriber("ret/live", 1, protocol=protocol)
    publisher = clients.paho(protocol=protocol)
    publisher.publish("ret/live", b"live", qos=1, retain=True)
    message = subscriber.get()
    assert (message.payload, message.retain) == (b"live", False)
    # ... while a new subscriber gets the stored copy with retain=1.
    late = clients.paho(protocol=protocol)
    assert late.subscribe("ret/live", 1) == [1]
    stored = late.get()
    assert (stored.payload, stored.retain) == (b"live", True)


def test_empty_retained_publish_forwarded_to_existing_subscribers(clients: Clients) -> None:
    """[MQTT-3.3.1-10]: a zero-byte retained PUBLISH is processed as normal."""
    subscriber = clients.subscriber("ret/empty", 1)
    publisher = clients.paho()
    publisher.publish("ret/empty", b"full", qos=1, retain=True)
    publisher.publish("ret/empty", b"", qos=1, retain=True)
    messages = subscriber.get_many(2)
    assert [(m.payload, m.retain) for m in messages] == [(b"full", False), (b"", False)]


def test_wildcard_subscribe_gets_every_matching_retained(clients: Clients) -> None:
    publisher = clients.paho()
    stored = {"house/kitchen/temp": b"21", "house/hall/temp": b"19", "house/hall/door": b"shut"}
    for topic, payload in stored.items():
        publisher.publish(topic, payload, qos=1, retain=True)
    publisher.publish("garden/temp", b"9", qos=1, retain=True)
    subscriber = clients.paho()
    assert subscriber.subscribe("house/+/temp", 1) == [1]
    got = {m.topic: (m.payload, m.retain) for m in subscriber.get_many(2)}
    assert got == {"house/kitchen/temp": (b"21", True), "house/hall/temp": (b"19", True)}
    subscriber.assert_no_message()
    everything = clients.paho()
    assert everything.subscribe("#", 1) == [1]
    topics = {m.topic for m in everything.get_many(4)}
    assert topics == {*stored, "garden/temp"}


@pytest.mark.parametrize("version", RAW_PROTOCOLS)
def test_retained_delivery_bytes(clients: Clients, version: str) -> None:
    """Exact bytes: RETAIN bit set on the stored copy, clear on live forwarding."""
    protocol = RAW_PROTOCOLS[version]
    publisher = clients.raw("ret-pub", protocol=protocol)
    publisher.publish("rb/t", b"stored", qos=0, retain=True)
    # The broker has it once a later QoS 1 message of the same client is acknowledged (see
    # test_qos0_retained_message_is_stored).
    publisher.publish("rb/sync", b"", qos=1)
    subscriber = clients.raw("ret-sub", protocol=protocol)
    assert subscriber.subscribe([("rb/t", 0)]) == [0]
    assert subscriber.read_packet().raw == publish_packet("rb/t", b"stored", retain=True)
    clients.raw("ret-pub2", protocol=protocol).publish("rb/t", b"live", qos=0, retain=True)
    assert subscriber.read_packet().raw == publish_packet("rb/t", b"live", retain=False)


def test_clearing_unknown_topic_is_harmless(clients: Clients) -> None:
    publisher = clients.paho()
    publisher.publish("ret/never", b"", qos=1, retain=True)
    subscriber = clients.paho()
    assert subscriber.subscribe("ret/never", 1) == [1]
    subscriber.assert_no_message()
