"""The bench clients' frame parsing, fed bytes directly: what an MQTT 5 broker may send.

Culex forwards a PUBLISH without properties and acks in the 4-byte form, so the end-to-end
bench tests never show the other forms a broker may use; these do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from culex.bench.clients import Subscriber, WorkerState
from culex.bench.plan import PublisherSpec, SubscriberSpec
from culex.bench.publisher import Publisher
from culex.bench.wire import STAMP, PublishTemplate, subscribe_frames
from culex.protocol.packets import PacketType
from culex.protocol.packets5 import Publish5
from culex.protocol.properties import Properties
from culex.protocol.v5 import (
    decode_packet_v5,
    encode_ack5,
    encode_connack5,
    encode_publish5,
    encode_suback5,
)

PAYLOAD = 40
T = TypeVar("T")


class Transport:
    """Records what a client writes; closing is remembered."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def in_loop(body: Callable[[], T]) -> T:
    async def run() -> T:
        return body()
    return asyncio.run(run())


def subscriber(qos: int, *, mqtt5: bool = True) -> tuple[Subscriber, WorkerState, Transport]:
    state = WorkerState()
    state.measure_start = 0
    client = Subscriber(state, "s", SubscriberSpec(0, ("t",)), 1, qos, payload=PAYLOAD,
                        mqtt5=mqtt5)
    transport = Transport()
    client.transport = transport  # type: ignore[assignment]
    client.expect_subacks(1).set_result(None)
    return client, state, transport


def stamped(seq: int) -> bytes:
    return STAMP.pack(time.monotonic_ns(), 0, seq) + b"x" * (PAYLOAD - STAMP.size)


def test_publish_with_properties_is_read_past_the_property_block() -> None:
    def body() -> None:
        client, state, transport = subscriber(1)
        properties = Properties(message_expiry_interval=60, subscription_identifiers=[7],
                                user_properties=[("k", "v" * 200)])  # a 2-byte property length
        frames = [encode_publish5(Publish5("t", stamped(seq), qos=1, packet_id=seq + 1,
                                           properties=properties)) for seq in range(3)]
        frames.append(encode_publish5(Publish5("t", stamped(3), qos=1, packet_id=4)))
        data = b"".join(frames)
        client.data_received(data[:100])  # split mid-frame
        client.data_received(data[100:])
        assert (state.delivered, state.received, client.foreign) == (4, 4, 0)
        assert state.protocol_errors == 0
        assert b"".join(transport.written) == b"".join(
            encode_ack5(PacketType.PUBACK, pid) for pid in (1, 2, 3, 4))
    in_loop(body)


def test_template_frames_decode_as_mqtt5_and_the_subscriber_reads_them() -> None:
    def body() -> None:
        template = PublishTemplate("t", PAYLOAD, 1, 3, mqtt5=True)
        for i in range(3):
            template.buffer[template.id_offsets[i]:template.id_offsets[i] + 2] = bytes((0, i + 9))
            STAMP.pack_into(template.buffer, template.stamp_offsets[i], 5, 0, i)
        frame = bytes(template.view[:template.frame_size])
        packet = decode_packet_v5(frame[0], frame, 2, from_client=True)
        assert isinstance(packet, Publish5)
        assert (packet.topic, packet.qos, packet.packet_id) == ("t", 1, 9)
        assert packet.properties.is_empty()
        assert packet.payload[:STAMP.size] == STAMP.pack(5, 0, 0)
        client, state, _ = subscriber(1)
        client.data_received(bytes(template.buffer))
        assert (state.delivered, client.foreign, state.protocol_errors) == (3, 0, 0)
    in_loop(body)


def test_pubrel_with_a_reason_code_is_completed_and_counted() -> None:
    def body() -> None:
        client, state, transport = subscriber(2)
        client.data_received(encode_ack5(PacketType.PUBREL, 5)
                             + encode_ack5(PacketType.PUBREL, 6, 0x92))
        assert transport.written == [encode_ack5(PacketType.PUBCOMP, 6),
                                     encode_ack5(PacketType.PUBCOMP, 5)]
        assert state.protocol_errors == 1
        assert "Packet Identifier not found" in state.error_messages[0]
    in_loop(body)


