"""What a cluster node keeps of the other members and of the stream entries it sends them
(server/cluster_io.py writes them)."""

from __future__ import annotations

from dataclasses import dataclass

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
