# mypy: disable-error-code="no-untyped-call"
# (paho-mqtt, used here as an independent reference, ships without annotations.)
"""Golden bytes and malformed input for the MQTT 5.0 codec (culex.protocol.v5).

Like tests/unit/test_codec.py for 3.1.1: every golden frame is written out by hand from the MQTT
5.0 spec (property blocks with the one-line helpers of test_properties.py), never produced by
the encoder under test. The encoder must reproduce the bytes, the decoder the packet, and the
framer must cut exactly that frame out of a stream fed whole, one byte at a time, or followed by
part of another packet.

Malformed cases name the exact error class the spec gives (§2.2.2.2 and §4.13): `MalformedPacket`
for bytes that cannot be the packet, `ProtocolError` for a well-formed packet the spec forbids,
`UnacceptableProtocol` for a CONNECT naming a level we do not speak. They cover
/work/shared/BAD_INPUTS.md items 38-45 at the codec level; the item number is in the case name.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import paho.mqtt.client as paho_client
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.reasoncodes import ReasonCode as PahoReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from culex.protocol.codec import decode_connect, decode_packet
from culex.protocol.errors import (
    MalformedPacket,
    MQTTError,
    ProtocolError,
    UnacceptableProtocol,
)
from culex.protocol.packets import Connect, PacketType, Pingreq, Pingresp
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
from culex.protocol.properties import WILL_PROPERTIES, Properties
from culex.protocol.reader import FrameReader
from culex.protocol.reasons import (
    REASON_CODES_BY_PACKET,
    REASON_TABLE,
    ReasonCode,
    is_allowed,
    is_error,
    reason_name,
)
from culex.protocol.v5 import (
    AUTH_SUCCESS,
    DISCONNECT_NORMAL,
    decode_connect_any,
    decode_packet_v5,
    encode_ack5,
    encode_auth,
    encode_connack5,
    encode_disconnect5,
    encode_packet_v5,
    encode_publish5,
    publish_head_v5,
)
from tests.unit import test_codec as v3_tests
from tests.unit.test_codec import frame_of, mqtt_str, split_frame
from tests.unit.test_properties import (
    EXPECTED_TABLE,
    SAMPLE,
    block,
    p_byte,
    p_pair,
    p_str,
    p_u16,
    p_u32,
    p_varint,
    raises_exactly,
)

CONNECT_HEAD = b"\x00\x04MQTT\x05"  # protocol name and level 5


def decode_raw(raw: bytes, from_client: bool = True) -> Packet5:
    first, offset = split_frame(raw)
    return decode_packet_v5(first, raw, offset, from_client=from_client)


# -- the golden table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Golden:
    name: str
    raw: bytes
    packet: Packet5
    from_client: bool = True


GOLDEN: list[Golden] = [
    # CONNECT: name, level 5, flags, keep alive, properties; client id, [will properties, will
    # topic, will payload], [user name], [password] (§3.1).
    Golden("connect-minimal",
           b"\x10\x0f" b"\x00\x04MQTT\x05\x02\x00\x3c" b"\x00" b"\x00\x02c1",
           Connect5("c1")),
    Golden("connect-empty-id-clean-start-0-keepalive-0",
           b"\x10\x0d" b"\x00\x04MQTT\x05\x00\x00\x00" b"\x00" b"\x00\x00",
           Connect5("", clean_start=False, keepalive=0)),
    Golden("connect-password-without-username",  # allowed in v5 (§3.1.2.9), not in 3.1.1
           b"\x10\x14" b"\x00\x04MQTT\x05\x42\x00\x3c" b"\x00" b"\x00\x02c1" b"\x00\x03pw!",
           Connect5("c1", password=b"pw!")),
    Golden("connect-every-connect-property",
           frame_of(0x10, CONNECT_HEAD + b"\xc2\x00\x3c"
                    + block(p_u32(0x11, 3600), p_str(0x15, "SCRAM-SHA-1"),
                            p_str(0x16, b"client-first"), p_byte(0x17, 0), p_byte(0x19, 1),
                            p_u16(0x21, 100), p_u16(0x22, 10), p_pair("region", "eu"),
                            p_pair("region", "us"), p_u32(0x27, 1 << 20))
                    + mqtt_str(b"dev-1") + mqtt_str(b"user") + mqtt_str(b"pass")),
           Connect5("dev-1", username="user", password=b"pass", properties=Properties(
               session_expiry_interval=3600, authentication_method="SCRAM-SHA-1",
               authentication_data=b"client-first", request_problem_information=0,
               request_response_information=1, receive_maximum=100, topic_alias_maximum=10,
               user_properties=[("region", "eu"), ("region", "us")],
               maximum_packet_size=1 << 20))),
    Golden("connect-will-every-will-property",
           frame_of(0x10, CONNECT_HEAD + b"\x2e\x00\x1e"  # will QoS 1, retain, clean start
                    + b"\x00" + mqtt_str(b"dev-2")
                    + block(p_byte(0x01, 1), p_u32(0x02, 86400), p_str(0x03, "application/json"),
                            p_str(0x08, "status/reply"), p_str(0x09, b"\x01\x02\x03"),
                            p_u32(0x18, 30), p_pair("origin", "sensor"))
                    + mqtt_str(b"status/dev-2") + mqtt_str(b'{"online":false}')),
           Connect5("dev-2", keepalive=30, will=Will5(
               "status/dev-2", b'{"online":false}', 1, True, Properties(
                   payload_format_indicator=1, message_expiry_interval=86400,
                   content_type="application/json", response_topic="status/reply",
                   correlation_data=b"\x01\x02\x03", will_delay_interval=30,
                   user_properties=[("origin", "sensor")])))),
    Golden("connect-will-qos2-no-properties",
           b"\x10\x14" b"\x00\x04MQTT\x05\x16\x00\x3c" b"\x00" b"\x00\x01x"
           b"\x00" b"\x00\x01t" b"\x00\x00",
           Connect5("x", will=Will5("t", b"", 2, False))),
    # CONNACK: acknowledge flags, reason code, properties (§3.2). Sent by the server.
    Golden("connack-success", b"\x20\x03\x00\x00\x00", Connack5(), False),
    Golden("connack-session-present", b"\x20\x03\x01\x00\x00", Connack5(True), False),
    Golden("connack-not-authorized", b"\x20\x03\x00\x87\x00", Connack5(False, 0x87), False),
    Golden("connack-every-connack-property",
           frame_of(0x20, b"\x00\x00"
                    + block(p_u32(0x11, 7200), p_str(0x12, "auto-7f3a"), p_u16(0x13, 60),
                            p_str(0x15, "SCRAM-SHA-1"), p_str(0x16, b"server-final"),
                            p_str(0x1A, "resp/auto-7f3a/"), p_str(0x1F, "welcome"),
                            p_u16(0x21, 50), p_u16(0x22, 16), p_byte(0x24, 1), p_byte(0x25, 0),
                            p_pair("node", "b1"), p_u32(0x27, 262144), p_byte(0x28, 1),
                            p_byte(0x29, 1), p_byte(0x2A, 0))),
           Connack5(False, 0, Properties(
               session_expiry_interval=7200, assigned_client_identifier="auto-7f3a",
               server_keep_alive=60, authentication_method="SCRAM-SHA-1",
               authentication_data=b"server-final", response_information="resp/auto-7f3a/",
               reason_string="welcome", receive_maximum=50, topic_alias_maximum=16,
               maximum_qos=1, retain_available=0, user_properties=[("node", "b1")],
               maximum_packet_size=262144, wildcard_subscription_available=1,
               subscription_identifier_available=1, shared_subscription_available=0)),
           False),
    Golden("connack-use-another-server",
           frame_of(0x20, b"\x00\x9c" + block(p_str(0x1C, "backup:1883"),
                                             p_str(0x1F, "maintenance"))),
           Connack5(False, 0x9C, Properties(server_reference="backup:1883",
                                            reason_string="maintenance")), False),
    # PUBLISH: topic, [packet id], properties, payload (§3.3).
    Golden("publish-qos0-no-properties", b"\x30\x08\x00\x03a/b\x00hi", Publish5("a/b", b"hi")),
    Golden("publish-qos1-every-client-property",
           frame_of(0x32, mqtt_str(b"sensors/temp") + b"\x00\x0a"
                    + block(p_byte(0x01, 1), p_u32(0x02, 300), p_str(0x03, "text/plain"),
                            p_str(0x08, "sensors/temp/ack"), p_str(0x09, b"req-42"),
                            p_u16(0x23, 1), p_pair("unit", "C"), p_pair("unit", "K"))
                    + b"21.5"),
           Publish5("sensors/temp", b"21.5", 1, packet_id=10, properties=Properties(
               payload_format_indicator=1, message_expiry_interval=300,
               content_type="text/plain", response_topic="sensors/temp/ack",
               correlation_data=b"req-42", topic_alias=1,
               user_properties=[("unit", "C"), ("unit", "K")]))),
    # Subscription Identifiers 1, 128 and 268,435,455: one, two and four varint bytes.
    Golden("publish-qos2-dup-retain-subscription-identifiers",
           b"\x3d\x10" b"\x00\x01s" b"\xff\xff"
           b"\x0a" b"\x0b\x01" b"\x0b\x80\x01" b"\x0b\xff\xff\xff\x7f",
           Publish5("s", b"", 2, retain=True, dup=True, packet_id=0xFFFF,
                    properties=Properties(subscription_identifiers=[1, 128, 268_435_455])),
           False),
    Golden("publish-empty-topic-with-topic-alias", b"\x30\x07\x00\x00\x03\x23\x00\x05x",
           Publish5("", b"x", properties=Properties(topic_alias=5))),
    Golden("publish-remaining-length-128", b"\x30\x80\x01\x00\x03a/b\x00" + b"\xa5" * 122,
           Publish5("a/b", b"\xa5" * 122)),
    # PUBACK, PUBREC, PUBREL, PUBCOMP: packet id [reason code [properties]] (§3.4-3.7).
    Golden("puback-short", b"\x40\x02\x00\x01", Puback5(1)),
    Golden("puback-no-matching-subscribers", b"\x40\x03\x00\x01\x10", Puback5(1, 0x10)),
    Golden("puback-not-authorized-with-properties",
           frame_of(0x40, b"\x00\x02\x87" + block(p_str(0x1F, "not allowed"),
                                                 p_pair("acl", "deny"))),
           Puback5(2, 0x87, Properties(reason_string="not allowed",
                                       user_properties=[("acl", "deny")]))),
    Golden("pubrec-short", b"\x50\x02\x12\x34", Pubrec5(0x1234)),
    Golden("pubrec-quota-exceeded", b"\x50\x03\x12\x34\x97", Pubrec5(0x1234, 0x97)),
    Golden("pubrec-success-with-properties",
           b"\x50\x0f\x12\x34\x00" b"\x0b\x26\x00\x05trace\x00\x011",
           Pubrec5(0x1234, 0, Properties(user_properties=[("trace", "1")]))),
    Golden("pubrel-short", b"\x62\x02\xff\xff", Pubrel5(0xFFFF)),
    Golden("pubrel-identifier-not-found", b"\x62\x03\xff\xff\x92", Pubrel5(0xFFFF, 0x92)),
    Golden("pubrel-with-reason-string",
           frame_of(0x62, b"\x00\x05\x92" + block(p_str(0x1F, "unknown id"))),
           Pubrel5(5, 0x92, Properties(reason_string="unknown id"))),
    Golden("pubcomp-short", b"\x70\x02\x00\x07", Pubcomp5(7)),
    Golden("pubcomp-not-found-with-properties",
           frame_of(0x70, b"\x00\x07\x92" + block(p_str(0x1F, "gone"), p_pair("a", "b"))),
           Pubcomp5(7, 0x92, Properties(reason_string="gone", user_properties=[("a", "b")]))),
    # SUBSCRIBE: packet id, properties, (filter, options)+ (§3.8).
    Golden("subscribe-no-properties", b"\x82\x09\x00\x0a\x00\x00\x03a/b\x01",
           Subscribe5(10, [Subscription("a/b", 1)])),
    Golden("subscribe-options-and-properties",
           frame_of(0x82, b"\x00\x0b" + block(p_varint(0x0B, 16_384), p_pair("client", "x"))
                    + mqtt_str(b"a/#") + b"\x2e"          # RH 2, RAP, NL, QoS 2
                    + mqtt_str(b"$share/g/t") + b"\x19"   # RH 1, RAP, QoS 1
                    + mqtt_str(b"+") + b"\x00"),
           Subscribe5(11, [Subscription("a/#", 2, True, True, 2),
                           Subscription("$share/g/t", 1, False, True, 1),
                           Subscription("+")],
                      Properties(subscription_identifiers=[16_384],
                                 user_properties=[("client", "x")]))),
    # SUBACK: packet id, properties, reason codes (§3.9). Sent by the server.
    Golden("suback-no-properties", b"\x90\x04\x00\x0a\x00\x01", Suback5(10, [1]), False),
    Golden("suback-every-code-with-properties",
           frame_of(0x90, b"\x00\x0b" + block(p_str(0x1F, "partial"), p_pair("k", "v"))
                    + bytes([0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1,
                             0xA2])),
           Suback5(11, [0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2],
                   Properties(reason_string="partial", user_properties=[("k", "v")])), False),
    # UNSUBSCRIBE: packet id, properties, filters (§3.10).
    Golden("unsubscribe-no-properties", b"\xa2\x08\x00\x0c\x00\x00\x03a/b",
           Unsubscribe5(12, ["a/b"])),
    Golden("unsubscribe-with-user-property",
           frame_of(0xA2, b"\x00\x0d" + block(p_pair("why", "done")) + mqtt_str(b"a/#")
                    + mqtt_str("日本".encode())),
           Unsubscribe5(13, ["a/#", "日本"], Properties(user_properties=[("why", "done")]))),
    # UNSUBACK: packet id, properties, reason codes (§3.11). Sent by the server.
    Golden("unsuback-no-properties", b"\xb0\x04\x00\x0c\x00\x00", Unsuback5(12, [0]), False),
    Golden("unsuback-every-code-with-properties",
           frame_of(0xB0, b"\x00\x0d" + block(p_str(0x1F, "r"), p_pair("a", "b"))
                    + bytes([0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91])),
           Unsuback5(13, [0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91],
                     Properties(reason_string="r", user_properties=[("a", "b")])), False),
    Golden("pingreq", b"\xc0\x00", Pingreq()),
    Golden("pingresp", b"\xd0\x00", Pingresp(), False),
    # DISCONNECT: [reason code [properties]] (§3.14).
    Golden("disconnect-normal", b"\xe0\x00", Disconnect5()),
    Golden("disconnect-with-will-message", b"\xe0\x01\x04", Disconnect5(0x04)),
    Golden("disconnect-client-properties",
           frame_of(0xE0, b"\x00" + block(p_u32(0x11, 0), p_str(0x1F, "app exit"),
                                          p_pair("a", "b"))),
           Disconnect5(0, Properties(session_expiry_interval=0, reason_string="app exit",
                                     user_properties=[("a", "b")]))),
    Golden("disconnect-server-moved",
           frame_of(0xE0, b"\x9d" + block(p_str(0x1C, "new-host:1883"), p_str(0x1F, "moved"))),
           Disconnect5(0x9D, Properties(server_reference="new-host:1883", reason_string="moved")),
           False),
    # AUTH: [reason code properties] (§3.15).
    Golden("auth-success-short", b"\xf0\x00", Auth(), False),
    Golden("auth-continue-every-auth-property",
           frame_of(0xF0, b"\x18" + block(p_str(0x15, "SCRAM-SHA-1"),
                                          p_str(0x16, b"client-final"), p_str(0x1F, "step 2"),
                                          p_pair("k", "v"))),
           Auth(0x18, Properties(authentication_method="SCRAM-SHA-1",
                                 authentication_data=b"client-final", reason_string="step 2",
                                 user_properties=[("k", "v")]))),
    Golden("auth-reauthenticate",
           frame_of(0xF0, b"\x19" + block(p_str(0x15, "SCRAM-SHA-1"),
                                          p_str(0x16, b"client-first"))),
           Auth(0x19, Properties(authentication_method="SCRAM-SHA-1",
                                 authentication_data=b"client-first"))),
    Golden("auth-success-with-properties",
           frame_of(0xF0, b"\x00" + block(p_str(0x15, "SCRAM-SHA-1"),
                                          p_str(0x16, b"server-final"))),
           Auth(0, Properties(authentication_method="SCRAM-SHA-1",
                              authentication_data=b"server-final")), False),
]
GOLDEN_IDS = [case.name for case in GOLDEN]

# Follows each golden case in the "trailing partial" mode: a QoS 1 PUBLISH whose Remaining
# Length (128) takes two bytes, so partials end inside the header, the properties and the body.
NEXT_PACKET = b"\x32\x80\x01" b"\x00\x03a/b" b"\x00\x07" b"\x03\x23\x00\x02" + b"\x5a" * 117
NEXT_DECODED = Publish5("a/b", b"\x5a" * 117, 1, packet_id=7,
                        properties=Properties(topic_alias=2))
NEXT_PARTIALS = [1, 2, 3, 4, 9, 11, len(NEXT_PACKET) - 1]


PACKET_TYPE_OF: dict[type, PacketType] = {
    Connect5: PacketType.CONNECT, Connack5: PacketType.CONNACK, Publish5: PacketType.PUBLISH,
    Puback5: PacketType.PUBACK, Pubrec5: PacketType.PUBREC, Pubrel5: PacketType.PUBREL,
    Pubcomp5: PacketType.PUBCOMP, Subscribe5: PacketType.SUBSCRIBE, Suback5: PacketType.SUBACK,
    Unsubscribe5: PacketType.UNSUBSCRIBE, Unsuback5: PacketType.UNSUBACK,
    Disconnect5: PacketType.DISCONNECT, Auth: PacketType.AUTH}


def property_ids_of(packet: Packet5) -> set[tuple[int, int]]:
    """(property id, context) pairs set in a packet, including its will."""
    if isinstance(packet, Pingreq | Pingresp):
        return set()
    blocks: list[tuple[Properties, int]] = [(packet.properties, PACKET_TYPE_OF[type(packet)])]
    if isinstance(packet, Connect5) and packet.will is not None:
        blocks.append((packet.will.properties, WILL_PROPERTIES))
    return {(ident, ctx) for props, ctx in blocks for ident, (_, attr, _) in SAMPLE.items()
            if getattr(props, attr) not in (None, [])}


def test_golden_table_coverage() -> None:
    assert {case.raw[0] >> 4 for case in GOLDEN} == set(range(1, 16))
    assert len(set(GOLDEN_IDS)) == len(GOLDEN)
    covered = set().union(*(property_ids_of(case.packet) for case in GOLDEN))
    # Every property id appears in some golden packet. (Every allowed (id, packet) pair is
    # covered by test_each_property_in_each_allowed_packet below.)
    assert {ident for ident, _ in covered} == set(EXPECTED_TABLE)
    # And every packet type that has properties shows some in its golden cases.
    assert {ctx for _, ctx in covered} == set(range(1, 16)) - {12, 13} | {WILL_PROPERTIES}


@pytest.mark.parametrize("case", GOLDEN, ids=GOLDEN_IDS)
def test_encode_golden(case: Golden) -> None:
    assert encode_packet_v5(case.packet) == case.raw


@pytest.mark.parametrize("case", GOLDEN, ids=GOLDEN_IDS)
def test_decode_golden(case: Golden) -> None:
    decoded = decode_raw(case.raw, case.from_client)
    assert type(decoded) is type(case.packet)
    assert decoded == case.packet
    if isinstance(case.packet, Connect5):
        first, offset = split_frame(case.raw)
        assert decode_connect_any(first, case.raw, offset) == case.packet


def test_decoded_payload_and_data_are_bytes() -> None:
    case = next(c for c in GOLDEN if c.name == "publish-qos1-every-client-property")
    decoded = decode_raw(case.raw)
    assert isinstance(decoded, Publish5)
    assert type(decoded.payload) is bytes
    assert type(decoded.properties.correlation_data) is bytes


@pytest.mark.parametrize("case", GOLDEN, ids=GOLDEN_IDS)
def test_reader_golden_whole(case: Golden) -> None:
    reader = FrameReader(1 << 20, connect_only=False)
    frames = reader.feed(case.raw)
    first, offset = split_frame(case.raw)
    assert frames == [(first, case.raw, offset)]
    assert reader.buffered == 0
    assert reader.error is None
    assert decode_packet_v5(*frames[0], from_client=case.from_client) == case.packet


@pytest.mark.parametrize("case", GOLDEN, ids=GOLDEN_IDS)
def test_reader_golden_bytewise(case: Golden) -> None:
    reader = FrameReader(1 << 20, connect_only=False)
    last = len(case.raw) - 1
    for index in range(last):
        assert reader.feed(case.raw[index:index + 1]) == []
        assert reader.buffered == index + 1
    frames = reader.feed(case.raw[last:])
    first, offset = split_frame(case.raw)
    assert frames == [(first, case.raw, offset)]
    assert type(frames[0][1]) is bytes
    assert reader.error is None
    assert decode_packet_v5(*frames[0], from_client=case.from_client) == case.packet


@pytest.mark.parametrize("partial", NEXT_PARTIALS)
@pytest.mark.parametrize("case", GOLDEN, ids=GOLDEN_IDS)
def test_reader_golden_then_partial(case: Golden, partial: int) -> None:
    reader = FrameReader(1 << 20, connect_only=False)
    frames = reader.feed(case.raw + NEXT_PACKET[:partial])
    first, offset = split_frame(case.raw)
    assert frames == [(first, case.raw, offset)]
    assert reader.buffered == partial
    assert decode_packet_v5(*frames[0], from_client=case.from_client) == case.packet
    rest = reader.feed(NEXT_PACKET[partial:])
    assert rest == [(0x32, NEXT_PACKET, 3)]
    assert decode_packet_v5(*rest[0]) == NEXT_DECODED


def test_connect_through_a_fresh_connection_reader() -> None:
    for case in GOLDEN:
        if isinstance(case.packet, Connect5):
            reader = FrameReader(1 << 20)  # connect_only: the first packet of a connection
            frames = reader.feed(case.raw)
            assert decode_connect_any(*frames[0]) == case.packet


# -- every property in every packet, at the packet level -------------------------------------------


def packet_with_properties(ctx: int, props: bytes) -> tuple[bytes, bool]:
    """A minimal hand-built packet of type `ctx` carrying the property block `props`, and
    whether it is sent by the client."""
    if ctx == WILL_PROPERTIES:
        return frame_of(0x10, CONNECT_HEAD + b"\x06\x00\x3c\x00" + mqtt_str(b"c") + props
                        + mqtt_str(b"w") + mqtt_str(b"")), True
    body_by_type: dict[int, tuple[int, bytes, bool]] = {
        PacketType.CONNECT: (0x10, CONNECT_HEAD + b"\x02\x00\x3c" + props + mqtt_str(b"c"),
                             True),
        PacketType.CONNACK: (0x20, b"\x00\x00" + props, False),
        PacketType.PUBLISH: (0x32, mqtt_str(b"t") + b"\x00\x01" + props + b"pl", False),
        PacketType.PUBACK: (0x40, b"\x00\x01\x00" + props, True),
        PacketType.PUBREC: (0x50, b"\x00\x01\x00" + props, True),
        PacketType.PUBREL: (0x62, b"\x00\x01\x00" + props, True),
        PacketType.PUBCOMP: (0x70, b"\x00\x01\x00" + props, True),
        PacketType.SUBSCRIBE: (0x82, b"\x00\x01" + props + mqtt_str(b"t") + b"\x01", True),
        PacketType.SUBACK: (0x90, b"\x00\x01" + props + b"\x00", False),
        PacketType.UNSUBSCRIBE: (0xA2, b"\x00\x01" + props + mqtt_str(b"t"), True),
        PacketType.UNSUBACK: (0xB0, b"\x00\x01" + props + b"\x00", False),
        PacketType.DISCONNECT: (0xE0, b"\x00" + props, True),
        PacketType.AUTH: (0xF0, b"\x18" + props, True),
    }
    first, body, from_client = body_by_type[ctx]
    return frame_of(first, body), from_client


PACKET_CONTEXTS = [WILL_PROPERTIES, *(t for t in range(1, 16) if t not in (12, 13))]


def sample_block(ident: int, ctx: int) -> bytes:
    raw = SAMPLE[ident][0]
    if ctx == PacketType.AUTH and ident not in (0x15, 0x16):
        raw = p_str(0x15, "M") + raw  # AUTH must carry an Authentication Method
    return block(raw)


@pytest.mark.parametrize("ident, ctx", [(i, c) for i in SAMPLE for c in PACKET_CONTEXTS
                                        if c in EXPECTED_TABLE[i][1]])
def test_each_property_in_each_allowed_packet(ident: int, ctx: int) -> None:
    raw, from_client = packet_with_properties(ctx, sample_block(ident, ctx))
    packet = decode_raw(raw, from_client)
    assert isinstance(packet, Connect5 | Connack5 | Publish5 | Puback5 | Pubrec5 | Pubrel5
                      | Pubcomp5 | Subscribe5 | Suback5 | Unsubscribe5 | Unsuback5
                      | Disconnect5 | Auth)
    props = packet.properties
    if ctx == WILL_PROPERTIES:
        assert isinstance(packet, Connect5) and packet.will is not None
        props = packet.will.properties
    _, attr, value = SAMPLE[ident]
    assert getattr(props, attr) == value
    assert encode_packet_v5(packet) == raw


@pytest.mark.parametrize("ident, ctx", [(i, c) for i in SAMPLE for c in PACKET_CONTEXTS
                                        if c not in EXPECTED_TABLE[i][1]])
def test_each_property_in_each_forbidden_packet(ident: int, ctx: int) -> None:
    raw_prop = SAMPLE[ident][0]
    if ident == 0x16:
        raw_prop = raw_prop[raw_prop.index(b"\x16"):]
    raw, from_client = packet_with_properties(ctx, block(raw_prop))
    first, offset = split_frame(raw)
    raises_exactly(MalformedPacket, decode_packet_v5, first, raw, offset,
                   from_client=from_client)


# -- malformed and forbidden input ---------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    name: str
    raw: bytes
    error: type[MQTTError]
    from_client: bool = True


def connect(flags: int = 0x02, props: bytes = b"\x00", payload: bytes = b"\x00\x01c",
            head: bytes = CONNECT_HEAD) -> bytes:
    return frame_of(0x10, head + bytes((flags,)) + b"\x00\x3c" + props + payload)


def will_connect(will_props: bytes, flags: int = 0x06) -> bytes:
    return connect(flags, payload=b"\x00\x01c" + will_props + mqtt_str(b"w") + mqtt_str(b"m"))


def publish(props: bytes, first: int = 0x30, from_topic: bytes = b"\x00\x01t") -> bytes:
    return frame_of(first, from_topic + props + b"payload")


def subscribe(options: int, topic: bytes = b"a/b", props: bytes = b"\x00") -> bytes:
    return frame_of(0x82, b"\x00\x01" + props + mqtt_str(topic) + bytes((options,)))


M, P, U = MalformedPacket, ProtocolError, UnacceptableProtocol

BAD: list[Bad] = [
    # 38: lengths past the end, unknown identifiers, properties in the wrong packet.
    Bad("38-publish-property-length-past-end", publish(b"\x05\x23\x00"), M),
    Bad("38-publish-property-length-past-end-no-payload",
        frame_of(0x30, b"\x00\x01t\x06\x23\x00\x01"), M),
    Bad("38-connect-property-length-past-end", connect(props=b"\x7f"), M),
    Bad("38-will-property-length-past-end",
        connect(0x06, payload=b"\x00\x01c\x40" + mqtt_str(b"w") + mqtt_str(b"m")), M),
    Bad("38-puback-property-length-past-end", b"\x40\x05\x00\x01\x00\x05\x1f", M),
    Bad("38-subscribe-property-length-past-end", frame_of(0x82, b"\x00\x01\x09\x00\x01a\x00"),
        M),
    Bad("38-disconnect-property-length-past-end", b"\xe0\x03\x00\x05\x11", M),
    Bad("38-auth-property-length-past-end", b"\xf0\x03\x18\x09\x15", M),
    Bad("38-publish-property-length-five-bytes", publish(b"\xff\xff\xff\xff\x01"), M),
    Bad("38-publish-property-length-not-minimal", publish(b"\x80\x00"), M),
    Bad("38-publish-string-past-property-block", publish(b"\x04\x03\x00\x05a"), M),
    Bad("38-publish-unknown-property-0x00", publish(b"\x02\x00\x00"), M),
    Bad("38-publish-unknown-property-0x7f", publish(b"\x02\x7f\x00"), M),
    Bad("38-connect-unknown-property-0x00", connect(props=b"\x02\x00\x00"), M),
    Bad("38-connack-unknown-property-0x7f", b"\x20\x05\x00\x00\x02\x7f\x00", M, False),
    Bad("38-publish-session-expiry", publish(block(p_u32(0x11, 1))), M),
    Bad("38-publish-reason-string", publish(block(p_str(0x1F, "r"))), M),
    Bad("38-connect-topic-alias", connect(props=block(p_u16(0x23, 1))), M),
    Bad("38-connect-will-delay-outside-will", connect(props=block(p_u32(0x18, 1))), M),
    Bad("38-connect-payload-format-outside-will", connect(props=block(p_byte(0x01, 1))), M),
    Bad("38-subscribe-reason-string", subscribe(0x01, props=block(p_str(0x1F, "r"))), M),
    Bad("38-unsubscribe-subscription-identifier",
        frame_of(0xA2, b"\x00\x01" + block(p_varint(0x0B, 1)) + mqtt_str(b"t")), M),
    Bad("38-pubrel-content-type", frame_of(0x62, b"\x00\x01\x00" + block(p_str(0x03, "x"))), M),
    Bad("38-disconnect-assigned-client-identifier",
        frame_of(0xE0, b"\x00" + block(p_str(0x12, "x"))), M, False),
    Bad("38-auth-session-expiry",
        frame_of(0xF0, b"\x18" + block(p_str(0x15, "M"), p_u32(0x11, 1))), M),
    Bad("38-publish-subscription-identifier-from-client",
        publish(block(p_varint(0x0B, 1))), P),
    # 39: a single-instance property twice (User Property may repeat: see the golden table).
    Bad("39-publish-two-message-expiry", publish(block(p_u32(0x02, 1), p_u32(0x02, 2))), P),
    Bad("39-publish-two-topic-alias", publish(block(p_u16(0x23, 1), p_u16(0x23, 1))), P),
    Bad("39-connect-two-session-expiry",
        connect(props=block(p_u32(0x11, 1), p_pair("a", "b"), p_u32(0x11, 1))), P),
    Bad("39-connect-two-receive-maximum",
        connect(props=block(p_u16(0x21, 1), p_u16(0x21, 2))), P),
    Bad("39-will-two-will-delay", will_connect(block(p_u32(0x18, 1), p_u32(0x18, 1))), P),
    Bad("39-will-two-content-type", will_connect(block(p_str(0x03, "a"), p_str(0x03, "b"))), P),
    Bad("39-subscribe-two-subscription-identifiers",
        subscribe(0x01, props=block(p_varint(0x0B, 1), p_varint(0x0B, 2))), P),
    Bad("39-auth-two-methods",
        frame_of(0xF0, b"\x18" + block(p_str(0x15, "M"), p_str(0x15, "M"))), P),
    Bad("39-connack-two-maximum-qos",
        frame_of(0x20, b"\x00\x00" + block(p_byte(0x24, 0), p_byte(0x24, 0))), P, False),
    Bad("39-disconnect-two-reason-strings",
        frame_of(0xE0, b"\x00" + block(p_str(0x1F, "a"), p_str(0x1F, "b"))), P),
    Bad("39-puback-two-reason-strings",
        frame_of(0x40, b"\x00\x01\x80" + block(p_str(0x1F, "a"), p_str(0x1F, "a"))), P),
    # 40: values that must not be 0 or are out of range.
    Bad("40-connect-receive-maximum-0", connect(props=block(p_u16(0x21, 0))), P),
    Bad("40-connect-maximum-packet-size-0", connect(props=block(p_u32(0x27, 0))), P),
    Bad("40-connack-receive-maximum-0", frame_of(0x20, b"\x00\x00" + block(p_u16(0x21, 0))),
        P, False),
    Bad("40-subscribe-subscription-identifier-0",
        subscribe(0x01, props=block(p_varint(0x0B, 0))), P),
    Bad("40-publish-subscription-identifier-0-from-server",
        publish(block(p_varint(0x0B, 0))), P, False),
    Bad("40-connect-request-problem-information-2", connect(props=block(p_byte(0x17, 2))), P),
    Bad("40-connect-request-response-information-2", connect(props=block(p_byte(0x19, 2))), P),
    Bad("40-publish-payload-format-indicator-2", publish(block(p_byte(0x01, 2))), P),
    Bad("40-will-payload-format-indicator-2", will_connect(block(p_byte(0x01, 2))), P),
    Bad("40-publish-topic-alias-0", publish(block(p_u16(0x23, 0))), P),
    Bad("40-connack-maximum-qos-2", frame_of(0x20, b"\x00\x00" + block(p_byte(0x24, 2))),
        P, False),
    Bad("40-publish-response-topic-wildcard", publish(block(p_str(0x08, "r/#"))), P),
    # 42: the User Property cap (the linear-time check is in test_properties.py).
    Bad("42-publish-2000-user-properties", publish(block(p_pair("k", "v") * 2000)), P),
    Bad("42-connect-2000-user-properties",
        connect(props=block(p_pair("k", "v") * 2000)), P),
    # 43: a will with properties of the wrong kind.
    Bad("43-will-session-expiry", will_connect(block(p_u32(0x11, 10))), M),
    Bad("43-will-topic-alias", will_connect(block(p_u16(0x23, 1))), M),
    Bad("43-will-subscription-identifier", will_connect(block(p_varint(0x0B, 1))), M),
    Bad("43-will-string-typed-as-binary-runs-past", will_connect(b"\x03\x18\x00\x01"), M),
    # 44: AUTH rules a codec can see, and DISCONNECT direction.
    Bad("44-auth-continue-without-method", frame_of(0xF0, b"\x18" + block(p_str(0x16, b"d"))),
        P),
    Bad("44-auth-continue-no-properties", b"\xf0\x02\x18\x00", P),
    Bad("44-auth-remaining-length-1", b"\xf0\x01\x18", P),
    Bad("44-auth-reason-0x01", frame_of(0xF0, b"\x01" + block(p_str(0x15, "M"))), P),
    Bad("44-auth-reason-0x80", frame_of(0xF0, b"\x80" + block(p_str(0x15, "M"))), P),
    Bad("44-auth-success-from-client", b"\xf0\x00", P),
    Bad("44-auth-success-with-method-from-client",
        frame_of(0xF0, b"\x00" + block(p_str(0x15, "M"))), P),
    Bad("44-auth-reauthenticate-from-server",
        frame_of(0xF0, b"\x19" + block(p_str(0x15, "M"))), P, False),
    Bad("44-auth-fixed-header-flags", b"\xf1\x00", M, False),
    Bad("44-connect-authentication-data-without-method",
        connect(props=block(p_str(0x16, b"x"))), P),
    Bad("44-disconnect-session-expiry-from-server",
        frame_of(0xE0, b"\x00" + block(p_u32(0x11, 5))), P, False),
    # 45: subscription options.
    Bad("45-subscribe-reserved-bit-6", subscribe(0x41), M),
    Bad("45-subscribe-reserved-bit-7", subscribe(0x81), M),
    Bad("45-subscribe-reserved-bits-c0", subscribe(0xC0), M),
    Bad("45-subscribe-reserved-bits-and-retain-handling-3", subscribe(0xF0), M),
    Bad("45-subscribe-retain-handling-3", subscribe(0x30), P),
    Bad("45-subscribe-qos-3", subscribe(0x03), P),
    Bad("45-subscribe-no-local-on-shared", subscribe(0x04, b"$share/g/t"), P),
    Bad("45-subscribe-second-filter-retain-handling-3",
        frame_of(0x82, b"\x00\x01\x00" + mqtt_str(b"a") + b"\x00" + mqtt_str(b"b") + b"\x31"),
        P),
    # CONNECT structure (items 15-17 in their v5 form).
    Bad("connect-fixed-header-flags", b"\x11" + connect()[1:], M),
    Bad("connect-reserved-flag", connect(0x03), M),
    Bad("connect-will-qos-3", will_connect(b"\x00", flags=0x1E), M),
    Bad("connect-will-qos-without-will-flag", connect(0x0A), M),
    Bad("connect-will-retain-without-will-flag", connect(0x22), M),
    Bad("connect-no-property-length", frame_of(0x10, CONNECT_HEAD + b"\x02\x00\x3c"), M),
    Bad("connect-no-client-id", frame_of(0x10, CONNECT_HEAD + b"\x02\x00\x3c\x00"), M),
    Bad("connect-will-without-will-properties", connect(0x06), M),
    Bad("connect-username-flag-without-username", connect(0x82), M),
    Bad("connect-password-flag-without-password", connect(0x42), M),
    Bad("connect-trailing-byte", connect(payload=b"\x00\x01c\x00"), M),
    Bad("connect-level-6", connect(head=b"\x00\x04MQTT\x06"), U),
    Bad("connect-level-4-via-v5-decoder", connect(head=b"\x00\x04MQTT\x04"), U),
    Bad("connect-mqisdp-level-5", connect(head=b"\x00\x06MQIsdp\x05"), U),
    Bad("connect-unknown-protocol-name", connect(head=b"\x00\x04MQTX\x05"), P),
    Bad("connect-client-id-nul", connect(payload=b"\x00\x03a\x00b"), M),
    # CONNACK structure.
    Bad("connack-no-property-length", b"\x20\x02\x00\x00", M, False),
    Bad("connack-empty", b"\x20\x00", M, False),
    Bad("connack-reserved-ack-flags", b"\x20\x03\x02\x00\x00", M, False),
    Bad("connack-v3-return-code-1", b"\x20\x03\x00\x01\x00", P, False),
    Bad("connack-success-only-code-0x10", b"\x20\x03\x00\x10\x00", P, False),
    Bad("connack-session-present-with-failure", b"\x20\x03\x01\x80\x00", P, False),
    Bad("connack-trailing-byte", b"\x20\x04\x00\x00\x00\x00", M, False),
    Bad("connack-fixed-header-flags", b"\x21\x03\x00\x00\x00", M, False),
    # PUBLISH structure.
    Bad("publish-qos-3", publish(b"\x00", 0x36, b"\x00\x01t\x00\x01"), M),
    Bad("publish-dup-qos-0", publish(b"\x00", 0x38), M),
    Bad("publish-packet-id-0", publish(b"\x00", 0x32, b"\x00\x01t\x00\x00"), P),
    Bad("publish-no-property-length", frame_of(0x30, b"\x00\x01t"), M),
    Bad("publish-qos1-no-property-length", frame_of(0x32, b"\x00\x01t\x00\x01"), M),
    Bad("publish-topic-invalid-utf8", publish(b"\x00", 0x30, b"\x00\x02\xc3\x28"), M),
    # Acks.
    *(Bad(f"{name}-length-{len(body)}", bytes((first, len(body))) + body, M)
      for name, first in (("puback", 0x40), ("pubrec", 0x50), ("pubrel", 0x62),
                          ("pubcomp", 0x70))
      for body in (b"", b"\x00")),
    Bad("puback-packet-id-0", b"\x40\x02\x00\x00", P),
    Bad("puback-fixed-header-flags", b"\x42\x02\x00\x01", M),
    Bad("pubrel-fixed-header-flags-0000", b"\x60\x02\x00\x01", M),
    Bad("pubrel-fixed-header-flags-0011", b"\x63\x02\x00\x01", M),
    Bad("puback-reason-0x92", b"\x40\x03\x00\x01\x92", P),
    Bad("pubrec-reason-0x04", b"\x50\x03\x00\x01\x04", P),
    Bad("pubrel-reason-0x10", b"\x62\x03\x00\x01\x10", P),
    Bad("pubrel-reason-0x80", b"\x62\x03\x00\x01\x80", P),
    Bad("pubcomp-reason-0x87", b"\x70\x03\x00\x01\x87", P),
    Bad("puback-trailing-after-properties", b"\x40\x05\x00\x01\x00\x00\x00", M),
    # SUBSCRIBE / SUBACK / UNSUBSCRIBE / UNSUBACK.
    Bad("subscribe-no-filters", b"\x82\x03\x00\x01\x00", P),
    Bad("subscribe-no-property-length", b"\x82\x02\x00\x01", M),
    Bad("subscribe-packet-id-0", frame_of(0x82, b"\x00\x00\x00" + mqtt_str(b"a") + b"\x00"), P),
    Bad("subscribe-filter-without-options", frame_of(0x82, b"\x00\x01\x00" + mqtt_str(b"a")), M),
    Bad("subscribe-fixed-header-flags", b"\x80" + subscribe(0x01)[1:], M),
    Bad("suback-no-reason-codes", b"\x90\x03\x00\x01\x00", M, False),
    Bad("suback-no-property-length", b"\x90\x02\x00\x01", M, False),
    Bad("suback-reason-0x03", b"\x90\x04\x00\x01\x00\x03", P, False),
    Bad("suback-reason-0x11", b"\x90\x04\x00\x01\x00\x11", P, False),
    Bad("unsubscribe-no-filters", b"\xa2\x03\x00\x01\x00", P),
    Bad("unsubscribe-trailing-byte", frame_of(0xA2, b"\x00\x01\x00" + mqtt_str(b"a") + b"\x00"),
        M),
    Bad("unsuback-no-reason-codes", b"\xb0\x03\x00\x01\x00", M, False),
    Bad("unsuback-reason-0x01", b"\xb0\x04\x00\x01\x00\x01", P, False),
    Bad("unsuback-reason-0x10", b"\xb0\x04\x00\x01\x00\x10", P, False),
    # PINGREQ, DISCONNECT, reserved type.
    Bad("pingreq-with-body", b"\xc0\x01\x00", M),
    Bad("pingresp-flags", b"\xd1\x00", M, False),
    Bad("disconnect-fixed-header-flags", b"\xe2\x00", M),
    Bad("disconnect-reason-0x01", b"\xe0\x01\x01", P),
    Bad("disconnect-reason-0x84-connack-only", b"\xe0\x01\x84", P),
    Bad("disconnect-trailing-after-properties", b"\xe0\x03\x00\x00\x00", M),
    Bad("reserved-type-0", b"\x00\x00", M),
]


def test_bad_case_names_are_unique() -> None:
    assert len({case.name for case in BAD}) == len(BAD)


@pytest.mark.parametrize("case", BAD, ids=[case.name for case in BAD])
def test_bad_input_raises_exact_error(case: Bad) -> None:
    first, offset = split_frame(case.raw)
    raises_exactly(case.error, decode_packet_v5, first, case.raw, offset,
                   from_client=case.from_client)


@pytest.mark.parametrize("case", BAD, ids=[case.name for case in BAD])
def test_bad_input_frames_fine_then_fails_decode(case: Bad) -> None:
    """The framer only frames; fed byte by byte, it still hands over the same frame."""
    reader = FrameReader(1 << 20, connect_only=False)
    frames: list[tuple[int, bytes, int]] = []
    for index in range(len(case.raw)):
        frames += reader.feed(case.raw[index:index + 1])
    assert frames == [(case.raw[0], case.raw, split_frame(case.raw)[1])]
    assert reader.error is None
    raises_exactly(case.error, decode_packet_v5, *frames[0], from_client=case.from_client)


CONNECT_BAD = [case for case in BAD if case.raw[0] >> 4 == 1
               and case.name != "connect-level-4-via-v5-decoder"]


@pytest.mark.parametrize("case", CONNECT_BAD, ids=[case.name for case in CONNECT_BAD])
def test_bad_connect_through_decode_connect_any(case: Bad) -> None:
    first, offset = split_frame(case.raw)
    error = case.error
    if case.name in ("connect-level-6", "connect-unknown-protocol-name",
                     "connect-fixed-header-flags"):
        # Not an MQTT 5 CONNECT: the 3.1.1 codec decides, with its own classes.
        with pytest.raises(MQTTError) as info:
            decode_connect(first & 0x0F, case.raw, offset)
        error = type(info.value)
    raises_exactly(error, decode_connect_any, first, case.raw, offset)


def test_topic_alias_zero_carries_reason_0x94() -> None:
    raw = publish(block(p_u16(0x23, 0)))
    first, offset = split_frame(raw)
    error = raises_exactly(ProtocolError, decode_packet_v5, first, raw, offset)
    assert error.reason_code == 0x94


def test_user_property_cap_is_configurable_per_call() -> None:
    raw = publish(block(p_pair("k", "v") * 2000))
    first, offset = split_frame(raw)
    packet = decode_packet_v5(first, raw, offset, max_user_properties=2000)
    assert isinstance(packet, Publish5)
    assert len(packet.properties.user_properties) == 2000
    raw = will_connect(block(p_pair("k", "v") * 3))
    first, offset = split_frame(raw)
    raises_exactly(ProtocolError, decode_connect_any, first, raw, offset, max_user_properties=2)


# -- what is NOT an error ----------------------------------------------------------------------


@pytest.mark.parametrize("raw, packet, from_client", [
    # Acks and DISCONNECT in longer forms than needed: equal packets, re-encoded shorter.
    (b"\x40\x04\x00\x01\x00\x00", Puback5(1), True),
    (b"\x50\x04\x00\x01\x10\x00", Pubrec5(1, 0x10), True),
    (b"\x62\x03\x00\x01\x00", Pubrel5(1), True),
    (b"\xe0\x01\x00", Disconnect5(), True),
    (b"\xe0\x02\x00\x00", Disconnect5(), True),
    (b"\xe0\x02\x04\x00", Disconnect5(0x04), True),
    # Properties in a non-canonical order decode the same; the encoder sorts by identifier.
    (publish(block(p_pair("b", "2"), p_u16(0x23, 9), p_pair("a", "1"), p_byte(0x01, 0))),
     Publish5("t", b"payload", properties=Properties(
         payload_format_indicator=0, topic_alias=9, user_properties=[("b", "2"), ("a", "1")])),
     True),
])
def test_valid_non_canonical(raw: bytes, packet: Packet5, from_client: bool) -> None:
    decoded = decode_raw(raw, from_client)
    assert decoded == packet
    encoded = encode_packet_v5(packet)
    assert encoded != raw
    assert decode_raw(encoded, from_client) == packet


def test_same_subscription_identifier_twice_from_server() -> None:
    """Two subscriptions with the same identifier matched: the PUBLISH carries it twice
    (§3.3.4 "will carry multiple identical Subscription Identifiers")."""
    raw = publish(block(p_varint(0x0B, 3), p_varint(0x0B, 3)))
    packet = Publish5("t", b"payload", properties=Properties(subscription_identifiers=[3, 3]))
    assert decode_raw(raw, from_client=False) == packet
    assert encode_packet_v5(packet) == raw


@pytest.mark.parametrize("raw, packet", [
    # A wildcard or empty topic is the broker's to refuse (0x90 / alias rules), as in 3.1.1.
    (publish(b"\x00", 0x30, b"\x00\x03a/#"), Publish5("a/#", b"payload")),
    (publish(b"\x00", 0x30, b"\x00\x00"), Publish5("", b"payload")),
    # 41: Payload Format Indicator 1 with a payload that is not UTF-8: the codec passes it on;
    # validating it (0x99) is an optional broker policy (§3.3.2.3.2 "MAY validate").
    (publish(block(p_byte(0x01, 1))[:0] + block(p_byte(0x01, 1)), 0x30, b"\x00\x01t"),
     Publish5("t", b"payload", properties=Properties(payload_format_indicator=1))),
    (frame_of(0x30, b"\x00\x01t" + block(p_byte(0x01, 1)) + b"\xff\xfe"),
     Publish5("t", b"\xff\xfe", properties=Properties(payload_format_indicator=1))),
    # 43: Will Delay longer than Session Expiry is legal (§3.1.2.5 comment: it sends the will
    # at session end); the broker's timers handle it.
    (connect(0x06, props=block(p_u32(0x11, 10)),
             payload=b"\x00\x01c" + block(p_u32(0x18, 3600)) + mqtt_str(b"w") + mqtt_str(b"")),
     Connect5("c", will=Will5("w", b"", properties=Properties(will_delay_interval=3600)),
              properties=Properties(session_expiry_interval=10))),
    # A No Local subscription that is not shared, and a $share filter without No Local.
    (subscribe(0x04, b"$sharex/g/t"), Subscribe5(1, [Subscription("$sharex/g/t", 0, True)])),
    (subscribe(0x00, b"$share/g/t"), Subscribe5(1, [Subscription("$share/g/t")])),
    # An empty filter is well-formed; the broker answers it with 0x8F.
    (subscribe(0x00, b""), Subscribe5(1, [Subscription("")])),
])
def test_unusual_but_well_formed(raw: bytes, packet: Packet5) -> None:
    assert decode_raw(raw) == packet
    assert encode_packet_v5(packet) == raw


def test_direction_only_matters_where_the_spec_says() -> None:
    for case in GOLDEN:
        if case.raw[0] >> 4 in (PacketType.PUBLISH, PacketType.DISCONNECT, PacketType.AUTH):
            continue
        assert decode_raw(case.raw, not case.from_client) == case.packet


# -- decode_connect_any and the unchanged 3.1.1 codec ------------------------------------------


@pytest.mark.parametrize("case", [c for c in v3_tests.GOLDEN if isinstance(c.packet, Connect)],
                         ids=lambda c: c.name)
def test_connect_any_delegates_v3(case: v3_tests.Golden) -> None:
    first, offset = split_frame(case.raw)
    decoded = decode_connect_any(first, case.raw, offset)
    assert type(decoded) is Connect
    assert decoded == case.packet == decode_packet(first, case.raw, offset)


V3_CONNECT_BAD = [c for c in v3_tests.BAD if c.raw[0] >> 4 == 1]


@pytest.mark.parametrize("case", V3_CONNECT_BAD, ids=[c.name for c in V3_CONNECT_BAD])
def test_connect_any_keeps_v3_errors(case: v3_tests.Bad) -> None:
    first, offset = split_frame(case.raw)
    if case.raw[offset:offset + 7] != b"\x00\x04MQTT\x05":
        raises_exactly(case.error, decode_connect_any, first, case.raw, offset)
        return
    # Level 5, refused by the 3.1.1 codec, is now decoded as MQTT 5: the same outcome as the
    # v5 decoder (a 3.1.1-shaped body lacks the Property Length, so it is malformed).
    try:
        expected: Any = decode_packet_v5(first, case.raw, offset)
    except MQTTError as exc:
        raises_exactly(type(exc), decode_connect_any, first, case.raw, offset)
    else:
        assert decode_connect_any(first, case.raw, offset) == expected


def test_cve_2021_28166_connect_decodes_as_v5() -> None:
    """The MQTT 5 CONNECT of BAD_INPUTS item 5 (Receive Maximum 20, empty client id)."""
    raw = bytes.fromhex("101000044d5154540502003c03210014 0000".replace(" ", ""))
    first, offset = split_frame(raw)
    assert decode_connect_any(first, raw, offset) == Connect5(
        "", properties=Properties(receive_maximum=20))


def test_v3_codec_still_refuses_level_5() -> None:
    raw = GOLDEN[0].raw
    first, offset = split_frame(raw)
    raises_exactly(UnacceptableProtocol, decode_packet, first, raw, offset)
    raises_exactly(UnacceptableProtocol, decode_connect, first & 0x0F, raw, offset)


def test_connect_any_refuses_other_packet_types() -> None:
    raises_exactly(ProtocolError, decode_connect_any, 0x30, b"\x30\x04\x00\x01t\x00", 2)
    raises_exactly(ProtocolError, decode_connect_any, 0xF0, b"\xf0\x00", 2)


def test_v3_password_without_username_still_refused_but_v5_accepts() -> None:
    v3 = frame_of(0x10, b"\x00\x04MQTT\x04\x42\x00\x3c\x00\x01c\x00\x01p")
    first, offset = split_frame(v3)
    raises_exactly(MalformedPacket, decode_connect_any, first, v3, offset)
    v5 = connect(0x42, payload=b"\x00\x01c\x00\x01p")
    assert decode_raw(v5) == Connect5("c", password=b"p")


# -- truncation and extension ----------------------------------------------------------------


def truncations(raw: bytes) -> Iterator[tuple[int, bytes]]:
    first, offset = split_frame(raw)
    body = raw[offset:]
    for cut in range(len(body)):
        yield cut, frame_of(first, body[:cut])


@pytest.mark.parametrize("case", GOLDEN, ids=GOLDEN_IDS)
def test_truncations_raise_only_mqtt_errors(case: Golden) -> None:
    """Every cut body either fails with a codec error or is itself a valid, canonical packet
    (a PUBLISH with a shorter payload, a SUBACK with fewer codes, an ack's short form)."""
    must_fail = isinstance(case.packet, Connect5 | Connack5 | Subscribe5 | Unsubscribe5)
    for cut, raw in truncations(case.raw):
        first, offset = split_frame(raw)
        try:
            packet = decode_packet_v5(first, raw, offset, from_client=case.from_client)
        except MQTTError as exc:
            assert type(exc) in (MalformedPacket, ProtocolError), (cut, exc)
            continue
        assert not must_fail or (isinstance(packet, Subscribe5 | Unsubscribe5)), cut
        if not isinstance(packet, Puback5 | Pubrec5 | Pubrel5 | Pubcomp5 | Disconnect5):
            assert encode_packet_v5(packet) == raw, cut


@pytest.mark.parametrize("case", [c for c in GOLDEN if not isinstance(c.packet, Publish5)],
                         ids=[c.name for c in GOLDEN if not isinstance(c.packet, Publish5)])
def test_extended_body_is_rejected(case: Golden) -> None:
    """One extra byte inside the Remaining Length is never silently ignored: it is trailing
    garbage, an invalid reason code, or a property length that runs past the end."""
    first, offset = split_frame(case.raw)
    raw = frame_of(first, case.raw[offset:] + b"\x07")
    first, offset = split_frame(raw)
    with pytest.raises(MQTTError) as info:
        decode_packet_v5(first, raw, offset, from_client=case.from_client)
    assert type(info.value) in (MalformedPacket, ProtocolError)


# -- encoders ------------------------------------------------------------------------------------


def test_ack_encoder_short_forms() -> None:
    assert encode_ack5(PacketType.PUBACK, 1) == b"\x40\x02\x00\x01"
    assert encode_ack5(PacketType.PUBREL, 0x1234) == b"\x62\x02\x12\x34"
    assert encode_ack5(PacketType.PUBREC, 1, 0x10) == b"\x50\x03\x00\x01\x10"
    assert encode_ack5(PacketType.PUBCOMP, 1, 0, Properties()) == b"\x70\x02\x00\x01"
    assert encode_ack5(PacketType.PUBACK, 1, 0, Properties(reason_string="r")) == \
        b"\x40\x08\x00\x01\x00\x04\x1f\x00\x01r"


def test_disconnect_and_auth_encoders() -> None:
    assert encode_disconnect5() == DISCONNECT_NORMAL == b"\xe0\x00"
    assert encode_disconnect5(0x8E) == b"\xe0\x01\x8e"
    assert encode_disconnect5(0, Properties()) == b"\xe0\x00"
    assert encode_auth(0) == AUTH_SUCCESS == b"\xf0\x00"
    # AUTH has no Remaining Length 1 form: a reason code brings the Property Length.
    assert encode_auth(0x18) == b"\xf0\x02\x18\x00"


def test_connack_encoder() -> None:
    assert encode_connack5(False) == b"\x20\x03\x00\x00\x00"
    assert encode_connack5(True, 0, Properties(topic_alias_maximum=5)) == \
        b"\x20\x06\x01\x00\x03\x22\x00\x05"
    assert encode_connack5(False, 0x87) == b"\x20\x03\x00\x87\x00"


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_head_is_shared_between_subscribers(qos: int) -> None:
    props = b"\x02\x0b\x05"
    payload = b"shared payload"
    first = 0x30 | qos << 1
    head = publish_head_v5(b"a/b", len(payload), first, props)
    for packet_id in (1, 2, 0xFFFF):
        pid = packet_id.to_bytes(2, "big") if qos else b""
        raw = head + pid + props + payload
        expected = Publish5("a/b", payload, qos, packet_id=packet_id if qos else 0,
                            properties=Properties(subscription_identifiers=[5]))
        assert decode_raw(raw, from_client=False) == expected
        assert encode_publish5(expected) == raw


def test_publish_head_long_remaining_length() -> None:
    head = publish_head_v5(b"t", 200, 0x30, b"\x00")
    assert head == b"\x30\xcc\x01\x00\x01t"  # 2 + 1 + 1 + 200 = 204


def test_encode_rejects_non_packet() -> None:
    with pytest.raises(TypeError):
        encode_packet_v5(object())  # type: ignore[arg-type]


def test_subscription_options_byte() -> None:
    assert Subscription("t", 2, True, True, 2).options == 0x2E
    assert Subscription("t").options == 0


# -- cross-check with paho-mqtt's MQTT 5 packet building --------------------------------------


class _DummySocket:
    def close(self) -> None:
        pass


class CapturingClient(paho_client.Client):
    """A paho client whose packets are captured instead of written to a socket."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(CallbackAPIVersion.VERSION2, protocol=paho_client.MQTTv5,
                         **kwargs)
        self.captured: list[bytes] = []

    def _packet_queue(self, command: int, packet: bytes | bytearray, mid: int, qos: int,
                      info: Any = None) -> MQTTErrorCode:
        self.captured.append(bytes(packet))
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def paho_props(packet_type: int, **values: Any) -> PahoProperties:
    props = PahoProperties(packet_type)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def test_paho_connect_with_properties_and_will() -> None:
    client = CapturingClient(client_id="paho-1")
    client._connect_properties = paho_props(
        PacketTypes.CONNECT, SessionExpiryInterval=300, ReceiveMaximum=10,
        TopicAliasMaximum=8, UserProperty=[("a", "1"), ("b", "2")])
    client.will_set("will/t", b"gone", 1, True, properties=paho_props(
        PacketTypes.WILLMESSAGE, WillDelayInterval=5, ContentType="text/plain",
        UserProperty=("w", "x")))
    client.username_pw_set("user", "pw")
    client._send_connect(45)
    raw = client.captured[-1]
    first, offset = split_frame(raw)
    decoded = decode_connect_any(first, raw, offset)
    assert decoded == Connect5(
        "paho-1", True, 45,
        Will5("will/t", b"gone", 1, True, Properties(
            will_delay_interval=5, content_type="text/plain", user_properties=[("w", "x")])),
        "user", b"pw",
        Properties(session_expiry_interval=300, receive_maximum=10, topic_alias_maximum=8,
                   user_properties=[("a", "1"), ("b", "2")]))
    assert encode_packet_v5(decoded) == raw


def test_paho_publish_subscribe_unsubscribe_disconnect() -> None:
    client = CapturingClient(client_id="paho-2")
    client._sock = cast(Any, _DummySocket())  # _send_publish refuses to run without one
    try:
        client._send_publish(7, b"t/1", b"payload", 1, True, False, None, paho_props(
            PacketTypes.PUBLISH, TopicAlias=3, MessageExpiryInterval=9, ResponseTopic="r",
            CorrelationData=b"c", UserProperty=("x", "y")))
        client._send_subscribe(0, [
            (b"a/#", SubscribeOptions(qos=2, noLocal=True, retainAsPublished=True,
                                      retainHandling=1)),
            (b"$share/g/b", SubscribeOptions(qos=0, retainHandling=2))],
            paho_props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=42))
        client._send_unsubscribe(0, [b"a/#", b"b"], paho_props(PacketTypes.UNSUBSCRIBE,
                                                             UserProperty=("k", "v")))
        client._send_disconnect(PahoReasonCode(PacketTypes.DISCONNECT, identifier=0x04),
                                paho_props(PacketTypes.DISCONNECT, SessionExpiryInterval=0,
                                           ReasonString="bye"))
        client._send_disconnect()
        client._send_pubrel(9)
    finally:
        client._sock = None
    decoded = [decode_raw(raw) for raw in client.captured]
    assert decoded == [
        Publish5("t/1", b"payload", 1, True, False, 7, Properties(
            topic_alias=3, message_expiry_interval=9, response_topic="r",
            correlation_data=b"c", user_properties=[("x", "y")])),
        Subscribe5(1, [Subscription("a/#", 2, True, True, 1),
                       Subscription("$share/g/b", 0, False, False, 2)],
                   Properties(subscription_identifiers=[42])),
        Unsubscribe5(2, ["a/#", "b"], Properties(user_properties=[("k", "v")])),
        Disconnect5(4, Properties(session_expiry_interval=0, reason_string="bye")),
        Disconnect5(),
        Pubrel5(9),
    ]
    assert [encode_packet_v5(packet) for packet in decoded] == client.captured


def test_paho_parses_our_connack_and_suback_properties() -> None:
    """Our server-side encodings, read back with paho's property parser."""
    props = Properties(assigned_client_identifier="gen", server_keep_alive=30,
                       maximum_qos=1, user_properties=[("a", "b")])
    raw = encode_connack5(False, 0, props)
    paho, length = PahoProperties(PacketTypes.CONNACK).unpack(raw[4:])
    assert length == len(raw) - 4
    assert paho.json() == {"AssignedClientIdentifier": "gen", "ServerKeepAlive": 30,
                           "MaximumQoS": 1, "UserProperty": [("a", "b")]}
    raw = encode_packet_v5(Suback5(3, [0, 0x8F], Properties(reason_string="r")))
    assert struct.unpack("!BBH", raw[:4]) == (0x90, len(raw) - 2, 3)
    paho, length = PahoProperties(PacketTypes.SUBACK).unpack(raw[4:])
    assert paho.json() == {"ReasonString": "r"}
    assert raw[4 + length:] == b"\x00\x8f"


# -- reason codes ------------------------------------------------------------------------------


def test_reason_table_matches_paho() -> None:
    """Table 2-6 against paho's copy. One known difference: the spec lists 0x99 (Payload format
    invalid) for CONNACK too (Table 3-1, §3.1.3.2.3), which paho leaves out."""
    ours = {(spec.code, int(packet)) for spec in REASON_TABLE for packet in spec.packets}
    theirs = {(code, int(packet)) for code, names in PahoReasonCode.names.items()
              for packets in names.values() for packet in packets}
    assert ours - theirs == {(0x99, PacketType.CONNACK)}
    assert theirs - ours == set()
    # Names as Table 2-6 spells them, where paho's differ.
    paho_spelling = {"No subscription existed": "No subscription found",
                     "Shared Subscriptions not supported": "Shared subscription not supported",
                     "Wildcard Subscriptions not supported": "Wildcard subscription not supported"}
    for spec in REASON_TABLE:
        paho_names = {name.lower() for name in PahoReasonCode.names[spec.code]}
        assert paho_spelling.get(spec.name, spec.name).lower() in paho_names


def test_reason_codes_by_packet() -> None:
    assert REASON_CODES_BY_PACKET[PacketType.PUBREL] == {0x00, 0x92}
    assert REASON_CODES_BY_PACKET[PacketType.AUTH] == {0x00, 0x18, 0x19}
    assert REASON_CODES_BY_PACKET[PacketType.PUBACK] == {
        0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99}
    assert REASON_CODES_BY_PACKET[PacketType.SUBACK] == {
        0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2}
    assert REASON_CODES_BY_PACKET[PacketType.UNSUBACK] == {
        0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91}
    assert PacketType.CONNECT not in REASON_CODES_BY_PACKET
    assert {int(code) for code in ReasonCode} == {spec.code for spec in REASON_TABLE}


def test_reason_helpers() -> None:
    # 0x00 has three names; the later two are aliases of SUCCESS.
    assert ReasonCode["NORMAL_DISCONNECTION"] is ReasonCode["GRANTED_QOS_0"] is ReasonCode(0)
    assert ReasonCode(0).name == "SUCCESS"
    assert not is_error(0x00) and not is_error(0x19) and is_error(0x80) and is_error(0xA2)
    assert all(is_error(code) == (code >= 0x80) for code in ReasonCode)
    assert is_allowed(0x04, PacketType.DISCONNECT)
    assert not is_allowed(0x04, PacketType.PUBACK)
    assert not is_allowed(0x00, PacketType.PINGREQ)
    assert reason_name(0x00, PacketType.DISCONNECT) == "Normal disconnection"
    assert reason_name(0x00, PacketType.SUBACK) == "Granted QoS 0"
    assert reason_name(0x00) == "Success"
    assert reason_name(0x94, PacketType.PUBACK) == "Topic Alias invalid"
    assert reason_name(0x05) == "unknown reason code 0x05"
