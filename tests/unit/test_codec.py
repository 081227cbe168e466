"""Golden bytes and malformed input for the sans-I/O MQTT 3.1 / 3.1.1 codec.

Every golden case is written out by hand from the spec (MQTT 3.1.1 §2-§3), never produced by the
encoder under test: the encoder must reproduce the bytes, the decoder must reproduce the packet,
and the framer must cut exactly that frame out of a stream however the stream is chunked.

The malformed cases each name the exact error class: `MalformedPacket` for bytes that cannot be a
packet, `ProtocolError` for a well-formed packet the spec forbids, `UnacceptableProtocol` for a
CONNECT naming a protocol we do not speak. A subclass (or any non-MQTT exception) is a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from culex.protocol.codec import decode_packet, encode_packet
from culex.protocol.errors import (
    MalformedPacket,
    MQTTError,
    PacketTooLarge,
    ProtocolError,
    UnacceptableProtocol,
)
from culex.protocol.packets import (
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
)
from culex.protocol.reader import FrameReader

# -- test-side helpers (independent of the codec's own encoders) ---------------------------------


def varint(value: int) -> bytes:
    """MQTT Remaining Length encoding, written independently of `codec.encode_varint`."""
    assert 0 <= value <= 268_435_455
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        if value:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def split_frame(raw: bytes) -> tuple[int, int]:
    """(first byte, body offset) of a complete frame, checking its Remaining Length by hand."""
    length = 0
    multiplier = 1
    index = 1
    while True:
        byte = raw[index]
        index += 1
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        if not byte & 0x80:
            break
    assert len(raw) - index == length, "test bug: golden frame has a wrong Remaining Length"
    return raw[0], index


def frame_of(first_byte: int, body: bytes) -> bytes:
    return bytes((first_byte,)) + varint(len(body)) + body


def mqtt_str(raw: bytes) -> bytes:
    """A length-prefixed MQTT string/binary field from already-encoded bytes."""
    return len(raw).to_bytes(2, "big") + raw


def decode_raw(raw: bytes) -> Packet:
    first, offset = split_frame(raw)
    return decode_packet(first, raw, offset)


def raises_exactly(cls: type[MQTTError], func: Callable[..., Any], *args: Any) -> MQTTError:
    """Call `func`; it must raise `cls` itself (not a subclass, not a non-MQTT exception)."""
    with pytest.raises(MQTTError) as info:
        func(*args)
    assert type(info.value) is cls, f"expected {cls.__name__}, got {info.value!r}"
    return info.value


# -- the golden table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Golden:
    name: str
    raw: bytes
    packet: Packet


PAYLOAD_64K = bytes(range(256)) * 256  # 64 KiB
# "€/ü/日本/😀": E2 82 AC | 2F | C3 BC | 2F | E6 97 A5 E6 9C AC | 2F | F0 9F 98 80  (18 bytes)
UTF8_TOPIC_RAW = b"\xe2\x82\xac/\xc3\xbc/\xe6\x97\xa5\xe6\x9c\xac/\xf0\x9f\x98\x80"

GOLDEN: list[Golden] = [
    # CONNECT: fixed header 0x10; variable header = protocol name, level, flags, keep alive.
    Golden("connect-minimal-clean",
           b"\x10\x0e" b"\x00\x04MQTT\x04\x02\x00\x3c" b"\x00\x02c1",
           Connect("c1")),
    Golden("connect-empty-id-persistent-keepalive0",
           b"\x10\x0c" b"\x00\x04MQTT\x04\x00\x00\x00" b"\x00\x00",
           Connect("", clean_session=False, keepalive=0)),
    Golden("connect-will-qos1-retain-user-password",
           b"\x10\x24" b"\x00\x04MQTT\x04\xec\x12\x34"  # flags 1110 1100
           b"\x00\x03cid" b"\x00\x03w/t" b"\x00\x03\x00\xff\x01"
           b"\x00\x04user" b"\x00\x03p\x00w",
           Connect("cid", clean_session=False, keepalive=0x1234,
                   will=Will("w/t", b"\x00\xff\x01", 1, True), username="user",
                   password=b"p\x00w")),
    Golden("connect-will-qos2-clean",
           b"\x10\x28" b"\x00\x04MQTT\x04\x16\x00\x1e"  # flags 0001 0110
           b"\x00\x05dev-7" b"\x00\x0cstatus/dev-7" b"\x00\x07offline",
           Connect("dev-7", keepalive=30, will=Will("status/dev-7", b"offline", 2, False))),
    Golden("connect-will-qos0-empty-message",
           b"\x10\x12" b"\x00\x04MQTT\x04\x04\x00\x3c" b"\x00\x01x" b"\x00\x01t" b"\x00\x00",
           Connect("x", clean_session=False, will=Will("t", b"", 0, False))),
    Golden("connect-utf8-username-only-max-keepalive",
           b"\x10\x15" b"\x00\x04MQTT\x04\x82\xff\xff" b"\x00\x02u1" b"\x00\x05jos\xc3\xa9",
           Connect("u1", keepalive=0xFFFF, username="josé")),
    Golden("connect-empty-username-empty-password",
           b"\x10\x12" b"\x00\x04MQTT\x04\xc2\x00\x3c" b"\x00\x02u2" b"\x00\x00" b"\x00\x00",
           Connect("u2", username="", password=b"")),
    Golden("connect-mqtt31-mqisdp-level3",
           b"\x10\x11" b"\x00\x06MQIsdp\x03\x02\x00\x0a" b"\x00\x03old",
           Connect("old", protocol_name="MQIsdp", protocol_level=3, keepalive=10)),
    # CONNACK
    Golden("connack-accepted", b"\x20\x02\x00\x00", Connack(False, 0)),
    Golden("connack-session-present", b"\x20\x02\x01\x00", Connack(True, 0)),
    Golden("connack-unacceptable-protocol", b"\x20\x02\x00\x01", Connack(False, 1)),
    Golden("connack-not-authorized", b"\x20\x02\x00\x05", Connack(False, 5)),
    # PUBLISH: flags DUP(8) QoS(6) RETAIN(1); packet id only at QoS > 0.
    Golden("publish-qos0", b"\x30\x07\x00\x03a/bhi", Publish("a/b", b"hi")),
    Golden("publish-qos0-retain-empty-payload", b"\x31\x05\x00\x03a/b",
           Publish("a/b", b"", retain=True)),
    Golden("publish-qos1", b"\x32\x08\x00\x03a/b\x00\x0ax",
           Publish("a/b", b"x", qos=1, packet_id=10)),
    Golden("publish-qos1-dup", b"\x3a\x08\x00\x03a/b\x00\x0ax",
           Publish("a/b", b"x", qos=1, dup=True, packet_id=10)),
    Golden("publish-qos2-retain-id-ffff", b"\x35\x07\x00\x01s\xff\xff\x00\x01",
           Publish("s", b"\x00\x01", qos=2, retain=True, packet_id=0xFFFF)),
    Golden("publish-qos2-dup-retain-empty", b"\x3d\x05\x00\x01s\x00\x01",
           Publish("s", b"", qos=2, retain=True, dup=True, packet_id=1)),
    Golden("publish-utf8-multibyte-topic", b"\x32\x18\x00\x12" + UTF8_TOPIC_RAW + b"\x00\x01ok",
           Publish("€/ü/日本/😀", b"ok", qos=1, packet_id=1)),
    Golden("publish-remaining-length-127", b"\x30\x7f\x00\x03a/b" + b"\xa5" * 122,
           Publish("a/b", b"\xa5" * 122)),
    Golden("publish-remaining-length-128", b"\x30\x80\x01\x00\x03a/b" + b"\xa5" * 123,
           Publish("a/b", b"\xa5" * 123)),
    Golden("publish-remaining-length-16383", b"\x30\xff\x7f\x00\x03a/b" + b"\x5a" * 16378,
           Publish("a/b", b"\x5a" * 16378)),
    Golden("publish-remaining-length-16384", b"\x30\x80\x80\x01\x00\x03a/b" + b"\x5a" * 16379,
           Publish("a/b", b"\x5a" * 16379)),
    # 65541 = 5 + 0 * 128 + 4 * 16384  ->  85 80 04
    Golden("publish-64k-payload", b"\x30\x85\x80\x04\x00\x03big" + PAYLOAD_64K,
           Publish("big", PAYLOAD_64K)),
    # Acknowledgements: remaining length 2, packet id; PUBREL carries flags 0010.
    Golden("puback", b"\x40\x02\x00\x01", Puback(1)),
    Golden("pubrec", b"\x50\x02\x12\x34", Pubrec(0x1234)),
    Golden("pubrel", b"\x62\x02\xff\xff", Pubrel(0xFFFF)),
    Golden("pubcomp", b"\x70\x02\x00\x07", Pubcomp(7)),
    # SUBSCRIBE: flags 0010, packet id, then (filter, requested QoS) pairs.
    Golden("subscribe-three-filters",
           b"\x82\x14\x00\x0a" b"\x00\x03a/b\x00" b"\x00\x01#\x01" b"\x00\x05+/x/#\x02",
           Subscribe(10, [("a/b", 0), ("#", 1), ("+/x/#", 2)])),
    Golden("subscribe-one-utf8-filter", b"\x82\x09\x00\x01" b"\x00\x04\xc3\xbc/+\x01",
           Subscribe(1, [("ü/+", 1)])),
    Golden("suback-granted", b"\x90\x05\x00\x0a\x00\x01\x02", Suback(10, [0, 1, 2])),
    Golden("suback-failure-only", b"\x90\x03\x00\x0b\x80", Suback(11, [0x80])),
    Golden("suback-mixed-failure", b"\x90\x06\x00\x0c\x00\x80\x02\x80",
           Suback(12, [0, 0x80, 2, 0x80])),
    Golden("unsubscribe-two-filters", b"\xa2\x0a\x00\x0c" b"\x00\x03a/b" b"\x00\x01#",
           Unsubscribe(12, ["a/b", "#"])),
    Golden("unsubscribe-utf8-filter-id-ffff",
           b"\xa2\x0a\xff\xff" b"\x00\x06\xe6\x97\xa5\xe6\x9c\xac",
           Unsubscribe(0xFFFF, ["日本"])),
    Golden("unsuback", b"\xb0\x02\x00\x0c", Unsuback(12)),
    Golden("pingreq", b"\xc0\x00", Pingreq()),
    Golden("pingresp", b"\xd0\x00", Pingresp()),
    Golden("disconnect", b"\xe0\x00", Disconnect()),
]

GOLDEN_IDS = [case.name for case in GOLDEN]

# A packet that follows each golden case in the "trailing partial" mode: a QoS 1 PUBLISH whose
# Remaining Length (128) takes two bytes, so partials end inside the header and inside the body.
NEXT_PACKET = b"\x32\x80\x01" b"\x00\x03a/b" b"\x00\x07" + b"\x5a" * 121
NEXT_DECODED = Publish("a/b", b"\x5a" * 121, qos=1, packet_id=7)
NEXT_PARTIALS = [1, 2, 3, 4, 9, len(NEXT_PACKET) - 1]


def test_golden_table_covers_every_packet_type() -> None:
    kinds = {type(case.packet) for case in GOLDEN}
    assert kinds == {Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Subscribe,
                     Suback, Unsubscribe, Unsuback, Pingreq, Pingresp, Disconnect}
    assert {case.raw[0] >> 4 for case in GOLDEN} == set(range(1, 15))


@pytest.mark.parametrize("case", GOLDEN, ids=GOLDEN_IDS)
def test_encode_golden(case: Golden) -> None:
    assert encode_packet(case.packet) == case.raw


@pytest.mark.parametrize("case", GOLDEN, ids=GOLDEN_IDS)
def test_decode_golden(case: Golden) -> None:
    decoded = decode_raw(case.raw)
    assert type(decoded) is type(case.packet)
    assert decoded == case.packet


def test_decoded_publish_payload_is_bytes() -> None:
    decoded = decode_raw(b"\x30\x07\x00\x03a/bhi")
    assert isinstance(decoded, Publish)
    assert type(decoded.payload) is bytes


def reader_for(case_raw: bytes) -> FrameReader:
    """CONNECT goes through a fresh connection's reader; anything else through a later one."""
    return FrameReader(1 << 20, connect_only=case_raw[0] == 0x10)


