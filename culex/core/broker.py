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
from ..protocol.codec import encode_connack
from ..protocol.packets import Connect
from .connection import Connection, Sink, State, validate_topic_name
from .limits import Limits
from .message import Message
from .retained import RetainedStore
from .session import MemorySessionStore, Session, SessionStore
from .trie import SubscriptionTrie

log = logging.getLogger("culex")

# Distinct topic names whose validation is cached; a publisher spraying unique names only
# costs a cache reset now and then.
TOPIC_NAME_CACHE_SIZE = 100_000


class Broker:
    def __init__(self, limits: Limits | None = None, *, sys_interval: float = 10.0,
                 sessions: SessionStore | None = None, now: float = 0.0) -> None:
        self.limits = limits or Limits()
        self.sys_interval = sys_interval
        self.sessions: SessionStore = sessions if sessions is not None else MemorySessionStore()
        self.subscriptions: SubscriptionTrie[Session] = SubscriptionTrie()
        self.retained = RetainedStore()
        self.connections: set[Connection] = set()
        self.topic_names: dict[bytes, str] = {}
        self.wake: Callable[[], None] = lambda: None
        self._ready: list[Connection] = []
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
        self.closed_bytes_sent = 0
        self.closed_packets_sent = 0
        self.closed_publishes_sent = 0
        self.clients_connected = 0
        self.clients_maximum = 0

    # -- connections ---------------------------------------------------------------------------

    def open_connection(self, sink: Sink, peer: str, now: float) -> Connection:
        connection = Connection(self, sink, peer, now)
        self.connections.add(connection)
        self._schedule(connection, now + self.limits.connect_timeout)
        return connection

    def accept(self, connection: Connection, packet: Connect) -> None:
        """CONNECT passed every check: attach a session, answer CONNACK, resume the session."""
        client_id = packet.client_id or f"culex-{secrets.token_hex(8)}"
        connection.client_id = client_id
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
        session = existing or Session(client_id, packet.clean_session,
                                      self.limits.max_inflight_messages,
                                      self.limits.max_queued_messages)
        self.sessions.put(session)
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
            self._schedule(connection, deadline)

    def connection_closed(self, connection: Connection, was_connected: bool,
                          publish_will: bool) -> None:
        self.connections.discard(connection)
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
        if publish_will and will is not None:
            log.info("client %s: publishing its will to %r", connection.client_id, will.topic)
            self.publish(will)

    def _discard_session(self, session: Session) -> None:
        for topic_filter in session.subscriptions:
            self.subscriptions.remove(topic_filter, session)
        session.subscriptions.clear()
        if self.sessions.get(session.client_id) is session:
            self.sessions.delete(session.client_id)

    # -- output scheduling ---------------------------------------------------------------------

    def mark_ready(self, connection: Connection) -> None:
        ready = self._ready
        ready.append(connection)
        if len(ready) == 1:
            self.wake()

    def flush(self) -> None:
        """Write every connection that queued output this tick, one `writelines` each."""
        ready, self._ready = self._ready, []
        for connection in ready:
            connection.flush()

    # -- routing -------------------------------------------------------------------------------

    def learn_topic_name(self, topic_bytes: bytes) -> str:
        """Validate a PUBLISH topic seen for the first time; raises MQTTError if invalid."""
        topic = validate_topic_name(topic_bytes, self.limits.max_topic_levels)
        names = self.topic_names
        if len(names) >= TOPIC_NAME_CACHE_SIZE:
            names.clear()
        names[topic_bytes] = topic
        return topic

    def publish(self, message: Message) -> None:
        """Route one message to every matching session, each at min(message, granted) QoS."""
        if message.retain:
            self.retained.set(message)
        matches = self.subscriptions.match(message.topic)
        if not matches:
            return
        qos = message.qos
        frame = None
        for session, granted in matches:
            if granted and qos:
                if not session.deliver(message, granted if granted < qos else qos):
                    self._queue_overflow(session)
                continue
            connection = session.connection
            if connection is None:
                continue  # QoS 0 is not queued for offline clients
            if connection.write_paused:
                self.publishes_dropped += 1
                continue
            if frame is None:
                frame = message.frame_qos0()
            connection.send_publish([frame])

    def _queue_overflow(self, session: Session) -> None:
        self.publishes_dropped += 1
        if not session.overflowing:
            session.overflowing = True
            log.warning("client %s: queue full (%d messages), dropping QoS 1/2 messages until "
                        "it drains", session.client_id, self.limits.max_queued_messages)

    def subscribe(self, session: Session, topic_filter: str, qos: int) -> None:
        session.subscriptions[topic_filter] = qos
        self.subscriptions.add(topic_filter, session, qos)

    def unsubscribe(self, session: Session, topic_filter: str) -> None:
        if session.subscriptions.pop(topic_filter, None) is not None:
            self.subscriptions.remove(topic_filter, session)

    def send_retained(self, session: Session, topic_filter: str, granted: int) -> None:
        """Retained messages for a new or renewed subscription, with RETAIN set [MQTT-3.3.1-8]."""
        connection = session.connection
        assert connection is not None
        for message in self.retained.match(topic_filter):
            qos = min(message.qos, granted)
            if not qos:
                connection.send_publish(message.frames(0, 0, retain=True))
            elif not session.deliver(message, qos, retain=True):
                self._queue_overflow(session)

    # -- time ----------------------------------------------------------------------------------

    def _schedule(self, connection: Connection, when: float) -> None:
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
        while heap and heap[0][0] <= now:
            when, _, connection = heapq.heappop(heap)
            if scheduled.get(connection) != when:
                continue  # superseded by an earlier entry, or the connection closed
            del scheduled[connection]
            deadline = connection.deadline()
            if deadline is None:
                continue
            if deadline <= now:
                connection.expire()
            else:
                self._schedule(connection, deadline)
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

    # -- shutdown ------------------------------------------------------------------------------

    def close_all(self) -> None:
        """Server shutdown: close every connection; wills are kept for a client's own failure."""
        for connection in list(self.connections):
            connection.close(publish_will=False)
        self.flush()

