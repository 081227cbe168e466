"""A cluster node's Redis I/O: membership with a lease, and the streams the links run on.

The sans-I/O side is `core/node_links.py` (links, records, routes, barriers) and
`cluster/keys.py` (where things are in Redis). Here:

- Joining: one script allocates this node's member number (once, kept), bumps its epoch (a
  fencing token) and takes its lease (a key with a TTL), renewed by a heartbeat every
  `HEARTBEAT_FRACTION` of it while the key is still this process's; a node that finds its
  lease gone (paused past it, or Redis lost it) joins again under a new epoch, and lets go of
  the sessions claimed elsewhere meanwhile before it applies anything (cluster_sessions.py);
  a node that starts applies first what its stream holds, so that those sessions carry it.
- Membership: read at every heartbeat. A new member gets a link (`NodeLinks.attach`: our
  filters, retained messages, READY); a new epoch of a known one keeps its link and what
  waits for its answer, is sent all that again, and its earlier filters are replaced by those
  it announces (`NodeLinks.renew_routes`). A member whose lease ran out is down: its link and
  filters stay, QoS 0 is not sent to it, and what waits for its answer is released once its
  stream holds everything sent before (`NodeLinks.release_barriers`), and the wills of its
  connections go out from the first member that takes them (cluster_sessions.py). A member
  removed from the membership (`culex cluster forget`) loses its link and filters.
- Sending: what a tick queued for a member is one stream entry, numbered (epoch, sequence),
  released once the tick's commit is done; with `durability = "sync"` an entry carrying more
  than QoS 0 is committed with the tick in the outbox table (storage/stream_cursors.py) and
  sent again under its number after a crash. Released entries go out in one pipelined round
  trip; a failed one is sent again (a receiver drops a number it has applied). A member's link
  counts as full, its publishers paused as for a worker link, while its entries wait past
  `HIGH_WATER` bytes here, or its stream holds more than it keeps up with (stream_backlog.py).
- Receiving: this node's stream is read through a consumer group; each entry's records are
  applied in order (`WorkerLinks.data_received`), how far each sender's entries are applied is
  committed with what they changed, and an entry is acknowledged (XACK, then XDEL) after that
  commit. After a restart, and after a read or an XACK failed, the entries read but never
  acknowledged are read again first (see server/stream_reading.py). A full local subscriber
  stops the reading (the link's `pause_reading`), as for a worker link.
- Redis unavailable: logged once, retried with a growing delay (at most `MAX_RETRY`), logged
  again when it answers; nothing waiting for a barrier is released meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Coroutine
from functools import partial
from typing import Any

from redis.exceptions import RedisError, ResponseError

from ..cluster import keys
from ..cluster.keys import Lease
from ..cluster.settings import ClusterConfig, ClusterError
from ..core.broker import Broker
from ..core.connection import FAIR_SHARE
from ..core.node_links import MAX_MEMBERS, ClusterSetup, NodeLinks
from ..core.worker_links import HandOver
from ..storage.base import ClusterStorage
from ..storage.redis_primaries import Primaries, Redis
from ..storage.redis_store import RedisStorage, mark_up
from .cluster_entries import (
    Outgoing,
    Peer,
    StreamSink,
    carries_state,
    without_qos0,
    write_entries,
    write_outbox,
)
from .cluster_redis import (
    MAX_RETRY,
    Members,
    NotReplicated,
    RedisHealth,
    connect,
    read_members,
)
from .cluster_sessions import SessionOwners
from .stream_backlog import StreamBacklog
from .stream_reading import Entry, StreamReader

log = logging.getLogger("culex")

# A member's entries waiting to be sent, in bytes, beyond which its link counts as full (as a
# worker link's socket buffer, workers.LINK_HIGH_WATER).
HIGH_WATER = 256 * 1024
# Heartbeats per lease: a lease survives two lost heartbeats.
HEARTBEAT_FRACTION = 1 / 3
# How long leaving may take at shutdown (sending what is queued, giving the lease up).
LEAVE_SECONDS = 2.0


class ClusterNode:
    def __init__(self, settings: ClusterConfig, loop: asyncio.AbstractEventLoop,
                 worker: int = 0, workers: int = 1) -> None:
        self.settings = settings
        # The member this process is: the node, or one of its workers.
        self.name = settings.node if workers == 1 else f"{settings.node}/{worker}"
        self._worker = worker
        self._workers = workers
        self.loop = loop
        self._lease_ms = int(settings.lease * 1000)
        self._redis: Redis | None = None
        # Where writes that WAIT for replicas go (redis_primaries.py).
        self._primaries: Primaries | None = None
        self._lease = Lease(secrets.token_hex(8), 0, 0)
        self._links: NodeLinks | None = None
        self._broker: Broker | None = None
        self._storage: ClusterStorage | None = None
        self.peers: dict[str, Peer] = {}
        # Entries released by the commit of the tick that made them, in order.
        self._ready: list[Outgoing] = []
        # (member, epoch) -> the highest sequence number applied from it.
        self._applied: dict[tuple[str, int], int] = {}
        self._seq = 0
        self._sending: asyncio.Task[None] | None = None
        self._paused_by: set[str] = set()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._reader: StreamReader | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._health = RedisHealth()
        self._stopping = False
        self.owners = SessionOwners(self.name, lambda: self.redis, self.peers.get, loop)
        # When the lease was last known to hold (the start of the heartbeat that renewed it),
        # and whether sessions others claimed while it did not are still to be let go.
        self._renewed_at = 0.0
        self._unfenced = False
        self._short_of_replicas = False
        self._backlog = StreamBacklog(lambda: self.redis, self._node_links, self._drained, loop)

    def _node_links(self) -> NodeLinks:
        assert self._links is not None
        return self._links

    @property
    def redis(self) -> Redis:
        assert self._redis is not None
        return self._redis

    # -- joining and leaving -------------------------------------------------------------------

    async def join(self, hand_over: HandOver | None = None,
                   storage: ClusterStorage | None = None) -> ClusterSetup:
        """Connect and take this member's lease, and read what `storage` keeps in Redis;
        what the broker is built with (`hand_over`: a worker's way to the sibling that owns
        a client id)."""
        try:
            self._redis = await connect(self.settings)
            self._primaries = Primaries(self._redis)
            await self._join()
            if isinstance(storage, RedisStorage):
                await storage.read(self._redis, self._primaries)
                self.owners.stores = True
        except RedisError as exc:
            raise ClusterError(f"cluster: cannot join through {', '.join(self.settings.redis)}:"
                               f" {exc}") from None
        log.info("cluster: joined as %s (member %d, epoch %d, lease %g s)", self.name,
                 self._lease.index, self._lease.epoch, self.settings.lease)
        self._renewed_at = self.loop.time()
        return ClusterSetup(self._lease.index, self._link_lost, self._routes_changed,
                            self._worker, self._workers, hand_over, self._lease.epoch,
                            self.owners, 2 * self.settings.lease)

    async def _join(self) -> None:
        script = self.redis.register_script(keys.JOIN)
        index, epoch = await script(
            keys=[keys.INDEX, keys.NEXT_INDEX, keys.epoch_key(self.name),
                  keys.member_key(self.name), keys.MEMBERS],
            args=[self.name, self._lease.instance, self._lease_ms, MAX_MEMBERS])
        if index < 0:
            raise ClusterError(f"cluster: all {MAX_MEMBERS} member numbers are taken")
        self._lease = Lease(self._lease.instance, int(epoch), int(index))
        # Up, before this member's state is read (storage/redis_store.py `TAKE_WILLS`).
        await mark_up(self.redis, self.name, self._lease_ms)

    def start(self, broker: Broker, storage: ClusterStorage | None) -> None:
        """Serve the links of `broker` (built with `join`'s setup): heartbeats, membership,
        reading this node's stream. With `storage`, how far each sender's records are
        applied is committed with what they changed (see storage/stream_cursors.py)."""
        links = broker.links
        assert isinstance(links, NodeLinks)
        self._broker = broker
        self._links = links
        self._storage = storage
        self._reader = StreamReader(self.redis, keys.stream_key(self.name), self.name)
        if storage is not None:
            self._applied = storage.cursors(self.name)
            # Committed before a crash and never written: first, under their own numbers.
            self._ready = [Outgoing(receiver, epoch, seq, records, 0, True)
                           for epoch, seq, receiver, records in storage.outbox(self.name)]
            self._seq = max((entry.seq for entry in self._ready), default=0)
            if self._ready:
                log.info("cluster: sending %d entries committed before the restart",
                         len(self._ready))
        for work in (self._heartbeats(), self._read()):
            self._background(work)
        self._wake_sender()

    async def wait_ready(self) -> None:
        """Attach every live member and wait until each has sent its filters and retained
        messages (READY), for at most two leases: a member that does not answer by then is
        paused or dying, and its lease decides."""
        await self._health.retrying(self._save_filters)
        members = await self._health.retrying(self._members)
        self._reconcile(members)
        assert self._reader is not None
        await self._health.retrying(self._reader.caught_up)  # what came while this was down
        await self._health.retrying(self._fence)  # ids claimed elsewhere while this was down
        expected = {lease.index for name, lease in members.alive.items() if name != self.name}
        links = self._node_links()
        deadline = self.loop.time() + 2 * self.settings.lease
        while not links.ready(expected) and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
            expected &= {peer.index for peer in self.peers.values()}
        silent = sorted(name for name, peer in self.peers.items()
                        if peer.index in expected and not links.ready({peer.index}))
        if silent:
            log.warning("cluster: no answer from %s within %g s; serving without their "
                        "subscriptions until they answer or their lease runs out",
                        ", ".join(silent), 2 * self.settings.lease)
        up = sorted(name for name, peer in self.peers.items() if peer.alive)
        log.info("cluster: %s serves with %d other member(s): %s%s", self.name, len(up),
                 ", ".join(up) or "none",
                 "".join(f"; {name} is down" for name, peer in sorted(self.peers.items())
                         if not peer.alive))

    async def leave(self) -> None:
        """Shutdown: send what is queued, give up the lease (the others drop our links at
        their next heartbeat), and close."""
        self._stopping = self._health.stopping = True
        self._backlog.stop()
        tasks = [*self._tasks, *self.owners.tasks]
        for task in tasks:
            task.cancel()
        if tasks:  # (redis-py may make a cancellation an error; loops see `_stopping`)
            await asyncio.wait(tasks, timeout=LEAVE_SECONDS)
        with contextlib.suppress(RedisError, TimeoutError):
            async with asyncio.timeout(LEAVE_SECONDS):
                if self._storage is not None:
                    await self._storage.flush()
                if self._sending is not None:
                    await self._sending
                # What the others route to while this node is down: its persistent sessions'.
                await self._save_filters()
                leave = self.redis.register_script(keys.LEAVE)
                await leave(keys=[keys.member_key(self.name)], args=[self._lease.value()])
                await self.redis.aclose()
                if self._primaries is not None:
                    await self._primaries.aclose()
        log.info("cluster: %s left", self.name)

    # -- membership ----------------------------------------------------------------------------

    async def _members(self) -> Members:
        """The live members' leases, and the filters Redis keeps for those that are down and
        whose filters this node does not have from them (never linked, or down before they
        said READY: a node that starts while another dies)."""
        links = self._links
        known = {name for name, peer in self.peers.items()
                 if links is None or links.ready({peer.index})}
        return await read_members(self.redis, {*known, self.name})

    async def _save_filters(self) -> None:
        """This node's whole set of filters, in Redis."""
        links = self._node_links()
        links.route_changes.clear()  # all of them are in this set
        save = self.redis.register_script(keys.REPLACE_FILTERS)
        await save(keys=[keys.filters_key(self.name)], args=list(links.local_filters))

    async def _heartbeats(self) -> None:
        interval = self.settings.lease * HEARTBEAT_FRACTION
        while not self._stopping:
            await asyncio.sleep(min(interval, 0.5))
            started = self.loop.time()
            try:
                beat = self.redis.register_script(keys.HEARTBEAT)
                if not await beat(keys=[keys.member_key(self.name)],
                                  args=[self._lease.value(), self._lease_ms]):
                    log.error("cluster: the lease of %s was lost (paused or cut off past "
                              "%g s, or Redis lost it); joining again under a new epoch",
                              self.name, self.settings.lease)
                    await self._rejoin()
                    self._unfenced = True
                await mark_up(self.redis, self.name, self._lease_ms)
                if self._unfenced:
                    await self._fence()
                    self._unfenced = False
                self._renewed_at = started
                await self.owners.record_unrecorded(self._broker)
                members = await self._members()
            except RedisError as exc:
                self._health.unavailable(exc)
                continue
            self._health.available()
            self._reconcile(members)

    async def _rejoin(self) -> None:
        """A new epoch: every member forgets our filters and gets them again."""
        await self._join()
        links = self._node_links()
        for peer in self.peers.values():
            links.introduce(peer.index)

    async def _fence(self) -> None:
        if self._broker is not None:
            await self.owners.fence(self._broker)

    def _reconcile(self, members: Members) -> None:
        alive = members.alive
        for name, peer in list(self.peers.items()):
            lease = alive.get(name)
            if lease is None and name not in members.names:
                self._forget(peer)
            elif lease is None:
                if peer.alive:
                    self._suspend(peer)
            elif lease.epoch > peer.epoch:
                self._refresh(peer, lease.epoch)  # it started again
            elif not peer.alive:
                peer.alive = True
                log.info("cluster: %s answers again", name)
        for name, lease in alive.items():
            if name != self.name and name not in self.peers:
                self._attach(name, lease.index, lease.epoch)
        links = self._node_links()
        for name, (index, filters) in members.down.items():
            if name not in self.peers:
                peer = self._attach(name, index, 0)
                peer.alive = False
                self._down(peer)
            links.load_routes(self.peers[name].index, filters)

    def _forget(self, peer: Peer) -> None:
        """Removed from the membership: nothing is routed to it, nothing waits for it, and
        the sessions in its store come to the live members (`SessionOwners.adopt_sessions`)."""
        del self.peers[peer.name]
        self._backlog.forget(peer)
        self._node_links().detach(peer.index)
        log.warning("cluster: %s was removed from the cluster; no longer routed to", peer.name)
        if self._broker is not None and not self._stopping:
            self.owners.adopt_sessions(peer.name, self._broker, [self.name, *(
                name for name, other in self.peers.items() if other.alive)])

    def _suspend(self, peer: Peer) -> None:
        """Its lease ran out: it is down (dead, paused, or cut off from Redis). Its link and
        filters stay; what waits for its answer goes on once its stream has everything."""
        peer.alive = False
        log.warning("cluster: %s is down (no heartbeat for %g s); what its subscriptions "
                    "match waits in its stream", peer.name, self.settings.lease)
        self._backlog.forget(peer)
        self._down(peer)

    def _down(self, peer: Peer) -> None:
        """`peer` is down: what it committed to send goes out for it (`write_outbox`) before
        what waits for its answer goes on, and the wills of its connections, which died with
        it, from here (`SessionOwners.take_wills`)."""
        if self._broker is not None and not self._stopping:
            self.owners.take_wills(peer.name, self._broker)
        peer.outbox_written = False

        async def writing() -> None:
            written = await self._health.retrying(partial(write_outbox, self.redis, peer))
            if written:
                log.info("cluster: %d entries %s had committed were written for it", written,
                         peer.name)
            peer.outbox_written = True
            if not peer.alive and not peer.queued:
                assert self._links is not None
                self._links.release_barriers(peer.index)

        self._background(writing())

    def _attach(self, name: str, index: int, epoch: int) -> Peer:
        links = self._node_links()
        peer = self.peers[name] = Peer(name, index, epoch)
        links.attach(index, StreamSink(self, peer), self.loop.time())
        log.info("cluster: linked to %s (member %d, epoch %d)", name, index, epoch)
        return peer

    def _refresh(self, peer: Peer, epoch: int) -> None:
        """`peer` started again (or joined again): its link stays, with what waits for its
        answer (it reads its stream, barriers included, and answers); the filters of its
        earlier epoch are replaced by those it announces, and it is sent ours again."""
        links = self._node_links()
        peer.epoch = epoch
        peer.alive = True
        links.renew_routes(peer.index)
        links.introduce(peer.index)
        log.info("cluster: linked to %s again (member %d, epoch %d)", peer.name, peer.index,
                 epoch)

    def _link_lost(self, index: int) -> None:
        if not self._stopping:
            log.info("cluster: link to member %d dropped", index)

    def _routes_changed(self) -> None:
        self._wake_sender()  # (before `start`, at restore, they are written by `wait_ready`)

    # -- sending -------------------------------------------------------------------------------

    def queue(self, peer: Peer, records: list[bytes]) -> None:
        """A link's records of this tick: one stream entry, written once the tick's commit
        is done (with `durability = "sync"`, the records that carry more than QoS 0 are
        committed in the outbox with it)."""
        if self.peers.get(peer.name) is not peer:
            return  # an older object for that member: not linked any more
        size = sum(map(len, records))
        self._seq += 1
        entry = Outgoing(peer.name, self._lease.epoch, self._seq,
                         b"".join(records) if peer.alive else without_qos0(records), size,
                         False)
        peer.queued += size
        links = self._links
        broker = self._broker
        assert links is not None and broker is not None
        link = links.links.get(peer.index)
        if link is not None and peer.queued > HIGH_WATER and not link.write_paused:
            links.pause_writing(peer.index, self.loop.time())
        storage = self._storage
        if storage is not None and storage.durable and carries_state(entry.records):
            storage.outbox_added(self.name, entry.epoch, entry.seq, peer.name, entry.records)
            entry.stored = True
        broker.gate.when_durable(self._release, entry)

    def _release(self, entry: Outgoing) -> None:
        self._ready.append(entry)
        self._wake_sender()

    def _wake_sender(self) -> None:
        links = self._links
        if self._sending is None and links is not None and (self._ready or links.route_changes):
            self._sending = self.loop.create_task(self._send())

    async def _send(self) -> None:
        """Write what is released, one pipelined round trip per batch, until nothing is."""
        try:
            delay = 0.05
            links = self._links
            assert links is not None
            while self._ready or links.route_changes:
                batch, self._ready = self._ready, []
                routes, links.route_changes = links.route_changes, []
                while not self._stopping:
                    try:
                        sizes = await write_entries(
                            self.redis, self.name, self._lease.index, batch, routes=routes,
                            peers=self.peers, replicas=self.settings.replicas,
                            primaries=self._primaries)
                        break
                    except NotReplicated as exc:  # Redis answers: no "unavailable" log
                        if not self._short_of_replicas:
                            self._short_of_replicas = True
                            log.error("cluster: %s; what depends on them waits", exc)
                    except RedisError as exc:
                        self._health.unavailable(exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_RETRY)
                else:
                    return
                self._health.available()
                if self._short_of_replicas:
                    self._short_of_replicas = False
                    log.warning("cluster: the replicas confirm what is written again")
                self._written(batch)
                for peer, size in sizes:
                    self._backlog.measured(peer, size)
        finally:
            self._sending = None

    def _written(self, batch: list[Outgoing]) -> None:
        links = self._node_links()
        storage = self._storage
        for entry in batch:
            if entry.stored and storage is not None:
                storage.outbox_sent(self.name, entry.epoch, entry.seq)
            peer = self.peers.get(entry.receiver)
            if peer is None or not entry.size:
                continue
            peer.queued -= entry.size
            self._drained(peer)
            if not peer.alive and not peer.queued and peer.outbox_written:
                links.release_barriers(peer.index)

    def _drained(self, peer: Peer) -> None:
        links = self._node_links()
        link = links.links.get(peer.index)
        if link is not None and link.write_paused and peer.queued <= HIGH_WATER // 4 \
                and not peer.backlogged:
            links.resume_writing(peer.index)

    # -- receiving -----------------------------------------------------------------------------

    def reading_paused(self, peer: Peer, paused: bool) -> None:
        if paused:
            self._paused_by.add(peer.name)
            self._resumed.clear()
        else:
            self._paused_by.discard(peer.name)
            if not self._paused_by:
                self._resumed.set()

    async def _read(self) -> None:
        reader = self._reader
        assert reader is not None
        await self._health.retrying(reader.create_group)
        while not self._stopping:
            await self._resumed.wait()
            try:
                entries = await reader.read()
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.error("cluster: the stream of %s lost its consumer group (Redis lost its "
                          "data?); creating it again", self.name)
                await self._health.retrying(reader.create_group)
                continue
            except RedisError as exc:
                self._health.unavailable(exc)
                await asyncio.sleep(MAX_RETRY)
                continue
            self._health.available()
            while entries and not self._stopping:
                await self._lease_held()
                entries = entries[self._apply(entries):]
                if entries:
                    await asyncio.sleep(0)  # the deliveries go out: full subscribers pause
                    await self._resumed.wait()

    async def _lease_held(self) -> None:
        """Nothing is applied while this member's lease may have run out (paused, or cut off
        from Redis): another member may own some of its sessions now, and the heartbeat
        that finds out lets go of them first."""
        while self.loop.time() - self._renewed_at > self.settings.lease and not self._stopping:
            await asyncio.sleep(0.05)

    def _apply(self, entries: list[Entry]) -> int:
        """Apply entries in order, a client's share of a tick (FAIR_SHARE bytes of records) or
        until a local subscriber is full; return how many. A whole read (READ_COUNT entries)
        would hold the loop past the lease, and leave subscribers unwritten until stalled."""
        links = self._links
        broker = self._broker
        assert links is not None and broker is not None and self._reader is not None
        now = self.loop.time()
        ids = []
        size = 0
        for entry_id, fields in entries:
            ids.append(entry_id)
            name = fields[b"f"].decode()
            epoch = int(fields[b"e"])
            peer = self.peers.get(name)
            if peer is None:
                peer = self._attach(name, int(fields[b"i"]), epoch)
            elif epoch > peer.epoch:
                self._refresh(peer, epoch)
            # An older epoch's entries still count: they were written before the member
            # joined again (Redis lost its lease, or it restarted), and what they carry may
            # have been acknowledged already.
            seq = int(fields[b"s"])
            if seq <= self._applied.get((name, epoch), 0):
                continue  # sent again, or applied and committed before a restart
            self._applied[name, epoch] = seq
            storage = self._storage
            if storage is None:
                links.data_received(peer.index, fields[b"r"], now)
            else:
                changes = storage.changes
                links.data_received(peer.index, fields[b"r"], now)
                if storage.changes != changes:  # durable effects: committed with its cursor
                    storage.cursor_saved(self.name, name, epoch, seq)
            links.settle(peer.index)
            size += len(fields[b"r"])
            if size >= FAIR_SHARE or self._paused_by:
                break
        self._reader.applied(ids[-1])
        broker.gate.when_durable(self._acknowledge, ids)
        return len(ids)

    def _acknowledge(self, ids: list[bytes]) -> None:
        """What the entries changed is committed: they need not be read again."""
        self._background(self._xack(ids))

    async def _xack(self, ids: list[bytes]) -> None:
        assert self._reader is not None
        try:
            await self._reader.acknowledge(ids)
        except RedisError as exc:
            # They are read again, their records dropped by sequence, and acknowledged again.
            self._health.unavailable(exc)
            if self._reader is not None:
                self._reader.read_pending_again()

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(work)
        self._tasks.append(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None and not self._stopping:
            log.error("cluster: %s failed: %r", task.get_coro(), task.exception())
