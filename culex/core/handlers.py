"""The packets of an accepted MQTT 3.1/3.1.1 connection, one handler each, and their table.

MQTT 5 connections use `handlers5.V5_HANDLERS`, which is this table with the handlers that
differ in MQTT 5 replaced: both tables are at the bottom of their modules, so the differences
between the families are the lines of the second one. The acknowledgements, PINGREQ and the
filter checks of SUBSCRIBE are shared; an ack's MQTT 5 form (reason code, properties) is read
where its packet id is (`_ack_packet_id`).

Every handler is `(connection, first byte, whole frame, offset of the variable header)`.
"""

from __future__ import annotations

import logging
from typing import Final

from ..auth.acl import Access
from ..protocol.codec import PINGRESP, decode_subscribe, decode_unsubscribe, encode_suback
from ..protocol.errors import MalformedPacket, ProtocolError
from ..protocol.packets import SUBACK_FAILURE, PacketType
from ..protocol.packets5 import Ack5
from ..protocol.publish import ack_packet_id, publish_fields
from ..protocol.reasons import ReasonCode
from ..protocol.topics import SHARE_PREFIX, filter_problem, shared_filter_problem, split_shared
from ..protocol.v5 import decode_packet_v5, encode_ack5
from .bridges import is_bridge_state
from .connection import Connection, Handler
from .control import CONTROL_PREFIX, control_publish
from .message import QOS0_PLAIN, Message
from .states import State
from .stats import NOT_AUTHORIZED
from .subscription_value import NO_LOCAL, RETAIN_AS_PUBLISHED

log = logging.getLogger("culex")

PUBACK = 0x40
PUBREC = 0x50
PUBREL = 0x62
PUBCOMP = 0x70
UNSUBACK = 0xB0


