"""Who may connect: the authenticator interface the core asks, asynchronously, at CONNECT.

Checking a password is slow on purpose (scrypt), so the core never waits for it: it hands an
`AuthRequest` to the authenticator with a callback, stops reading from that connection, and
resumes when the answer (a CONNACK return code) arrives. The transport layer provides the real
authenticator, which verifies in a thread; tests provide one that answers at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


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
