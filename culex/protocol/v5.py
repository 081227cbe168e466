"""Encode and decode MQTT 5.0 packets.

The same contract as `codec.py` for 3.1.1: decoders take the whole frame from `FrameReader`
and the offset of its body, read fields with explicit bounds, insist that the fields consume the
body exactly, and raise only the errors of `errors.py`. MQTT 5 adds a property block to almost
every packet (`properties.py`), reason codes (`reasons.py`), subscription options, AUTH, and
short forms: an ack, DISCONNECT or AUTH whose reason is 0x00 and that has no properties may
leave them out. The encoders always produce the shortest form the spec allows.

Direction matters for a few rules, so the decoders take `from_client`: a client may not send a
Subscription Identifier in PUBLISH [MQTT-3.3.4-6], a server may not send Session Expiry
Interval in DISCONNECT [MQTT-3.14.2-2], and AUTH reason codes are each sent by one side only
(§3.15.2.1). Rules that need connection state (Topic Alias mapping, Maximum QoS, Receive
Maximum, whether CONNECT had an Authentication Method, DISCONNECT Session Expiry after a
CONNECT with 0) are the broker's, not the codec's.

`decode_connect_any` is the entry point for a connection's first packet: it reads the protocol
level and hands 3.1 / 3.1.1 CONNECTs to `codec.decode_connect` unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from .codec import (
    check_end,
    encode_binary,
    encode_string,
    encode_varint,
    read_binary,
    read_connect_flags,
    read_packet_id,
    read_publish_header,
    read_string,
)
from .codec import (
    decode_connect as decode_connect_v3,
)
from .codec import (
    frame as _frame,
)
from .errors import MalformedPacket, ProtocolError, UnacceptableProtocol
from .packets import PROTOCOL_LEVELS, Connect, PacketType, Pingreq, Pingresp
from .packets5 import (
    PROTOCOL_LEVEL_5,
    Ack5,
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
from .properties import (
    DEFAULT_MAX_USER_PROPERTIES,
    WILL_PROPERTIES,
    Properties,
    decode_properties,
    encode_properties,
)
from .reasons import REASON_CODES_BY_PACKET, ReasonCode, reason_name

# The first bytes of every MQTT 5.0 CONNECT body: protocol name "MQTT", then level 5 (§3.1.2.1-2).
_V5_CONNECT_PREFIX: Final = b"\x00\x04MQTT\x05"


Decoder = Callable[[int, bytes, int, bool, int], Packet5]
"""(fixed-header flags, frame, body offset, from_client, max_user_properties) -> packet."""


# -- shared field readers -----------------------------------------------------------------------

def _require_flags(flags: int, expected: int, name: str) -> None:
    # Reserved fixed-header flag bits "MUST be set to the value listed" [MQTT-2.1.3-1]; a
    # receiver treats any other value as malformed (e.g. [MQTT-3.8.1-1], [MQTT-3.15.1-1]).
    if flags != expected:
        raise MalformedPacket(f"{name} fixed-header flags {flags:#06b}, must be {expected:#06b}",
                              "MQTT-2.1.3-1")


def _read_packet_id(frame: bytes, pos: int, end: int, name: str) -> int:
    return read_packet_id(frame, pos, end, name, "MQTT-2.2.1-3")


def _check_reason(code: int, packet_type: PacketType, rule: str) -> None:
    # A reason code the packet may not carry is a well-formed byte with a value the protocol
    # forbids: a Protocol Error, as Mosquitto treats it (handle__pubackcomp, handle__auth).
    if code not in REASON_CODES_BY_PACKET[packet_type]:
        raise ProtocolError(f"reason code {code:#04x} is not valid in {packet_type.name}", rule)


# -- decoders -----------------------------------------------------------------------------------

def _decode_connect(flags: int, frame: bytes, pos: int, from_client: bool,
                    max_user: int) -> Connect5:
    end = len(frame)
    _require_flags(flags, 0, "CONNECT")
    protocol_name, pos = read_string(frame, pos, end, "protocol name")
    if pos >= end:
        raise MalformedPacket("CONNECT ends before the protocol level")
    level = frame[pos]
    pos += 1
    if protocol_name != "MQTT" or level != PROTOCOL_LEVEL_5:
        if protocol_name not in PROTOCOL_LEVELS:
            raise ProtocolError(f"unknown protocol name {protocol_name!r}", "MQTT-3.1.2-1")
        raise UnacceptableProtocol(f"protocol {protocol_name!r} level {level} is not MQTT 5",
                                   "MQTT-3.1.2-2")
    connect_flags, keepalive, pos = read_connect_flags(frame, pos, end)
    will_flag = bool(connect_flags & 0x04)
    will_qos = (connect_flags >> 3) & 0x03
    will_retain = bool(connect_flags & 0x20)
    # Unlike 3.1.1 [MQTT-3.1.2-22], a Password without a User Name is allowed (§3.1.2.9).

    properties, pos = decode_properties(frame, pos, end, PacketType.CONNECT, max_user)
    client_id, pos = read_string(frame, pos, end, "client identifier")
    will = None
    if will_flag:
        # Will Properties, Will Topic, Will Payload, in this order [MQTT-3.1.3-1].
        will_properties, pos = decode_properties(frame, pos, end, WILL_PROPERTIES, max_user)
        will_topic, pos = read_string(frame, pos, end, "will topic")
        will_payload, pos = read_binary(frame, pos, end, "will payload")
        will = Will5(will_topic, will_payload, will_qos, will_retain, will_properties)
    username = password = None
    if connect_flags & 0x80:
        username, pos = read_string(frame, pos, end, "user name")
    if connect_flags & 0x40:
        password, pos = read_binary(frame, pos, end, "password")
    check_end(pos, end, "CONNECT")
    return Connect5(client_id, bool(connect_flags & 0x02), keepalive, will, username, password,
                    properties)


def _decode_connack(flags: int, frame: bytes, pos: int, from_client: bool,
                    max_user: int) -> Connack5:
    _require_flags(flags, 0, "CONNACK")
    end = len(frame)
    if pos + 2 > end:
        raise MalformedPacket("CONNACK ends before its reason code")
    ack_flags = frame[pos]
    reason_code = frame[pos + 1]
    if ack_flags & 0xFE:
        raise MalformedPacket("reserved CONNACK acknowledge flags set", "MQTT-3.2.2-1")
    _check_reason(reason_code, PacketType.CONNACK, "MQTT-3.2.2-8")
    if ack_flags and reason_code:
        raise ProtocolError("session present with a failure reason code", "MQTT-3.2.2-6")
    # Unlike the acks, CONNACK has no short form: its Property Length is always present.
    properties, pos = decode_properties(frame, pos + 2, end, PacketType.CONNACK, max_user)
    check_end(pos, end, "CONNACK")
    return Connack5(bool(ack_flags), reason_code, properties)


def _decode_publish(flags: int, frame: bytes, pos: int, from_client: bool,
                    max_user: int) -> Publish5:
    end = len(frame)
    # An empty topic is legal here: with a Topic Alias it means "the aliased topic" (§3.3.2.3.4).
    # Whether the alias is known is connection state, so the broker checks it.
    qos, dup, topic, packet_id, pos = read_publish_header(flags, frame, pos)
    if pos < end and frame[pos] == 0:
        # Most PUBLISHes carry no properties. Building the empty Properties here (~0.6 us)
        # instead of calling decode_properties (~1.0 us) keeps a v5 PUBLISH decode on par
        # with the 3.1.1 decoder (~2 us each, min of 9 runs on the dev box).
        properties = Properties()
        pos += 1
    else:
        properties, pos = decode_properties(frame, pos, end, PacketType.PUBLISH, max_user)
    if from_client and properties.subscription_identifiers:
        raise ProtocolError("Subscription Identifier in a PUBLISH from a client",
                            "MQTT-3.3.4-6")
    return Publish5(topic, frame[pos:], qos, bool(flags & 0x01), dup, packet_id, properties)


def _ack_decoder(cls: type[Ack5], packet_type: PacketType, required_flags: int,
                 rule: str) -> Decoder:
    name = packet_type.name

    def decode(flags: int, frame: bytes, pos: int, from_client: bool, max_user: int) -> Packet5:
        _require_flags(flags, required_flags, name)
        end = len(frame)
        packet_id = _read_packet_id(frame, pos, end, name)
        pos += 2
        if pos == end:
            # Remaining Length 2: reason 0x00, no properties (e.g. §3.4.2.1).
            return cls(packet_id)
        reason_code = frame[pos]
        _check_reason(reason_code, packet_type, rule)
        pos += 1
        if pos == end:
            # Remaining Length 3: "less than 4 there is no Property Length" (e.g. §3.4.2.2.1).
            return cls(packet_id, reason_code)
        properties, pos = decode_properties(frame, pos, end, packet_type, max_user)
        check_end(pos, end, name)
        return cls(packet_id, reason_code, properties)

    return decode


def _decode_subscribe(flags: int, frame: bytes, pos: int, from_client: bool,
                      max_user: int) -> Subscribe5:
    _require_flags(flags, 0b0010, "SUBSCRIBE")
    end = len(frame)
    packet_id = _read_packet_id(frame, pos, end, "SUBSCRIBE")
    properties, pos = decode_properties(frame, pos + 2, end, PacketType.SUBSCRIBE, max_user)
    subscriptions: list[Subscription] = []
    while pos < end:
        topic_filter, pos = read_string(frame, pos, end, "topic filter")
        if pos >= end:
            raise MalformedPacket("SUBSCRIBE topic filter without subscription options")
        options = frame[pos]
        pos += 1
        if options & 0xC0:
            raise MalformedPacket(f"reserved subscription option bits set in {options:#04x}",
                                  "MQTT-3.8.3-5")
        qos = options & 0x03
        if qos == 3:
            raise ProtocolError("subscription Maximum QoS 3", "§3.8.3.1")
        retain_handling = options >> 4
        if retain_handling == 3:
            raise ProtocolError("subscription Retain Handling 3", "§3.8.3.1")
        no_local = bool(options & 0x04)
        if no_local and topic_filter.startswith("$share/"):
            raise ProtocolError(f"No Local on shared subscription {topic_filter!r}",
                                "MQTT-3.8.3-4")
        subscriptions.append(Subscription(topic_filter, qos, no_local, bool(options & 0x08),
                                          retain_handling))
    if not subscriptions:
        raise ProtocolError("SUBSCRIBE without topic filters", "MQTT-3.8.3-2")
    return Subscribe5(packet_id, subscriptions, properties)


def _reason_list_decoder(cls: type[Suback5 | Unsuback5], packet_type: PacketType,
                         rule: str) -> Decoder:
    name = packet_type.name

    def decode(flags: int, frame: bytes, pos: int, from_client: bool, max_user: int) -> Packet5:
        _require_flags(flags, 0, name)
        end = len(frame)
        packet_id = _read_packet_id(frame, pos, end, name)
        properties, pos = decode_properties(frame, pos + 2, end, packet_type, max_user)
        codes = list(frame[pos:end])
        if not codes:
            # One reason code per filter of the request, which had at least one (§3.9.3).
            raise MalformedPacket(f"{name} without reason codes", rule)
        allowed = REASON_CODES_BY_PACKET[packet_type]
        for code in codes:
            if code not in allowed:
                raise ProtocolError(f"reason code {code:#04x} is not valid in {name}", rule)
        return cls(packet_id, codes, properties)

    return decode


def _decode_unsubscribe(flags: int, frame: bytes, pos: int, from_client: bool,
                        max_user: int) -> Unsubscribe5:
    _require_flags(flags, 0b0010, "UNSUBSCRIBE")
    end = len(frame)
    packet_id = _read_packet_id(frame, pos, end, "UNSUBSCRIBE")
    properties, pos = decode_properties(frame, pos + 2, end, PacketType.UNSUBSCRIBE, max_user)
    filters: list[str] = []
    while pos < end:
        topic_filter, pos = read_string(frame, pos, end, "topic filter")
        filters.append(topic_filter)
    if not filters:
        raise ProtocolError("UNSUBSCRIBE without topic filters", "MQTT-3.10.3-2")
    return Unsubscribe5(packet_id, filters, properties)


def _empty_decoder(instance: Pingreq | Pingresp) -> Decoder:
    name = type(instance).__name__.upper()

    def decode(flags: int, frame: bytes, pos: int, from_client: bool, max_user: int) -> Packet5:
        _require_flags(flags, 0, name)
        if len(frame) != pos:
            raise MalformedPacket(f"{name} remaining length must be 0")
        return instance

    return decode


def _decode_disconnect(flags: int, frame: bytes, pos: int, from_client: bool,
                       max_user: int) -> Disconnect5:
    _require_flags(flags, 0, "DISCONNECT")
    end = len(frame)
    if pos == end:
        # Remaining Length 0: Normal disconnection, no properties (§3.14.2.1).
        return Disconnect5()
    reason_code = frame[pos]
    _check_reason(reason_code, PacketType.DISCONNECT, "MQTT-3.14.2-1")
    pos += 1
    if pos == end:
        # "If the Remaining Length is less than 2, a value of 0 is used" (§3.14.2.2.1).
        return Disconnect5(reason_code)
    properties, pos = decode_properties(frame, pos, end, PacketType.DISCONNECT, max_user)
    check_end(pos, end, "DISCONNECT")
    if not from_client and properties.session_expiry_interval is not None:
        raise ProtocolError("Session Expiry Interval in a DISCONNECT from the server",
                            "MQTT-3.14.2-2")
    return Disconnect5(reason_code, properties)


# Table 3-11 "Sent by": Success only by the server, Re-authenticate only by the client.
_AUTH_CODES_FROM_CLIENT: Final = frozenset({ReasonCode.CONTINUE_AUTHENTICATION,
                                            ReasonCode.RE_AUTHENTICATE})
_AUTH_CODES_FROM_SERVER: Final = frozenset({ReasonCode.SUCCESS,
                                            ReasonCode.CONTINUE_AUTHENTICATION})


def _decode_auth(flags: int, frame: bytes, pos: int, from_client: bool,
                 max_user: int) -> Auth:
    _require_flags(flags, 0, "AUTH")
    end = len(frame)
    if pos == end:
        # Remaining Length 0: Success, no properties (§3.15.2.1).
        reason_code: int = ReasonCode.SUCCESS
        properties = Properties()
    else:
        reason_code = frame[pos]
        _check_reason(reason_code, PacketType.AUTH, "MQTT-3.15.2-1")
        pos += 1
        if pos == end:
            # AUTH has no Remaining Length 1 form in the spec; read leniently as "no
            # properties", which then fails the Authentication Method rule below.
            properties = Properties()
        else:
            properties, pos = decode_properties(frame, pos, end, PacketType.AUTH, max_user)
            check_end(pos, end, "AUTH")
        if properties.authentication_method is None:
            raise ProtocolError("AUTH without an Authentication Method", "§3.15.2.2.2")
    allowed = _AUTH_CODES_FROM_CLIENT if from_client else _AUTH_CODES_FROM_SERVER
    if reason_code not in allowed:
        side = "client" if from_client else "server"
        raise ProtocolError(f"AUTH {reason_name(reason_code, PacketType.AUTH)!r} from the "
                            f"{side}", "§3.15.2.1")
    return Auth(reason_code, properties)


DECODERS_V5: Final[dict[int, Decoder]] = {
    PacketType.CONNECT: _decode_connect,
    PacketType.CONNACK: _decode_connack,
    PacketType.PUBLISH: _decode_publish,
    PacketType.PUBACK: _ack_decoder(Puback5, PacketType.PUBACK, 0, "MQTT-3.4.2-1"),
    PacketType.PUBREC: _ack_decoder(Pubrec5, PacketType.PUBREC, 0, "MQTT-3.5.2-1"),
    PacketType.PUBREL: _ack_decoder(Pubrel5, PacketType.PUBREL, 0b0010, "MQTT-3.6.2-1"),
    PacketType.PUBCOMP: _ack_decoder(Pubcomp5, PacketType.PUBCOMP, 0, "MQTT-3.7.2-1"),
    PacketType.SUBSCRIBE: _decode_subscribe,
    PacketType.SUBACK: _reason_list_decoder(Suback5, PacketType.SUBACK, "MQTT-3.9.3-2"),
    PacketType.UNSUBSCRIBE: _decode_unsubscribe,
    PacketType.UNSUBACK: _reason_list_decoder(Unsuback5, PacketType.UNSUBACK, "MQTT-3.11.3-2"),
    PacketType.PINGREQ: _empty_decoder(Pingreq()),
    PacketType.PINGRESP: _empty_decoder(Pingresp()),
    PacketType.DISCONNECT: _decode_disconnect,
    PacketType.AUTH: _decode_auth,
}


def decode_packet_v5(first_byte: int, frame: bytes, body_offset: int, *,
                     from_client: bool = True,
                     max_user_properties: int = DEFAULT_MAX_USER_PROPERTIES) -> Packet5:
    """Decode one complete MQTT 5.0 frame as produced by `FrameReader`.

    `from_client` says who sent it (True in the broker). `max_user_properties` caps the User
    Properties of each property block (CVE-2021-41039). A CONNECT is decoded only if it is
    MQTT 5; use `decode_connect_any` for a connection's first packet.
    """
    decoder = DECODERS_V5.get(first_byte >> 4)
    if decoder is None:
        raise MalformedPacket(f"reserved packet type {first_byte >> 4}", "§2.1.2")
    return decoder(first_byte & 0x0F, frame, body_offset, from_client, max_user_properties)


def decode_connect_any(first_byte: int, frame: bytes, body_offset: int, *,
                       max_user_properties: int = DEFAULT_MAX_USER_PROPERTIES,
                       ) -> Connect | Connect5:
    """Decode a connection's first packet whatever its protocol level (3, 4 or 5).

    MQTT 5 CONNECTs ("MQTT", level 5) come back as `Connect5`; everything else goes to the
    3.1/3.1.1 `codec.decode_connect`, so its behaviour and errors are exactly those of the
    existing codec (including `UnacceptableProtocol` for unknown levels). The caller has
    framed a CONNECT: any other packet type is a ProtocolError [MQTT-3.1.0-1].
    """
    if first_byte >> 4 != PacketType.CONNECT:
        raise ProtocolError(f"first packet is not CONNECT (type {first_byte >> 4})",
                            "MQTT-3.1.0-1")
    if frame.startswith(_V5_CONNECT_PREFIX, body_offset):
        return _decode_connect(first_byte & 0x0F, frame, body_offset, True, max_user_properties)
    try:
        return decode_connect_v3(first_byte & 0x0F, frame, body_offset)
    except UnacceptableProtocol as exc:
        # A known name with level 5 ("MQIsdp" 5) is an MQTT 5 client with a bad name.
        name_end = body_offset + 2 + int.from_bytes(frame[body_offset:body_offset + 2], "big")
        exc.mqtt5 = frame[name_end:name_end + 1] == bytes((PROTOCOL_LEVEL_5,))
        raise


# -- encoders -----------------------------------------------------------------------------------

def encode_connect5(packet: Connect5) -> bytes:
    flags = 0x02 if packet.clean_start else 0
    parts = [_V5_CONNECT_PREFIX, b"", packet.keepalive.to_bytes(2, "big"),
             encode_properties(packet.properties), encode_string(packet.client_id)]
    will = packet.will
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        parts += [encode_properties(will.properties), encode_string(will.topic),
                  encode_binary(will.payload)]
    if packet.username is not None:
        flags |= 0x80
        parts.append(encode_string(packet.username))
    if packet.password is not None:
        flags |= 0x40
        parts.append(encode_binary(packet.password))
    parts[1] = bytes((flags,))
    return _frame(0x10, b"".join(parts))


def encode_connack5(session_present: bool, reason_code: int = ReasonCode.SUCCESS,
                    properties: Properties | None = None) -> bytes:
    props = encode_properties(properties) if properties is not None else b"\x00"
    body = bytes((1 if session_present else 0, reason_code)) + props
    return bytes((0x20,)) + encode_varint(len(body)) + body


def publish_head_v5(topic: bytes, payload_len: int, first_byte: int,
                    properties: bytes) -> bytes:
    """Fixed header + Topic Name of a PUBLISH: everything before the packet identifier.

    `properties` is an encoded property block (`encode_properties`); only its length is used
    here. The Remaining Length counts the 2-byte packet id (when first_byte says QoS > 0), the
    properties and the payload, which the caller appends in that order:
    head + [packet id] + properties + payload. As with `codec.publish_head`, the broker shares
    the head (and payload) between all subscribers of one variant and makes only the packet id
    per recipient; properties that differ per subscriber (Subscription Identifiers, Topic
    Alias, the remaining Message Expiry) make a new variant.
    """
    id_len = 2 if first_byte & 0x06 else 0
    remaining = 2 + len(topic) + id_len + len(properties) + payload_len
    return (bytes((first_byte,)) + encode_varint(remaining)
            + len(topic).to_bytes(2, "big") + topic)


def encode_publish5(packet: Publish5) -> bytes:
    first = 0x30 | (packet.qos << 1) | (0x08 if packet.dup else 0) | (1 if packet.retain else 0)
    props = encode_properties(packet.properties)
    head = publish_head_v5(packet.topic.encode(), len(packet.payload), first, props)
    packet_id = packet.packet_id.to_bytes(2, "big") if packet.qos else b""
    return b"".join((head, packet_id, props, packet.payload))


def encode_ack5(packet_type: PacketType, packet_id: int, reason_code: int = ReasonCode.SUCCESS,
                properties: Properties | None = None) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP in the shortest form (§3.4.2.1): Remaining Length 2
    for Success without properties, 3 for another code without properties."""
    first = (packet_type << 4) | (0x02 if packet_type == PacketType.PUBREL else 0)
    if properties is None or properties.is_empty():
        if reason_code == ReasonCode.SUCCESS:
            return bytes((first, 2, packet_id >> 8, packet_id & 0xFF))
        return bytes((first, 3, packet_id >> 8, packet_id & 0xFF, reason_code))
    body = (packet_id.to_bytes(2, "big") + bytes((reason_code,))
            + encode_properties(properties))
    return bytes((first,)) + encode_varint(len(body)) + body


