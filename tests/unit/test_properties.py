# mypy: disable-error-code="no-untyped-call"
# (paho-mqtt, used here as an independent reference, ships without annotations.)
"""MQTT 5.0 properties: the table, the decoder's error classes, the encoder, the CVE caps.

Property bytes are written by the small helpers below (one line each, independent of the codec
under test) from MQTT 5.0 §2.2.2 and each property's section. The table itself is checked
against an expectation typed in from Table 2-4 and against paho-mqtt's own table.

Error classes follow the spec's words: an unknown identifier or one not valid in the packet is
a Malformed Packet (§2.2.2.2), as is any length that runs past its block; a duplicate or an
out-of-range value is a Protocol Error (each property's section).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from culex.protocol.errors import MalformedPacket, MQTTError, ProtocolError
from culex.protocol.packets import PacketType
from culex.protocol.properties import (
    DEFAULT_MAX_USER_PROPERTIES,
    EMPTY_PROPERTIES,
    PROPERTIES_BY_ID,
    PROPERTY_TABLE,
    WILL_PROPERTIES,
    Properties,
    PropertyId,
    PropertyType,
    allowed_properties,
    context_name,
    decode_properties,
    encode_properties,
    read_varint,
)

# -- test-side encoders (independent of the codec) -----------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def mqtt_str(raw: bytes | str) -> bytes:
    data = raw.encode() if isinstance(raw, str) else raw
    return len(data).to_bytes(2, "big") + data


def p_byte(ident: int, value: int) -> bytes:
    return bytes((ident, value))


def p_u16(ident: int, value: int) -> bytes:
    return bytes((ident,)) + value.to_bytes(2, "big")


def p_u32(ident: int, value: int) -> bytes:
    return bytes((ident,)) + value.to_bytes(4, "big")


def p_varint(ident: int, value: int) -> bytes:
    return bytes((ident,)) + varint(value)


def p_str(ident: int, value: bytes | str) -> bytes:
    return bytes((ident,)) + mqtt_str(value)


def p_pair(name: bytes | str, value: bytes | str) -> bytes:
    return b"\x26" + mqtt_str(name) + mqtt_str(value)


def block(*props: bytes) -> bytes:
    body = b"".join(props)
    return varint(len(body)) + body


def decode_block(raw: bytes, packet_type: int, **kwargs: Any) -> Properties:
    """Decode a property block that fills `raw` exactly."""
    props, pos = decode_properties(raw, 0, len(raw), packet_type, **kwargs)
    assert pos == len(raw)
    return props


def raises_exactly(cls: type[MQTTError], func: Callable[..., Any], *args: Any,
                   **kwargs: Any) -> MQTTError:
    with pytest.raises(MQTTError) as info:
        func(*args, **kwargs)
    assert type(info.value) is cls, f"expected {cls.__name__}, got {info.value!r}"
    return info.value


# -- the table -----------------------------------------------------------------------------------

T = PacketType
W = WILL_PROPERTIES
# Table 2-4, typed in from the spec: id -> (type, packets).
EXPECTED_TABLE: dict[int, tuple[PropertyType, set[int]]] = {
    0x01: (PropertyType.BYTE, {T.PUBLISH, W}),
    0x02: (PropertyType.FOUR_BYTE_INT, {T.PUBLISH, W}),
    0x03: (PropertyType.UTF8_STRING, {T.PUBLISH, W}),
    0x08: (PropertyType.UTF8_STRING, {T.PUBLISH, W}),
    0x09: (PropertyType.BINARY, {T.PUBLISH, W}),
    0x0B: (PropertyType.VARINT, {T.PUBLISH, T.SUBSCRIBE}),
    0x11: (PropertyType.FOUR_BYTE_INT, {T.CONNECT, T.CONNACK, T.DISCONNECT}),
    0x12: (PropertyType.UTF8_STRING, {T.CONNACK}),
    0x13: (PropertyType.TWO_BYTE_INT, {T.CONNACK}),
    0x15: (PropertyType.UTF8_STRING, {T.CONNECT, T.CONNACK, T.AUTH}),
    0x16: (PropertyType.BINARY, {T.CONNECT, T.CONNACK, T.AUTH}),
    0x17: (PropertyType.BYTE, {T.CONNECT}),
    0x18: (PropertyType.FOUR_BYTE_INT, {W}),
    0x19: (PropertyType.BYTE, {T.CONNECT}),
    0x1A: (PropertyType.UTF8_STRING, {T.CONNACK}),
    0x1C: (PropertyType.UTF8_STRING, {T.CONNACK, T.DISCONNECT}),
    0x1F: (PropertyType.UTF8_STRING, {T.CONNACK, T.PUBACK, T.PUBREC, T.PUBREL, T.PUBCOMP,
                                      T.SUBACK, T.UNSUBACK, T.DISCONNECT, T.AUTH}),
    0x21: (PropertyType.TWO_BYTE_INT, {T.CONNECT, T.CONNACK}),
    0x22: (PropertyType.TWO_BYTE_INT, {T.CONNECT, T.CONNACK}),
    0x23: (PropertyType.TWO_BYTE_INT, {T.PUBLISH}),
    0x24: (PropertyType.BYTE, {T.CONNACK}),
    0x25: (PropertyType.BYTE, {T.CONNACK}),
    0x26: (PropertyType.UTF8_PAIR, {T.CONNECT, T.CONNACK, T.PUBLISH, W, T.PUBACK, T.PUBREC,
                                    T.PUBREL, T.PUBCOMP, T.SUBSCRIBE, T.SUBACK, T.UNSUBSCRIBE,
                                    T.UNSUBACK, T.DISCONNECT, T.AUTH}),
    0x27: (PropertyType.FOUR_BYTE_INT, {T.CONNECT, T.CONNACK}),
    0x28: (PropertyType.BYTE, {T.CONNACK}),
    0x29: (PropertyType.BYTE, {T.CONNACK}),
    0x2A: (PropertyType.BYTE, {T.CONNACK}),
}

# Every context a property block can appear in (PINGREQ/PINGRESP have none, but a property
# valid "nowhere" must be refused there too, so they are included).
ALL_CONTEXTS = [W, *range(1, 16)]


def test_table_matches_spec_table_2_4() -> None:
    assert {spec.id: (spec.type, set(spec.packets)) for spec in PROPERTY_TABLE} == EXPECTED_TABLE
    assert [spec.id for spec in PROPERTY_TABLE] == sorted(EXPECTED_TABLE)
    assert {spec.id for spec in PROPERTY_TABLE} == {member.value for member in PropertyId}
    for spec in PROPERTY_TABLE:
        assert PropertyId(spec.id).name == spec.name.upper().replace(" ", "_")
        assert PROPERTIES_BY_ID[spec.id] is spec
        assert spec.section.startswith("3.")


def test_table_matches_paho() -> None:
    paho = PahoProperties(PacketTypes.CONNECT)
    names = {ident: name for name, ident in paho.names.items()}
    for ident, (_, paho_packets) in paho.properties.items():
        spec = PROPERTIES_BY_ID[ident]
        assert spec.name.lower() == names[ident].lower()
        ours = {W if packet == 0 else int(packet) for packet in spec.packets}
        assert ours == {W if p == PacketTypes.WILLMESSAGE else p for p in paho_packets}


def test_only_user_property_and_subscription_identifier_repeat() -> None:
    repeatable = {spec.id: set(spec.repeatable_in) for spec in PROPERTY_TABLE if spec.repeatable}
    assert repeatable == {0x26: EXPECTED_TABLE[0x26][1], 0x0B: {T.PUBLISH}}


def test_value_constraints() -> None:
    bounds = {spec.id: (spec.minimum, spec.maximum) for spec in PROPERTY_TABLE
              if spec.minimum is not None or spec.maximum is not None}
    assert bounds == {
        0x01: (None, 1), 0x0B: (1, 268_435_455), 0x17: (None, 1), 0x19: (None, 1),
        0x21: (1, None), 0x23: (1, None), 0x24: (None, 1), 0x25: (None, 1),
        0x27: (1, None), 0x28: (None, 1), 0x29: (None, 1), 0x2A: (None, 1)}


def test_allowed_properties_and_context_name() -> None:
    assert allowed_properties(W) == {0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26}
    assert allowed_properties(T.UNSUBSCRIBE) == {0x26}
    assert allowed_properties(T.PINGREQ) == frozenset()
    assert context_name(W) == "Will Properties"
    assert context_name(T.SUBACK) == "SUBACK"


# -- one valid value per property, for the matrix tests ------------------------------------------

SAMPLE: dict[int, tuple[bytes, str, Any]] = {
    # id: (encoded property, attribute, decoded value)
    0x01: (p_byte(0x01, 1), "payload_format_indicator", 1),
    0x02: (p_u32(0x02, 0xDEADBEEF), "message_expiry_interval", 0xDEADBEEF),
    0x03: (p_str(0x03, "text/plain"), "content_type", "text/plain"),
    0x08: (p_str(0x08, "reply/to"), "response_topic", "reply/to"),
    0x09: (p_str(0x09, b"\x00\xff"), "correlation_data", b"\x00\xff"),
    0x0B: (p_varint(0x0B, 300), "subscription_identifiers", [300]),
    0x11: (p_u32(0x11, 0xFFFFFFFF), "session_expiry_interval", 0xFFFFFFFF),
    0x12: (p_str(0x12, "auto-1"), "assigned_client_identifier", "auto-1"),
    0x13: (p_u16(0x13, 30), "server_keep_alive", 30),
    0x15: (p_str(0x15, "SCRAM-SHA-1"), "authentication_method", "SCRAM-SHA-1"),
    0x16: (p_str(0x15, "M") + p_str(0x16, b"\x01\x02"), "authentication_data", b"\x01\x02"),
    0x17: (p_byte(0x17, 0), "request_problem_information", 0),
    0x18: (p_u32(0x18, 120), "will_delay_interval", 120),
    0x19: (p_byte(0x19, 1), "request_response_information", 1),
    0x1A: (p_str(0x1A, "resp/"), "response_information", "resp/"),
    0x1C: (p_str(0x1C, "other:1883"), "server_reference", "other:1883"),
    0x1F: (p_str(0x1F, "because"), "reason_string", "because"),
    0x21: (p_u16(0x21, 65535), "receive_maximum", 65535),
    0x22: (p_u16(0x22, 0), "topic_alias_maximum", 0),
    0x23: (p_u16(0x23, 7), "topic_alias", 7),
    0x24: (p_byte(0x24, 0), "maximum_qos", 0),
    0x25: (p_byte(0x25, 1), "retain_available", 1),
    0x26: (p_pair("k", "v"), "user_properties", [("k", "v")]),
    0x27: (p_u32(0x27, 1), "maximum_packet_size", 1),
    0x28: (p_byte(0x28, 0), "wildcard_subscription_available", 0),
    0x29: (p_byte(0x29, 1), "subscription_identifier_available", 1),
    0x2A: (p_byte(0x2A, 0), "shared_subscription_available", 0),
}

ALLOWED_PAIRS = [(ident, ctx) for ident in SAMPLE for ctx in ALL_CONTEXTS
                 if ctx in EXPECTED_TABLE[ident][1]]
FORBIDDEN_PAIRS = [(ident, ctx) for ident in SAMPLE for ctx in ALL_CONTEXTS
                   if ctx not in EXPECTED_TABLE[ident][1]]


@pytest.mark.parametrize("ident, ctx", ALLOWED_PAIRS)
def test_property_decodes_where_allowed(ident: int, ctx: int) -> None:
    raw, attr, value = SAMPLE[ident]
    props = decode_block(block(raw), ctx)
    assert getattr(props, attr) == value
    assert encode_properties(props) == block(raw)


@pytest.mark.parametrize("ident, ctx", FORBIDDEN_PAIRS)
def test_property_is_malformed_where_not_allowed(ident: int, ctx: int) -> None:
    raw = SAMPLE[ident][0]
    if ident == 0x16:
        raw = raw[raw.index(b"\x16"):]  # just the Authentication Data
    error = raises_exactly(MalformedPacket, decode_block, block(raw), ctx)
    assert error.rule == "§2.2.2.2"


def test_matrix_covers_every_property_and_context() -> None:
    assert set(SAMPLE) == set(EXPECTED_TABLE)
    assert len(ALLOWED_PAIRS) == sum(len(packets) for _, packets in EXPECTED_TABLE.values())
    assert len(ALLOWED_PAIRS) + len(FORBIDDEN_PAIRS) == len(SAMPLE) * len(ALL_CONTEXTS)


# -- decoding: structure ---------------------------------------------------------------------


def test_empty_block() -> None:
    props, pos = decode_properties(b"\x00", 0, 1, T.PUBLISH)
    assert pos == 1
    assert props == Properties()
    assert props.is_empty()


def test_block_inside_a_frame_stops_at_its_length() -> None:
    raw = b"\xaa" + block(p_u16(0x23, 1)) + b"payload"
    props, pos = decode_properties(raw, 1, len(raw), T.PUBLISH)
    assert props.topic_alias == 1
    assert raw[pos:] == b"payload"


def test_fresh_instances() -> None:
    first = decode_block(b"\x00", T.PUBLISH)
    second = decode_block(b"\x00", T.PUBLISH)
    assert first is not second
    assert first.user_properties is not second.user_properties


def test_two_byte_property_length() -> None:
    pairs = [p_pair(f"k{index:03d}", "v") for index in range(30)]  # 30 * 10 = 300 bytes
    raw = block(*pairs)
    assert raw[:2] == b"\xac\x02"  # 300 = 0x2C + 2 * 128
    props = decode_block(raw, T.CONNECT)
    assert props.user_properties == [(f"k{index:03d}", "v") for index in range(30)]


@pytest.mark.parametrize("raw", [
    b"",                                  # no Property Length at all [MQTT-2.2.2-1]
    b"\x01",                              # claims one byte, has none
    b"\x05\x23\x00\x01",                  # claims 5, has 3
    b"\x80",                              # Property Length varint cut short
    b"\xff\xff\xff",                      # ... after three continuation bytes
    b"\xff\xff\xff\xff\x01",              # five varint bytes [MQTT-1.5.5-1]
    b"\x80\x00",                          # non-minimal 0 [MQTT-1.5.5-1]
    b"\x82\x00\x23\x00",                  # non-minimal 2
    b"\x02\x23\x00",                      # Topic Alias cut by the block length
    b"\x03\x02\x00\x00",                  # Four Byte Integer cut
    b"\x01\x01",                          # Byte cut
    b"\x04\x03\x00\x05a",                 # string length past the block
    b"\x06\x26\x00\x01k\x00\x01",         # User Property value missing
    b"\x04\x26\x00\x01k",                 # User Property with a name only
    b"\x02\x0b\x80",                      # Subscription Identifier varint cut
    b"\x03\x0b\x80\x00",                  # Subscription Identifier non-minimal
    b"\x06\x0b\xff\xff\xff\xff\x01",      # Subscription Identifier five bytes
])
def test_structurally_malformed(raw: bytes) -> None:
    raises_exactly(MalformedPacket, decode_properties, raw, 0, len(raw), T.PUBLISH)


def test_length_past_packet_end_but_inside_buffer() -> None:
    """`end` bounds the block even when the buffer holds more bytes (the payload that follows
    a PUBLISH's properties must never be read as properties)."""
    raw = b"\x03\x23\x00\x01" + b"xx"
    raises_exactly(MalformedPacket, decode_properties, raw, 0, 3, T.PUBLISH)
    props, pos = decode_properties(raw, 0, 4, T.PUBLISH)
    assert (props.topic_alias, pos) == (1, 4)


def test_value_past_block_but_inside_packet() -> None:
    """A string that overruns its block is malformed even if the packet has bytes left."""
    raw = b"\x03\x03\x00\x02ab"
    raises_exactly(MalformedPacket, decode_properties, raw, 0, len(raw), T.PUBLISH)


@pytest.mark.parametrize("ident", [0x00, 0x04, 0x07, 0x0A, 0x10, 0x14, 0x1B, 0x1D, 0x20, 0x2B,
                                   0x7F, 0x80, 0x8B, 0xFF])
def test_unknown_identifier(ident: int) -> None:
    raw = block(bytes((ident, 0x00, 0x00, 0x00, 0x00)))
    for ctx in ALL_CONTEXTS:
        error = raises_exactly(MalformedPacket, decode_block, raw, ctx)
        assert error.rule == "§2.2.2.2"


def test_non_minimal_identifier_is_malformed() -> None:
    # 0x23 (Topic Alias) written as the two-byte varint A3 00.
    raises_exactly(MalformedPacket, decode_block, block(b"\xa3\x00\x00\x01"), T.PUBLISH)


@pytest.mark.parametrize("ident, raw", [
    (0x03, b"\x03\x00\x02\xc3\x28"),        # invalid UTF-8
    (0x08, b"\x08\x00\x03a\x00b"),           # U+0000
    (0x1F, b"\x1f\x00\x01\x07"),             # control character
    (0x26, b"\x26\x00\x01\xff\x00\x01v"),    # User Property name
    (0x26, b"\x26\x00\x01k\x00\x03\xed\xa0\x80"),  # User Property value: surrogate
])
def test_bad_utf8_in_string_properties(ident: int, raw: bytes) -> None:
    ctx = T.PUBLISH if ident != 0x1F else T.PUBACK
    raises_exactly(MalformedPacket, decode_block, block(raw), ctx)


# -- decoding: protocol errors -------------------------------------------------------------------

SINGLE = [ident for ident in SAMPLE if ident not in (0x26, 0x0B)]


def first_allowed_context(ident: int) -> int:
    return min(EXPECTED_TABLE[ident][1])


@pytest.mark.parametrize("ident", SINGLE)
def test_duplicate_single_property(ident: int) -> None:
    raw = SAMPLE[ident][0]
    # For Authentication Data, repeat only the data: a single Authentication Method.
    raw_twice = raw + (raw[raw.index(b"\x16"):] if ident == 0x16 else raw)
    error = raises_exactly(ProtocolError, decode_block, block(raw_twice),
                           first_allowed_context(ident))
    assert "more than once" in str(error)
    assert error.reason_code == 0x82


def test_duplicate_with_different_values_and_other_properties_between() -> None:
    raw = block(p_u32(0x02, 1), p_pair("a", "b"), p_u16(0x23, 2), p_u32(0x02, 2))
    raises_exactly(ProtocolError, decode_block, raw, T.PUBLISH)


def test_user_properties_repeat_and_keep_order() -> None:
    pairs = [("b", "2"), ("a", "1"), ("b", "2"), ("b", "3"), ("", ""), ("ü", "日本")]
    raw = block(*(p_pair(name, value) for name, value in pairs))
    for ctx in EXPECTED_TABLE[0x26][1]:
        assert decode_block(raw, ctx).user_properties == pairs
    assert encode_properties(Properties(user_properties=pairs)) == raw


def test_subscription_identifier_repeats_only_in_publish() -> None:
    raw = block(p_varint(0x0B, 5), p_varint(0x0B, 1), p_varint(0x0B, 5))
    assert decode_block(raw, T.PUBLISH).subscription_identifiers == [5, 1, 5]
    error = raises_exactly(ProtocolError, decode_block, raw, T.SUBSCRIBE)
    assert error.rule == "§3.8.2.1.2"


@pytest.mark.parametrize("raw, ctx", [
    (p_u16(0x21, 0), T.CONNECT),                # Receive Maximum 0
    (p_u16(0x21, 0), T.CONNACK),
    (p_u32(0x27, 0), T.CONNECT),                # Maximum Packet Size 0
    (p_u32(0x27, 0), T.CONNACK),
    (p_varint(0x0B, 0), T.SUBSCRIBE),           # Subscription Identifier 0
    (p_varint(0x0B, 0), T.PUBLISH),
    (p_byte(0x17, 2), T.CONNECT),               # Request Problem Information > 1
    (p_byte(0x19, 2), T.CONNECT),               # Request Response Information > 1
    (p_byte(0x01, 2), T.PUBLISH),               # Payload Format Indicator > 1
    (p_byte(0x01, 0xFF), W),
    (p_byte(0x24, 2), T.CONNACK),               # Maximum QoS 2 is expressed by absence
    (p_byte(0x25, 2), T.CONNACK),
    (p_byte(0x28, 2), T.CONNACK),
    (p_byte(0x29, 0x80), T.CONNACK),
    (p_byte(0x2A, 2), T.CONNACK),
])
def test_out_of_range_values(raw: bytes, ctx: int) -> None:
    raises_exactly(ProtocolError, decode_block, block(raw), ctx)


def test_topic_alias_zero_is_topic_alias_invalid() -> None:
    """§3.3.4: "A Topic Alias value of 0 ... is a Protocol Error, the receiver uses DISCONNECT
    with Reason Code of 0x94 (Topic Alias invalid)"."""
    error = raises_exactly(ProtocolError, decode_block, block(p_u16(0x23, 0)), T.PUBLISH)
    assert error.reason_code == 0x94
    assert ProtocolError.reason_code == 0x82  # the class attribute is untouched


@pytest.mark.parametrize("value", [1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152,
                                   268_435_455])
def test_subscription_identifier_range(value: int) -> None:
    raw = block(p_varint(0x0B, value))
    assert decode_block(raw, T.SUBSCRIBE).subscription_identifiers == [value]
    assert encode_properties(Properties(subscription_identifiers=[value])) == raw


def test_boundary_values_accepted() -> None:
    props = decode_block(block(p_u16(0x21, 1), p_u32(0x27, 1), p_u16(0x22, 0),
                               p_byte(0x17, 1), p_byte(0x19, 0)), T.CONNECT)
    assert (props.receive_maximum, props.maximum_packet_size, props.topic_alias_maximum,
            props.request_problem_information, props.request_response_information) == \
        (1, 1, 0, 1, 0)
    assert decode_block(block(p_u16(0x23, 65535)), T.PUBLISH).topic_alias == 65535
    assert decode_block(block(p_byte(0x01, 0)), T.PUBLISH).payload_format_indicator == 0


@pytest.mark.parametrize("topic", ["", "a/+", "#", "a/#", "+"])
def test_response_topic_must_be_a_topic_name(topic: str) -> None:
    for ctx in (T.PUBLISH, W):
        raises_exactly(ProtocolError, decode_block, block(p_str(0x08, topic)), ctx)


def test_authentication_data_requires_method() -> None:
    """§3.1.2.11.10: "It is a Protocol Error to include Authentication Data if there is no
    Authentication Method"; the order of the two does not matter."""
    for ctx in (T.CONNECT, T.CONNACK, T.AUTH):
        raises_exactly(ProtocolError, decode_block, block(p_str(0x16, b"x")), ctx)
        props = decode_block(block(p_str(0x16, b"x"), p_str(0x15, "M")), ctx)
        assert (props.authentication_method, props.authentication_data) == ("M", b"x")


# -- CVE-2021-41039: many User Properties --------------------------------------------------------

def many_user_properties(count: int) -> bytes:
    return block(b"\x26\x00\x01k\x00\x01v" * count)


def test_user_property_cap_default() -> None:
    assert DEFAULT_MAX_USER_PROPERTIES == 1024
    decode_block(many_user_properties(1024), T.PUBLISH)
    error = raises_exactly(ProtocolError, decode_block, many_user_properties(1025), T.PUBLISH)
    assert error.reason_code == 0x83  # Implementation specific error
    assert error.rule == "CVE-2021-41039"


def test_user_property_cap_configurable() -> None:
    assert len(decode_block(many_user_properties(3), T.CONNECT,
                            max_user_properties=3).user_properties) == 3
    raises_exactly(ProtocolError, decode_block, many_user_properties(4), T.CONNECT,
                   max_user_properties=3)
    raises_exactly(ProtocolError, decode_block, many_user_properties(1), T.CONNECT,
                   max_user_properties=0)


def test_100k_user_properties_refused_fast() -> None:
    raw = many_user_properties(100_000)  # ~900 KB block
    start = time.perf_counter()
    raises_exactly(ProtocolError, decode_block, raw, T.PUBLISH)
    assert time.perf_counter() - start < 0.5


def test_100k_user_properties_linear_when_allowed() -> None:
    """With the cap lifted, 100,000 properties still decode in linear time: the quadratic
    pattern of the CVE (re-copying the list or buffer per property) would take minutes."""
    raw = many_user_properties(100_000)
    start = time.perf_counter()
    props = decode_block(raw, T.PUBLISH, max_user_properties=100_000)
    elapsed = time.perf_counter() - start
    assert len(props.user_properties) == 100_000
    assert elapsed < 3.0
    start = time.perf_counter()
    assert encode_properties(props) == raw
    assert time.perf_counter() - start < 3.0


def test_largest_string_property() -> None:
    """A string property is at most 65,535 bytes; bigger blocks are bounded by the packet size
    limit of the framer, not here."""
    value = "x" * 65_535
    raw = block(p_pair("big", value), p_str(0x03, value))
    props = decode_block(raw, T.PUBLISH)
    assert props.user_properties == [("big", value)]
    assert props.content_type == value


# -- encoding --------------------------------------------------------------------------------


def test_empty_encodes_to_shared_zero_byte() -> None:
    assert EMPTY_PROPERTIES == b"\x00"
    assert encode_properties(Properties()) is EMPTY_PROPERTIES
    assert encode_properties(Properties(user_properties=[])) is EMPTY_PROPERTIES


def test_encode_in_identifier_order() -> None:
    props = Properties(user_properties=[("z", "1"), ("a", "2")], subscription_identifiers=[9, 3],
                       topic_alias=4, payload_format_indicator=1, content_type="c",
                       message_expiry_interval=60, correlation_data=b"id",
                       response_topic="r")
    assert encode_properties(props) == block(
        p_byte(0x01, 1), p_u32(0x02, 60), p_str(0x03, "c"), p_str(0x08, "r"),
        p_str(0x09, b"id"), p_varint(0x0B, 9), p_varint(0x0B, 3), p_u16(0x23, 4),
        p_pair("z", "1"), p_pair("a", "2"))


def test_every_property_round_trips() -> None:
    for ident, (raw, attr, value) in SAMPLE.items():
        props = Properties()
        setattr(props, attr, value)
        if ident == 0x16:
            props.authentication_method = "M"
        assert encode_properties(props) == block(raw), hex(ident)
        assert decode_block(block(raw), first_allowed_context(ident)) == props


def test_is_empty_and_repr() -> None:
    assert Properties().is_empty()
    assert not Properties(payload_format_indicator=0).is_empty()
    assert not Properties(subscription_identifiers=[1]).is_empty()
    assert repr(Properties()) == "Properties()"
    assert repr(Properties(topic_alias=3, user_properties=[("a", "b")])) == \
        "Properties(topic_alias=3, user_properties=[('a', 'b')])"


def test_encoder_trusts_caller_but_never_silently_truncates() -> None:
    with pytest.raises(OverflowError):
        encode_properties(Properties(topic_alias=70_000))
    with pytest.raises(ValueError):
        encode_properties(Properties(subscription_identifiers=[268_435_456]))


# -- varint ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152,
                                   268_435_455])
