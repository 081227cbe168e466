"""Which member owns each client id, in Redis: the core's `SessionDirectory` for a cluster.

One hash maps every client id with a session in the cluster to `<member> <token>`; one script
claims an id (a new token from a cluster-wide counter, and the previous owner returned in the
same step, so two nodes claiming at once are ordered by Redis), another gives a claim up only
if it is still the latest. What moving a session involves is core/session_moves.py; here is
the I/O, and the fencing of a member that lost its lease (`fence`).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable, Coroutine
from typing import Any, cast

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from ..cluster import keys
from ..core.broker import Broker
from ..core.ports import Claim
from ..storage.base import TakenSession
from ..storage.redis_primaries import Redis
from ..storage.redis_store import (
    TAKE,
    TAKE_WILLS,
    read_cursors,
    state_key,
    take_session,
    take_wills,
    wills_taken,
)
from .cluster_entries import Peer

log = logging.getLogger("culex")

# Client ids per HMGET when a member checks which of its sessions it still owns.
CHUNK = 1000
# Directory calls in flight at once. Every CONNECT claims its id and every session that ends
# gives its claim up, so a crowd connecting or dropping at once (a load balancer failing over,
# a network blip) makes thousands of calls together: past this many they wait their turn
# rather than take every Redis connection the node has (the rest of its Redis I/O, commits
# included, would fail meanwhile) or open thousands of them.
CONCURRENT_CALLS = 32
# Entries per XRANGE when a member reads the stream of one that is down.
READ_CHUNK = 1000


class SessionOwners:
    def __init__(self, member: str, redis: Callable[[], Redis],
                 peer: Callable[[str], Peer | None], loop: asyncio.AbstractEventLoop) -> None:
        """`member`: this member's name; `peer(name)`: another member as this one knows it."""
        self._member = member
        self._redis = redis
        self._peer = peer
        self._loop = loop
        # Directory calls under way (cancelled when the node leaves).
        self.tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(CONCURRENT_CALLS)
        # The scripts, registered once the node's Redis client exists (their SHA1 is computed
        # then, not at every CONNECT).
        self._scripts: dict[str, AsyncScript] = {}
        # Client ids accepted while Redis could not record their claim.
        self._unrecorded: set[str] = set()
        # Whether every member's sessions are stored in Redis (storage/redis_store.py), so
        # that one whose holder is down is taken from there.
        self.stores = False

    def _script(self, source: str) -> AsyncScript:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._redis().register_script(source)
        return script

    async def _record(self, client_id: str) -> tuple[str, int]:
        """Claim `client_id` for this member: the previous holder's name ("" for nobody) and
        the new claim's token."""
        previous, token = await self._script(keys.CLAIM)(keys=[keys.OWNERS, keys.CLAIMS],
                                                         args=[client_id, self._member])
        return (keys.record_owner(previous) if previous else ""), int(token)

    def claim(self, client_id: str, done: Callable[[Claim], None]) -> None:
        self._spawn(self._claim(client_id, done))

    async def _claim(self, client_id: str, done: Callable[[Claim], None]) -> None:
        try:
            holder, token = await self._record(client_id)
        except RedisError as exc:
            log.warning("cluster: client %s: accepted without a claim of its id (%s): a "
                        "connection with that id on another node stays open; the claim is "
                        "made once Redis answers", client_id, exc)
            self._unrecorded.add(client_id)
            done(Claim(0))
            return
        if not holder or holder == self._member:
            done(Claim(token))
            return
        peer = self._peer(holder)
        if peer is None or not peer.alive:
            done(Claim(token, None, holder, await self._take(client_id, holder),
                       None if peer is None else peer.index))
            return
        done(Claim(token, peer.index, holder))

    async def _take(self, client_id: str, holder: str, *, down: bool = True
                    ) -> TakenSession | None:
        """What `holder` (down, or silent) stored for the session, if it stores in Redis."""
        taken = None
        if self.stores:
            try:
                taken = await take_session(self._script(TAKE), holder, client_id)
            except RedisError as exc:
                log.error("cluster: client %s: its session could not be taken from the "
                          "store of %s (%s)", client_id, holder, exc)
        if taken is None and down:
            log.warning("cluster: client %s: its session is on %s, which is down; accepted "
                        "here without it", client_id, holder)
        return taken

    def take(self, client_id: str, holder: str,
             done: Callable[[TakenSession | None], None]
             ) -> None:
        async def taking() -> None:
            done(await self._take(client_id, holder, down=False))

        self._spawn(taking())

    def release(self, client_id: str, token: int) -> None:
        self._spawn(self._release(client_id, token))

    async def _release(self, client_id: str, token: int) -> None:
        try:
            await self._script(keys.RELEASE)(
                keys=[keys.OWNERS], args=[client_id, keys.owner_record(self._member, token)])
        except RedisError as exc:  # a stale record costs the next claimant one question
            log.debug("cluster: client %s: claim not given up: %s", client_id, exc)

    def held_elsewhere(self, client_id: str,
                       done: Callable[[dict[str, int | None]], None]) -> None:
        async def asking() -> None:
            try:
                holders = await self.holders_elsewhere([client_id])
            except RedisError as exc:  # the next fence (a restart, a lost lease) sees to it
                log.warning("cluster: client %s: who holds it now is not known (%s)",
                            client_id, exc)
                return
            done(self._members(holders))

        self._spawn(asking())

    def unapplied(self, holder: str, read: Callable[[list[bytes], bool], None]) -> None:
        async def reading() -> None:
            try:
                if self.stores:
                    await read_unapplied(self._redis(), holder, read)
            except RedisError as exc:
                log.warning("cluster: the stream of %s could not be read (%s); what it "
                            "holds for the sessions taken from it comes when it is back",
                            holder, exc)
            read([], True)

        self._spawn(reading())

    def _members(self, holders: dict[str, str]) -> dict[str, int | None]:
        """Holders' names as their member numbers (None: not linked)."""
        return {client_id: None if (peer := self._peer(name)) is None else peer.index
                for client_id, name in holders.items()}

    async def holders_elsewhere(self, client_ids: list[str]) -> dict[str, str]:
        """Those of `client_ids` whose latest claim is another member's, with its name."""
        redis = self._redis()
        found = {}
        for start in range(0, len(client_ids), CHUNK):
            chunk = client_ids[start:start + CHUNK]
            records = cast(list[bytes | None], await redis.hmget(keys.OWNERS, chunk))
            for client_id, record in zip(chunk, records, strict=True):
                if record is not None and (holder := keys.record_owner(record)) != self._member:
                    found[client_id] = holder
        return found

    async def record_unrecorded(self, broker: Broker | None) -> None:
        """Claim, now that Redis answers, the ids accepted while it did not (those whose
        session is still here); one that another member claimed meanwhile is logged."""
        if broker is None or not self._unrecorded:
            return
        moves = broker.moves
        pending, self._unrecorded = self._unrecorded, set()
        for client_id in sorted(pending):
            if moves is None or broker.sessions.get(client_id) is None:
                continue
            try:
                holder, token = await self._record(client_id)
            except RedisError:
                self._unrecorded.add(client_id)
                continue
            moves.recorded(client_id, token)
            if holder and holder != self._member:
                log.warning("cluster: client %s: claimed by %s too while Redis was "
                            "unavailable; recorded as this member's now", client_id, holder)

    async def fence(self, broker: Broker) -> None:
        """Let go of the sessions whose ids other members claimed while this one's lease was
        gone, or while it was down (see core/session_moves.py); and of the wills that others
        took from its store meanwhile, and published (`take_wills`)."""
        moves = broker.moves
        if moves is None:
            return
        moves.answer_held()  # first: a session handed on from here is not let go below
        claimed = await self.holders_elsewhere(list(broker.sessions.ids()))
        if claimed:
            moves.let_go(self._members(claimed))
            broker.host.wake()
        if self.stores:
            gone = await wills_taken(self._redis(), self._member)
            dropped = broker.manager.wills_published_elsewhere(gone)
            if dropped:
                log.warning("cluster: %d wills of clients still connected here were published "
                            "by another node while this one was presumed down; not published "
                            "again", dropped)

    def adopt_sessions(self, member: str, broker: Broker, live: list[str]) -> None:
        """`member` was removed from the cluster (`culex cluster forget`): the sessions in its
        store come to the `live` members, each to one chosen by its client id's hash. Each
        is taken as for a client that connects, unless another member has claimed its id
        since (two that chose differently: the first), and stays here offline, collecting,
        until its client comes or it expires."""
        moves = broker.moves
        if not self.stores or moves is None:
            return
        ranked = sorted(live)

        def share(client_id: str) -> bool:
            return ranked[zlib.crc32(client_id.encode()) % len(ranked)] == self._member

        async def adopting() -> None:
            script = self._script(keys.ADOPT)
            try:
                found = cast(set[bytes],
                             await self._redis().smembers(state_key(member, "sessions")))
            except RedisError as exc:
                log.warning("cluster: the sessions of %s could not be listed (%s); each is "
                            "taken when its client connects", member, exc)
                return
            adopted = 0
            for client_id in sorted(value.decode() for value in found):
                if not share(client_id):
                    continue
                try:
                    token = int(await script(keys=[keys.OWNERS, keys.CLAIMS],
                                             args=[client_id, member, self._member]))
                    taken = await take_session(self._script(TAKE), member, client_id) \
                        if token else None
                except RedisError as exc:
                    log.warning("cluster: client %s: its session on %s could not be taken "
                                "(%s); it is taken when its client connects", client_id,
                                member, exc)
                    continue
                if taken is not None:
                    moves.adopt(client_id, Claim(token, None, member, taken))
                    broker.host.wake()
                    adopted += 1
                elif token:
                    await self._release(client_id, token)
            log.info("cluster: %d sessions of %s, which was removed from the cluster, are "
                     "this member's now", adopted, member)

        self._spawn(adopting())

    def take_wills(self, member: str, broker: Broker) -> None:
        """`member` is down, and its connections with it: their wills, which it stored, go
        out from here, unless another member took them first or it is up again (a restart
        publishes them itself)."""
        if not self.stores:
            return

        async def taking() -> None:
            try:
                wills = await take_wills(self._script(TAKE_WILLS), member)
            except RedisError as exc:
                log.warning("cluster: the wills of %s, which is down, could not be taken "
                            "(%s); it publishes them when it is back", member, exc)
                return
            if wills:
                broker.publish_taken_wills(member, wills)
                broker.host.wake()

        self._spawn(taking())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(self._in_turn(work))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _in_turn(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            async with self._slots:
                await work
        finally:
            work.close()  # cancelled before its turn (shutdown): it never ran


async def read_unapplied(redis: Redis, member: str,
                         read: Callable[[list[bytes], bool], None]) -> None:
    """`read(records, False)` with the records of each chunk of entries in `member`'s stream
    that it has not committed as applied (by its cursors, kept in Redis with its state)."""
    cursors = await read_cursors(redis, member)
    stream = keys.stream_key(member)
    start: bytes | str = "-"
    while True:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]],
                       await redis.xrange(stream, min=start, count=READ_CHUNK))
        read([fields[b"r"] for _entry_id, fields in entries
              if int(fields[b"s"]) > cursors.get((fields[b"f"].decode(), int(fields[b"e"])), 0)],
             False)
        if len(entries) < READ_CHUNK:
            return
        start = b"(" + entries[-1][0]
