"""The hot path's PUBLISH and ack parser (`protocol/publish.py`) against the general decoders.

The broker's handlers read PUBLISHes and 3.1.1 acks with `publish_fields` / `ack_packet_id`
and never build packet objects; the codec's decoders are built on the same functions and add
the UTF-8 decoding of the topic. So, for any bytes: where the decoder accepts a packet, the
parser finds the same QoS, topic, packet id and payload; where it refuses one, the parser
refuses it too, or what is left (the topic's UTF-8 and topic rules) is refused by the
validation the broker applies to every new topic name.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from culex.protocol.codec import decode_packet, encode_ack, encode_publish
from culex.protocol.errors import MQTTError
from culex.protocol.packets import PacketType, Publish
from culex.protocol.publish import ack_packet_id, publish_fields, qos0_payload_offset, topic_span
from culex.protocol.topics import validate_topic_name
from tests.unit.test_codec import split_frame

SETTINGS = settings(max_examples=500, deadline=1000)

# PUBLISH first bytes: every QoS (3 included), DUP and RETAIN combination.
publish_firsts = st.integers(0x30, 0x3F)
# Bodies that are mostly well framed (a topic length that fits, a topic that is often valid
# text, sometimes a packet id of 0), so the checks past the framing are reached, and
# arbitrary bytes, so every framing error is.
topics = st.one_of(st.text(max_size=8).map(str.encode), st.binary(max_size=8))
framed_bodies = st.builds(lambda topic, packet_id, payload: (
    len(topic).to_bytes(2, "big") + topic + packet_id + payload),
    topics, st.sampled_from([b"", b"\x00\x00", b"\x00\x07", b"\x00"]), st.binary(max_size=8))
bodies = st.one_of(framed_bodies, st.binary(max_size=40))


def frame_for(first: int, body: bytes) -> tuple[bytes, int]:
    """A whole frame (fixed header and body) and where its body starts."""
    length = len(body)
    head = bytearray([first])
    while True:
        byte, length = length & 0x7F, length >> 7
        head.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes(head) + body, len(head)


@SETTINGS
@given(publish_firsts, bodies)
def test_publish_fields_agrees_with_the_decoder_on_any_bytes(first: int, body: bytes) -> None:
    frame, pos = frame_for(first, body)
    try:
        packet = decode_packet(first, frame, pos)
    except MQTTError as decoder_error:
        try:
            qos, topic_end, _, _ = publish_fields(first, frame, pos)
        except MQTTError as parser_error:
            assert type(parser_error) is type(decoder_error)
            return
        # Framed alike: only the topic's text can be what the decoder refused.
        try:
            validate_topic_name(frame[pos + 2:topic_end])
        except MQTTError:
            return
        raise AssertionError(f"decoder refused ({decoder_error}), parser and validation "
                             "accepted") from None
    assert isinstance(packet, Publish)
    qos, topic_end, packet_id, payload_at = publish_fields(first, frame, pos)
    assert (qos, packet_id) == (packet.qos, packet.packet_id)
    assert frame[pos + 2:topic_end].decode() == packet.topic
    assert frame[payload_at:] == packet.payload


@SETTINGS
@given(st.text(min_size=1, max_size=20).filter(lambda t: "\x00" not in t),
       st.binary(max_size=30), st.integers(0, 2), st.booleans(), st.integers(1, 65535))
def test_publish_fields_reads_what_the_encoder_wrote(topic: str, payload: bytes, qos: int,
                                                     retain: bool, packet_id: int) -> None:
    frame = encode_publish(Publish(topic, payload, qos, retain, False,
                                   packet_id if qos else 0))
    first, body_at = split_frame(frame)
    fields = publish_fields(first, frame, body_at)
    assert fields == (qos, body_at + 2 + len(topic.encode()), packet_id if qos else 0,
                      len(frame) - len(payload))
    start, stop = topic_span(frame)
    assert frame[start:stop] == topic.encode()
    if not qos:
        assert frame[qos0_payload_offset(frame, v5=False):] == payload


@SETTINGS
@given(st.sampled_from([(PacketType.PUBACK, 0), (PacketType.PUBREC, 0),
                        (PacketType.PUBREL, 2), (PacketType.PUBCOMP, 0)]),
       st.integers(0, 15), st.binary(max_size=4))
def test_ack_packet_id_agrees_with_the_decoder(kind: tuple[PacketType, int], flags: int,
                                              body: bytes) -> None:
    packet_type, required = kind
    first = packet_type << 4 | flags
    frame, pos = frame_for(first, body)
    name = packet_type.name
    try:
        packet = decode_packet(first, frame, pos)
    except MQTTError as decoder_error:
        try:
            ack_packet_id(first, frame, pos, required, name)
        except MQTTError as parser_error:
            assert type(parser_error) is type(decoder_error)
            return
        raise AssertionError(f"decoder refused ({decoder_error}), parser accepted") from None
    assert ack_packet_id(first, frame, pos, required, name) == packet.packet_id  # type: ignore[union-attr]
    assert frame == encode_ack(packet_type, packet.packet_id)  # type: ignore[union-attr]
