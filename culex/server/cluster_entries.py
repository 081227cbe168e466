"""What a cluster node keeps of the other members and of the stream entries it sends them
(server/cluster_io.py writes them)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from ..cluster import keys
from ..core.worker_links import COUNTS, FORWARD, FORWARD_V5, record, split_records
from ..storage.redis_primaries import PipelineCommand, Primaries, Redis
from ..storage.redis_store import read_outbox
from .cluster_redis import REPLICA_WAIT_MS, NotReplicated

# Records that matter only to a member that reads them at once: QoS 0 messages, and the
# counters behind the cluster's $SYS totals (sent again every interval).
EPHEMERAL = (FORWARD, FORWARD_V5, COUNTS)


@dataclass
class Peer:
    """Another member as this node knows it."""

    name: str
    index: int
    epoch: int
    # False while its lease is gone: it is down, and its stream keeps what it is sent.
    alive: bool = True
    # Bytes queued for its stream and not yet written there.
    queued: int = 0
    # Its stream holds more than it keeps up with (server/stream_backlog.py).
    backlogged: bool = False
    # While it is down: whether what it committed to send before (its outbox) is written
    # for it (`write_outbox`); until then nothing waits for its answer no longer.
    outbox_written: bool = True


@dataclass
class Outgoing:
    """One stream entry on its way: a link's records of one loop tick."""

    receiver: str
    epoch: int
    seq: int
    records: bytes
    # Counted against the receiver's queue (0 for an entry sent again after a restart).
    size: int
    # In the outbox table until written (it carries more than QoS 0 messages).
    stored: bool


def carries_state(records: bytes) -> bool:
    """Whether an entry carries more than QoS 0 messages and counters (which nobody must get
    twice, nor miss, after a crash)."""
    found: list[tuple[int, bytes]] = []
    split_records(records, found)
    return any(kind not in EPHEMERAL for kind, _ in found)


def without_qos0(chunks: list[bytes]) -> bytes:
    """The records for a member that is down, less its QoS 0 messages (not kept for anyone
    who is not connected) and counters (stale by the time it reads them)."""
    found: list[tuple[int, bytes]] = []
    split_records(b"".join(chunks), found)
    return b"".join(record(kind, body) for kind, body in found if kind not in EPHEMERAL)


class Sender(Protocol):
    """The node's side of a `StreamSink` (server/cluster_io.py)."""

    def queue(self, peer: Peer, records: list[bytes]) -> None: ...

    def reading_paused(self, peer: Peer, paused: bool) -> None: ...


class StreamSink:
    """The `Sink` of the link to one member: its records go to that member's stream; pausing
    its reading pauses the reading of this node's own stream."""

    def __init__(self, node: Sender, peer: Peer) -> None:
        self._node = node
        self._peer = peer

    def writelines(self, list_of_data: list[bytes]) -> None:
        self._node.queue(self._peer, list_of_data)

    def close(self) -> None:
        """Links are dropped by membership, never closed by the core."""

    def pause_reading(self) -> None:
        self._node.reading_paused(self._peer, True)

    def resume_reading(self) -> None:
        self._node.reading_paused(self._peer, False)


async def write_outbox(redis: Redis, peer: Peer) -> int:
    """Write into their receivers' streams the entries `peer`, which is down, committed to
    send and may not have sent (its outbox, kept in Redis with `[storage] backend = "redis"`);
    return how many. It sends them itself when it starts again, but a barrier that goes on
    without its answer must not overtake them: a session that moves meanwhile would leave
    the member they are for before they came, and miss them. A receiver drops an entry it
    has applied (by its number), so writing one twice, or by several members, is harmless."""
    entries = await read_outbox(redis, peer.name)
    if entries:
        async with redis.pipeline(transaction=False) as pipe:
            for epoch, seq, receiver, records in entries:
                pipe.xadd(keys.stream_key(receiver),
                          entry_fields(peer.name, peer.index, epoch, seq, records))
            await pipe.execute()
    return len(entries)


def entry_fields(sender: str, index: int, epoch: int, seq: int,
                 records: bytes) -> dict[Any, Any]:
    """A stream entry: who sent it (name and member number), under which epoch and number,
    and its records."""
    return {"f": sender, "e": epoch, "i": index, "s": seq, "r": records}


async def write_entries(redis: Redis, sender: str, index: int, entries: list[Outgoing], *,
                        routes: list[tuple[str, bool]], peers: dict[str, Peer],
                        replicas: int, primaries: Primaries | None = None
                        ) -> list[tuple[Peer, int | None]]:
    """Write `entries` and this member's filter changes (`routes`) in one pipelined round
    trip, which returns the size of each live receiver's stream (for back-pressure); with
    `replicas`, when an entry carries state, through `primaries`, each primary's share ended
    by a WAIT for them (redis_primaries.py)."""
    receivers = {entry.receiver: peer for entry in entries
                 if (peer := peers.get(entry.receiver)) is not None and peer.alive}
    replicas = replicas if any(entry.stored for entry in entries) else 0
    filters = keys.filters_key(sender)
    commands: list[PipelineCommand] = []
    for topic_filter, added in routes:
        commands.append((filters, partial(_route, filters, topic_filter, added)))
    for entry in entries:
        stream = keys.stream_key(entry.receiver)
        fields = entry_fields(sender, index, entry.epoch, entry.seq, entry.records)
        commands.append((stream, partial(_xadd, stream, fields)))
    for receiver in receivers:
        stream = keys.stream_key(receiver)
        commands.append((stream, partial(_memory_usage, stream)))
    if replicas and primaries is not None:
        results, confirmed = await primaries.write_waited(commands, replicas, REPLICA_WAIT_MS)
        if confirmed < replicas:
            # Sent again: the receiver drops the numbers it has already applied.
            raise NotReplicated(f"{confirmed} of {replicas} Redis replica(s) confirmed the "
                                f"entries within {REPLICA_WAIT_MS} ms")
    else:
        async with redis.pipeline(transaction=False) as pipe:
            for _key, add in commands:
                add(pipe)
            results = await pipe.execute()
    sizes = results[len(results) - len(receivers):]
    return list(zip(receivers.values(), sizes, strict=True))


def _route(filters: str, topic_filter: str, added: bool, pipe: Any) -> None:
    if added:
        pipe.sadd(filters, topic_filter)
    else:
        pipe.srem(filters, topic_filter)


def _xadd(stream: str, fields: dict[str, Any], pipe: Any) -> None:
    pipe.xadd(stream, fields)


def _memory_usage(stream: str, pipe: Any) -> None:
    pipe.memory_usage(stream)
