"""The handshake: from a connection's first byte to CONNACK, in order.

    CONNECT decoded ─ its protocol level picks the handler table (handlers / handlers5)
      ├─ a client id another worker owns ─> MOVING: the connection goes to that worker
      ├─ server redirection configured ─> CONNACK 0x9C/0x9D (0x03 for 3.1.1), close
      ├─ will, client id, keep-alive, connection limit checked ─> CONNACK refusal, close
      ├─ MQTT 5: what CONNACK announces is settled (`_negotiate`)
      ├─ an Authentication Method ─> enhanced authentication (enhanced_auth.py)
      ├─ an authenticator ─> AUTHENTICATING: the password check runs off the loop, reading
      │     paused ─> refused (0x04/0x05, 0x86/0x87) or on, back to AWAITING_CONNECT
      └─ authorized: connection limit again, the client's ACL, the will topic against it
           ├─ in a cluster ─> AUTHENTICATING: the client id is claimed cluster-wide, and
           │     its session brought from the node that held it (session_moves.py) ─> on,
           │     AWAITING_CONNECT
           └─ the session attached (sessions.py), CONNACK, CONNECTED, the session resumed

Every state change goes through `states.next_state`; the packets that arrive meanwhile wait
(`Connection._deferred`) and are handled once the answer is out.
"""

from __future__ import annotations

import logging
from typing import Final

from ..auth.acl import Access
from ..protocol.codec import encode_connack
from ..protocol.packets import ConnackCode, Connect, PacketType
from ..protocol.packets5 import Connect5
from ..protocol.properties import Properties
from ..protocol.reasons import ReasonCode
from ..protocol.topics import check_topic_name
from ..protocol.v5 import decode_connect_any, encode_connack5
from . import enhanced_auth
from .access import CONTROL_PREFIX, AuthRequest, AuthStep, Outcome
from .aliasing import use_topic_aliases
from .bridges import BRIDGE_CLIENT_PREFIX
from .connection import Connection, Handler
from .handlers import V311_BRIDGE_HANDLERS, V311_HANDLERS
from .handlers5 import V5_HANDLERS
from .message import Message
from .session import NEVER_EXPIRES
from .states import Event, State, next_state

log = logging.getLogger("culex")


def handle_connect(connection: Connection, first: int, frame: bytes, offset: int) -> None:
    if connection.state is not State.AWAITING_CONNECT:
        V311_HANDLERS[PacketType.CONNECT](connection, first, frame, offset)  # a second one
        return
    packet = decode_connect_any(first, frame, offset)
    connection.protocol_level = packet.protocol_level
    if isinstance(packet, Connect5):
        connection.v5 = True
        connection.handlers = V5_HANDLERS
    else:
        connection.handlers = V311_BRIDGE_HANDLERS if packet.bridge else V311_HANDLERS
    core = connection.core
    if packet.client_id:
        connection.client_id = packet.client_id
        links = core.links
        if links is not None and not links.owns(packet.client_id):
            # `Connection._process` hands it, and what followed it, to the owner.
            connection.state = next_state(connection.state, Event.OTHER_WORKER)
            return
    options = core.mqtt5
    if options.server_reference:
        # Maintenance move: nobody is served here, so nobody is authenticated either.
        moved = options.server_moved
        connection.refuse(
            ConnackCode.SERVER_UNAVAILABLE,
            f"{'server moved' if moved else 'use another server'}: {options.server_reference}",
            v5_code=ReasonCode.SERVER_MOVED if moved else ReasonCode.USE_ANOTHER_SERVER,
            server_reference=options.server_reference)
        return
    _check_will(connection, packet)
    max_qos = core.limits.max_qos
    if connection.v5 and connection.will is not None and connection.will.qos > max_qos:
        # MQTT 5 can say it [MQTT-3.2.2-12]; a 3.1.1 will is just delivered at max_qos.
        connection.refuse(ConnackCode.NOT_AUTHORIZED,
                          f"will QoS {connection.will.qos} above Maximum QoS {max_qos}",
                          v5_code=ReasonCode.QOS_NOT_SUPPORTED)
        return
    will, limit = connection.will, core.limits.message_size_limit
    if will is not None and limit and len(will.payload) > limit:
        # As Mosquitto: a will that could never be published is refused at CONNECT.
        connection.refuse(ConnackCode.NOT_AUTHORIZED, f"will payload of {len(will.payload)} "
                          f"bytes over message_size_limit ({limit})",
                          v5_code=ReasonCode.PACKET_TOO_LARGE)
        return
    if will is not None and will.topic.startswith(CONTROL_PREFIX):
        # A will is routed, and $CONTROL requests never are (control.py).
        connection.refuse(ConnackCode.NOT_AUTHORIZED, f"will topic {will.topic!r} is a "
                          "$CONTROL topic")
        return
    refusal = _connect_refusal(connection, packet)
    if refusal is not None:
        connection.refuse(*refusal)
        return
    assigned = not packet.client_id
    if assigned:
        packet.client_id = connection.client_id = core.sessions.assign_client_id()
    if isinstance(packet, Connect5):
        _negotiate(connection, packet, assigned)
    connection.username = connection.certificate_username or packet.username
    if isinstance(packet, Connect5) and packet.properties.authentication_method is not None:
        _begin_enhanced(connection, packet, packet.properties.authentication_method)
        return
    authenticator = core.access.authenticator
    if authenticator is None:
        _authorize(connection, packet)
        return
    connection.state = next_state(connection.state, Event.CHECK)
    connection.update_reading()  # whatever follows the CONNECT waits in the socket
    authenticator.authenticate(
        AuthRequest(packet.client_id, packet.username, packet.password,
                    connection.certificate_username, connection.address),
        lambda code: _authenticated(connection, packet, code))


