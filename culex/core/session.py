"""A session: what outlives a client's connections, and its outbound QoS 1/2 flow.

A session outlives its network connections when the client asked for one (clean session 0, or
an MQTT 5 Session Expiry Interval): subscriptions, QoS 1/2 messages queued while offline or
beyond the in-flight window, messages in flight (sent, not yet acknowledged) and the ids of
inbound QoS 2 messages awaiting PUBREL. Every change to a stored session is reported to its
`Persistence`; the live connection, when there is one, is a `ClientLink`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator, KeysView
from types import MappingProxyType

from ..auth.acl import Access
from .access import ClientAccess
from .message import Message
from .outgoing import Outgoing
from .persistence import Persistence
from .ports import ClientLink
from .stats import EXPIRED, NOT_AUTHORIZED, Stats
from .timers import Clock

# The value of an empty `Session.awaiting_release`, shared: `frozenset()` is no singleton, and
# an empty set costs 216 bytes per session.
NO_PACKET_IDS: frozenset[int] = frozenset()
# Likewise the value of an empty in-flight window (64 bytes per session as an empty dict).
NO_ENTRIES: MappingProxyType[int, Outgoing] = MappingProxyType({})

NEVER_EXPIRES = 0xFFFFFFFF
"""Session Expiry Interval meaning "never" (§3.1.2.11.2)."""

# The most message ids a session remembers having been given while a part of it may still
# come (`Session.seen`, 8 MB at most); past it, it stops.
MAX_SEEN = 100_000

log = logging.getLogger("culex")


# Back-pressure from a connected client's filling queue (flow.FlowControl.queue_pressure):
# none; its publishers are paused; or it stalled too long and holds nobody back any more.
NO_PRESSURE, PUBLISHERS_PAUSED, GAVE_UP = 0, 1, 2


class Session:
    __slots__ = (
        "_next_packet_id",
        "acl",
        "admitted",
        "awaiting_release",
        "clean",
        "client_id",
        "clock",
        "connection",
        "dropped",
        "expires_at",
        "expiry_interval",
        "inflight",
        "max_inflight",
        "max_queued",
        "max_queued_bytes",
        "overflowing",
        "owner_known",
        "persistence",
        "pressure",
        "queue",
        "queued_bytes",
        "seen",
        "stats",
        "subscriptions",
        "username",
        "v5",
        "will",
        "will_at",
    )

    def __init__(self, client_id: str, clean: bool, max_inflight: int, max_queued: int, *,
                 persistence: Persistence | None = None, max_queued_bytes: int = 0,
                 clock: Clock | None = None, stats: Stats | None = None) -> None:
        self.client_id = client_id
        # The broker's clock: when a message waited past its Message Expiry Interval.
        self.clock = clock or Clock()
        # The broker's counters (QoS 1/2 messages sent, drops), and this session's own drops.
        self.stats = stats or Stats()
        self.dropped = 0
        # The cluster ids of the QoS 1/2 messages it was given while another part of it may
        # still come (core/session_moves.py: taken from the store of a node that is down, or
        # moved from one whose own move had not settled), so that the part is not delivered
        # twice; stored with the session (`StoredSession.given`). None: not tracked.
        self.seen: set[int] | None = None
        self.clean = clean
        # Seconds the session outlives its connection: 0 for a clean (3.1.1) or expiry-0 (MQTT 5)
        # session, NEVER_EXPIRES for 3.1.1 clean session 0 and MQTT 5 0xFFFFFFFF. While it is
        # disconnected with a finite interval, `expires_at` is when the broker discards it.
        self.expiry_interval = 0 if clean else NEVER_EXPIRES
        self.expires_at: float | None = None
        # Whether its client speaks MQTT 5: which encoding its PUBLISHes get.
        self.v5 = False
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes
        self.queued_bytes = 0
        # Set only for sessions that outlive their connection and only when a storage backend
        # is configured: every change below is then reported to it.
        self.persistence = persistence
        self.connection: ClientLink | None = None
        # What the client may read, from its last CONNECT; None without an ACL file (and for a
        # session restored from storage until its client connects again).
        self.acl: ClientAccess | None = None
        # The user name of the session's last connection: the ACL of an offline session is
        # resolved with it at start-up and when the ACL file is reloaded. Stored with the
        # session; only sessions stored before schema version 3 have no known owner (and no
        # ACL) until their client connects again.
        self.username: str | None = None
        self.owner_known = True
        self.subscriptions: dict[str, int] = {}
        # Packet id -> what is in flight under it; NO_ENTRIES (read-only) while empty.
        self.inflight: dict[int, Outgoing] | MappingProxyType[int, Outgoing] = NO_ENTRIES
        # The queue, and the inbound QoS 2 ids below, are empty shared values (an empty tuple,
        # the empty frozenset) until something is put in them: an empty deque costs 624
        # bytes and an empty set 216, and most sessions never hold anything there.
        self.queue: deque[Outgoing] | tuple[()] = ()
        # Inbound QoS 2 ids PUBREC'd and not yet released. The message was routed on arrival,
        # so a retransmission with one of these ids is acknowledged again but not routed again
        # (exactly once, MQTT-4.3.3-2). Bounded by the 16-bit id space.
        self.awaiting_release: set[int] | frozenset[int] = NO_PACKET_IDS
        # In a cluster, the token of the claim under which its client was last let in
        # (0: not known): of two parts of a session, the one let in later holds the inbound
        # QoS 2 state the client goes on from (session_moves.py).
        self.admitted = 0
        # True while the queue is full, so the overflow is logged once per episode, not per drop.
        self.overflowing = False
        # NO_PRESSURE, PUBLISHERS_PAUSED or GAVE_UP (nothing is paused for it again until its
        # queue drains).
        self.pressure = NO_PRESSURE
        self._next_packet_id = 1
        # The will of the session's last connection while it waits for its Will Delay
        # Interval (the broker publishes it at `will_at`, or when the session ends).
        self.will: Message | None = None
        self.will_at = 0.0

    def __repr__(self) -> str:
        return f"Session({self.client_id!r})"

    def send_window(self) -> dict[int, Outgoing]:
        """The in-flight window as a dict that may be written (made on first use)."""
        inflight = self.inflight
        if isinstance(inflight, MappingProxyType):
            inflight = self.inflight = {}
        return inflight

    def allocate_packet_id(self) -> int:
        """Next id in 1..65535 not in flight [MQTT-2.3.1-2]; the window keeps this loop short."""
        inflight = self.inflight
        packet_id = self._next_packet_id
        while packet_id in inflight:
            packet_id = packet_id % 65535 + 1
        self._next_packet_id = packet_id % 65535 + 1
        return packet_id

    def remember_given(self, also: Iterable[int] = ()) -> None:
        """From now on remember the cluster ids of the messages this session is given (and
        `also`): another part of it may bring some of them again (session_moves.py). What it
        holds now counts as given: delivered before that part comes, it would not be
        recognised otherwise. Stored with the session, so that a restart of this member
        does not forget it."""
        seen = self.seen
        added = set(also)
        if seen is None:
            seen = self.seen = set()
            added.update(entry.message.cluster_id
                         for entry in (*self.inflight.values(), *self.queue))
        added -= seen
        added.discard(0)
        seen.update(added)
        persistence = self.persistence
        if persistence is not None:
            for cluster_id in added:
                persistence.session_given(self.client_id, cluster_id)

    def forget_given(self) -> None:
        """No other part of the session can come: what it was given is no longer needed."""
        seen, self.seen = self.seen, None
        if seen and self.persistence is not None:
            self.persistence.session_given_forgotten(self.client_id, seen)

    def deliver(self, message: Message, qos: int, retain: bool = False, identifiers: int = 0,
                group: tuple[str, str] | None = None) -> bool:
        """Send or queue a QoS 1/2 message. False when the queue is full and it was dropped."""
        seen = self.seen
        if seen is not None and message.cluster_id and message.cluster_id not in seen:
            seen.add(message.cluster_id)
            if self.persistence is not None:
                self.persistence.session_given(self.client_id, message.cluster_id)
            if len(seen) > MAX_SEEN:
                self.forget_given()
                log.warning("client %s: more than %d messages since its session was taken "
                            "from a node that is down; what that node sends on when it is "
                            "back may repeat some", self.client_id, MAX_SEEN)
        connection = self.connection
        entry = Outgoing(message, qos, retain, identifiers, group)
        if (connection is not None and not self.queue
                and len(self.inflight) < self.max_inflight):
            packet_id = self.allocate_packet_id()
            self.send_window()[packet_id] = entry
            if self.persistence is not None:
                self.persistence.queued(self.client_id, entry, packet_id)
            self._transmit(connection, entry, packet_id)
            return True
        size = len(message.payload)
        if len(self.queue) >= self.max_queued or (
                self.max_queued_bytes and self.queued_bytes + size > self.max_queued_bytes):
            return False
        self.enqueue(entry)
        if self.persistence is not None:
            self.persistence.queued(self.client_id, entry)
        return True

    def enqueue(self, entry: Outgoing) -> None:
        """Put an entry at the end of the queue (no bound checked: see `deliver`)."""
        queue = self.queue
        if isinstance(queue, tuple):
            queue = self.queue = deque()
        queue.append(entry)
        self.queued_bytes += len(entry.message.payload)

    def _transmit(self, connection: ClientLink, entry: Outgoing, packet_id: int,
                  dup: bool = False) -> None:
        message = entry.message
        if self.v5:
            if entry.identifiers:
                frames = message.frames5_ids(entry.qos, packet_id, self.clock.now,
                                             entry.identifiers, retain=entry.retain, dup=dup)
            else:
                frames = message.frames5(entry.qos, packet_id, self.clock.now,
                                         retain=entry.retain, dup=dup)
            if connection.too_large(frames):
                # Never sent, and treated as if delivered and acknowledged [MQTT-3.1.2-25].
                del self.send_window()[packet_id]
                if self.persistence is not None:
                    self.persistence.done(self.client_id, entry)
                return
        else:
            frames = message.frames(entry.qos, packet_id, retain=entry.retain, dup=dup)
        self.stats.sent_by_qos[entry.qos] += 1
        if entry.qos == 2 and self.persistence is not None:
            # Exactly once across a crash: the subscriber may only see the message once the
            # record that it was sent is on disk, or a restart would send it again as new.
            connection.send_publish_when_durable(frames)
        else:
            connection.send_publish(frames)

    def pump(self) -> None:
        """Move queued messages into the in-flight window while there is room."""
        connection = self.connection
        if connection is None:
            return
        queue = self.queue
        now = self.clock.now
        while queue and len(self.inflight) < self.max_inflight:
            assert not isinstance(queue, tuple)  # a non-empty queue is a deque
            entry = queue.popleft()
            self.queued_bytes -= len(entry.message.payload)
            if entry.message.expired(now):
                # Waited past its Message Expiry Interval: never delivered [MQTT-3.3.2-5].
                self.count_drop(EXPIRED)
                if self.persistence is not None:
                    self.persistence.done(self.client_id, entry)
                continue
            if not self._may_read(entry):
                continue
            packet_id = self.allocate_packet_id()
            self.send_window()[packet_id] = entry
            if self.persistence is not None:
                self.persistence.sent(self.client_id, entry, packet_id)
            self._transmit(connection, entry, packet_id)
        if not queue:
            self.queue = ()
        if self.overflowing and len(queue) < self.max_queued:
            self.overflowing = False
        if self.pressure and self.drained():
            self.pressure = NO_PRESSURE
            connection.queue_drained()

    def filling(self) -> bool:
        """Half the queue's room used while connected: time to slow the publishers down."""
        return len(self.queue) >= self.max_queued // 2 or bool(
            self.max_queued_bytes and self.queued_bytes >= self.max_queued_bytes // 2)

    def drained(self) -> bool:
        return len(self.queue) <= self.max_queued // 4 and (
            not self.max_queued_bytes or self.queued_bytes <= self.max_queued_bytes // 4)

    def resume(self) -> None:
        """After a reconnect: re-send what is in flight, in order, then the queue [MQTT-4.4.0-1]."""
        for packet_id in list(self.inflight):  # `resend` may drop one
            self.resend(packet_id)
        self.pump()

    def resend(self, packet_id: int) -> None:
        """Send what is in flight under `packet_id` again to the connected client: the
        PUBLISH (DUP), or the PUBREL once the client has received it."""
        connection = self.connection
        assert connection is not None
        entry = self.inflight[packet_id]
        if entry.released:
            connection.send_pubrel(packet_id)
        elif self._may_read(entry):
            self._transmit(connection, entry, packet_id, dup=True)
        else:
            del self.send_window()[packet_id]

    def _may_read(self, entry: Outgoing) -> bool:
        """Whether the client now owning the session may still read a message that waited in
        it: the ACL may have been reloaded, or the session resumed under another user name.
        A message it may not read is dropped (and forgotten by storage)."""
        acl = self.acl
        if acl is None or acl.allowed(entry.message.topic, Access.READ):
            return True
        self.count_drop(NOT_AUTHORIZED)
        if self.persistence is not None:
            self.persistence.done(self.client_id, entry)
        return False

    def count_drop(self, reason: str) -> None:
        """A message for this session not delivered, for `reason` (see stats.py)."""
        self.dropped += 1
        self.stats.drop(reason)

    def acknowledge(self, packet_id: int, qos: int) -> bool:
        """PUBACK (qos 1) or PUBCOMP (qos 2) completes an outbound message; False if unknown."""
        entry = self.inflight.get(packet_id)
        if entry is None or entry.qos != qos or (qos == 2 and not entry.released):
            return False
        del self.send_window()[packet_id]
        if self.persistence is not None:
            self.persistence.done(self.client_id, entry)
        if self.queue or self.overflowing or self.pressure:  # else nothing waits for the slot
            self.pump()
        return True

    def release(self, packet_id: int) -> bool:
        """PUBREC for an outbound QoS 2 message: its PUBREL is due. False if unknown."""
        entry = self.inflight.get(packet_id)
        if entry is None or entry.qos != 2:
            return False
        if not entry.released:
            entry.released = True
            if self.persistence is not None:
                self.persistence.released(self.client_id, entry)
        return True

    def inbound_received(self, packet_id: int) -> bool:
        """An inbound QoS 2 PUBLISH: True the first time its id is seen (route it)."""
        awaiting = self.awaiting_release
        if packet_id in awaiting:
            return False
        if isinstance(awaiting, frozenset):
            awaiting = self.awaiting_release = set()
        awaiting.add(packet_id)
        if self.persistence is not None:
            self.persistence.inbound_received(self.client_id, packet_id)
        return True

    def inbound_released(self, packet_id: int) -> bool:
        """PUBREL for an inbound QoS 2 message; False when its id was not awaiting one."""
        awaiting = self.awaiting_release
        if packet_id not in awaiting:
            return False
        assert isinstance(awaiting, set)  # it holds the id
        awaiting.discard(packet_id)
        if not awaiting:
            self.awaiting_release = NO_PACKET_IDS
        if self.persistence is not None:
            self.persistence.inbound_released(self.client_id, packet_id)
        return True

    def take_shared(self, with_inflight: bool) -> list[Outgoing]:
        """Remove and return the entries a shared subscription gave this session and that
        another member may take over: the queued ones, and with `with_inflight` (the session
        ends) the in-flight ones too, except QoS 2 ones past PUBREC, which the client has.
        Storage still holds them: the caller reports each one `done` once it is handed on."""
        taken: list[Outgoing] = []
        if with_inflight:  # first: they were sent before anything queued
            for packet_id, entry in list(self.inflight.items()):
                if entry.group is not None and not entry.released:
                    del self.send_window()[packet_id]
                    taken.append(entry)
        queued = [entry for entry in self.queue if entry.group is not None]
        if queued:
            kept = deque(entry for entry in self.queue if entry.group is None)
            self.queue = kept if kept else ()
            self.queued_bytes -= sum(len(entry.message.payload) for entry in queued)
        return taken + queued

    def forget(self) -> None:
        """The session ends: drop its stored state and its references to stored messages."""
        persistence = self.persistence
        if persistence is None:
            return
        persistence.session_ended(self.client_id, [*self.inflight.values(), *self.queue])
        self.inflight = NO_ENTRIES
        self.queue = ()
        self.queued_bytes = 0


class SessionTable:
    """The broker's sessions by client id. Iteration works on a copy, so a loop may end the
    sessions it visits."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    def get(self, client_id: str) -> Session | None:
        return self._sessions.get(client_id)

    def put(self, session: Session) -> None:
        self._sessions[session.client_id] = session

    def delete(self, client_id: str) -> None:
        self._sessions.pop(client_id, None)

    def ids(self) -> KeysView[str]:
        """Every client id, as a live view (the admin API pages through it without a copy);
        the table must not change while it is iterated."""
        return self._sessions.keys()

    def connected(self, client_id: str) -> bool:
        session = self._sessions.get(client_id)
        return session is not None and session.connection is not None

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))
