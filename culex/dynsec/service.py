"""Dynamic security at run time: who may connect, what a request changes, and how a change
reaches every worker.

- Authentication (the core's `Authenticator`): a client with a user name must be a client of
  the file with a password, and give that password (checked off the event loop: PBKDF2 is slow
  on purpose); a disabled client, or one that must use another client id, is refused. A client
  without a user name is let in when `allow_anonymous` says so; the anonymous group's roles are
  then what it may do. A certificate's name (`use_identity_as_username`) is let in by the TLS
  layer, and the ACL of the client of that name applies.
- Requests (the core's `ControlApi`): `$CONTROL/dynamic-security/v1` requests run one at a
  time, in order; the passwords a request sets are hashed off the event loop first. A change
  is written to the file atomically before it is answered; if that fails, the change is undone
  and its commands answer an error. Clients whose identity changed or went are disconnected
  (MQTT 5: DISCONNECT 0x98 Administrative action, as Mosquitto does), without their wills. The
  answer is published on `$CONTROL/dynamic-security/v1/response`, to whoever may read it.
- Workers: worker 0 runs every request (the others hand theirs over), so that the file has one
  writer. It sends each change to the other workers, which take the new state and disconnect
  their own clients that must go, and answers only once every worker has applied it: after
  `mosquitto_ctrl` returns, every worker checks with the new rules.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ..auth.files import write_atomically
from ..core.access import AuthDone, AuthRequest
from ..core.broker import Broker
from ..core.message import Message
from ..protocol.packets import ConnackCode
from ..protocol.reasons import ReasonCode
from . import commands, store
from .model import HASH_BYTES, ITERATIONS, SALT_BYTES, DynsecState, Password
from .request import Request
from .rules import DynsecRules

log = logging.getLogger("culex")

REQUEST_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = REQUEST_TOPIC + "/response"
# The worker that runs every request, and the bodies of the records between workers (on the
# links' DYNSEC service channel): a request handed over to it (the requester's length, the
# requester, the payload), and a change it made (the new file, then the user names to
# disconnect).
RUNNER = 0
DYNSEC = 1
HANDED_OVER = b"R"
CHANGED = b"C"
LENGTH = struct.Struct(">I")

T = TypeVar("T")


class Submit(Protocol):
    """Run `work` off the event loop, then `done` with its result on the loop."""

    def __call__(self, work: Callable[[], T], done: Callable[[T], None]) -> None: ...


class DynamicSecurity:
    def __init__(self, path: str, saved: bytes, state: DynsecState, *, allow_anonymous: bool,
                 submit: Submit) -> None:
        """`saved`: the file's bytes, `state` what they say (`store.parse`)."""
        self.path = path
        self.rules = DynsecRules(state)
        # What the file holds: the state to go back to when a change cannot be saved.
        self._saved = saved
        self.allow_anonymous = allow_anonymous
        self._submit = submit
        self._broker: Broker | None = None
        self._queue: deque[tuple[Any, str]] = deque()
        self._running = False
        self._dummy: tuple[int, Password] | None = None

    @property
    def state(self) -> DynsecState:
        return self.rules.state

    def attach(self, broker: Broker) -> None:
        """Serve through this broker: publish answers, disconnect clients, reach workers."""
        self._broker = broker
        if broker.links is not None:
            broker.links.serve(DYNSEC, self._notice)

    def reload(self, saved: bytes, state: DynsecState) -> None:
        """SIGHUP: the file as it is now, and what it says."""
        self.rules.replace(state)
        self._saved = saved

    # -- authentication ------------------------------------------------------------------------

    def authenticate(self, request: AuthRequest, done: AuthDone) -> None:
        if request.certificate_username is not None:
            done(ConnackCode.ACCEPTED)  # the TLS layer verified it; the ACL decides the rest
            return
        username = request.username
        if username is None:
            done(ConnackCode.ACCEPTED if self.allow_anonymous else ConnackCode.NOT_AUTHORIZED)
            return
        client = self.state.clients.get(username)
        stored = client.password if client is not None else None
        password = request.password
        if stored is None or password is None:
            # Unknown, without a password, or none given: the same work as a real check, so
            # the time taken does not tell who exists.
            dummy = self._dummy_password()
            self._submit(lambda: dummy.verify(b""),
                         lambda _: self._refused(request, done, "unknown user or no password"))
            return
        self._submit(lambda: stored.verify(password),
                     lambda ok: self._verified(request, done, stored, ok))

    def _dummy_password(self) -> Password:
        """A password nobody has, as costly to check as the first client's (mosquitto_ctrl
        writes 101 iterations, Culex 210,000): kept until the state changes."""
        if self._dummy is None or self._dummy[0] != self.rules.generation:
            first = next((client.password for client in self.state.clients.values()
                          if client.password is not None), None)
            self._dummy = (self.rules.generation, Password(
                bytes(HASH_BYTES), bytes(SALT_BYTES),
                first.iterations if first is not None else ITERATIONS))
        return self._dummy[1]

    def _verified(self, request: AuthRequest, done: AuthDone, checked: Password,
                  ok: bool) -> None:
        # The state may have changed while the password was checked: judge by the current one.
        client = self.state.clients.get(request.username or "")
        if client is None or client.password is not checked or not ok:
            self._refused(request, done, "wrong password")
        elif client.disabled:
            log.warning("client %s (%s): user %r is disabled", request.client_id, request.peer,
                        client.username)
            done(ConnackCode.NOT_AUTHORIZED)
        elif client.clientid is not None and client.clientid != request.client_id:
            log.warning("client %s (%s): user %r may only connect as client id %r",
                        request.client_id, request.peer, client.username, client.clientid)
            done(ConnackCode.NOT_AUTHORIZED)
        else:
            done(ConnackCode.ACCEPTED)

    @staticmethod
    def _refused(request: AuthRequest, done: AuthDone, why: str) -> None:
        log.warning("client %s (%s): user %r refused: %s", request.client_id, request.peer,
                    request.username, why)
        done(ConnackCode.BAD_USERNAME_OR_PASSWORD)

    # -- requests ------------------------------------------------------------------------------

    def serves(self, topic: str) -> bool:
        return topic == REQUEST_TOPIC

    def request(self, topic: str, payload: bytes, client_id: str,
                username: str | None) -> None:
        requester = f"client {client_id} (user {username})"
        links = self._broker.links if self._broker is not None else None
        if links is not None and links.index != RUNNER:
            encoded = requester.encode()
            links.send_service(DYNSEC, HANDED_OVER + LENGTH.pack(len(encoded)) + encoded
                               + payload, RUNNER, counted=True)
            return
        self._queue.append((commands.parse(payload), requester))
        if not self._running:
            self._next()

    def _next(self) -> None:
        """Run the oldest waiting request, its passwords hashed first (off the loop)."""
        if not self._queue:
            self._running = False
            return
        self._running = True
        tree, requester = self._queue.popleft()
        passwords = commands.passwords_in(tree)
        if not passwords:
            self._run(tree, requester, {})
            return
        self._submit(lambda: {password: Password.create(password) for password in passwords},
                     lambda hashes: self._run(tree, requester, hashes))

    def _run(self, tree: Any, requester: str, hashes: dict[str, Password]) -> None:
        request = commands.process(self.state, tree, hashes.__getitem__, requester)
        kick: set[str] = set()
        if request.changed:
            data = store.dumps(self.state)
            try:
                write_atomically(self.path, data)
            except OSError as exc:
                log.error("dynamic security: cannot write %s: %s; the change is undone",
                          self.path, exc.strerror or exc)
                self.rules.replace(store.parse(self._saved, self.path))
                request.undo(f"Internal error: the change could not be saved "
                             f"({exc.strerror or exc})")
            else:
                self._saved = data
                self.rules.changed()
                kick = request.kick
                self._tell_workers(data, kick)
        self._disconnect(kick)
        self._answer(request, waits=request.changed)

    def _tell_workers(self, data: bytes, kick: set[str]) -> None:
        links = self._broker.links if self._broker is not None else None
        if links is not None:
            names = "\n".join(sorted(kick)).encode()
            links.send_service(DYNSEC, CHANGED + LENGTH.pack(len(data)) + data + names,
                               counted=True)

    def _answer(self, request: Request, *, waits: bool) -> None:
        """Publish the answer (once every worker has applied the change it `waits` for), then
        run the next request."""
        assert self._broker is not None
        broker = self._broker
        payload = commands.response_payload(request)

        def publish() -> None:
            broker.publish(Message(RESPONSE_TOPIC, payload, 0, False))
            self._next()

        links = broker.links
        if links is None or not waits or not links.when_known(publish, links.sends):
            publish()

    def _disconnect(self, usernames: set[str]) -> None:
        """Close this worker's connections of these users (sessions stay, as in Mosquitto)."""
        if not usernames or self._broker is None:
            return
        for session in self._broker.sessions:
            connection = session.connection
            if connection is not None and session.username in usernames:
                log.info("dynamic security: disconnecting client %s (user %s)",
                         session.client_id, session.username)
                connection.close(publish_will=False, reason=ReasonCode.ADMINISTRATIVE_ACTION)

    # -- other workers -------------------------------------------------------------------------

    def _notice(self, worker: int, body: bytes) -> None:
        kind, length = body[:1], LENGTH.unpack_from(body, 1)[0]
        start = 1 + LENGTH.size
        if kind == HANDED_OVER:
            requester = body[start:start + length].decode()
            self._queue.append((commands.parse(body[start + length:]), requester))
            if not self._running:
                self._next()
        elif kind == CHANGED:
            data = body[start:start + length]
            self.rules.replace(store.parse(data, self.path))
            self._saved = data
            names = body[start + length:].decode()
            self._disconnect(set(names.split("\n")) if names else set())
