"""Parts of one session that meet on a cluster member (session_moves.py): what a move, a
member that let go of the session, or a dead member's store brings, added to the session that
is here, or stored as the session here.

Which part holds the inbound QoS 2 ids the client goes on from is told by `admitted`, the
claim token under which each part's client was last let in (claims are numbered cluster-wide,
so a later one is a later connection): a part let in later than the session here replaces
its ids; one let in under the same claim adds its ids (parts of one connection's state); one
let in earlier, or not known to be later, adds none. An id taken from an older
part that the client has released and used again since would drop its next message (a
loss); an id left out costs at most one QoS 2 message routed twice.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Collection
from typing import Any

from ..storage.base import StoredEntry, StoredSession
from .message import Message
from .outgoing import Outgoing
from .session import NO_ENTRIES, NO_PACKET_IDS, Session
from .session_state import export_session
from .sessions import SessionManager
from .timers import Clock

log = logging.getLogger("culex")


def merge_part(session: Session, stored: StoredSession, messages: dict[int, Message],
               source: str) -> None:
    """Queue in `session` what another member held for it, but what it has already (a
    message sent to both members while the move went on, or, for a session taken from a
    member that was down, what it was given since); and its inbound QoS 2 ids if its client
    was let in there later than here.

    What was in flight there stays in flight under its packet id (the client holds its side
    of that id until the PUBREL) unless the id is taken here, then it comes anew. What the
    part's holder gave the client (`StoredSession.given`) goes from the queue here: a copy
    that collected while the session was elsewhere must not give it again."""
    there = {messages[item.message_id].cluster_id: item for item in stored.entries}
    in_flight_there = {cluster_id for cluster_id, item in there.items() if item.packet_id}
    given_there = (stored.given - there.keys()) | in_flight_there
    given_there.discard(0)
    dropped = _drop_queued(session, given_there)
    if dropped:
        log.info("client %s: %d queued messages dropped: %s gave them to the client, or has "
                 "them in flight to it", session.client_id, dropped, source)
    held = {entry.message.cluster_id for entry in (*session.inflight.values(),
                                                   *session.queue)}
    if session.seen is not None:
        held |= session.seen - in_flight_there
        session.remember_given(stored.given)
    added = 0
    for item in stored.entries:
        message = messages[item.message_id]
        if message.cluster_id and message.cluster_id in held:
            continue
        if item.packet_id and item.packet_id not in session.inflight:
            _resume(session, message, item)
        elif not item.released:  # (released: the client has it)
            session.deliver(message, item.qos, item.retain, item.identifiers)
        added += 1
    if added:
        log.info("client %s: %d more messages from %s", session.client_id, added, source)
    if stored.admitted and stored.admitted >= session.admitted:
        _take_inbound(session, stored)


def in_publication_order(session: Session, moved: list[Outgoing],
                         before: list[Outgoing]) -> None:
    """Put what a move's REST added to the queue (all that is not in `before`) right after
    what came with the move (`moved`), ahead of what reached the session here directly
    since: the old member got it before every member routed the session here, so it was
    published before any of that (a message routed both ways came here too, and its REST
    copy was dropped). Kept in memory: after a restart the queue is in the order the
    messages reached this member."""
    queue = session.queue
    known = {id(entry) for entry in before}
    added = [entry for entry in queue if id(entry) not in known]
    if not added:
        return
    came = {id(entry) for entry in moved}
    session.queue = deque([*(entry for entry in queue if id(entry) in came), *added,
                           *(entry for entry in queue
                             if id(entry) in known and id(entry) not in came)])


def _drop_queued(session: Session, cluster_ids: set[int]) -> int:
    """Take the messages `cluster_ids` out of `session`'s queue (the client has them, or
    has them in flight elsewhere under a packet id it holds); how many."""
    if not cluster_ids or not any(entry.message.cluster_id in cluster_ids
                                  for entry in session.queue):
        return 0
    kept: deque[Outgoing] = deque()
    persistence = session.persistence
    for entry in session.queue:
        if entry.message.cluster_id not in cluster_ids:
            kept.append(entry)
            continue
        session.queued_bytes -= len(entry.message.payload)
        if persistence is not None:
            persistence.done(session.client_id, entry)
    dropped = len(session.queue) - len(kept)
    session.queue = kept or ()
    return dropped


def _take_inbound(session: Session, stored: StoredSession) -> None:
    """The part's client was let in later than this session's, whose inbound QoS 2 ids it
    replaces (the client goes on from its own), or under the same claim, whose ids it
    joins: once its client has gone, a member gives the state that connection left whole
    once, and what it gives after is empty."""
    if stored.admitted > session.admitted:
        for packet_id in set(session.awaiting_release) - stored.awaiting_release:
            session.inbound_released(packet_id)
        admitted(session, stored.admitted)
    for packet_id in sorted(stored.awaiting_release):
        session.inbound_received(packet_id)


def admitted(session: Session, token: int) -> None:
    """`session`'s state is as its client left it under claim `token`."""
    session.admitted = token
    if session.persistence is not None:
        session.persistence.session_admitted(session.client_id, token)


