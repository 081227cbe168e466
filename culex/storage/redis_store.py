"""Redis backend: a cluster member's durable state in Redis, beside its stream, where another
member can take a session over while this one is down (`take_session`).

Every key of member M is in M's hash slot (`culex:{M}:...`, cluster/keys.py), so one script
commits a tick's changes atomically, on one shard of a Redis Cluster:

- `culex:{M}:sessions` (set): the client ids with a persistent session here;
- `culex:{M}:s:<client id>` (hash): `m` -> JSON [Session Expiry Interval, user name];
  `f<filter>` -> a subscription's value; `e<seq>` -> a queue entry, "message id, QoS, retain,
  Subscription Identifiers"; `p<seq>` -> the packet id it went out under; `r<seq>` -> "1" once
  its PUBREC came; `i<packet id>` -> an inbound QoS 2 packet id awaiting its PUBREL;
  `a` -> the claim its client was let in under; `u` -> "1" while a part of it may still come,
  and meanwhile `g<cluster id>` -> "1" for each message it was given;
- `culex:{M}:messages` (hash): message id -> the message (`MESSAGE` header, topic, properties,
  payload), shared by the entries and retained topics that refer to it;
- `culex:{M}:retained` (hash): topic -> "<message id> <stamp>" (message id 0: a clearing's
  tombstone, which keeps its stamp until the next start);
- `culex:{M}:wills` (hash): client id -> the will of its connection, as a message;
- `culex:{M}:up` (string, renewed with M's lease, expiring a little before it): there while M
  is up;
  `culex:{M}:wills-taken` (hash): client id -> "1" for each will another member took (and
  published) while M was presumed down, `TAKE_WILLS`;
- `culex:{M}:cursors`, `culex:{M}:outbox` (hashes): the stream bookkeeping that
  storage/stream_cursors.py keeps in SQLite: "<sender> <epoch>" -> sequence number, and
  "<epoch> <seq>" -> "<receiver>\\0<records>".

A commit is the statements (Redis commands) of the ticks since the last one, run in order by
one script (`APPLY`): all or nothing. A failed commit is replayed first in the next, which is
safe because every command is idempotent when replayed in order. With `replicas` a WAIT for
them follows on the same connection before the commit counts, so an acknowledgement never
rests on a write that one failover could lose. Redis's own durability is its AOF
(`appendfsync always` for the guarantee of `durability = "sync"`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import struct
import time
from collections.abc import Callable, Collection
from typing import Any, cast

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from .base import (
    CommitDone,
    LoadedState,
    StoredEntry,
    StoredMessage,
    StoredSession,
    TakenSession,
)
from .batch import Batch
from .redis_primaries import Primaries, Redis
from .timing import Durations

log = logging.getLogger("culex")

Command = tuple[str | bytes | int, ...]

# qos, retain, wall-clock expiry deadline (NaN: none), cluster id, topic and properties lengths.
MESSAGE = struct.Struct("<BBdQHI")
# Sessions per pipelined read at start-up.
CHUNK = 1000
# How long one WAIT for replicas may take before the commit counts as failed (and is retried).
REPLICA_WAIT_MS = 1000

# ARGV: commands, each as its argument count and its arguments. Runs them in order; all of
# them or (an error, Redis unavailable) none of the commit counts.
APPLY = """
local i, n = 1, #ARGV
while i <= n do
  local count = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + count))
  i = i + count + 1
