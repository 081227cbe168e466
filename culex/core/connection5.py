"""The MQTT 5.0 side of a connection: the handlers that differ from 3.1.1, and CONNECT rules.

`Connection` switches to these handlers when a CONNECT says protocol level 5, so the 3.1.1 hot
path never tests for MQTT 5. Everything the two protocols share (the QoS 1/2 acks, PINGREQ,
sessions, routing) stays in `connection.py` and the broker; what is here is what MQTT 5 adds:
properties on PUBLISH, reason codes on every ack, subscription options, DISCONNECT both ways
and the CONNACK properties that tell the client what this broker supports.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, TypeVar

from ..protocol.errors import MQTTError, ProtocolError
from ..protocol.packets import ConnackCode, PacketType
from ..protocol.properties import Properties
from ..protocol.reasons import ReasonCode, reason_name
from ..protocol.topics import SHARE_PREFIX
from ..protocol.v5 import (
    Connect5,
    Disconnect5,
    Packet5,
    Publish5,
    Subscribe5,
    Unsubscribe5,
    decode_packet_v5,
    encode_ack5,
    encode_suback5,
    encode_unsuback5,
)
from .message import QOS0_PLAIN, Message
from .options import ROUTING_FLAGS, V5_SUBSCRIBER, with_identifier

if TYPE_CHECKING:
    from .connection import Connection
    from .session import Session

log = logging.getLogger("culex")


# The 3.1.1 refusal a check decided -> the MQTT 5 CONNACK reason code that says it (§3.2.2.2).
REFUSAL_CODES: Final[dict[ConnackCode, int]] = {
    ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION: ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
    ConnackCode.IDENTIFIER_REJECTED: ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
    # max_connections: the server is fine, just full for now.
    ConnackCode.SERVER_UNAVAILABLE: ReasonCode.SERVER_BUSY,
    ConnackCode.BAD_USERNAME_OR_PASSWORD: ReasonCode.BAD_USER_NAME_OR_PASSWORD,
    ConnackCode.NOT_AUTHORIZED: ReasonCode.NOT_AUTHORIZED,
}


def negotiate(connection: Connection, packet: Connect5, assigned: bool) -> None:
    """Settle what the CONNACK announces: the limits a client must respect (Receive Maximum,
    Maximum Packet Size, the features not available) and the values the server chose for it
    (an assigned id, a clamped keep alive). Absent properties would mean "no limit" or
    "available", so everything this broker does not do is said explicitly."""
    limits = connection.broker.limits
    props = Properties(
        receive_maximum=limits.max_inflight_messages,
        maximum_packet_size=limits.max_packet_size,
        topic_alias_maximum=0,
        retain_available=1,
        wildcard_subscription_available=1,
        subscription_identifier_available=1,
        shared_subscription_available=1,
    )
    if limits.max_qos < 2:
        props.maximum_qos = limits.max_qos
    if assigned:
        props.assigned_client_identifier = packet.client_id
    if limits.max_keepalive < 65535 and not 0 < packet.keepalive <= limits.max_keepalive:
        # MQTT 5 need not refuse: the client must use the Server Keep Alive [MQTT-3.2.2-21].
        packet.keepalive = props.server_keep_alive = limits.max_keepalive
    connection.max_packet_out = packet.properties.maximum_packet_size or 0
    client_maximum = packet.properties.receive_maximum
    if client_maximum is not None:
        connection.receive_maximum = min(connection.receive_maximum, client_maximum)
    connection.connack_properties = props


P = TypeVar("P", bound=Packet5)


def _decode(connection: Connection, first: int, frame: bytes, pos: int, kind: type[P]) -> P:
    """Decode a packet that needs an accepted CONNECT; the handler table guarantees `kind`."""
    connection._require_connected()
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


def _protocol_error(message: str, rule: str, reason_code: int) -> MQTTError:
    error = ProtocolError(message, rule)
    error.reason_code = reason_code
    return error


def handle_publish(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    packet = _decode(connection, first, frame, pos, Publish5)
    props = packet.properties
    if props.topic_alias is not None:
        raise _protocol_error("Topic Alias sent, but Topic Alias Maximum is 0",
                              "MQTT-3.3.2-9", ReasonCode.TOPIC_ALIAS_INVALID)
    broker = connection.broker
    bad_format = props.payload_format_indicator == 1 and broker.limits.check_payload_format \
        and not _is_utf8(packet.payload)
    if bad_format and not packet.qos:  # no ack to say it in: DISCONNECT 0x99 (§3.3.2.3.2)
        raise _protocol_error("payload is not UTF-8 but its Payload Format Indicator says it "
                              "is", "§3.3.2.3.2", ReasonCode.PAYLOAD_FORMAT_INVALID)
    if packet.qos > broker.limits.max_qos:
        raise _protocol_error(f"PUBLISH at QoS {packet.qos} above Maximum QoS "
                              f"{broker.limits.max_qos}", "§3.2.2.3.4",
                              ReasonCode.QOS_NOT_SUPPORTED)
    session = _session(connection)
    topic_bytes = packet.topic.encode()
    topic = broker.topic_names.get(topic_bytes)
    if topic is None:
        topic = broker.learn_topic_name(topic_bytes)
    qos = packet.qos
    packet_id = packet.packet_id
    broker.publishes_received += 1
    reason: int = ReasonCode.SUCCESS
    if qos == 2 and packet_id not in session.awaiting_release \
            and len(session.awaiting_release) >= broker.limits.max_inflight_messages:
        # More unreleased QoS 2 messages than the Receive Maximum we announced.
        raise _protocol_error(f"more than {broker.limits.max_inflight_messages} QoS 2 "
                              "messages awaiting PUBREL", "MQTT-3.3.4-7",
                              ReasonCode.RECEIVE_MAXIMUM_EXCEEDED)
    if not connection.may_publish(topic):
        reason = ReasonCode.NOT_AUTHORIZED
    elif bad_format:
        reason = ReasonCode.PAYLOAD_FORMAT_INVALID
    elif qos == 2 and not session.inbound_received(packet_id):
        pass  # a retransmission: routed when it first arrived
    elif first == QOS0_PLAIN and props.is_empty():
        # The same frame suits every MQTT 5 subscriber without options: forward it.
        broker.forward(topic, frame, connection)
    else:
        reason = broker.publish(Message(
            topic, packet.payload, qos, packet.retain, topic_bytes=topic_bytes,
            properties=None if props.is_empty() else props, created=broker.now), connection)
        if qos == 2 and reason >= 0x80:
            session.inbound_released(packet_id)  # a failed PUBREC ends the exchange
    if qos:
        connection.acknowledge(encode_ack5(PacketType.PUBACK if qos == 1 else PacketType.PUBREC,
                                           packet_id, reason))


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
    for subscription in packet.subscriptions:
        topic_filter = subscription.topic_filter
        existed = topic_filter in session.subscriptions
        qos = min(subscription.qos, connection.broker.limits.max_qos)
        value = with_identifier(V5_SUBSCRIBER | qos | (subscription.options & ROUTING_FLAGS),
                                identifier)
        code = connection.subscribe(topic_filter, value)
        if not code:
            code = qos
            # Retain Handling 0: send retained messages; 1: only for a new subscription;
            # 2: never (§3.8.3.1). A shared subscription never gets them (§4.8.2).
            handling = subscription.retain_handling
            if (handling == 0 or (handling == 1 and not existed)) \
                    and not topic_filter.startswith(SHARE_PREFIX):
                retained.append((topic_filter, value))
        codes.append(code)
    connection.send(encode_suback5(packet.packet_id, codes))
    for topic_filter, value in retained:
        connection.broker.send_retained(session, topic_filter, value)


def handle_unsubscribe(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    packet = _decode(connection, first, frame, pos, Unsubscribe5)
    session = _session(connection)
    broker = connection.broker
    codes: list[int] = []
    for topic_filter in packet.filters:
        if topic_filter not in session.subscriptions:
            codes.append(ReasonCode.NO_SUBSCRIPTION_EXISTED)
        else:
            broker.unsubscribe(session, topic_filter)
            codes.append(ReasonCode.SUCCESS)
    connection.send(encode_unsuback5(packet.packet_id, codes))


def handle_disconnect(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    packet = _decode(connection, first, frame, pos, Disconnect5)
    session = _session(connection)
    expiry = packet.properties.session_expiry_interval
    if expiry is not None:
        if expiry and not session.expiry_interval:
            raise ProtocolError("DISCONNECT sets a Session Expiry Interval after CONNECT had 0",
                                "MQTT-3.14.2-2")
        connection.broker.set_session_expiry(session, expiry)
    log.info("client %s (%s) disconnected (%s)", connection.client_id, connection.peer,
             reason_name(packet.reason_code, PacketType.DISCONNECT))
    # Only a Normal disconnection discards the will; 0x04 and the error codes publish it
    # [MQTT-3.14.4-3, §3.14.2.1].
    connection.close(publish_will=packet.reason_code != ReasonCode.NORMAL_DISCONNECTION)


def handle_auth(connection: Connection, first: int, frame: bytes, pos: int) -> None:
    connection._require_connected()
    decode_packet_v5(first, frame, pos)
    # No CONNECT of ours had an Authentication Method: AUTH is then a Protocol Error
    # [MQTT-4.12.0-6]. Enhanced authentication is not implemented yet.
    raise ProtocolError("AUTH without enhanced authentication in CONNECT", "MQTT-4.12.0-6")
