"""The packets of an accepted MQTT 5.0 connection that MQTT 5 handles differently from 3.1.1.

What MQTT 5 adds here: properties on PUBLISH (Topic Aliases, Payload Format Indicator,
Message Expiry, ...), reason codes on every ack, subscription options and identifiers, the
Session Expiry Interval on DISCONNECT, and AUTH. `V5_HANDLERS` at the bottom is the 3.1.1
table with exactly these handlers replaced.
"""

from __future__ import annotations

import logging
from typing import Final, TypeVar

from ..protocol.errors import ProtocolError
from ..protocol.packets import PacketType
from ..protocol.packets5 import Auth, Disconnect5, Packet5, Publish5, Subscribe5, Unsubscribe5
from ..protocol.properties import Properties
from ..protocol.reasons import ReasonCode, reason_name
from ..protocol.topics import SHARE_PREFIX
from ..protocol.v5 import decode_packet_v5, encode_ack5, encode_suback5, encode_unsuback5
from . import enhanced_auth
from .aliasing import aliased_topic, protocol_error
from .connection import Connection, Handler
from .control import CONTROL_PREFIX, control_publish
from .handlers import V311_HANDLERS, may_publish, may_unsubscribe, oversized, subscribe_filter
from .message import QOS0_PLAIN, Message
from .session import Session
from .states import State
from .subscription_value import ROUTING_FLAGS, V5_SUBSCRIBER, with_identifier

log = logging.getLogger("culex")

P = TypeVar("P", bound=Packet5)


def _decode(connection: Connection, first: int, frame: bytes, pos: int, kind: type[P]) -> P:
    """Decode a packet that needs an accepted CONNECT; the handler table guarantees `kind`."""
    connection.require_connected()
    packet = decode_packet_v5(first, frame, pos)
    assert isinstance(packet, kind)
    return packet


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode()
    except UnicodeDecodeError:
        return False
    return True


def _session(connection: Connection) -> Session:
    session = connection.session
    assert session is not None  # set whenever the connection is CONNECTED
    return session