def handle_publish(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    """The hot path. The topic's bytes are the key of the router's cache of validated names,
    so a topic seen before costs one dict lookup, and a QoS 0 PUBLISH without RETAIN is
    forwarded as the very frame that arrived."""
    if connection.state is not State.CONNECTED:
        connection.require_connected()
    qos, topic_end, packet_id, payload_at = publish_fields(first, frame, pos)
    topic_bytes = frame[pos + 2:topic_end]
    core = connection.core
    router = core.router
    topic = router.topic_names.get(topic_bytes)
    if topic is None:
        topic = router.topic_name(topic_bytes)
    core.stats.publishes_received += 1
    limit = core.limits.message_size_limit
    if limit and len(frame) - payload_at > limit:
        oversized(connection, topic, len(frame) - payload_at)
        if qos:  # 3.1.1 cannot say why: acknowledged and dropped, as Mosquitto does
            connection.acknowledge(bytes((PUBACK if qos == 1 else PUBREC, 2, packet_id >> 8,
                                          packet_id & 0xFF)))
        return
    routed = (topic[0] != "$" and connection.acl is None) or may_publish(connection, topic)
    if qos == 2 and not connection.session.inbound_received(packet_id):  # type: ignore[union-attr]
        routed = False  # a retransmission: routed (or taken) when it first arrived
    elif not routed and topic.startswith(CONTROL_PREFIX):
        control_publish(connection, topic, frame[payload_at:])  # 3.1.1 acks it all the same
    if routed:
        if first == QOS0_PLAIN:
            router.forward(topic, frame, connection)
        else:
            message = Message(topic, frame[payload_at:], qos, bool(first & 0x01),
                              topic_bytes=topic_bytes)
            if not first & 0x09:
                # Without DUP and RETAIN our head is the head of a delivery at this QoS:
                # a slice instead of an encoding (measured: 1 -> 1 QoS 1, -10% CPU).
                message.seed_head(first, frame[:topic_end])
            router.publish(message, connection)
    if qos:
        core.stats.received_by_qos[qos] += 1
        connection.acknowledge(bytes((PUBACK if qos == 1 else PUBREC, 2, packet_id >> 8,
                                      packet_id & 0xFF)))


def oversized(connection: Connection, topic: str, size: int) -> None:
    """A PUBLISH whose payload is over `message_size_limit`: logged; the caller drops it."""
    log.info("client %s (%s) publish to %r dropped: payload of %d bytes over "
             "message_size_limit (%d)", connection.client_id, connection.address, topic, size,
             connection.core.limits.message_size_limit)


def may_publish(connection: Connection, topic: str) -> bool:
    """Whether the client may publish to `topic`; a refusal is logged. 3.1.1 cannot say no,
    so there the message is acknowledged as usual and not routed; MQTT 5 says 0x87.
    `$CONTROL` requests are never routed: `control_publish` takes them or says why not."""
    if topic[0] == "$":
        if topic.startswith(CONTROL_PREFIX):
            return False
        if topic.startswith("$SYS") and not is_bridge_state(topic):
            # Clients may not write the broker's own tree (Mosquitto denies it the same way).
            log.info("client %s (%s) publish to %r dropped: $SYS is read-only",
                     connection.client_id, connection.address, topic)
            connection.core.stats.drop(NOT_AUTHORIZED)
            return False
    acl = connection.acl
    if acl is not None and not acl.allowed(topic, Access.WRITE):
        log.info("client %s (%s) publish to %r dropped: denied by the ACL",
                 connection.client_id, connection.address, topic)
        connection.core.stats.drop(NOT_AUTHORIZED)
        return False
    return True


def _ack_packet_id(connection: Connection, first: int, frame: bytes, pos: int, *, flags: int,
                   name: str) -> int:
    connection.require_connected()
    if connection.v5:
        # MQTT 5 acks may carry a reason code and properties; the codec checks them.
        ack = decode_packet_v5(first, frame, pos)
        assert isinstance(ack, Ack5)
        return ack.packet_id
    return ack_packet_id(first, frame, pos, flags, name)


def handle_puback(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    packet_id = _ack_packet_id(connection, first, frame, pos, flags=0, name="PUBACK")
    assert connection.session is not None
    if not connection.session.acknowledge(packet_id, 1):
        log.debug("client %s: PUBACK for unknown packet id %d ignored", connection.client_id,
                  packet_id)


def handle_pubrec(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    packet_id = _ack_packet_id(connection, first, frame, pos, flags=0, name="PUBREC")
    session = connection.session
    assert session is not None
    if not session.release(packet_id):
        log.debug("client %s: PUBREC for unknown packet id %d ignored", connection.client_id,
                  packet_id)
        return
    pubrel = bytes((PUBREL, 2, packet_id >> 8, packet_id & 0xFF))
    if session.persistence is not None:
        # The subscriber completes delivery on PUBREL and forgets the id; if the broker died
        # before "released" was on disk it would send the PUBLISH again as new.
        connection.send_when_durable(pubrel)
    else:
        connection.send(pubrel)


def handle_pubrel(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    packet_id = _ack_packet_id(connection, first, frame, pos, flags=0b0010, name="PUBREL")
    assert connection.session is not None
    known = connection.session.inbound_released(packet_id)
    # PUBCOMP even for an unknown id: the sender may be retrying after our restart.
    if connection.v5 and not known:
        connection.acknowledge(encode_ack5(PacketType.PUBCOMP, packet_id,
                                           ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))
    else:
        connection.acknowledge(bytes((PUBCOMP, 2, packet_id >> 8, packet_id & 0xFF)))


def handle_pubcomp(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    packet_id = _ack_packet_id(connection, first, frame, pos, flags=0, name="PUBCOMP")
    assert connection.session is not None
    if not connection.session.acknowledge(packet_id, 2):
        log.debug("client %s: PUBCOMP for unknown packet id %d ignored", connection.client_id,
                  packet_id)


def handle_subscribe(connection: Connection, first: int, frame: bytes, pos: int,
                     options: int = 0) -> None:
    """`options`: routing flags (subscription_value.py) every subscription of the packet
    gets; a plain 3.1.1 client has none."""
    connection.require_connected()
    packet = decode_subscribe(first & 0x0F, frame, pos)
    max_qos = connection.core.limits.max_qos
    codes = []
    retained: list[tuple[str, int]] = []
    for topic_filter, requested in packet.topics:
        qos = requested if requested <= max_qos else max_qos  # granting less is allowed
        if subscribe_filter(connection, topic_filter, qos | options):
            codes.append(SUBACK_FAILURE)
            continue
        codes.append(qos)
        if not topic_filter.startswith(SHARE_PREFIX):  # shared: no retained (§4.8.2)
            retained.append((topic_filter, qos | options))
    connection.send_suback(encode_suback(packet.packet_id, codes), retained)


def handle_bridge_subscribe(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    """A SUBSCRIBE from another broker's 3.1/3.1.1 bridge (its CONNECT set the bridge bit of
    the protocol level): as Mosquitto does, it is never sent what it published itself (or two
    brokers bridged both ways would send each message back and forth), and it gets RETAIN as
    published, so a retained message stays retained on its side."""
    handle_subscribe(connection, first, frame, pos, NO_LOCAL | RETAIN_AS_PUBLISHED)


def subscribe_filter(connection: Connection, topic_filter: str, value: int) -> int:
    """Check and make one subscription (`value`: see subscription_value.py). Returns 0, or
    the MQTT 5 reason it was refused with (logged): 0x8F, 0x87 or 0x97."""
    core = connection.core
    session = connection.session
    assert session is not None
    code: int = ReasonCode.SUCCESS
    shared = split_shared(topic_filter)
    max_levels = core.limits.max_topic_levels
    if shared is None:
        problem = filter_problem(topic_filter, max_levels)
    else:
        # 3.1.1 clients may share too, as with Mosquitto; the ACL judges the inner filter.
        problem = shared_filter_problem(topic_filter, max_levels)
    if problem is not None:
        code = ReasonCode.TOPIC_FILTER_INVALID
    elif connection.acl is not None and not connection.acl.allowed_filter(
            topic_filter if shared is None else shared[1]):
        code, problem = ReasonCode.NOT_AUTHORIZED, "denied by the ACL"
    elif not core.router.subscribe(session, topic_filter, value):
        code = ReasonCode.QUOTA_EXCEEDED
        problem = f"max_subscriptions ({core.limits.max_subscriptions}) reached"
    if problem is not None:
        log.info("client %s (%s) subscription to %r refused: %s", connection.client_id,
                 connection.address, topic_filter, problem)
    return code


def handle_unsubscribe(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    connection.require_connected()
    packet = decode_unsubscribe(first & 0x0F, frame, pos)
    session = connection.session
    assert session is not None
    core = connection.core
    for topic_filter in packet.filters:
        problem = filter_problem(topic_filter, core.limits.max_topic_levels)
        if problem is not None:
            # UNSUBACK has no per-filter code in 3.1.1; Mosquitto closes here as well.
            raise ProtocolError(f"UNSUBSCRIBE with invalid filter {topic_filter!r}: {problem}")
    for topic_filter in packet.filters:
        if may_unsubscribe(connection, topic_filter):  # 3.1.1 cannot say no: UNSUBACK anyway
            core.router.unsubscribe(session, topic_filter)
    connection.send(bytes((UNSUBACK, 2, packet.packet_id >> 8, packet.packet_id & 0xFF)))


def may_unsubscribe(connection: Connection, topic_filter: str) -> bool:
    """Whether the ACL lets the client unsubscribe (dynamic security's unsubscribe rules);
    a refusal is logged and the subscription stays, as in Mosquitto."""
    acl = connection.acl
    if acl is None:
        return True
    shared = split_shared(topic_filter)
    if acl.allowed_unsubscribe(topic_filter if shared is None else shared[1]):
        return True
    log.info("client %s (%s) unsubscribe from %r refused: denied by the ACL",
             connection.client_id, connection.address, topic_filter)
    return False


def handle_pingreq(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    connection.require_connected()
    if first != 0xC0 or len(frame) != pos:
        raise MalformedPacket("PINGREQ with flags or a body")
    connection.send(PINGRESP)


def handle_disconnect(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    connection.require_connected()
    if first != 0xE0 or len(frame) != pos:
        raise MalformedPacket("DISCONNECT with flags or a body")
    log.info("client %s (%s) disconnected", connection.client_id, connection.address)
    connection.close(publish_will=False)  # MQTT-3.14.4-3: a clean DISCONNECT discards the will


def handle_second_connect(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    raise ProtocolError("second CONNECT on one connection", "MQTT-3.1.0-2")


V311_HANDLERS: Final[dict[int, Handler]] = {
    PacketType.CONNECT: handle_second_connect,
    PacketType.PUBLISH: handle_publish,
    PacketType.PUBACK: handle_puback,
    PacketType.PUBREC: handle_pubrec,
    PacketType.PUBREL: handle_pubrel,
    PacketType.PUBCOMP: handle_pubcomp,
    PacketType.SUBSCRIBE: handle_subscribe,
    PacketType.UNSUBSCRIBE: handle_unsubscribe,
    PacketType.PINGREQ: handle_pingreq,
    PacketType.DISCONNECT: handle_disconnect,
}

# Another broker's 3.1/3.1.1 bridge: the same packets, its subscriptions with the options
# above.
V311_BRIDGE_HANDLERS: Final[dict[int, Handler]] = {
    **V311_HANDLERS,
    PacketType.SUBSCRIBE: handle_bridge_subscribe,
}
