"""MQTT 5 Topic Aliases, both ways, per connection only [MQTT-3.3.2-7].

From the client: a PUBLISH with a topic and an alias (re)defines the alias, one with an empty
topic uses it (`aliased_topic`); the alias is the publisher's shorthand and is never forwarded.
To the client, when its CONNECT allowed aliases and `[mqtt5] topic_alias_out = "first"`: the
connection becomes an `AliasingConnection`, which rewrites each PUBLISH as it is queued.
"""

from __future__ import annotations

from ..protocol.codec import encode_varint
from ..protocol.errors import MQTTError, ProtocolError
from ..protocol.properties import PropertyId, read_varint
from ..protocol.publish import topic_span
from ..protocol.reasons import ReasonCode
from ..protocol.v5 import publish_head_v5
from .connection import Connection
from .topic_aliases import TopicAliases

_TOPIC_ALIAS_ID = bytes((PropertyId.TOPIC_ALIAS,))


def protocol_error(message: str, rule: str, reason_code: int) -> MQTTError:
    """A ProtocolError whose DISCONNECT says `reason_code` rather than 0x82."""
    error = ProtocolError(message, rule)
    error.reason_code = reason_code
    return error


def aliased_topic(connection: Connection, alias: int, topic: str) -> tuple[str, bytes]:
    """The topic of a PUBLISH with a Topic Alias: with a topic name it (re)defines the alias,
    with an empty one it uses the alias."""
    maximum = connection.core.limits.max_topic_alias
    if not 0 < alias <= maximum:
        raise protocol_error(f"Topic Alias {alias} outside 1..{maximum}",
                             "MQTT-3.3.2-8" if not alias else "MQTT-3.3.2-9",
                             ReasonCode.TOPIC_ALIAS_INVALID)
    aliases = connection.aliases
    if not topic:
        known = aliases.inbound.get(alias) if aliases is not None else None
        if known is None:
            raise protocol_error(f"Topic Alias {alias} used before a topic was set for it",
                                 "§3.3.2.3.4", ReasonCode.PROTOCOL_ERROR)
        return known
    topic_bytes = topic.encode()
    name = connection.core.router.topic_name(topic_bytes)  # an invalid topic defines nothing
    if aliases is None:
        aliases = connection.aliases = TopicAliases()
    aliases.inbound[alias] = known = (name, topic_bytes)
    return known


def use_topic_aliases(connection: Connection, maximum: int) -> None:
    """The client accepts up to `maximum` Topic Aliases from us: from now on the connection
    is an `AliasingConnection`. A class of its own, not a flag tested per delivery, so that
    every other connection's `send_publish` is exactly the shared-frame fast path."""
    if connection.aliases is None:
        connection.aliases = TopicAliases(maximum)
    else:
        connection.aliases.maximum_out = maximum
    connection.__class__ = AliasingConnection


class AliasingConnection(Connection):
    """An MQTT 5 connection whose client allowed Topic Aliases: the first topics sent get
    aliases, up to the client's Topic Alias Maximum [MQTT-3.3.2-11], and keep them; other
    topics go as they are.

    Aliasing happens here, as each PUBLISH is queued, rather than where frames are encoded:
    so the frames shared by every other subscriber stay shared, and an alias is defined on
    the wire by the first PUBLISH that really leaves with it, whatever the path (QoS 0, a QoS
    2 delivery held until its commit, a re-send on reconnect). The rewrite costs one new head
    and property block per PUBLISH; the payload piece is reused unless the PUBLISH came as a
    single frame (QoS 0), whose tail is sliced.
    """

    __slots__ = ()

    def send_publish(self, frames: list[bytes]) -> None:
        head = frames[0]
        first = head[0]
        start, stop = topic_span(head)
        topic = head[start:stop]
        table = self.aliases
        assert table is not None  # made by use_topic_aliases
        aliases = table.outbound
        alias = aliases.get(topic)
        if alias is None and len(aliases) >= table.maximum_out:
            Connection.send_publish(self, frames)  # a full table keeps what it has
            return
        packet_id = b""
        if len(frames) == 1:  # head, [packet id], properties and payload in one piece
            if first & 0x06:
                packet_id = head[stop:stop + 2]
                stop += 2
            length, body = read_varint(head, stop, len(head), "properties")
            props = head[body:body + length]
            payload = head[body + length:]
        else:  # [head, [packet id], properties, payload] (Message.frames5)
            if len(frames) == 4:
                packet_id = frames[1]
            length, body = read_varint(frames[-2], 0, len(frames[-2]), "properties")
            props = frames[-2][body:]
            payload = frames[-1]
        new = alias is None
        number = len(aliases) + 1 if alias is None else alias
        # Properties may come in any order: the alias goes first, the rest follow unchanged.
        block = (encode_varint(length + 3) + _TOPIC_ALIAS_ID + number.to_bytes(2, "big")
                 + props)
        aliased = [publish_head_v5(topic if new else b"", len(payload), first, block)]
        if packet_id:
            aliased.append(packet_id)
        aliased += (block, payload)
        limit = self.max_packet_out
        if limit and sum(map(len, aliased)) > limit:
            # The caller checked the frames as they were; an alias may add up to 4 bytes.
            Connection.send_publish(self, frames)
            return
        if new:
            aliases[topic] = number
        Connection.send_publish(self, aliased)