def publisher(qos: int) -> tuple[Publisher, WorkerState, Transport]:
    state = WorkerState()
    template = PublishTemplate("t", PAYLOAD, qos, 1, mqtt5=True)
    client = Publisher(state, "p", PublisherSpec(0, "t", 1), template=template, qos=qos,
                       inflight=20, rate=0, mqtt5=True)
    transport = Transport()
    client.transport = transport  # type: ignore[assignment]
    client.connack.set_result(None)
    client.inflight.update({1, 2, 3, 4})
    return client, state, transport


def test_acks_with_reason_codes_and_properties() -> None:
    def body() -> None:
        client, state, _ = publisher(1)
        client.data_received(
            encode_ack5(PacketType.PUBACK, 1)
            + encode_ack5(PacketType.PUBACK, 2, 0x10)  # No matching subscribers: success
            + encode_ack5(PacketType.PUBACK, 3, 0, Properties(reason_string="fine"))
            + encode_ack5(PacketType.PUBACK, 4, 0x97))  # Quota exceeded: an error
        assert client.inflight == set()
        assert state.protocol_errors == 1
        assert "PUBACK reason code 0x97 (Quota exceeded)" in state.error_messages[0]
    in_loop(body)


def test_failed_pubrec_is_not_released() -> None:
    def body() -> None:
        client, state, transport = publisher(2)
        client.data_received(encode_ack5(PacketType.PUBREC, 1, 0x10)
                             + encode_ack5(PacketType.PUBREC, 2, 0x80))
        assert transport.written == [encode_ack5(PacketType.PUBREL, 1)]
        assert client.inflight == {1, 3, 4}
        assert state.protocol_errors == 1
    in_loop(body)


def test_connack_with_properties_caps_the_window_and_refusals_name_the_reason() -> None:
    def body() -> None:
        client, _, _ = publisher(1)
        client.connack = asyncio.get_running_loop().create_future()
        client.data_received(encode_connack5(False, 0, Properties(receive_maximum=5,
                                                                  topic_alias_maximum=10)))
        assert client.connack.result() is None
        assert client.window == 5
        for connack, expected in [
            (encode_connack5(False, 0x86), "CONNACK reason code 0x86 (Bad User Name or Password)"),
            (encode_connack5(False, 0, Properties(maximum_qos=0)), "Maximum QoS is 0"),
            (b"\x20\x02\x00\x01", "the broker does not speak MQTT 5"),
        ]:
            client, _, _ = publisher(1)
            client.connack = asyncio.get_running_loop().create_future()
            client.data_received(connack)
            assert expected in (client.connack.result() or "")
    in_loop(body)


def test_suback_and_disconnect_from_an_mqtt5_broker() -> None:
    def body() -> None:
        client, state, transport = subscriber(1)
        granted = client.expect_subacks(1)
        client.data_received(encode_suback5(1, [1], Properties(reason_string="ok")))
        assert granted.done() and granted.exception() is None
        refused = client.expect_subacks(1)
        client.data_received(encode_suback5(1, [0x87]))
        assert "SUBACK reason code 0x87 (Not authorized)" in str(refused.exception())
        client.data_received(b"\xe0\x01\x8b")  # DISCONNECT, Server shutting down
        assert state.connection_errors == 1
        assert "DISCONNECT, reason code 0x8b (Server shutting down)" in state.error_messages[0]
        assert transport.closed
    in_loop(body)


def test_subscribe_frames_v5_decode() -> None:
    [frame] = subscribe_frames(["a/#", "b"], 2, mqtt5=True)
    packet = decode_packet_v5(frame[0], frame, 2, from_client=True)
    assert [(s.topic_filter, s.qos) for s in packet.subscriptions] == [  # type: ignore[union-attr]
        ("a/#", 2), ("b", 2)]
