"""Glue between core objects and a `Storage` backend: ids, reference counts, restore.

A message is written once however many persistent sessions hold it: it gets a storage id the
first time a queue entry or the retained store references it, and its row is deleted when the
last reference goes. Queue entries get a sequence number that orders them within their session.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from ..protocol.packets import PacketType
from ..protocol.properties import decode_properties, encode_properties
from ..storage.base import LoadedState, Storage, StoredEntry, StoredMessage
from .message import Message
from .outgoing import Outgoing
from .timers import Clock


def stored_form(message: Message, message_id: int, now: float) -> StoredMessage:
    """What storage keeps of a message: its MQTT 5 properties too, and how long it has left
    to live when it has a Message Expiry Interval."""
    properties = message.properties
    if properties is None:
        return StoredMessage(message_id, message.topic, message.payload, message.qos,
                             message.retain, cluster_id=message.cluster_id)
    expiry = properties.message_expiry_interval
    return StoredMessage(message_id, message.topic, message.payload, message.qos,
                         message.retain, encode_properties(properties),
                         None if expiry is None else expiry - (now - message.created),
                         message.cluster_id)


def restored_message(stored: StoredMessage, now: float) -> Message:
    """The message again, with its expiry counting on from where storage says it stands (a
    `created` time in the past, or even one that makes it expired already)."""
    properties = None
    created = now
    if stored.properties:
        properties = decode_properties(stored.properties, 0, len(stored.properties),
                                       PacketType.PUBLISH)[0]
        expiry = properties.message_expiry_interval
        if expiry is not None and stored.expires_in is not None:
            created = now + stored.expires_in - expiry
    message = Message(stored.topic, stored.payload, stored.qos, stored.retain,
                      properties=properties, created=created)
    message.cluster_id = stored.cluster_id
    return message


class Persistence:
    """The core's one door to storage, in the core's terms: message rows by reference count,
    queue entries by sequence number, message ids that never collide between workers, and the
    session, subscription, retained and will records. `durable` says whether acknowledgements
    wait for commits (`commit.CommitGate`)."""

    def __init__(self, storage: Storage, clock: Clock) -> None:
        self.storage = storage
        self.durable = storage.durable
        # The broker's current time, for message expiry (the core never reads a clock itself).
        self.clock = clock
        self._next_message_id = 1
        # Workers share one database: worker i of n makes ids i + 1, i + 1 + n, ... above the
        # highest id at start-up, so no two workers ever make the same id.
        self._id_step = 1
        self._id_slot = 0
        self._next_seq = 1

    def interleave_ids(self, worker: int, workers: int) -> None:
        self._id_step = workers
        self._id_slot = worker

    # -- messages ----------------------------------------------------------------------------

    def ref(self, message: Message) -> int:
        if not message.store_refs:
            if not message.store_id:
                message.store_id = self._next_message_id
                self._next_message_id += self._id_step
            self.storage.message_stored(stored_form(message, message.store_id, self.clock.now))
        message.store_refs += 1
        return message.store_id

    def unref(self, message: Message) -> None:
        message.store_refs -= 1
        if not message.store_refs:
            self.storage.message_deleted(message.store_id)

    # -- session entries ---------------------------------------------------------------------

    def queued(self, client_id: str, entry: Outgoing, packet_id: int = 0) -> None:
        entry.seq = self._next_seq
        self._next_seq += 1
        self.storage.entry_queued(client_id, StoredEntry(
            entry.seq, self.ref(entry.message), entry.qos, entry.retain, packet_id,
            entry.released, entry.identifiers))

    def done(self, client_id: str, entry: Outgoing) -> None:
        self.storage.entry_done(client_id, entry.seq)
        self.unref(entry.message)

    def sent(self, client_id: str, entry: Outgoing, packet_id: int) -> None:
        """A queued entry went out under `packet_id`."""
        self.storage.entry_sent(client_id, entry.seq, packet_id)

    def released(self, client_id: str, entry: Outgoing) -> None:
        """PUBREC came for an outbound QoS 2 entry: PUBREL is what a restart re-sends."""
        self.storage.entry_released(client_id, entry.seq)

    def inbound_received(self, client_id: str, packet_id: int) -> None:
        self.storage.inbound_received(client_id, packet_id)

    def inbound_released(self, client_id: str, packet_id: int) -> None:
        self.storage.inbound_released(client_id, packet_id)

    # -- sessions, subscriptions, wills -------------------------------------------------------

    def session_saved(self, client_id: str, expiry: int, username: str | None) -> None:
        self.storage.session_saved(client_id, expiry, username)

    def session_admitted(self, client_id: str, token: int) -> None:
        self.storage.session_admitted(client_id, token)

    def session_unfinished(self, client_id: str, unfinished: bool) -> None:
        self.storage.session_unfinished(client_id, unfinished)

    def session_given(self, client_id: str, cluster_id: int) -> None:
        self.storage.session_given(client_id, cluster_id)

    def session_given_forgotten(self, client_id: str, cluster_ids: Collection[int]) -> None:
        self.storage.session_given_forgotten(client_id, cluster_ids)

    def session_ended(self, client_id: str, entries: list[Outgoing]) -> None:
        """The session and its rows go, and its entries' references to message rows."""
        self.storage.session_deleted(client_id)
        for entry in entries:
            self.unref(entry.message)

    def subscribed(self, client_id: str, topic_filter: str, value: int) -> None:
        self.storage.subscription_set(client_id, topic_filter, value)

    def unsubscribed(self, client_id: str, topic_filter: str) -> None:
        self.storage.subscription_removed(client_id, topic_filter)

    def will_kept(self, client_id: str, will: Message) -> None:
        """The will of a connected client, on disk: if the broker dies, the client's connection
        died with it, and the will goes out when the broker restarts. Its Message Expiry counts
        from its publication, so nothing has counted yet."""
        self.storage.will_set(client_id, stored_form(will, 0, will.created))

    def will_dropped(self, client_id: str) -> None:
        """The will was published or cancelled."""
        self.storage.will_cleared(client_id)

    # -- retained ------------------------------------------------------------------------------

    def retained_set(self, message: Message, stamp: int) -> None:
        self.storage.retained_set(message.topic, self.ref(message), stamp)

    def retained_cleared(self, topic: str, stamp: int) -> None:
        self.storage.retained_cleared(topic, stamp)

    # -- restore -----------------------------------------------------------------------------

    def load(self, owns: Callable[[str], bool] | None) -> LoadedState:
        return self.storage.load(owns)

    def restore_messages(self, state: LoadedState) -> dict[int, Message]:
        """Message objects for the stored rows; ids continue after the highest one stored."""
        now = self.clock.now
        messages = {stored.message_id: restored_message(stored, now)
                    for stored in state.messages.values()}
        for message_id, message in messages.items():
            message.store_id = message_id
        first = max(state.max_message_id, max(messages, default=0)) + 1
        self._next_message_id = first + (self._id_slot - first) % self._id_step
        self._next_seq = max((entry.seq for session in state.sessions
                              for entry in session.entries), default=0) + 1
        return messages