@pytest.mark.parametrize("case", GOLDEN, ids=GOLDEN_IDS)
def test_reader_golden_whole(case: Golden) -> None:
    reader = reader_for(case.raw)
    frames = reader.feed(case.raw)
    first, offset = split_frame(case.raw)
    assert frames == [(first, case.raw, offset)]
    assert type(frames[0][1]) is bytes
    assert reader.buffered == 0
    assert reader.error is None
    assert decode_packet(*frames[0]) == case.packet


@pytest.mark.parametrize("case", GOLDEN, ids=GOLDEN_IDS)
def test_reader_golden_bytewise(case: Golden) -> None:
    reader = reader_for(case.raw)
    last = len(case.raw) - 1
    for index in range(last):
        assert reader.feed(case.raw[index:index + 1]) == []
        assert reader.buffered == index + 1
    frames = reader.feed(case.raw[last:])
    first, offset = split_frame(case.raw)
    assert frames == [(first, case.raw, offset)]
    assert type(frames[0][1]) is bytes  # not a view or slice of the reader's bytearray
    assert reader.buffered == 0
    assert reader.error is None
    assert decode_packet(*frames[0]) == case.packet


@pytest.mark.parametrize("partial", NEXT_PARTIALS)
@pytest.mark.parametrize("case", GOLDEN, ids=GOLDEN_IDS)
def test_reader_golden_then_partial(case: Golden, partial: int) -> None:
    reader = reader_for(case.raw)
    frames = reader.feed(case.raw + NEXT_PACKET[:partial])
    first, offset = split_frame(case.raw)
    assert frames == [(first, case.raw, offset)]
    assert reader.buffered == partial
    assert reader.error is None
    assert decode_packet(*frames[0]) == case.packet
    rest = reader.feed(NEXT_PACKET[partial:])
    assert rest == [(0x32, NEXT_PACKET, 3)]
    assert reader.buffered == 0
    assert decode_packet(*rest[0]) == NEXT_DECODED


