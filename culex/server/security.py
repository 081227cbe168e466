"""Authentication and authorization as configured: load, answer CONNECTs, reload on SIGHUP.

Password checks are scrypt/PBKDF2, slow on purpose, so they run on a small thread pool (hashlib
releases the GIL) and answer the core through `loop.call_soon_threadsafe`. The pool's size bounds
both the CPU and the memory (16 MiB per scrypt check) that a burst of CONNECTs can take.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from concurrent.futures import Future, ThreadPoolExecutor

from ..auth.acl import AclError, AclRules
from ..auth.passwords import PasswordFile, PasswordFileError
from ..config import AuthConfig, Listener
from ..core.access import AuthDone, AuthRequest
from ..core.broker import Broker
from ..protocol.packets import ConnackCode

log = logging.getLogger("culex")

PASSWORD_CHECK_THREADS = 2


class SecurityError(Exception):
    """A password or ACL file cannot be used; names the file and line."""


def load_files(config: AuthConfig) -> tuple[PasswordFile | None, AclRules | None]:
    try:
        passwords = PasswordFile.load(config.password_file) if config.password_file else None
        acl = AclRules.load(config.acl_file) if config.acl_file else None
    except (PasswordFileError, AclError) as exc:
        raise SecurityError(str(exc)) from None
    return passwords, acl


class Security:
    """The broker's authenticator, and the owner of the files it reloads."""

    def __init__(self, config: AuthConfig, allow_anonymous: bool,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.allow_anonymous = allow_anonymous
        self.loop = loop
        self.passwords, self.acl = load_files(config)
        self._pool = ThreadPoolExecutor(PASSWORD_CHECK_THREADS,
                                        thread_name_prefix="culex-auth")

    def install(self, broker: Broker) -> None:
        """Only a broker with something to check pays for the checks."""
        if self.passwords is not None or self.acl is not None or not self.allow_anonymous:
            broker.authenticator = self
        broker.acl = self.acl
        self._resolve_session_acls(broker)

    def authenticate(self, request: AuthRequest, done: AuthDone) -> None:
        if request.certificate_username is not None:
            done(ConnackCode.ACCEPTED)  # the TLS layer verified the certificate chain
            return
        passwords = self.passwords
        if request.username is None or passwords is None:
            done(ConnackCode.ACCEPTED if self.allow_anonymous else ConnackCode.NOT_AUTHORIZED)
            return
        username = request.username
        future = self._pool.submit(passwords.verify, username, request.password or b"")

        def answered(result: Future[bool]) -> None:
            ok = result.result()
            if not ok:
                log.warning("client %s (%s): wrong password for user %r", request.client_id,
                            request.peer, username)
            self.loop.call_soon_threadsafe(
                done, ConnackCode.ACCEPTED if ok else ConnackCode.BAD_USERNAME_OR_PASSWORD)

        future.add_done_callback(answered)

    def reload(self, broker: Broker, tls: list[tuple[Listener, ssl.SSLContext]]) -> None:
        """SIGHUP: re-read the password file, the ACL and certificates; keep the old ones
        if a new one is bad (CVE-2017-7652: a failed reload must not open the broker)."""
        try:
            passwords, acl = load_files(self.config)
            for listener, _context in tls:
                probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                probe.load_cert_chain(listener.certfile, listener.keyfile or None)
                if listener.cafile:
                    probe.load_verify_locations(listener.cafile)
        except (SecurityError, ssl.SSLError, OSError) as exc:
            log.error("reload refused, the previous files stay in force: %s", exc)
            return
        for listener, context in tls:
            context.load_cert_chain(listener.certfile, listener.keyfile or None)
            if listener.cafile:
                context.load_verify_locations(listener.cafile)
        self.passwords = passwords
        self.acl = broker.acl = acl
        self._resolve_session_acls(broker)
        log.info("reloaded: password file %s, ACL %s, %d TLS listener(s)",
                 self.config.password_file or "-", self.config.acl_file or "-", len(tls))

    @staticmethod
    def _resolve_session_acls(broker: Broker) -> None:
        """What each session may read under the ACL now in force: offline sessions too, so a
        message queued for one is checked against the rules of its owner."""
        acl = broker.acl
        for session in broker.sessions:
            if not session.owner_known:
                continue  # stored by a Culex before schema 3: resolved when its client connects
            session.acl = (acl.for_client(session.client_id, session.username)
                           if acl is not None else None)
            if session.connection is not None:
                session.connection.acl = session.acl

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