def _authenticated(connection: Connection, packet: Connect | Connect5, code: int) -> None:
    if connection.state is not State.AUTHENTICATING:
        return  # closed while the check ran (connection lost, CONNECT timeout)
    _check_answered(connection)
    if code:
        connection.refuse(ConnackCode(code), "bad user name or password"
                          if code == ConnackCode.BAD_USERNAME_OR_PASSWORD else "not authorized")
        return
    _authorize(connection, packet)
    _continue(connection)


def _continue(connection: Connection) -> None:
    """After a check answered: what arrived meanwhile, unless another check runs now (the
    cluster's claim), which takes it on when it answers."""
    if connection.state is not State.AUTHENTICATING:
        connection.process_deferred()


def _check_answered(connection: Connection) -> None:
    """An authentication check answered: back to reading, before CONNACK or refusal."""
    connection.state = next_state(connection.state, Event.ANSWERED)
    connection.update_reading()


def _begin_enhanced(connection: Connection, packet: Connect5, method: str) -> None:
    """A CONNECT with an Authentication Method: enhanced authentication replaces the password
    check (§4.12), or the method is refused."""
    enhanced = connection.core.access.enhanced
    exchange = enhanced.begin(method, enhanced_auth.auth_request(connection, packet.username)) \
        if enhanced is not None else None
    if exchange is None:
        # [MQTT-4.12.0-1]: 0x8C, and close.
        connection.refuse5(ReasonCode.BAD_AUTHENTICATION_METHOD,
                           f"authentication method {method!r} is not supported")
        return
    enhanced_auth.start(connection, exchange, packet,
                        lambda step: _enhanced_answered(connection, packet, step))


def _enhanced_answered(connection: Connection, packet: Connect5, step: AuthStep) -> None:
    _check_answered(connection)
    if step.outcome is Outcome.FAILURE:
        connection.refuse5(step.reason_code, step.reason)
        return
    # A user name in the CONNECT or from the client certificate must be the one the exchange
    # proved, or the ACL would be resolved for someone the client did not prove to be.
    claimed = connection.certificate_username or packet.username
    if claimed is not None and claimed != step.username:
        connection.refuse5(ReasonCode.NOT_AUTHORIZED,
                           f"authenticated as {step.username!r}, but claimed {claimed!r}")
        return
    connection.username = step.username
    props = connection.connack_properties
    assert props is not None  # _negotiate set them for every MQTT 5 CONNECT
    props.authentication_method = connection.auth_method
    props.authentication_data = step.data
    log.info("client %s (%s) authenticated as %r with %s", connection.client_id,
             connection.address, step.username, connection.auth_method)
    _authorize(connection, packet)
    _continue(connection)


