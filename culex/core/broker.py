"""The broker: sessions, routing, retained messages, wills, timers and $SYS, without I/O.

The transport layer owns sockets and the clock. It tells the broker about new connections,
bytes and losses with the current time, calls `tick(now)` a few times a second, and sets `wake`
to something that calls `flush()` once later in the same loop tick (`loop.call_soon`), so all
frames queued during one tick leave in a single write per connection.
"""

from __future__ import annotations

import heapq
import logging
import secrets
from collections.abc import Callable

from .. import __version__
from ..auth.acl import Access, AclRules
from ..protocol.packets import Connect
from ..protocol.reasons import ReasonCode
from ..protocol.topics import split_shared
from ..protocol.v5 import Connect5
from ..storage.base import LoadedState, Storage
from .access import Authenticator, EnhancedAuthenticator
from .cluster import Cluster, Peer, next_stamp
from .connection import Connection, Sink, validate_topic_name
from .limits import Limits
from .message import Message
from .options import Mqtt5Options
from .persistence import Persistence, restored_message, stored_form
from .retained import RetainedStore
from .session import (
    GAVE_UP,
    HOLDING,
    NEVER_EXPIRES,
    NO_PRESSURE,
    MemorySessionStore,
    Outgoing,
    Session,
    SessionStore,
)
from .shared import SharedGroup, SharedSubscriptions
from .states import State
from .subscription_value import (
    IDENTIFIER_SHIFT,
    NO_LOCAL,
    RETAIN_AS_PUBLISHED,
    V5_SUBSCRIBER,
    WITH_IDENTIFIER,
)
from .trie import SubscriptionTrie

log = logging.getLogger("culex")

# Distinct topic names whose validation is cached; a publisher spraying unique names only
# costs a cache reset now and then.
TOPIC_NAME_CACHE_SIZE = 100_000

# The trie's value for a subscription is an int: the granted QoS for a 3.1/3.1.1 client, and
# for an MQTT 5 client its options and Subscription Identifiers (layout in options.py). Routing
# then tells the families apart with one integer comparison (`granted > 2`) per delivery
# instead of an attribute lookup, and the 3.1.1 hot path is unchanged.


def plain_payload_offset(frame: bytes, v5: bool) -> int:
    """Where the payload starts in a QoS 0 PUBLISH frame: after the fixed header (1 + 1..4
    length bytes), the topic, and for MQTT 5 the property block (empty on this path)."""
    pos = 1
    while frame[pos] & 0x80:
        pos += 1
    pos += 1
    return pos + 2 + ((frame[pos] << 8) | frame[pos + 1]) + (1 if v5 else 0)


