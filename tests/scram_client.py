"""A SCRAM-SHA-256 client (RFC 5802/7677) for the tests, written from the RFC with hashlib/hmac
only and independently of `culex.auth.scram`, so that the two can disagree when one is wrong.

    client = ScramClient("user", b"pencil")
    first = client.first()                  # CONNECT Authentication Data
    final = client.final(server_first)      # the client's AUTH 0x18 data
    client.verify(server_final)             # CONNACK (or AUTH 0x00) data; raises if forged
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, "sha256").digest()


class ScramClient:
    def __init__(self, username: str, password: bytes, nonce: str | None = None) -> None:
        self.username = username
        self.password = password
        self.nonce = nonce or secrets.token_urlsafe(18)
        self._bare = ""
        self._auth_message = b""
        self._salted = b""

    def first(self) -> bytes:
        name = self.username.replace("=", "=3D").replace(",", "=2C")
        self._bare = f"n={name},r={self.nonce}"
        return f"n,,{self._bare}".encode()

    def final(self, server_first: bytes, *, password: bytes | None = None) -> bytes:
        """The client-final message; `password` overrides the right one to make a wrong proof."""
        fields = dict(item.split("=", 1) for item in server_first.decode().split(","))
        assert fields["r"].startswith(self.nonce), server_first
        salt = base64.b64decode(fields["s"])
        self._salted = hashlib.pbkdf2_hmac("sha256", password or self.password, salt,
                                           int(fields["i"]))
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={fields['r']}"
        self._auth_message = f"{self._bare},{server_first.decode()},{without_proof}".encode()
        client_key = _hmac(self._salted, b"Client Key")
        signature = _hmac(hashlib.sha256(client_key).digest(), self._auth_message)
        proof = bytes(x ^ y for x, y in zip(client_key, signature, strict=True))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        """The server proved it knows ServerKey (mutual authentication) or AssertionError."""
        expected = _hmac(_hmac(self._salted, b"Server Key"), self._auth_message)
        assert server_final == b"v=" + base64.b64encode(expected), server_final