def _authorize(connection: Connection, packet: Connect | Connect5) -> None:
    """Authenticated: resolve this client's ACL, check its will topic, then accept."""
    over = _over_connection_limit(connection, packet.client_id)
    if over is not None:
        connection.refuse(*over)
        return
    rules = connection.core.access.acl
    if rules is not None:
        connection.acl = rules.for_client(packet.client_id, connection.username)
        will = connection.will
        if will is not None and not connection.acl.allowed(will.topic, Access.WRITE):
            connection.refuse(ConnackCode.NOT_AUTHORIZED,
                              f"will topic {will.topic!r} denied by the ACL")
            return
    moves = connection.core.moves
    if moves is None:
        _accept(connection, packet)
        return
    connection.state = next_state(connection.state, Event.CHECK)
    connection.update_reading()
    keep = not (packet.clean_start if isinstance(packet, Connect5) else packet.clean_session)
    moves.claim(packet.client_id, keep, lambda: _claimed(connection, packet))


def _claimed(connection: Connection, packet: Connect | Connect5) -> None:
    """The cluster's directory answered the claim of this client id (and the node that held
    it handed its session over, or did not answer in time)."""
    if connection.state is not State.AUTHENTICATING:
        return  # closed meanwhile
    _check_answered(connection)
    _accept(connection, packet)
    connection.process_deferred()


def _accept(connection: Connection, packet: Connect | Connect5) -> None:
    """CONNECT passed every check: attach a session, answer CONNACK, resume the session."""
    if isinstance(packet, Connect5):
        clean_start = packet.clean_start
        expiry = packet.properties.session_expiry_interval or 0
    else:
        clean_start = packet.clean_session
        expiry = 0 if packet.clean_session else NEVER_EXPIRES
    core = connection.core
    session, session_present = core.sessions.attach(
        connection, packet.client_id, clean_start=clean_start, expiry=expiry, v5=connection.v5,
        username=connection.username, acl=connection.acl,
        max_inflight=connection.receive_maximum, will=connection.will)
    connection.session = session
    connection.state = next_state(connection.state, Event.ACCEPTED)
    connection.keepalive = packet.keepalive
    # Keep-alive counts from acceptance: a slow password check is our time, not silence.
    connection.last_activity = max(connection.last_activity, core.clock.now)
    connection.send(_connack(connection, session_present))
    bridge = isinstance(packet, Connect) and packet.bridge
    log.info("client %s connected from %s (protocol level %d%s, clean session %d, "
             "keep-alive %d s, session present %d)", packet.client_id, connection.address,
             packet.protocol_level, ", bridge" if bridge else "", clean_start, packet.keepalive,
             session_present)
    if session_present:
        session.resume()
    deadline = connection.deadline()
    if deadline is not None:
        core.deadlines.schedule(connection, deadline)


def _connack(connection: Connection, session_present: bool) -> bytes:
    """The CONNACK that accepts this client, in its protocol's form."""
    if connection.v5:
        return encode_connack5(session_present, ReasonCode.SUCCESS,
                               connection.connack_properties)
    # MQTT 3.1 has no Session Present flag: its acknowledge-flags byte is reserved (0).
    return encode_connack(session_present and connection.protocol_level != 3, 0)


def _check_will(connection: Connection, packet: Connect | Connect5) -> None:
    if packet.will is None:
        return
    check_topic_name(packet.will.topic, connection.core.limits.max_topic_levels)
    will = packet.will
    properties: Properties | None = getattr(will, "properties", None)
    if properties is not None:
        # The Will Delay Interval says when to publish; it is no PUBLISH property (the others
        # are forwarded with the will [MQTT-3.1.3-10]).
        connection.will_delay = properties.will_delay_interval or 0
        properties.will_delay_interval = None
        if properties.is_empty():
            properties = None
    connection.will = Message(will.topic, will.payload, will.qos, will.retain,
                              properties=properties)