end
return n
"""

# KEYS: a member's session hash, its messages hash. Returns {the session's fields and values,
# the message ids of its entries, those messages} and leaves the session there with its
# subscriptions only: what it held is taken, and what reaches it later is sent on by that
# member when it is back (its `let_go`).
TAKE = """
local fields = redis.call('HGETALL', KEYS[1])
local ids, taken, messages = {}, {}, {}
for i = 1, #fields, 2 do
  local kind = string.sub(fields[i], 1, 1)
  if kind == 'e' then
    ids[#ids + 1] = string.match(fields[i + 1], '^%d+')
  end
  if kind == 'e' or kind == 'p' or kind == 'r' or kind == 'i' or kind == 'g' then
    taken[#taken + 1] = fields[i]
  end
end
for i = 1, #ids, 1000 do
  local found = redis.call('HMGET', KEYS[2], unpack(ids, i, math.min(i + 999, #ids)))
  for j = 1, #found do messages[#messages + 1] = found[j] end
end
for i = 1, #taken, 1000 do
  redis.call('HDEL', KEYS[1], unpack(taken, i, math.min(i + 999, #taken)))
end
return {fields, ids, messages}
"""

# KEYS: the member's up key, its wills, the wills taken from it. The wills of the member's
# connections, taken (moved to the third key, which it reads when it serves again) unless it
# is up: it sets its up key before it reads its state at start-up, and keeps it while its
# lease lives, so a will goes out once, from it or from the member that took it.
TAKE_WILLS = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {} end
local wills = redis.call('HGETALL', KEYS[2])
for i = 1, #wills, 2 do redis.call('HSET', KEYS[3], wills[i], '1') end
redis.call('DEL', KEYS[2])
return wills
"""


def up_key(member: str) -> str:
    """There while member `member` is up (`mark_up`): in its slot, so that `TAKE_WILLS` can
    tell in one script whether it is up."""
    return state_key(member, "up")


async def mark_up(redis: Redis, member: str, lease_ms: int) -> None:
    """Member `member` is up, for most of a lease: it does this as it joins (before it reads
    its state) and with every heartbeat. The key goes a little before the lease does, so that
    the member that sees the lease gone and takes the wills never finds it still there."""
    await redis.set(up_key(member), 1, px=lease_ms * 9 // 10)


def state_key(member: str, part: str) -> str:
    """A key of member `member`'s state: in its hash slot, which its stream's key shares
    (cluster/keys.py)."""
    return f"culex:{{{member}}}:{part}"


def encode_message(message: StoredMessage, wall_now: float) -> bytes:
    topic = message.topic.encode()
    expires_at = math.nan if message.expires_in is None else wall_now + message.expires_in
    return b"".join((MESSAGE.pack(message.qos, message.retain, expires_at, message.cluster_id,
                                  len(topic), len(message.properties)),
                     topic, message.properties, message.payload))


def decode_message(message_id: int, data: bytes, wall_now: float) -> StoredMessage:
    qos, retain, expires_at, cluster_id, topic_length, properties_length = \
        MESSAGE.unpack_from(data)
    start = MESSAGE.size
    properties_at = start + topic_length
    payload_at = properties_at + properties_length
    return StoredMessage(message_id, data[start:properties_at].decode(), data[payload_at:], qos,
                         bool(retain), data[properties_at:payload_at],
                         None if math.isnan(expires_at) else expires_at - wall_now, cluster_id)


def decode_session(client_id: str, fields: dict[bytes, bytes]) -> StoredSession:
    """A session hash back as a session (entries in order, each with its message's id)."""
    session = StoredSession(client_id, owner_known=True)
    entries: dict[int, StoredEntry] = {}
    packet_ids: dict[int, int] = {}
    released: set[int] = set()
    for name, value in fields.items():
        kind, rest = name[:1], name[1:]
        if kind == b"m":
            session.expiry, session.username = json.loads(value)
        elif kind == b"a":
            session.admitted = int(value)
        elif kind == b"u":
            session.unfinished = value == b"1"
        elif kind == b"f":
            session.subscriptions[rest.decode()] = int(value)
        elif kind == b"e":
            message_id, qos, retain, identifiers = (int(part) for part in value.split())
            entries[int(rest)] = StoredEntry(int(rest), message_id, qos, bool(retain), 0, False,
                                             identifiers)
        elif kind == b"p":
            packet_ids[int(rest)] = int(value)
        elif kind == b"r":
            released.add(int(rest))
        elif kind == b"i":
            session.awaiting_release.add(int(rest))
        elif kind == b"g":
            session.given.add(int(rest))
    for seq in sorted(entries):
        entry = entries[seq]
        entry.packet_id = packet_ids.get(seq, 0)
        entry.released = seq in released
        session.entries.append(entry)
    return session


async def read_cursors(redis: Redis, member: str) -> dict[tuple[str, int], int]:
    """How far `member` applied each sender's stream entries: (sender, epoch) -> the last
    sequence number committed (storage/stream_cursors.py)."""
    cursors = {}
    stored = cast(dict[bytes, bytes], await redis.hgetall(state_key(member, "cursors")))
    for key, seq in stored.items():
        sender, _, epoch = key.decode().rpartition(" ")
        cursors[sender, int(epoch)] = int(seq)
    return cursors


async def read_outbox(redis: Redis, member: str) -> list[tuple[int, int, str, bytes]]:
    """The stream entries `member` committed to send and has not marked sent: (epoch, seq,
    receiver, records), in the order they were made."""
    found = cast(dict[bytes, bytes], await redis.hgetall(state_key(member, "outbox")))
    outbox = []
    for key, value in found.items():
        epoch, seq = key.split()
        receiver, _, records = value.partition(b"\0")
        outbox.append((int(epoch), int(seq), receiver.decode(), records))
    return sorted(outbox)


async def take_session(script: AsyncScript, member: str, client_id: str
                       ) -> TakenSession | None:
    """What member `member` (down) stored for `client_id`'s session, taken from it with
    `script` (`TAKE`, registered); None when it stores no such session."""
    fields, ids, found = await script(keys=[state_key(member, f"s:{client_id}"),
                                            state_key(member, "messages")])
    if not fields:
        return None
    pairs = dict(zip(fields[::2], fields[1::2], strict=True))
    session = decode_session(client_id, pairs)
    wall_now = time.time()
    messages = {int(message_id): decode_message(int(message_id), data, wall_now)
                for message_id, data in zip(ids, found, strict=True) if data}
    session.entries = [entry for entry in session.entries if entry.message_id in messages]
    return session, messages


async def take_wills(script: AsyncScript, member: str) -> list[tuple[str, StoredMessage]]:
    """The wills of the connections of member `member`, which is down, taken from its store
    with `script` (`TAKE_WILLS`, registered); none while it is up."""
    found = await script(keys=[up_key(member), state_key(member, "wills"),
                               state_key(member, "wills-taken")])
    wall_now = time.time()
    return [(owner.decode(), decode_message(0, data, wall_now))
            for owner, data in zip(found[::2], found[1::2], strict=True)]


async def wills_taken(redis: Redis, member: str) -> list[str]:
    """The client ids whose wills another member took from `member` while it was presumed
    down (and published); forgotten once read."""
    key = state_key(member, "wills-taken")
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hkeys(key)
        pipe.delete(key)
        owners, _ = await pipe.execute()
    return [owner.decode() for owner in owners]


class RedisStorage:
    def __init__(self, member: str, loop: asyncio.AbstractEventLoop, *, durable: bool,
                 replicas: int = 0) -> None:
        self.member = member
        self.path = f"Redis, {state_key(member, '*')}"  # where, for log lines
        self.durable = durable
        self._replicas = replicas
        self._loop = loop
        self._batch: Batch[Command] = Batch()
        self._redis: Redis | None = None
        self._primaries: Primaries | None = None
        self._apply: AsyncScript | None = None
        self._loaded: LoadedState | None = None
        self._cursors: dict[tuple[str, int], int] = {}
        self._outbox: list[tuple[int, int, str, bytes]] = []
        self._failing = False
        self._writing: asyncio.Task[None] | None = None
        self.commit_seconds = Durations()
        self._sessions = state_key(member, "sessions")
        self._messages = state_key(member, "messages")
        self._retained = state_key(member, "retained")
        self._wills = state_key(member, "wills")
        self._cursor_key = state_key(member, "cursors")
        self._outbox_key = state_key(member, "outbox")

    def _session(self, client_id: str) -> str:
        return state_key(self.member, f"s:{client_id}")

    # -- reading, once at start-up ----------------------------------------------------------

    async def read(self, redis: Redis, primaries: Primaries | None = None) -> None:
        """Read this member's state (what `load` then returns) through the node's client,
        which the commits use from now on (with `replicas`, through `primaries`)."""
        self._redis = redis
        self._primaries = primaries or Primaries(redis)
        self._apply = redis.register_script(APPLY)
        state = LoadedState()
        wall_now = time.time()
        stored = cast(dict[bytes, bytes], await redis.hgetall(self._messages))
        state.messages = {int(key): decode_message(int(key), value, wall_now)
                          for key, value in stored.items()}
        state.max_message_id = max(state.messages, default=0)
        client_ids = sorted(value.decode() for value in
                            cast(set[bytes], await redis.smembers(self._sessions)))
        for start in range(0, len(client_ids), CHUNK):
            chunk = client_ids[start:start + CHUNK]
            async with redis.pipeline(transaction=False) as pipe:
                for client_id in chunk:
                    pipe.hgetall(self._session(client_id))
                found = await pipe.execute()
            for client_id, fields in zip(chunk, found, strict=True):
                session = decode_session(client_id, fields)
                session.entries = [entry for entry in session.entries
                                   if entry.message_id in state.messages]
                state.sessions.append(session)
        tombstones = []
        for topic, value in cast(dict[bytes, bytes], await redis.hgetall(self._retained)).items():
            message_id, stamp = (int(part) for part in value.split())
            state.max_stamp = max(state.max_stamp, stamp)
            if message_id in state.messages:
                state.retained.append((message_id, stamp))
            else:
                tombstones.append(topic)
        for owner, data in cast(dict[bytes, bytes], await redis.hgetall(self._wills)).items():
            state.wills.append((owner.decode(), decode_message(0, data, wall_now)))
        self._cursors = await read_cursors(redis, self.member)
        self._outbox = await read_outbox(redis, self.member)
        self._tidy(state, tombstones)
        self._loaded = state

    def _tidy(self, state: LoadedState, tombstones: list[bytes]) -> None:
        """The first commit deletes what nothing refers to any more: tombstones (no member
        writes here but this one, and it is starting) and the messages whose entries went
        with a session taken over from here."""
        used = {message_id for message_id, _stamp in state.retained}
        used.update(entry.message_id for session in state.sessions
                    for entry in session.entries)
        unused = [message_id for message_id in state.messages if message_id not in used]
        for message_id in unused:
            del state.messages[message_id]
        for start in range(0, len(unused), CHUNK):
            self._batch.add(("HDEL", self._messages, *unused[start:start + CHUNK]))
        for start in range(0, len(tombstones), CHUNK):
            self._batch.add(("HDEL", self._retained, *tombstones[start:start + CHUNK]))

    def load(self, owns: Callable[[str], bool] | None = None) -> LoadedState:
        """What `read` found. `owns` is not needed: a member's keys hold its own sessions."""
        state, self._loaded = self._loaded, None
        assert state is not None, "read() comes first"
        return state

    def cursors(self, receiver: str) -> dict[tuple[str, int], int]:
        return self._cursors

    def outbox(self, sender: str) -> list[tuple[int, int, str, bytes]]:
        return self._outbox

    # -- group commit -------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        return bool(self._batch)

    @property
    def changes(self) -> int:
        return self._batch.added

    def commit(self, done: CommitDone) -> None:
        statements = self._batch.take()
        started = time.monotonic()
        task = self._writing = self._loop.create_task(self._write(statements))
        task.add_done_callback(lambda _: self._finished(task, statements, started, done))

    async def _write(self, statements: list[Command]) -> None:
        redis, apply = self._redis, self._apply
        assert redis is not None and apply is not None, "read() comes first"
        args: list[Any] = []
        for statement in statements:
            args.append(len(statement))
            args.extend(statement)
        anchor = [self._sessions]  # the slot every key of this member is in
        if not self._replicas:
            await apply(keys=anchor, args=args)
            return
        assert self._primaries is not None
        # A pipeline is a client to redis-py's scripts (it loads them first if need be).
        _replies, confirmed = await self._primaries.write_waited(
            [(self._sessions, lambda pipe: apply(keys=anchor, args=args, client=pipe))],
            self._replicas, REPLICA_WAIT_MS)
        if confirmed < self._replicas:
            raise RedisError(f"{confirmed} of {self._replicas} Redis replica(s) confirmed "
                             f"the commit within {REPLICA_WAIT_MS} ms")

    def _finished(self, task: asyncio.Task[None], statements: list[Command], started: float,
                  done: CommitDone) -> None:
        self._writing = None
        self.commit_seconds.observe(time.monotonic() - started)
        error = None if task.cancelled() else task.exception()
        if task.cancelled() or error is not None:
            self._batch.put_back(statements)
            if not self._failing:
                self._failing = True
                log.error("storage: commit to %s failed (%s); holding acknowledgements until "
                          "a commit succeeds", self.path, error or "cancelled")
            done(False)
            return
        self._failing = False
        done(True)

    async def flush(self) -> None:
        """At shutdown, before the node's Redis client closes: the commit under way, then what
        is left, once (a failure is logged: what it held was never acknowledged)."""
        if self._writing is not None:
            await asyncio.wait([self._writing])
        if self._batch:
            try:
                await self._write(self._batch.take())
            except RedisError as exc:
                log.error("storage: final commit to %s failed: %s", self.path, exc)

    def close(self) -> None:
        """Nothing to close: the client is the cluster node's (see `flush`)."""

    # -- changes --------------------------------------------------------------------------------

    def session_saved(self, client_id: str, expiry: int, username: str | None) -> None:
        self._batch.add(("SADD", self._sessions, client_id))
        self._batch.add(("HSET", self._session(client_id), "m", json.dumps([expiry, username])))

    def session_admitted(self, client_id: str, token: int) -> None:
        self._batch.add(("HSET", self._session(client_id), "a", token))

    def session_unfinished(self, client_id: str, unfinished: bool) -> None:
        self._batch.add(("HSET", self._session(client_id), "u", int(unfinished)))

    def session_given(self, client_id: str, cluster_id: int) -> None:
        self._batch.add(("HSET", self._session(client_id), f"g{cluster_id}", 1))

    def session_given_forgotten(self, client_id: str, cluster_ids: Collection[int]) -> None:
        fields = [f"g{cluster_id}" for cluster_id in cluster_ids]
        for start in range(0, len(fields), CHUNK):
            self._batch.add(("HDEL", self._session(client_id), *fields[start:start + CHUNK]))

    def session_deleted(self, client_id: str) -> None:
        self._batch.add(("SREM", self._sessions, client_id))
        self._batch.add(("DEL", self._session(client_id)))

    def subscription_set(self, client_id: str, topic_filter: str, qos: int) -> None:
        self._batch.add(("HSET", self._session(client_id), f"f{topic_filter}", qos))

    def subscription_removed(self, client_id: str, topic_filter: str) -> None:
        self._batch.add(("HDEL", self._session(client_id), f"f{topic_filter}"))

    def message_stored(self, message: StoredMessage) -> None:
        self._batch.add_message(message.message_id, (
            "HSET", self._messages, message.message_id, encode_message(message, time.time())))

    def message_deleted(self, message_id: int) -> None:
        if not self._batch.drop_message(message_id):
            self._batch.add(("HDEL", self._messages, message_id))

    def entry_queued(self, client_id: str, entry: StoredEntry) -> None:
        seq = entry.seq
        statement: Command = ("HSET", self._session(client_id), f"e{seq}",
                              f"{entry.message_id} {entry.qos} {int(entry.retain)} "
                              f"{entry.identifiers}")
        if entry.packet_id:
            statement += (f"p{seq}", entry.packet_id)
        if entry.released:
            statement += (f"r{seq}", 1)
        self._batch.add_entry((client_id, seq), statement, first=True)

    def entry_sent(self, client_id: str, seq: int, packet_id: int) -> None:
        self._batch.add_entry((client_id, seq), (
            "HSET", self._session(client_id), f"p{seq}", packet_id), first=False)

    def entry_released(self, client_id: str, seq: int) -> None:
        self._batch.add_entry((client_id, seq), (
            "HSET", self._session(client_id), f"r{seq}", 1), first=False)

    def entry_done(self, client_id: str, seq: int) -> None:
        if not self._batch.drop_entry((client_id, seq)):
            self._batch.add(("HDEL", self._session(client_id), f"e{seq}", f"p{seq}", f"r{seq}"))

    def inbound_received(self, client_id: str, packet_id: int) -> None:
        self._batch.add(("HSET", self._session(client_id), f"i{packet_id}", 1))

    def inbound_released(self, client_id: str, packet_id: int) -> None:
        self._batch.add(("HDEL", self._session(client_id), f"i{packet_id}"))

    def retained_set(self, topic: str, message_id: int, stamp: int) -> None:
        self._batch.add(("HSET", self._retained, topic, f"{message_id} {stamp}"))

    def retained_cleared(self, topic: str, stamp: int) -> None:
        self._batch.add(("HSET", self._retained, topic, f"0 {stamp}"))

    def will_set(self, client_id: str, will: StoredMessage) -> None:
        self._batch.add(("HSET", self._wills, client_id, encode_message(will, time.time())))

    def will_cleared(self, client_id: str) -> None:
        self._batch.add(("HDEL", self._wills, client_id))

    def cursor_saved(self, receiver: str, sender: str, epoch: int, seq: int) -> None:
        self._batch.add(("HSET", self._cursor_key, f"{sender} {epoch}", seq))

    def outbox_added(self, sender: str, epoch: int, seq: int, receiver: str,
                     data: bytes) -> None:
        self._batch.add(("HSET", self._outbox_key, f"{epoch} {seq}",
                         receiver.encode() + b"\0" + data))

    def outbox_sent(self, sender: str, epoch: int, seq: int) -> None:
        self._batch.add(("HDEL", self._outbox_key, f"{epoch} {seq}"))
