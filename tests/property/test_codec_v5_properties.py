"""Property tests for the MQTT 5.0 codec (hypothesis).

* every v5 packet the spec allows, with any allowed properties, survives encode -> frame ->
  decode unchanged, however the byte stream is chunked;
* the v5 decoders (`decode_packet_v5`, `decode_connect_any`, `decode_properties`), given any
  bytes, raise nothing but `MQTTError` subclasses, and what they accept decodes the same after
  re-encoding (the encoder may pick a shorter form: an ack's or DISCONNECT's short form, or
  properties sorted by identifier).
"""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from culex.protocol.errors import MQTTError
from culex.protocol.packets import PacketType, Pingreq, Pingresp
from culex.protocol.packets5 import (
    Auth,
    Connack5,
    Connect5,
    Disconnect5,
    Packet5,
    Puback5,
    Pubcomp5,
    Publish5,
    Pubrec5,
    Pubrel5,
    Suback5,
    Subscribe5,
    Subscription,
    Unsuback5,
    Unsubscribe5,
    Will5,
)
from culex.protocol.properties import (
    MAX_VARINT,
    PROPERTY_TABLE,
    WILL_PROPERTIES,
    Properties,
    PropertyId,
    PropertyType,
    decode_properties,
    encode_properties,
)
from culex.protocol.reader import FrameReader
from culex.protocol.reasons import REASON_CODES_BY_PACKET
from culex.protocol.v5 import decode_connect_any, decode_packet_v5, encode_packet_v5
from tests.property.test_codec_properties import (
    MQTT_CHARS,
    binaries,
    chunk,
    feed_chunks,
    texts,
)
from tests.unit.test_codec import frame_of, split_frame

# Each test stays under ~5 s: round trips build big packets, so fewer examples; the fuzz tests
# are cheap per example, so more.
SETTINGS = settings(max_examples=200, deadline=1000,
                    suppress_health_check=[HealthCheck.too_slow])
STREAM_SETTINGS = settings(SETTINGS, max_examples=60)
FUZZ_SETTINGS = settings(SETTINGS, max_examples=600)

packet_ids = st.integers(1, 65535)
qoses = st.integers(0, 2)
# Response Topics are Topic Names: non-empty, no wildcards [MQTT-3.3.2-14].
topic_names = st.text(MQTT_CHARS.filter(lambda char: char not in "+#"), min_size=1,
                      max_size=16)

Sent = tuple[Packet5, bool]
"""A packet and whether the client sends it (direction changes a few rules)."""


def reasons(packet_type: PacketType) -> st.SearchStrategy[int]:
    return st.sampled_from(sorted(REASON_CODES_BY_PACKET[packet_type]))


@st.composite
def properties_for(draw: st.DrawFn, ctx: int, from_client: bool = True) -> Properties:
    """Any valid property block for `ctx` (a packet type or WILL_PROPERTIES)."""
    props = Properties()
    for spec in PROPERTY_TABLE:
        if ctx not in spec.packets or not draw(st.booleans()):
            continue
        if spec.id == PropertyId.SUBSCRIPTION_IDENTIFIER:
            if ctx == PacketType.PUBLISH and from_client:
                continue  # [MQTT-3.3.4-6]
            most = 3 if ctx == PacketType.PUBLISH else 1
            props.subscription_identifiers = draw(st.lists(st.integers(1, MAX_VARINT),
                                                           min_size=1, max_size=most))
        elif spec.id == PropertyId.USER_PROPERTY:
            props.user_properties = draw(st.lists(st.tuples(texts, texts), min_size=1,
                                                  max_size=4))
        elif spec.id == PropertyId.SESSION_EXPIRY_INTERVAL and ctx == PacketType.DISCONNECT \
                and not from_client:
            continue  # [MQTT-3.14.2-2]
        elif spec.id == PropertyId.RESPONSE_TOPIC:
            props.response_topic = draw(topic_names)
        elif spec.type is PropertyType.UTF8_STRING:
            setattr(props, spec.attr, draw(texts))
        elif spec.type is PropertyType.BINARY:
            setattr(props, spec.attr, draw(binaries))
        else:
            top = {PropertyType.BYTE: 255, PropertyType.TWO_BYTE_INT: 65535,
                   PropertyType.FOUR_BYTE_INT: 0xFFFFFFFF}[spec.type]
            low = spec.minimum if spec.minimum is not None else 0
            high = spec.maximum if spec.maximum is not None else top
            setattr(props, spec.attr, draw(st.integers(low, high)))
    if props.authentication_data is not None and props.authentication_method is None:
        props.authentication_method = draw(texts)
    return props


