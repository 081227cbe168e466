"""The storage interface the broker core writes through, and its in-memory (no-op) backend.

The core reports every change to durable state as it happens (a session saved, a message queued
for a persistent session, a packet id in flight, a retained message set, ...). A backend turns
those reports into a batch and commits the batch when the transport asks, once per loop tick
(group commit). `durable` tells the core whether acknowledgements must wait for that commit.

With `durability = "none"` there is no backend at all: the core keeps its state in memory and
makes none of these calls, so the hot path pays nothing for the feature it does not use.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol

from .timing import Durations


@dataclass(slots=True)
class StoredMessage:
    message_id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    # The MQTT 5 property block as encoded on the wire (b"": none, a 3.1.1 message).
    properties: bytes = b""
    # Seconds until its Message Expiry Interval runs out, as of when it was handed to storage
    # (None: never). The backend keeps it as a wall-clock deadline, so the time the broker is
    # down counts as waiting time, as it must [MQTT-3.3.2-6].
    expires_in: float | None = None
    # Its id across a cluster (core/message.py), for the backends that keep it (Redis): a
    # message that reaches a moved session twice is recognised by it. 0: none.
    cluster_id: int = 0


@dataclass(slots=True)
class StoredEntry:
    """A QoS 1/2 message in a persistent session: queued (packet_id 0) or in flight."""

    seq: int
    message_id: int
    qos: int
    retain: bool
    packet_id: int
    released: bool
    # The packed Subscription Identifiers it goes out with (culex/core/subscription_value.py).
    identifiers: int = 0


@dataclass(slots=True)
class StoredSession:
    client_id: str
    # Session Expiry Interval in seconds; 0xFFFFFFFF: never (every 3.1.1 persistent session).
    expiry: int = 0xFFFFFFFF
    subscriptions: dict[str, int] = field(default_factory=dict)
    # The user name its last client logged in with (None: anonymous), so the ACL applies to
    # what it is sent from the first moment after a restart. Not known for sessions written by
    # Culex before schema version 3.
    owner_known: bool = False
    username: str | None = None
    entries: list[StoredEntry] = field(default_factory=list)
    awaiting_release: set[int] = field(default_factory=set)
    # The claim token under which its client was last let in (`Session.admitted`).
    admitted: int = 0
    # It came by a move (or from a dead member's store) whose last part has not come yet
    # (session_moves.py): it goes on remembering what it is given after a restart.
    unfinished: bool = False
    # The cluster ids of the messages it was given while a part of it could still come
    # (`Session.seen`): that part, or a copy of the session that still collects, does not
    # give them again, even after this member restarts.
    given: set[int] = field(default_factory=set)


@dataclass(slots=True)
class LoadedState:
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    sessions: list[StoredSession] = field(default_factory=list)
    # (message id, stamp) of every retained row whose message exists.
    retained: list[tuple[int, int]] = field(default_factory=list)
    wills: list[tuple[str, StoredMessage]] = field(default_factory=list)
    # The highest message id in the file, whatever was loaded: a worker that loads only its
    # own sessions still allocates new ids above every other worker's rows.
    max_message_id: int = 0
    # The highest retained stamp in the file, so new stamps can start above it.
    max_stamp: int = 0


TakenSession = tuple[StoredSession, dict[int, StoredMessage]]
"""A session taken from a member's store (storage/redis_store.py), and the messages its
entries refer to, by message id."""

CommitDone = Callable[[bool], None]
"""Called on the event loop thread when a commit finished: True on success."""


class Storage(Protocol):
    # Whether the broker must hold acknowledgements until `commit` reports success.
    durable: bool

    def load(self, owns: Callable[[str], bool] | None = None) -> LoadedState:
        """Everything stored (`owns` None: one process), or with `owns` only the sessions and
        wills of the client ids it accepts, the messages their entries hold, and every
        retained message (each worker keeps all of them)."""
        ...

    @property
    def pending(self) -> bool:
        """True when changes wait for a commit."""
        ...

    def commit(self, done: CommitDone) -> None:
        """Write what accumulated in one transaction; `done(ok)` follows on the loop thread."""
        ...

    def close(self) -> None: ...

    def session_saved(self, client_id: str, expiry: int, username: str | None) -> None:
        """Create the session, or record its new Session Expiry Interval and owner."""
        ...

    def session_admitted(self, client_id: str, token: int) -> None:
        """Its client was let in under the cluster claim `token` (`Session.admitted`)."""
        ...

    def session_unfinished(self, client_id: str, unfinished: bool) -> None:
        """A part of the session may still come (`StoredSession.unfinished`), or not."""
        ...

    def session_given(self, client_id: str, cluster_id: int) -> None:
        """The session was given the message `cluster_id` (`StoredSession.given`)."""
        ...

    def session_given_forgotten(self, client_id: str, cluster_ids: Collection[int]) -> None:
        """What the session was given is no longer remembered (no part of it can come)."""
        ...

    def session_deleted(self, client_id: str) -> None: ...

    def subscription_set(self, client_id: str, topic_filter: str, qos: int) -> None: ...

    def subscription_removed(self, client_id: str, topic_filter: str) -> None: ...

    def message_stored(self, message: StoredMessage) -> None: ...

    def message_deleted(self, message_id: int) -> None: ...

    def entry_queued(self, client_id: str, entry: StoredEntry) -> None: ...

    def entry_sent(self, client_id: str, seq: int, packet_id: int) -> None: ...

    def entry_released(self, client_id: str, seq: int) -> None: ...

    def entry_done(self, client_id: str, seq: int) -> None: ...

    def inbound_received(self, client_id: str, packet_id: int) -> None: ...

    def inbound_released(self, client_id: str, packet_id: int) -> None: ...

    def retained_set(self, topic: str, message_id: int, stamp: int) -> None:
        """Retain the message unless the row holds a newer stamp: when several workers retain
        on one topic, the newest wins whatever order their commits land in."""
        ...

    def retained_cleared(self, topic: str, stamp: int) -> None:
        """The topic holds no retained message as of `stamp` (a tombstone: see sqlite.py)."""
        ...

    def will_set(self, client_id: str, will: StoredMessage) -> None: ...

    def will_cleared(self, client_id: str) -> None: ...


class ClusterStorage(Storage, Protocol):
    """A cluster member's storage: also how far it applied each sender's stream of records,
    and the records it committed and has yet to send (see storage/stream_cursors.py)."""

    commit_seconds: Durations

    @property
    def path(self) -> object:
        """Where the state is, for log lines."""
        ...

    @property
    def changes(self) -> int:
        """Statements added so far: whether applying a record changed durable state."""
        ...

    def cursors(self, receiver: str) -> dict[tuple[str, int], int]: ...

    def cursor_saved(self, receiver: str, sender: str, epoch: int, seq: int) -> None: ...

    def outbox(self, sender: str) -> list[tuple[int, int, str, bytes]]: ...

    def outbox_added(self, sender: str, epoch: int, seq: int, receiver: str,
                     data: bytes) -> None: ...

    def outbox_sent(self, sender: str, epoch: int, seq: int) -> None: ...

    async def flush(self) -> None:
        """At shutdown, before the cluster's Redis client closes: what is left committed."""
        ...
