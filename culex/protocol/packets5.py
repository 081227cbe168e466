"""MQTT 5.0 packets as values: what `v5.py` decodes into and encodes from.

The 3.1/3.1.1 packets are in `packets.py`; MQTT 5 packets carry properties (`properties.py`)
and reason codes (`reasons.py`), and there is one more packet, AUTH.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .packets import Pingreq, Pingresp
from .properties import Properties
from .reasons import ReasonCode

PROTOCOL_LEVEL_5: Final = 5

# Plain slotted data like packets.py; validation lives in the decoders. `properties` defaults
# to a fresh empty Properties so a packet can be built without thinking about them.

@dataclass(slots=True)
class Will5:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class Connect5:
    client_id: str
    clean_start: bool = True
    keepalive: int = 60
    will: Will5 | None = None
    username: str | None = None
    password: bytes | None = None
    properties: Properties = field(default_factory=Properties)

    protocol_name = "MQTT"
    protocol_level = PROTOCOL_LEVEL_5


@dataclass(slots=True)
class Connack5:
    session_present: bool = False
    reason_code: int = ReasonCode.SUCCESS
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class Publish5:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int = 0
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class Puback5:
    packet_id: int
    reason_code: int = ReasonCode.SUCCESS
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class Pubrec5:
    packet_id: int
    reason_code: int = ReasonCode.SUCCESS
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class Pubrel5:
    packet_id: int
    reason_code: int = ReasonCode.SUCCESS
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class Pubcomp5:
    packet_id: int
    reason_code: int = ReasonCode.SUCCESS
    properties: Properties = field(default_factory=Properties)


@dataclass(frozen=True, slots=True)
class Subscription:
    """One Topic Filter of a SUBSCRIBE with its Subscription Options (§3.8.3.1)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0

    @property
    def options(self) -> int:
        """The Subscription Options byte."""
        return (self.qos | (0x04 if self.no_local else 0)
                | (0x08 if self.retain_as_published else 0) | (self.retain_handling << 4))


@dataclass(slots=True)
class Subscribe5:
    packet_id: int
    subscriptions: list[Subscription] = field(default_factory=list)
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class Suback5:
    packet_id: int
    reason_codes: list[int] = field(default_factory=list)
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class Unsubscribe5:
    packet_id: int
    filters: list[str] = field(default_factory=list)
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class Unsuback5:
    packet_id: int
    reason_codes: list[int] = field(default_factory=list)
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class Disconnect5:
    reason_code: int = ReasonCode.NORMAL_DISCONNECTION
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class Auth:
    reason_code: int = ReasonCode.SUCCESS
    properties: Properties = field(default_factory=Properties)


Ack5 = Puback5 | Pubrec5 | Pubrel5 | Pubcomp5

Packet5 = (
    Connect5 | Connack5 | Publish5 | Puback5 | Pubrec5 | Pubrel5 | Pubcomp5 | Subscribe5
    | Suback5 | Unsubscribe5 | Unsuback5 | Pingreq | Pingresp | Disconnect5 | Auth
)