# -- malformed input: exact error classes ------------------------------------------------------


def connect_body(name: bytes = b"MQTT", level: int = 4, flags: int = 0x02, keepalive: int = 60,
                 payload: bytes = b"\x00\x02c1") -> bytes:
    """A CONNECT body assembled field by field (not by the encoder under test)."""
    return mqtt_str(name) + bytes((level, flags)) + keepalive.to_bytes(2, "big") + payload


VALID_CONNECT_BODY = connect_body()
BAD_UTF8 = {
    "overlong-c0af": b"\xc0\xaf",
    "surrogate-eda080": b"\xed\xa0\x80",
    "ff": b"\xff",
    "truncated-e282": b"\xe2\x82",
    "overlong-nul-c080": b"\xc0\x80",
    "overlong-3byte-e080af": b"\xe0\x80\xaf",
    "above-10ffff-f4908080": b"\xf4\x90\x80\x80",
    "five-byte-f888808080": b"\xf8\x88\x80\x80\x80",
    "lone-continuation-80": b"\x80",
    "surrogate-pair-cesu": b"\xed\xa0\xbd\xed\xb8\x80",
}


@dataclass(frozen=True)
class Bad:
    name: str
    raw: bytes
    error: type[MQTTError]


def _utf8_cases() -> list[Bad]:
    cases: list[Bad] = []
    for label, bad in BAD_UTF8.items():
        text = b"a" + bad + b"b"
        cases += [
            Bad(f"publish-topic-{label}", frame_of(0x30, mqtt_str(text) + b"payload"),
                MalformedPacket),
            Bad(f"client-id-{label}", frame_of(0x10, connect_body(payload=mqtt_str(text))),
                MalformedPacket),
            Bad(f"will-topic-{label}",
                frame_of(0x10, connect_body(flags=0x06, payload=b"\x00\x01c" + mqtt_str(text)
                                            + b"\x00\x00")),
                MalformedPacket),
            Bad(f"username-{label}",
                frame_of(0x10, connect_body(flags=0x82, payload=b"\x00\x01c" + mqtt_str(text))),
                MalformedPacket),
            Bad(f"subscribe-filter-{label}",
                frame_of(0x82, b"\x00\x01" + mqtt_str(text) + b"\x00"), MalformedPacket),
            Bad(f"unsubscribe-filter-{label}", frame_of(0xA2, b"\x00\x01" + mqtt_str(text)),
                MalformedPacket),
            Bad(f"protocol-name-{label}", frame_of(0x10, connect_body(name=text)),
                MalformedPacket),
        ]
    return cases


