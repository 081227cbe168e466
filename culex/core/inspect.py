"""Read-only views of the broker for the admin API: pages of clients, sessions, subscriptions
and retained messages, and the counters that metrics read.

Nothing here changes state (what the admin API changes goes through the core's own doors, see
steer.py), and nothing here runs unless someone asks: the counters are read when scraped, not
kept up to date per message. A list is built one page at a time: the `limit` smallest keys
after the cursor (`heapq.nsmallest` over the keys, so a page costs one pass over the table and
the memory of the page, never a sorted copy of the whole table: ~10 ms for a page out of
100,000 sessions). With worker processes each worker builds its own page and the admin API
merges them (see the server's admin view).

Times: the broker's clock is the loop's (monotonic); the caller passes `now` on that clock and
`wall` (seconds since the epoch) so that instants can be shown as wall-clock times.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator
from operator import attrgetter, itemgetter
from typing import Any

from ..protocol.describe import payload_fields, properties_fields, protocol_name
from ..protocol.topics import split_shared, topic_matches
from .broker import Broker
from .connection import Connection
from .message import Message
from .session import NEVER_EXPIRES, Session
from .states import State
from .subscription_value import IDENTIFIER_SHIFT, NO_LOCAL, RETAIN_AS_PUBLISHED, identifiers_of

JSON = dict[str, Any]
Page = tuple[list[JSON], bool]
"""A page of entries, and whether more follow it."""

_client_id = attrgetter("client_id")


def subscription_fields(topic_filter: str, value: int) -> JSON:
    """A subscription's trie value (subscription_value.py) spelled out."""
    shared = split_shared(topic_filter)
    fields: JSON = {"topic_filter": topic_filter, "qos": value & 0x03,
                    "shared_group": shared[0] if shared else None}
    if value > 2:  # MQTT 5 options above the QoS bits
        fields["no_local"] = bool(value & NO_LOCAL)
        fields["retain_as_published"] = bool(value & RETAIN_AS_PUBLISHED)
        fields["subscription_identifiers"] = identifiers_of(value >> IDENTIFIER_SHIFT)
    return fields


def retained_fields(message: Message, payload_limit: int | None) -> JSON:
    return {"topic": message.topic, "qos": message.qos,
            **payload_fields(message.payload, payload_limit),
            "properties": properties_fields(message.properties)}


