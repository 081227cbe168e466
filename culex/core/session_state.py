"""A session's whole state as the JSON that carries it between cluster members
(session_moves.py): what a restart would load, in storage's terms at the other end."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

from ..storage.base import StoredEntry, StoredMessage, StoredSession
from .message import Message
from .persistence import restored_message, stored_form
from .session import Session

# The links' service channel of the records that carry sessions (worker_queries.ADMIN is 2,
# dynsec's 1).
SESSIONS = 3


def export_session(session: Session, now: float) -> dict[str, Any]:
    """A session's whole state as a JSON-ready dict: what a restart would load."""
    indexes: dict[int, int] = {}
    messages: list[dict[str, Any]] = []
    entries: list[list[int]] = []
    listed = [*session.inflight.items(), *((0, entry) for entry in session.queue)]
    for packet_id, entry in listed:
        message = entry.message
        index = indexes.get(id(message))
        if index is None:
            index = indexes[id(message)] = len(messages)
            stored = stored_form(message, 0, now)
            messages.append({"id": message.cluster_id, "topic": stored.topic,
                             "qos": stored.qos, "retain": stored.retain,
                             "payload": base64.b64encode(stored.payload).decode(),
                             "properties": base64.b64encode(stored.properties).decode(),
                             "expires_in": stored.expires_in})
        entries.append([index, entry.qos, int(entry.retain), packet_id, int(entry.released),
                        entry.identifiers])
    return {"expiry": session.expiry_interval, "username": session.username,
            "owner_known": session.owner_known, "subscriptions": dict(session.subscriptions),
            "awaiting_release": sorted(session.awaiting_release), "admitted": session.admitted,
            "given": sorted(session.seen or ()), "messages": messages, "entries": entries}


def without_inbound_state(stored: StoredSession) -> StoredSession:
    """`stored` without the inbound QoS 2 ids awaiting their release: a session that answers
    no CONNECT held here (it comes late, or from a member that let go of it) and whose
    client was let in under no known claim may be older than what its client did since,
    elsewhere, and such an id, used again by the client for a new message, would drop that
    message (a loss; without it a QoS 2 message the client sends again may be routed twice).
    What is in flight to the client keeps its packet id: the client holds its side of each
    such id until its PUBREL, and a new message under an id it still holds would be taken
    for a repeat."""
    return replace(stored, awaiting_release=set())


def import_session(client_id: str, state: dict[str, Any],
                   now: float) -> tuple[StoredSession, dict[int, Message]]:
    """`export_session`'s dict back in storage's terms; messages are numbered by position."""
    messages = {}
    for index, item in enumerate(state["messages"]):
        message = messages[index] = restored_message(StoredMessage(
            0, item["topic"], base64.b64decode(item["payload"]), item["qos"], item["retain"],
            base64.b64decode(item["properties"]), item["expires_in"]), now)
        message.cluster_id = item["id"]
    entries = [StoredEntry(seq, index, qos, bool(retain), packet_id, bool(released),
                           identifiers)
               for seq, (index, qos, retain, packet_id, released, identifiers)
               in enumerate(state["entries"], 1)]
    return StoredSession(client_id, state["expiry"], dict(state["subscriptions"]),
                         state["owner_known"], state["username"], entries,
                         set(state["awaiting_release"]), state.get("admitted", 0),
                         given=set(state.get("given", ()))), messages


def describe_state(state: dict[str, Any] | None) -> str:
    """A session record's state in a debug log line."""
    return "-" if state is None else (
        f"{len(state['entries'])} messages, {len(state.get('given', ()))} given, inbound "
        f"{state['awaiting_release']} (admitted {state.get('admitted', 0)}), settle "
        f"{state.get('settle')}, unfinished {state.get('unfinished')}, collecting "
        f"{state.get('collecting', False)}")


def read_early(stored: StoredSession, messages: dict[int, Message]) -> StoredSession:
    """What a session record that its addressee has not applied yet may give another member
    ahead of it (session_moves.py `_taken_late`): all but what is in flight to the client.
    The record itself still comes, and what it holds is added but for what is here already
    (the same `Message.cluster_id`); an entry in flight there resumes under its packet id,
    which only the record's own arrival may do once (the client holds its side of the id
    until it is released, and a second resumption after that would be a new message to it).
    """
    return replace(stored, entries=[
        entry for entry in stored.entries
        if not entry.packet_id and messages[entry.message_id].cluster_id])