def _nul_cases() -> list[Bad]:
    text = b"a\x00b"
    return [
        Bad("nul-publish-topic", frame_of(0x30, mqtt_str(text)), MalformedPacket),
        Bad("nul-publish-topic-qos1", frame_of(0x32, mqtt_str(text) + b"\x00\x01"),
            MalformedPacket),
        Bad("nul-client-id", frame_of(0x10, connect_body(payload=mqtt_str(text))),
            MalformedPacket),
        Bad("nul-only-client-id", frame_of(0x10, connect_body(payload=b"\x00\x01\x00")),
            MalformedPacket),
        Bad("nul-will-topic",
            frame_of(0x10, connect_body(flags=0x06, payload=b"\x00\x01c" + mqtt_str(text)
                                        + b"\x00\x00")),
            MalformedPacket),
        Bad("nul-username",
            frame_of(0x10, connect_body(flags=0x82, payload=b"\x00\x01c" + mqtt_str(text))),
            MalformedPacket),
        Bad("nul-subscribe-filter", frame_of(0x82, b"\x00\x01" + mqtt_str(text) + b"\x00"),
            MalformedPacket),
        Bad("nul-unsubscribe-filter", frame_of(0xA2, b"\x00\x01" + mqtt_str(text)),
            MalformedPacket),
    ]


# Code points the codec refuses in every string [MQTT-1.5.3-2]: U+0000 is a MUST NOT; the C0/C1
# controls and the noncharacters are SHOULD NOTs that Culex (like Mosquitto) also refuses.
FORBIDDEN_CODE_POINTS = {
    "U+0001": b"\x01", "U+0009": b"\x09", "U+001F": b"\x1f", "U+007F": b"\x7f",
    "U+0080": b"\xc2\x80", "U+009F": b"\xc2\x9f", "U+FDD0": b"\xef\xb7\x90",
    "U+FDEF": b"\xef\xb7\xaf", "U+FFFE": b"\xef\xbf\xbe", "U+FFFF": b"\xef\xbf\xbf",
    "U+1FFFE": b"\xf0\x9f\xbf\xbe", "U+10FFFF": b"\xf4\x8f\xbf\xbf",
}


def _forbidden_code_point_cases() -> list[Bad]:
    cases: list[Bad] = []
    for label, raw in FORBIDDEN_CODE_POINTS.items():
        text = b"x" + raw
        cases += [
            Bad(f"publish-topic-{label}", frame_of(0x30, mqtt_str(text)), MalformedPacket),
            Bad(f"client-id-{label}", frame_of(0x10, connect_body(payload=mqtt_str(text))),
                MalformedPacket),
            Bad(f"subscribe-filter-{label}", frame_of(0x82, b"\x00\x01" + mqtt_str(text) + b"\x01"),
                MalformedPacket),
        ]
    return cases


