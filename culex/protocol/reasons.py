"""MQTT 5.0 reason codes (§2.4, Table 2-6) and the packets each may appear in.

A reason code is one byte; below 0x80 it reports success, from 0x80 up failure (§2.4). The
same value can have a different name per packet: 0x00 is "Success" in most packets, "Normal
disconnection" in DISCONNECT and "Granted QoS 0" in SUBACK. `ReasonCode` keeps all three names
(the later two are enum aliases of SUCCESS), and `reason_name` gives the one the spec uses for
a given packet, for logs and for the Reason String of a DISCONNECT.

The sender of each packet "MUST use one of the <packet> Reason Codes" ([MQTT-3.2.2-8],
[MQTT-3.4.2-1], [MQTT-3.5.2-1], [MQTT-3.6.2-1], [MQTT-3.7.2-1], [MQTT-3.9.3-2], [MQTT-3.11.3-2],
[MQTT-3.14.2-1], [MQTT-3.15.2-1]); the decoder in `v5.py` checks received codes against
`REASON_CODES_BY_PACKET`, built from the table below.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from .packets import ConnackCode, PacketType


class ReasonCode(IntEnum):
    """Every MQTT 5.0 reason code. Aliases share a value with an earlier member."""

    SUCCESS = 0x00
    NORMAL_DISCONNECTION = 0x00
    GRANTED_QOS_0 = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL_MESSAGE = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


@dataclass(frozen=True, slots=True)
class ReasonSpec:
    """One row of Table 2-6: a code, its name as the spec writes it, and where it may appear."""

    code: int
    name: str
    packets: frozenset[PacketType]


_T = PacketType
_CONNACK = frozenset({_T.CONNACK})
_DISCONNECT = frozenset({_T.DISCONNECT})
_CONNACK_DISCONNECT = frozenset({_T.CONNACK, _T.DISCONNECT})
_SUBACK_DISCONNECT = frozenset({_T.SUBACK, _T.DISCONNECT})
# 0x80, 0x83 and 0x87: every packet that can report a failure of the request it answers.
_GENERAL_FAILURE = frozenset({_T.CONNACK, _T.PUBACK, _T.PUBREC, _T.SUBACK, _T.UNSUBACK,
                              _T.DISCONNECT})

REASON_TABLE: Final[tuple[ReasonSpec, ...]] = (
    ReasonSpec(0x00, "Success", frozenset({_T.CONNACK, _T.PUBACK, _T.PUBREC, _T.PUBREL,
                                           _T.PUBCOMP, _T.UNSUBACK, _T.AUTH})),
    ReasonSpec(0x00, "Normal disconnection", _DISCONNECT),
    ReasonSpec(0x00, "Granted QoS 0", frozenset({_T.SUBACK})),
    ReasonSpec(0x01, "Granted QoS 1", frozenset({_T.SUBACK})),
    ReasonSpec(0x02, "Granted QoS 2", frozenset({_T.SUBACK})),
    ReasonSpec(0x04, "Disconnect with Will Message", _DISCONNECT),
    ReasonSpec(0x10, "No matching subscribers", frozenset({_T.PUBACK, _T.PUBREC})),
    ReasonSpec(0x11, "No subscription existed", frozenset({_T.UNSUBACK})),
    ReasonSpec(0x18, "Continue authentication", frozenset({_T.AUTH})),
    ReasonSpec(0x19, "Re-authenticate", frozenset({_T.AUTH})),
    ReasonSpec(0x80, "Unspecified error", _GENERAL_FAILURE),
    ReasonSpec(0x81, "Malformed Packet", _CONNACK_DISCONNECT),
    ReasonSpec(0x82, "Protocol Error", _CONNACK_DISCONNECT),
    ReasonSpec(0x83, "Implementation specific error", _GENERAL_FAILURE),
    ReasonSpec(0x84, "Unsupported Protocol Version", _CONNACK),
    ReasonSpec(0x85, "Client Identifier not valid", _CONNACK),
    ReasonSpec(0x86, "Bad User Name or Password", _CONNACK),
    ReasonSpec(0x87, "Not authorized", _GENERAL_FAILURE),
    ReasonSpec(0x88, "Server unavailable", _CONNACK),
    ReasonSpec(0x89, "Server busy", _CONNACK_DISCONNECT),
    ReasonSpec(0x8A, "Banned", _CONNACK),
    ReasonSpec(0x8B, "Server shutting down", _DISCONNECT),
    ReasonSpec(0x8C, "Bad authentication method", _CONNACK_DISCONNECT),
    ReasonSpec(0x8D, "Keep Alive timeout", _DISCONNECT),
    ReasonSpec(0x8E, "Session taken over", _DISCONNECT),
    ReasonSpec(0x8F, "Topic Filter invalid", frozenset({_T.SUBACK, _T.UNSUBACK, _T.DISCONNECT})),
    ReasonSpec(0x90, "Topic Name invalid", frozenset({_T.CONNACK, _T.PUBACK, _T.PUBREC,
                                                      _T.DISCONNECT})),
    ReasonSpec(0x91, "Packet Identifier in use", frozenset({_T.PUBACK, _T.PUBREC, _T.SUBACK,
                                                            _T.UNSUBACK})),
    ReasonSpec(0x92, "Packet Identifier not found", frozenset({_T.PUBREL, _T.PUBCOMP})),
    ReasonSpec(0x93, "Receive Maximum exceeded", _DISCONNECT),
    ReasonSpec(0x94, "Topic Alias invalid", _DISCONNECT),
    ReasonSpec(0x95, "Packet too large", _CONNACK_DISCONNECT),
    ReasonSpec(0x96, "Message rate too high", _DISCONNECT),
    ReasonSpec(0x97, "Quota exceeded", frozenset({_T.CONNACK, _T.PUBACK, _T.PUBREC, _T.SUBACK,
                                                  _T.DISCONNECT})),
    ReasonSpec(0x98, "Administrative action", _DISCONNECT),
    # CONNACK too: a will whose payload does not match its Payload Format Indicator (§3.1.3.2.3).
    ReasonSpec(0x99, "Payload format invalid", frozenset({_T.CONNACK, _T.PUBACK, _T.PUBREC,
                                                          _T.DISCONNECT})),
    ReasonSpec(0x9A, "Retain not supported", _CONNACK_DISCONNECT),
    ReasonSpec(0x9B, "QoS not supported", _CONNACK_DISCONNECT),
    ReasonSpec(0x9C, "Use another server", _CONNACK_DISCONNECT),
    ReasonSpec(0x9D, "Server moved", _CONNACK_DISCONNECT),
    ReasonSpec(0x9E, "Shared Subscriptions not supported", _SUBACK_DISCONNECT),
    ReasonSpec(0x9F, "Connection rate exceeded", _CONNACK_DISCONNECT),
    ReasonSpec(0xA0, "Maximum connect time", _DISCONNECT),
    ReasonSpec(0xA1, "Subscription Identifiers not supported", _SUBACK_DISCONNECT),
    ReasonSpec(0xA2, "Wildcard Subscriptions not supported", _SUBACK_DISCONNECT),
)


def _codes_by_packet() -> dict[int, frozenset[int]]:
    by_packet: dict[int, set[int]] = {}
    for spec in REASON_TABLE:
        for packet in spec.packets:
            by_packet.setdefault(packet, set()).add(spec.code)
    return {packet: frozenset(codes) for packet, codes in by_packet.items()}


REASON_CODES_BY_PACKET: Final[dict[int, frozenset[int]]] = _codes_by_packet()
"""Packet type -> the reason codes its sender may use. Packets without reason codes are absent."""

_NAMES: Final[dict[tuple[int, int], str]] = {
    (spec.code, packet): spec.name for spec in REASON_TABLE for packet in spec.packets}


def is_error(code: int) -> bool:
    """Whether a reason code reports failure: 0x80 and above (§2.4)."""
    return code >= 0x80


def is_allowed(code: int, packet_type: int) -> bool:
    """Whether `code` is one of the reason codes `packet_type` may carry."""
    return code in REASON_CODES_BY_PACKET.get(packet_type, frozenset())


def reason_name(code: int, packet_type: int | None = None) -> str:
    """The spec's name for `code` in `packet_type` ('Normal disconnection' for DISCONNECT 0x00).

    Without a packet type, or for a code the packet may not carry, the name of the first table
    row with that code; for a code not in the table at all, its hex value.
    """
    if packet_type is not None:
        name = _NAMES.get((code, packet_type))
        if name is not None:
            return name
    for spec in REASON_TABLE:
        if spec.code == code:
            return spec.name
    return f"unknown reason code {code:#04x}"


# A 3.1.1 CONNACK return code -> the MQTT 5 CONNACK reason code that says the same (§3.2.2.2).
V5_CONNACK_CODES: Final[dict[ConnackCode, int]] = {
    ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION: ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
    ConnackCode.IDENTIFIER_REJECTED: ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
    # max_connections: the server is fine, just full for now.
    ConnackCode.SERVER_UNAVAILABLE: ReasonCode.SERVER_BUSY,
    ConnackCode.BAD_USERNAME_OR_PASSWORD: ReasonCode.BAD_USER_NAME_OR_PASSWORD,
    ConnackCode.NOT_AUTHORIZED: ReasonCode.NOT_AUTHORIZED,
}
