"""The broker: the core's parts, put together, and its face towards the server.

The server owns sockets and the event loop; the broker owns everything else and has none of
either. What the server gives it is a `Host` (wake, lingering close, one timer, the wall
clock), a `Storage`, an `AccessPolicy` and, with worker processes, a `WorkerSetup` (or, for
a node of a cluster, a `ClusterSetup`), all at construction. What the server calls:

- `open_connection(sink, address, now)` for each socket, then the `Connection`'s
  `data_received` / `connection_lost` / `pause_writing` / `resume_writing`;
- `flush()` when the host's wake-up comes (once per loop tick with output);
- `tick(now)` when the timer it armed for `next_deadline()` fires;
- `restore()` once at start-up, `set_acl()` on reload, `close_all()` at shutdown.

The parts (each in its own module, each with one job): `Router` (routing.py), `SessionManager`
(sessions.py), `FlowControl` (flow.py), `CommitGate` (commit.py), `OutputScheduler`
(output.py), `RetainedMessages` (retained.py), `SysTopics` (sys_topics.py) and, with
workers, `WorkerLinks` (worker_links.py), or in a cluster `NodeLinks` (node_links.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..protocol.reasons import ReasonCode
from ..storage.base import LoadedState, Storage, StoredMessage
from .access import AccessPolicy, AccessRules
from .bridges import BridgeStatus
from .commit import CommitGate
from .connection import Connection
from .context import CoreServices, Timed
from .flow import FlowControl
from .handshake import HANDSHAKE_HANDLERS
from .limits import Limits
from .message import Message
from .node_links import ClusterSetup, NodeLinks
from .options import Mqtt5Options
from .output import OutputScheduler
from .persistence import Persistence, restored_message
from .ports import ClientLink, Host, Publisher, Sink
from .restore import restore
from .retained import RetainedMessages
from .routing import Router
from .session import Session, SessionTable
from .session_moves import SessionMoves
from .sessions import SessionManager
from .stats import Stats
from .sys_topics import SysTopics
from .timers import Clock, Deadlines
from .trie import SubscriptionTrie
from .worker_links import HandOver, WorkerLinks

log = logging.getLogger("culex")


class InertHost:
    """A `Host` for the core driven by hand (tests, fuzzing): the caller flushes and ticks
    itself, sinks close at once, and the wall clock is the core's clock."""

    def __init__(self, clock: Callable[[], float] = lambda: 0.0) -> None:
        self._clock = clock

    def wake(self) -> None:
        pass

    def close_sink(self, sink: Sink) -> None:
        sink.close()

    def set_timer(self, when: float) -> None:
        pass

    def wall_time(self) -> float:
        return self._clock()


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """This process is worker `index` of `size`; the server's part in that."""

    index: int
    size: int
    # Move a connection to the worker that owns its client id.
    hand_over: HandOver
    # Every other worker announced its restored subscriptions: clients may come.
    all_ready: Callable[[], None]
    # The link to a worker closed (it stopped).
    link_lost: Callable[[int], None]