def _flag_cases() -> list[Bad]:
    cases: list[Bad] = []
    valid_bodies = {
        0x1: VALID_CONNECT_BODY, 0x2: b"\x00\x00", 0x4: b"\x00\x01", 0x5: b"\x00\x01",
        0x6: b"\x00\x01", 0x7: b"\x00\x01", 0x8: b"\x00\x01\x00\x01a\x00",
        0x9: b"\x00\x01\x00", 0xA: b"\x00\x01\x00\x01a", 0xB: b"\x00\x01",
        0xC: b"", 0xD: b"", 0xE: b"",
    }
    required = {0x6: 0b0010, 0x8: 0b0010, 0xA: 0b0010}
    for packet_type, body in valid_bodies.items():
        for flags in range(16):
            if flags == required.get(packet_type, 0):
                continue
            cases.append(Bad(f"type{packet_type}-flags{flags:04b}",
                             frame_of(packet_type << 4 | flags, body), MalformedPacket))
    for flags in (0b0110, 0b0111, 0b1110, 0b1111):  # QoS 3, with/without DUP and RETAIN
        cases.append(Bad(f"publish-qos3-flags{flags:04b}",
                         frame_of(0x30 | flags, b"\x00\x01t\x00\x01x"), MalformedPacket))
    for flags in (0b1000, 0b1001):  # DUP at QoS 0
        cases.append(Bad(f"publish-dup-qos0-flags{flags:04b}",
                         frame_of(0x30 | flags, b"\x00\x01tx"), MalformedPacket))
    return cases


def _packet_id_zero_cases() -> list[Bad]:
    return [
        Bad("publish-qos1-id0", b"\x32\x06\x00\x01t\x00\x00x", ProtocolError),
        Bad("publish-qos2-id0", b"\x34\x05\x00\x01t\x00\x00", ProtocolError),
        Bad("puback-id0", b"\x40\x02\x00\x00", ProtocolError),
        Bad("pubrec-id0", b"\x50\x02\x00\x00", ProtocolError),
        Bad("pubrel-id0", b"\x62\x02\x00\x00", ProtocolError),
        Bad("pubcomp-id0", b"\x70\x02\x00\x00", ProtocolError),
        Bad("subscribe-id0", b"\x82\x06\x00\x00\x00\x01a\x00", ProtocolError),
        Bad("suback-id0", b"\x90\x03\x00\x00\x00", ProtocolError),
        Bad("unsubscribe-id0", b"\xa2\x05\x00\x00\x00\x01a", ProtocolError),
        Bad("unsuback-id0", b"\xb0\x02\x00\x00", ProtocolError),
    ]


def _connect_cases() -> list[Bad]:
    cases = [
        Bad("connect-trailing-byte", frame_of(0x10, VALID_CONNECT_BODY + b"\x00"),
            MalformedPacket),
        Bad("connect-trailing-string", frame_of(0x10, VALID_CONNECT_BODY + b"\x00\x01x"),
            MalformedPacket),
        Bad("connect-client-id-longer-than-packet",
            frame_of(0x10, connect_body(payload=b"\x00\x05abc")), MalformedPacket),
        Bad("connect-protocol-name-longer-than-packet", b"\x10\x04\x00\x09MQ", MalformedPacket),
        Bad("connect-password-longer-than-packet",
            frame_of(0x10, connect_body(flags=0xC2, payload=b"\x00\x01c\x00\x01u\x00\x09pw")),
            MalformedPacket),
        Bad("connect-reserved-flag-bit0", frame_of(0x10, connect_body(flags=0x03)),
            MalformedPacket),
        Bad("connect-reserved-flag-bit0-only", frame_of(0x10, connect_body(flags=0x01)),
            MalformedPacket),
        Bad("connect-will-qos3",
            frame_of(0x10, connect_body(flags=0x1E, payload=b"\x00\x01c\x00\x01t\x00\x00")),
            MalformedPacket),
        Bad("connect-will-qos1-without-will-flag", frame_of(0x10, connect_body(flags=0x0A)),
            MalformedPacket),
        Bad("connect-will-qos2-without-will-flag", frame_of(0x10, connect_body(flags=0x12)),
            MalformedPacket),
        Bad("connect-will-retain-without-will-flag", frame_of(0x10, connect_body(flags=0x22)),
            MalformedPacket),
        Bad("connect-password-without-username",
            frame_of(0x10, connect_body(flags=0x42, payload=b"\x00\x01c\x00\x02pw")),
            MalformedPacket),
        Bad("connect-password-flag-without-username-no-field",
            frame_of(0x10, connect_body(flags=0x42)), MalformedPacket),
        Bad("connect-will-flag-but-no-will-fields", frame_of(0x10, connect_body(flags=0x06)),
            MalformedPacket),
        Bad("connect-username-flag-but-no-field", frame_of(0x10, connect_body(flags=0x82)),
            MalformedPacket),
        Bad("connect-empty-body", b"\x10\x00", MalformedPacket),
    ]
    # A known protocol name with a level we do not speak: CONNACK 0x01 [MQTT-3.1.2-2]. Level 5
    # is MQTT 5.0, unsupported for now.
    known_name_bad_level = [(b"MQTT", 3), (b"MQIsdp", 4), (b"MQTT", 5), (b"MQTT", 6),
                            (b"MQTT", 255), (b"MQTT", 0), (b"MQIsdp", 5), (b"MQIsdp", 0)]
    for name, level in known_name_bad_level:
        cases.append(Bad(f"connect-protocol-{name.decode()}-level{level}",
                         frame_of(0x10, connect_body(name=name, level=level)),
                         UnacceptableProtocol))
    # A real MQTT 5.0 CONNECT (properties: Receive Maximum 20) is refused by its level, before
    # the properties that 3.1.1 does not know are reached.
    cases.append(Bad("connect-real-mqtt5",
                     b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x03\x21\x00\x14\x00\x00",
                     UnacceptableProtocol))
    # Not MQTT at all: no CONNACK is owed, the server just disconnects [MQTT-3.1.2-1].
    for name, level in [(b"MQTX", 4), (b"mqtt", 4), (b"MQIsdp\x20", 3), (b"", 4),
                        (b"MQTTMQTT", 4), (b"MQIs", 3), (b"HTTP", 4)]:
        cases.append(Bad(f"connect-protocol-name-{name.decode()!r}-level{level}",
                         frame_of(0x10, connect_body(name=name, level=level)), ProtocolError))
    return cases


