"""Worker processes: one broker core per process, tied together by peer links.

One event loop is one core, so Culex scales by running N workers. Each worker owns the sessions
of the client ids that hash to it (`owner_of`): a worker that reads a CONNECT for another
worker's client id hands the connection over (the transport passes the socket), so a session,
its takeover, its will and its queue always live in one process and the core's single-process
logic holds unchanged. What crosses between workers is routing:

- Filters. Each worker tells every other when it gets its first subscriber to a filter and
  when its last one leaves (`ROUTE_ADD` / `ROUTE_REMOVE`), so every worker keeps a trie of its
  peers' filters (`routes`, with the same match cache as the sessions' trie).
- Messages. A PUBLISH goes to a peer only when that peer has a matching filter, encoded once
  for all such peers: a QoS 0 frame as the client sent it (`FORWARD`), anything else as a
  `PUBLISH` record with its QoS, properties and age. Retained messages go to every peer, since
  every worker keeps the whole retained store (a SUBSCRIBE is then answered locally). Two
  workers may publish to one retained topic at once: each retained message carries a stamp
  (wall-clock microseconds, worker index in the low bits), and a worker keeps the newest, so
  all copies converge whatever order the records arrive in (storage applies the same rule).
- Shared subscriptions. The publishing worker chooses, per group, one worker among those with
  members (by the group's strategy), and that worker chooses the member.
- Counters. Workers other than 0 send their $SYS counters to worker 0, which publishes sums.

Single-process mode has no `Cluster` at all: the broker asks `self.cluster is not None` once
per PUBLISH. Everything here is sans-I/O: the transport gives each peer a `PeerSink` and feeds
received bytes to `data_received`.
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Protocol

from ..protocol.packets import PacketType
from ..protocol.properties import decode_properties, encode_properties
from ..protocol.topics import split_shared
from .message import Message
from .states import State
from .trie import SubscriptionTrie

if TYPE_CHECKING:
    from .broker import Broker
    from .connection import Connection
    from .session import Session
    from .shared import SharedGroup

ROUTE_ADD = 1
ROUTE_REMOVE = 2
FORWARD = 3  # a 3.1.1 QoS 0 frame; FORWARD_V5 an MQTT 5 one
FORWARD_V5 = 9
PUBLISH = 4
COUNTS = 5
READY = 6
BARRIER = 7
BARRIER_ACK = 8
BARRIER_BODY = struct.Struct(">Q")

# Every record: the length of what follows the 4 length bytes, then its kind.
RECORD_HEAD = struct.Struct(">IB")
RECORD_LENGTH = struct.Struct(">I")
# PUBLISH: flags (QoS, retain, shared target), retained stamp, age in seconds, the lengths of
# the shared group's name and filter, of the topic and of the property block; then those
# fields, then the payload.
PUBLISH_HEAD = struct.Struct(">BQdHHHI")
RETAIN_FLAG = 0x04
SHARED_FLAG = 0x08
# Low bits of a retained stamp: the worker index, so two stamps are never equal.
STAMP_WORKER_BITS = 10
MAX_WORKERS = 1 << STAMP_WORKER_BITS


def owner_of(client_id: str, workers: int) -> int:
    """The worker that owns a client id's session: CRC-32, stable across restarts and Python
    processes (`hash()` of a str is salted per process)."""
    return zlib.crc32(client_id.encode()) % workers


def next_stamp(last: int, wall_now: float, worker: int) -> int:
    """A retained stamp after `last`: wall-clock microseconds, the worker index in the low
    bits, and never below `last` (clocks step back; storage must still take the new one)."""
    candidate = int(wall_now * 1_000_000) << STAMP_WORKER_BITS | worker
    if candidate <= last:
        candidate = ((last >> STAMP_WORKER_BITS) + 1) << STAMP_WORKER_BITS | worker
    return candidate


def record(kind: int, body: bytes) -> bytes:
    return RECORD_HEAD.pack(len(body) + 1, kind) + body


class PeerSink(Protocol):
    """The transport's end of the link to one peer worker."""

    def writelines(self, list_of_data: list[bytes]) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Peer:
    """Another worker as this one sees it: where records for it go, and, as the origin of the
    messages it sends here, a publisher that routing can pause like a client connection (a full
    local subscriber pauses reading the link; a full link pauses the local publishers)."""

    __slots__ = (
        "_pending",
        "apply",
        "client_id",
        "counts",
        "deferred",
        "filters",
        "index",
        "last_activity",
        "outbox",
        "paused_since",
        "peer",
        "peer_sends",
        "reading",
        "ready",
        "resume",
        "session",
        "sink",
        "state",
        "throttled_by",
        "v5",
        "write_paused",
    )

    def __init__(self, index: int, sink: PeerSink, now: float,
                 resume: Callable[[Peer], None],
                 apply: Callable[[Peer, list[tuple[int, bytes]]], None]) -> None:
        self.index = index
        self.sink = sink
        # CLOSED once the link is gone: held-back records are then never applied.
        self.state = State.CONNECTED
        self.client_id = self.peer = f"worker-{index}"
        # Never a session: No Local compares sessions, and a peer's messages are nobody's own.
        self.session: Session | None = None
        # The protocol family of the QoS 0 frame being delivered (FORWARD records carry both).
        self.v5 = False
        self.outbox: list[bytes] = []
        self._pending = bytearray()
        self.last_activity = now
        self.write_paused = False
        self.paused_since = 0.0
        self.throttled_by = 0
        self.reading = True
        # Records read but not yet applied: a local subscriber filled up part-way through a
        # read (`Cluster._apply`). Once it has drained, `resume` (Broker.resume_deferred, as
        # for a client's held-back packets) has them applied at the end of the tick.
        self.deferred: list[tuple[int, bytes]] = []
        self.resume = resume
        self.apply = apply
        self.ready = False
        self.peer_sends = 0  # as for a Connection; unused
        # The filters it announced: what to forget if its link goes.
        self.filters: set[str] = set()
        # Its last $SYS counters (worker 0 only).
        self.counts: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<Peer {self.index}>"

    def update_reading(self) -> None:
        wanted = not self.throttled_by
        if wanted and self.deferred:
            self.resume(self)  # the records already read first; then the link again
            return
        if wanted is not self.reading:
            self.reading = wanted
            if wanted:
                self.sink.resume_reading()
            else:
                self.sink.pause_reading()

    def process_deferred(self) -> None:
        records, self.deferred = self.deferred, []
        self.apply(self, records)

    def records(self, data: bytes) -> list[tuple[int, bytes]]:
        """Split the stream into (kind, body) records; keep a trailing partial one. A pending
        partial record takes only the bytes it lacks (see FrameReader.feed for why)."""
        pending = self._pending
        found: list[tuple[int, bytes]] = []
        rest: bytes | memoryview = data
        if pending:
            lacking = len(data)
            if len(pending) >= 4:
                lacking = min(4 + RECORD_LENGTH.unpack_from(pending)[0] - len(pending), lacking)
            pending += data if lacking == len(data) else memoryview(data)[:lacking]
            del pending[:split_records(pending, found)]
            if lacking == len(data):
                return found
            rest = memoryview(data)[lacking:]
        used = split_records(rest, found)
        if used < len(rest):
            pending += rest[used:]
        return found