def _resume(session: Session, message: Message, item: StoredEntry) -> None:
    """`item`, in flight under its packet id elsewhere, in flight here under the same, and
    sent again at once to a client that is connected (else when it is)."""
    entry = Outgoing(message, item.qos, item.retain, item.identifiers)
    entry.released = item.released
    session.send_window()[item.packet_id] = entry
    if session.persistence is not None:
        session.persistence.queued(session.client_id, entry, item.packet_id)
    if session.connection is not None:
        session.resend(item.packet_id)


def store_part(session: Session, stored: StoredSession, entries: list[Outgoing]) -> None:
    """Store `session`, rebuilt from `stored` (its `entries` in order), as this member's."""
    persistence = session.persistence
    if persistence is None:
        return
    client_id = session.client_id
    persistence.session_saved(client_id, stored.expiry, stored.username)
    for topic_filter, value in stored.subscriptions.items():
        persistence.subscribed(client_id, topic_filter, value)
    for item, entry in zip(stored.entries, entries, strict=True):
        persistence.queued(client_id, entry, item.packet_id)
    for packet_id in stored.awaiting_release:
        persistence.inbound_received(client_id, packet_id)
    if stored.admitted:
        persistence.session_admitted(client_id, stored.admitted)


def strip_handed_on(session: Session) -> None:
    """What a move sent on goes from the session here (in the same commit as the record that
    carries it, session_moves.py `_give`): the session keeps its subscriptions, and collects
    what still comes here until the move settles. What it remembers having been given went
    with it too: what it collects from now on is all its REST can say was given here (and
    it was not given to the client, only handed on)."""
    entries = [*session.inflight.values(), *session.queue]
    awaiting = list(session.awaiting_release)
    session.inflight = NO_ENTRIES
    session.queue = ()
    session.queued_bytes = 0
    session.awaiting_release = NO_PACKET_IDS
    if session.seen is not None:
        session.forget_given()
        session.remember_given()
    persistence = session.persistence
    if persistence is not None:
        for entry in entries:
            persistence.done(session.client_id, entry)
        for packet_id in awaiting:
            persistence.inbound_released(session.client_id, packet_id)


class PartsLedger:
    """Which sessions here a part may still come for (session_moves.py), and which remember
    what they are given for one."""

    def __init__(self, manager: SessionManager, clock: Clock) -> None:
        self._manager = manager
        self._clock = clock
        # Client ids whose session came here by a move whose REST has not come: a part of it
        # may still come, here or (`let_go`, `_not_settled`) to whoever holds it next.
        self.unfinished: set[str] = set()
        # Client ids whose session here came from such a session: it keeps remembering what
        # it is given (`Session.seen`) for that part, past its own REST.
        self.expecting: set[str] = set()

    def export(self, session: Session) -> dict[str, Any]:
        """`export_session`, saying whether a part of the session may still come (to the
        member that takes it, which then remembers what it gives it)."""
        state = export_session(session, self._clock.now)
        state["unfinished"] = session.client_id in self.unfinished
        return state

    def mark_unfinished(self, client_id: str, unfinished: bool) -> None:
        """Whether a part of the session may still come; stored with it, so that after a
        restart it still remembers what it is given, and says so when it goes on."""
        if unfinished:
            self.unfinished.add(client_id)
        else:
            self.unfinished.discard(client_id)
        session = self._manager.sessions.get(client_id)
        if session is not None and session.persistence is not None:
            session.persistence.session_unfinished(client_id, unfinished)

    def restored(self, sessions: list[StoredSession]) -> None:
        """At start-up: the sessions stored here that a part may still come for, or that
        remembered what they were given for such a part."""
        for stored in sessions:
            if stored.unfinished:
                self.unfinished.add(stored.client_id)
            if stored.unfinished or stored.given:
                self.expect_part(stored.client_id, stored.given)

    def expect_part(self, client_id: str, given: Collection[int] = ()) -> None:
        """A part of the session may still come: remember what it is given (and what an
        earlier holder gave it, `given`), so that the part does not give it again."""
        session = self._manager.sessions.get(client_id)
        if session is not None:
            session.remember_given(given)
            self.expecting.add(client_id)

    def gone(self, client_id: str) -> None:
        """The session ended here, or went on."""
        self.unfinished.discard(client_id)
        self.expecting.discard(client_id)
