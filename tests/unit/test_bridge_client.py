"""The bridge's sans-I/O MQTT client: bytes a server sends, fed whole and one byte at a time,
checked in the server's direction; CONNECTs for a persistent session; what a CONNACK says about
the server; and the packets a server may not send."""

from __future__ import annotations

import pytest

from culex.bridge.client import ClientOptions, ClientState, MqttClient
from culex.protocol.codec import decode_connect, encode_connack, encode_packet
from culex.protocol.errors import MQTTError
from culex.protocol.packets import Connack, Connect, Publish
from culex.protocol.packets5 import Connack5, Connect5, Publish5
from culex.protocol.properties import Properties
from culex.protocol.v5 import decode_connect_any, encode_packet_v5


def client(v5: bool, **options: object) -> MqttClient:
    return MqttClient(ClientOptions("edge", v5, 30, **options))  # type: ignore[arg-type]


def feed(mqtt: MqttClient, data: bytes, *, bytewise: bool) -> list[object]:
    if not bytewise:
        return list(mqtt.receive(data))
    packets: list[object] = []
    for index in range(len(data)):
        packets += mqtt.receive(data[index:index + 1])
    return packets


def test_connect_asks_for_a_persistent_session() -> None:
    v3 = client(False, username="u", password=b"p", bridge_bit=True).connect()
    assert decode_connect(0, v3, 2) == Connect("edge", clean_session=False, keepalive=30,
                                               username="u", password=b"p", bridge=True)
    v5 = decode_connect_any(0x10, client(True, receive_maximum=50).connect(), 2)
    assert isinstance(v5, Connect5) and not v5.clean_start
    assert v5.properties.session_expiry_interval == 0xFFFFFFFF
    assert v5.properties.receive_maximum == 50


@pytest.mark.parametrize("bytewise", [False, True])
def test_connack_and_what_follows_in_one_read(bytewise: bool) -> None:
    mqtt = client(True)
    data = encode_packet_v5(Connack5(True, 0, Properties(
        receive_maximum=10, maximum_qos=1, retain_available=0, maximum_packet_size=500,
        server_keep_alive=5))) + encode_packet_v5(Publish5("t", b"x", 1, packet_id=3))
    packets = feed(mqtt, data, bytewise=bytewise)
    assert [type(p) for p in packets] == [Connack5, Publish5]
    assert mqtt.state is ClientState.CONNECTED
    limits = mqtt.limits
    assert (limits.session_present, limits.receive_maximum, limits.maximum_qos,
            limits.retain_available, limits.maximum_packet_size) == (True, 10, 1, False, 500)
    assert mqtt.keepalive == 5


def test_refusals_are_described() -> None:
    mqtt = client(False)
    [connack] = mqtt.receive(encode_connack(False, 4))
    assert mqtt.state is ClientState.CLOSED
    assert isinstance(connack, Connack)
    assert MqttClient.refusal(connack) == "CONNACK 0x04 (bad username or password)"
    refused5 = Connack5(False, 0x9C, Properties(reason_string="maintenance",
                                                server_reference="other:1883"))
    assert MqttClient.refusal(refused5) == ("CONNACK 0x9c (Use another server): maintenance; "
                                            "server reference other:1883")


@pytest.mark.parametrize(("v5", "data", "message"), [
    (False, encode_packet(Publish("t", b"", 0)), "packet type 3 before CONNACK"),
    (False, encode_connack(False, 0) + b"\x82\x05\x00\x01\x00\x01t",
     "packet type 8 may not come from a server"),
    (False, encode_connack(False, 0) + b"\xe0\x00", "packet type 14 may not come from a server"),
    (True, encode_packet_v5(Connack5()) + encode_packet_v5(
        Publish5("t", b"", 0, properties=Properties(topic_alias=1))), "Topic Alias"),
    (False, encode_connack(False, 0) + encode_packet(Publish("a/+", b"", 0)), "wildcard"),
    (False, b"\x20\x03\x00\x00\x00", "CONNACK remaining length must be 2"),
])
def test_what_a_server_may_not_send(v5: bool, data: bytes, message: str) -> None:
    with pytest.raises(MQTTError, match=message):
        client(v5).receive(data)


def test_subscribe_asks_for_no_local_in_mqtt5() -> None:
    v5 = client(True).subscribe(4, [("a/#", 1)])
    assert v5 == b"\x82\x09\x00\x04\x00\x00\x03a/#\x0d"  # QoS 1 | No Local | RAP
    assert client(False).subscribe(4, [("a/#", 1)]) == b"\x82\x08\x00\x04\x00\x03a/#\x01"