def _other_cases() -> list[Bad]:
    return [
        Bad("reserved-type0", b"\x00\x00", MalformedPacket),
        Bad("reserved-type0-with-body", b"\x00\x02\x00\x01", MalformedPacket),
        Bad("reserved-type15", b"\xf0\x00", MalformedPacket),
        Bad("reserved-type15-with-body", b"\xf0\x02\x00\x01", MalformedPacket),
        Bad("reserved-type15-flags", b"\xff\x00", MalformedPacket),
        Bad("pingreq-with-body", b"\xc0\x01\x00", MalformedPacket),
        Bad("pingresp-with-body", b"\xd0\x01\x00", MalformedPacket),
        Bad("disconnect-with-body", b"\xe0\x01\x00", MalformedPacket),
        Bad("disconnect-with-two-bytes", b"\xe0\x02\x00\x00", MalformedPacket),
        Bad("connack-length1", b"\x20\x01\x00", MalformedPacket),
        Bad("connack-length3", b"\x20\x03\x00\x00\x00", MalformedPacket),
        Bad("connack-length0", b"\x20\x00", MalformedPacket),
        Bad("connack-reserved-ack-flags", b"\x20\x02\x02\x00", MalformedPacket),
        Bad("connack-reserved-ack-flags-high", b"\x20\x02\x80\x00", MalformedPacket),
        Bad("publish-empty-body", b"\x30\x00", MalformedPacket),
        Bad("publish-one-byte-body", b"\x30\x01\x00", MalformedPacket),
        Bad("publish-topic-longer-than-packet", b"\x30\x03\x00\x05a", MalformedPacket),
        Bad("publish-topic-length-ffff", b"\x30\x04\xff\xffab", MalformedPacket),
        Bad("publish-qos1-missing-packet-id", b"\x32\x03\x00\x01t", MalformedPacket),
        Bad("publish-qos2-half-packet-id", b"\x34\x04\x00\x01t\x00", MalformedPacket),
        Bad("subscribe-no-filters", b"\x82\x02\x00\x01", ProtocolError),
        Bad("subscribe-empty-body", b"\x82\x00", MalformedPacket),
        Bad("subscribe-half-packet-id", b"\x82\x01\x00", MalformedPacket),
        Bad("subscribe-filter-without-qos", b"\x82\x05\x00\x01\x00\x01a", MalformedPacket),
        Bad("subscribe-qos3", b"\x82\x06\x00\x01\x00\x01a\x03", MalformedPacket),
        Bad("subscribe-qos4", b"\x82\x06\x00\x01\x00\x01a\x04", MalformedPacket),
        Bad("subscribe-qos-reserved-bits", b"\x82\x06\x00\x01\x00\x01a\x81", MalformedPacket),
        Bad("subscribe-qos-ff", b"\x82\x06\x00\x01\x00\x01a\xff", MalformedPacket),
        Bad("subscribe-second-filter-qos3",
            b"\x82\x0a\x00\x01\x00\x01a\x00\x00\x01b\x03", MalformedPacket),
        Bad("subscribe-filter-longer-than-packet", b"\x82\x06\x00\x01\x00\x09a\x00",
            MalformedPacket),
        Bad("subscribe-trailing-byte", b"\x82\x07\x00\x01\x00\x01a\x00\xff", MalformedPacket),
        Bad("subscribe-trailing-two-bytes", b"\x82\x08\x00\x01\x00\x01a\x00\x00\x00",
            MalformedPacket),
        Bad("unsubscribe-no-filters", b"\xa2\x02\x00\x01", ProtocolError),
        Bad("unsubscribe-trailing-byte", b"\xa2\x06\x00\x01\x00\x01a\x00", MalformedPacket),
        Bad("unsubscribe-filter-longer-than-packet", b"\xa2\x05\x00\x01\x00\x02a",
            MalformedPacket),
        Bad("suback-no-return-codes", b"\x90\x02\x00\x01", MalformedPacket),
        Bad("suback-return-code-3", b"\x90\x03\x00\x01\x03", MalformedPacket),
        Bad("suback-return-code-81", b"\x90\x04\x00\x01\x00\x81", MalformedPacket),
        Bad("suback-half-packet-id", b"\x90\x01\x00", MalformedPacket),
    ] + [
        Bad(f"{name}-length{len(body)}", bytes((first, len(body))) + body, MalformedPacket)
        for name, first in (("puback", 0x40), ("pubrec", 0x50), ("pubrel", 0x62),
                            ("pubcomp", 0x70), ("unsuback", 0xB0))
        for body in (b"", b"\x00", b"\x00\x01\x00", b"\x00\x01\x00\x00")
    ]


