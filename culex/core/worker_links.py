"""Worker processes: one broker core per process, tied together by links.

One event loop is one core, so Culex scales by running N workers. Each worker owns the sessions
of the client ids that hash to it (`owner_of`): a worker that reads a CONNECT for another
worker's client id hands the connection over (the transport passes the socket), so a session,
its takeover, its will and its queue always live in one process and the core's single-process
logic holds unchanged. What crosses between workers is routing:

- Filters. Each worker tells every other when it gets its first subscriber to a filter and
  when its last one leaves (`ROUTE_ADD` / `ROUTE_REMOVE`), so every worker keeps a trie of the
  others' filters (`routes`, with the same match cache as the sessions' trie).
- Messages. A PUBLISH goes to another worker only when it has a matching filter, encoded once
  for all such workers: a QoS 0 frame as the client sent it (`FORWARD`), anything else as a
  `PUBLISH` record with its QoS, properties and age. Retained messages go to every worker, since
  every worker keeps the whole retained store (a SUBSCRIBE is then answered locally). Two
  workers may publish to one retained topic at once: each retained message carries a stamp
  (wall-clock microseconds, worker index in the low bits), and a worker keeps the newest, so
  all copies converge whatever order the records arrive in (see retained.py).
- Shared subscriptions. The publishing worker chooses, per group, one worker among those with
  members (by the group's strategy), and that worker chooses the member.
- Counters. Workers other than 0 send their $SYS counters to worker 0, which publishes sums.
- Back-pressure. A link is a `Publisher` (a full local subscriber stops this worker reading
  it) and a `DeliveryTarget` (a full link pauses the local publishers feeding it), like a
  client connection; see flow.py.
- Promises. A SUBACK or ack that another worker's state must back waits for a barrier
  (`when_known`).

Single-process mode has no `WorkerLinks` at all: routing asks `self.links is not None` once per
PUBLISH. Everything here is sans-I/O: the server gives each link a `Sink` and feeds received
bytes to `data_received`.
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from collections.abc import Callable
from functools import partial

from ..protocol.topics import split_shared
from .commit import CommitGate
from .flow import FlowControl
from .message import Message
from .ports import LinkDeliveries, Publisher, Sink
from .publish_records import decode_publish, encode_publish
from .retained import MAX_WORKERS
from .states import State
from .timers import Clock
from .trie import SubscriptionTrie

ROUTE_ADD = 1
ROUTE_REMOVE = 2
FORWARD = 3  # a 3.1.1 QoS 0 frame; FORWARD_V5 an MQTT 5 one
FORWARD_V5 = 9
PUBLISH = 4
COUNTS = 5
READY = 6
BARRIER = 7
BARRIER_ACK = 8
# What a part beyond routing tells the other workers (dynamic security's changes, the admin
# API's questions and answers): a channel byte, then that part's own body. See `serve`.
SERVICE = 10
BARRIER_BODY = struct.Struct(">Q")

# Every record: the length of what follows the 4 length bytes, then its kind.
RECORD_HEAD = struct.Struct(">IB")
RECORD_LENGTH = struct.Struct(">I")


def owner_of(client_id: str, workers: int) -> int:
    """The worker that owns a client id's session: CRC-32, stable across restarts and Python
    processes (`hash()` of a str is salted per process)."""
    return zlib.crc32(client_id.encode()) % workers


def record(kind: int, body: bytes) -> bytes:
    return RECORD_HEAD.pack(len(body) + 1, kind) + body


class WorkerLink:
    """Another worker as this one sees it: where records for it go and, as the origin of the
    messages it sends here, a publisher that back-pressure pauses like a client connection."""

    __slots__ = (
        "_pending",
        "_process",
        "_resume",
        "client_id",
        "counts",
        "deferred",
        "filters",
        "index",
        "last_activity",
        "link_sends",
        "outbox",
        "paused_since",
        "reading",
        "ready",
        "sink",
        "state",
        "throttled_by",
        "v5",
        "write_paused",
    )

    def __init__(self, index: int, sink: Sink, now: float, *,
                 resume: Callable[[Publisher], None],
                 process: Callable[[WorkerLink, list[tuple[int, bytes]]], None]) -> None:
        self.index = index
        self.sink = sink
        # CLOSED once the link is gone: held-back records are then never applied.
        self.state = State.CONNECTED
        self.client_id = f"worker-{index}"
        # The protocol family of the QoS 0 frame being delivered (FORWARD records carry both).
        self.v5 = False
        self.outbox: list[bytes] = []
        self._pending = bytearray()
        self.last_activity = now
        self.write_paused = False
        self.paused_since = 0.0
        self.throttled_by = 0
        # Never set: a worker's messages are acknowledged by the worker that read them.
        self.link_sends = 0
        self.reading = True
        # Records read but not yet applied: a local subscriber filled up part-way through a
        # read (`WorkerLinks._apply`). Once it has drained, `resume` (FlowControl, as for a
        # client's held-back packets) has them applied at the end of the tick.
        self.deferred: list[tuple[int, bytes]] = []
        self._resume = resume
        self._process = process
        self.ready = False
        # The filters it announced: what to forget if its link goes.
        self.filters: set[str] = set()
        # Its last $SYS counters (worker 0 only).
        self.counts: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<WorkerLink {self.index}>"

    def update_reading(self) -> None:
        wanted = not self.throttled_by
        if wanted and self.deferred:
            self._resume(self)  # the records already read first; then the link again
            return
        if wanted is not self.reading:
            self.reading = wanted
            if wanted:
                self.sink.resume_reading()
            else:
                self.sink.pause_reading()

    def process_deferred(self) -> None:
        records, self.deferred = self.deferred, []
        self._process(self, records)

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


HandOver = Callable[[int, Sink, bytes, str, "str | None"], None]
"""The server's way to move a connection to the worker that owns its client id: (worker, the
connection's sink, the bytes read from it so far, its address, its certificate user name)."""


