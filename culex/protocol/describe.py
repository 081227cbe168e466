"""Packets, payloads and properties as JSON-ready dicts: what the admin API and the packet trace
show a person.

Decoding is the codec's (`codec.decode_packet`, `v5.decode_packet_v5`), so a trace shows what
the broker itself reads. What a person must not see is left out or shortened here, in one
place: a CONNECT's password and every Authentication Data appear only as "present" or as a
length, and a payload is cut at `payload_limit` bytes unless the caller asks for all of it.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from .codec import decode_packet
from .errors import MQTTError
from .packets import (
    Connack,
    ConnackCode,
    Connect,
    PacketType,
    Publish,
    Suback,
    Subscribe,
    Unsubscribe,
)
from .packets5 import (
    Connack5,
    Connect5,
    Publish5,
    Suback5,
    Subscribe5,
    Unsuback5,
    Unsubscribe5,
)
from .properties import Properties
from .publish import body_offset
from .reasons import reason_name
from .v5 import decode_connect_any, decode_packet_v5

# What a payload is cut to unless all of it is asked for: enough to recognise a message,
# little enough that a list of a thousand stays small.
PAYLOAD_PREVIEW = 256

PROTOCOL_NAMES = {3: "3.1", 4: "3.1.1", 5: "5.0"}

JSON = dict[str, Any]


def protocol_name(level: int) -> str:
    """"3.1", "3.1.1" or "5.0" for a CONNECT's protocol level."""
    return PROTOCOL_NAMES.get(level, str(level))


def payload_fields(payload: bytes, limit: int | None = PAYLOAD_PREVIEW) -> JSON:
    """`payload` (text when it is UTF-8, else `payload_base64`), its size, and whether it
    was cut to `limit` bytes (None: never)."""
    shown = payload if limit is None else payload[:limit]
    truncated = len(shown) < len(payload)
    fields: JSON = {"payload_size": len(payload), "truncated": truncated}
    try:
        fields["payload"] = shown.decode()
    except UnicodeDecodeError as exc:
        # A cut may split the last character of a text: shown without it, still as text.
        if truncated and exc.reason == "unexpected end of data":
            fields["payload"] = shown[:exc.start].decode()
        else:
            fields["payload"] = None
            fields["payload_base64"] = base64.b64encode(shown).decode()
    return fields


def properties_fields(properties: Properties | None) -> JSON | None:
    """The properties that are present, by their attribute names; binary values in base64,
    Authentication Data as its length only."""
    if properties is None or properties.is_empty():
        return None
    shown: JSON = {}
    for field in dataclasses.fields(properties):
        value = getattr(properties, field.name)
        if value is None or value == []:
            continue
        if field.name == "authentication_data":
            shown["authentication_data_length"] = len(value)
        elif isinstance(value, bytes):
            shown[field.name] = base64.b64encode(value).decode()
        elif field.name == "user_properties":
            shown[field.name] = [list(pair) for pair in value]
        else:
            shown[field.name] = value
    return shown


def describe_frame(frame: bytes, *, v5: bool, from_client: bool,
                   payload_limit: int | None = PAYLOAD_PREVIEW) -> JSON:
    """One whole frame as {"type": "PUBLISH", "size": ..., fields...}. A frame the codec
    refuses is described by its type and the codec's error, never raised."""
    first = frame[0]
    packet_type = first >> 4
    try:
        name = PacketType(packet_type).name
    except ValueError:
        name = f"type {packet_type}"
    described: JSON = {"type": name, "size": len(frame)}
    try:
        offset = body_offset(frame)
        if packet_type == PacketType.CONNECT:
            packet: Any = decode_connect_any(first, frame, offset)
        elif v5:
            packet = decode_packet_v5(first, frame, offset, from_client=from_client)
        else:
            packet = decode_packet(first, frame, offset)
    except MQTTError as exc:
        described["error"] = str(exc)
        return described
    described.update(_packet_fields(packet, packet_type, payload_limit))
    return described


def _packet_fields(packet: Any, packet_type: int, payload_limit: int | None) -> JSON:
    if isinstance(packet, Connect | Connect5):
        return connect_fields(packet)
    if isinstance(packet, Publish | Publish5):
        fields: JSON = {"topic": packet.topic, "qos": packet.qos, "retain": packet.retain,
                        "dup": packet.dup}
        if packet.qos:
            fields["packet_id"] = packet.packet_id
        fields.update(payload_fields(packet.payload, payload_limit))
    elif isinstance(packet, Subscribe):
        fields = {"packet_id": packet.packet_id,
                  "subscriptions": [{"topic_filter": topic_filter, "qos": qos}
                                    for topic_filter, qos in packet.topics]}
    elif isinstance(packet, Subscribe5):
        fields = {"packet_id": packet.packet_id, "subscriptions": [
            {"topic_filter": sub.topic_filter, "qos": sub.qos, "no_local": sub.no_local,
             "retain_as_published": sub.retain_as_published,
             "retain_handling": sub.retain_handling} for sub in packet.subscriptions]}
    elif isinstance(packet, Unsubscribe | Unsubscribe5):
        fields = {"packet_id": packet.packet_id, "filters": list(packet.filters)}
    elif isinstance(packet, Suback):
        fields = {"packet_id": packet.packet_id, "reason_codes": list(packet.return_codes)}
    elif isinstance(packet, Suback5 | Unsuback5):
        fields = {"packet_id": packet.packet_id, "reason_codes": list(packet.reason_codes)}
    elif isinstance(packet, Connack):
        fields = {"session_present": packet.session_present,
                  "reason_code": packet.return_code}
    elif isinstance(packet, Connack5):
        fields = {"session_present": packet.session_present, "reason_code": packet.reason_code}
    else:  # acks, PINGREQ/PINGRESP, DISCONNECT, AUTH: a packet id and a reason code at most
        fields = {name: getattr(packet, name) for name in ("packet_id", "reason_code")
                  if hasattr(packet, name)}
    code = fields.get("reason_code")
    if isinstance(packet, Connack):
        try:
            fields["reason"] = ConnackCode(packet.return_code).name.lower().replace("_", " ")
        except ValueError:
            fields["reason"] = f"return code {packet.return_code}"
    elif code is not None:
        fields["reason"] = reason_name(code, packet_type)
    properties = properties_fields(getattr(packet, "properties", None))
    if properties is not None:
        fields["properties"] = properties
    return fields


def connect_fields(packet: Connect | Connect5) -> JSON:
    """A CONNECT without its password (only whether one was sent)."""
    fields: JSON = {
        "client_id": packet.client_id,
        "protocol": protocol_name(packet.protocol_level),
        "clean_start": (packet.clean_start if isinstance(packet, Connect5)
                        else packet.clean_session),
        "keepalive": packet.keepalive,
        "username": packet.username,
        "password": packet.password is not None,
    }
    will = packet.will
    if will is not None:
        fields["will"] = {"topic": will.topic, "qos": will.qos, "retain": will.retain,
                          **payload_fields(will.payload)}
    if isinstance(packet, Connect5):
        properties = properties_fields(packet.properties)
        if properties is not None:
            fields["properties"] = properties
    return fields
