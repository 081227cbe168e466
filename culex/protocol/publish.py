"""The one PUBLISH and acknowledgement parser: where the fields of these packets lie in a frame.

The broker's hot path reads a PUBLISH without building a packet object: it needs the QoS, the
topic's bytes (a cache key for the decoded, validated name), the packet id and where the
payload starts. The general decoders (`codec.decode_publish`, `v5.decode_packet_v5`) are built
on the same functions, so the checks here are the ones every path makes, and the property
tests compare the two over arbitrary input.

Positions, not copies: a frame is the packet's bytes from its fixed header on, and `pos` the
offset of its variable header (`reader.Frame`).
"""

from __future__ import annotations

from .errors import MalformedPacket, ProtocolError


def publish_fields(first: int, frame: bytes, pos: int) -> tuple[int, int, int, int]:
    """(qos, topic end, packet id, position after them) of a PUBLISH whose variable header
    starts at `pos`; the topic's bytes are `frame[pos + 2:topic_end]`. The topic is not
    decoded here: the caller validates each distinct name once (`topics.validate_topic_name`).

    Raises MalformedPacket or ProtocolError as §3.3 demands of the fixed header, the topic
    length and the packet id."""
    qos = (first >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3", "MQTT-3.3.1-4")
    if first & 0x08 and not qos:
        raise MalformedPacket("PUBLISH with DUP set at QoS 0", "MQTT-3.3.1-2")
    end = len(frame)
    if pos + 2 > end:
        raise MalformedPacket("PUBLISH ends before the topic name")
    stop = pos + 2 + ((frame[pos] << 8) | frame[pos + 1])
    if stop > end:
        raise MalformedPacket("topic name runs past the packet end")
    if not qos:
        return 0, stop, 0, stop
    if stop + 2 > end:
        raise MalformedPacket("PUBLISH ends before the packet identifier")
    packet_id = (frame[stop] << 8) | frame[stop + 1]
    if not packet_id:
        raise ProtocolError("packet identifier 0 in PUBLISH", "MQTT-2.3.1-1")
    return qos, stop, packet_id, stop + 2


def ack_packet_id(first: int, frame: bytes, pos: int, flags: int, name: str) -> int:
    """The packet id of a 3.1.1 PUBACK, PUBREC, PUBREL or PUBCOMP (or UNSUBACK): `flags` are
    the fixed-header flags the type requires, and the body is exactly the 2-byte id."""
    if first & 0x0F != flags:
        raise MalformedPacket(f"{name} fixed-header flags {first & 0x0F:#06b}, must be "
                              f"{flags:#06b}", "MQTT-2.2.2-2")
    if len(frame) - pos != 2:
        raise MalformedPacket(f"{name} remaining length must be 2")
    packet_id = (frame[pos] << 8) | frame[pos + 1]
    if not packet_id:
        raise ProtocolError(f"packet identifier 0 in {name}", "MQTT-2.3.1-1")
    return packet_id


def body_offset(frame: bytes) -> int:
    """Where the variable header starts in a whole frame: after the first byte and the 1-4
    bytes of Remaining Length (the frame is known to be well formed)."""
    pos = 1
    while frame[pos] & 0x80:
        pos += 1
    return pos + 1


def topic_span(frame: bytes) -> tuple[int, int]:
    """(start, stop) of the topic name in a well-formed PUBLISH frame."""
    pos = body_offset(frame)
    return pos + 2, pos + 2 + ((frame[pos] << 8) | frame[pos + 1])


def qos0_payload_offset(frame: bytes, v5: bool) -> int:
    """Where the payload starts in a well-formed QoS 0 PUBLISH frame: after the topic and,
    for MQTT 5, an empty property block (the only kind the forwarding path carries)."""
    return topic_span(frame)[1] + (1 if v5 else 0)
