"""Authentication and authorization as configured: load, answer CONNECTs, reload on SIGHUP.

Password checks are scrypt/PBKDF2, slow on purpose, so they run on a small thread pool (hashlib
releases the GIL) and answer the core through `loop.call_soon_threadsafe`. The pool's size bounds
both the CPU and the memory (16 MiB per scrypt check) that a burst of CONNECTs can take.

MQTT 5 enhanced authentication (`[auth] enhanced_methods`) runs each step of a mechanism on the
same pool. SCRAM-SHA-256's server steps are a few HMACs, but a mechanism's step is allowed to be
slow (a key derivation, a call to an identity provider), and one code path keeps it that way.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from ..auth import scram
from ..auth.acl import AclError, AclRules
from ..auth.passwords import DEFAULT_SCRAM_ITERATIONS, PasswordFile, PasswordFileError
from ..config import AuthConfig, Listener
from ..core.access import (
    AccessPolicy,
    AccessRules,
    AuthDone,
    AuthExchange,
    AuthRequest,
    AuthStep,
    Outcome,
    StepDone,
)
from ..core.broker import Broker
from ..dynsec import store as dynsec_store
from ..dynsec.model import ITERATIONS, DynsecState
from ..dynsec.service import DynamicSecurity
from ..dynsec.store import DynsecFileError
from ..protocol.packets import ConnackCode
from ..protocol.reasons import ReasonCode

log = logging.getLogger("culex")

PASSWORD_CHECK_THREADS = 2


T = TypeVar("T")

Submit = Callable[[Callable[[], AuthStep], StepDone], None]
"""Run a step's work somewhere (the thread pool; at once in tests) and hand its answer to done."""


class SecurityError(Exception):
    """A password or ACL file cannot be used; names the file and line."""


def scram_step(server: scram.ScramServer, data: bytes | None) -> AuthStep:
    """One SCRAM message in, the core's answer out: a wrong proof is 0x86 Bad User Name or
    Password in CONNACK, a message that breaks the mechanism 0x87 Not authorized."""
    try:
        reply, finished = server.step(data)
    except scram.AuthFailed as exc:
        return AuthStep(Outcome.FAILURE, reason_code=ReasonCode.BAD_USER_NAME_OR_PASSWORD
                        if exc.credentials else ReasonCode.NOT_AUTHORIZED, reason=str(exc))
    if finished:
        return AuthStep(Outcome.SUCCESS, reply, username=server.username)
    return AuthStep(Outcome.CONTINUE, reply)


class ScramExchange:
    """The core's `AuthExchange` over a sans-I/O `ScramServer`."""

    def __init__(self, server: scram.ScramServer, submit: Submit) -> None:
        self._server = server
        self._submit = submit

    def step(self, data: bytes | None, done: StepDone) -> None:
        self._submit(lambda: scram_step(self._server, data), done)


def scram_iterations(passwords: PasswordFile | None) -> int:
    """The iteration count unknown users are shown: the first SCRAM user's, so they blend in."""
    users = passwords.scram_users() if passwords is not None else []
    first = passwords.scram(users[0]) if passwords is not None and users else None
    return first.iterations if first is not None else DEFAULT_SCRAM_ITERATIONS


@dataclass(frozen=True, slots=True)
class AuthFiles:
    """The files `[auth]` names, read and checked."""

    passwords: PasswordFile | None = None
    acl: AclRules | None = None
    # The dynamic-security file's bytes and what they say.
    dynamic_security: tuple[bytes, DynsecState] | None = None


def load_files(config: AuthConfig) -> AuthFiles:
    try:
        passwords = PasswordFile.load(config.password_file) if config.password_file else None
        acl = AclRules.load(config.acl_file) if config.acl_file else None
        dynamic = None
        if config.dynamic_security:
            data = dynsec_store.read(config.dynamic_security)
            dynamic = data, dynsec_store.parse(data, config.dynamic_security)
    except (PasswordFileError, AclError, DynsecFileError) as exc:
        raise SecurityError(str(exc)) from None
    return AuthFiles(passwords, acl, dynamic)