class Inspector:
    """What the admin API reads of one broker (one worker's share, with workers)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    # -- counters --------------------------------------------------------------------------

    def counters(self) -> JSON:
        """This process's counters as metrics show them. QoS 0 message counts are the totals
        less the QoS 1 and 2 ones, so that the QoS 0 path counts nothing of its own."""
        broker = self._broker
        stats = broker.stats
        packets_sent = stats.closed_packets_sent
        bytes_sent = stats.closed_bytes_sent
        publishes_sent = stats.closed_publishes_sent
        connected: Counter[tuple[str, str]] = Counter()
        for link in broker.connections:
            packets_sent += link.packets_sent
            bytes_sent += link.bytes_sent
            publishes_sent += link.publishes_sent
            if isinstance(link, Connection) and link.state is State.CONNECTED:
                connected[link.listener, protocol_name(link.protocol_level)] += 1
        inflight = queued = queued_bytes = 0
        sessions = broker.sessions
        for session in sessions:
            inflight += len(session.inflight)
            queued += len(session.queue)
            queued_bytes += session.queued_bytes
        received, sent = stats.received_by_qos, stats.sent_by_qos
        router = broker.router
        return {
            "messages_received": [stats.publishes_received - received[1] - received[2],
                                  received[1], received[2]],
            "messages_sent": [publishes_sent - sent[1] - sent[2], sent[1], sent[2]],
            "packets_received": stats.packets_received,
            "packets_sent": packets_sent,
            "bytes_received": stats.bytes_received,
            "bytes_sent": bytes_sent,
            "dropped": dict(stats.dropped),
            "retained_dropped": stats.retained_dropped,
            "connections": [[listener, protocol, count]
                            for (listener, protocol), count in sorted(connected.items())],
            "sessions_connected": stats.clients_connected,
            "sessions_offline": len(sessions) - stats.clients_connected,
            "clients_maximum": stats.clients_maximum,
            "inflight": inflight,
            "queued": queued,
            "queued_bytes": queued_bytes,
            "subscriptions": router.subscriptions.count + router.shared.count,
            "retained": router.retained.count,
        }

    # -- clients -----------------------------------------------------------------------------

    def clients(self, cursor: str, limit: int, *, prefix: str = "", user: str | None = None,
                now: float, wall: float) -> Page:
        """Connected clients by client id, after `cursor`; `prefix` and `user` filter."""
        matching = (link for link in self._broker.connections
                    if isinstance(link, Connection) and link.state is State.CONNECTED
                    and link.client_id > cursor and link.client_id.startswith(prefix)
                    and (user is None or link.username == user))
        page = heapq.nsmallest(limit + 1, matching, key=_client_id)
        return [self._client(link, now, wall) for link in page[:limit]], len(page) > limit

    def client(self, client_id: str, *, now: float, wall: float) -> JSON | None:
        """One connected client in detail; None when no client with that id is connected."""
        connection = self.connection(client_id)
        if connection is None:
            return None
        session = connection.session
        assert session is not None
        will = connection.will
        return {
            **self._client(connection, now, wall),
            "subscription_list": [subscription_fields(topic_filter, value) for
                                  topic_filter, value in sorted(session.subscriptions.items())],
            "will": None if will is None else {"topic": will.topic, "qos": will.qos,
                                               "retain": will.retain},
            "packets_sent": connection.packets_sent,
            "messages_sent": connection.publishes_sent,
            "bytes_sent": connection.bytes_sent,
        }

    def connection(self, client_id: str) -> Connection | None:
        """The live connection of `client_id`, if it is connected here."""
        session = self._broker.sessions.get(client_id)
        link = None if session is None else session.connection
        return link if isinstance(link, Connection) else None

    @staticmethod
    def _client(connection: Connection, now: float, wall: float) -> JSON:
        session = connection.session
        assert session is not None  # connected
        return {
            "client_id": connection.client_id,
            "username": connection.username,
            "address": connection.address,
            "listener": connection.listener,
            "protocol": protocol_name(connection.protocol_level),
            "connected_at": wall - (now - connection.opened_at),
            "keepalive": connection.keepalive,
            "clean_session": session.clean,
            "subscriptions": len(session.subscriptions),
            "inflight": len(session.inflight),
            "queued": len(session.queue),
            "dropped": session.dropped,
        }

    # -- sessions ----------------------------------------------------------------------------

    def sessions(self, cursor: str, limit: int, *, prefix: str = "",
                 connected: bool | None = None, now: float) -> Page:
        """Every session (connected or not) by client id, after `cursor`."""
        table = self._broker.sessions
        # The common case (no prefix) filters in C: a page of 100,000 in ~10 ms, not ~40.
        ids: Iterator[str] = filter(cursor.__lt__, table.ids()) if not prefix else (
            client_id for client_id in table.ids()
            if client_id > cursor and client_id.startswith(prefix))
        if connected is not None:
            ids = (client_id for client_id in ids if table.connected(client_id) is connected)
        page = heapq.nsmallest(limit + 1, ids)
        sessions = [table.get(client_id) for client_id in page[:limit]]
        return [self._session(session, now) for session in sessions if session is not None], \
            len(page) > limit

    @staticmethod
    def _session(session: Session, now: float) -> JSON:
        expires_at = session.expires_at
        return {
            "client_id": session.client_id,
            "connected": session.connection is not None,
            "username": session.username,
            "persistent": not session.clean,
            "expiry_interval": (None if session.expiry_interval == NEVER_EXPIRES
                                else session.expiry_interval),
            "expires_in": None if expires_at is None else max(0.0, expires_at - now),
            "subscriptions": len(session.subscriptions),
            "inflight": len(session.inflight),
            "queued": len(session.queue),
            "queued_bytes": session.queued_bytes,
            "dropped": session.dropped,
            "will_delayed": session.will is not None,
        }

    # -- subscriptions -----------------------------------------------------------------------

    def subscriptions(self, cursor: tuple[str, str], limit: int, *, client_prefix: str = "",
                      topic: str | None = None) -> Page:
        """Every subscription by (client id, filter), after `cursor`; `topic`: only those
        whose filter matches it (a shared one by its inner filter)."""
        def matching() -> Iterator[tuple[str, str, int]]:
            for session in self._broker.sessions:
                client_id = session.client_id
                if client_id < cursor[0] or not client_id.startswith(client_prefix):
                    continue
                for topic_filter, value in session.subscriptions.items():
                    if (client_id, topic_filter) <= cursor:
                        continue
                    if topic is not None:
                        shared = split_shared(topic_filter)
                        if not topic_matches(shared[1] if shared else topic_filter, topic):
                            continue
                    yield client_id, topic_filter, value

        page = heapq.nsmallest(limit + 1, matching(), key=itemgetter(0, 1))
        return [{"client_id": client_id, **subscription_fields(topic_filter, value)}
                for client_id, topic_filter, value in page[:limit]], len(page) > limit

    # -- retained ----------------------------------------------------------------------------

    def retained(self, topic_filter: str, cursor: str, limit: int, *,
                 payload_limit: int | None, now: float) -> Page:
        """Retained messages whose topic `topic_filter` matches, by topic, after `cursor`.
        Messages past their Message Expiry Interval are left out: no subscriber gets them."""
        matching = (message for message in self._broker.retained.store.match(topic_filter)
                    if message.topic > cursor and not message.expired(now))
        page = heapq.nsmallest(limit + 1, matching, key=attrgetter("topic"))
        return [retained_fields(message, payload_limit) for message in page[:limit]], \
            len(page) > limit
