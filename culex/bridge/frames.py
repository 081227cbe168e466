"""A PUBLISH on its way out of a bridge: the frame the session made, as the remote must get it.

The bridge's session is an MQTT 5 subscriber (its subscriptions carry No Local), so every
PUBLISH it is given is an MQTT 5 frame: head and topic, [packet id], properties, payload, in
one piece or in the pieces routing shares between subscribers. For the remote it gets the
remote's topic (one prefix off, the other on), loses RETAIN when the remote has no retained
messages, and for a 3.1.1 remote loses its properties. Head and topic are made anew; the
packet id (the session's), the properties and the payload go on as they are.
"""

from __future__ import annotations

from collections.abc import Callable

from ..protocol.codec import publish_head
from ..protocol.properties import read_varint
from ..protocol.publish import body_offset, publish_fields
from ..protocol.v5 import publish_head_v5


def for_remote(frames: list[bytes], remote_topic: Callable[[str], str], *, v5: bool,
               retain_available: bool) -> list[bytes]:
    """The pieces of the PUBLISH the remote is sent for the local MQTT 5 PUBLISH `frames`."""
    frame = frames[0] if len(frames) == 1 else b"".join(frames)
    first = frame[0]
    pos = body_offset(frame)
    qos, topic_end, _, after = publish_fields(first, frame, pos)
    length, props_start = read_varint(frame, after, len(frame), "property length")
    payload_at = props_start + length
    topic = remote_topic(frame[pos + 2:topic_end].decode()).encode()
    payload = frame[payload_at:]
    packet_id = frame[topic_end:after]
    if not retain_available:
        first &= 0xFE  # the remote refuses RETAIN 1 (0x9A): the message still goes
    if v5:
        properties = frame[after:payload_at]
        return [publish_head_v5(topic, len(payload), first, properties), packet_id, properties,
                payload]
    return [publish_head(topic, len(payload), first), packet_id, payload] if qos \
        else [publish_head(topic, len(payload), first), payload]