class WorkerLinks:
    """This worker's view of the others: their routes, the links to them, and the records it
    sends and receives (see the module docstring)."""

    def __init__(self, index: int, size: int, *, deliveries: LinkDeliveries,
                 flow: FlowControl, gate: CommitGate, clock: Clock, wake: Callable[[], None],
                 strategy: str, hand_over: HandOver, on_all_ready: Callable[[], None],
                 on_link_lost: Callable[[int], None]) -> None:
        if not 0 <= index < size <= MAX_WORKERS:
            raise ValueError(f"worker {index} of {size}: at most {MAX_WORKERS} workers")
        self.index = index
        self.size = size
        self._deliveries = deliveries
        self._flow = flow
        self._gate = gate
        self._clock = clock
        self._wake = wake
        self._strategy = strategy
        self.hand_over = hand_over
        self._on_all_ready = on_all_ready
        self._on_link_lost = on_link_lost
        self.links: dict[int, WorkerLink] = {}
        # Other workers' plain filters (the subscriber is the worker index) and shared groups
        # (the subscriber is (worker index, group name, filter)), matched like the local tries.
        self.routes: SubscriptionTrie[int] = SubscriptionTrie()
        self.shared_routes: SubscriptionTrie[tuple[int, str, str]] = SubscriptionTrie()
        # Local subscriptions per filter ("$share/..." included): a route is announced on the
        # first and withdrawn with the last.
        self.local_filters: dict[str, int] = {}
        self._turns: dict[tuple[str, str], int] = {}
        # Records a SUBACK or an ack may promise (a route; a QoS 1/2 or retained message) are
        # counted: `sends` so far, `route_sends` as of the last route announced, `covered` by
        # the newest barrier, `confirmed` by the newest one every worker answered.
        self.sends = 0
        self.route_sends = 0
        # Whether acks of QoS 1/2 messages also wait for the workers the messages went to: only
        # with durability "sync", where an ack says the message is on disk there (otherwise it
        # says the message is on its way, which the link's order keeps). A retained message's
        # ack always waits: after it, a subscriber through any worker must find the message.
        self.acks_wait_for_store = gate.durable
        self._covered = 0
        self._confirmed_sends = 0
        # Barrier (the `sends` it covers) -> the workers yet to answer, and what runs then.
        self._unconfirmed: dict[int, tuple[set[int], list[Callable[[], None]]]] = {}
        self._dirty: list[WorkerLink] = []
        # SERVICE record handlers by channel: (handler, in order), see `serve`.
        self._services: dict[int, tuple[Callable[[int, bytes], None], bool]] = {}

    # -- ownership ---------------------------------------------------------------------------

    def owns(self, client_id: str) -> bool:
        return owner_of(client_id, self.size) == self.index

    def owner(self, client_id: str) -> int:
        return owner_of(client_id, self.size)

    # -- links -------------------------------------------------------------------------------

    def attach(self, index: int, sink: Sink, now: float) -> WorkerLink:
        """A link to `index` is up: tell it every filter we have so far."""
        link = self.links[index] = WorkerLink(index, sink, now, resume=self._flow.resume_deferred,
                                              process=self._apply)
        for topic_filter in self.local_filters:
            self._queue(link, record(ROUTE_ADD, topic_filter.encode()))
        return link

    def detach(self, index: int) -> None:
        """The link to `index` is gone (that worker stopped): forget its routes, and resume
        the publishers waiting for it to drain."""
        link = self.links.pop(index, None)
        if link is None:
            return
        link.state = State.CLOSED
        for topic_filter in list(link.filters):
            self._route_changed(link, topic_filter, False)
        if link in self._dirty:
            self._dirty.remove(link)
        self._flow.release_publishers(link)
        for barrier in list(self._unconfirmed):
            self._confirmed(barrier, index)
        self._on_link_lost(index)

    def announce_ready(self) -> None:
        """Our restored sessions' filters are announced: others may publish restored wills."""
        self._broadcast(record(READY, b""))

    # -- services ----------------------------------------------------------------------------

    def serve(self, channel: int, handler: Callable[[int, bytes], None], *,
              in_order: bool = True) -> None:
        """Give `handler(worker, body)` the SERVICE records of `channel` from the other workers.
        In order, they wait like routing records behind a full local subscriber (a change must
        not overtake what was routed before it); otherwise they are handled once read."""
        self._services[channel] = (handler, in_order)

    def send_service(self, channel: int, body: bytes, to: int | None = None, *,
                     counted: bool = False) -> bool:
        """A SERVICE record of `channel` for worker `to`, or every other one; False when `to`
        has no link (any more). A `counted` one counts in `sends`: `when_known` waits for it."""
        data = record(SERVICE, bytes((channel,)) + body)
        if to is None:
            self._broadcast(data)
        else:
            link = self.links.get(to)
            if link is None:
                return False
            self._queue(link, data)
        if counted:
            self.sends += 1
        return True

    def _serve(self, link: WorkerLink, body: bytes) -> None:
        if (service := self._services.get(body[0])) is not None:
            service[0](link.index, body[1:])

    def _in_order(self, body: bytes) -> bool:
        return (service := self._services.get(body[0])) is None or service[1]

    def _queue(self, link: WorkerLink, data: bytes) -> None:
        if not link.outbox:
            self._dirty.append(link)
            if len(self._dirty) == 1:
                self._wake()
        link.outbox.append(data)

    def _broadcast(self, data: bytes) -> None:
        for link in self.links.values():
            self._queue(link, data)

    def flush(self) -> None:
        """One write per link per loop tick, like client connections."""
        dirty, self._dirty = self._dirty, []
        for link in dirty:
            outbox, link.outbox = link.outbox, []
            link.sink.writelines(outbox)

    def pause_writing(self, index: int, now: float) -> None:
        link = self.links[index]
        link.write_paused = True
        link.paused_since = now

    def resume_writing(self, index: int) -> None:
        link = self.links[index]
        link.write_paused = False
        self._flow.release_publishers(link)

    # -- routes ------------------------------------------------------------------------------

    def subscribed(self, topic_filter: str) -> None:
        count = self.local_filters.get(topic_filter, 0)
        self.local_filters[topic_filter] = count + 1
        if not count and self.links:
            self._broadcast(record(ROUTE_ADD, topic_filter.encode()))
            self.sends += 1
            self.route_sends = self.sends

    def when_known(self, callback: Callable[[], None], upto: int) -> bool:
        """Run `callback` once every other worker has applied, and committed, the first
        `upto` counted records (see `sends`); False, and nothing taken, if they have already.

        A BARRIER record follows them; a link is a FIFO, and a worker answers BARRIER_ACK
        after its next commit, so the answer covers everything sent before it. One barrier
        serves every SUBACK and ack of a loop tick."""
        if upto <= self._confirmed_sends:
            return False
        if upto > self._covered:
            self._covered = self.sends
            if not self.links:
                self._confirmed_sends = self.sends  # nobody left to confirm anything
                return False
            self._unconfirmed[self._covered] = (set(self.links), [])
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

    def _route_changed(self, link: WorkerLink, topic_filter: str, added: bool) -> None:
        if added:
            link.filters.add(topic_filter)
        else:
            link.filters.discard(topic_filter)
        shared = split_shared(topic_filter)
        if shared is None:
            if added:
                self.routes.add(topic_filter, link.index, 0)
            else:
                self.routes.remove(topic_filter, link.index)
            return
        name, inner = shared
        if added:
            self.shared_routes.add(inner, (link.index, name, inner), 0)
        else:
            self.shared_routes.remove(inner, (link.index, name, inner))

    # -- sending messages --------------------------------------------------------------------

    def forward(self, topic: str, frame: bytes, origin: Publisher) -> None:
        """A QoS 0 frame for every worker with a matching filter, as the client sent it."""
        matches = self.routes.match(topic)
        if matches:
            data = RECORD_HEAD.pack(len(frame) + 1, FORWARD_V5 if origin.v5 else FORWARD)
            links = self.links
            for index, _ in matches:
                link = links[index]
                if link.write_paused:
                    self._flow.pause_for_link(origin, link)
                self._queue(link, data)
                link.outbox.append(frame)

    def publish(self, message: Message, stamp: int, origin: Publisher | None) -> bool:
        """A message for the workers with matching filters (every worker when it is retained,
        to keep their stores whole). True when some worker has a matching filter."""
        matches = self.routes.match(message.topic)
        if not matches and not message.retain:
            return False
        data = self._encode(message, stamp, None)
        if message.retain or (message.qos and self.acks_wait_for_store):
            self.sends += 1
            if origin is not None:
                origin.link_sends = self.sends
        targets = self.links.keys() if message.retain else [index for index, _ in matches]
        for index in targets:
            link = self.links[index]
            if link.write_paused:
                self._flow.pause_for_link(origin, link)
            self._queue(link, data)
        return bool(matches)

    def _encode(self, message: Message, stamp: int, group: tuple[str, str] | None) -> bytes:
        return record(PUBLISH, encode_publish(message, stamp, group, self._clock.now))

    def choose_workers(self, message: Message, origin: Publisher | None,
                       local: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], bool]:
        """Choose a worker for every shared group matching the message: send the message to
        the winners among the other workers, and return the groups of `local` (those with
        members here) that this worker won, and whether the message went to another worker."""
        remote: dict[tuple[str, str], list[int]] = {}
        for (index, name, inner), _ in self.shared_routes.match(message.topic):
            remote.setdefault((name, inner), []).append(index)
        if not remote:
            return local, False
        publisher = None if origin is None else origin.client_id
        kept = []
        for key in local:
            workers = remote.pop(key, None)
            chosen = self.index if workers is None else self._choose(
                key, [self.index, *workers], publisher, message.topic)
            if chosen == self.index:
                kept.append(key)
            else:
                self._send_shared(message, key, chosen, origin)
        for key, workers in remote.items():
            self._send_shared(message, key, self._choose(key, workers, publisher, message.topic),
                              origin)
        return kept, len(kept) < len(local) or bool(remote)

    def hand_to_group(self, message: Message, key: tuple[str, str]) -> bool:
        """A message of a shared group that no local member can take (its member here left):
        to a worker where the group has members, if any."""
        workers = [index for (index, name, inner), _ in self.shared_routes.match(message.topic)
                   if (name, inner) == key]
        if not workers:
            return False
        self._send_shared(message, key, self._choose(key, workers, None, message.topic), None)
        return True

    def _send_shared(self, message: Message, key: tuple[str, str], chosen: int,
                     origin: Publisher | None) -> None:
        if message.qos and self.acks_wait_for_store:
            self.sends += 1
            if origin is not None:
                origin.link_sends = self.sends
        link = self.links[chosen]
        if link.write_paused:
            self._flow.pause_for_link(origin, link)
        self._queue(link, self._encode(message, message.cluster_id, key))

    def _choose(self, key: tuple[str, str], workers: list[int], publisher: str | None,
                topic: str) -> int:
        """Which worker's members get the message: the group's strategy, across workers
        ("hash" and "sticky" pick by the publisher, so one publisher stays with one worker)."""
        workers.sort()
        strategy = self._strategy
        if strategy in ("hash", "sticky"):
            return workers[zlib.crc32((publisher or topic).encode()) % len(workers)]
        if strategy == "random":
            return random.choice(workers)
        turn = self._turns.get(key, 0)
        self._turns[key] = turn + 1
        return workers[turn % len(workers)]

    # -- counters ----------------------------------------------------------------------------

    def send_counts(self, counts: dict[str, int]) -> None:
        first = self.links.get(0)
        if first is not None:
            self._queue(first, record(COUNTS, json.dumps(counts).encode()))

    def other_counts(self) -> list[dict[str, int]]:
        return [link.counts for link in self.links.values()]

    # -- receiving ---------------------------------------------------------------------------

    def data_received(self, index: int, data: bytes, now: float) -> None:
        link = self.links[index]
        link.last_activity = now
        self._clock.now = now
        if link.deferred:  # read before the pause took effect: after those held back
            link.deferred += link.records(data)
        else:
            self._apply(link, link.records(data))

    def _apply(self, link: WorkerLink, records: list[tuple[int, bytes]]) -> None:
        """Apply records in order, and stop where a local subscriber filled up (the link is then
        `throttled_by` it) and the next record is not a QoS 0 one: the rest waits in
        `link.deferred`. A whole read holds thousands of messages; applied at once they would
        overflow a queue, and a QoS 1/2 message the other worker acknowledged must not be
        dropped. QoS 0 frames go on, into the subscribers' write buffers, as a client's would:
        stopping for them would cut fan-out batches short."""
        deliveries = self._deliveries
        for position, (kind, body) in enumerate(records):
            if kind in (FORWARD, FORWARD_V5):
                link.v5 = kind == FORWARD_V5
                deliveries.forwarded(body, link)
            elif kind == SERVICE and not self._in_order(body):
                self._serve(link, body)  # handled even while held back: it delivers nothing
            elif link.throttled_by:
                link.deferred = records[position:]
                return
            elif kind == PUBLISH:
                self._published(link, body)
            elif kind == ROUTE_ADD:
                self._route_changed(link, body.decode(), True)
            elif kind == ROUTE_REMOVE:
                self._route_changed(link, body.decode(), False)
            elif kind == COUNTS:
                link.counts = json.loads(body)
            elif kind == BARRIER:
                self._gate.when_durable(partial(self._queue, link), record(BARRIER_ACK, body))
            elif kind == BARRIER_ACK:
                self._confirmed(BARRIER_BODY.unpack(body)[0], link.index)
            elif kind == SERVICE:
                self._serve(link, body)
            elif kind == READY:
                link.ready = True
                if sum(other.ready for other in self.links.values()) == self.size - 1:
                    self._on_all_ready()

    def _published(self, link: WorkerLink, body: bytes) -> None:
        published = decode_publish(body, self._clock.now)
        link.v5 = False
        if published.group is not None:
            self._deliveries.deliver_to_group(published.message, published.group, link)
        else:
            self._deliveries.publish_from_link(published.message, published.stamp, link)
