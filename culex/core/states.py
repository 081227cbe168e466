"""A connection's states and every transition between them, in one table (as h11 keeps its
state machine): `connection.py`, `handshake.py` and `enhanced_auth.py` change a connection's
state only through `next_state`, so this table is the whole story.

    AWAITING_CONNECT ─CHECK─▶ AUTHENTICATING ─ANSWERED─▶ AWAITING_CONNECT ─ACCEPTED─▶ CONNECTED
          │                     │       ▲
          │              CHALLENGED   CHECK  (MQTT 5 enhanced authentication: AUTH 0x18 out,
          │                     ▼       │     the client's AUTH in, the next step runs)
          │                   EXCHANGING
          └─OTHER_WORKER─▶ MOVING ─HANDED_OVER─▶ CLOSED   (MOVE_REFUSED: back, to refuse it)

    every state ──CLOSE──▶ CLOSED
"""

from __future__ import annotations

from enum import Enum
from typing import Final


class State(Enum):
    AWAITING_CONNECT = "awaiting CONNECT"
    # A check is running (a password, one step of enhanced authentication, or a cluster's claim
    # of the client id): reading paused.
    AUTHENTICATING = "authenticating"
    # MQTT 5 enhanced authentication sent AUTH 0x18 and awaits the client's AUTH: only AUTH and
    # DISCONNECT may arrive [MQTT-3.1.2-30].
    EXCHANGING = "authentication exchange"
    # The CONNECT names a client id another worker owns: the connection moves there.
    MOVING = "moving to its worker"
    CONNECTED = "connected"
    CLOSED = "closed"


class Event(Enum):
    CHECK = "a password check, authentication step or cluster claim starts"
    ANSWERED = "the check answered"
    CHALLENGED = "the authentication step asks the client for more (AUTH 0x18)"
    OTHER_WORKER = "the CONNECT's client id belongs to another worker"
    MOVE_REFUSED = "the input behind that CONNECT is refused here"
    HANDED_OVER = "the connection went to its worker"
    ACCEPTED = "CONNACK 0x00"
    CLOSE = "the connection closes"


_TRANSITIONS: Final[dict[tuple[State, Event], State]] = {
    (State.AWAITING_CONNECT, Event.CHECK): State.AUTHENTICATING,
    (State.EXCHANGING, Event.CHECK): State.AUTHENTICATING,
    (State.AUTHENTICATING, Event.ANSWERED): State.AWAITING_CONNECT,
    (State.AUTHENTICATING, Event.CHALLENGED): State.EXCHANGING,
    (State.AWAITING_CONNECT, Event.OTHER_WORKER): State.MOVING,
    (State.MOVING, Event.MOVE_REFUSED): State.AWAITING_CONNECT,
    (State.MOVING, Event.HANDED_OVER): State.CLOSED,
    (State.AWAITING_CONNECT, Event.ACCEPTED): State.CONNECTED,
    **{(state, Event.CLOSE): State.CLOSED for state in State},
}


def next_state(state: State, event: Event) -> State:
    """The state `event` leads to from `state`; a KeyError is a bug in the caller."""
    return _TRANSITIONS[state, event]
