"""A session's state as it crosses from one cluster node to another (core/session_moves.py):
exported to JSON and rebuilt, it is the session it was; and a sans-I/O member that gets a
session in parts, in an order that real nodes produce only now and then
(tests/cluster/test_session_moves.py moves real sessions between real nodes)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from culex.core.broker import Broker
from culex.core.message import Message
from culex.core.node_links import ClusterSetup
from culex.core.outgoing import Outgoing
from culex.core.ports import Claim
from culex.core.publish_records import encode_publish
from culex.core.session import Session
from culex.core.session_state import SESSIONS, export_session, import_session
from culex.core.worker_links import PUBLISH, SERVICE, WorkerLinks, record, split_records
from culex.protocol.codec import encode_connect
from culex.protocol.packets import Connack, Connect, Packet, Pubcomp, Publish, Pubrec, Pubrel
from culex.protocol.properties import Properties
from culex.storage.base import StoredSession, TakenSession
from tests.unit.core_helpers import FakeClient, FakeSink, Harness, payloads


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


class Directory:
    """The cluster's directory of client ids, in memory: `held` ids are another member's."""

    def __init__(self, held: dict[str, Claim], elsewhere: dict[str, int] | None = None
                 ) -> None:
        self.held = held
        self.elsewhere = elsewhere or {}  # the latest claims, other members'
        self.asked: list[str] = []
        # Member name -> the records of its stream it has not applied (it is down).
        self.streams: dict[str, list[bytes]] = {}

    def claim(self, client_id: str, done: Callable[[Claim], None]) -> None:
        done(self.held.get(client_id, Claim(1)))

    def take(self, client_id: str, holder: str,
             done: Callable[[TakenSession | None], None]) -> None:
        done(None)

    def release(self, client_id: str, token: int) -> None:
        pass

    def held_elsewhere(self, client_id: str,
                       done: Callable[[dict[str, int | None]], None]) -> None:
        self.asked.append(client_id)
        done({client_id: self.elsewhere[client_id]} if client_id in self.elsewhere else {})

    def unapplied(self, holder: str, read: Callable[[list[bytes], bool], None]) -> None:
        for entry in self.streams.get(holder, []):  # a chunk per entry
            read([entry], False)
        read([], True)


def session_record(op: str, token: int, state: dict[str, Any] | None, *,
                   client: str = "pub") -> bytes:
    """A record of session_moves.py as another member sends it."""
    return record(SERVICE, bytes((SESSIONS,)) + json.dumps(
        {"op": op, "client": client, "token": token, "session": state, "keep": True}
    ).encode())


def state(awaiting_release: list[int], in_flight: list[tuple[int, bytes, bool]],
          admitted: int = 0) -> dict[str, Any]:
    """`export_session`'s form of a publisher's session: QoS 2 messages in flight (PUBLISH
    sent, or PUBREL after their PUBREC), inbound QoS 2 ids awaiting their release, and the
    claim its client was last let in under (0: not known)."""
    return {"expiry": 0xFFFFFFFF, "username": None, "owner_known": True, "subscriptions": {},
            "awaiting_release": awaiting_release, "admitted": admitted,
            "messages": [{"id": 1 << 40 | packet_id, "topic": "back", "qos": 2,
                          "retain": False, "payload": base64.b64encode(payload).decode(),
                          "properties": "", "expires_in": None}
                         for packet_id, payload, _ in in_flight],
            "entries": [[index, 2, 0, packet_id, int(released), 0]
                        for index, (packet_id, _, released) in enumerate(in_flight)]}


def offline_subscriber(node: Harness, qos: int) -> None:
    """`sub`: a persistent session on `node`, subscribed to `news` at `qos`, its client gone."""
    subscriber = node.connected("sub", clean_session=False)
    assert subscriber.subscribe(("news", qos)) == [qos]
    subscriber.disconnect()


def handed_to(other: int, node: Harness, qos: int) -> tuple[dict[int, FakeSink], WorkerLinks]:
    """`node`, linked, with `sub`'s session (subscribed to `news` at `qos`) taken by member
    `other` under claim 5: what `node` keeps of it collects until that move settles."""
    offline_subscriber(node, qos)
    sinks = linked(node)
    links = node.broker.links
    assert links is not None
    links.data_received(other, session_record("take", 5, None, client="sub"), 0.0)
    return sinks, links


def member(number: int, directory: Directory, answer_timeout: float = 10.0) -> Harness:
    """A sans-I/O broker that is member `number` of a cluster."""
    node = Harness()
    node.broker = Broker(cluster=ClusterSetup(number, lambda lost: None, directory=directory,
                                              answer_timeout=answer_timeout))
    return node


def linked(node: Harness) -> dict[int, FakeSink]:
    """Link `node` to members 1 and 3: what it sends each."""
    links = node.broker.links
    assert links is not None
    sinks = {other: FakeSink() for other in (1, 3)}
    for other, sink in sinks.items():
        links.attach(other, sink, 0.0)
    moves = node.broker.moves
    assert moves is not None
    moves.answer_held()  # as the server does once it has read what its stream held
    return sinks


def sent_sessions(sink: FakeSink) -> list[dict[str, Any]]:
    """The session records written to `sink`."""
    found: list[tuple[int, bytes]] = []
    split_records(bytes(sink.data), found)
    return [json.loads(body[1:]) for kind, body in found
            if kind == SERVICE and body[0] == SESSIONS]


def test_a_session_that_comes_for_a_claim_given_up_follows_the_id() -> None:
    """Member 4, started again, gets the session it asked member 3 for before it went down;
    member 1 claimed the id meanwhile: the session goes on there, and what comes after it
    here (its REST) follows once member 1 says every member routes the session there."""
    directory = Directory({}, elsewhere={"pub": 1})
    node = member(4, directory)
    sinks = linked(node)
    links = node.broker.links
    assert links is not None
    links.data_received(3, session_record("moved", 5, state([7], [(9, b"sent", False)])), 0.0)
    links.data_received(3, session_record("rest", 5, state([], [(10, b"later", False)])), 0.0)
    links.data_received(1, session_record("settled", 0, None), 0.0)
    node.broker.flush()
    assert directory.asked == ["pub"]
    sent = sent_sessions(sinks[1])
    assert [(record["op"], record["token"]) for record in sent] == [("moved", 0), ("rest", 0)]
    # It comes late (member 4 started again since its claim): its packet state stays behind.
    assert sent[0]["session"]["awaiting_release"] == []
    assert [[base64.b64decode(message["payload"]) for message in record["session"]["messages"]]
            for record in sent] == [[b"sent"], [b"later"]]
    assert node.broker.sessions.get("pub") is None  # it went on


def test_a_session_in_parts_keeps_only_the_packet_state_it_can_rely_on() -> None:
    """Member 4 asked member 3 for the session of `pub` (its CONNECT held). The session
    comes, then a part of it from member 1, which let go of it on starting again: it still
    awaits the release of inbound id 7, and has two QoS 2 messages in flight to the client,
    one of them released (PUBREC came); but the client has been elsewhere since. The
    inbound id is not kept: the client's next message under id 7 is
    routed (not taken for a duplicate). What is in flight keeps its packet id, since the
    client holds its side of it until the PUBREL: PUBLISH 9 again, PUBREL 10."""
    directory = Directory({"pub": Claim(5, 3, "node-b")})
    node = member(4, directory)
    links = node.broker.links
    assert links is not None
    watcher = node.connected("watcher")
    assert watcher.subscribe(("t", 0)) == [0]  # before the links: no barrier to wait for
    sinks = linked(node)

    client = node.client()
    client.send(encode_connect(Connect("pub", "MQTT", 4, False, 0, None)))
    node.broker.flush()
    assert client.received_packets() == []  # held until member 3 answers
    assert [record["op"] for record in sent_sessions(sinks[3])] == ["take"]
    links.data_received(3, session_record("moved", 5, state([], [])), 0.0)
    stale = state([7], [(9, b"in flight", False), (10, b"released", True)])
    links.data_received(1, session_record("moved", 0, stale), 0.0)
    links.data_received(3, session_record("rest", 5, None), 0.0)

    packets = client.received_packets()
    assert packets[0] == Connack(True, 0)
    assert [(p.payload, p.packet_id) for p in packets if isinstance(p, Publish)] == [
        (b"in flight", 9)]
    assert Pubrel(10) in packets
    assert len(packets) == 3
    client.publish("t", b"new", qos=2, packet_id=7)  # id 7 was released elsewhere since
    assert client.received_packets() == [Pubrec(7)]
    assert payloads(watcher.received_packets()) == [b"new"]
    assert directory.asked == []


@pytest.mark.parametrize(("holder", "record_op"), [(1, "rest"), (3, "moved")])
def test_a_move_that_does_not_settle_hands_on_what_came_meanwhile(
        holder: int, record_op: str) -> None:
    """Member 4 handed the session of `sub` to member 1, which never says SETTLED (it
    started again, or died). After `answer_timeout` what came for `sub` here meanwhile goes
    to whoever holds the id then: member 1 (as REST), or member 3, which claimed it since
    (as `let_go` sends it, then collecting until member 3 says SETTLED), and the session
    ends here."""
    directory = Directory({}, elsewhere={"sub": holder})
    node = member(4, directory)
    sinks, links = handed_to(1, node, 1)
    node.connected("publisher").publish("news", b"meanwhile", qos=1)
    node.tick(5.0)
    assert [(r["op"], r["token"]) for r in sent_sessions(sinks[1])] == [("moved", 5)]
    node.tick(11.0)  # past answer_timeout (10 s): no SETTLED came
    sent = sent_sessions(sinks[holder])[-1]
    assert (sent["op"], sent["token"]) == (record_op, 5 if record_op == "rest" else 0)
    assert [base64.b64decode(m["payload"]) for m in sent["session"]["messages"]] == [
        b"meanwhile"]
    if record_op == "moved":
        links.data_received(3, session_record("settled", 0, None, client="sub"), 11.0)
    assert node.broker.sessions.get("sub") is None


def let_in_without_answer(node: Harness) -> tuple[FakeClient, list[Packet]]:
    """`pub` connects to `node`, which asks member 3 for its session, and is let in once the
    answer has not come within `answer_timeout` (2 s): the client, and what it was sent
    after the CONNACK."""
    client = node.client()
    client.send(encode_connect(Connect("pub", "MQTT", 4, False, 0, None)))
    node.tick(3.0)
    packets = client.received_packets()
    assert packets[0] == Connack(True, 0)
    return client, packets[1:]


def test_what_a_session_held_when_its_client_was_let_in_early_is_not_given_again() -> None:
    """Member 4 has a part of `pub`'s session (sent by member 1, which let go of it) with a
    message queued; `pub` connects, and member 3, asked for the rest, does not answer in
    time: the client is let in with what is here. The session member 3 sends later holds
    the same message: it is not delivered again."""
    directory = Directory({"pub": Claim(5, 3, "node-b")})
    node = member(4, directory, answer_timeout=2.0)
    sinks = linked(node)
    links = node.broker.links
    assert links is not None
    part = state([], [(0, b"queued", False)])
    part["subscriptions"] = {"news": 1}
    links.data_received(1, session_record("moved", 0, part), 0.0)
    client, sent = let_in_without_answer(node)
    assert [(p.payload, p.qos) for p in sent if isinstance(p, Publish)] == [(b"queued", 2)]
    client.ack_all(sent)
    client.pubcomp(1)
    links.data_received(3, session_record("moved", 5, part), 3.0)
    node.tick(4.0)
    assert [p for p in client.received_packets() if isinstance(p, Publish)] == []
    assert [record["op"] for record in sent_sessions(sinks[3])] == ["take"]


def test_a_session_whose_part_may_still_come_remembers_what_it_gave() -> None:
    """Member 3 hands `pub`'s session to member 4 before its own move of it had settled (a
    part may still come from where it came from): member 4 remembers what it gives the
    client, so that part, when it comes, does not give a message again."""
    directory = Directory({"pub": Claim(5, 3, "node-b")})
    node = member(4, directory)
    linked(node)
    links = node.broker.links
    assert links is not None
    client = node.client()
    client.send(encode_connect(Connect("pub", "MQTT", 4, False, 0, None)))
    moved = state([], [(0, b"queued", False)])
    moved["unfinished"] = True
    links.data_received(3, session_record("moved", 5, moved), 0.0)
    links.data_received(3, session_record("rest", 5, None), 0.0)
    packets = client.received_packets()
    assert packets[0] == Connack(True, 0)
    assert [p.payload for p in packets[1:] if isinstance(p, Publish)] == [b"queued"]
    client.ack_all(packets[1:])
    client.pubcomp(1)
    part = state([], [(0, b"queued", False)])  # the same message, from the earlier holder
    links.data_received(1, session_record("moved", 0, part), 0.0)
    assert [p for p in client.received_packets() if isinstance(p, Publish)] == []


def held_publisher(watched_qos: int | None = None
                   ) -> tuple[Harness, WorkerLinks, FakeClient, FakeClient | None]:
    """Member 4, linked, and `pub` connecting to it, which asks member 3 for its session: the
    CONNECT is held. With `watched_qos`, a client of member 4 subscribed to `t` at it."""
    node = member(4, Directory({"pub": Claim(5, 3, "node-b")}))
    links = node.broker.links
    assert links is not None
    watcher = None
    if watched_qos is not None:
        watcher = node.connected("watcher")
        assert watcher.subscribe(("t", watched_qos)) == [watched_qos]
    sinks = linked(node)
    client = node.client()
    client.send(encode_connect(Connect("pub", "MQTT", 4, False, 0, None)))
    node.broker.flush()
    assert client.received_packets() == []
    assert [record["op"] for record in sent_sessions(sinks[3])] == ["take"]
    return node, links, client, watcher


def test_a_late_part_let_in_later_than_any_other_brings_its_inbound_state() -> None:
    """`pub` was let in on member 1 under claim 2 and sent QoS 2 message 7, routed there
    (PUBREC lost). Member 1 died; `pub` tried member 3, which asked member 1 and waited, then
    member 4, which asks member 3. Member 1, back, lets go of the session: it comes to member
    4 late (not member 3's answer), but let in under a later claim than any other part, so
    its inbound id 7 is kept. Member 3's answer, what member 1 sent it, adds nothing. `pub`
    sends 7 again: acknowledged, not routed a second time."""
    node, links, client, watcher = held_publisher(2)
    assert watcher is not None
    links.data_received(1, session_record("moved", 0, state([7], [], admitted=2)), 0.0)
    links.data_received(3, session_record("moved", 5, state([7], [], admitted=2)), 0.0)
    links.data_received(3, session_record("rest", 5, None), 0.0)
    assert client.received_packets() == [Connack(True, 0)]
    client.publish("t", b"again", qos=2, packet_id=7, dup=True)
    assert client.received_packets() == [Pubrec(7)]
    assert watcher.received_packets() == []
    session = node.broker.sessions.get("pub")
    assert session is not None and session.admitted == 5  # let in here under claim 5


def test_a_part_let_in_later_replaces_the_inbound_state_an_earlier_one_brought() -> None:
    """Member 4 adopts a late part of `pub` let in under claim 2 (id 7 awaiting release);
    then one let in under claim 3 comes, where the client released 7 and sent 8: 8 is what
    it goes on from. A part let in under claim 1 that comes after adds nothing."""
    node, links, client, _ = held_publisher()
    links.data_received(1, session_record("moved", 0, state([7], [], admitted=2)), 0.0)
    links.data_received(3, session_record("moved", 5, state([8], [], admitted=3)), 0.0)
    links.data_received(1, session_record("moved", 0, state([9], [], admitted=1)), 0.0)
    session = node.broker.sessions.get("pub")
    assert session is not None and (session.awaiting_release, session.admitted) == ({8}, 3)
    links.data_received(3, session_record("rest", 5, None), 0.0)
    assert client.received_packets() == [Connack(True, 0)]
    assert session.admitted == 5


def test_a_part_let_in_earlier_than_the_client_here_brings_no_inbound_state() -> None:
    """`pub` is let in on member 4 under claim 5, with nothing awaiting release. A part of
    its session let in under claim 2 comes late with id 7 awaiting release: the client may
    have released 7 elsewhere since, so 7 is not kept, and its next message under 7 is
    routed."""
    _, links, client, watcher = held_publisher(0)
    assert watcher is not None
    links.data_received(3, session_record("moved", 5, state([], [], admitted=3)), 0.0)
    links.data_received(3, session_record("rest", 5, None), 0.0)
    assert client.received_packets() == [Connack(True, 0)]
    links.data_received(1, session_record("moved", 0, state([7], [], admitted=2)), 0.0)
    client.publish("t", b"new", qos=2, packet_id=7)
    assert client.received_packets() == [Pubrec(7)]
    assert payloads(watcher.received_packets()) == [b"new"]


def test_a_session_restored_while_a_part_may_still_come_remembers_and_says_so() -> None:
    """Member 4 started again with `sub`, which came by a move whose REST had not come
    (stored as unfinished, with what it was given before the restart). It remembers what the
    session is given, and when member 1 takes the session, says that a part may still come
    and what it was given, so member 1 remembers too."""
    node = member(4, Directory({}))
    offline_subscriber(node, 1)
    moves = node.broker.moves
    assert moves is not None
    moves.restored([StoredSession("sub", unfinished=True, given={42}),
                    StoredSession("other")])
    session = node.broker.sessions.get("sub")
    assert session is not None and session.seen == {42}
    sinks = linked(node)
    links = node.broker.links
    assert links is not None
    links.data_received(1, session_record("take", 5, None, client="sub"), 0.0)
    node.broker.flush()
    [moved] = sent_sessions(sinks[1])
    assert (moved["op"], moved["session"]["unfinished"], moved["session"]["given"]) == (
        "moved", True, [42])


def test_parts_of_one_connections_state_bring_its_inbound_ids_together() -> None:
    """`pub` was let in on member 1 under claim 2 and left ids 7 and 8 awaiting release.
    Member 1 gave that state whole to member 3 (which asked, then died), and then, letting
    go, what was left of it (no ids) to member 4, where `pub` now connects. Member 3's part,
    when it comes, brings 7 and 8: `pub` sends 8 again, acknowledged but not routed twice."""
    _, links, client, watcher = held_publisher(2)
    assert watcher is not None
    links.data_received(1, session_record("moved", 0, state([], [], admitted=2)), 0.0)
    links.data_received(3, session_record("moved", 5, state([7, 8], [], admitted=2)), 0.0)
    links.data_received(3, session_record("rest", 5, None), 0.0)
    assert client.received_packets() == [Connack(True, 0)]
    client.publish("t", b"again", qos=2, packet_id=8, dup=True)
    assert client.received_packets() == [Pubrec(8)]
    assert watcher.received_packets() == []


def test_what_a_later_holder_gave_is_not_given_again_by_a_copy_still_collecting() -> None:
    """Member 4 handed `sub`'s session to member 1, whose move never settled (it died before
    it routed the session): member 4's copy goes on collecting, and gets message M. The
    session went on from member 1 to member 3, which gave M to the client, completed. `sub`
    comes back to member 4, which asks member 3: its session says what member 3 gave since
    the move, so M, collected here, is not given again."""
    directory = Directory({})
    node = member(4, directory)
    sinks, links = handed_to(1, node, 2)
    publisher = node.connected("pub")
    publisher.publish("news", b"M", qos=1, packet_id=1)
    node.broker.flush()
    session = node.broker.sessions.get("sub")
    assert session is not None and [entry.message.payload for entry in session.queue] == [b"M"]
    given = session.queue[0].message.cluster_id
    directory.held["sub"] = Claim(9, 3, "node-b")
    client = node.client()
    client.send(encode_connect(Connect("sub", "MQTT", 4, False, 0, None)))
    node.broker.flush()
    assert [record["op"] for record in sent_sessions(sinks[3])] == ["take"]
    moved = state([], [], admitted=7)
    moved.update(subscriptions={"news": 2}, unfinished=True, given=[given])
    links.data_received(3, session_record("moved", 9, moved, client="sub"), 0.0)
    links.data_received(3, session_record("rest", 9, None, client="sub"), 0.0)
    packets = client.received_packets()
    assert packets[0] == Connack(True, 0)
    assert [p for p in packets[1:] if isinstance(p, Publish)] == []


def test_a_message_in_flight_there_and_queued_here_resumes_under_its_packet_id() -> None:
    """As above, but member 3 had M in flight to the client under packet id 36 (PUBLISH sent,
    no PUBREC yet): the copy queued here goes, and M resumes under 36, so the client, which
    holds 36, takes it for the same message rather than a new one."""
    directory = Directory({})
    node = member(4, directory)
    _, links = handed_to(1, node, 2)
    node.connected("pub").publish("news", b"M", qos=2, packet_id=1)
    node.broker.flush()
    session = node.broker.sessions.get("sub")
    assert session is not None
    cluster_id = session.queue[0].message.cluster_id
    directory.held["sub"] = Claim(9, 3, "node-b")
    client = node.client()
    client.send(encode_connect(Connect("sub", "MQTT", 4, False, 0, None)))
    moved = state([], [(36, b"M", False)], admitted=7)
    moved["messages"][0]["id"] = cluster_id
    moved.update(subscriptions={"news": 2}, unfinished=True)
    links.data_received(3, session_record("moved", 9, moved, client="sub"), 0.0)
    links.data_received(3, session_record("rest", 9, None, client="sub"), 0.0)
    packets = client.received_packets()
    assert packets[0] == Connack(True, 0)
    assert [(p.payload, p.packet_id, p.dup) for p in packets[1:] if isinstance(p, Publish)] == [
        (b"M", 36, True)]



class Wire:
    """Two members linked to each other, with what each writes for the other carried over
    on demand."""

    def __init__(self, first: Harness, first_index: int, second: Harness,
                 second_index: int) -> None:
        self._ends = [(first, first_index, FakeSink()), (second, second_index, FakeSink())]
        self._carried = [0, 0]
        for side, (node, _index, sink) in enumerate(self._ends):
            links, moves = node.broker.links, node.broker.moves
            assert links is not None and moves is not None
            links.attach(self._ends[1 - side][1], sink, 0.0)
            moves.answer_held()

    def carry(self, side: int) -> bool:
        """What the member at `side` (0 or 1) wrote since, to the other; False: nothing."""
        _node, index, sink = self._ends[side]
        new = bytes(sink.data[self._carried[side]:])
        self._carried[side] += len(new)
        if new:
            into = self._ends[1 - side][0]
            links = into.broker.links
            assert links is not None
            links.data_received(index, new, into.now)
            into.broker.flush()
        return bool(new)

    def settle(self) -> None:
        while self.carry(0) | self.carry(1):
            pass


def test_what_a_session_handed_on_is_not_taken_for_given_by_the_rest_that_follows() -> None:
    """Member 4 holds `sub`'s session, remembering what it is given (a part of it may still
    come): M1 is queued. Member 1 takes the session (M1 goes with it); M2 reaches member 4
    before member 1 routes the session, and follows as the REST. The client, let in on
    member 1, gets both: M1, which member 4 handed on rather than gave, is not dropped."""
    old = member(4, Directory({}))
    subscriber = old.connected("sub", clean_session=False)
    assert subscriber.subscribe(("news", 1)) == [1]
    subscriber.disconnect()
    old_moves = old.broker.moves
    assert old_moves is not None
    old_moves.restored([StoredSession("sub", unfinished=True)])
    publisher = old.connected("pub")
    publisher.publish("news", b"M1", qos=1, packet_id=1)
    new = member(1, Directory({"sub": Claim(9, 4, "node-a")}))
    wire = Wire(old, 4, new, 1)
    wire.settle()
    client = new.client()
    client.send(encode_connect(Connect("sub", "MQTT", 4, False, 0, None)))
    new.broker.flush()
    assert wire.carry(1)  # the TAKE: M1 goes in the MOVED
    publisher.publish("news", b"M2", qos=1, packet_id=2)
    wire.settle()
    packets = client.received_packets()
    assert packets[0] == Connack(True, 0)
    assert sorted(p.payload for p in packets[1:] if isinstance(p, Publish)) == [b"M1", b"M2"]


def test_what_a_dead_members_stream_holds_for_a_session_taken_from_it_comes_at_once() -> None:
    """Member 3 is down; `sub`'s session is taken from its store, and once every member routes
    it here, what member 3's stream holds for it (M1, M2; not what matches nothing of it, nor
    a QoS 0 copy) is delivered after the CONNACK, without waiting for member 3, but for what
    came here directly too (M2, from member 1, which routed it both ways), and what comes
    directly after it (M1 from member 1). When member 3 is back and sends what it got (its
    REST, M1 again), nothing comes twice."""
    taken = StoredSession("sub", subscriptions={"news/#": 1})
    directory = Directory({"sub": Claim(9, None, "node-b", (taken, {}), 3)})
    now = 0.0

    def published(topic: str, payload: bytes, cluster_id: int, qos: int = 1) -> bytes:
        return record(PUBLISH, encode_publish(Message(topic, payload, qos, False),
                                              cluster_id, None, now))

    directory.streams["node-b"] = [
        published("news/a", b"M1", 1 << 40 | 1) + published("other", b"not", 1 << 40 | 2),
        published("news/b", b"M2", 1 << 40 | 3) + published("news/c", b"q0", 1 << 40 | 4, 0)]
    node = member(4, directory)
    links, moves = node.broker.links, node.broker.moves
    assert links is not None and moves is not None
    links.attach(3, FakeSink(), now)
    links.attach(1, FakeSink(), now)
    moves.answer_held()
    client = node.client()
    client.send(encode_connect(Connect("sub", "MQTT", 4, False, 0, None)))
    links.data_received(1, published("news/b", b"M2", 1 << 40 | 3), now)
    for _ in range(3):  # the routes, then SETTLED: in member 3's stream, as it is down
        node.broker.flush()
        links.release_barriers(3)
        links.release_barriers(1)
    packets = client.received_packets()
    assert packets[0] == Connack(True, 0)
    assert [p.payload for p in packets[1:] if isinstance(p, Publish)] == [b"M2", b"M1"]
    client.ack_all(packets[1:])
    # M1's copy from member 1 (routed both ways, and slower than the stream's), then member
    # 3's REST: both come too late to be given.
    links.data_received(1, published("news/a", b"M1", 1 << 40 | 1), now)
    rest = state([], [(0, b"M1", False)])
    rest["messages"][0].update(id=1 << 40 | 1, topic="news/a", qos=1)
    links.data_received(3, session_record("rest", 9, rest, client="sub"), now)
    assert [p for p in client.received_packets() if isinstance(p, Publish)] == []


def rest_payloads(sink: FakeSink) -> list[bytes]:
    """The payloads of the messages in the one REST written to `sink`."""
    [rest] = [r for r in sent_sessions(sink) if r["op"] == "rest"]
    return [base64.b64decode(m["payload"]) for m in rest["session"]["messages"]]


def routed(node: Harness, *members: int) -> None:
    """What waits for `members` to route the subscriptions added here goes on (as when
    they are down and everything sent to them is in their streams)."""
    links = node.broker.links
    assert links is not None
    for _ in range(3):
        node.broker.flush()
        for other in members:
            links.release_barriers(other)


def test_a_session_let_go_before_its_move_settled_passes_the_settled_on() -> None:
    """Member 4 got `sub`'s session from member 3 under claim 5, and lets go of it (member 1
    claimed the id) before every member routes it here: member 4 does not send SETTLED to
    member 3, whose copy would stop collecting while some member still routes the session
    here, where nothing collects any more; the session goes to member 1 owing it."""
    node, links, _client, _ = held_publisher()
    moved = state([], [])
    moved["subscriptions"] = {"news": 1}
    links.data_received(3, session_record("moved", 5, moved), 0.0)
    moves = node.broker.moves
    assert moves is not None
    moves.let_go({"pub": 1})
    routed(node, 1, 3)
    sinks = {index: link.sink for index, link in links.links.items()}
    assert isinstance(sinks[1], FakeSink) and isinstance(sinks[3], FakeSink)
    [handed] = [r for r in sent_sessions(sinks[1]) if r["op"] == "moved"]
    assert handed["session"]["settle"] == [[3, 5]]
    assert [r["op"] for r in sent_sessions(sinks[3])] == ["take"]


@pytest.mark.parametrize("op", ["moved", "rest"])
def test_a_session_that_comes_owing_a_settled_sends_it_once_routed_here(op: str) -> None:
    """`sub`'s session comes to member 4 from member 1 owing member 3 the SETTLED of claim
    5 (member 1 let go of it, or ended its copy at the SETTLED of its own move, with the
    session here): once every member routes it here, member 4 sends it, and adds the REST
    member 3 answers with, but for what it has. Member 1, which let go of it and collects
    for it meanwhile, is sent SETTLED too (claim 0)."""
    node = member(4, Directory({}))
    if op == "rest":
        offline_subscriber(node, 1)
    sinks = linked(node)
    links = node.broker.links
    assert links is not None
    part = state([], [])
    part.update(subscriptions={"news": 1}, settle=[[3, 5]], collecting=op == "moved")
    links.data_received(1, session_record(op, 0 if op == "moved" else 7, part, client="sub"),
                        0.0)
    routed(node, 1, 3)
    assert [(r["op"], r["token"]) for r in sent_sessions(sinks[3])] == [("settled", 5)]
    if op == "moved":  # member 1 collects for it too, until told every member routes here
        assert [(r["op"], r["token"]) for r in sent_sessions(sinks[1])] == [("settled", 0)]
    rest = state([], [(0, b"collected", False)])
    rest["messages"][0].update(topic="news", qos=1)
    links.data_received(3, session_record("rest", 5, rest, client="sub"), 0.0)
    session = node.broker.sessions.get("sub")
    assert session is not None and [e.message.payload for e in session.queue] == [b"collected"]


def test_a_copy_collecting_ends_at_the_settled_of_its_move_from_whoever_sends_it() -> None:
    """Member 4 handed `sub`'s session to member 3 under claim 5 and collects M meanwhile;
    member 3 let go of the session to member 1 before settling, so the SETTLED of claim 5
    comes from member 1: the copy ends, and M goes to member 1."""
    node = member(4, Directory({}))
    sinks, links = handed_to(3, node, 1)
    node.connected("pub").publish("news", b"M", qos=1, packet_id=1)
    links.data_received(1, session_record("settled", 5, None, client="sub"), 0.0)
    node.broker.flush()
    assert rest_payloads(sinks[1]) == [b"M"]
    assert node.broker.sessions.get("sub") is None


def test_a_session_let_go_keeps_collecting_until_its_new_holder_routes_it() -> None:
    """Member 4 lets go of `sub` (member 1 claimed it while member 4 was cut off). Member 3
    does not route `news` to member 1 yet, so M goes to member 4 only: member 4 keeps
    collecting for the session until member 1 says every member routes it there, and M
    follows; it is not dropped for want of a session."""
    node = member(4, Directory({}))
    offline_subscriber(node, 1)
    sinks = linked(node)
    links, moves = node.broker.links, node.broker.moves
    assert links is not None and moves is not None
    moves.let_go({"sub": 1})
    node.broker.flush()
    [moved] = sent_sessions(sinks[1])
    assert (moved["op"], moved["token"]) == ("moved", 0)
    links.data_received(3, record(PUBLISH, encode_publish(Message("news", b"M", 1, False),
                                                          1 << 40 | 9, None, 0.0)), 0.0)
    links.data_received(1, session_record("settled", 0, None, client="sub"), 0.0)
    node.broker.flush()
    assert rest_payloads(sinks[1]) == [b"M"]
    assert node.broker.sessions.get("sub") is None


def test_a_session_on_its_way_to_a_silent_holder_is_read_from_its_stream() -> None:
    """`pub` was let in on member 1 under claim 2, sent QoS 2 message 7 (routed there, PUBREC
    lost), and member 1 sent its session (and a message queued for it) to member 3 under
    claim 4; member 3 died before it applied that. `pub` connects to member 4, which asks
    member 3: no answer in time, and nothing in its store. What member 3's stream holds for
    the session is read: the client is let in with its subscriptions, its queued message and
    its inbound id 7, so 7 sent again is acknowledged, not routed a second time. When member
    3, back, sends the session on, nothing comes twice."""
    directory = Directory({"pub": Claim(5, 3, "node-b")})
    part = state([7], [(0, b"queued", False), (9, b"in flight", False)], admitted=2)
    part["subscriptions"] = {"back": 2}
    other = state([8], [], admitted=3)
    other["subscriptions"] = {"pub": 1}  # another session's record that names `pub`
    directory.streams["node-b"] = [session_record("take", 3, None, client="other"),
                                   session_record("moved", 3, other, client="other")
                                   + session_record("moved", 4, part)]
    node = member(4, directory, answer_timeout=2.0)
    watcher = node.connected("watcher")
    assert watcher.subscribe(("t", 2)) == [2]
    links = node.broker.links
    assert links is not None
    sinks = linked(node)
    client, sent = let_in_without_answer(node)
    # What is in flight there comes with the session itself.
    assert [(p.payload, p.qos) for p in sent if isinstance(p, Publish)] == [(b"queued", 2)]
    client.ack_all(sent)
    client.ack_all(client.received_packets())  # PUBCOMP
    client.publish("t", b"again", qos=2, packet_id=7, dup=True)
    assert client.received_packets() == [Pubrec(7)]
    assert watcher.received_packets() == []
    session = node.broker.sessions.get("pub")
    assert session is not None and session.subscriptions == {"back": 2}
    assert "other" not in node.broker.sessions.ids()
    client.pubrel(7)
    assert client.received_packets() == [Pubcomp(7)]
    links.data_received(3, session_record("moved", 5, part), 3.0)
    routed(node, 1, 3)
    assert [record["op"] for record in sent_sessions(sinks[3])] == ["take", "settled"]
    links.data_received(3, session_record("rest", 5, None), 3.0)
    assert [(p.payload, p.packet_id, p.dup) for p in client.received_packets()
            if isinstance(p, Publish)] == [(b"in flight", 9, True)]
    client.publish("t", b"new", qos=2, packet_id=7)
    assert client.received_packets() == [Pubrec(7)]
    assert payloads(watcher.received_packets()) == [b"new"]


def test_what_reached_the_old_member_during_a_move_comes_before_what_came_here_after() -> None:
    """Member 4 takes `sub` from member 3: M1 was queued there. While the move goes on, M2
    reaches member 3 only (member 1 does not route `news` here yet); then M3 comes here
    directly (and there too). Member 3's REST brings M2 (and M3, dropped here as a copy): the
    client gets M1, M2, M3, in the order they were published."""
    directory = Directory({"sub": Claim(9, 3, "node-b")})
    node = member(4, directory)
    sinks = linked(node)
    links = node.broker.links
    assert links is not None
    client = node.client()
    client.send(encode_connect(Connect("sub", "MQTT", 4, False, 0, None)))
    node.broker.flush()

    def message(payload: bytes, number: int) -> dict[str, Any]:
        return {"id": 1 << 40 | number, "topic": "news", "qos": 1, "retain": False,
                "payload": base64.b64encode(payload).decode(), "properties": "",
                "expires_in": None}

    moved = state([], [], admitted=7)
    moved.update(subscriptions={"news": 1}, messages=[message(b"M1", 1)],
                 entries=[[0, 1, 0, 0, 0, 0]])
    links.data_received(3, session_record("moved", 9, moved, client="sub"), 0.0)
    routed(node, 1, 3)
    assert [record["op"] for record in sent_sessions(sinks[3])] == ["take", "settled"]
    links.data_received(1, record(PUBLISH, encode_publish(Message("news", b"M3", 1, False),
                                                          1 << 40 | 3, None, 0.0)), 0.0)
    rest = state([], [])
    rest.update(messages=[message(b"M2", 2), message(b"M3", 3)],
                entries=[[0, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    links.data_received(3, session_record("rest", 9, rest, client="sub"), 0.0)
    packets = client.received_packets()
    assert packets[0] == Connack(True, 0)
    assert payloads(packets[1:]) == [b"M1", b"M2", b"M3"]
