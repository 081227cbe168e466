"""MQTT 5.0 properties (§2.2.2): the table as data, a `Properties` value, and its codec.

The table below is the whole of MQTT 5.0 Table 2-4 plus the value rules stated in each
property's own section. Decoding and encoding are driven by it, so a property's identifier,
type, allowed packets, repeatability and value range are written down exactly once.

Which error a bad property block raises is the spec's choice, not ours:

* identifier unknown, or not valid in this packet: `MalformedPacket` (§2.2.2.2 "A Control Packet
  which contains an Identifier which is not valid for its packet type ... is a Malformed
  Packet");
* lengths that run past the property block or the packet, non-minimal or over-long Variable
  Byte Integers: `MalformedPacket` ([MQTT-1.5.5-1], §2.2.2.1);
* a single-instance property included twice, or a value out of range: `ProtocolError` (each
  property's section: "It is a Protocol Error to include X more than once" / "to have a value
  other than 0 or 1" / "for it to have the value 0").

`decode_properties` runs in time linear in the block size and allocates one list entry per User
Property; `max_user_properties` caps the count (CVE-2021-41039: a PUBLISH carrying 100,000 User
Properties made Mosquitto's per-property list handling quadratic). The byte size of a block is
already bounded by the packet size limit the framer enforces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from operator import attrgetter
from typing import Final

from .codec import (
    encode_binary,
    encode_string,
    encode_varint,
    read_binary,
    read_string,
)
from .errors import MalformedPacket, ProtocolError
from .packets import PacketType
from .reasons import ReasonCode

# Will Properties (§3.1.3.2) are a property block of their own with their own allowed set. They
# get packet "type" 0: a reserved type that never reaches a property decoder as a real packet, so
# the pseudo packet cannot collide with one.
WILL_PROPERTIES: Final = 0

# Far above what any real client sends (paho, HiveMQ and EMQX clients send a handful), far below
# the count that makes per-property work an attack (CVE-2021-41039 used 100,000).
DEFAULT_MAX_USER_PROPERTIES: Final = 1024

# The largest Variable Byte Integer (§1.5.5), hence the largest Subscription Identifier.
MAX_VARINT: Final = 268_435_455



class PropertyId(IntEnum):
    """Property identifiers of MQTT 5.0 Table 2-4."""

    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


class PropertyType(IntEnum):
    """The data types of §1.5 a property value can have."""

    BYTE = 1
    TWO_BYTE_INT = 2
    FOUR_BYTE_INT = 4
    VARINT = 5
    UTF8_STRING = 6
    BINARY = 7
    UTF8_PAIR = 8


@dataclass(frozen=True, slots=True)
class PropertySpec:
    """One row of Table 2-4 plus the value rules of the property's own section.

    `packets` holds packet type numbers, with `WILL_PROPERTIES` (0) for the Will Properties.
    `repeatable_in` lists where the property may appear more than once: everywhere it is
    allowed for User Property, only PUBLISH for Subscription Identifier (§3.3.2.3.8: one per
    matching subscription; §3.8.2.1.2: "a Protocol Error to include the Subscription Identifier
    more than once" in SUBSCRIBE). `minimum`/`maximum` bound integer values (a violation is a
    Protocol Error). `section` is where the spec defines it, for error messages.
    """

    id: int
    name: str
    attr: str
    type: PropertyType
    packets: frozenset[int]
    repeatable_in: frozenset[int] = frozenset()
    minimum: int | None = None
    maximum: int | None = None
    section: str = ""

    @property
    def repeatable(self) -> bool:
        return bool(self.repeatable_in)


_T = PacketType
_PUB_WILL = frozenset({_T.PUBLISH, WILL_PROPERTIES})
_ACKS_WITH_REASON_STRING = frozenset({
    _T.CONNACK, _T.PUBACK, _T.PUBREC, _T.PUBREL, _T.PUBCOMP, _T.SUBACK, _T.UNSUBACK,
    _T.DISCONNECT, _T.AUTH})
_USER_PROPERTY_PACKETS = frozenset({
    _T.CONNECT, _T.CONNACK, _T.PUBLISH, WILL_PROPERTIES, _T.PUBACK, _T.PUBREC, _T.PUBREL,
    _T.PUBCOMP, _T.SUBSCRIBE, _T.SUBACK, _T.UNSUBSCRIBE, _T.UNSUBACK, _T.DISCONNECT, _T.AUTH})
_P = PropertyType

PROPERTY_TABLE: Final[tuple[PropertySpec, ...]] = (
    PropertySpec(0x01, "Payload Format Indicator", "payload_format_indicator", _P.BYTE,
                 _PUB_WILL, maximum=1, section="3.3.2.3.2"),
    PropertySpec(0x02, "Message Expiry Interval", "message_expiry_interval", _P.FOUR_BYTE_INT,
                 _PUB_WILL, section="3.3.2.3.3"),
    PropertySpec(0x03, "Content Type", "content_type", _P.UTF8_STRING, _PUB_WILL,
                 section="3.3.2.3.9"),
    PropertySpec(0x08, "Response Topic", "response_topic", _P.UTF8_STRING, _PUB_WILL,
                 section="3.3.2.3.5"),
    PropertySpec(0x09, "Correlation Data", "correlation_data", _P.BINARY, _PUB_WILL,
                 section="3.3.2.3.6"),
    PropertySpec(0x0B, "Subscription Identifier", "subscription_identifiers", _P.VARINT,
                 frozenset({_T.PUBLISH, _T.SUBSCRIBE}), repeatable_in=frozenset({_T.PUBLISH}),
                 minimum=1, maximum=MAX_VARINT, section="3.8.2.1.2"),
    PropertySpec(0x11, "Session Expiry Interval", "session_expiry_interval", _P.FOUR_BYTE_INT,
                 frozenset({_T.CONNECT, _T.CONNACK, _T.DISCONNECT}), section="3.1.2.11.2"),
    PropertySpec(0x12, "Assigned Client Identifier", "assigned_client_identifier",
                 _P.UTF8_STRING, frozenset({_T.CONNACK}), section="3.2.2.3.7"),
    PropertySpec(0x13, "Server Keep Alive", "server_keep_alive", _P.TWO_BYTE_INT,
                 frozenset({_T.CONNACK}), section="3.2.2.3.14"),
    PropertySpec(0x15, "Authentication Method", "authentication_method", _P.UTF8_STRING,
                 frozenset({_T.CONNECT, _T.CONNACK, _T.AUTH}), section="3.1.2.11.9"),
    PropertySpec(0x16, "Authentication Data", "authentication_data", _P.BINARY,
                 frozenset({_T.CONNECT, _T.CONNACK, _T.AUTH}), section="3.1.2.11.10"),
    PropertySpec(0x17, "Request Problem Information", "request_problem_information", _P.BYTE,
                 frozenset({_T.CONNECT}), maximum=1, section="3.1.2.11.7"),
    PropertySpec(0x18, "Will Delay Interval", "will_delay_interval", _P.FOUR_BYTE_INT,
                 frozenset({WILL_PROPERTIES}), section="3.1.3.2.2"),
    PropertySpec(0x19, "Request Response Information", "request_response_information",
                 _P.BYTE, frozenset({_T.CONNECT}), maximum=1, section="3.1.2.11.6"),
    PropertySpec(0x1A, "Response Information", "response_information", _P.UTF8_STRING,
                 frozenset({_T.CONNACK}), section="3.2.2.3.15"),
    PropertySpec(0x1C, "Server Reference", "server_reference", _P.UTF8_STRING,
                 frozenset({_T.CONNACK, _T.DISCONNECT}), section="3.2.2.3.16"),
    PropertySpec(0x1F, "Reason String", "reason_string", _P.UTF8_STRING,
                 _ACKS_WITH_REASON_STRING, section="3.2.2.3.9"),
    PropertySpec(0x21, "Receive Maximum", "receive_maximum", _P.TWO_BYTE_INT,
                 frozenset({_T.CONNECT, _T.CONNACK}), minimum=1, section="3.1.2.11.3"),
    PropertySpec(0x22, "Topic Alias Maximum", "topic_alias_maximum", _P.TWO_BYTE_INT,
                 frozenset({_T.CONNECT, _T.CONNACK}), section="3.1.2.11.5"),
    PropertySpec(0x23, "Topic Alias", "topic_alias", _P.TWO_BYTE_INT, frozenset({_T.PUBLISH}),
                 minimum=1, section="3.3.2.3.4"),
    PropertySpec(0x24, "Maximum QoS", "maximum_qos", _P.BYTE, frozenset({_T.CONNACK}),
                 maximum=1, section="3.2.2.3.4"),
    PropertySpec(0x25, "Retain Available", "retain_available", _P.BYTE,
                 frozenset({_T.CONNACK}), maximum=1, section="3.2.2.3.5"),
    PropertySpec(0x26, "User Property", "user_properties", _P.UTF8_PAIR,
                 _USER_PROPERTY_PACKETS, repeatable_in=_USER_PROPERTY_PACKETS,
                 section="3.1.2.11.8"),
    PropertySpec(0x27, "Maximum Packet Size", "maximum_packet_size", _P.FOUR_BYTE_INT,
                 frozenset({_T.CONNECT, _T.CONNACK}), minimum=1, section="3.1.2.11.4"),
    PropertySpec(0x28, "Wildcard Subscription Available", "wildcard_subscription_available",
                 _P.BYTE, frozenset({_T.CONNACK}), maximum=1, section="3.2.2.3.11"),
    PropertySpec(0x29, "Subscription Identifier Available",
                 "subscription_identifier_available", _P.BYTE, frozenset({_T.CONNACK}),
                 maximum=1, section="3.2.2.3.12"),
    PropertySpec(0x2A, "Shared Subscription Available", "shared_subscription_available",
                 _P.BYTE, frozenset({_T.CONNACK}), maximum=1, section="3.2.2.3.13"),
)

PROPERTIES_BY_ID: Final[dict[int, PropertySpec]] = {spec.id: spec for spec in PROPERTY_TABLE}


def allowed_properties(packet_type: int) -> frozenset[int]:
    """The property identifiers valid in `packet_type` (or `WILL_PROPERTIES`)."""
    return frozenset(spec.id for spec in PROPERTY_TABLE if packet_type in spec.packets)


@dataclass(slots=True, repr=False)
class Properties:
    """The properties of one packet (or of a will). None means absent.

    Absent and default are kept apart on purpose: the broker must forward a PUBLISH's properties
    unaltered [MQTT-3.3.2-4, 3.3.2-15..20], so "Payload Format Indicator 0 was sent" and
    "nothing was sent" must both survive a round trip. User Properties keep their order, which
    the spec requires when forwarding [MQTT-3.3.2-18, MQTT-3.1.3-10].
    """

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: int | None = None
    will_delay_interval: int | None = None
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    maximum_packet_size: int | None = None
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None
    user_properties: list[tuple[str, str]] = field(default_factory=list)
    subscription_identifiers: list[int] = field(default_factory=list)

    def is_empty(self) -> bool:
        """True when no property is present (the block encodes to the single byte 0x00)."""
        return (_get_scalars(self) == _ALL_ABSENT and not self.user_properties
                and not self.subscription_identifiers)

    def __repr__(self) -> str:
        # Only what is present: 27 "=None" fields would bury the one that matters in logs and
        # test failures.
        shown = [f"{spec.attr}={value!r}"
                 for spec, value in zip(_SCALAR_SPECS, _get_scalars(self), strict=True)
                 if value is not None]
        if self.subscription_identifiers:
            shown.append(f"subscription_identifiers={self.subscription_identifiers!r}")
        if self.user_properties:
            shown.append(f"user_properties={self.user_properties!r}")
        return f"Properties({', '.join(shown)})"


# Single-valued properties, in identifier order, fetched in one C-level call: checking that a
# Properties is empty is then one tuple comparison instead of 25 attribute reads in Python.
_SCALAR_SPECS: Final = tuple(spec for spec in PROPERTY_TABLE if not spec.repeatable)
_get_scalars = attrgetter(*(spec.attr for spec in _SCALAR_SPECS))
_ALL_ABSENT: Final = (None,) * len(_SCALAR_SPECS)

# Indexed by the identifier byte: one tuple index per property instead of a dict lookup.
_SPEC_BY_BYTE: Final[tuple[PropertySpec | None, ...]] = tuple(
    PROPERTIES_BY_ID.get(ident) for ident in range(256))
# Per spec, the packets as a bitmask over packet type numbers, tested with one AND.
_ALLOWED_MASK: Final[dict[int, int]] = {
    spec.id: sum(1 << packet for packet in spec.packets) for spec in PROPERTY_TABLE}
_REPEAT_MASK: Final[dict[int, int]] = {
    spec.id: sum(1 << packet for packet in spec.repeatable_in) for spec in PROPERTY_TABLE}

EMPTY_PROPERTIES: Final = b"\x00"
"""An empty property block: Property Length 0 [MQTT-2.2.2-1]."""


def context_name(packet_type: int) -> str:
    """'PUBLISH', 'CONNECT', ... or 'Will Properties', for error messages."""
    if packet_type == WILL_PROPERTIES:
        return "Will Properties"
    return PacketType(packet_type).name


# -- Variable Byte Integer -------------------------------------------------------------------

def read_varint(frame: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """A Variable Byte Integer (§1.5.5) within frame[pos:end]: at most four bytes, and in its
    minimal form [MQTT-1.5.5-1] so that every value has exactly one encoding."""
    value = 0
    shift = 0
    while True:
        if pos >= end:
            raise MalformedPacket(f"packet ends inside the {what}")
        byte = frame[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and shift:
                raise MalformedPacket(f"{what} is not minimally encoded", "MQTT-1.5.5-1")
            return value, pos
        shift += 7
        if shift == 28:
            raise MalformedPacket(f"{what} is longer than four bytes", "MQTT-1.5.5-1")


# -- decoding --------------------------------------------------------------------------------

def _protocol_error(message: str, rule: str, reason_code: int | None = None) -> ProtocolError:
    """A ProtocolError, optionally carrying the more specific reason code the spec names."""
    error = ProtocolError(message, rule)
    if reason_code is not None:
        error.reason_code = reason_code
    return error


def decode_properties(frame: bytes, pos: int, end: int, packet_type: int,
                      max_user_properties: int = DEFAULT_MAX_USER_PROPERTIES,
                      ) -> tuple[Properties, int]:
    """Read a Property Length and the properties it covers, starting at frame[pos].

    `end` is where the packet (or the field holding the block) ends; `packet_type` is a
    `PacketType` value or `WILL_PROPERTIES`. Returns the properties and the position just
    past the block. Raises `MalformedPacket` or `ProtocolError` as described in the module
    docstring; nothing else.
    """
    if pos >= end:
        # The Property Length is mandatory wherever properties exist [MQTT-2.2.2-1].
        raise MalformedPacket(f"{context_name(packet_type)} ends before the property length",
                              "MQTT-2.2.2-1")
    length = frame[pos]
    if length == 0:
        return Properties(), pos + 1
    if length < 0x80:
        pos += 1
    else:
        length, pos = read_varint(frame, pos, end, "property length")
    stop = pos + length
    if stop > end:
        raise MalformedPacket(f"property length {length} runs past the end of "
                              f"{context_name(packet_type)}", "§2.2.2.1")
    props = Properties()
    user_properties = props.user_properties
    bit = 1 << packet_type
    while pos < stop:
        # Identifiers are Variable Byte Integers, but all are below 0x80 (§2.2.2.2 comment): a
        # first byte >= 0x80 is either an unknown identifier or a non-minimal encoding of a
        # known one, malformed both ways.
        ident = frame[pos]
        pos += 1
        spec = _SPEC_BY_BYTE[ident]
        if spec is None:
            raise MalformedPacket(f"unknown property identifier {ident:#04x} in "
                                  f"{context_name(packet_type)}", "§2.2.2.2")
        if not _ALLOWED_MASK[ident] & bit:
            raise MalformedPacket(f"{spec.name} is not valid in {context_name(packet_type)}",
                                  "§2.2.2.2")
        kind = spec.type
        if kind is PropertyType.UTF8_PAIR:
            if len(user_properties) >= max_user_properties:
                raise _protocol_error(
                    f"more than {max_user_properties} User Properties in "
                    f"{context_name(packet_type)}", "CVE-2021-41039",
                    ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR)
            name, pos = read_string(frame, pos, stop, "User Property name")
            text, pos = read_string(frame, pos, stop, "User Property value")
            user_properties.append((name, text))
            continue
        if kind is PropertyType.UTF8_STRING or kind is PropertyType.BINARY:
            if getattr(props, spec.attr) is not None:
                raise _protocol_error(f"{spec.name} included more than once in "
                                      f"{context_name(packet_type)}", f"§{spec.section}")
            data: str | bytes
            if kind is PropertyType.UTF8_STRING:
                data, pos = read_string(frame, pos, stop, spec.name)
                if ident == PropertyId.RESPONSE_TOPIC:
                    _check_response_topic(data)
            else:
                data, pos = read_binary(frame, pos, stop, spec.name)
            setattr(props, spec.attr, data)
            continue

        number: int
        if kind is PropertyType.BYTE:
            if pos >= stop:
                raise MalformedPacket(f"{spec.name} runs past the property block", "§2.2.2.1")
            number = frame[pos]
            pos += 1
        elif kind is PropertyType.TWO_BYTE_INT:
            if pos + 2 > stop:
                raise MalformedPacket(f"{spec.name} runs past the property block", "§2.2.2.1")
            number = (frame[pos] << 8) | frame[pos + 1]
            pos += 2
        elif kind is PropertyType.FOUR_BYTE_INT:
            if pos + 4 > stop:
                raise MalformedPacket(f"{spec.name} runs past the property block", "§2.2.2.1")
            number = int.from_bytes(frame[pos:pos + 4], "big")
            pos += 4
        else:
            number, pos = read_varint(frame, pos, stop, spec.name)
        if spec.minimum is not None and number < spec.minimum:
            # Topic Alias 0: "a Protocol Error, the receiver uses DISCONNECT with Reason Code of
            # 0x94 (Topic Alias invalid)" (§3.3.4, [MQTT-3.3.2-8]).
            reason = ReasonCode.TOPIC_ALIAS_INVALID if ident == PropertyId.TOPIC_ALIAS else None
            raise _protocol_error(f"{spec.name} {number} is below {spec.minimum}",
                                  f"§{spec.section}", reason)
        if spec.maximum is not None and number > spec.maximum:
            raise _protocol_error(f"{spec.name} {number} is above {spec.maximum}",
                                  f"§{spec.section}")
        if ident == PropertyId.SUBSCRIPTION_IDENTIFIER:
            identifiers = props.subscription_identifiers
            if identifiers and not _REPEAT_MASK[ident] & bit:
                raise _protocol_error(f"{spec.name} included more than once in "
                                      f"{context_name(packet_type)}", f"§{spec.section}")
            identifiers.append(number)
            continue
        if getattr(props, spec.attr) is not None:
            raise _protocol_error(f"{spec.name} included more than once in "
                                  f"{context_name(packet_type)}", f"§{spec.section}")
        setattr(props, spec.attr, number)

    if props.authentication_data is not None and props.authentication_method is None:
        raise _protocol_error("Authentication Data without an Authentication Method",
                              "§3.1.2.11.10")
    return props, stop


def _check_response_topic(topic: str) -> None:
    """A Response Topic is the Topic Name of a future PUBLISH, so it obeys the same rules: no
    wildcards [MQTT-3.3.2-14] and at least one character [MQTT-4.7.3-1]. Refusing it here
    keeps a responder from being handed a topic it can never publish to."""
    if not topic:
        raise _protocol_error("empty Response Topic", "MQTT-4.7.3-1")
    if "+" in topic or "#" in topic:
        raise _protocol_error(f"wildcard in Response Topic {topic!r}", "MQTT-3.3.2-14")


# -- encoding --------------------------------------------------------------------------------

def _encode_value(spec: PropertySpec, value: int | str | bytes) -> bytes:
    ident = bytes((spec.id,))
    if isinstance(value, str):
        return ident + encode_string(value)
    if isinstance(value, bytes):
        return ident + encode_binary(value)
    kind = spec.type
    if kind is PropertyType.BYTE:
        return bytes((spec.id, value))
    if kind is PropertyType.TWO_BYTE_INT:
        return ident + value.to_bytes(2, "big")
    if kind is PropertyType.FOUR_BYTE_INT:
        return ident + value.to_bytes(4, "big")
    return ident + encode_varint(value)


_USER_PROPERTY_ID: Final = bytes((PropertyId.USER_PROPERTY,))
_SUBSCRIPTION_IDENTIFIER_ID: Final = bytes((PropertyId.SUBSCRIPTION_IDENTIFIER,))


def encode_properties(props: Properties) -> bytes:
    """Property Length + properties, in identifier order (User Properties in their own order).

    The encoder trusts its caller, the broker: it does not re-check the table's rules, and a
    value that does not fit its type raises ValueError or OverflowError. An empty `Properties`
    returns the shared `EMPTY_PROPERTIES` after one tuple comparison, so the common case (acks,
    PUBLISH without properties) allocates nothing.
    """
    values = _get_scalars(props)
    user_properties = props.user_properties
    identifiers = props.subscription_identifiers
    if values == _ALL_ABSENT and not user_properties and not identifiers:
        return EMPTY_PROPERTIES
    parts: list[bytes] = []
    for spec, value in zip(_SCALAR_SPECS, values, strict=True):
        if spec.id > PropertyId.SUBSCRIPTION_IDENTIFIER and identifiers:
            parts.extend(_SUBSCRIPTION_IDENTIFIER_ID + encode_varint(ident)
                         for ident in identifiers)
            identifiers = []
        if spec.id > PropertyId.USER_PROPERTY and user_properties:
            parts.extend(_USER_PROPERTY_ID + encode_string(name) + encode_string(text)
                         for name, text in user_properties)
            user_properties = []
        if value is not None:
            parts.append(_encode_value(spec, value))
    body = b"".join(parts)
    return encode_varint(len(body)) + body