BAD: list[Bad] = (_utf8_cases() + _nul_cases() + _forbidden_code_point_cases()
                  + _flag_cases() + _packet_id_zero_cases()
                  + _connect_cases() + _other_cases())


def test_bad_case_names_are_unique() -> None:
    assert len({case.name for case in BAD}) == len(BAD)


@pytest.mark.parametrize("case", BAD, ids=[case.name for case in BAD])
def test_malformed_raises_exact_error(case: Bad) -> None:
    first, offset = split_frame(case.raw)
    raises_exactly(case.error, decode_packet, first, case.raw, offset)


@pytest.mark.parametrize("case", BAD, ids=[case.name for case in BAD])
def test_malformed_frames_fine_then_fails_decode(case: Bad) -> None:
    """The framer only frames: a decode-level error is not its business (and vice versa)."""
    reader = FrameReader(1 << 20, connect_only=False)
    frames = reader.feed(case.raw)
    first, offset = split_frame(case.raw)
    assert frames == [(first, case.raw, offset)]
    assert reader.error is None
    raises_exactly(case.error, decode_packet, *frames[0])


def test_error_hierarchy() -> None:
    assert issubclass(PacketTooLarge, MalformedPacket)
    assert issubclass(MalformedPacket, MQTTError)
    assert issubclass(ProtocolError, MQTTError)
    assert not issubclass(ProtocolError, MalformedPacket)
    assert issubclass(UnacceptableProtocol, MQTTError)
    assert not issubclass(UnacceptableProtocol, MalformedPacket)


# -- what is NOT malformed ---------------------------------------------------------------------


@pytest.mark.parametrize("raw, packet", [
    # Binary fields may hold any bytes, including NUL and invalid UTF-8.
    (frame_of(0x10, connect_body(flags=0xC6, payload=b"\x00\x01c" b"\x00\x01t"
                                 b"\x00\x03\xff\x00\xc0" b"\x00\x01u" b"\x00\x03\xed\xa0\x80")),
     Connect("c", will=Will("t", b"\xff\x00\xc0"), username="u", password=b"\xed\xa0\x80")),
    # PUBLISH payload is opaque.
    (b"\x30\x06\x00\x01t\xff\x00\xc0", Publish("t", b"\xff\x00\xc0")),
    # A BOM is kept, not stripped [MQTT-1.5.3-3].
    (b"\x30\x06\x00\x04\xef\xbb\xbfa", Publish("\ufeffa", b"")),
    # Neighbours of the refused ranges: U+0020, U+007E, U+00A0, U+FDCF, U+FDF0, U+FFFD.
    (b"\x30\x04\x00\x02 ~", Publish(" ~", b"")),
    (b"\x30\x04\x00\x02\xc2\xa0", Publish("\xa0", b"")),
    (b"\x30\x0b\x00\x09\xef\xb7\x8f\xef\xb7\xb0\xef\xbf\xbd",
     Publish("\ufdcf\ufdf0\ufffd", b"")),
    # Largest code point that is not a noncharacter.
    (b"\x30\x06\x00\x04\xf4\x8f\xbf\xbd", Publish("\U0010fffd", b"")),
    # SUBSCRIBE with a zero-length filter is well-formed; the broker answers it with 0x80.
    (b"\x82\x05\x00\x01\x00\x00\x00", Subscribe(1, [("", 0)])),
])
def test_unusual_but_well_formed(raw: bytes, packet: Packet) -> None:
    assert decode_raw(raw) == packet
    assert encode_packet(packet) == raw


# -- systematic truncation -----------------------------------------------------------------------


def truncations(raw: bytes) -> list[tuple[int, bytes]]:
    """Every strictly shorter body of `raw`, re-framed with a correct Remaining Length."""
    first, offset = split_frame(raw)
    body = raw[offset:]
    return [(cut, frame_of(first, body[:cut])) for cut in range(len(body))]


CONNECT_CASES = [case for case in GOLDEN if isinstance(case.packet, Connect)]


@pytest.mark.parametrize("case", CONNECT_CASES, ids=[case.name for case in CONNECT_CASES])
def test_every_truncated_connect_is_rejected(case: Golden) -> None:
    cuts = truncations(case.raw)
    assert len(cuts) >= 12
    for cut, raw in cuts:
        first, offset = split_frame(raw)
        with pytest.raises(MQTTError) as info:
            decode_packet(first, raw, offset)
        assert type(info.value) in (MalformedPacket, ProtocolError), (cut, info.value)


