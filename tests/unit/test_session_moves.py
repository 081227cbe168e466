"""A session's state as it crosses from one cluster node to another (core/session_moves.py):
exported to JSON and rebuilt, it is the session it was (tests/cluster/test_session_moves.py
moves real sessions between real nodes)."""

from __future__ import annotations

import json

from culex.core.message import Message
from culex.core.outgoing import Outgoing
from culex.core.session import Session
from culex.core.session_moves import export_session, import_session
from culex.protocol.properties import Properties


def test_a_session_survives_the_trip_through_json() -> None:
    session = Session("traveller", False, 10, 100)
    session.expiry_interval = 600
    session.username = "alice"
    session.subscriptions = {"a/#": 2, "$share/g/b/+": 1}
    expiring = Message("a/1", b"\x00\xffbinary", 2, False,
                       properties=Properties(message_expiry_interval=60,
                                             content_type="text/plain"), created=90.0)
    plain = Message("b/2", b"plain", 1, True, created=95.0)
    expiring.cluster_id = 1 << 40 | 3  # the id another node gave it travels with it
    in_flight = Outgoing(expiring, 2, False, identifiers=7)
    in_flight.released = True
    session.send_window()[5] = in_flight
    session.enqueue(Outgoing(plain, 1, True))
    session.enqueue(Outgoing(expiring, 1, False))  # one message, two entries
    session.awaiting_release = {3, 9}

    state = json.loads(json.dumps(export_session(session, 100.0)))
    assert len(state["messages"]) == 2, "a message held twice is carried once"
    stored, messages = import_session("traveller", state, 200.0)

    assert (stored.client_id, stored.expiry, stored.username) == ("traveller", 600, "alice")
    assert stored.subscriptions == {"a/#": 2, "$share/g/b/+": 1}
    assert stored.awaiting_release == {3, 9}
    assert [(e.qos, e.retain, e.packet_id, e.released, e.identifiers)
            for e in stored.entries] == [(2, False, 5, True, 7), (1, True, 0, False, 0),
                                         (1, False, 0, False, 0)]
    assert [e.seq for e in stored.entries] == [1, 2, 3]  # the order they go out in
    first, second, third = (messages[e.message_id] for e in stored.entries)
    assert first is third
    assert (first.cluster_id, second.cluster_id) == (1 << 40 | 3, 0)
    assert (first.topic, first.payload, first.qos) == ("a/1", b"\x00\xffbinary", 2)
    assert first.properties is not None and first.properties.content_type == "text/plain"
    # 10 of its 60 s were used up before the move: 50 are left after it.
    assert first.properties.message_expiry_interval == 60
    assert first.created == 200.0 - 10.0
    assert (second.topic, second.payload, second.retain, second.properties) == (
        "b/2", b"plain", True, None)