@st.composite
def connects(draw: st.DrawFn) -> Sent:
    will = None
    if draw(st.booleans()):
        will = Will5(draw(texts), draw(binaries), draw(qoses), draw(st.booleans()),
                     draw(properties_for(WILL_PROPERTIES)))
    return Connect5(draw(texts), draw(st.booleans()), draw(st.integers(0, 65535)), will,
                    draw(st.none() | texts), draw(st.none() | binaries),
                    draw(properties_for(PacketType.CONNECT))), True


@st.composite
def connacks(draw: st.DrawFn) -> Sent:
    code = draw(reasons(PacketType.CONNACK))
    present = draw(st.booleans()) if code == 0 else False
    return Connack5(present, code, draw(properties_for(PacketType.CONNACK))), False


@st.composite
def publishes(draw: st.DrawFn) -> Sent:
    from_client = draw(st.booleans())
    qos = draw(qoses)
    payload = draw(st.binary(max_size=300) | st.binary(min_size=16_000, max_size=17_000))
    return Publish5(draw(st.just("") | texts), payload, qos, draw(st.booleans()),
                    draw(st.booleans()) if qos else False, draw(packet_ids) if qos else 0,
                    draw(properties_for(PacketType.PUBLISH, from_client))), from_client


ACK_KINDS: list[tuple[type[Puback5 | Pubrec5 | Pubrel5 | Pubcomp5], PacketType]] = [
    (Puback5, PacketType.PUBACK), (Pubrec5, PacketType.PUBREC),
    (Pubrel5, PacketType.PUBREL), (Pubcomp5, PacketType.PUBCOMP)]


@st.composite
def acks(draw: st.DrawFn) -> Sent:
    cls, packet_type = draw(st.sampled_from(ACK_KINDS))
    return cls(draw(packet_ids), draw(reasons(packet_type)),
               draw(properties_for(packet_type))), draw(st.booleans())


@st.composite
def subscriptions(draw: st.DrawFn) -> Subscription:
    topic_filter = draw(texts | texts.map(lambda text: "$share/" + text))
    no_local = draw(st.booleans()) and not topic_filter.startswith("$share/")
    return Subscription(topic_filter, draw(qoses), no_local, draw(st.booleans()),
                        draw(st.integers(0, 2)))


@st.composite
def subscribes(draw: st.DrawFn) -> Sent:
    return Subscribe5(draw(packet_ids), draw(st.lists(subscriptions(), min_size=1, max_size=5)),
                      draw(properties_for(PacketType.SUBSCRIBE))), True


@st.composite
def reason_lists(draw: st.DrawFn, cls: type[Suback5 | Unsuback5],
                 packet_type: PacketType) -> Sent:
    return cls(draw(packet_ids), draw(st.lists(reasons(packet_type), min_size=1, max_size=8)),
               draw(properties_for(packet_type))), False


@st.composite
def unsubscribes(draw: st.DrawFn) -> Sent:
    return Unsubscribe5(draw(packet_ids), draw(st.lists(texts, min_size=1, max_size=5)),
                        draw(properties_for(PacketType.UNSUBSCRIBE))), True


@st.composite
def disconnects(draw: st.DrawFn) -> Sent:
    from_client = draw(st.booleans())
    return Disconnect5(draw(reasons(PacketType.DISCONNECT)),
                       draw(properties_for(PacketType.DISCONNECT, from_client))), from_client


@st.composite
def auths(draw: st.DrawFn) -> Sent:
    from_client = draw(st.booleans())
    code = draw(st.sampled_from([0x18, 0x19] if from_client else [0x00, 0x18]))
    props = draw(properties_for(PacketType.AUTH))
    # Anything but the bare Success form must name its method (§3.15.2.2.2).
    if (code or not props.is_empty()) and props.authentication_method is None:
        props.authentication_method = draw(texts)
    return Auth(code, props), from_client


sent_packets: st.SearchStrategy[Sent] = st.one_of(
    connects(), connacks(), publishes(), acks(), subscribes(),
    reason_lists(Suback5, PacketType.SUBACK), unsubscribes(),
    reason_lists(Unsuback5, PacketType.UNSUBACK),
    st.just((Pingreq(), True)), st.just((Pingresp(), False)), disconnects(), auths())


# -- round trip --------------------------------------------------------------------------------


@SETTINGS
@given(sent_packets)
def test_round_trip(sent: Sent) -> None:
    packet, from_client = sent
    raw = encode_packet_v5(packet)
    first, offset = split_frame(raw)  # checks the Remaining Length against the real body
    decoded = decode_packet_v5(first, raw, offset, from_client=from_client)
    assert type(decoded) is type(packet)
    assert decoded == packet
    if isinstance(packet, Connect5):
        assert decode_connect_any(first, raw, offset) == packet
    reader = FrameReader(1 << 20, connect_only=isinstance(packet, Connect5))
    assert reader.feed(raw) == [(first, raw, offset)]
    assert reader.buffered == 0


@STREAM_SETTINGS
@given(connects(), st.lists(sent_packets, max_size=6), st.lists(st.integers(0, 1 << 20),
                                                               max_size=12))
