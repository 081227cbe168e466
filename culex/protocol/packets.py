"""Packet objects for MQTT 3.1 / 3.1.1, one small slotted class per control packet type.

They are plain data: validation lives in the decoder, behaviour in the broker core. Slots keep
each instance small and attribute access fast on the hot path (one Publish per inbound message).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class ConnackCode(IntEnum):
    """CONNACK return codes of MQTT 3.1.1 §3.2.2.3."""

    ACCEPTED = 0x00
    UNACCEPTABLE_PROTOCOL_VERSION = 0x01
    IDENTIFIER_REJECTED = 0x02
    SERVER_UNAVAILABLE = 0x03
    BAD_USERNAME_OR_PASSWORD = 0x04
    NOT_AUTHORIZED = 0x05


SUBACK_FAILURE = 0x80

# Protocol name -> the only level valid with it. MQTT 3.1 said "MQIsdp" level 3; 3.1.1 says
# "MQTT" level 4; MQTT 5.0 keeps "MQTT" with level 5.
PROTOCOL_LEVELS: dict[str, frozenset[int]] = {"MQIsdp": frozenset({3}), "MQTT": frozenset({4})}

# Set in a 3.1/3.1.1 CONNECT's protocol level by a broker's bridge (Mosquitto's `try_private`,
# also understood by IBM's brokers, RSMB and VerneMQ): the client is another broker, so it is
# not sent back what it published and gets RETAIN as published (Mosquitto's semantics).
BRIDGE_LEVEL_BIT = 0x80


@dataclass(slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


@dataclass(slots=True)
class Connect:
    client_id: str
    protocol_name: str = "MQTT"
    protocol_level: int = 4
    clean_session: bool = True
    keepalive: int = 60
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None
    # The protocol level carried BRIDGE_LEVEL_BIT (`protocol_level` is without it).
    bridge: bool = False


@dataclass(slots=True)
class Connack:
    session_present: bool
    return_code: int


@dataclass(slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int = 0


@dataclass(slots=True)
class Puback:
    packet_id: int


@dataclass(slots=True)
class Pubrec:
    packet_id: int


@dataclass(slots=True)
class Pubrel:
    packet_id: int


@dataclass(slots=True)
class Pubcomp:
    packet_id: int


@dataclass(slots=True)
class Subscribe:
    packet_id: int
    topics: list[tuple[str, int]] = field(default_factory=list)


@dataclass(slots=True)
class Suback:
    packet_id: int
    return_codes: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Unsubscribe:
    packet_id: int
    filters: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Unsuback:
    packet_id: int


@dataclass(slots=True)
class Pingreq:
    pass


@dataclass(slots=True)
class Pingresp:
    pass


@dataclass(slots=True)
class Disconnect:
    pass


Packet = (
    Connect | Connack | Publish | Puback | Pubrec | Pubrel | Pubcomp | Subscribe | Suback
    | Unsubscribe | Unsuback | Pingreq | Pingresp | Disconnect
)