class Broker:
    def __init__(self, limits: Limits | None = None, *, sys_interval: float = 10.0,
                 sessions: SessionStore | None = None, storage: Storage | None = None,
                 now: float = 0.0, mqtt5: Mqtt5Options | None = None) -> None:
        self.limits = limits or Limits()
        self.mqtt5 = mqtt5 or Mqtt5Options()
        # Both None (the default): anyone may connect, publish and subscribe.
        self.authenticator: Authenticator | None = None
        # MQTT 5 enhanced authentication; None: every Authentication Method gets CONNACK 0x8C.
        self.enhanced_authenticator: EnhancedAuthenticator | None = None
        self.acl: AclRules | None = None
        self.persistence = (Persistence(storage, lambda: self.now) if storage is not None
                            else None)
        # Frames that may leave only after the commit in progress (or the next one): acks of
        # what must be durable, QoS 2 deliveries to persistent sessions. Order is kept.
        self._held: list[tuple[Connection, list[bytes], bool]] = []
        # What else waits for that commit: a peer worker's barrier answer (cluster.py).
        self._after_commit: list[Callable[[], None]] = []
        self._commit_in_flight = False
        self._storage_failing = False
        # Publishers with packets read but held back (`Connection._process`, and a link's
        # records in `Cluster._apply`) whose subscribers have drained.
        self._resuming: list[Connection | Peer] = []
        self.sys_interval = sys_interval
        self.sessions: SessionStore = sessions if sessions is not None else MemorySessionStore()
        self.subscriptions: SubscriptionTrie[Session] = SubscriptionTrie()
        self.shared = SharedSubscriptions(self.limits.shared_subscription_strategy)
        # The same dict as `shared.groups`: routing asks it, one attribute per PUBLISH (not per
        # delivery), whether any shared subscription exists before looking for groups.
        self.shared_groups = self.shared.groups
        self.retained = RetainedStore()
        # Retained topics whose stored row another worker holds (see `_retain`); always empty
        # in single-process mode.
        self._retained_unheld: set[str] = set()
        # The newest retained stamp made or seen (see cluster.py); storage keeps the newest.
        self.last_stamp = 0
        # Wall-clock time, for retained stamps only (the transport gives time.time; ordering
        # stamps across processes needs a clock they share, read when the stamp is made).
        self.wall_clock: Callable[[], float] = lambda: self.now
        # Worker processes: None in single-process mode (see cluster.py).
        self.cluster: Cluster | None = None
        self.connections: set[Connection] = set()
        self.topic_names: dict[bytes, str] = {}
        self.wake: Callable[[], None] = lambda: None
        # How a connection's sink is closed once its last frames are flushed; the transport
        # layer replaces it with a lingering close (see server/transport.py).
        self.close_sink: Callable[[Sink], None] = lambda sink: sink.close()
        self._ready: list[Connection] = []
        self._fair_paused: list[Connection] = []
        # Full subscriber -> the publishers paused until it drains (a peer worker's link can
        # be either).
        self._stalled: dict[Connection | Peer, set[Connection | Peer]] = {}
        self._deadlines: list[tuple[float, int, Connection]] = []
        self._deadline_seq = 0
        self._scheduled: dict[Connection, float] = {}
        # Disconnected sessions with a finite Session Expiry Interval: (expires_at, seq, session).
        self._session_expiries: list[tuple[float, int, Session]] = []
        # Disconnected sessions holding a will until its Will Delay Interval ends:
        # (publish_at, seq, session); `Session.will_at` says which entry is current.
        self._will_delays: list[tuple[float, int, Session]] = []
        # The time of the input or tick being handled: what message expiry is measured with.
        self.now = now
        self.started_at = now
        self._next_sys = now
        self._sys_last: dict[str, str] = {}
        # Counters for $SYS. Bytes and packets sent are counted per connection (cheaper on the
        # hot path) and folded in here when a connection closes.
        self.bytes_received = 0
        self.packets_received = 0
        self.publishes_received = 0
        self.publishes_dropped = 0
        self.retained_dropped = 0
        self.closed_bytes_sent = 0
        self.closed_packets_sent = 0
        self.closed_publishes_sent = 0
        self.clients_connected = 0
        self.clients_maximum = 0

    # -- connections ---------------------------------------------------------------------------

    def assign_client_id(self) -> str:
        """An id for a client that sent none; with workers, one this worker owns."""
        while True:
            client_id = f"culex-{secrets.token_hex(8)}"
            if self.cluster is None or self.cluster.owns(client_id):
                return client_id

    def move(self, connection: Connection, data: bytes) -> None:
        """The CONNECT names a client id another worker owns: hand the connection over with
        everything read from it so far (`data`, from the CONNECT on). It ends here silently;
        the owner answers the CONNECT as if it had read it itself."""
        cluster = self.cluster
        assert cluster is not None
        self.connections.discard(connection)
        self._scheduled.pop(connection, None)
        connection.state = State.CLOSED
        connection.sink_gone = True
        cluster.move(cluster.owner(connection.client_id), connection.sink, data, connection.peer,
                     connection.certificate_username)

    def open_connection(self, sink: Sink, peer: str, now: float) -> Connection:
        connection = Connection(self, sink, peer, now)
        self.connections.add(connection)
        self.schedule(connection, now + self.limits.connect_timeout)
        return connection

    def accept(self, connection: Connection, packet: Connect | Connect5) -> None:
        """CONNECT passed every check: attach a session, answer CONNACK, resume the session."""
        client_id = packet.client_id
        if isinstance(packet, Connect5):
            clean_start = packet.clean_start
            expiry = packet.properties.session_expiry_interval or 0
        else:
            clean_start = packet.clean_session
            expiry = 0 if packet.clean_session else NEVER_EXPIRES
        existing = self.sessions.get(client_id)
        if existing is not None and existing.connection is not None:
            previous = existing.connection
            log.info("client %s (%s) taken over by a new connection from %s", client_id,
                     previous.peer, connection.peer)
            previous.close(publish_will=True, reason=ReasonCode.SESSION_TAKEN_OVER)
            existing = self.sessions.get(client_id)  # a clean session ended with its connection
        if existing is not None and existing.will is not None and not clean_start:
            # Back before the Will Delay Interval ended: the will is not sent [MQTT-3.1.3-9].
            # (With Clean Start 1 the old session ends just below, which publishes it.)
            log.info("client %s: reconnected within its will delay; will to %r discarded",
                     client_id, existing.will.topic)
            existing.will = None
            if self.persistence is not None:
                self.persistence.storage.will_cleared(client_id)
        if clean_start and existing is not None:
            self._discard_session(existing)
            existing = None
        session_present = existing is not None
        session = existing
        if session is None:
            persistence = None if not expiry else self.persistence
            session = Session(client_id, not expiry, self.limits.max_inflight_messages,
                              self.limits.max_queued_messages, persistence=persistence,
                              max_queued_bytes=self.limits.max_queued_bytes)
        session.username = connection.username
        self.set_session_expiry(session, expiry)
        if session.v5 is not connection.v5:
            self._change_family(session, connection.v5)
        session.expires_at = None
        session.max_inflight = connection.receive_maximum
        self.sessions.put(session)
        will = connection.will
        if will is not None and self.persistence is not None:
            # Kept on disk while the client is connected: if the broker dies, the client's
            # connection died with it, and the will goes out when the broker restarts.
            # (A will's Message Expiry counts from its publication: nothing to count yet.)
            self.persistence.storage.will_set(client_id, stored_form(will, 0, will.created))
        session.acl = connection.acl
        session.owner_known = True
        session.connection = connection
        connection.session = session
        connection.state = State.CONNECTED
        connection.keepalive = packet.keepalive
        # Keep-alive counts from acceptance: a slow password check is our time, not silence.
        connection.last_activity = max(connection.last_activity, self.now)
        self.clients_connected += 1
        self.clients_maximum = max(self.clients_maximum, self.clients_connected)
        connection.send(connection.connack(session_present))
        log.info("client %s connected from %s (protocol level %d, clean session %d, "
                 "keep-alive %d s, session present %d)", client_id, connection.peer,
                 packet.protocol_level, clean_start, packet.keepalive, session_present)
        if session_present:
            session.resume()
        deadline = connection.deadline()
        if deadline is not None:
            self.schedule(connection, deadline)

    def connection_closed(self, connection: Connection, was_connected: bool,
                          publish_will: bool) -> None:
        self.connections.discard(connection)
        self.release_publishers(connection)
        self._scheduled.pop(connection, None)
        self.closed_bytes_sent += connection.bytes_sent
        self.closed_packets_sent += connection.packets_sent
        self.closed_publishes_sent += connection.publishes_sent
        if not was_connected:
            return
        self.clients_connected -= 1
        session = connection.session
        if session is not None and session.connection is connection:
            session.connection = None
            session.pressure = NO_PRESSURE  # its publishers were released just above
            if session.clean:
                self._discard_session(session)
            else:
                self._expire_later(session)
                self._hand_over(session, ending=False)
        will, connection.will = connection.will, None
        if will is None:
            return
        delay = connection.will_delay
        if publish_will and delay and session is not None and session.connection is None \
                and self.sessions.get(session.client_id) is session:
            # The will waits for its Will Delay Interval or the end of the session, whichever
            # comes first (§3.1.3.2.2); it stays in storage meanwhile, so a restart sends it.
            session.will = will
            session.will_at = when = self.now + delay
            self._deadline_seq += 1
            heapq.heappush(self._will_delays, (when, self._deadline_seq, session))
            log.info("client %s: will to %r delayed %d s", connection.client_id, will.topic,
                     delay)
            return
        if self.persistence is not None:
            self.persistence.storage.will_cleared(connection.client_id)
        if publish_will:
            self._publish_will(connection.client_id, will)

    def _publish_will(self, client_id: str, will: Message) -> None:
        """Publish a will now. Its Message Expiry Interval counts from now, not from the
        CONNECT that carried it."""
        log.info("client %s: publishing its will to %r", client_id, will.topic)
        will.created = self.now
        self.publish(will)

    def set_session_expiry(self, session: Session, expiry: int) -> None:
        """A (new) Session Expiry Interval from CONNECT or DISCONNECT: 0 ends the session with
        its connection; anything else keeps it, in storage too, for that long after."""
        session.expiry_interval = expiry
        session.clean = not expiry
        if expiry and session.persistence is None:
            session.persistence = self.persistence
        if session.persistence is not None and expiry:
            session.persistence.storage.session_saved(session.client_id, expiry,
                                                      session.username)

    def _expire_later(self, session: Session) -> None:
        """A session lost its connection: end it when its Session Expiry Interval has passed
        (`tick` does), unless a client resumes it first."""
        if session.expiry_interval == NEVER_EXPIRES:
            return
        session.expires_at = when = self.now + session.expiry_interval
        self._deadline_seq += 1
        heapq.heappush(self._session_expiries, (when, self._deadline_seq, session))

    def _change_family(self, session: Session, v5: bool) -> None:
        """A session resumed by a client of the other protocol family: its subscriptions
        take that family's form (MQTT 5 options mean nothing to a 3.1.1 client)."""
        session.v5 = v5
        for topic_filter, granted in list(session.subscriptions.items()):
            self.subscribe(session, topic_filter, granted & 0x03 | (V5_SUBSCRIBER if v5 else 0))

    def _discard_session(self, session: Session) -> None:
        """End a session. A will still waiting for its delay goes out now: the session's end
        comes first (§3.1.3.2.2)."""
        will = session.will
        if will is not None:
            session.will = None
            if self.persistence is not None:
                self.persistence.storage.will_cleared(session.client_id)
            self._publish_will(session.client_id, will)
        for topic_filter in session.subscriptions:
            self._trie_remove(session, topic_filter)
        session.subscriptions.clear()
        self._hand_over(session, ending=True)
        session.forget()
        if self.sessions.get(session.client_id) is session:
            self.sessions.delete(session.client_id)

    # -- output scheduling ---------------------------------------------------------------------

    def read_next_tick(self, connection: Connection) -> None:
        """The connection used its fair share of this tick: read it again after the flush."""
        connection.update_reading()
        self._fair_paused.append(connection)
        self.wake()

    def mark_ready(self, connection: Connection) -> None:
        ready = self._ready
        ready.append(connection)
        if len(ready) == 1:
            self.wake()

    def resume_deferred(self, publisher: Connection | Peer) -> None:
        """A publisher (a client, or the link from another worker) whose subscriber drained
        has packets read but not yet handled: handle them at the end of this tick, not from
        within whatever released it."""
        self._resuming.append(publisher)
        self.wake()

    def flush(self) -> None:
        """Write every connection that queued output this tick, one `writelines` each; then
        start the group commit of what this tick changed (`durability = "sync"`)."""
        if self._resuming:
            resuming, self._resuming = self._resuming, []
            for publisher in resuming:
                if publisher.state is State.CONNECTED and not publisher.throttled_by:
                    publisher.last_activity = self.now  # publishing again, as after a read
                    publisher.process_deferred()
                    publisher.update_reading()
        ready, self._ready = self._ready, []
        for connection in ready:
            connection.flush()
        if self.cluster is not None:
            self.cluster.flush()
        if self._fair_paused:
            paused, self._fair_paused = self._fair_paused, []
            for connection in paused:
                connection.tick_bytes = 0
                connection.update_reading()
        if self.persistence is not None and self.persistence.durable:
            self.commit()

    # -- durability ----------------------------------------------------------------------------

    def acks_wait_for_commit(self) -> bool:
        """Whether an ack sent now must wait: something it may cover is not on disk yet, or an
        earlier ack is still waiting (acks keep their order)."""
        persistence = self.persistence
        return (persistence is not None and persistence.durable
                and (persistence.storage.pending or bool(self._held) or self._commit_in_flight))

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once what has changed so far is on disk (at once if it is)."""
        if not self.acks_wait_for_commit():
            callback()
            return
        self._after_commit.append(callback)
        self.wake()

    def hold(self, connection: Connection, frames: list[bytes], publish: bool) -> None:
        self._held.append((connection, frames, publish))
        self.wake()  # the end-of-tick flush starts the commit that releases these

    def commit(self, retry: bool = False) -> None:
        """Start one commit of everything changed so far, unless one is already running.

        After a failure only `retry` (from tick, a few times a second) tries again."""
        persistence = self.persistence
        if persistence is None or self._commit_in_flight or (self._storage_failing
                                                              and not retry):
            return
        if not persistence.storage.pending and not self._held and not self._after_commit:
            return
        held, self._held = self._held, []
        callbacks, self._after_commit = self._after_commit, []
        self._commit_in_flight = True
        persistence.storage.commit(lambda ok: self._committed(ok, held, callbacks))

    def _committed(self, ok: bool, held: list[tuple[Connection, list[bytes], bool]],
                   callbacks: list[Callable[[], None]]) -> None:
        self._commit_in_flight = False
        if not ok:
            self._held[:0] = held
            self._after_commit[:0] = callbacks
            self._storage_failing = True  # tick() retries; until then nothing is acknowledged
            return
        if self._storage_failing:
            log.warning("storage: commits succeed again; releasing held acknowledgements")
            self._storage_failing = False
        for connection, frames, publish in held:
            if connection.closed:
                continue  # the peer will retry, or the session resends on reconnect
            if publish:
                connection.send_publish(frames)
            else:
                connection.send(frames[0])
        for callback in callbacks:
            callback()
        if self._held or (self.persistence is not None and self.persistence.storage.pending):
            self.wake()  # the flush that follows commits what arrived meanwhile

    # -- routing -------------------------------------------------------------------------------

    def learn_topic_name(self, topic_bytes: bytes) -> str:
        """Validate a PUBLISH topic seen for the first time; raises MQTTError if invalid."""
        topic = validate_topic_name(topic_bytes, self.limits.max_topic_levels)
        names = self.topic_names
        if len(names) >= TOPIC_NAME_CACHE_SIZE:
            names.clear()
        names[topic_bytes] = topic
        return topic

    def publish(self, message: Message, origin: Connection | None = None) -> int:
        """Route one message to every matching session, each at min(message, granted) QoS,
        and to the peer workers with matching subscriptions.

        `origin` is the publisher's connection: paused while a subscriber it feeds is full, and
        skipped by its own No Local subscriptions. Returns the MQTT 5 PUBACK/PUBREC reason:
        0x10 when nobody subscribes, 0x97 when a persistent session's queue had no room."""
        cluster = self.cluster
        stamp = 0
        if message.retain:
            stamp = self._stamp()
            if cluster is not None:
                cluster.retained_stamps[message.topic] = stamp
            self._retain(message, stamp, hold=True)
        reason = self._route(message, origin, True)
        if cluster is not None and cluster.publish(message, stamp, self.now, origin) \
                and reason == ReasonCode.NO_MATCHING_SUBSCRIBERS:
            reason = ReasonCode.SUCCESS
        return reason

    def publish_from_peer(self, message: Message, stamp: int, peer: Peer) -> None:
        """A message another worker routed here: its local subscribers (not shared groups:
        the publishing worker chose their workers). A retained one replaces ours only when it
        is newer, and its stored row stays the publishing worker's."""
        cluster = self.cluster
        assert cluster is not None
        if message.retain and cluster.newer(message.topic, stamp):
            self._retain(message, stamp, hold=False)
        self._route(message, peer, False)

    def _stamp(self) -> int:
        self.last_stamp = stamp = next_stamp(
            self.last_stamp, self.wall_clock(),
            0 if self.cluster is None else self.cluster.index)
        return stamp

    def _route(self, message: Message, origin: Connection | Peer | None, shared_too: bool
               ) -> int:
        """Deliver to the local subscribers; `publish` says what the return value means."""
        matches = self.subscriptions.match(message.topic)
        shared: int = ReasonCode.NO_MATCHING_SUBSCRIBERS
        if shared_too and (self.shared_groups or (self.cluster is not None
                                                  and self.cluster.shared_routes.count)):
            shared = self._publish_shared(message, origin)
        if not matches:
            return shared
        qos = message.qos
        if not qos:
            self._send_qos0(matches, message.topic, message.frame_qos0(), origin, message)
            return ReasonCode.SUCCESS
        reason: int = ReasonCode.SUCCESS
        granted_qos0 = []
        for match in matches:
            session, granted = match
            retain = False
            identifiers = 0
            if granted > 2:  # MQTT 5: options above the QoS bits
                if granted & NO_LOCAL and origin is not None and session is origin.session:
                    continue
                retain = message.retain and bool(granted & RETAIN_AS_PUBLISHED)
                identifiers = granted >> IDENTIFIER_SHIFT
                granted &= 0x03
            if not granted:
                granted_qos0.append(match)
            elif session.acl is None or session.acl.allowed(message.topic, Access.READ):
                if not session.deliver(message, granted if granted < qos else qos, retain,
                                       identifiers):
                    self._queue_overflow(session)
                    if not session.clean:
                        reason = ReasonCode.QUOTA_EXCEEDED
                elif session.queue and origin is not None:
                    self.queue_pressure(session, origin)
        if granted_qos0:
            self._send_qos0(granted_qos0, message.topic, message.frame_qos0(), origin, message)
        return reason if shared == ReasonCode.NO_MATCHING_SUBSCRIBERS else max(reason, shared)

    def _publish_shared(self, message: Message, origin: Connection | Peer | None) -> int:
        """Give the message to one member of every shared subscription group it matches
        (§4.8.2); with workers, the group's worker is chosen first. Returns what `publish`
        does for these deliveries alone."""
        publisher = None if origin is None else origin.client_id
        chosen = self.shared.choose(message.topic, message.qos, publisher) \
            if self.shared_groups else []
        reason: int = ReasonCode.SUCCESS
        if self.cluster is not None:
            chosen, sent = self.cluster.share(message, self.now, origin, chosen)
            if not chosen:
                return reason if sent else ReasonCode.NO_MATCHING_SUBSCRIBERS
        if not chosen:
            return ReasonCode.NO_MATCHING_SUBSCRIBERS
        for session, granted, group in chosen:
            if not self._deliver_shared(message, session, granted, group, origin) \
                    and not session.clean:
                reason = ReasonCode.QUOTA_EXCEEDED
        return reason

    def deliver_to_group(self, message: Message, key: tuple[str, str], peer: Peer) -> None:
        """Another worker chose this one for a shared group's message: one member gets it."""
        group = self.shared.groups.get(key)
        picked = None if group is None else self.shared.pick(group, message.topic,
                                                             message.qos > 0, None)
        if picked is None:
            self.publishes_dropped += 1  # the group's last member here left meanwhile
            return
        assert group is not None
        self._deliver_shared(message, picked[0], picked[1], group, peer)

    def _deliver_shared(self, message: Message, session: Session, granted: int,
                        group: SharedGroup, origin: Connection | Peer | None) -> bool:
        """One group member's copy, at min(message, member's granted) QoS, tagged with its group
        so it can go to another member if this one leaves. False when its queue was full."""
        qos = min(message.qos, granted & 0x03)
        if not qos:
            self._send_qos0([(session, granted)], message.topic, message.frame_qos0(), origin,
                            message)
            return True
        retain = granted > 2 and message.retain and bool(granted & RETAIN_AS_PUBLISHED)
        if session.deliver(message, qos, retain, granted >> IDENTIFIER_SHIFT, group):
            if session.queue and origin is not None:
                self.queue_pressure(session, origin)
            return True
        self._queue_overflow(session)
        return False

    def _hand_over(self, session: Session, ending: bool) -> None:
        """A shared subscription member went away: what the groups gave it and it has not
        acknowledged goes to another member. When its session `ending`, that is everything not
        past PUBREC, to a connected member if any, else queued for an offline one, else dropped
        (counted). When only its connection went (the session is kept), just the messages still
        queued move, and only to a connected member: what is in flight stays, to be re-sent
        when it comes back [MQTT-4.4.0-1] (what EMQX does; the spec allows either, §4.8.2)."""
        if not session.inflight and not session.queue:
            return
        persistence = session.persistence
        for entry in session.take_shared(with_inflight=ending):
            group = entry.group
            assert group is not None
            message = entry.message
            picked = self.shared.pick(group, message.topic, ending, None, exclude=session)
            if picked is not None:
                self._deliver_shared(message, picked[0], picked[1], group, None)
            elif self.cluster is not None and self.cluster.hand_to_group(
                    message, self.now, (group.name, group.topic_filter)):
                pass  # a worker where the group has members takes it
            elif not ending:
                session.queue.append(entry)  # nobody to take it now: it waits for its owner
                session.queued_bytes += len(message.payload)
                continue
            else:
                self.publishes_dropped += 1
            if persistence is not None:
                persistence.done(session.client_id, entry)

    def forward(self, topic: str, frame: bytes, origin: Connection) -> None:
        """The hot path: a QoS 0 PUBLISH without RETAIN (and, from an MQTT 5 client, without
        properties). Every delivery to the publisher's protocol family is that very frame, so
        no Message is made unless the other family subscribes (measured: 14% of a 1 -> 1
        profile)."""
        matches = self.subscriptions.match(topic)
        if matches:
            self._send_qos0(matches, topic, frame, origin, None)
        cluster = self.cluster
        if cluster is not None:
            cluster.forward(topic, frame, origin)
            if cluster.shared_routes.count:
                self._publish_shared(
                    Message(topic, frame[plain_payload_offset(frame, origin.v5):]), origin)
                return
        if self.shared_groups:
            chosen = self.shared.choose(topic, 0, origin.client_id)
            if chosen:
                self._send_qos0([(session, granted) for session, granted, _ in chosen], topic,
                                frame, origin, None)

    def forwarded(self, frame: bytes, peer: Peer) -> None:
        """A QoS 0 frame forwarded by another worker (`Cluster.forward`), for the local
        subscribers; the peer's link is the publisher that a full subscriber pauses."""
        pos = 1
        while frame[pos] & 0x80:
            pos += 1
        start = pos + 3
        topic_bytes = frame[start:start + ((frame[pos + 1] << 8) | frame[pos + 2])]
        topic = self.topic_names.get(topic_bytes)
        if topic is None:
            topic = self.learn_topic_name(topic_bytes)
        matches = self.subscriptions.match(topic)
        if matches:
            self._send_qos0(matches, topic, frame, peer, None)

    def _send_qos0(self, matches: list[tuple[Session, int]], topic: str, frame: bytes,
                   origin: Connection | Peer | None, message: Message | None) -> None:
        """Deliver at QoS 0. `frame` is the plain QoS 0 PUBLISH: 3.1.1 when `message` is
        given, else (`forward`) the publisher's own frame, of its family. Any other variant
        comes from `message`, made from `frame` the first time one is needed."""
        frame_v5 = message is None and origin is not None and origin.v5
        for session, granted in matches:
            connection = session.connection
            if connection is None:
                continue  # QoS 0 is not queued for offline clients
            if session.acl is not None and not session.acl.allowed(topic, Access.READ):
                continue
            if connection.write_paused and not self.throttle(origin, connection):
                self.publishes_dropped += 1
                continue
            if granted > 2 or frame_v5:  # an MQTT 5 subscriber or publisher: not the plain case
                if granted & NO_LOCAL and connection is origin:
                    continue
                retain = bool(granted & RETAIN_AS_PUBLISHED) and message is not None \
                    and message.retain
                frames = [frame]
                if (granted > 2) is not frame_v5 or retain or granted >= WITH_IDENTIFIER:
                    if message is None:
                        message = Message(topic, frame[plain_payload_offset(frame, frame_v5):])
                    if granted >= WITH_IDENTIFIER:
                        frames = message.frames5_ids(0, 0, self.now, granted >> IDENTIFIER_SHIFT,
                                                     retain=retain)
                    elif granted > 2:
                        frames = message.frames5(0, 0, self.now, retain=retain)
                    else:
                        frames = [message.frame_qos0()]
                if not connection.too_large(frames):
                    connection.send_publish(frames)
                continue
            connection.send_publish([frame])

    def throttle(self, publisher: Connection | Peer | None, subscriber: Connection) -> bool:
        """A QoS 0 message for a full subscriber: pause its publisher and send it anyway,
        unless the subscriber has been full for too long. False means: drop it."""
        if publisher is None or (publisher.last_activity - subscriber.paused_since
                                 >= self.limits.stalled_reader_timeout):
            return False
        self._hold(publisher, subscriber)
        return True

    def hold_for_link(self, publisher: Connection | Peer | None, link: Peer) -> None:
        """A message for a full link to another worker: pause its publisher, and send it
        anyway whatever its QoS. A link is never given up on as a stalled reader (`tick`):
        the worker behind it is alive (a dead one's link closes), and a full link only says
        that its subscribers are full, which it deals with under the rules above. Treating
        it as a stalled reader dropped 65% of a fan-in whose subscriber was slower than its
        publishers but never stalled."""
        if publisher is not None:
            self._hold(publisher, link)

    def queue_pressure(self, session: Session, publisher: Connection | Peer) -> None:
        """A connected client's QoS 1/2 queue fills faster than it acknowledges: pause the
        publisher, as for a full socket, rather than drop acknowledged messages once the queue
        is full. `Session.pump` resumes it when the queue is down to a quarter; a client that
        acknowledges nothing for `stalled_reader_timeout` is given up on (`tick`), and its
        queue overflows as before."""
        connection = session.connection
        if connection is None or connection is publisher or session.pressure == GAVE_UP \
                or not session.filling():
            return
        if not session.pressure:
            session.pressure = HOLDING
            if connection not in self._stalled:
                connection.paused_since = self.now
        self._hold(publisher, connection)

    def _hold(self, publisher: Connection | Peer, subscriber: Connection | Peer) -> None:
        publishers = self._stalled.setdefault(subscriber, set())
        if publisher not in publishers:
            publishers.add(publisher)
            publisher.throttled_by += 1
            if publisher.throttled_by == 1:
                publisher.update_reading()

    def release_publishers(self, subscriber: Connection | Peer) -> None:
        """The subscriber drained (or closed, or stalled too long): resume its publishers."""
        for publisher in self._stalled.pop(subscriber, ()):
            publisher.throttled_by -= 1
            if not publisher.throttled_by:
                publisher.update_reading()

    def _retain(self, message: Message, stamp: int, hold: bool) -> None:
        """Store a retained message (an empty payload clears the topic).

        With worker processes every worker keeps every retained message, but each stored row
        is held (written, and deleted when replaced) by exactly one worker: the one whose
        client published it, or after a restart the topic's owner. `hold` is False for a
        message another worker published, and `_retained_unheld` lists such topics."""
        if message.payload and self.retained.count >= self.limits.max_retained_messages \
                and self.retained.get(message.topic) is None:
            self.retained_dropped += 1
            if self.retained_dropped == 1 or not self.retained_dropped % 10_000:
                log.warning("retained store full (max_retained_messages %d): %d new retained "
                            "topics not stored so far", self.limits.max_retained_messages,
                            self.retained_dropped)
            return
        previous = self.retained.set(message)
        persistence = self.persistence
        topic = message.topic
        if persistence is None or topic.startswith("$SYS/"):
            return  # $SYS values are made afresh at start-up, never stored
        unheld = self._retained_unheld
        if previous is not None and topic not in unheld:
            persistence.unref(previous)
        if not hold:
            unheld.add(topic)
            return
        unheld.discard(topic)
        if message.payload:
            persistence.storage.retained_set(topic, persistence.ref(message), stamp)
        elif previous is not None:
            persistence.storage.retained_cleared(topic, stamp)

    def _queue_overflow(self, session: Session) -> None:
        self.publishes_dropped += 1
        if not session.overflowing:
            session.overflowing = True
            log.warning("client %s: queue full (%d messages), dropping QoS 1/2 messages until "
                        "it drains", session.client_id, self.limits.max_queued_messages)

    def subscribe(self, session: Session, topic_filter: str, qos: int) -> bool:
        """False when the client already holds max_subscriptions other filters.

        `qos` is the trie value: see V5_SUBSCRIBER."""
        if topic_filter not in session.subscriptions \
                and len(session.subscriptions) >= self.limits.max_subscriptions:
            return False
        session.subscriptions[topic_filter] = qos
        self._trie_add(session, topic_filter, qos)
        if session.persistence is not None:
            session.persistence.storage.subscription_set(session.client_id, topic_filter, qos)
        return True

    def unsubscribe(self, session: Session, topic_filter: str) -> bool:
        """False when there was no such subscription (UNSUBACK v5 reason 0x11)."""
        if session.subscriptions.pop(topic_filter, None) is None:
            return False
        self._trie_remove(session, topic_filter)
        if session.persistence is not None:
            session.persistence.storage.subscription_removed(session.client_id, topic_filter)
        return True

    def _trie_add(self, session: Session, topic_filter: str, value: int) -> None:
        shared = split_shared(topic_filter)
        if shared is None:
            new = self.subscriptions.add(topic_filter, session, value)
        else:
            new = self.shared.add(*shared, session, value)
        if new and self.cluster is not None:
            self.cluster.subscribed(topic_filter)

    def _trie_remove(self, session: Session, topic_filter: str) -> None:
        shared = split_shared(topic_filter)
        if shared is None:
            removed = self.subscriptions.remove(topic_filter, session)
        else:
            removed = self.shared.remove(*shared, session)
        if removed and self.cluster is not None:
            self.cluster.unsubscribed(topic_filter)

    def send_retained(self, session: Session, topic_filter: str, granted: int) -> None:
        """Retained messages for a new or renewed subscription, with RETAIN set [MQTT-3.3.1-8]
        and the subscription's identifier, if it has one [MQTT-3.3.4-3]. (Never called for a
        shared subscription: they get no retained messages, §4.8.2.)"""
        connection = session.connection
        assert connection is not None
        acl = session.acl
        now = self.now
        for message in self.retained.match(topic_filter):
            if acl is not None and not acl.allowed(message.topic, Access.READ):
                continue
            if message.expired(now):
                continue  # still stored until replaced, but never delivered [MQTT-3.3.2-5]
            qos = min(message.qos, granted & 0x03)
            if not qos:
                if granted >= WITH_IDENTIFIER:
                    frames = message.frames5_ids(0, 0, now, granted >> IDENTIFIER_SHIFT,
                                                 retain=True)
                elif session.v5:
                    frames = message.frames5(0, 0, now, retain=True)
                else:
                    frames = message.frames(0, 0, retain=True)
                if not connection.too_large(frames):
                    connection.send_publish(frames)
            elif not session.deliver(message, qos, True, granted >> IDENTIFIER_SHIFT):
                self._queue_overflow(session)

    # -- time ----------------------------------------------------------------------------------

    def schedule(self, connection: Connection, when: float) -> None:
        """Keep one live heap entry per connection: its earliest deadline."""
        current = self._scheduled.get(connection)
        if current is not None and current <= when:
            return
        self._scheduled[connection] = when
        self._deadline_seq += 1
        heapq.heappush(self._deadlines, (when, self._deadline_seq, connection))

    def tick(self, now: float) -> None:
        """Expire CONNECT and keep-alive deadlines and sessions that passed; publish $SYS when
        due."""
        self.now = now
        self._expire_sessions(now)
        if self._will_delays:
            self._publish_delayed_wills(now)
        heap = self._deadlines
        scheduled = self._scheduled
        for subscriber in list(self._stalled):
            if now - subscriber.paused_since >= self.limits.stalled_reader_timeout \
                    and not isinstance(subscriber, Peer):
                session = subscriber.session
                if session is not None and session.pressure:
                    session.pressure = GAVE_UP
                    log.warning("client %s (%s) has not kept up with its QoS 1/2 messages for "
                                "%g s: no longer holding its publishers back", subscriber.client_id,
                                subscriber.peer, self.limits.stalled_reader_timeout)
                else:
                    log.warning("client %s (%s) has not read for %g s: dropping its QoS 0 "
                                "messages until it catches up", subscriber.client_id,
                                subscriber.peer, self.limits.stalled_reader_timeout)
                self.release_publishers(subscriber)
        if self._storage_failing:
            self.commit(retry=True)
        while heap and heap[0][0] <= now:
            when, _, connection = heapq.heappop(heap)
            if scheduled.get(connection) != when:
                continue  # superseded by an earlier entry, or the connection closed
            del scheduled[connection]
            connection.on_deadline(now)
            deadline = connection.deadline()
            if deadline is not None:
                # Never due again in this same tick: that would loop here for ever.
                self.schedule(connection, max(deadline, now + 0.001))
        if self.sys_interval > 0 and now >= self._next_sys:
            self._next_sys = now + self.sys_interval
            if self.cluster is not None and self.cluster.index:
                self.cluster.send_counts(self.sys_counts())  # worker 0 publishes the sums
            else:
                self.publish_sys(now)

    def _expire_sessions(self, now: float) -> None:
        """Discard disconnected sessions whose Session Expiry Interval ran out [MQTT-4.1.0-2]."""
        expiries = self._session_expiries
        while expiries and expiries[0][0] <= now:
            when, _, session = heapq.heappop(expiries)
            if session.connection is not None or session.expires_at != when:
                continue  # resumed since, or its expiry changed: a newer entry decides
            if self.sessions.get(session.client_id) is session:
                log.info("client %s: session expired after %d s", session.client_id,
                         session.expiry_interval)
                self._discard_session(session)

    def _publish_delayed_wills(self, now: float) -> None:
        """Publish the wills whose Will Delay Interval ended with their client still away."""
        delays = self._will_delays
        while delays and delays[0][0] <= now:
            when, _, session = heapq.heappop(delays)
            will = session.will
            if will is None or session.will_at != when:
                continue  # cancelled by a reconnect or published when the session ended
            session.will = None
            if self.persistence is not None:
                self.persistence.storage.will_cleared(session.client_id)
            self._publish_will(session.client_id, will)

    # -- $SYS ----------------------------------------------------------------------------------

    def sys_counts(self) -> dict[str, int]:
        """This process's $SYS counters (a worker's share of the broker's)."""
        live = self.connections
        sessions = len(self.sessions)
        return {
            "clients/connected": self.clients_connected,
            "clients/disconnected": sessions - self.clients_connected,
            "clients/total": sessions,
            "clients/maximum": self.clients_maximum,
            "messages/received": self.packets_received,
            "messages/sent": self.closed_packets_sent + sum(c.packets_sent for c in live),
            "bytes/received": self.bytes_received,
            "bytes/sent": self.closed_bytes_sent + sum(c.bytes_sent for c in live),
            "publish/messages/received": self.publishes_received,
            "publish/messages/sent": (self.closed_publishes_sent
                                      + sum(c.publishes_sent for c in live)),
            "publish/messages/dropped": self.publishes_dropped,
            "subscriptions/count": self.subscriptions.count + self.shared.count,
            "retained messages/count": self.retained.count,
        }

    def sys_values(self, now: float) -> dict[str, str]:
        """The $SYS/broker tree under Mosquitto's names, so existing dashboards work; with
        workers, the sums of their counters (each keeps the whole retained store)."""
        counts = self.sys_counts()
        if self.cluster is not None:
            for other in self.cluster.peer_counts():
                for name, value in other.items():
                    if name != "retained messages/count":
                        counts[name] = counts.get(name, 0) + value
        values = {"version": f"culex version {__version__}",
                  "uptime": f"{int(now - self.started_at)} seconds", **counts}
        return {f"$SYS/broker/{name}": str(value) for name, value in values.items()}

    def publish_sys(self, now: float) -> None:
        """Publish, retained, the $SYS values that changed since the last interval."""
        for topic, value in self.sys_values(now).items():
            if self._sys_last.get(topic) != value:
                self._sys_last[topic] = value
                self.publish(Message(topic, value.encode(), 0, True))

    # -- restart -------------------------------------------------------------------------------

    def restore(self) -> LoadedState:
        """Rebuild sessions, queues, in-flight state and retained messages from storage, then
        publish the wills of clients that were connected when the broker stopped.

        A will that was waiting for its Will Delay Interval is published at once: the delay
        is not stored, and the client's connection is gone either way. A worker restores the
        sessions it owns and every retained message, and publishes its wills only once every
        peer has announced its restored subscriptions (`Cluster.on_ready`)."""
        persistence = self.persistence
        assert persistence is not None
        cluster = self.cluster
        state = persistence.storage.load(None if cluster is None else cluster.owns)
        if cluster is not None:
            persistence.interleave_ids(cluster.index, cluster.size)
        messages = persistence.restore_messages(state)
        for stored in state.sessions:
            session = Session(stored.client_id, False, self.limits.max_inflight_messages,
                              self.limits.max_queued_messages, persistence=persistence,
                              max_queued_bytes=self.limits.max_queued_bytes)
            session.expiry_interval = stored.expiry
            for topic_filter, qos in stored.subscriptions.items():
                session.subscriptions[topic_filter] = qos
                self._trie_add(session, topic_filter, qos)
                session.v5 = qos > 2  # MQTT 5 subscriptions are stored with their options
            for item in stored.entries:
                entry = Outgoing(messages[item.message_id], item.qos, item.retain,
                                 item.identifiers)
                entry.seq = item.seq
                entry.released = item.released
                entry.message.store_refs += 1
                if item.packet_id:
                    session.inflight[item.packet_id] = entry
                else:
                    session.queue.append(entry)
                    session.queued_bytes += len(entry.message.payload)
            session.awaiting_release = stored.awaiting_release
            session.username = stored.username
            session.owner_known = stored.owner_known
            self.sessions.put(session)
            # Its client was disconnected by the restart: the countdown starts again now (the
            # whole stored interval, never less), since the downtime was not the client's doing.
            self._expire_later(session)
        for message_id, stamp in state.retained:
            message = messages[message_id]
            self.retained.set(message)
            if cluster is None or cluster.owns(message.topic):
                message.store_refs += 1
            else:
                self._retained_unheld.add(message.topic)
            if cluster is not None:
                cluster.retained_stamps[message.topic] = stamp
        self.last_stamp = max(self.last_stamp, state.max_stamp)
        wills = [(client_id, restored_message(will, self.now))
                 for client_id, will in state.wills]
        for client_id, _ in wills:
            persistence.storage.will_cleared(client_id)
        if cluster is None:
            self._publish_restored_wills(wills)
        else:
            cluster.on_ready = lambda: self._publish_restored_wills(wills)
        return state

    def _publish_restored_wills(self, wills: list[tuple[str, Message]]) -> None:
        for client_id, will in wills:
            log.info("client %s: publishing its will to %r (connected when the broker stopped)",
                     client_id, will.topic)
            self.publish(will)

    # -- shutdown ------------------------------------------------------------------------------

    def close_all(self) -> None:
        """Server shutdown: close every connection (MQTT 5 clients are told why); wills are
        kept for a client's own failure."""
        for connection in list(self.connections):
            connection.close(publish_will=False, reason=ReasonCode.SERVER_SHUTTING_DOWN)
        self.flush()