def encode_subscribe5(packet: Subscribe5) -> bytes:
    parts = [packet.packet_id.to_bytes(2, "big"), encode_properties(packet.properties)]
    for subscription in packet.subscriptions:
        parts += [encode_string(subscription.topic_filter), bytes((subscription.options,))]
    return _frame(0x82, b"".join(parts))


def _encode_reason_list(first_byte: int, packet_id: int, reason_codes: list[int],
                        properties: Properties | None) -> bytes:
    props = encode_properties(properties) if properties is not None else b"\x00"
    body = packet_id.to_bytes(2, "big") + props + bytes(reason_codes)
    return bytes((first_byte,)) + encode_varint(len(body)) + body


def encode_suback5(packet_id: int, reason_codes: list[int],
                   properties: Properties | None = None) -> bytes:
    return _encode_reason_list(0x90, packet_id, reason_codes, properties)


def encode_unsubscribe5(packet: Unsubscribe5) -> bytes:
    body = (packet.packet_id.to_bytes(2, "big") + encode_properties(packet.properties)
            + b"".join(map(encode_string, packet.filters)))
    return _frame(0xA2, body)


def encode_unsuback5(packet_id: int, reason_codes: list[int],
                     properties: Properties | None = None) -> bytes:
    return _encode_reason_list(0xB0, packet_id, reason_codes, properties)


