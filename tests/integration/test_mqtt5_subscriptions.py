"""MQTT 5 Subscription Identifiers and shared subscriptions end to end: a real broker, paho-mqtt
MQTTv5 clients, mosquitto_sub/pub -V mqttv5, raw sockets where a client must not acknowledge,
and kill -9 restarts for what storage keeps."""

from __future__ import annotations

from collections import Counter

import pytest
from paho.mqtt.packettypes import PacketTypes

from culex.protocol.packets5 import Publish5, Subscribe5, Subscription
from culex.protocol.v5 import decode_packet_v5, encode_subscribe5
from tests.conftest import AGAINST, BrokerFactory, BrokerProcess
from tests.integration.clients import Clients, PahoClient, RawClient, mosquitto_pub, wait_until
from tests.integration.test_mqtt5 import V5, props, raw_v5, server_disconnect

pytestmark = pytest.mark.skipif(AGAINST != "culex", reason="Culex's MQTT 5 support")


def with_id(identifier: int) -> object:
    return props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=identifier)


def identifiers(message: object) -> list[int]:
    properties = getattr(message, "properties", None)
    return sorted(getattr(properties, "SubscriptionIdentifier", []))


def persistent(clients: Clients, client_id: str) -> PahoClient:
    """A paho MQTT 5 client whose session outlives its connection by an hour."""
    client = clients.paho(client_id, protocol=V5, clean_session=False, connect=False)
    client.connect(properties=props(PacketTypes.CONNECT, SessionExpiryInterval=3600))
    return client


def subscribe_then_kill_9(broker: BrokerProcess, topic_filter: str, topic: str) -> None:
    """A persistent session subscribes `topic_filter` with identifier 9 and disconnects; a QoS 1
    message "before" is queued for it; then the broker is killed and started again."""
    with Clients(broker) as clients:
        sub = persistent(clients, "sub")
        assert sub.subscribe(topic_filter, 1, properties=with_id(9)) == [1]
        sub.disconnect()
        # Acknowledged only once committed, with the subscription before it.
        assert clients.paho("pub", protocol=V5).publish(topic, b"before", 1) == 0
    broker.kill()
    broker.start()


def next_publish5(raw: RawClient) -> Publish5:
    packet = raw.read_packet()
    decoded = decode_packet_v5(packet.first_byte, packet.raw, len(packet.raw) - len(packet.body),
                               from_client=False)
    assert isinstance(decoded, Publish5), decoded
    return decoded


# -- Subscription Identifiers -------------------------------------------------------------------


def test_identifiers_of_every_matching_subscription(clients: Clients) -> None:
    sub = clients.paho("ids", protocol=V5)
    assert sub.subscribe("si/#", 1, properties=with_id(5)) == [1]
    assert sub.subscribe("si/t", 0, properties=with_id(268_435_455)) == [0]
    assert sub.subscribe("si/+", 0) == [0]
    pub = clients.paho("pub", protocol=V5)
    pub.publish("si/t", b"both", 1)
    pub.publish("si/u", b"one", 0)
    first, second = sub.get_many(2)
    assert (first.payload, first.qos, identifiers(first)) == (b"both", 1, [5, 268_435_455])
    assert (second.payload, identifiers(second)) == (b"one", [5])
    sub.assert_no_message()


def test_resubscribe_without_identifier_and_311_publishers(clients: Clients) -> None:
    sub = clients.paho("ids", protocol=V5)
    assert sub.subscribe("rs/t", 1, properties=with_id(3)) == [1]
    mosquitto_pub(clients.broker, "-t", "rs/t", "-m", "tagged", "-q", "1")  # 3.1.1
    assert identifiers(sub.get()) == [3]
    assert sub.subscribe("rs/t", 1) == [1]
    mosquitto_pub(clients.broker, "-t", "rs/t", "-m", "plain", "-V", "mqttv5")
    message = sub.get()
    assert (message.payload, identifiers(message)) == (b"plain", [])


def test_retained_message_at_subscribe_carries_the_identifier(clients: Clients) -> None:
    clients.paho("pub", protocol=V5).publish("sr/t", b"kept", 1, retain=True)
    sub = clients.paho("ids", protocol=V5)
    assert sub.subscribe("sr/#", 1, properties=with_id(21)) == [1]
    message = sub.get()
    assert (message.payload, message.retain, identifiers(message)) == (b"kept", True, [21])