class Broker:
    def __init__(self, limits: Limits | None = None, *, host: Host | None = None,
                 storage: Storage | None = None, now: float = 0.0,
                 mqtt5: Mqtt5Options | None = None, sys_interval: float = 10.0,
                 batch_interval: float = 0.05, access: AccessPolicy | None = None,
                 workers: WorkerSetup | None = None,
                 cluster: ClusterSetup | None = None) -> None:
        self.limits = limits = limits or Limits()
        self.mqtt5 = mqtt5 or Mqtt5Options()
        self.clock = clock = Clock(now)
        self.host = host = host or InertHost(lambda: clock.now)
        self.stats = stats = Stats()
        self.access = access or AccessPolicy()
        set_timer = host.set_timer
        self.persistence = persistence = (Persistence(storage, clock) if storage is not None
                                          else None)
        self.gate = CommitGate(persistence, clock=clock, wake=host.wake, set_timer=set_timer,
                               batch_interval=batch_interval)
        self.flow = FlowControl(limits, clock, wake=host.wake, set_timer=set_timer)
        self.output = OutputScheduler(host.wake)
        self._workers = workers
        # Wills loaded at start-up that wait for every worker's routes (see `restore`).
        self._restored_wills: list[tuple[str, Message]] = []
        # The other workers, or the other nodes of a cluster: the same links either way.
        member = cluster.member if cluster is not None else (
            workers.index if workers is not None else None)
        self.retained = RetainedMessages(limits, stats, persistence, wall_time=host.wall_time,
                                         worker=member)
        self.links: WorkerLinks | None = None
        if cluster is not None:
            self.links = NodeLinks(
                cluster, deliveries=self, flow=self.flow, gate=self.gate, clock=clock,
                wake=host.wake, strategy=limits.shared_subscription_strategy,
                retained=self.retained)
        elif workers is not None:
            self.links = WorkerLinks(
                workers.index, workers.size, deliveries=self, flow=self.flow, gate=self.gate,
                clock=clock, wake=host.wake, strategy=limits.shared_subscription_strategy,
                hand_over=workers.hand_over, on_all_ready=self._all_workers_ready,
                on_link_lost=workers.link_lost)
        self.router = router = Router(limits, stats, clock, flow=self.flow,
                                      retained=self.retained, links=self.links)
        router.identifies = cluster is not None
        links = self.links
        self.manager = SessionManager(
            limits, stats, clock, router, persistence,
            owns=(lambda client_id: True) if links is None else links.owns, set_timer=set_timer)
        self.deadlines: Deadlines[Timed] = Deadlines(set_timer)
        self.moves: SessionMoves | None = None
        if cluster is not None and cluster.directory is not None and links is not None:
            self.moves = SessionMoves(self.manager, router, links,
                                      cluster.directory, clock,
                                      answer_timeout=cluster.answer_timeout,
                                      set_timer=set_timer)
        # The bridges this process runs, by name (culex/bridge/ adds them).
        self.bridges: dict[str, BridgeStatus] = {}
        # Workers: worker 0 publishes every worker's sums; a cluster node its own counters.
        self.sys = SysTopics(sys_interval, now, stats=stats, router=router,
                             sessions=self.manager.sessions,
                             connections=self.manager.connections,
                             links=links if cluster is None and workers is not None
                             else None, bridges=self.bridges,
                             nodes=links if isinstance(links, NodeLinks) else None)
        self._services = CoreServices(
            limits=limits, mqtt5=self.mqtt5, clock=clock, stats=stats, host=host,
            output=self.output, flow=self.flow, gate=self.gate, router=router,
            sessions=self.manager, deadlines=self.deadlines, access=self.access, links=links,
            moves=self.moves)

    # -- what tests and observers read ---------------------------------------------------------

    @property
    def services(self) -> CoreServices:
        """The parts a connection works with; a bridge's link to its remote works with them
        too (culex/bridge/)."""
        return self._services

    @property
    def sessions(self) -> SessionTable:
        return self.manager.sessions

    @property
    def connections(self) -> set[ClientLink]:
        """Every open connection, logged in or not."""
        return self.manager.connections

    @property
    def subscriptions(self) -> SubscriptionTrie[Session]:
        return self.router.subscriptions

    def publish(self, message: Message) -> int:
        """Publish a message of the broker's own (no publisher): routed as any other."""
        return self.router.publish(message)

    # -- connections ---------------------------------------------------------------------------

    def open_connection(self, sink: Sink, address: str, now: float) -> Connection:
        connection = Connection(self._services, sink, address, now, HANDSHAKE_HANDLERS)
        self.manager.connections.add(connection)
        self.deadlines.schedule(connection, now + self.limits.connect_timeout)
        return connection

    def set_acl(self, rules: AccessRules | None) -> None:
        """A new ACL is in force (start-up, reload): what each session may read follows it,
        offline sessions too, so a message queued for one is checked against the rules of
        its owner."""
        self.access.acl = rules
        for session in self.manager.sessions:
            if not session.owner_known:
                continue  # stored by a Culex before schema 3: resolved when its client connects
            session.acl = (rules.for_client(session.client_id, session.username)
                           if rules is not None else None)
            if session.connection is not None:
                session.connection.acl = session.acl

    def close_all(self) -> None:
        """Server shutdown: close every connection (MQTT 5 clients are told why); wills are
        kept for a client's own failure."""
        for connection in list(self.manager.connections):
            connection.close(publish_will=False, reason=ReasonCode.SERVER_SHUTTING_DOWN)
        self.flush()

    # -- the loop ------------------------------------------------------------------------------

    def flush(self, *, end_of_tick: bool = True) -> bool:
        """Handle input held back for targets that drained, write every connection that queued
        output, one `writelines` each (and each worker link), commit what was changed
        (`durability = "sync"`), and at the `end_of_tick` give every reader that used its share
        of the tick a new one. The host may flush before the tick ends (a read alone in its
        poll); the fair shares then wait for the tick's end, and True says some reader does."""
        if self.flow.resuming:
            self.flow.resume_waiting()
        output = self.output
        ready = output.ready
        if ready:
            output.ready = []
            for writer in ready:
                writer.flush()
        if self.links is not None:
            self.links.flush()
        gate = self.gate
        if gate.durable:
            gate.commit()
        elif self.persistence is not None:
            gate.batch_due()
        if output.fair_paused:
            if not end_of_tick:
                return True
            paused, output.fair_paused = output.fair_paused, []
            for reader in paused:
                reader.renew_fair_share()
        return False

    def next_deadline(self) -> float | None:
        """When `tick` must next run: the earliest deadline of any part, or None."""
        earliest = None
        for when in (self.deadlines.next, self.manager.next_deadline, self.flow.next_deadline,
                     self.gate.next_deadline, self.sys.next_deadline,
                     None if self.moves is None else self.moves.next_deadline):
            if when is not None and (earliest is None or when < earliest):
                earliest = when
        return earliest

    def tick(self, now: float) -> None:
        """Run everything due by `now`: session expiries and delayed wills, stalled readers,
        commit retries, CONNECT and keep-alive deadlines, $SYS."""
        self.clock.now = now
        self.manager.on_timer(now)
        self.flow.on_timer(now)
        self.gate.on_timer(now)
        deadlines = self.deadlines
        for connection in list(deadlines.pop_due(now)):
            deadline = connection.on_deadline(now)
            if deadline is not None:
                # Never due again in this same tick: that would loop here for ever.
                deadlines.schedule(connection, max(deadline, now + 0.001))
        self.sys.on_timer(now)
        if self.moves is not None:
            self.moves.on_timer(now)

    # -- start-up ------------------------------------------------------------------------------

    def restore(self) -> LoadedState:
        """Rebuild sessions, queues, in-flight state and retained messages from storage, then
        publish the wills of clients that were connected when the broker stopped: at once in
        one process, once every worker has announced its restored subscriptions with workers
        (`WorkerSetup.all_ready`)."""
        assert self.persistence is not None
        state, wills = restore(self.persistence, self.manager, self.router, self.links,
                               self.clock.now)
        if self.moves is not None:
            self.moves.restored(state.sessions)
        if self.links is None:
            self._publish_restored_wills(wills)
        else:
            self._restored_wills = wills
        return state

    def _all_workers_ready(self) -> None:
        self.publish_restored_wills()
        assert self._workers is not None
        self._workers.all_ready()

    def publish_restored_wills(self) -> None:
        """Every other worker or node has announced its subscriptions: the wills held back by
        `restore` can reach every session now."""
        wills, self._restored_wills = self._restored_wills, []
        self._publish_restored_wills(wills)

    def _publish_restored_wills(self, wills: list[tuple[str, Message]],
                                why: str = "connected when the broker stopped") -> None:
        for client_id, will in wills:
            log.info("client %s: publishing its will to %r (%s)", client_id, will.topic, why)
            self.router.publish(will)

    def publish_taken_wills(self, member: str, wills: list[tuple[str, StoredMessage]]) -> None:
        """The wills of the connections of cluster member `member`, which went down with it,
        taken from its store (server/cluster_sessions.py `take_wills`)."""
        now = self.clock.now
        self._publish_restored_wills(
            [(client_id, restored_message(will, now)) for client_id, will in wills],
            f"connected to {member}, which is down")

    # -- LinkDeliveries: what another worker's link hands over ---------------------------------

    def forwarded(self, frame: bytes, link: Publisher) -> None:
        self.router.forwarded(frame, link)

    def publish_from_link(self, message: Message, stamp: int, link: Publisher) -> None:
        self.router.publish_from_link(message, stamp, link)

    def deliver_to_group(self, message: Message, group: tuple[str, str],
                         link: Publisher) -> None:
        self.router.deliver_to_group(message, group, link)