class Security:
    """The broker's authenticator, and the owner of the files it reloads."""

    def __init__(self, config: AuthConfig, allow_anonymous: bool,
                 loop: asyncio.AbstractEventLoop, files: AuthFiles, *,
                 reports: bool = True) -> None:
        """`files`: from `load_files`, called before anything is bound (start-up step 1)."""
        self.config = config
        self.allow_anonymous = allow_anonymous
        self.loop = loop
        # Whether this process logs what concerns the files as a whole (weak hashes): with
        # worker processes, only worker 0 does, so the log says it once.
        self.reports = reports
        self.passwords, self.acl = files.passwords, files.acl
        self._report_weak_hashes()
        # One secret for the life of the process: an unknown user's fake salt stays the same
        # across reloads, as a real user's does.
        self._fake_scram = scram.FakeCredentials(scram_iterations(self.passwords))
        self._pool = ThreadPoolExecutor(PASSWORD_CHECK_THREADS,
                                        thread_name_prefix="culex-auth")
        self.dynamic: DynamicSecurity | None = None
        if files.dynamic_security is not None:
            self.dynamic = DynamicSecurity(config.dynamic_security, *files.dynamic_security,
                                           allow_anonymous=allow_anonymous,
                                           submit=self._submit)
            self._report_weak_dynamic_hashes(files.dynamic_security[1])

    def rules(self) -> AccessRules | None:
        """The access rules in force: dynamic security's, or the ACL file's."""
        return self.dynamic.rules if self.dynamic is not None else self.acl

    def attach(self, broker: Broker) -> None:
        """Dynamic security answers and acts through the broker."""
        if self.dynamic is not None:
            self.dynamic.attach(broker)

    def access_policy(self) -> AccessPolicy:
        """What the broker asks at CONNECT. Only a broker with something to check pays for
        the checks."""
        if self.dynamic is not None:
            return AccessPolicy(self.dynamic, None, self.dynamic.rules, self.dynamic)
        authenticator = self if (self.passwords is not None or self.acl is not None
                                 or not self.allow_anonymous) else None
        enhanced = None
        if self.config.enhanced_methods:
            enhanced = self
            if self.passwords is not None and not self.passwords.scram_users():
                log.warning("auth.enhanced_methods has %s, but %s has no SCRAM entries "
                            "(`culex passwd --scram`): every SCRAM login will fail",
                            scram.METHOD, self.config.password_file)
        return AccessPolicy(authenticator, enhanced, self.acl)

    def begin(self, method: str, request: AuthRequest) -> AuthExchange | None:
        """`EnhancedAuthenticator`: an exchange for a configured method, else None (0x8C)."""
        passwords = self.passwords
        if method != scram.METHOD or method not in self.config.enhanced_methods \
                or passwords is None:
            return None
        return ScramExchange(scram.ScramServer(passwords.scram, self._fake_scram), self._submit)

    def _submit(self, work: Callable[[], T], done: Callable[[T], None]) -> None:
        """Run `work` on the pool and hand its result to `done` on the event loop."""
        def finished(future: Future[T]) -> None:
            if future.cancelled():
                return  # shutting down (`close`)
            result = future.result()
            try:
                self.loop.call_soon_threadsafe(done, result)
            except RuntimeError:
                if not self.loop.is_closed():
                    raise
                # Shutting down: the loop has gone, and nobody waits for this answer.

        self._pool.submit(work).add_done_callback(finished)

    def authenticate(self, request: AuthRequest, done: AuthDone) -> None:
        if request.certificate_username is not None:
            done(ConnackCode.ACCEPTED)  # the TLS layer verified the certificate chain
            return
        passwords = self.passwords
        if request.username is None or passwords is None:
            done(ConnackCode.ACCEPTED if self.allow_anonymous else ConnackCode.NOT_AUTHORIZED)
            return
        username = request.username

        def answered(ok: bool) -> None:
            if not ok:
                log.warning("client %s (%s): wrong password for user %r", request.client_id,
                            request.peer, username)
            done(ConnackCode.ACCEPTED if ok else ConnackCode.BAD_USERNAME_OR_PASSWORD)

        self._submit(lambda: passwords.verify(username, request.password or b""), answered)

    def reload(self, broker: Broker, tls: list[tuple[Listener, ssl.SSLContext]]) -> None:
        """SIGHUP: re-read the password file, the ACL and certificates; keep the old ones
        if a new one is bad (CVE-2017-7652: a failed reload must not open the broker)."""
        try:
            files = load_files(self.config)
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
        self.passwords = files.passwords
        self._report_weak_hashes()
        self._fake_scram.iterations = scram_iterations(files.passwords)
        self.acl = files.acl
        if self.dynamic is not None and files.dynamic_security is not None:
            self.dynamic.reload(*files.dynamic_security)
            self._report_weak_dynamic_hashes(files.dynamic_security[1])
        broker.set_acl(self.rules())
        log.info("reloaded: password file %s, ACL %s, dynamic security %s, %d TLS "
                 "listener(s)", self.config.password_file or "-", self.config.acl_file or "-",
                 self.config.dynamic_security or "-", len(tls))

    def _report_weak_hashes(self) -> None:
        """One line naming the users whose hashes are cheap to guess (mosquitto_passwd's)."""
        weak = self.passwords.weak_users() if self.passwords is not None else []
        if weak and self.reports:
            users = ", ".join(f"{user} ({why})" for user, why in weak)
            log.warning("password file %s: %d user(s) with weak password hashes: %s; "
                        "`culex passwd --rehash %s USER` replaces each with the user's "
                        "password", self.config.password_file, len(weak), users,
                        self.config.password_file)

    def _report_weak_dynamic_hashes(self, state: DynsecState) -> None:
        weak = [f"{client.username} ({client.password.iterations} iterations)"
                for client in state.sorted_clients()
                if client.password is not None and client.password.iterations < ITERATIONS]
        if weak and self.reports:
            log.warning("dynamic security %s: %d client(s) with weak password hashes "
                        "(PBKDF2-SHA512): %s; a password set over the API (`mosquitto_ctrl "
                        "dynsec setClientPassword`) gets %d iterations",
                        self.config.dynamic_security, len(weak), ", ".join(weak), ITERATIONS)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