def publish_head_length(packet: Publish) -> int:
    return 2 + len(packet.topic.encode()) + (2 if packet.qos else 0)


PUBLISH_CASES = [case for case in GOLDEN
                 if isinstance(case.packet, Publish) and len(case.raw) < 1000]


@pytest.mark.parametrize("case", PUBLISH_CASES, ids=[case.name for case in PUBLISH_CASES])
def test_truncated_publish(case: Golden) -> None:
    """Cut inside topic or packet id: malformed. Cut inside the payload: a shorter payload."""
    assert isinstance(case.packet, Publish)
    head = publish_head_length(case.packet)
    for cut, raw in truncations(case.raw):
        first, offset = split_frame(raw)
        if cut < head:
            with pytest.raises(MQTTError) as info:
                decode_packet(first, raw, offset)
            assert type(info.value) in (MalformedPacket, ProtocolError), (cut, info.value)
        else:
            decoded = decode_packet(first, raw, offset)
            assert isinstance(decoded, Publish)
            assert decoded.payload == case.packet.payload[:cut - head]
            assert decoded.topic == case.packet.topic
            assert decoded.packet_id == case.packet.packet_id


SUB_CASES = [case for case in GOLDEN if isinstance(case.packet, Subscribe | Unsubscribe)]


@pytest.mark.parametrize("case", SUB_CASES, ids=[case.name for case in SUB_CASES])
def test_truncated_subscribe_and_unsubscribe(case: Golden) -> None:
    """Cuts between whole (filter[, QoS]) entries give a shorter list; any other cut is an error.

    A cut right after the packet id leaves no filters: a ProtocolError [MQTT-3.8.3-3/3.10.3-2].
    """
    packet = case.packet
    assert isinstance(packet, Subscribe | Unsubscribe)
    entries: list[Any]
    if isinstance(packet, Subscribe):
        entries = list(packet.topics)
        sizes = [2 + len(topic.encode()) + 1 for topic, _ in entries]
    else:
        entries = list(packet.filters)
        sizes = [2 + len(topic.encode()) for topic in entries]
    boundaries = {2 + sum(sizes[:count]): count for count in range(len(entries) + 1)}
    for cut, raw in truncations(case.raw):
        first, offset = split_frame(raw)
        count = boundaries.get(cut)
        if count:
            decoded = decode_packet(first, raw, offset)
            assert decoded == type(packet)(packet.packet_id, entries[:count])
            continue
        expected: tuple[type[MQTTError], ...] = (MalformedPacket, ProtocolError)
        if count == 0:
            expected = (ProtocolError,)
        with pytest.raises(MQTTError) as info:
            decode_packet(first, raw, offset)
        assert type(info.value) in expected, (cut, info.value)


FIXED_SIZE_CASES = [case for case in GOLDEN
                       if len(case.raw) > 2  # PINGREQ & co. have no body to truncate
                       and not isinstance(case.packet, Connect | Publish | Subscribe | Unsubscribe)]


@pytest.mark.parametrize("case", FIXED_SIZE_CASES, ids=[c.name for c in FIXED_SIZE_CASES])
def test_truncated_fixed_size_packets(case: Golden) -> None:
    """Acks and CONNACK: every cut is an error. SUBACK: a cut after >= 1 return code is a
    shorter SUBACK; a cut before that is an error."""
    for cut, raw in truncations(case.raw):
        first, offset = split_frame(raw)
        if isinstance(case.packet, Suback) and cut >= 3:
            assert decode_packet(first, raw, offset) == Suback(
                case.packet.packet_id, case.packet.return_codes[:cut - 2])
            continue
        with pytest.raises(MQTTError) as info:
            decode_packet(first, raw, offset)
        assert type(info.value) in (MalformedPacket, ProtocolError), (cut, info.value)


@pytest.mark.parametrize("case", [c for c in GOLDEN if not isinstance(c.packet, Publish)],
                         ids=[c.name for c in GOLDEN if not isinstance(c.packet, Publish)])
def test_extended_body_is_rejected(case: Golden) -> None:
    """One extra byte inside the Remaining Length is never silently ignored (except PUBLISH,
    whose payload absorbs it, and SUBACK, whose return-code list grows by a valid code)."""
    first, offset = split_frame(case.raw)
    extra = b"\x00" if isinstance(case.packet, Suback) else b"\x07"
    raw = frame_of(first, case.raw[offset:] + extra)
    _, new_offset = split_frame(raw)
    if isinstance(case.packet, Suback):
        decoded = decode_packet(first, raw, new_offset)
        assert decoded == Suback(case.packet.packet_id, [*case.packet.return_codes, 0])
        return
    with pytest.raises(MQTTError) as info:
        decode_packet(first, raw, new_offset)
    assert type(info.value) is MalformedPacket, info.value


# -- encoder details ---------------------------------------------------------------------------


def test_encode_rejects_non_packet() -> None:
    with pytest.raises(TypeError):
        encode_packet(object())  # type: ignore[arg-type]
