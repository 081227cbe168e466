"""Start-up: sessions, queues, in-flight state and retained messages back from storage.

A worker restores the sessions it owns and every retained message. The wills of clients that
were connected when the broker stopped are returned, to be published once routing can reach
every session: at once in one process, and with workers once every worker has announced its
restored subscriptions. A will that was waiting for its Will Delay Interval is published then
too: the delay is not stored, and the client's connection is gone either way.
"""

from __future__ import annotations

from ..storage.base import LoadedState, StoredSession
from .message import Message
from .outgoing import Outgoing
from .persistence import Persistence, restored_message
from .routing import Router
from .session import Session
from .sessions import SessionManager
from .subscription_value import V5_SUBSCRIBER
from .worker_links import WorkerLinks


def restore(persistence: Persistence, manager: SessionManager, router: Router,
            links: WorkerLinks | None, now: float
            ) -> tuple[LoadedState, list[tuple[str, Message]]]:
    """Load the state, rebuild it in `manager` and `router`; returns what was loaded and the
    wills to publish, (client id, will) each."""
    state = persistence.load(None if links is None else links.owns)
    if links is not None:
        persistence.interleave_ids(links.index, links.size)
    messages = persistence.restore_messages(state)
    for stored in state.sessions:
        session, entries = rebuild_session(manager, router, stored, messages)
        for entry in entries:
            entry.message.store_refs += 1  # its row is there already
        manager.sessions.put(session)
        # Its client was disconnected by the restart: the countdown starts again now (the
        # whole stored interval, never less), since the downtime was not the client's doing.
        manager.expire_later(session)
    retained = router.retained
    for message_id, stamp in state.retained:
        message = messages[message_id]
        retained.restored(message, stamp, held=links is None or links.owns(message.topic))
    retained.last_stamp = max(retained.last_stamp, state.max_stamp)
    wills = [(client_id, restored_message(will, now)) for client_id, will in state.wills]
    for client_id, _ in wills:
        persistence.will_dropped(client_id)
    return state, wills


def rebuild_session(manager: SessionManager, router: Router, stored: StoredSession,
                    messages: dict[int, Message]) -> tuple[Session, list[Outgoing]]:
    """A persistent session from its stored form, routed to (not yet in the session table),
    and its entries in order: what a restart loads, and what another cluster node hands over
    (session_moves.py)."""
    session = manager.new_session(stored.client_id, persistent=True)
    session.expiry_interval = stored.expiry
    for topic_filter, value in stored.subscriptions.items():
        session.subscriptions[topic_filter] = value
        router.add_to_tries(session, topic_filter, value)
        session.v5 = value >= V5_SUBSCRIBER  # stored with the subscriber's family
    entries = []
    for item in stored.entries:
        entry = Outgoing(messages[item.message_id], item.qos, item.retain, item.identifiers)
        entry.seq = item.seq
        entry.released = item.released
        entries.append(entry)
        if item.packet_id:
            session.send_window()[item.packet_id] = entry
        else:
            session.enqueue(entry)
    if stored.awaiting_release:
        session.awaiting_release = set(stored.awaiting_release)
    session.username = stored.username
    session.owner_known = stored.owner_known
    session.admitted = stored.admitted
    return session, entries
