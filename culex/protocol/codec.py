"""Encode and decode MQTT 3.1 / 3.1.1 packets.

Decoders take the whole frame and the offset of its body (the framer in `reader.py` has already
checked the Remaining Length), read fields with explicit bounds, and raise only the errors of
`errors.py`. Every decoder insists that the fields consume the body exactly: trailing bytes
inside the Remaining Length are malformed, not ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .errors import MalformedPacket, ProtocolError, UnacceptableProtocol
from .packets import (
    BRIDGE_LEVEL_BIT,
    PROTOCOL_LEVELS,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
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
from .publish import ack_packet_id, publish_fields

MAX_REMAINING_LENGTH = 268_435_455  # four varint bytes


# -- primitives -------------------------------------------------------------------------------

def encode_varint(value: int) -> bytes:
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {value} out of range")
    if value < 128:
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def encode_binary(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def read_uint16(frame: bytes, pos: int, end: int, what: str) -> int:
    if pos + 2 > end:
        raise MalformedPacket(f"packet ends before {what}")
    return (frame[pos] << 8) | frame[pos + 1]


def read_binary(frame: bytes, pos: int, end: int, what: str) -> tuple[bytes, int]:
    length = read_uint16(frame, pos, end, what)
    start = pos + 2
    stop = start + length
    if stop > end:
        raise MalformedPacket(f"{what} length {length} runs past the packet end")
    return frame[start:stop], stop


# Code points MQTT strings SHOULD NOT hold [MQTT-1.5.3-2, 1.5.3-3]: U+0000 (a MUST NOT), the
# C0 and C1 control characters and the noncharacters. We refuse all of them, as Mosquitto does:
# a control character in a topic or client id is far likelier an attack on a log viewer or a
# downstream system than data anyone meant to send.
_NONCHARACTERS = "".join(
    chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17))
_FORBIDDEN_CODE_POINTS = re.compile(f"[\x00-\x1f\x7f-\x9f\ufdd0-\ufdef{_NONCHARACTERS}]")


def decode_utf8(raw: bytes, what: str) -> str:
    """UTF-8 as MQTT defines it: well-formed (no surrogates, no overlongs), no forbidden code
    points (U+0000, control characters, noncharacters)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket(f"{what} is not valid UTF-8", "MQTT-1.5.3-1") from exc
    found = _FORBIDDEN_CODE_POINTS.search(text)
    if found is not None:
        raise MalformedPacket(f"{what} contains U+{ord(found.group()):04X}", "MQTT-1.5.3-2")
    return text


def read_string(frame: bytes, pos: int, end: int, what: str) -> tuple[str, int]:
    raw, pos = read_binary(frame, pos, end, what)
    return decode_utf8(raw, what), pos


def check_end(pos: int, end: int, what: str) -> None:
    if pos != end:
        raise MalformedPacket(f"{end - pos} unexpected trailing bytes in {what}")


def read_packet_id(frame: bytes, pos: int, end: int, what: str,
                   rule: str = "MQTT-2.3.1-1") -> int:
    """A non-zero packet identifier; `rule` is the spec's number for that rule (MQTT 5 numbers
    it MQTT-2.2.1-3)."""
    packet_id = read_uint16(frame, pos, end, "packet identifier")
    if packet_id == 0:
        raise ProtocolError(f"packet identifier 0 in {what}", rule)
    return packet_id


def _require_flags(flags: int, expected: int, what: str) -> None:
    if flags != expected:
        raise MalformedPacket(f"{what} fixed-header flags {flags:#06b}, must be {expected:#06b}",
                              "MQTT-2.2.2-2")


# -- decoders ---------------------------------------------------------------------------------

