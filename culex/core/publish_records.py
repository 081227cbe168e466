"""The PUBLISH record of the links between workers and between cluster members
(worker_links.py): a QoS 1/2 or retained message with what the receiver needs to deliver it as
the publishing side would have, encoded once for every receiver.

Layout: flags (QoS, retain, shared target), the retained stamp (in a cluster also the
message's cluster-wide id), its age in seconds, the lengths of the shared group's name and
filter, of the topic and of the property block; then those fields, then the payload.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..protocol.packets import PacketType
from ..protocol.properties import decode_properties, encode_properties
from .message import Message

PUBLISH_HEAD = struct.Struct(">BQdHHHI")
RETAIN_FLAG = 0x04
SHARED_FLAG = 0x08


@dataclass(slots=True)
class PublishRecord:
    message: Message
    stamp: int
    # The shared subscription (group name, filter) the receiver picks a member of; None: its
    # own subscribers.
    group: tuple[str, str] | None


def encode_publish(message: Message, stamp: int, group: tuple[str, str] | None,
                   now: float) -> bytes:
    """A PUBLISH record's body (`worker_links.record` frames it)."""
    properties = b"" if message.properties is None else encode_properties(message.properties)
    name, inner = (b"", b"") if group is None else (group[0].encode(), group[1].encode())
    flags = message.qos | (RETAIN_FLAG if message.retain else 0) \
        | (SHARED_FLAG if group is not None else 0)
    head = PUBLISH_HEAD.pack(flags, stamp, now - message.created, len(name), len(inner),
                             len(message.topic_bytes), len(properties))
    return b"".join((head, name, inner, message.topic_bytes, properties, message.payload))


def decode_publish(body: bytes, now: float) -> PublishRecord:
    """`encode_publish` undone: the message (its cluster id the stamp, its age counted on
    from `now`)."""
    flags, stamp, age, name_length, filter_length, topic_length, properties_length = \
        PUBLISH_HEAD.unpack_from(body)
    pos = PUBLISH_HEAD.size
    name = body[pos:pos + name_length].decode()
    pos += name_length
    inner = body[pos:pos + filter_length].decode()
    pos += filter_length
    topic_bytes = body[pos:pos + topic_length]
    pos += topic_length
    properties = None if not properties_length else decode_properties(
        body, pos, pos + properties_length, PacketType.PUBLISH)[0]
    pos += properties_length
    message = Message(topic_bytes.decode(), body[pos:], flags & 0x03,
                      bool(flags & RETAIN_FLAG), topic_bytes=topic_bytes,
                      properties=properties, created=now - age)
    message.cluster_id = stamp
    return PublishRecord(message, stamp, (name, inner) if flags & SHARED_FLAG else None)