def split_records(view: bytes | bytearray | memoryview, found: list[tuple[int, bytes]]) -> int:
    """Append the complete records at the start of `view`; return the bytes they took."""
    pos = 0
    size = len(view)
    while size - pos >= 5:
        length, kind = RECORD_HEAD.unpack_from(view, pos)
        end = pos + 4 + length
        if end > size:
            break
        found.append((kind, bytes(view[pos + 5:end])))
        pos = end
    return pos


class Cluster:
    """This worker's view of the others: their routes, the links to them, and the records it
    sends and receives (see the module docstring)."""

    def __init__(self, broker: Broker, index: int, size: int) -> None:
        if not 0 <= index < size <= MAX_WORKERS:
            raise ValueError(f"worker {index} of {size}: at most {MAX_WORKERS} workers")
        self.broker = broker
        self.index = index
        self.size = size
        self.peers: dict[int, Peer] = {}
        # Peers' plain filters (the subscriber is the peer index) and shared groups (the
        # subscriber is (peer index, group name, filter)), matched like the local tries.
        self.routes: SubscriptionTrie[int] = SubscriptionTrie()
        self.shared_routes: SubscriptionTrie[tuple[int, str, str]] = SubscriptionTrie()
        # Local subscriptions per filter ("$share/..." included): a route is announced on the
        # first and withdrawn with the last.
        self.local_filters: dict[str, int] = {}
        self.retained_stamps: dict[str, int] = {}
        self._turns: dict[tuple[str, str], int] = {}
        # Records a SUBACK or an ack may promise (a route; a QoS 1/2 or retained message) are
        # counted: `sends` so far, `route_sends` as of the last route announced, `covered` by
        # the newest barrier, `confirmed` by the newest one every peer answered.
        self.sends = 0
        self.route_sends = 0
        # Whether acks of QoS 1/2 messages also wait for the workers the messages went to.
        # Only with durability "sync", where an ack says the message is on disk there;
        # otherwise it says no more than that the message is on its way, which the link's
        # order keeps. A retained message's ack always waits: after it, a subscriber through
        # any worker must find the message.
        persistence = broker.persistence
        self.acks_wait_for_store = persistence is not None and persistence.durable
        self._covered = 0
        self._confirmed_sends = 0
        # Barrier (the `sends` it covers) -> the peers yet to answer, and what runs then.
        self._unconfirmed: dict[int, tuple[set[int], list[Callable[[], None]]]] = {}
        self._dirty: list[Peer] = []
        # The transport's way to move a connection to its owner: (worker, sink, bytes read so
        # far from it, peer label, certificate user name).
        self.move: Callable[[int, object, bytes, str, str | None], None] = \
            lambda worker, sink, data, peer, user: None
        # Called once every peer said READY (its restored subscriptions are announced), and
        # when a link goes.
        self.on_ready: Callable[[], None] = lambda: None
        self.on_detach: Callable[[int], None] = lambda index: None

    # -- ownership ---------------------------------------------------------------------------

    def owns(self, client_id: str) -> bool:
        return owner_of(client_id, self.size) == self.index

    def owner(self, client_id: str) -> int:
        return owner_of(client_id, self.size)

    # -- links -------------------------------------------------------------------------------

    def attach(self, index: int, sink: PeerSink, now: float) -> Peer:
        """A link to `index` is up: tell it every filter we have so far."""
        peer = self.peers[index] = Peer(index, sink, now, self.broker.resume_deferred,
                                        self._apply)
        for topic_filter in self.local_filters:
            self._queue(peer, record(ROUTE_ADD, topic_filter.encode()))
        return peer

    def detach(self, index: int) -> None:
        """The link to `index` is gone (that worker stopped): forget its routes, and resume
        the publishers waiting for it to drain."""
        peer = self.peers.pop(index, None)
        if peer is None:
            return
        peer.state = State.CLOSED
        for topic_filter in list(peer.filters):
            self._route_changed(peer, topic_filter, False)
        if peer in self._dirty:
            self._dirty.remove(peer)
        self.broker.release_publishers(peer)
        for barrier in list(self._unconfirmed):
            self._confirmed(barrier, index)
        self.on_detach(index)

    def announce_ready(self) -> None:
        """Our restored sessions' filters are announced: peers may publish restored wills."""
        self._broadcast(record(READY, b""))

    def _queue(self, peer: Peer, data: bytes) -> None:
        if not peer.outbox:
            self._dirty.append(peer)
            if len(self._dirty) == 1:
                self.broker.wake()
        peer.outbox.append(data)

    def _broadcast(self, data: bytes) -> None:
        for peer in self.peers.values():
            self._queue(peer, data)

    def flush(self) -> None:
        """One write per peer per loop tick, like client connections."""
        dirty, self._dirty = self._dirty, []
        for peer in dirty:
            outbox, peer.outbox = peer.outbox, []
            peer.sink.writelines(outbox)

    def pause_writing(self, index: int, now: float) -> None:
        peer = self.peers[index]
        peer.write_paused = True
        peer.paused_since = now

    def resume_writing(self, index: int) -> None:
        peer = self.peers[index]
        peer.write_paused = False
        self.broker.release_publishers(peer)

    # -- routes ------------------------------------------------------------------------------

    def subscribed(self, topic_filter: str) -> None:
        count = self.local_filters.get(topic_filter, 0)
        self.local_filters[topic_filter] = count + 1
        if not count and self.peers:
            self._broadcast(record(ROUTE_ADD, topic_filter.encode()))
            self.sends += 1
            self.route_sends = self.sends

    def when_known(self, callback: Callable[[], None], upto: int) -> bool:
        """Run `callback` once every peer has applied, and committed, the first `upto`
        counted records (see `sends`); False, and nothing taken, if they have already.

        A BARRIER record follows them; a link is a FIFO, and a peer answers BARRIER_ACK after
        its next commit, so the answer covers everything sent before it. One barrier serves
        every SUBACK and ack of a loop tick."""
        if upto <= self._confirmed_sends:
            return False
        if upto > self._covered:
            self._covered = self.sends
            if not self.peers:
                self._confirmed_sends = self.sends  # nobody left to confirm anything
                return False
            self._unconfirmed[self._covered] = (set(self.peers), [])
            self._broadcast(record(BARRIER, BARRIER_BODY.pack(self._covered)))
        self._unconfirmed[self._covered][1].append(callback)
        return True

    def _confirmed(self, barrier: int, index: int) -> None:
        waiting = self._unconfirmed.get(barrier)
        if waiting is None:
            return
        waiting[0].discard(index)
        if not waiting[0]:
            del self._unconfirmed[barrier]
            self._confirmed_sends = max(self._confirmed_sends, barrier)
            for callback in waiting[1]:
                callback()

    def unsubscribed(self, topic_filter: str) -> None:
        count = self.local_filters[topic_filter] - 1
        if count:
            self.local_filters[topic_filter] = count
            return
        del self.local_filters[topic_filter]
        self._broadcast(record(ROUTE_REMOVE, topic_filter.encode()))

    def _route_changed(self, peer: Peer, topic_filter: str, added: bool) -> None:
        if added:
            peer.filters.add(topic_filter)
        else:
            peer.filters.discard(topic_filter)
        shared = split_shared(topic_filter)
        if shared is None:
            if added:
                self.routes.add(topic_filter, peer.index, 0)
            else:
                self.routes.remove(topic_filter, peer.index)
            return
        name, inner = shared
        if added:
            self.shared_routes.add(inner, (peer.index, name, inner), 0)
        else:
            self.shared_routes.remove(inner, (peer.index, name, inner))

    # -- sending messages --------------------------------------------------------------------

    def newer(self, topic: str, stamp: int) -> bool:
        """Whether a peer's retained message is newer than ours; if so it becomes current."""
        if stamp < self.retained_stamps.get(topic, 0):
            return False
        self.retained_stamps[topic] = stamp
        broker = self.broker
        broker.last_stamp = max(broker.last_stamp, stamp)  # later local stamps stay above it
        return True

    def forward(self, topic: str, frame: bytes, origin: Connection) -> None:
        """A QoS 0 frame for every peer with a matching filter, as the client sent it."""
        matches = self.routes.match(topic)
        if matches:
            data = RECORD_HEAD.pack(len(frame) + 1, FORWARD_V5 if origin.v5 else FORWARD)
            peers = self.peers
            for index, _ in matches:
                peer = peers[index]
                if peer.write_paused:
                    self.broker.hold_for_link(origin, peer)
                self._queue(peer, data)
                peer.outbox.append(frame)

    def publish(self, message: Message, stamp: int, now: float,
                origin: Connection | None) -> bool:
        """A message for the peers with matching filters (every peer when it is retained,
        to keep their stores whole). True when some peer has a matching filter."""
        matches = self.routes.match(message.topic)
        if not matches and not message.retain:
            return False
        data = self._encode(message, stamp, now, None)
        if message.retain or (message.qos and self.acks_wait_for_store):
            self.sends += 1
            if origin is not None:
                origin.peer_sends = self.sends
        targets = self.peers.keys() if message.retain else [index for index, _ in matches]
        for index in targets:
            peer = self.peers[index]
            if peer.write_paused:
                self.broker.hold_for_link(origin, peer)
            self._queue(peer, data)
        return bool(matches)

    def _encode(self, message: Message, stamp: int, now: float,
                group: tuple[str, str] | None) -> bytes:
        properties = b"" if message.properties is None else encode_properties(message.properties)
        name, inner = (b"", b"") if group is None else (group[0].encode(), group[1].encode())
        flags = message.qos | (RETAIN_FLAG if message.retain else 0) \
            | (SHARED_FLAG if group is not None else 0)
        head = PUBLISH_HEAD.pack(flags, stamp, now - message.created, len(name), len(inner),
                                 len(message.topic_bytes), len(properties))
        return record(PUBLISH, b"".join((head, name, inner, message.topic_bytes, properties,
                                         message.payload)))

    def share(self, message: Message, now: float, origin: Connection | Peer | None,
              local: list[tuple[Session, int, SharedGroup]]
              ) -> tuple[list[tuple[Session, int, SharedGroup]], bool]:
        """Choose a worker for every shared group matching the message: keep the local picks
        of the groups this worker won, send the message to the winners of the others (and
        say whether any was sent)."""
        remote: dict[tuple[str, str], list[int]] = {}
        for (index, name, inner), _ in self.shared_routes.match(message.topic):
            remote.setdefault((name, inner), []).append(index)
        if not remote:
            return local, False
        publisher = None if origin is None else origin.client_id
        kept = []
        for pick in local:
            group = pick[2]
            key = (group.name, group.topic_filter)
            workers = remote.pop(key, None)
            chosen = self.index if workers is None else self._choose(
                key, [self.index, *workers], publisher, message.topic)
            if chosen == self.index:
                kept.append(pick)
            else:
                self._send_shared(message, now, key, chosen, origin)
        for key, workers in remote.items():
            self._send_shared(message, now, key,
                              self._choose(key, workers, publisher, message.topic), origin)
        return kept, len(kept) < len(local) or bool(remote)

    def hand_to_group(self, message: Message, now: float, key: tuple[str, str]) -> bool:
        """A message of a shared group that no local member can take (its member here left):
        to a worker where the group has members, if any."""
        workers = [index for (index, name, inner), _ in self.shared_routes.match(message.topic)
                   if (name, inner) == key]
        if not workers:
            return False
        self._send_shared(message, now, key, self._choose(key, workers, None, message.topic),
                          None)
        return True

    def _send_shared(self, message: Message, now: float, key: tuple[str, str], chosen: int,
                     origin: Connection | Peer | None) -> None:
        if message.qos and self.acks_wait_for_store:
            self.sends += 1
            if origin is not None:
                origin.peer_sends = self.sends
        peer = self.peers[chosen]
        if peer.write_paused:
            self.broker.hold_for_link(origin, peer)
        self._queue(peer, self._encode(message, 0, now, key))

    def _choose(self, key: tuple[str, str], workers: list[int], publisher: str | None,
                topic: str) -> int:
        """Which worker's members get the message: the group's strategy, across workers
        ("hash" and "sticky" pick by the publisher, so one publisher stays with one worker)."""
        workers.sort()
        strategy = self.broker.limits.shared_subscription_strategy
        if strategy in ("hash", "sticky"):
            return workers[zlib.crc32((publisher or topic).encode()) % len(workers)]
        if strategy == "random":
            return random.choice(workers)
        turn = self._turns.get(key, 0)
        self._turns[key] = turn + 1
        return workers[turn % len(workers)]

    # -- counters ----------------------------------------------------------------------------

    def send_counts(self, counts: dict[str, int]) -> None:
        first = self.peers.get(0)
        if first is not None:
            self._queue(first, record(COUNTS, json.dumps(counts).encode()))

    def peer_counts(self) -> list[dict[str, int]]:
        return [peer.counts for peer in self.peers.values()]

    # -- receiving ---------------------------------------------------------------------------

    def data_received(self, index: int, data: bytes, now: float) -> None:
        peer = self.peers[index]
        peer.last_activity = now
        self.broker.now = now
        if peer.deferred:  # read before the pause took effect: after those held back
            peer.deferred += peer.records(data)
        else:
            self._apply(peer, peer.records(data))

    def _apply(self, peer: Peer, records: list[tuple[int, bytes]]) -> None:
        """Apply records in order, and stop where a local subscriber filled up (the peer is
        then `throttled_by` it) and the next record is not a QoS 0 one: the rest waits in
        `peer.deferred`. A whole read holds thousands of messages; applied at once they would
        overflow a queue, and a QoS 1/2 message the other worker acknowledged must not be
        dropped. QoS 0 frames go on, into the subscribers' write buffers, as a client's
        would: stopping for them cut fan-out batches short."""
        broker = self.broker
        for position, (kind, body) in enumerate(records):
            if kind in (FORWARD, FORWARD_V5):
                peer.v5 = kind == FORWARD_V5
                broker.forwarded(body, peer)
            elif peer.throttled_by:
                peer.deferred = records[position:]
                return
            elif kind == PUBLISH:
                self._published(peer, body, broker.now)
            elif kind == ROUTE_ADD:
                self._route_changed(peer, body.decode(), True)
            elif kind == ROUTE_REMOVE:
                self._route_changed(peer, body.decode(), False)
            elif kind == COUNTS:
                peer.counts = json.loads(body)
            elif kind == BARRIER:
                ack = record(BARRIER_ACK, body)
                broker.after_commit(partial(self._queue, peer, ack))
            elif kind == BARRIER_ACK:
                self._confirmed(BARRIER_BODY.unpack(body)[0], peer.index)
            elif kind == READY:
                peer.ready = True
                if sum(other.ready for other in self.peers.values()) == self.size - 1:
                    self.on_ready()

    def _published(self, peer: Peer, body: bytes, now: float) -> None:
        flags, stamp, age, name_length, filter_length, topic_length, properties_length = \
            PUBLISH_HEAD.unpack_from(body)
        pos = PUBLISH_HEAD.size
        name = body[pos:pos + name_length].decode()
        pos += name_length
        inner = body[pos:pos + filter_length].decode()
        pos += filter_length
        topic_bytes = body[pos:pos + topic_length]
        pos += topic_length
        properties = None
        if properties_length:
            properties = decode_properties(body, pos, pos + properties_length,
                                           PacketType.PUBLISH)[0]
        pos += properties_length
        message = Message(topic_bytes.decode(), body[pos:], flags & 0x03,
                          bool(flags & RETAIN_FLAG), topic_bytes=topic_bytes,
                          properties=properties, created=now - age)
        peer.v5 = False
        if flags & SHARED_FLAG:
            self.broker.deliver_to_group(message, (name, inner), peer)
        else:
            self.broker.publish_from_peer(message, stamp, peer)

