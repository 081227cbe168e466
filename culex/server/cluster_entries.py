"""What a cluster node keeps of the other members and of the stream entries it sends them
(server/cluster_io.py writes them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..core.worker_links import COUNTS, FORWARD, FORWARD_V5, record, split_records

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
