"""Who may connect and what they may do: the authenticator interfaces the core asks,
asynchronously, at CONNECT, and the access rules it asks afterwards.

Checking a password is slow on purpose (scrypt), so the core never waits for it: it hands an
`AuthRequest` to the authenticator with a callback, stops reading from that connection, and
resumes when the answer (a CONNACK return code) arrives. The transport layer provides the real
authenticator, which verifies in a thread; tests provide one that answers at once.

MQTT 5 enhanced authentication is a conversation instead of one answer: the CONNECT names an
Authentication Method, and the `EnhancedAuthenticator` opens an `AuthExchange` for it that is
fed each client message and answers continue (AUTH 0x18 with its data), success or failure.
The core owns the protocol rules (which packets may arrive when, the method staying the same,
the connect timeout); the exchange owns only the mechanism, so a new one (Kerberos, OAuth
tokens) plugs in without touching the state machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from ..auth.acl import Access
from ..protocol.packets5 import Connect5


@dataclass(frozen=True, slots=True)
class AuthRequest:
    client_id: str
    username: str | None
    password: bytes | None
    # Subject CN of a verified client certificate, on listeners that use it as the user name.
    certificate_username: str | None
    peer: str


AuthDone = Callable[[int], None]
"""Called with 0 (accepted), 0x04 (bad user name or password) or 0x05 (not authorized)."""


class Authenticator(Protocol):
    def authenticate(self, request: AuthRequest, done: AuthDone) -> None: ...


# -- MQTT 5 enhanced authentication (§4.12) ----------------------------------------------------

class Outcome(Enum):
    CONTINUE = "continue"  # send the data in AUTH 0x18 and wait for the client's next AUTH
    SUCCESS = "success"    # done: the data (if any) goes in CONNACK or the final AUTH 0x00
    FAILURE = "failure"    # refuse: CONNACK `reason_code`, or DISCONNECT during re-authentication


@dataclass(frozen=True, slots=True)
class AuthStep:
    """A mechanism's answer to one client message."""

    outcome: Outcome
    data: bytes | None = None
    # SUCCESS: who the client proved to be; it becomes the connection's user name (for the ACL).
    username: str | None = None
    # FAILURE: an MQTT 5 CONNACK reason code (0x86, 0x87, ...) and why, for the log and the
    # CONNACK Reason String.
    reason_code: int = 0x87
    reason: str = ""


StepDone = Callable[[AuthStep], None]


class AuthExchange(Protocol):
    """One authentication exchange (a CONNECT's, or one re-authentication) of one connection.

    `step` gets the Authentication Data of the client's CONNECT or AUTH and answers through
    `done`, possibly later and from another thread's callback scheduled on the loop (key
    derivations are slow): the core asks for one step at a time and ignores answers that come
    after the connection closed."""

    def step(self, data: bytes | None, done: StepDone) -> None: ...


@dataclass(slots=True)
class AuthInProgress:
    """The enhanced authentication exchange a connection is in the middle of."""

    exchange: AuthExchange
    # The CONNECT being authenticated; None for a re-authentication.
    connect: Connect5 | None
    # What the handshake does with the final answer of a CONNECT's exchange.
    connect_answered: Callable[[AuthStep], None] | None = None
    # Our AUTH 0x18 is out: the client's AUTH 0x18 is now the expected answer.
    awaiting_client: bool = False


class EnhancedAuthenticator(Protocol):
    def begin(self, method: str, request: AuthRequest) -> AuthExchange | None:
        """A new exchange for `method`, or None when the method is not supported (CONNACK
        0x8C Bad authentication method)."""
        ...


# -- authorization ---------------------------------------------------------------------------

class ClientAccess(Protocol):
    """What one client may do, resolved once per connection (and per session) from the rules
    in force: an ACL file's `ClientAcl`, or dynamic security's view of the client, which
    follows its changes at the next check."""

    def allowed(self, topic: str, access: Access) -> bool:
        """Publish to (WRITE) or receive (READ) this topic name."""
        ...

    def allowed_filter(self, topic_filter: str) -> bool:
        """Subscribe to this filter (of a shared subscription, its inner filter)."""
        ...

    def allowed_unsubscribe(self, topic_filter: str) -> bool:
        """Unsubscribe from this filter: refused, the subscription stays (MQTT 5: 0x87)."""
        ...


class AccessRules(Protocol):
    def for_client(self, client_id: str, username: str | None) -> ClientAccess: ...


CONTROL_PREFIX = "$CONTROL/"


class ControlApi(Protocol):
    """An API served on `$CONTROL/...` topics (Mosquitto's plugins' request/response style):
    the core hands it the requests that the client's ACL lets through (see control.py)."""

    def serves(self, topic: str) -> bool: ...

    def request(self, topic: str, payload: bytes, client_id: str,
                username: str | None) -> None: ...


@dataclass(slots=True)
class AccessPolicy:
    """What the core asks about access: the authenticator at CONNECT (None: anyone may
    connect), the enhanced one for an Authentication Method (None: CONNACK 0x8C for every
    method), the ACL (None: anyone may publish and subscribe to anything) and the API served
    on `$CONTROL` (None: every `$CONTROL` request is dropped). The server's reload replaces
    `acl` (see `Broker.set_acl`)."""

    authenticator: Authenticator | None = None
    enhanced: EnhancedAuthenticator | None = None
    acl: AccessRules | None = None
    control: ControlApi | None = None
