"""Cluster nodes: the links to the other Culex nodes sharing a Redis, as this node sees them.

A clustered node speaks to the others exactly as a worker speaks to its sibling workers
(worker_links.py), with the same records, routes, back-pressure and barriers; only the wire
differs: each node (a "member") reads one Redis Stream, and the server layer
(server/cluster_io.py) carries every link's records to the stream of the member it leads to.
So routing, flow control and the commit gate see one more `WorkerLinks`, and nothing in them
asks which kind:

- Filters: a node announces its first subscriber to a filter and withdraws the last
  (ROUTE_ADD / ROUTE_REMOVE), so every node keeps a trie of the others' filters, and a PUBLISH
  goes to another node only when it has a matching filter, encoded once for all of them.
- Promises: a SUBACK, and with `durability = "sync"` the PUBACK/PUBREC of a message that went
  to other nodes, wait for a barrier: every other live node has applied, and committed, what
  this one sent before it.
- Nodes that are down: a node that dies answers nothing. When its lease runs out its link
  stays, with its filters, and what matches them still goes to its stream, which it reads when
  it comes back (its persistent sessions miss nothing); a barrier it cannot answer is released
  once everything before it is in the stream (`release_barriers`): in Redis, with
  `appendfsync always`, that is stored. A node's filters are kept in Redis as well
  (`route_changes`), so a node that starts while another is down routes to it too.
- Joining: a link that comes up is sent every filter of this node, every retained message
  (each node keeps the whole retained store, stamped so that all copies converge), and READY.
  A node serves clients once every live node has sent it READY.

What differs from workers: no connection is handed from one node to another (a node serves
whoever connects to it; the session comes to it instead, see session_moves.py), and members
are numbered cluster-wide (the server layer allocates the number in Redis), which is also the
low bits of this node's retained stamps. A node with
several worker processes is one member per worker, each with its own stream; within the node,
client ids are handed to the worker that owns them, as without a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from .commit import CommitGate
from .flow import FlowControl
from .message import Message
from .ports import LinkDeliveries, Publisher, SessionDirectory, Sink
from .retained import MAX_WORKERS, RetainedMessages
from .timers import Clock
from .worker_links import (
    BARRIER,
    BARRIER_BODY,
    COUNTS,
    READY,
    ROUTE_ADD,
    HandOver,
    WorkerLink,
    WorkerLinks,
    owner_of,
    record,
)

MAX_MEMBERS = MAX_WORKERS
# Barrier numbers of one epoch: far more than a member sends in its life.
EPOCH_SHIFT = 40


@dataclass(frozen=True, slots=True)
class ClusterSetup:
    """This process is cluster member `member` (0 .. MAX_MEMBERS - 1); the server's part.
    A node with several worker processes is one member per worker: each reads its own
    stream, and within the node client ids are still handed to the worker that owns them
    (`worker` of `workers`, through `hand_over`), as without a cluster."""

    member: int
    # The link to a member closed (it started again under a new epoch, or was removed).
    link_lost: Callable[[int], None]
    # This node's filters changed (`NodeLinks.route_changes` says how): they are kept in Redis
    # too, for the nodes that start while this one is down.
    routes_changed: Callable[[], None] = lambda: None
    worker: int = 0
    workers: int = 1
    hand_over: HandOver | None = None
    # This member's epoch when it joined (see `NodeLinks.__init__`).
    epoch: int = 0
    # Who owns each client id, cluster-wide (session_moves.py); None: each node serves
    # whoever connects to it, with its own sessions.
    directory: SessionDirectory | None = None
    # How long a CONNECT waits for the member that held its client id to hand it over.
    answer_timeout: float = 10.0


def _no_hand_over(worker: int, sink: Sink, data: bytes, address: str,
                  username: str | None) -> None:
    raise AssertionError("a node of one worker serves every client id itself")


class NodeLinks(WorkerLinks):
    def __init__(self, setup: ClusterSetup, *, deliveries: LinkDeliveries, flow: FlowControl,
                 gate: CommitGate, clock: Clock, wake: Callable[[], None], strategy: str,
                 retained: RetainedMessages) -> None:
        super().__init__(setup.member, MAX_MEMBERS, deliveries=deliveries, flow=flow,
                         gate=gate, clock=clock, wake=wake, strategy=strategy,
                         hand_over=setup.hand_over or _no_hand_over,
                         on_all_ready=lambda: None, on_link_lost=setup.link_lost)
        self._retained = retained
        self._routes_changed = setup.routes_changed
        # Member -> filters of its earlier epoch, kept until its new one is READY.
        self._stale: dict[int, set[str]] = {}
        self._worker = setup.worker
        self._workers = setup.workers
        # Barriers are numbered by `sends`. An answer to a barrier of an earlier incarnation of
        # this member may still be on its way (the others read it from their streams after
        # the restart): counting from the epoch, no number is used twice, and such an answer
        # confirms nothing now.
        self.sends = self.route_sends = self._covered = self._confirmed_sends = \
            setup.epoch << EPOCH_SHIFT
        # (filter, added) in order, since the server layer last took them.
        self.route_changes: list[tuple[str, bool]] = []

    def owns(self, client_id: str) -> bool:
        """Whether this worker of the node owns `client_id` (every one, with one worker)."""
        return self._workers == 1 or owner_of(client_id, self._workers) == self._worker

    def owner(self, client_id: str) -> int:
        """The worker of this node that owns `client_id`, to hand its connection to."""
        return owner_of(client_id, self._workers)

    def attach(self, index: int, sink: Sink, now: float) -> WorkerLink:
        """A link to member `index` is up: our filters (as for a worker), then every retained
        message with its stamp, then READY."""
        link = super().attach(index, sink, now)
        self._send_state(link)
        return link

    def introduce(self, index: int) -> None:
        """Member `index`, or this one, started again (a new epoch): it has none of what
        `attach` sent, so it is sent again."""
        link = self.links[index]
        for topic_filter in self.local_filters:
            self._queue(link, record(ROUTE_ADD, topic_filter.encode()))
        self._send_state(link)
        # The barriers it has not answered: its earlier epoch may have read one and died
        # before its answer left. Asked again, the new one answers once it has read what
        # the stream holds before them, which is what a barrier promises.
        for barrier, (waiting, _callbacks) in self._unconfirmed.items():
            if index in waiting:
                self._queue(link, record(BARRIER, BARRIER_BODY.pack(barrier)))

    def _send_state(self, link: WorkerLink) -> None:
        retained = self._retained
        stamps = retained.stamps or {}
        for message in retained.store.match("#"):
            self._queue(link, self._encode(message, stamps.get(message.topic, 0), None))
        self._queue(link, record(READY, b""))

    def renew_routes(self, index: int) -> None:
        """Member `index` started again. Its link, and what waits for its answer, stay: it
        reads what its stream holds, barriers included, and answers them. The filters of its
        earlier epoch stay too until its new one has announced its own (READY, see `settle`):
        dropped at once, a message published meanwhile would miss its persistent sessions."""
        link = self.links[index]
        self._stale[index] = set(link.filters)
        link.ready = False

    def settle(self, index: int) -> None:
        """After records from member `index`: once its new epoch has said READY, the filters
        of its earlier epoch that it did not announce again go."""
        stale = self._stale.get(index)
        link = self.links.get(index)
        if stale is None or link is None or not link.ready:
            return
        del self._stale[index]
        for topic_filter in stale:
            self._route_changed(link, topic_filter, False)

    def _route_changed(self, link: WorkerLink, topic_filter: str, added: bool) -> None:
        stale = self._stale.get(link.index)
        if stale is not None:
            stale.discard(topic_filter)  # announced (or withdrawn) by its new epoch
        super()._route_changed(link, topic_filter, added)

    def subscribed(self, topic_filter: str) -> None:
        new = topic_filter not in self.local_filters
        super().subscribed(topic_filter)
        if new:
            self._route_changed_here(topic_filter, True)

    def unsubscribed(self, topic_filter: str) -> None:
        super().unsubscribed(topic_filter)
        if topic_filter not in self.local_filters:
            self._route_changed_here(topic_filter, False)

    def _route_changed_here(self, topic_filter: str, added: bool) -> None:
        if not self.route_changes:
            self._routes_changed()
        self.route_changes.append((topic_filter, added))

    def load_routes(self, index: int, filters: list[str]) -> None:
        """The filters of a member that is down, as Redis keeps them: what matches them is
        sent to its stream, which it reads when it comes back."""
        link = self.links[index]
        for topic_filter in filters:
            if topic_filter not in link.filters:
                self._route_changed(link, topic_filter, True)

    def release_barriers(self, index: int) -> None:
        """Member `index` is down and everything sent to it is in its stream (in Redis, with
        `appendfsync always`): that is as stored as its own commit, so whatever waits for its
        answer goes on."""
        for barrier in list(self._unconfirmed):
            self._confirmed(barrier, index)

    def publish(self, message: Message, stamp: int, origin: Publisher | None) -> bool:
        """As for workers, except `$SYS`: each node publishes its own counters, which must
        not overwrite another node's."""
        if message.topic.startswith("$SYS/"):
            return False
        return super().publish(message, stamp, origin)

    def send_counts(self, counts: dict[str, int]) -> None:
        """This member's counters, to every other member: each publishes the cluster's totals
        (`$SYS/cluster/...`) besides its own."""
        self._broadcast(record(COUNTS, json.dumps(counts).encode()))

    def recent_counts(self, since: float) -> list[dict[str, int]]:
        """The other members' latest counters, of those heard from since `since` (a member
        that is down stops counting)."""
        return [link.counts for link in self.links.values()
                if link.counts and link.last_activity >= since]

    def ready(self, members: set[int]) -> bool:
        """Whether each of `members` has sent READY (its filters and retained store are
        here)."""
        links = self.links
        return all(index in links and links[index].ready for index in members)