def test_round_trip_stream_any_chunking(connect: Sent, rest: list[Sent],
                                        cuts: list[int]) -> None:
    sent = [connect, *rest]
    raws = [encode_packet_v5(packet) for packet, _ in sent]
    reader = FrameReader(1 << 20)
    frames = feed_chunks(reader, chunk(b"".join(raws), cuts))
    assert reader.error is None
    assert reader.buffered == 0
    assert [frame[1] for frame in frames] == raws
    assert decode_connect_any(*frames[0]) == connect[0]
    assert [decode_packet_v5(*frame, from_client=from_client)
            for frame, (_, from_client) in zip(frames[1:], rest, strict=True)] == \
        [packet for packet, _ in rest]


@SETTINGS
@given(st.sampled_from([WILL_PROPERTIES, *range(1, 16)]).flatmap(
    lambda ctx: st.tuples(st.just(ctx), properties_for(ctx, from_client=False))))
def test_properties_round_trip(item: tuple[int, Properties]) -> None:
    ctx, props = item
    raw = encode_properties(props)
    assert decode_properties(raw, 0, len(raw), ctx) == (props, len(raw))


# -- the decoders raise only MQTTError -----------------------------------------------------------


def check_decode(first_byte: int, body: bytes, from_client: bool) -> None:
    raw = frame_of(first_byte, body)
    _, offset = split_frame(raw)
    try:
        packet = decode_packet_v5(first_byte, raw, offset, from_client=from_client)
    except MQTTError:
        pass
    else:
        again = encode_packet_v5(packet)
        first, again_offset = split_frame(again)
        assert decode_packet_v5(first, again, again_offset, from_client=from_client) == packet
    if first_byte >> 4 == PacketType.CONNECT:
        with contextlib.suppress(MQTTError):
            decode_connect_any(first_byte, raw, offset)


@FUZZ_SETTINGS
@given(st.integers(0, 255), st.binary(max_size=300), st.booleans())
def test_decode_arbitrary_bytes(first_byte: int, body: bytes, from_client: bool) -> None:
    check_decode(first_byte, body, from_client)


# Bytes that matter to the v5 decoder: lengths, property ids (0x0B, 0x15, 0x23, 0x26, ...),
# reason codes, subscription option bits, varint continuation bytes, "MQTT" and level 5.
INTERESTING = [0x00, 0x01, 0x02, 0x03, 0x05, 0x0B, 0x11, 0x15, 0x16, 0x18, 0x19, 0x1F, 0x23,
               0x26, 0x27, 0x2A, 0x2B, 0x30, 0x4D, 0x51, 0x54, 0x7F, 0x80, 0x87, 0x92, 0xC0,
               0xFF]


@FUZZ_SETTINGS
@given(st.sampled_from([0x10, 0x20, 0x30, 0x32, 0x3D, 0x40, 0x50, 0x62, 0x70, 0x82, 0x90,
                        0xA2, 0xB0, 0xC0, 0xD0, 0xE0, 0xF0]),
       st.lists(st.sampled_from(INTERESTING), max_size=40), st.booleans())
def test_decode_plausible_bytes(first_byte: int, body: list[int], from_client: bool) -> None:
    prefix = b"\x00\x04MQTT\x05" if first_byte == 0x10 else b""
    check_decode(first_byte, prefix + bytes(body), from_client)


@SETTINGS
@given(sent_packets, st.data())
def test_decode_mutated_packets(sent: Sent, data: st.DataObject) -> None:
    packet, _ = sent
    raw = encode_packet_v5(packet)
    first, offset = split_frame(raw)
    body = bytearray(raw[offset:])
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "cut"]))
        index = data.draw(st.integers(0, len(body)))
        if action == "insert":
            body.insert(index, data.draw(st.integers(0, 255)))
        elif action == "cut":
            del body[index:]
        elif index < len(body):
            if action == "flip":
                body[index] ^= 1 << data.draw(st.integers(0, 7))
            elif action == "set":
                body[index] = data.draw(st.sampled_from(INTERESTING))
            else:
                del body[index]
    check_decode(first, bytes(body), data.draw(st.booleans()))


@FUZZ_SETTINGS
@given(st.sampled_from([WILL_PROPERTIES, *range(1, 16)]), st.binary(max_size=200),
       st.integers(0, 5))
def test_decode_properties_arbitrary_bytes(ctx: int, raw: bytes, cap: int) -> None:
    try:
        props, pos = decode_properties(raw, 0, len(raw), ctx, max_user_properties=cap)
    except MQTTError:
        return
    assert pos <= len(raw)
    assert len(props.user_properties) <= cap
    again = encode_properties(props)
    assert decode_properties(again, 0, len(again), ctx, max_user_properties=cap) == \
        (props, len(again))
