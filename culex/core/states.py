"""A connection's states, on their own so that the modules a `Connection` delegates to (the MQTT 5
handlers, enhanced authentication) can test them without importing `connection.py` back."""

from __future__ import annotations

from enum import Enum


class State(Enum):
    AWAITING_CONNECT = "awaiting CONNECT"
    # A check is running (a password, or one step of enhanced authentication): reading paused.
    AUTHENTICATING = "authenticating"
    # MQTT 5 enhanced authentication sent AUTH 0x18 and awaits the client's AUTH: only AUTH and
    # DISCONNECT may arrive [MQTT-3.1.2-30].
    EXCHANGING = "authentication exchange"
    # The CONNECT names a client id another worker owns: the connection moves there.
    MOVING = "moving to its worker"
    CONNECTED = "connected"
    CLOSED = "closed"
