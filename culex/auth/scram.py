"""SCRAM-SHA-256 (RFC 5802, RFC 7677), the server side, sans-I/O: client message in, reply out.

MQTT 5 enhanced authentication (§4.12) carries the SASL messages as Authentication Data::

    CONNECT  method "SCRAM-SHA-256", data client-first   n,,n=user,r=<client nonce>
    AUTH 0x18                        data server-first   r=<client+server nonce>,s=<salt>,i=<n>
    AUTH 0x18                        data client-final   c=biws,r=<nonce>,p=<ClientProof>
    CONNACK 0x00                     data server-final   v=<ServerSignature>

(re-authentication runs the same messages in AUTH 0x19 / 0x18 / 0x18 / 0x00). The broker never
sees the password nor derives anything from it: checking a proof costs three HMACs, so the
expensive part (PBKDF2 with the stored iteration count) is entirely the client's.

Not supported, and refused rather than ignored: channel binding (`p=` in the GS2 header; a
client that merely could bind says `y` or `n`, which are accepted), an authorization identity
(`a=`: a client acts only as itself), and mandatory extensions (`m=`). Passwords are SASLprep'd
when `culex passwd` derives the stored keys (`passwords.saslprep`), as clients do before deriving
theirs; user names are matched as the client sends them (clients send them SASLprep'd, so a
password file should hold normalized names).

An unknown user gets a salt derived from a per-process secret and the name (stable across
attempts) and the usual iteration count, and fails only at the proof, exactly like a wrong
password: the exchange does not reveal which user names exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Final

from .passwords import (
    DEFAULT_SCRAM_ITERATIONS,
    SALT_BYTES,
    SCRAM_KEY_BYTES,
    ScramCredential,
    hmac_sha256,
)

METHOD: Final = "SCRAM-SHA-256"
# Server part of the nonce: 18 random bytes, 24 base64 characters (RFC 5802 asks for enough
# randomness that a nonce is never reused; 144 bits is what common implementations send).
NONCE_BYTES: Final = 18

Lookup = Callable[[str], ScramCredential | None]


class AuthFailed(Exception):
    """The exchange ends in refusal.

    `credentials` is True when the user name or password is wrong (the MQTT answer is 0x86 Bad
    User Name or Password); otherwise a message broke the mechanism's rules (0x87 Not
    authorized: the client is not identified, so it is not allowed in)."""

    def __init__(self, message: str, *, credentials: bool = False) -> None:
        super().__init__(message)
        self.credentials = credentials


class FakeCredentials:
    """Credentials for user names that have none, so that they look like real ones."""

    def __init__(self, iterations: int = DEFAULT_SCRAM_ITERATIONS) -> None:
        self.iterations = iterations
        self._secret = secrets.token_bytes(32)

    def for_user(self, username: str) -> ScramCredential:
        # The salt must be the same on every attempt (a real user's is), and no password may
        # match: the keys are HMAC outputs under a secret, not derived from any password.
        name = username.encode()
        return ScramCredential(self.iterations, hmac_sha256(self._secret, b"salt:" + name)
                               [:SALT_BYTES], hmac_sha256(self._secret, b"stored:" + name),
                               hmac_sha256(self._secret, b"server:" + name))


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise AuthFailed(f"SCRAM {what} is not valid base64") from None


def _attribute(part: str, name: str, message: str) -> str:
    if not part.startswith(name + "="):
        raise AuthFailed(f"SCRAM {message}: expected attribute {name}=, got {part[:8]!r}")
    return part[2:]


def _saslname(text: str) -> str:
    """RFC 5802 §5.1: ',' and '=' in a user name travel as '=2C' and '=3D'; no other '='."""
    if not text:
        raise AuthFailed("SCRAM client-first message has an empty user name")
    if "=" in text.replace("=2C", "").replace("=3D", ""):
        raise AuthFailed("SCRAM user name has an '=' that is not =2C or =3D")
    return text.replace("=2C", ",").replace("=3D", "=")


def _check_nonce(nonce: str) -> str:
    # printable = %x21-2B / %x2D-7E: visible ASCII except ','.
    if not nonce or not all(0x21 <= ord(c) <= 0x7E and c != "," for c in nonce):
        raise AuthFailed("SCRAM client nonce is empty or not printable ASCII")
    return nonce


class ScramServer:
    """One SCRAM-SHA-256 exchange: `step(client-first)` then `step(client-final)`.

    Not thread-safe, and need not be: the broker runs one step of an exchange at a time.
    `server_nonce` is for tests that replay RFC 7677's example; otherwise it is random.
    """

    def __init__(self, lookup: Lookup, fake: FakeCredentials,
                 server_nonce: str | None = None) -> None:
        self._lookup = lookup
        self._fake = fake
        self._server_nonce = server_nonce
        self.username: str | None = None
        self._known = False
        self._credential: ScramCredential | None = None
        self._gs2_header = b""
        self._nonce = ""
        self._first_messages = ""
        self._finished = False

    def step(self, data: bytes | None) -> tuple[bytes, bool]:
        """The reply to the client's next message and whether the exchange is complete (the
        reply is then server-final). AuthFailed ends the exchange."""
        if self._finished:
            raise AuthFailed("SCRAM exchange already complete")
        try:
            text = (data or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise AuthFailed("SCRAM message is not UTF-8") from None
        if self._credential is None:
            return self._client_first(text), False
        self._finished = True
        return self._client_final(text), True

    def _client_first(self, text: str) -> bytes:
        parts = text.split(",")
        if len(parts) < 4:
            raise AuthFailed("SCRAM client-first message is not gs2-header,n=..,r=..")
        cbflag, authzid = parts[0], parts[1]
        if cbflag.startswith("p="):
            raise AuthFailed("SCRAM channel binding is not supported (use SCRAM-SHA-256, "
                             "not -PLUS)")
        if cbflag not in ("n", "y"):
            raise AuthFailed(f"SCRAM GS2 channel-binding flag {cbflag!r} is not n, y or p=")
        if authzid:
            raise AuthFailed("SCRAM authorization identity (a=) is not supported")
        if parts[2].startswith("m="):
            raise AuthFailed("SCRAM mandatory extension (m=) is not supported")
        username = _saslname(_attribute(parts[2], "n", "client-first message"))
        client_nonce = _check_nonce(_attribute(parts[3], "r", "client-first message"))
        credential = self._lookup(username)
        self._known = credential is not None
        if credential is None:
            credential = self._fake.for_user(username)
        self.username = username
        self._credential = credential
        self._gs2_header = f"{cbflag},,".encode()
        server_nonce = self._server_nonce or base64.b64encode(
            secrets.token_bytes(NONCE_BYTES)).decode()
        self._nonce = client_nonce + server_nonce
        server_first = (f"r={self._nonce},s={base64.b64encode(credential.salt).decode()},"
                        f"i={credential.iterations}")
        self._first_messages = f"{','.join(parts[2:])},{server_first}"
        return server_first.encode()

    def _client_final(self, text: str) -> bytes:
        credential = self._credential
        assert credential is not None
        without_proof, separator, proof_text = text.rpartition(",p=")
        parts = without_proof.split(",")
        if not separator or len(parts) < 2:
            raise AuthFailed("SCRAM client-final message is not c=..,r=..,p=..")
        binding = _b64decode(_attribute(parts[0], "c", "client-final message"),
                             "channel binding")
        if not hmac.compare_digest(binding, self._gs2_header):
            raise AuthFailed("SCRAM channel binding data does not repeat the GS2 header")
        nonce = _attribute(parts[1], "r", "client-final message")
        if not hmac.compare_digest(nonce.encode(), self._nonce.encode()):
            raise AuthFailed("SCRAM client-final nonce is not the one the server sent")
        proof = _b64decode(proof_text, "proof")
        if len(proof) != SCRAM_KEY_BYTES:
            raise AuthFailed(f"SCRAM proof is {len(proof)} bytes, not {SCRAM_KEY_BYTES}")
        auth_message = f"{self._first_messages},{without_proof}".encode()
        signature = hmac_sha256(credential.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        # Both checks always run, so a known user with a wrong password and an unknown user
        # take the same time.
        matches = hmac.compare_digest(hashlib.sha256(client_key).digest(), credential.stored_key)
        if not (matches and self._known):
            raise AuthFailed(f"SCRAM proof for user {self.username!r} is wrong (wrong password "
                             "or unknown user)", credentials=True)
        verifier = hmac_sha256(credential.server_key, auth_message)
        return b"v=" + base64.b64encode(verifier)