def _connect_refusal(connection: Connection,
                     packet: Connect | Connect5) -> tuple[ConnackCode, str] | None:
    limits = connection.core.limits
    if not packet.client_id and isinstance(packet, Connect):
        # MQTT 5 lets the server assign an id whatever Clean Start says (§3.1.3.1).
        if packet.protocol_level == 3:
            return ConnackCode.IDENTIFIER_REJECTED, "MQTT 3.1 requires a client id"
        if not packet.clean_session:
            return (ConnackCode.IDENTIFIER_REJECTED,
                    "empty client id with clean session 0 [MQTT-3.1.3-8]")
    if packet.client_id.startswith(BRIDGE_CLIENT_PREFIX):
        return (ConnackCode.IDENTIFIER_REJECTED,
                f"client ids starting with {BRIDGE_CLIENT_PREFIX!r} are reserved for the "
                "broker's own bridges")
    if len(packet.client_id.encode()) > limits.max_client_id_length:
        return (ConnackCode.IDENTIFIER_REJECTED,
                f"client id longer than max_client_id_length ({limits.max_client_id_length})")
    if limits.max_keepalive < 65535 and not 0 < packet.keepalive <= limits.max_keepalive \
            and isinstance(packet, Connect):  # MQTT 5 clients get Server Keep Alive
        return (ConnackCode.IDENTIFIER_REJECTED,
                f"keep-alive {packet.keepalive} s outside 1..{limits.max_keepalive}")
    return _over_connection_limit(connection, packet.client_id)


def _over_connection_limit(connection: Connection,
                           client_id: str) -> tuple[ConnackCode, str] | None:
    """Checked when CONNECT arrives and again once it is authenticated: clients accepted
    while this one's password was being checked count too. A takeover adds no client."""
    core = connection.core
    limit = core.limits.max_connections
    if 0 < limit <= core.stats.clients_connected \
            and not core.sessions.taking_over(client_id):
        return ConnackCode.SERVER_UNAVAILABLE, f"max_connections ({limit}) reached"
    return None


def _negotiate(connection: Connection, packet: Connect5, assigned: bool) -> None:
    """Settle what an MQTT 5 CONNACK announces: the limits a client must respect (Receive
    Maximum, Maximum Packet Size, the features not available) and the values the server chose
    for it (an assigned id, a clamped keep alive). Absent properties would mean "no limit" or
    "available", so everything this broker does not do is said explicitly."""
    core = connection.core
    limits = core.limits
    props = Properties(
        receive_maximum=limits.receive_maximum,
        maximum_packet_size=limits.max_packet_size,
        topic_alias_maximum=limits.max_topic_alias,
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
    requested = packet.properties
    connection.max_packet_out = requested.maximum_packet_size or 0
    client_maximum = requested.receive_maximum
    if client_maximum is not None:
        connection.receive_maximum = min(connection.receive_maximum, client_maximum)
    if requested.topic_alias_maximum and core.mqtt5.topic_alias_out != "none":
        use_topic_aliases(connection, requested.topic_alias_maximum)
    # Request Problem Information 0: no Reason String or User Property on anything but
    # PUBLISH, CONNACK and DISCONNECT [MQTT-3.1.2-29].
    connection.problem_information = requested.request_problem_information != 0
    prefix = core.mqtt5.response_information
    if prefix and requested.request_response_information == 1:
        # Only when asked for: the server MUST NOT send it otherwise [MQTT-3.1.2-28].
        props.response_information = prefix + packet.client_id
    connection.connack_properties = props


# Before CONNACK: CONNECT starts the handshake; anything else after it in the same read meets
# the family's handlers, which refuse it until the connection is accepted [MQTT-3.1.0-1].
HANDSHAKE_HANDLERS: Final[dict[int, Handler]] = {
    **V311_HANDLERS,
    PacketType.CONNECT: handle_connect,
}
