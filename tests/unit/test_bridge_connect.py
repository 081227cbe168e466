"""Bridges from other brokers, and the client ids kept for Culex's own bridges.

A 3.1/3.1.1 CONNECT whose protocol level has the 0x80 bit (Mosquitto's `try_private`) comes
from another broker's bridge: it is accepted, and its subscriptions are never sent what it
published itself and get RETAIN as published, as Mosquitto does for bridges. Client ids under
`$bridge/` belong to Culex's own bridges' sessions: a client asking for one is refused.
"""

from __future__ import annotations

import pytest

from culex.core.bridges import BRIDGE_CLIENT_PREFIX
from culex.core.session import Session
from culex.core.subscription_value import NO_LOCAL, RETAIN_AS_PUBLISHED
from culex.protocol.codec import decode_packet, encode_connect
from culex.protocol.errors import UnacceptableProtocol
from culex.protocol.packets import Connack, Connect, Publish
from culex.protocol.packets5 import Connack5
from tests.unit.core_helpers import FakeClient, Harness, payloads


def bridge_client(harness: Harness, client_id: str, *, name: str = "MQTT",
                  level: int = 4) -> FakeClient:
    client = harness.client()
    client.send(encode_connect(Connect(client_id, name, level, bridge=True)))
    packets = client.received_packets()
    assert packets == [Connack(False, 0)], packets
    return client


@pytest.mark.parametrize(("name", "level", "raw"), [("MQTT", 4, 0x84), ("MQIsdp", 3, 0x83)])
def test_the_bridge_bit_is_read_and_written(name: str, level: int, raw: int) -> None:
    frame = encode_connect(Connect("edge", name, level, bridge=True))
    assert frame[2 + 2 + len(name)] == raw
    assert decode_packet(frame[0], frame, 2) == Connect("edge", name, level, bridge=True)
    plain = encode_connect(Connect("edge", name, level))
    assert decode_packet(plain[0], plain, 2) == Connect("edge", name, level, bridge=False)


@pytest.mark.parametrize(("name", "raw"), [("MQTT", 0x83), ("MQTT", 0x85), ("MQIsdp", 0x84),
                                           ("MQTT", 0xFF), ("MQTT", 0x80)])
def test_the_bit_does_not_make_a_wrong_level_right(name: str, raw: int) -> None:
    frame = bytearray(encode_connect(Connect("edge", name, 4 if name == "MQTT" else 3)))
    frame[2 + 2 + len(name)] = raw
    with pytest.raises(UnacceptableProtocol):
        decode_packet(frame[0], bytes(frame), 2)


def test_a_bridge_is_not_sent_its_own_messages() -> None:
    harness = Harness()
    bridge = bridge_client(harness, "mosquitto-edge")
    assert bridge.subscribe(("t/#", 1)) == [1]
    session = harness.broker.sessions.get("mosquitto-edge")
    assert isinstance(session, Session)
    assert session.subscriptions["t/#"] == 1 | NO_LOCAL | RETAIN_AS_PUBLISHED
    assert not session.v5
    other = harness.connected("other")
    bridge.publish("t/own0", b"a", qos=0)
    bridge.publish("t/own1", b"b", qos=1)
    other.publish("t/other0", b"c", qos=0)
    other.publish("t/other1", b"d", qos=1, retain=True)
    packets = bridge.received_packets()
    publishes = [packet for packet in packets if isinstance(packet, Publish)]
    assert payloads(publishes) == [b"c", b"d"]
    # 3.1.1 frames, and RETAIN as published on a live message
    assert [(p.topic, p.qos, p.retain) for p in publishes] == [("t/other0", 0, False),
                                                              ("t/other1", 1, True)]


def test_a_plain_client_gets_its_own_messages_and_retain_0() -> None:
    harness = Harness()
    client = harness.connected("plain")
    assert client.subscribe(("t/#", 1)) == [1]
    client.publish("t/x", b"a", qos=1, retain=True)
    publishes = [p for p in client.received_packets() if isinstance(p, Publish)]
    assert [(p.topic, p.retain) for p in publishes] == [("t/x", False)]


def test_bridge_client_ids_are_reserved() -> None:
    harness = Harness()
    client = harness.client()
    assert client.connect(BRIDGE_CLIENT_PREFIX + "cloud").return_code == 0x02
    assert client.closed
    client5 = harness.client()
    connack = client5.connect5(BRIDGE_CLIENT_PREFIX + "x")
    assert isinstance(connack, Connack5) and connack.reason_code == 0x85
    assert "reserved" in (connack.properties.reason_string or "")
    assert harness.broker.stats.clients_connected == 0


def test_bridge_state_is_the_one_sys_topic_clients_may_write() -> None:
    """Mosquitto's bridges publish `$SYS/broker/connection/<id>/state` (and make it their
    will); Mosquitto lets them, so Culex does. The rest of `$SYS` stays read-only."""
    harness = Harness()
    watcher = harness.connected("watcher")
    assert watcher.subscribe(("$SYS/broker/connection/#", 1), ("$SYS/broker/x", 1)) == [1, 1]
    edge = harness.connected("edge.to-culex")
    edge.publish("$SYS/broker/connection/edge.to-culex/state", b"1", qos=1, retain=True)
    edge.publish("$SYS/broker/connection/edge.to-culex/other", b"no", qos=1)
    edge.publish("$SYS/broker/connection/a/b/state", b"no", qos=1)
    edge.publish("$SYS/broker/x", b"no", qos=1)
    assert [(p.topic, p.payload) for p in watcher.publishes()] == [
        ("$SYS/broker/connection/edge.to-culex/state", b"1")]