def handle_publish(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    if first == QOS0_PLAIN and _forward_plain(connection, frame, pos):
        return
    packet = _decode(connection, first, frame, pos, Publish5)
    props = packet.properties
    core = connection.core
    limits = core.limits
    router = core.router
    bad_format = props.payload_format_indicator == 1 and limits.check_payload_format \
        and not _is_utf8(packet.payload)
    if bad_format and not packet.qos:  # no ack to say it in: DISCONNECT 0x99 (§3.3.2.3.2)
        raise protocol_error("payload is not UTF-8 but its Payload Format Indicator says it "
                             "is", "§3.3.2.3.2", ReasonCode.PAYLOAD_FORMAT_INVALID)
    if packet.qos > limits.max_qos:
        raise protocol_error(f"PUBLISH at QoS {packet.qos} above Maximum QoS "
                             f"{limits.max_qos}", "§3.2.2.3.4", ReasonCode.QOS_NOT_SUPPORTED)
    session = _session(connection)
    alias = props.topic_alias
    if alias is None:
        topic_bytes = packet.topic.encode()
        if not topic_bytes:
            raise protocol_error("empty topic name without a Topic Alias", "§3.3.2.3.4",
                                 ReasonCode.PROTOCOL_ERROR)
        topic = router.topic_name(topic_bytes)
    else:
        topic, topic_bytes = aliased_topic(connection, alias, packet.topic)
    qos = packet.qos
    packet_id = packet.packet_id
    core.stats.publishes_received += 1
    reason: int = ReasonCode.SUCCESS
    if qos == 2 and packet_id not in session.awaiting_release \
            and len(session.awaiting_release) >= limits.receive_maximum:
        # More unreleased QoS 2 messages than the Receive Maximum we announced.
        raise protocol_error(f"more than {limits.receive_maximum} QoS 2 messages awaiting "
                             "PUBREL", "MQTT-3.3.4-7", ReasonCode.RECEIVE_MAXIMUM_EXCEEDED)
    if limits.message_size_limit and len(packet.payload) > limits.message_size_limit:
        oversized(connection, topic, len(packet.payload))
        # Mosquitto's documented code: 0x95 Packet too large is not one a PUBACK may carry.
        reason = ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR
    elif topic[0] == "$" and topic.startswith(CONTROL_PREFIX):
        # Taken once: a QoS 2 retransmission finds its id still awaiting PUBREL.
        if qos != 2 or session.inbound_received(packet_id):
            reason = control_publish(connection, topic, packet.payload)
            if reason and qos == 2:
                session.inbound_released(packet_id)  # a failed PUBREC ends the exchange
    elif not may_publish(connection, topic):
        reason = ReasonCode.NOT_AUTHORIZED
    elif bad_format:
        reason = ReasonCode.PAYLOAD_FORMAT_INVALID
    elif qos == 2 and not session.inbound_received(packet_id):
        pass  # a retransmission: routed when it first arrived
    elif first == QOS0_PLAIN and props.is_empty():
        # The same frame suits every MQTT 5 subscriber without options: forward it. (A Topic
        # Alias is a property, so an aliased PUBLISH never takes this path.)
        router.forward(topic, frame, connection)
    else:
        if alias is not None:
            props.topic_alias = None  # the publisher's own shorthand, never forwarded
        reason = router.publish(Message(
            topic, packet.payload, qos, packet.retain, topic_bytes=topic_bytes,
            properties=None if props.is_empty() else props, created=core.clock.now), connection)
        if qos == 2 and reason >= 0x80:
            session.inbound_released(packet_id)  # a failed PUBREC ends the exchange
    if qos:
        core.stats.received_by_qos[qos] += 1
        connection.acknowledge(encode_ack5(PacketType.PUBACK if qos == 1 else PacketType.PUBREC,
                                           packet_id, reason,
                                           _problem(connection, reason) if reason >= 0x80
                                           else None))


def _forward_plain(connection: Connection, frame: bytes, pos: int) -> bool:
    """The MQTT 5 hot path, as cheap as 3.1.1's: a QoS 0 PUBLISH without RETAIN, with an empty
    property block, to a topic already validated (the router's topic-name cache holds only
    valid, non-empty names). Such a frame needs no decoding: forwarded as it is. False for
    anything else, which takes the full decode (and its checks)."""
    if connection.session is None:
        return False  # not accepted yet: the full path says why that is an error
    stop = pos + 2 + ((frame[pos] << 8) | frame[pos + 1]) if pos + 2 <= len(frame) else 0
    if not stop or stop >= len(frame) or frame[stop]:
        return False  # truncated, or there are properties
    core = connection.core
    topic = core.router.topic_names.get(frame[pos + 2:stop])
    if topic is None:
        return False
    limit = core.limits.message_size_limit
    if limit and len(frame) - stop - 1 > limit:
        return False  # the full path drops it and says why
    core.stats.publishes_received += 1
    if (topic[0] != "$" and connection.acl is None) or may_publish(connection, topic):
        core.router.forward(topic, frame, connection)
    return True


# Why a PUBACK/PUBREC says no, for its Reason String: the code alone does not tell a client
# whether to fix its payload, its topic or its pace.
_PUBLISH_PROBLEMS: Final[dict[int, str]] = {
    ReasonCode.NOT_AUTHORIZED: "not authorized to publish to this topic",
    ReasonCode.PAYLOAD_FORMAT_INVALID: "payload is not UTF-8, as its Payload Format "
                                       "Indicator says",
    ReasonCode.QUOTA_EXCEEDED: "a subscriber's queue is full",
    ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR: "payload larger than the broker's "
                                              "message_size_limit",
}


def _problem(connection: Connection, reason: int) -> Properties | None:
    """The Reason String of a failure ack, unless the client's CONNECT said Request Problem
    Information 0: then acks carry none [MQTT-3.1.2-29]."""
    text = _PUBLISH_PROBLEMS.get(reason)
    if text is None or not connection.problem_information:
        return None
    return Properties(reason_string=text)


def handle_subscribe(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    packet = _decode(connection, first, frame, pos, Subscribe5)
    session = _session(connection)
    # At most one Subscription Identifier per SUBSCRIBE (the codec refuses a second one and 0);
    # it goes with every subscription of the packet, and a SUBSCRIBE without one takes it away
    # from the filters it renews (§3.8.2.1.2).
    identifiers = packet.properties.subscription_identifiers
    identifier = identifiers[0] if identifiers else None
    # No Local on a shared subscription never gets here: the codec refuses the packet
    # (DISCONNECT 0x82, [MQTT-3.8.3-4]).
    codes: list[int] = []
    retained: list[tuple[str, int]] = []
    max_qos = connection.core.limits.max_qos
    for subscription in packet.subscriptions:
        topic_filter = subscription.topic_filter
        existed = topic_filter in session.subscriptions
        qos = min(subscription.qos, max_qos)
        value = with_identifier(V5_SUBSCRIBER | qos | (subscription.options & ROUTING_FLAGS),
                                identifier)
        code = subscribe_filter(connection, topic_filter, value)
        if not code:
            code = qos
            # Retain Handling 0: send retained messages; 1: only for a new subscription;
            # 2: never (§3.8.3.1). A shared subscription never gets them (§4.8.2).
            handling = subscription.retain_handling
            if (handling == 0 or (handling == 1 and not existed)) \
                    and not topic_filter.startswith(SHARE_PREFIX):
                retained.append((topic_filter, value))
        codes.append(code)
    connection.send_suback(encode_suback5(packet.packet_id, codes), retained)


def handle_unsubscribe(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    packet = _decode(connection, first, frame, pos, Unsubscribe5)
    session = _session(connection)
    router = connection.core.router
    codes: list[int] = []
    for topic_filter in packet.filters:
        if not may_unsubscribe(connection, topic_filter):
            codes.append(ReasonCode.NOT_AUTHORIZED)
        elif topic_filter not in session.subscriptions:
            codes.append(ReasonCode.NO_SUBSCRIPTION_EXISTED)
        else:
            router.unsubscribe(session, topic_filter)
            codes.append(ReasonCode.SUCCESS)
    connection.send(encode_unsuback5(packet.packet_id, codes))


def handle_disconnect(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    if connection.state is State.EXCHANGING:
        # The client gives up an enhanced authentication (allowed [MQTT-3.1.2-30]); it never
        # connected, so there is no session and the will was never accepted.
        packet = decode_packet_v5(first, frame, pos)
        assert isinstance(packet, Disconnect5)
        log.info("client %s (%s) disconnected during authentication (%s)",
                 connection.client_id, connection.address,
                 reason_name(packet.reason_code, PacketType.DISCONNECT))
        connection.close(publish_will=False)
        return
    packet = _decode(connection, first, frame, pos, Disconnect5)
    session = _session(connection)
    expiry = packet.properties.session_expiry_interval
    if expiry is not None:
        if expiry and not session.expiry_interval:
            raise ProtocolError("DISCONNECT sets a Session Expiry Interval after CONNECT had 0",
                                "MQTT-3.14.2-2")
        connection.core.sessions.set_session_expiry(session, expiry)
    log.info("client %s (%s) disconnected (%s)", connection.client_id, connection.address,
             reason_name(packet.reason_code, PacketType.DISCONNECT))
    # Only a Normal disconnection discards the will; 0x04 and the error codes publish it
    # [MQTT-3.14.4-3, §3.14.2.1].
    connection.close(publish_will=packet.reason_code != ReasonCode.NORMAL_DISCONNECTION)


def handle_auth(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    if connection.state is not State.EXCHANGING:
        connection.require_connected()
    packet = decode_packet_v5(first, frame, pos)
    assert isinstance(packet, Auth)
    enhanced_auth.handle_auth(connection, packet)


V5_HANDLERS: Final[dict[int, Handler]] = {
    **V311_HANDLERS,
    PacketType.PUBLISH: handle_publish,
    PacketType.SUBSCRIBE: handle_subscribe,
    PacketType.UNSUBSCRIBE: handle_unsubscribe,
    PacketType.DISCONNECT: handle_disconnect,
    PacketType.AUTH: handle_auth,
}
