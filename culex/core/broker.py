"""The broker: sessions, routing, retained messages, wills, timers and $SYS, without I/O.

The transport layer owns sockets and the clock. It tells the broker about new connections,
bytes and losses with the current time, calls `tick(now)` a few times a second, and sets `wake`
to something that calls `flush()` once later in the same loop tick (`loop.call_soon`), so all
frames queued during one tick leave in a single write per connection.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable

from .. import __version__
from ..auth.acl import Access, AclRules
from ..protocol.codec import encode_connack
from ..protocol.packets import Connect
from ..storage.base import LoadedState, Storage, StoredMessage
from .access import Authenticator
from .connection import Connection, Sink, State, validate_topic_name
from .limits import Limits
from .message import Message
from .persistence import Persistence
from .retained import RetainedStore
from .session import MemorySessionStore, Outgoing, Session, SessionStore
from .trie import SubscriptionTrie

log = logging.getLogger("culex")

# Distinct topic names whose validation is cached; a publisher spraying unique names only
# costs a cache reset now and then.
TOPIC_NAME_CACHE_SIZE = 100_000


class Broker:
    def __init__(self, limits: Limits | None = None, *, sys_interval: float = 10.0,
                 sessions: SessionStore | None = None, storage: Storage | None = None,
                 now: float = 0.0) -> None:
        self.limits = limits or Limits()
        # Both None (the default): anyone may connect, publish and subscribe.
        self.authenticator: Authenticator | None = None
        self.acl: AclRules | None = None
        self.persistence = Persistence(storage) if storage is not None else None
        # Frames that may leave only after the commit in progress (or the next one): acks of
        # what must be durable, QoS 2 deliveries to persistent sessions. Order is kept.
        self._held: list[tuple[Connection, list[bytes], bool]] = []
        self._commit_in_flight = False
        self._storage_failing = False
        self.sys_interval = sys_interval
        self.sessions: SessionStore = sessions if sessions is not None else MemorySessionStore()
        self.subscriptions: SubscriptionTrie[Session] = SubscriptionTrie()
        self.retained = RetainedStore()
        self.connections: set[Connection] = set()
        self.topic_names: dict[bytes, str] = {}
        self.wake: Callable[[], None] = lambda: None
        self._ready: list[Connection] = []
        self._fair_paused: list[Connection] = []
        # Full subscriber -> the publishers paused until it drains.
        self._stalled: dict[Connection, set[Connection]] = {}
        self._deadlines: list[tuple[float, int, Connection]] = []
        self._deadline_seq = 0
        self._scheduled: dict[Connection, float] = {}
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

    def open_connection(self, sink: Sink, peer: str, now: float) -> Connection:
        connection = Connection(self, sink, peer, now)
        self.connections.add(connection)
        self.schedule(connection, now + self.limits.connect_timeout)
        return connection

    def accept(self, connection: Connection, packet: Connect) -> None:
        """CONNECT passed every check: attach a session, answer CONNACK, resume the session."""
        client_id = packet.client_id
        existing = self.sessions.get(client_id)
        if existing is not None and existing.connection is not None:
            previous = existing.connection
            log.info("client %s (%s) taken over by a new connection from %s", client_id,
                     previous.peer, connection.peer)
            previous.close(publish_will=True)
            existing = self.sessions.get(client_id)  # a clean session ended with its connection
        if packet.clean_session and existing is not None:
            self._discard_session(existing)
            existing = None
        session_present = existing is not None
        session = existing
        if session is None:
            persistence = None if packet.clean_session else self.persistence
            session = Session(client_id, packet.clean_session, self.limits.max_inflight_messages,
                              self.limits.max_queued_messages, persistence=persistence,
                              max_queued_bytes=self.limits.max_queued_bytes)
            if persistence is not None:
                # 3.1.1 clean session 0: the session never expires (0xFFFFFFFF in MQTT 5 terms).
                persistence.storage.session_saved(client_id, 0xFFFFFFFF)
        self.sessions.put(session)
        will = connection.will
        if will is not None and self.persistence is not None:
            # Kept on disk while the client is connected: if the broker dies, the client's
            # connection died with it, and the will goes out when the broker restarts.
            self.persistence.storage.will_set(client_id, StoredMessage(
                0, will.topic, will.payload, will.qos, will.retain))
        session.acl = connection.acl
        session.connection = connection
        connection.session = session
        connection.state = State.CONNECTED
        connection.keepalive = packet.keepalive
        self.clients_connected += 1
        self.clients_maximum = max(self.clients_maximum, self.clients_connected)
        connection.send(encode_connack(session_present, 0))
        log.info("client %s connected from %s (protocol level %d, clean session %d, "
                 "keep-alive %d s, session present %d)", client_id, connection.peer,
                 packet.protocol_level, packet.clean_session, packet.keepalive, session_present)
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
            if session.clean:
                self._discard_session(session)
        will, connection.will = connection.will, None
        if will is not None and self.persistence is not None:
            self.persistence.storage.will_cleared(connection.client_id)
        if publish_will and will is not None:
            log.info("client %s: publishing its will to %r", connection.client_id, will.topic)
            self.publish(will)

    def _discard_session(self, session: Session) -> None:
        for topic_filter in session.subscriptions:
            self.subscriptions.remove(topic_filter, session)
        session.subscriptions.clear()
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

    def flush(self) -> None:
        """Write every connection that queued output this tick, one `writelines` each; then
        start the group commit of what this tick changed (`durability = "sync"`)."""
        ready, self._ready = self._ready, []
        for connection in ready:
            connection.flush()
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
        if not persistence.storage.pending and not self._held:
            return
        held, self._held = self._held, []
        self._commit_in_flight = True
        persistence.storage.commit(lambda ok: self._committed(ok, held))

    def _committed(self, ok: bool, held: list[tuple[Connection, list[bytes], bool]]) -> None:
        self._commit_in_flight = False
        if not ok:
            self._held[:0] = held
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

    def publish(self, message: Message, origin: Connection | None = None) -> None:
        """Route one message to every matching session, each at min(message, granted) QoS.

        `origin` is the publisher's connection: paused while a subscriber it feeds is full."""
        if message.retain:
            self._retain(message)
        matches = self.subscriptions.match(message.topic)
        if not matches:
            return
        qos = message.qos
        if not qos:
            self._send_qos0(matches, message.topic, message.frame_qos0(), origin)
            return
        granted_qos0 = []
        for match in matches:
            session, granted = match
            if not granted:
                granted_qos0.append(match)
            elif (session.acl is None or session.acl.allowed(message.topic, Access.READ)) \
                    and not session.deliver(message, granted if granted < qos else qos):
                self._queue_overflow(session)
        if granted_qos0:
            self._send_qos0(granted_qos0, message.topic, message.frame_qos0(), origin)

    def forward(self, topic: str, frame: bytes, origin: Connection) -> None:
        """The hot path: a QoS 0 PUBLISH without RETAIN from a 3.1/3.1.1 client. Every delivery
        is that very frame, so no Message is made (measured: 14% of a 1 -> 1 profile)."""
        matches = self.subscriptions.match(topic)
        if matches:
            self._send_qos0(matches, topic, frame, origin)

    def _send_qos0(self, matches: list[tuple[Session, int]], topic: str, frame: bytes,
                   origin: Connection | None) -> None:
        for session, _granted in matches:
            connection = session.connection
            if connection is None:
                continue  # QoS 0 is not queued for offline clients
            if session.acl is not None and not session.acl.allowed(topic, Access.READ):
                continue
            if connection.write_paused and not self._throttle(origin, connection):
                self.publishes_dropped += 1
                continue
            connection.send_publish([frame])

    def _throttle(self, publisher: Connection | None, subscriber: Connection) -> bool:
        """A QoS 0 message for a full subscriber: pause its publisher and send it anyway,
        unless the subscriber has been full for too long. False means: drop it."""
        if publisher is None or (publisher.last_activity - subscriber.paused_since
                                 >= self.limits.stalled_reader_timeout):
            return False
        publishers = self._stalled.setdefault(subscriber, set())
        if publisher not in publishers:
            publishers.add(publisher)
            publisher.throttled_by += 1
            if publisher.throttled_by == 1:
                publisher.update_reading()
        return True

    def release_publishers(self, subscriber: Connection) -> None:
        """The subscriber drained (or closed, or stalled too long): resume its publishers."""
        for publisher in self._stalled.pop(subscriber, ()):
            publisher.throttled_by -= 1
            if not publisher.throttled_by:
                publisher.update_reading()

    def _retain(self, message: Message) -> None:
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
        if persistence is None or message.topic.startswith("$SYS/"):
            return  # $SYS values are made afresh at start-up, never stored
        if previous is not None:
            persistence.unref(previous)
        if message.payload:
            persistence.storage.retained_set(message.topic, persistence.ref(message))
        elif previous is not None:
            persistence.storage.retained_cleared(message.topic)

    def _queue_overflow(self, session: Session) -> None:
        self.publishes_dropped += 1
        if not session.overflowing:
            session.overflowing = True
            log.warning("client %s: queue full (%d messages), dropping QoS 1/2 messages until "
                        "it drains", session.client_id, self.limits.max_queued_messages)

    def subscribe(self, session: Session, topic_filter: str, qos: int) -> bool:
        """False when the client already holds max_subscriptions other filters."""
        if topic_filter not in session.subscriptions \
                and len(session.subscriptions) >= self.limits.max_subscriptions:
            return False
        session.subscriptions[topic_filter] = qos
        self.subscriptions.add(topic_filter, session, qos)
        if session.persistence is not None:
            session.persistence.storage.subscription_set(session.client_id, topic_filter, qos)
        return True

    def unsubscribe(self, session: Session, topic_filter: str) -> None:
        if session.subscriptions.pop(topic_filter, None) is not None:
            self.subscriptions.remove(topic_filter, session)
            if session.persistence is not None:
                session.persistence.storage.subscription_removed(session.client_id,
                                                                 topic_filter)

    def send_retained(self, session: Session, topic_filter: str, granted: int) -> None:
        """Retained messages for a new or renewed subscription, with RETAIN set [MQTT-3.3.1-8]."""
        connection = session.connection
        assert connection is not None
        acl = session.acl
        for message in self.retained.match(topic_filter):
            if acl is not None and not acl.allowed(message.topic, Access.READ):
                continue
            qos = min(message.qos, granted)
            if not qos:
                connection.send_publish(message.frames(0, 0, retain=True))
            elif not session.deliver(message, qos, retain=True):
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
        """Expire CONNECT and keep-alive deadlines that passed; publish $SYS when due."""
        heap = self._deadlines
        scheduled = self._scheduled
        for subscriber in list(self._stalled):
            if now - subscriber.paused_since >= self.limits.stalled_reader_timeout:
                log.warning("client %s (%s) has not read for %g s: dropping its QoS 0 messages "
                            "until it catches up", subscriber.client_id, subscriber.peer,
                            self.limits.stalled_reader_timeout)
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
            self.publish_sys(now)

    # -- $SYS ----------------------------------------------------------------------------------

    def sys_values(self, now: float) -> dict[str, str]:
        """The $SYS/broker tree under Mosquitto's names, so existing dashboards work."""
        live = self.connections
        sessions = len(self.sessions)
        values = {
            "version": f"culex version {__version__}",
            "uptime": f"{int(now - self.started_at)} seconds",
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
            "subscriptions/count": self.subscriptions.count,
            "retained messages/count": self.retained.count,
        }
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
        publish the wills of clients that were connected when the broker stopped."""
        persistence = self.persistence
        assert persistence is not None
        state = persistence.storage.load()
        messages = persistence.restore_messages(state)
        for stored in state.sessions:
            session = Session(stored.client_id, False, self.limits.max_inflight_messages,
                              self.limits.max_queued_messages, persistence=persistence,
                              max_queued_bytes=self.limits.max_queued_bytes)
            for topic_filter, qos in stored.subscriptions.items():
                session.subscriptions[topic_filter] = qos
                self.subscriptions.add(topic_filter, session, qos)
            for item in stored.entries:
                entry = Outgoing(messages[item.message_id], item.qos, item.retain)
                entry.seq = item.seq
                entry.released = item.released
                entry.message.store_refs += 1
                if item.packet_id:
                    session.inflight[item.packet_id] = entry
                else:
                    session.queue.append(entry)
                    session.queued_bytes += len(entry.message.payload)
            session.awaiting_release = stored.awaiting_release
            self.sessions.put(session)
        for message_id in state.retained:
            message = messages[message_id]
            message.store_refs += 1
            self.retained.set(message)
        persistence.drop_unreferenced(messages)
        for client_id, will in state.wills:
            log.info("client %s: publishing its will to %r (connected when the broker stopped)",
                     client_id, will.topic)
            persistence.storage.will_cleared(client_id)
            self.publish(Message(will.topic, will.payload, will.qos, will.retain))
        return state

    # -- shutdown ------------------------------------------------------------------------------

    def close_all(self) -> None:
        """Server shutdown: close every connection; wills are kept for a client's own failure."""
        for connection in list(self.connections):
            connection.close(publish_will=False)
        self.flush()