def test_read_varint(value: int) -> None:
    raw = b"\xee" + varint(value) + b"\xee"
    assert read_varint(raw, 1, len(raw), "x") == (value, len(raw) - 1)
    raises_exactly(MalformedPacket, read_varint, raw, 1, len(raw) - 2, "x")


# -- paho cross-check -----------------------------------------------------------------------------

PAHO_CASES: list[tuple[int, int, dict[str, Any], Properties]] = [
    (PacketTypes.CONNECT, T.CONNECT,
     {"SessionExpiryInterval": 3600, "ReceiveMaximum": 20, "MaximumPacketSize": 1 << 20,
      "TopicAliasMaximum": 10, "RequestResponseInformation": 1, "RequestProblemInformation": 0,
      "UserProperty": [("a", "1"), ("b", "2")], "AuthenticationMethod": "PLAIN",
      "AuthenticationData": b"secret"},
     Properties(session_expiry_interval=3600, receive_maximum=20, maximum_packet_size=1 << 20,
                topic_alias_maximum=10, request_response_information=1,
                request_problem_information=0, user_properties=[("a", "1"), ("b", "2")],
                authentication_method="PLAIN", authentication_data=b"secret")),
    (PacketTypes.WILLMESSAGE, W,
     {"WillDelayInterval": 5, "PayloadFormatIndicator": 1, "MessageExpiryInterval": 60,
      "ContentType": "text/plain", "ResponseTopic": "r/t", "CorrelationData": b"\x01",
      "UserProperty": ("w", "x")},
     Properties(will_delay_interval=5, payload_format_indicator=1, message_expiry_interval=60,
                content_type="text/plain", response_topic="r/t", correlation_data=b"\x01",
                user_properties=[("w", "x")])),
    (PacketTypes.PUBLISH, T.PUBLISH,
     {"TopicAlias": 3, "SubscriptionIdentifier": [1, 200_000], "UserProperty": ("k", "v")},
     Properties(topic_alias=3, subscription_identifiers=[1, 200_000],
                user_properties=[("k", "v")])),
    (PacketTypes.CONNACK, T.CONNACK,
     {"SessionExpiryInterval": 0, "ReceiveMaximum": 100, "MaximumQoS": 1, "RetainAvailable": 0,
      "MaximumPacketSize": 65536, "AssignedClientIdentifier": "gen-1", "TopicAliasMaximum": 5,
      "ReasonString": "ok", "WildcardSubscriptionAvailable": 1,
      "SubscriptionIdentifierAvailable": 0, "SharedSubscriptionAvailable": 1,
      "ServerKeepAlive": 120, "ResponseInformation": "resp", "ServerReference": "s2"},
     Properties(session_expiry_interval=0, receive_maximum=100, maximum_qos=1,
                retain_available=0, maximum_packet_size=65536,
                assigned_client_identifier="gen-1", topic_alias_maximum=5, reason_string="ok",
                wildcard_subscription_available=1, subscription_identifier_available=0,
                shared_subscription_available=1, server_keep_alive=120,
                response_information="resp", server_reference="s2")),
    (PacketTypes.DISCONNECT, T.DISCONNECT,
     {"SessionExpiryInterval": 10, "ReasonString": "bye", "ServerReference": "s"},
     Properties(session_expiry_interval=10, reason_string="bye", server_reference="s")),
    (PacketTypes.SUBSCRIBE, T.SUBSCRIBE, {"SubscriptionIdentifier": 268_435_455},
     Properties(subscription_identifiers=[268_435_455])),
]


@pytest.mark.parametrize("paho_type, ctx, values, expected", PAHO_CASES)
def test_paho_pack_decodes_and_our_encoding_matches(paho_type: int, ctx: int,
                                                    values: dict[str, Any],
                                                    expected: Properties) -> None:
    paho = PahoProperties(paho_type)
    for name, value in values.items():
        setattr(paho, name, value)
    packed = bytes(paho.pack())
    assert decode_block(packed, ctx) == expected
    # Both write properties in identifier order, so the bytes are identical.
    assert encode_properties(expected) == packed
    unpacked, length = PahoProperties(paho_type).unpack(encode_properties(expected))
    assert length == len(packed)
    assert unpacked.json() == paho.json()
