"""Reading a member's own stream through its consumer group, so that no entry is lost with a
reply that never arrived.

XREADGROUP with `>` hands new entries to this consumer and records them as pending in one
step: once Redis has run it (and, with `appendfsync always`, written it to its AOF), the
entries are never handed out by `>` again, whether or not the reply reached us. A reply is lost
whenever Redis dies or the connection is cut between the two, and an entry lost that way is
never applied: a barrier in it is never answered, an answer in it never counted, and every
acknowledgement waiting on them waits for good. So after a read fails, the next one asks for
this consumer's pending entries first (`0`, then from the last one read) and only when there
are none left for new ones (`>`); the same after an XACK fails, so that entries already applied
do not stay pending. An entry read twice is dropped by its sequence number (`ClusterNode._apply`)
and acknowledged again.

This works only if a failed read reaches the reader: redis-py must not send XREADGROUP again on
its own after a connection error (a Redis Cluster client does by default), or the second `>`
would read past the lost entries unseen. `cluster_redis.connect` turns those retries off.
"""

from __future__ import annotations

import asyncio
from typing import cast

from redis.exceptions import RedisError, ResponseError

from ..cluster import keys
from ..storage.redis_primaries import Redis

# Entries read per XREADGROUP, and how long one waits for new entries.
READ_COUNT = 512
READ_BLOCK_MS = 1000
# Where the reading goes on: this consumer's pending entries from the start, or new ones.
PENDING = "0"
NEW = ">"

# What XREADGROUP answers: [[stream, [(entry id, {field: value})]]] (or nothing).
Entry = tuple[bytes, dict[bytes, bytes]]
ReadReply = list[tuple[bytes, list[Entry]]] | None


def entry_number(entry_id: bytes) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition(b"-")
    return int(milliseconds), int(sequence or 0)


class StreamReader:
    """The reading position in `stream` of `consumer` (this member), and the reads."""

    def __init__(self, redis: Redis, stream: str, consumer: str) -> None:
        self._redis = redis
        self._stream = stream
        self._consumer = consumer
        # After a (re)start, first what was read before and never acknowledged.
        self.position = PENDING
        # Whether `read_pending_again` was called while a read was under way: where that read
        # ended then says nothing about the entries it asked for.
        self._asked_again = False
        # The id of the last entry the node applied, as (milliseconds, sequence).
        self.applied_through = (0, 0)

    async def create_group(self) -> None:
        """The consumer group this member reads through, and the stream, unless there."""
        try:
            await self._redis.xgroup_create(self._stream, keys.GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def acknowledge(self, ids: list[bytes]) -> None:
        """The entries `ids` are applied and committed: acknowledged, and gone from the
        stream."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xack(self._stream, keys.GROUP, *ids)
            pipe.xdel(self._stream, *ids)
            await pipe.execute()

    def applied(self, entry_id: bytes) -> None:
        """The node applied the entries up to `entry_id`."""
        self.applied_through = max(self.applied_through, entry_number(entry_id))

    async def caught_up(self) -> None:
        """Wait until every entry the stream holds now is applied: at start-up, what was
        sent while the member was down goes into its sessions before it lets go of those
        claimed elsewhere meanwhile (cluster_sessions.py), which then carry it along."""
        last = cast(list[Entry], await self._redis.xrevrange(self._stream, count=1))
        while last and self.applied_through < entry_number(last[0][0]):
            await asyncio.sleep(0.01)

    def read_pending_again(self) -> None:
        """Entries may be pending that were never applied (a read's reply was lost) or never
        acknowledged (an XACK failed): the next reads go through them first."""
        self.position = PENDING
        self._asked_again = True

    async def read(self) -> list[Entry]:
        """The next entries: pending ones while there are any, then new ones (waiting up to
        READ_BLOCK_MS for them). A RedisError leaves the pending ones to be read next."""
        position = self.position
        self._asked_again = False
        try:
            reply: ReadReply = await self._redis.xreadgroup(  # type: ignore[assignment]
                keys.GROUP, self._consumer, {self._stream: position}, count=READ_COUNT,
                block=READ_BLOCK_MS if position == NEW else None)
        except RedisError:
            self.read_pending_again()  # Redis may have handed out entries we never got
            raise
        entries = reply[0][1] if reply else []
        if position != NEW and not self._asked_again:
            # Pending entries come in order; none left means every one is applied.
            self.position = entries[-1][0].decode() if entries else NEW
        return entries