DISCONNECT_NORMAL: Final = b"\xe0\x00"
AUTH_SUCCESS: Final = b"\xf0\x00"


def _encode_reason_only(first_byte: int, reason_code: int,
                        properties: Properties | None) -> bytes:
    if properties is None or properties.is_empty():
        if reason_code == 0:
            return bytes((first_byte, 0))
        if first_byte == 0xE0:
            # DISCONNECT may stop after the reason code (§3.14.2.2.1); AUTH may not (§3.15.2.2).
            return bytes((first_byte, 1, reason_code))
        return bytes((first_byte, 2, reason_code, 0))
    body = bytes((reason_code,)) + encode_properties(properties)
    return bytes((first_byte,)) + encode_varint(len(body)) + body


def encode_disconnect5(reason_code: int = ReasonCode.NORMAL_DISCONNECTION,
                       properties: Properties | None = None) -> bytes:
    """DISCONNECT in the shortest form: `e0 00` for a normal disconnection (§3.14.2.1)."""
    return _encode_reason_only(0xE0, reason_code, properties)


def encode_auth(reason_code: int, properties: Properties | None = None) -> bytes:
    """AUTH; `f0 00` for Success without properties (§3.15.2.1)."""
    return _encode_reason_only(0xF0, reason_code, properties)


