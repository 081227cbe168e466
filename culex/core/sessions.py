"""Sessions and the connections that hold them: attach and takeover, detach, expiry, wills.

A CONNECT that passed every check attaches its connection to the client id's session: a new
one, the one kept since the client's last connection, or one taken over from a connection that
still holds it (that connection is closed first, and its will follows the rules below). When a
connection ends, a clean session ends with it; a kept one waits for its client for its Session
Expiry Interval (`on_timer` discards it then). A will is published when its connection ends
without a DISCONNECT, at once or, with an MQTT 5 Will Delay Interval, when the delay or the
session ends, whichever comes first (§3.1.3.2.2); a client that comes back within the delay
cancels it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable

from ..protocol.reasons import ReasonCode
from .access import ClientAccess
from .limits import Limits
from .message import Message
from .persistence import Persistence
from .ports import ClientLink
from .routing import Router
from .session import NEVER_EXPIRES, NO_PRESSURE, Session, SessionTable
from .stats import Stats
from .subscription_value import V5_SUBSCRIBER
from .timers import Clock, TimerHeap

log = logging.getLogger("culex")


class SessionManager:
    def __init__(self, limits: Limits, stats: Stats, clock: Clock, router: Router,
                 persistence: Persistence | None, *, owns: Callable[[str], bool],
                 set_timer: Callable[[float], None]) -> None:
        self._limits = limits
        self._stats = stats
        self._clock = clock
        self._router = router
        self._persistence = persistence
        # Whether this worker owns a client id's session (always, in one process).
        self._owns = owns
        self.sessions = SessionTable()
        # Every open connection, logged in or not.
        self.connections: set[ClientLink] = set()
        # Disconnected sessions with a finite Session Expiry Interval, by when they end
        # (`Session.expires_at` says which entry is current).
        self._expiries: TimerHeap[Session] = TimerHeap(set_timer)
        # Disconnected sessions holding a will until its Will Delay Interval ends
        # (`Session.will_at` says which entry is current).
        self._will_delays: TimerHeap[Session] = TimerHeap(set_timer)
        # Told of every connection that attaches to its session while someone watches for
        # one (the admin's packet trace of a client id); None the rest of the time.
        self.on_attach: Callable[[ClientLink], None] | None = None
        # Told of every client id whose session ended with its connection or expired (a
        # cluster gives up its claim on the id); None without a cluster.
        self.on_ended: Callable[[str], None] | None = None

    def assign_client_id(self) -> str:
        """An id for a client that sent none; with workers, one this worker owns."""
        while True:
            client_id = f"culex-{secrets.token_hex(8)}"
            if self._owns(client_id):
                return client_id

    def taking_over(self, client_id: str) -> bool:
        """Whether a connection for `client_id` would take a live session over (and so add no
        client to `max_connections`)."""
        session = self.sessions.get(client_id) if client_id else None
        return session is not None and session.connection is not None

    # -- attaching -----------------------------------------------------------------------------

    def attach(self, connection: ClientLink, client_id: str, *, clean_start: bool, expiry: int,
               v5: bool, username: str | None, acl: ClientAccess | None, max_inflight: int,
               will: Message | None) -> tuple[Session, bool]:
        """Give `connection` the session of `client_id`; returns it and whether it existed
        before (CONNACK's Session Present)."""
        existing = self.sessions.get(client_id)
        if existing is not None and existing.connection is not None:
            previous = existing.connection
            log.info("client %s (%s) taken over by a new connection from %s", client_id,
                     previous.address, connection.address)
            previous.close(publish_will=True, reason=ReasonCode.SESSION_TAKEN_OVER)
            existing = self.sessions.get(client_id)  # a clean session ended with its connection
        if existing is not None and existing.will is not None and not clean_start:
            # Back before the Will Delay Interval ended: the will is not sent [MQTT-3.1.3-9].
            # (With Clean Start 1 the old session ends just below, which publishes it.)
            log.info("client %s: reconnected within its will delay; will to %r discarded",
                     client_id, existing.will.topic)
            existing.will = None
            if self._persistence is not None:
                self._persistence.will_dropped(client_id)
        if clean_start and existing is not None:
            self.discard(existing)
            existing = None
        session = existing
        if session is None:
            session = self.new_session(client_id, persistent=bool(expiry))
        session.username = username
        self.set_session_expiry(session, expiry)
        if session.v5 is not v5:
            self._change_family(session, v5)
        session.expires_at = None
        session.max_inflight = max_inflight
        self.sessions.put(session)
        if will is not None and self._persistence is not None:
            self._persistence.will_kept(client_id, will)
        session.acl = acl
        session.owner_known = True
        session.connection = connection
        self._stats.client_connected()
        if self.on_attach is not None:
            self.on_attach(connection)
        return session, existing is not None

    def new_session(self, client_id: str, persistent: bool) -> Session:
        limits = self._limits
        return Session(client_id, not persistent, limits.max_inflight_messages,
                       limits.max_queued_messages,
                       persistence=self._persistence if persistent else None,
                       max_queued_bytes=limits.max_queued_bytes, clock=self._clock,
                       stats=self._stats)

    def set_session_expiry(self, session: Session, expiry: int) -> None:
        """A (new) Session Expiry Interval from CONNECT or DISCONNECT: 0 ends the session with
        its connection; anything else keeps it, in storage too, for that long after."""
        session.expiry_interval = expiry
        session.clean = not expiry
        if expiry and session.persistence is None:
            session.persistence = self._persistence
        if session.persistence is not None and expiry:
            session.persistence.session_saved(session.client_id, expiry, session.username)

    def _change_family(self, session: Session, v5: bool) -> None:
        """A session resumed by a client of the other protocol family: its subscriptions
        take that family's form (MQTT 5 options mean nothing to a 3.1.1 client)."""
        session.v5 = v5
        for topic_filter, value in list(session.subscriptions.items()):
            self._router.subscribe(session, topic_filter,
                                   value & 0x03 | (V5_SUBSCRIBER if v5 else 0))

    # -- detaching -----------------------------------------------------------------------------

    def detach(self, connection: ClientLink, session: Session | None, will: Message | None,
               will_delay: int, publish_will: bool) -> None:
        """A logged-in connection ended: its session goes or waits, and its will is
        published, delayed or dropped."""
        self._stats.clients_connected -= 1
        client_id = connection.client_id
        if session is not None and session.connection is connection:
            session.connection = None
            session.pressure = NO_PRESSURE  # its publishers were released with the connection
            if session.clean:
                self.discard(session)
                if self.on_ended is not None:
                    self.on_ended(client_id)
            else:
                self.expire_later(session)
                self._router.reassign_shared(session, ending=False)
        if will is None:
            return
        if publish_will and will_delay and session is not None and session.connection is None \
                and self.sessions.get(session.client_id) is session:
            # The will waits for its Will Delay Interval or the end of the session, whichever
            # comes first (§3.1.3.2.2); it stays in storage meanwhile, so a restart sends it.
            session.will = will
            session.will_at = when = self._clock.now + will_delay
            self._will_delays.push(when, session)
            log.info("client %s: will to %r delayed %d s", client_id, will.topic, will_delay)
            return
        if self._persistence is not None:
            self._persistence.will_dropped(client_id)
        if publish_will:
            self.publish_will(client_id, will)

    def wills_published_elsewhere(self, client_ids: Iterable[str]) -> int:
        """Another cluster member took these clients' wills from this member's store, and
        published them, while this one was presumed down: none goes out again from here,
        whether its client is still connected or its Will Delay Interval runs. How many."""
        dropped = 0
        for client_id in client_ids:
            session = self.sessions.get(client_id)
            if session is None:
                continue
            if session.connection is not None and session.connection.drop_will():
                dropped += 1
            if session.will is not None:
                session.will = None
                dropped += 1
        return dropped

    def publish_will(self, client_id: str, will: Message) -> None:
        """Publish a will now. Its Message Expiry Interval counts from now, not from the
        CONNECT that carried it."""
        log.info("client %s: publishing its will to %r", client_id, will.topic)
        will.created = self._clock.now
        self._router.publish(will)

    def expire_later(self, session: Session) -> None:
        """A session lost its connection: end it when its Session Expiry Interval has passed
        (`on_timer` does), unless a client resumes it first."""
        if session.expiry_interval == NEVER_EXPIRES:
            return
        session.expires_at = when = self._clock.now + session.expiry_interval
        self._expiries.push(when, session)

    def discard(self, session: Session) -> None:
        """End a session. A will still waiting for its delay goes out now: the session's end
        comes first (§3.1.3.2.2)."""
        self._end(session, moved=False)

    def hand_off(self, session: Session) -> None:
        """The session moves to another cluster node, or that node owns its client id now
        (session_moves.py): it ends here without its will (its client is back, there) and
        keeps its shared subscriptions' messages (they went with it, or go with it)."""
        self._end(session, moved=True)

    def _end(self, session: Session, *, moved: bool) -> None:
        will = session.will
        if will is not None:
            session.will = None
            if self._persistence is not None:
                self._persistence.will_dropped(session.client_id)
            if not moved:
                self.publish_will(session.client_id, will)
        for topic_filter in session.subscriptions:
            self._router.remove_from_tries(session, topic_filter)
        session.subscriptions.clear()
        if not moved:
            self._router.reassign_shared(session, ending=True)
        session.forget()
        if self.sessions.get(session.client_id) is session:
            self.sessions.delete(session.client_id)

    # -- time ----------------------------------------------------------------------------------

    @property
    def next_deadline(self) -> float | None:
        expiry, will = self._expiries.next, self._will_delays.next
        if expiry is None or will is None:
            return will if expiry is None else expiry
        return min(expiry, will)

    def on_timer(self, now: float) -> None:
        """Discard the disconnected sessions whose Session Expiry Interval ran out
        [MQTT-4.1.0-2], and publish the wills whose Will Delay Interval ended with their
        client still away."""
        for when, session in self._expiries.pop_due(now):
            if session.connection is not None or session.expires_at != when:
                continue  # resumed since, or its expiry changed: a newer entry decides
            if self.sessions.get(session.client_id) is session:
                log.info("client %s: session expired after %d s", session.client_id,
                         session.expiry_interval)
                self.discard(session)
                if self.on_ended is not None:
                    self.on_ended(session.client_id)
        for when, session in self._will_delays.pop_due(now):
            will = session.will
            if will is None or session.will_at != when:
                continue  # cancelled by a reconnect or published when the session ended
            session.will = None
            if self._persistence is not None:
                self._persistence.will_dropped(session.client_id)
            self.publish_will(session.client_id, will)