def read_connect_flags(frame: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """Connect Flags and Keep Alive, checked as 3.1.1 and 5.0 both require: (flags, keep
    alive, position after them)."""
    if pos + 3 > end:
        raise MalformedPacket("CONNECT ends before connect flags and keep alive")
    connect_flags = frame[pos]
    keepalive = (frame[pos + 1] << 8) | frame[pos + 2]
    if connect_flags & 0x01:
        raise MalformedPacket("reserved CONNECT flag set", "MQTT-3.1.2-3")
    will_qos = (connect_flags >> 3) & 0x03
    if connect_flags & 0x04:
        if will_qos == 3:
            raise MalformedPacket("will QoS 3", "MQTT-3.1.2-14")
    elif will_qos:
        raise MalformedPacket("will QoS set without the will flag", "MQTT-3.1.2-11")
    elif connect_flags & 0x20:
        raise MalformedPacket("will retain set without the will flag", "MQTT-3.1.2-13")
    return connect_flags, keepalive, pos + 3


def decode_connect(flags: int, frame: bytes, pos: int) -> Connect:
    end = len(frame)
    _require_flags(flags, 0, "CONNECT")
    protocol_name, pos = read_string(frame, pos, end, "protocol name")
    if pos >= end:
        raise MalformedPacket("CONNECT ends before the protocol level")
    level = frame[pos]
    pos += 1
    if protocol_name not in PROTOCOL_LEVELS:
        # Not MQTT at all, so no CONNACK: the spec lets the server just disconnect.
        raise ProtocolError(f"unknown protocol name {protocol_name!r}", "MQTT-3.1.2-1")
    bridge = bool(level & BRIDGE_LEVEL_BIT)
    if level & ~BRIDGE_LEVEL_BIT not in PROTOCOL_LEVELS[protocol_name]:
        raise UnacceptableProtocol(f"protocol {protocol_name!r} level {level} not supported",
                                   "MQTT-3.1.2-2")
    level &= ~BRIDGE_LEVEL_BIT
    connect_flags, keepalive, pos = read_connect_flags(frame, pos, end)
    clean_session = bool(connect_flags & 0x02)
    will_flag = bool(connect_flags & 0x04)
    will_qos = (connect_flags >> 3) & 0x03
    will_retain = bool(connect_flags & 0x20)
    has_password = bool(connect_flags & 0x40)
    has_username = bool(connect_flags & 0x80)
    if has_password and not has_username:
        raise MalformedPacket("password flag without user name flag", "MQTT-3.1.2-22")

    client_id, pos = read_string(frame, pos, end, "client identifier")
    will = None
    if will_flag:
        will_topic, pos = read_string(frame, pos, end, "will topic")
        will_payload, pos = read_binary(frame, pos, end, "will message")
        will = Will(will_topic, will_payload, will_qos, will_retain)
    username = password = None
    if has_username:
        username, pos = read_string(frame, pos, end, "user name")
    if has_password:
        password, pos = read_binary(frame, pos, end, "password")
    check_end(pos, end, "CONNECT")
    return Connect(client_id, protocol_name, level, clean_session, keepalive, will, username,
                   password, bridge)


def decode_connack(flags: int, frame: bytes, pos: int) -> Connack:
    _require_flags(flags, 0, "CONNACK")
    end = len(frame)
    if end - pos != 2:
        raise MalformedPacket("CONNACK remaining length must be 2")
    if frame[pos] & 0xFE:
        raise MalformedPacket("reserved CONNACK acknowledge flags set", "MQTT-3.2.2-1")
    return Connack(bool(frame[pos] & 1), frame[pos + 1])


def read_publish_header(flags: int, frame: bytes, pos: int) -> tuple[int, bool, str, int, int]:
    """Flags, topic and packet id of a PUBLISH (3.1.1 and 5.0 alike): (qos, dup, topic,
    packet_id, position after them). The fields are found by `publish.publish_fields`, the
    parser the broker's hot path uses too."""
    qos, topic_end, packet_id, pos_after = publish_fields(flags, frame, pos)
    topic = decode_utf8(frame[pos + 2:topic_end], "topic name")
    return qos, bool(flags & 0x08), topic, packet_id, pos_after


def decode_publish(flags: int, frame: bytes, pos: int) -> Publish:
    qos, dup, topic, packet_id, pos = read_publish_header(flags, frame, pos)
    return Publish(topic, frame[pos:], qos, bool(flags & 0x01), dup, packet_id)


def _ack_decoder(cls: type[Puback | Pubrec | Pubrel | Pubcomp | Unsuback],
                 required_flags: int) -> Callable[[int, bytes, int], Packet]:
    name = cls.__name__.upper()

    def decode(flags: int, frame: bytes, pos: int) -> Packet:
        return cls(ack_packet_id(flags, frame, pos, required_flags, name))

    return decode


def decode_subscribe(flags: int, frame: bytes, pos: int) -> Subscribe:
    _require_flags(flags, 0b0010, "SUBSCRIBE")
    end = len(frame)
    packet_id = read_packet_id(frame, pos, end, "SUBSCRIBE")
    pos += 2
    topics: list[tuple[str, int]] = []
    while pos < end:
        topic_filter, pos = read_string(frame, pos, end, "topic filter")
        if pos >= end:
            raise MalformedPacket("SUBSCRIBE filter without requested QoS")
        options = frame[pos]
        pos += 1
        if options > 2:
            raise MalformedPacket(f"SUBSCRIBE requested QoS byte {options:#04x}", "MQTT-3.8.3-4")
        topics.append((topic_filter, options))
    if not topics:
        raise ProtocolError("SUBSCRIBE without topic filters", "MQTT-3.8.3-3")
    return Subscribe(packet_id, topics)


def decode_suback(flags: int, frame: bytes, pos: int) -> Suback:
    _require_flags(flags, 0, "SUBACK")
    end = len(frame)
    packet_id = read_packet_id(frame, pos, end, "SUBACK")
    codes = list(frame[pos + 2:end])
    if not codes or any(code not in (0, 1, 2, 0x80) for code in codes):
        raise MalformedPacket("SUBACK return codes missing or invalid")
    return Suback(packet_id, codes)


def decode_unsubscribe(flags: int, frame: bytes, pos: int) -> Unsubscribe:
    _require_flags(flags, 0b0010, "UNSUBSCRIBE")
    end = len(frame)
    packet_id = read_packet_id(frame, pos, end, "UNSUBSCRIBE")
    pos += 2
    filters: list[str] = []
    while pos < end:
        topic_filter, pos = read_string(frame, pos, end, "topic filter")
        filters.append(topic_filter)
    if not filters:
        raise ProtocolError("UNSUBSCRIBE without topic filters", "MQTT-3.10.3-2")
    return Unsubscribe(packet_id, filters)


def _empty_decoder(cls: type[Pingreq | Pingresp | Disconnect]) -> Callable[[int, bytes, int],
                                                                              Packet]:
    name = cls.__name__.upper()
    instance = cls()

    def decode(flags: int, frame: bytes, pos: int) -> Packet:
        _require_flags(flags, 0, name)
        if len(frame) != pos:
            raise MalformedPacket(f"{name} remaining length must be 0")
        return instance

    return decode


DECODERS: dict[int, Callable[[int, bytes, int], Packet]] = {
    PacketType.CONNECT: decode_connect,
    PacketType.CONNACK: decode_connack,
    PacketType.PUBLISH: decode_publish,
    PacketType.PUBACK: _ack_decoder(Puback, 0),
    PacketType.PUBREC: _ack_decoder(Pubrec, 0),
    PacketType.PUBREL: _ack_decoder(Pubrel, 0b0010),
    PacketType.PUBCOMP: _ack_decoder(Pubcomp, 0),
    PacketType.SUBSCRIBE: decode_subscribe,
    PacketType.SUBACK: decode_suback,
    PacketType.UNSUBSCRIBE: decode_unsubscribe,
    PacketType.UNSUBACK: _ack_decoder(Unsuback, 0),
    PacketType.PINGREQ: _empty_decoder(Pingreq),
    PacketType.PINGRESP: _empty_decoder(Pingresp),
    PacketType.DISCONNECT: _empty_decoder(Disconnect),
}


def decode_packet(first_byte: int, frame: bytes, body_offset: int) -> Packet:
    """Decode one complete frame as produced by `FrameReader`."""
    decoder = DECODERS.get(first_byte >> 4)
    if decoder is None:
        raise MalformedPacket(f"reserved or unsupported packet type {first_byte >> 4}",
                              "MQTT-2.2.1")
    return decoder(first_byte & 0x0F, frame, body_offset)


# -- encoders ---------------------------------------------------------------------------------

def frame(first_byte: int, body: bytes) -> bytes:
    return bytes((first_byte,)) + encode_varint(len(body)) + body


def encode_connect(packet: Connect) -> bytes:
    flags = 0x02 if packet.clean_session else 0
    payload = encode_string(packet.client_id)
    if packet.will is not None:
        flags |= 0x04 | (packet.will.qos << 3) | (0x20 if packet.will.retain else 0)
        payload += encode_string(packet.will.topic) + encode_binary(packet.will.payload)
    if packet.username is not None:
        flags |= 0x80
        payload += encode_string(packet.username)
    if packet.password is not None:
        flags |= 0x40
        payload += encode_binary(packet.password)
    header = (encode_string(packet.protocol_name)
              + bytes((packet.protocol_level | (BRIDGE_LEVEL_BIT if packet.bridge else 0), flags))
              + packet.keepalive.to_bytes(2, "big"))
    return frame(0x10, header + payload)


def encode_connack(session_present: bool, return_code: int) -> bytes:
    return bytes((0x20, 2, 1 if session_present else 0, return_code))


def publish_head(topic: bytes, payload_len: int, first_byte: int) -> bytes:
    """Fixed header + topic of a PUBLISH: everything before the packet id (QoS > 0) or payload.

    The broker shares this head (and the payload) between all subscribers of one variant, so
    only the 2-byte packet id is made per recipient.
    """
    id_len = 2 if first_byte & 0x06 else 0
    remaining = 2 + len(topic) + id_len + payload_len
    return (bytes((first_byte,)) + encode_varint(remaining)
            + len(topic).to_bytes(2, "big") + topic)


def encode_publish(packet: Publish) -> bytes:
    first = 0x30 | (packet.qos << 1) | (0x08 if packet.dup else 0) | (1 if packet.retain else 0)
    head = publish_head(packet.topic.encode(), len(packet.payload), first)
    packet_id = packet.packet_id.to_bytes(2, "big") if packet.qos else b""
    return head + packet_id + packet.payload


def encode_ack(packet_type: PacketType, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL, PUBCOMP or UNSUBACK (PUBREL carries its mandatory flags 0010)."""
    first = (packet_type << 4) | (0x02 if packet_type == PacketType.PUBREL else 0)
    return bytes((first, 2, packet_id >> 8, packet_id & 0xFF))


def encode_subscribe(packet: Subscribe) -> bytes:
    body = packet.packet_id.to_bytes(2, "big") + b"".join(
        encode_string(topic) + bytes((qos,)) for topic, qos in packet.topics)
    return frame(0x82, body)


def encode_suback(packet_id: int, return_codes: list[int]) -> bytes:
    return frame(0x90, packet_id.to_bytes(2, "big") + bytes(return_codes))


def encode_unsubscribe(packet: Unsubscribe) -> bytes:
    body = packet.packet_id.to_bytes(2, "big") + b"".join(map(encode_string, packet.filters))
    return frame(0xA2, body)


PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"
DISCONNECT = b"\xe0\x00"


def encode_packet(packet: Packet) -> bytes:
    """Encode any packet object; the broker's hot path uses the specific encoders directly."""
    match packet:
        case Connect():
            return encode_connect(packet)
        case Connack():
            return encode_connack(packet.session_present, packet.return_code)
        case Publish():
            return encode_publish(packet)
        case Puback() | Pubrec() | Pubrel() | Pubcomp() | Unsuback():
            return encode_ack(PacketType[type(packet).__name__.upper()], packet.packet_id)
        case Subscribe():
            return encode_subscribe(packet)
        case Suback():
            return encode_suback(packet.packet_id, packet.return_codes)
        case Unsubscribe():
            return encode_unsubscribe(packet)
        case Pingreq():
            return PINGREQ
        case Pingresp():
            return PINGRESP
        case Disconnect():
            return DISCONNECT
    raise TypeError(f"not a packet: {packet!r}")