_PINGREQ: Final = b"\xc0\x00"
_PINGRESP: Final = b"\xd0\x00"


def encode_packet_v5(packet: Packet5) -> bytes:
    """Encode any MQTT 5.0 packet object; the broker's hot path uses the specific encoders."""
    match packet:
        case Publish5():
            return encode_publish5(packet)
        case Puback5() | Pubrec5() | Pubrel5() | Pubcomp5():
            return encode_ack5(_ACK_TYPES[type(packet)], packet.packet_id, packet.reason_code,
                               packet.properties)
        case Connect5():
            return encode_connect5(packet)
        case Connack5():
            return encode_connack5(packet.session_present, packet.reason_code,
                                   packet.properties)
        case Subscribe5():
            return encode_subscribe5(packet)
        case Suback5():
            return encode_suback5(packet.packet_id, packet.reason_codes, packet.properties)
        case Unsubscribe5():
            return encode_unsubscribe5(packet)
        case Unsuback5():
            return encode_unsuback5(packet.packet_id, packet.reason_codes, packet.properties)
        case Pingreq():
            return _PINGREQ
        case Pingresp():
            return _PINGRESP
        case Disconnect5():
            return encode_disconnect5(packet.reason_code, packet.properties)
        case Auth():
            return encode_auth(packet.reason_code, packet.properties)
    raise TypeError(f"not an MQTT 5 packet: {packet!r}")


_ACK_TYPES: Final[dict[type, PacketType]] = {
    Puback5: PacketType.PUBACK, Pubrec5: PacketType.PUBREC, Pubrel5: PacketType.PUBREL,
    Pubcomp5: PacketType.PUBCOMP}
