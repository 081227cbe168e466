"""MQTT 5 enhanced authentication and re-authentication (§4.12): the protocol's half.

The mechanism (SCRAM, ...) is an `AuthExchange` from the `EnhancedAuthenticator`; this module
enforces who may send what, and when::

    CONNECT(method, data) ─start─> AUTHENTICATING: one step runs, reading paused
        step CONTINUE ─> AUTH 0x18(method, data) ─> EXCHANGING: only AUTH 0x18 or DISCONNECT
            client AUTH 0x18(method, data) ─> AUTHENTICATING: the next step runs
        step SUCCESS or FAILURE ─> the handshake answers the CONNECT (handshake.py)
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
from collections.abc import Callable

from ..protocol.errors import ProtocolError
from ..protocol.packets import PacketType
from ..protocol.packets5 import Auth, Connect5
from ..protocol.properties import Properties
from ..protocol.reasons import REASON_CODES_BY_PACKET, ReasonCode, reason_name
from ..protocol.v5 import encode_auth
from .access import AuthExchange, AuthInProgress, AuthRequest, AuthStep, Outcome
from .connection import Connection
from .states import Event, State, next_state

log = logging.getLogger("culex")


def auth_request(connection: Connection, username: str | None) -> AuthRequest:
    return AuthRequest(connection.client_id, username, None, connection.certificate_username,
                       connection.address)


def start(connection: Connection, exchange: AuthExchange, packet: Connect5,
          answered: Callable[[AuthStep], None]) -> None:
    """Run the first step of a CONNECT's exchange; `answered` gets its final step."""
    connection.auth_method = packet.properties.authentication_method
    _step(connection, AuthInProgress(exchange, packet, answered),
          packet.properties.authentication_data)


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
        enhanced = connection.core.access.enhanced
        exchange = enhanced.begin(method, auth_request(connection, connection.username)) \
            if enhanced is not None else None
        if exchange is None:  # no longer configured (reload): the method is now unknown
            _reauthentication_failed(connection, ReasonCode.BAD_AUTHENTICATION_METHOD,
                                     f"authentication method {method!r} is not supported")
            return
        log.info("client %s (%s) re-authenticating", connection.client_id, connection.address)
        _step(connection, AuthInProgress(exchange, None), data)
        return
    if progress is None or not progress.awaiting_client:
        raise ProtocolError("AUTH Continue authentication that answers no AUTH of the server",
                            "MQTT-4.12.0-3")
    _step(connection, progress, data)


def _step(connection: Connection, progress: AuthInProgress, data: bytes | None) -> None:
    connection.auth_exchange = progress
    progress.awaiting_client = False
    if progress.connect is not None:
        # Nothing but this exchange's AUTH may come before CONNACK, and it cannot come before
        # our answer: stop reading until the step (maybe a slow derivation) has answered.
        connection.state = next_state(connection.state, Event.CHECK)
        connection.update_reading()
    progress.exchange.step(data, lambda step: _answered(connection, progress, step))


def _answered(connection: Connection, progress: AuthInProgress, step: AuthStep) -> None:
    if connection.auth_exchange is not progress or connection.closed:
        return  # closed while the step ran (connection lost, connect timeout, taken over)
    if step.outcome is Outcome.CONTINUE:
        progress.awaiting_client = True
        connection.send(_auth(connection, ReasonCode.CONTINUE_AUTHENTICATION, step.data))
        if progress.connect is not None:
            connection.state = next_state(connection.state, Event.CHALLENGED)
            connection.update_reading()
            connection.process_deferred()
        return
    connection.auth_exchange = None
    if progress.connect_answered is not None:
        progress.connect_answered(step)
    elif step.outcome is Outcome.FAILURE:
        _reauthentication_failed(connection, step.reason_code, step.reason)
    elif step.username != connection.username:
        _reauthentication_failed(connection, ReasonCode.NOT_AUTHORIZED,
                                 f"re-authenticated as {step.username!r}, connected as "
                                 f"{connection.username!r}")
    else:
        log.info("client %s (%s) re-authenticated as %r", connection.client_id,
                 connection.address, step.username)
        connection.send(_auth(connection, ReasonCode.SUCCESS, step.data))


def _reauthentication_failed(connection: Connection, reason_code: int, reason: str) -> None:
    # [MQTT-4.12.1-2]: DISCONNECT and close. 0x86 and other CONNACK-only codes cannot go in a
    # DISCONNECT; Not authorized says the same there.
    if reason_code not in REASON_CODES_BY_PACKET[PacketType.DISCONNECT]:
        reason_code = ReasonCode.NOT_AUTHORIZED
    log.warning("client %s (%s) re-authentication failed, DISCONNECT %#04x (%s): %s",
                connection.client_id, connection.address, reason_code,
                reason_name(reason_code, PacketType.DISCONNECT), reason)
    connection.close(publish_will=True, reason=reason_code)


def _auth(connection: Connection, reason_code: int, data: bytes | None) -> bytes:
    return encode_auth(reason_code, Properties(authentication_method=connection.auth_method,
                                               authentication_data=data))