def test_identifier_survives_kill_9(broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    subscribe_then_kill_9(broker, "k/t", "k/t")
    with Clients(broker) as clients:
        sub = persistent(clients, "sub")
        assert sub.connect_result is not None and sub.connect_result.session_present
        # Queued before the crash: delivered with the identifier it was queued with.
        before = sub.get()
        assert (before.payload, identifiers(before)) == (b"before", [9])
        clients.paho("pub", protocol=V5).publish("k/t", b"after", 1)
        message = sub.get()
        assert (message.payload, identifiers(message)) == (b"after", [9])


# -- shared subscriptions -------------------------------------------------------------------------


def group(clients: Clients, count: int, topic_filter: str, qos: int = 1) -> list[PahoClient]:
    members = []
    for index in range(count):
        member = clients.paho(f"member{index}", protocol=V5)
        assert member.subscribe(topic_filter, qos) == [qos]
        members.append(member)
    return members


def test_three_members_thirty_messages_round_robin(clients: Clients) -> None:
    members = group(clients, 3, "$share/workers/jobs/+")
    pub = clients.paho("pub", protocol=V5)
    for number in range(30):
        assert pub.publish("jobs/a", str(number).encode(), 1) == 0
    received = [[int(m.payload) for m in member.get_many(10)] for member in members]
    for member in members:
        member.assert_no_message()
    assert sorted(n for got in received for n in got) == list(range(30))
    assert sorted(received) == [list(range(start, 30, 3)) for start in range(3)]


def test_mosquitto_clients_share_and_a_normal_subscriber_gets_everything(
        clients: Clients) -> None:
    subs = [clients.mosquitto_sub("-t", "$share/m/ms/t", "-q", "1", "-i", f"ms{n}",
                                  version="mqttv5") for n in range(2)]
    for sub in subs:
        sub.wait_subscribed()
    everything = clients.subscriber("ms/t", 1, protocol=V5)
    for number in range(10):
        mosquitto_pub(clients.broker, "-t", "ms/t", "-m", f"n{number}", "-q", "1",
                      version="mqttv5")
    assert len(everything.get_many(10)) == 10
    payloads = [sub.next_message().payload for sub in subs for _ in range(5)]
    assert Counter(payloads) == Counter(f"n{number}".encode() for number in range(10))
    for sub in subs:
        sub.assert_no_message()


def test_sticky_strategy_from_the_config(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(limits={"shared_subscription_strategy": "sticky"})
    with Clients(broker) as clients:
        members = group(clients, 3, "$share/s/st/t")
        pub = clients.paho("pub", protocol=V5)
        for number in range(9):
            pub.publish("st/t", str(number).encode(), 1)
        assert wait_until(lambda: sum(m.messages.qsize() for m in members) == 9)
        assert sorted(m.messages.qsize() for m in members) == [0, 0, 9]


def test_unacknowledged_messages_of_a_leaving_member_go_to_another(clients: Clients) -> None:
    raw = raw_v5(clients, "silent")  # never acknowledges
    raw.send(encode_subscribe5(Subscribe5(1, [Subscription("$share/g/un/t", 1)])))
    raw.expect(9)
    (other,) = group(clients, 1, "$share/g/un/t")
    pub = clients.paho("pub", protocol=V5)
    for number in range(6):
        pub.publish("un/t", str(number).encode(), 1)
    # Round-robin: three each (in join order within one process; with workers, the turns go
    # round the workers that have members, so who gets the first one may differ).
    held = [next_publish5(raw).payload for _ in range(3)]
    delivered = [m.payload for m in other.get_many(3)]
    assert sorted(held + delivered) == [str(number).encode() for number in range(6)]
    raw.close()  # a clean session ends: its three in-flight messages move
    assert sorted(m.payload for m in other.get_many(3)) == held
    other.assert_no_message()


def test_no_local_on_a_shared_subscription_is_disconnect_0x82(clients: Clients) -> None:
    raw = raw_v5(clients)
    raw.send(encode_subscribe5(Subscribe5(1, [Subscription("$share/g/t", 0, no_local=True)])))
    assert server_disconnect(raw) == 0x82


def test_no_retained_messages_for_a_shared_subscription(clients: Clients) -> None:
    clients.paho("pub", protocol=V5).publish("nr/t", b"kept", 1, retain=True)
    (member,) = group(clients, 1, "$share/g/nr/t")
    member.assert_no_message()
    normal = clients.subscriber("nr/t", 1, protocol=V5)
    assert normal.get().payload == b"kept"


def test_shared_membership_survives_kill_9(broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    subscribe_then_kill_9(broker, "$share/g/pr/t", "pr/t")
    with Clients(broker) as clients:
        # Nobody connected: the QoS 1 message waits in the offline member's session.
        assert clients.paho("pub", protocol=V5).publish("pr/t", b"after", 1) == 0
        member = persistent(clients, "sub")
        got = member.get_many(2)
        assert [(m.payload, identifiers(m)) for m in got] == [(b"before", [9]), (b"after", [9])]
        assert member.unsubscribe("$share/g/pr/t") == [0]
