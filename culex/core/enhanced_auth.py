"""MQTT 5 enhanced authentication and re-authentication (§4.12): the protocol's half.

The mechanism (SCRAM, ...) is an `AuthExchange` from the `EnhancedAuthenticator`; this module
enforces who may send what, and when::

    CONNECT(method, data) ─begin─> AUTHENTICATING: one step runs, reading paused
        step CONTINUE ─> AUTH 0x18(method, data) ─> EXCHANGING: only AUTH 0x18 or DISCONNECT
            client AUTH 0x18(method, data) ─> AUTHENTICATING: the next step runs
        step SUCCESS  ─> CONNACK 0x00(method, data) ─> CONNECTED (ACL as for passwords)
        step FAILURE  ─> CONNACK 0x86/0x87/... ─> CLOSED
        connect_timeout still runs: the whole exchange must end within it
    CONNECTED, client AUTH 0x19(same method, data) ─> re-authentication: steps as above, but
        the connection stays CONNECTED and other packets keep flowing (§4.12.1)
        step CONTINUE ─> AUTH 0x18; SUCCESS ─> AUTH 0x00(method, data);
        FAILURE ─> DISCONNECT 0x87 (or the mechanism's code, if DISCONNECT may carry it), close

Protocol Errors (DISCONNECT 0x82): AUTH when the CONNECT had no Authentication Method
[MQTT-4.12.0-7]; an AUTH whose method is not the CONNECT's [MQTT-4.12.0-5, MQTT-4.12.1-1]; AUTH
0x18 that answers no AUTH of ours [MQTT-4.12.0-3]; AUTH 0x19 before CONNACK or while an exchange
runs; any packet but AUTH or DISCONNECT before CONNACK [MQTT-3.1.2-30]. Every AUTH and the
successful CONNACK carry the CONNECT's method [MQTT-4.12.0-5], and none carries a Reason String
or User Property, so Request Problem Information 0 [MQTT-3.1.2-29] holds without a check.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..protocol.errors import ProtocolError
from ..protocol.packets import PacketType
from ..protocol.properties import Properties
from ..protocol.reasons import REASON_CODES_BY_PACKET, ReasonCode, reason_name
from ..protocol.v5 import Auth, Connect5, encode_auth
from .access import AuthExchange, AuthRequest, AuthStep, Outcome
from .states import State

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger("culex")


@dataclass(slots=True)
class InProgress:
    """The exchange a connection is in the middle of."""

    exchange: AuthExchange
    # The CONNECT being authenticated; None for a re-authentication.
    connect: Connect5 | None
    # Our AUTH 0x18 is out: the client's AUTH 0x18 is now the expected answer.
    awaiting_client: bool = False


def _request(connection: Connection, username: str | None) -> AuthRequest:
    return AuthRequest(connection.client_id, username, None, connection.certificate_username,
                       connection.peer)


def begin(connection: Connection, packet: Connect5, method: str) -> None:
    """A CONNECT with an Authentication Method: open an exchange, or refuse the method."""
    enhanced = connection.broker.enhanced_authenticator
    exchange = enhanced.begin(method, _request(connection, packet.username)) \
        if enhanced is not None else None
    if exchange is None:
        # [MQTT-4.12.0-1]: 0x8C, and close.
        connection.refuse5(ReasonCode.BAD_AUTHENTICATION_METHOD,
                           f"authentication method {method!r} is not supported")
        return
    connection.auth_method = method
    _step(connection, InProgress(exchange, packet), packet.properties.authentication_data)


def handle_auth(connection: Connection, packet: Auth) -> None:
    """An AUTH from the client (decoded: its reason code is 0x18 or 0x19 and it has a method)."""
    method = packet.properties.authentication_method
    if connection.auth_method is None:
        raise ProtocolError("AUTH, but the CONNECT had no Authentication Method",
                            "MQTT-4.12.0-7")
    if method != connection.auth_method:
        raise ProtocolError(f"AUTH with Authentication Method {method!r}, the CONNECT's was "
                            f"{connection.auth_method!r}", "MQTT-4.12.1-1")
    progress = connection.auth_exchange
    data = packet.properties.authentication_data
    if packet.reason_code == ReasonCode.RE_AUTHENTICATE:
        if connection.state is not State.CONNECTED:
            raise ProtocolError("AUTH Re-authenticate before CONNACK", "MQTT-4.12.1-1")
        if progress is not None:
            raise ProtocolError("AUTH Re-authenticate while a re-authentication is in progress",
                                "§4.12.1")
        enhanced = connection.broker.enhanced_authenticator
        exchange = enhanced.begin(method, _request(connection, connection.username)) \
            if enhanced is not None else None
        if exchange is None:  # no longer configured (reload): the method is now unknown
            _reauthentication_failed(connection, ReasonCode.BAD_AUTHENTICATION_METHOD,
                                     f"authentication method {method!r} is not supported")
            return
        log.info("client %s (%s) re-authenticating", connection.client_id, connection.peer)
        _step(connection, InProgress(exchange, None), data)
        return
    if progress is None or not progress.awaiting_client:
        raise ProtocolError("AUTH Continue authentication that answers no AUTH of the server",
                            "MQTT-4.12.0-3")
    _step(connection, progress, data)


def _step(connection: Connection, progress: InProgress, data: bytes | None) -> None:
    connection.auth_exchange = progress
    progress.awaiting_client = False
    if progress.connect is not None:
        # Nothing but this exchange's AUTH may come before CONNACK, and it cannot come before
        # our answer: stop reading until the step (maybe a slow derivation) has answered.
        connection.state = State.AUTHENTICATING
        connection.update_reading()
    progress.exchange.step(data, lambda step: _answered(connection, progress, step))


def _answered(connection: Connection, progress: InProgress, step: AuthStep) -> None:
    if connection.auth_exchange is not progress or connection.closed:
        return  # closed while the step ran (connection lost, connect timeout, taken over)
    if step.outcome is Outcome.CONTINUE:
        progress.awaiting_client = True
        connection.send(_auth(connection, ReasonCode.CONTINUE_AUTHENTICATION, step.data))
        if progress.connect is not None:
            connection.state = State.EXCHANGING
            connection.update_reading()
            connection.process_deferred()
        return
    connection.auth_exchange = None
    if progress.connect is not None:
        _connect_answered(connection, progress.connect, step)
    elif step.outcome is Outcome.FAILURE:
        _reauthentication_failed(connection, step.reason_code, step.reason)
    elif step.username != connection.username:
        _reauthentication_failed(connection, ReasonCode.NOT_AUTHORIZED,
                                 f"re-authenticated as {step.username!r}, connected as "
                                 f"{connection.username!r}")
    else:
        log.info("client %s (%s) re-authenticated as %r", connection.client_id,
                 connection.peer, step.username)
        connection.send(_auth(connection, ReasonCode.SUCCESS, step.data))


def _connect_answered(connection: Connection, packet: Connect5, step: AuthStep) -> None:
    connection.end_check()
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
    assert props is not None  # negotiate() set them for every MQTT 5 CONNECT
    props.authentication_method = connection.auth_method
    props.authentication_data = step.data
    log.info("client %s (%s) authenticated as %r with %s", connection.client_id,
             connection.peer, step.username, connection.auth_method)
    connection.authorize(packet)
    connection.process_deferred()


def _reauthentication_failed(connection: Connection, reason_code: int, reason: str) -> None:
    # [MQTT-4.12.1-2]: DISCONNECT and close. 0x86 and other CONNACK-only codes cannot go in a
    # DISCONNECT; Not authorized says the same there.
    if reason_code not in REASON_CODES_BY_PACKET[PacketType.DISCONNECT]:
        reason_code = ReasonCode.NOT_AUTHORIZED
    log.warning("client %s (%s) re-authentication failed, DISCONNECT %#04x (%s): %s",
                connection.client_id, connection.peer, reason_code,
                reason_name(reason_code, PacketType.DISCONNECT), reason)
    connection.close(publish_will=True, reason=reason_code)


def _auth(connection: Connection, reason_code: int, data: bytes | None) -> bytes:
    return encode_auth(reason_code, Properties(authentication_method=connection.auth_method,
                                               authentication_data=data))
