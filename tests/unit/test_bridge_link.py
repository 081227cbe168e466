"""A bridge's link driven by hand: the broker core with fake sinks, the remote played by the
test with exact packets, time passed in. What the link sends the remote and what local
clients get are checked packet by packet (culex/bridge/link.py, bridge.py)."""

from __future__ import annotations

from typing import Any

import pytest

from culex.auth.acl import AclRules
from culex.bridge.bridge import Bridge, install_bridges
from culex.bridge.link import BridgeLink
from culex.bridge.settings import parse_bridge
from culex.core.bridges import bridge_client_id
from culex.core.limits import Limits
from culex.core.session import Session
from culex.protocol.codec import decode_packet, encode_packet
from culex.protocol.packets import (
    Connack,
    Connect,
    Packet,
    Pingreq,
    Puback,
    Publish,
    Subscribe,
)
from culex.protocol.packets5 import (
    Connack5,
    Connect5,
    Disconnect5,
    Packet5,
    Puback5,
    Pubcomp5,
    Publish5,
    Pubrec5,
    Pubrel5,
    Subscribe5,
)
from culex.protocol.properties import Properties
from culex.protocol.reader import FrameReader
from culex.protocol.v5 import decode_packet_v5, encode_packet_v5
from tests.unit.core_helpers import FakeSink, Harness

TOPICS = [
    {"pattern": "sensors/#", "direction": "out", "qos": 2, "remote_prefix": "site/"},
    {"pattern": "cmd/#", "direction": "in", "qos": 2, "local_prefix": "remote/"},
    {"pattern": "both/#", "direction": "both", "qos": 1},
]


class Remote:
    """The remote broker's end of one connection: what the link sent it, decoded as a server
    decodes, and packets to send back."""

    def __init__(self, harness: Harness, bridge: Bridge, *, v5: bool = True) -> None:
        self.harness = harness
        self.v5 = v5
        self.sink = FakeSink()
        self.ended: list[tuple[str, float | None]] = []
        self.link: BridgeLink = bridge.open(self.sink, "remote:1883", harness.now, None,
                                            lambda error, lasted: self.ended.append(
                                                (error, lasted)))
        self._reader = FrameReader(10**9, connect_only=False)
        self._read = 0
        self.connect: Packet | Packet5 | None = None

    def received(self) -> list[Packet | Packet5]:
        self.harness.broker.flush()
        data = bytes(self.sink.data[self._read:])
        self._read = len(self.sink.data)
        frames = self._reader.feed(data)
        if self.v5:
            return [decode_packet_v5(*frame) for frame in frames]
        return [decode_packet(*frame) for frame in frames]

    def send(self, packet: Any) -> None:
        data = encode_packet_v5(packet) if self.v5 else encode_packet(packet)
        self.link.data_received(data, self.harness.now)
        self.harness.broker.flush()

    def accept(self, session_present: bool = False, **properties: Any) -> list[Packet | Packet5]:
        """CONNACK 0; returns what the link sent after it (SUBSCRIBE, the backlog)."""
        connect = self.received()
        assert len(connect) == 1 and isinstance(connect[0], Connect5 | Connect), connect
        self.connect = connect[0]
        self.send(Connack5(session_present, 0, Properties(**properties)) if self.v5
                  else Connack(session_present, 0))
        return self.received()


def setup(topics: list[dict[str, Any]] | None = None, *, limits: Limits | None = None,
          **settings: Any) -> tuple[Harness, Bridge]:
    harness = Harness(limits, now=1000.0)
    config = parse_bridge({"name": "cloud", "address": "remote:1883", "client_id": "edge",
                           "topics": topics or TOPICS, **settings}, "test")
    bridges = install_bridges(harness.broker, (config,), lambda client_id: True)
    return harness, bridges[0]


def session_of(harness: Harness) -> Session:
    session = harness.broker.sessions.get(bridge_client_id("cloud"))
    assert session is not None
    return session


def publishes(packets: list[Packet | Packet5]) -> list[Publish | Publish5]:
    return [packet for packet in packets if isinstance(packet, Publish | Publish5)]


def test_the_session_buffers_before_any_connection_and_forwards_in_order() -> None:
    harness, bridge = setup()
    session = session_of(harness)
    assert set(session.subscriptions) == {"sensors/#", "both/#"}
    publisher = harness.connected("publisher")
    for index in range(5):
        publisher.publish("sensors/t", str(index).encode(), qos=1)
    publisher.publish("sensors/q0", b"lost", qos=0)  # QoS 0 is not buffered
    assert bridge.status.backlog_messages == 5 and bridge.status.backlog_bytes == 5
    remote = Remote(harness, bridge)
    sent = remote.accept(receive_maximum=3)
    connect = remote.connect
    assert isinstance(connect, Connect5)
    assert (connect.client_id, connect.clean_start) == ("edge", False)
    assert connect.properties.session_expiry_interval == 0xFFFFFFFF
    subscribe = sent[0]
    assert isinstance(subscribe, Subscribe5)
    assert [(s.topic_filter, s.qos, s.no_local, s.retain_as_published)
            for s in subscribe.subscriptions] == [("cmd/#", 2, True, True),
                                                  ("both/#", 1, True, True)]
    # The remote's Receive Maximum is the window: three now, in order, remapped.
    assert [(p.topic, p.payload, p.qos) for p in publishes(sent)] == [
        ("site/sensors/t", str(index).encode(), 1) for index in range(3)]
    first = publishes(sent)[0]
    remote.send(Puback5(first.packet_id))
    following = publishes(remote.received())
    assert [p.payload for p in following] == [b"3"]
    assert bridge.status.backlog_messages == 4 and bridge.status.sent == 1
    assert bridge.status.connected and bridge.status.remote == "remote:1883"


def test_qos2_is_released_never_sent_again_after_pubrec() -> None:
    harness, bridge = setup()
    publisher = harness.connected("publisher")
    publisher.publish("sensors/x", b"once", qos=2)
    publisher.ack_all(publisher.received_packets())
    remote = Remote(harness, bridge)
    [message] = publishes(remote.accept()[1:])
    assert (message.qos, message.dup) == (2, False)
    remote.send(Pubrec5(message.packet_id))
    [pubrel] = remote.received()
    assert isinstance(pubrel, Pubrel5) and pubrel.packet_id == message.packet_id
    remote.link.connection_lost(harness.now, "")  # before PUBCOMP
    harness.broker.flush()
    assert remote.ended == [("the remote closed the connection", 0.0)]
    again = Remote(harness, bridge)
    resent = again.accept(session_present=True)[1:]
    assert [type(p) for p in resent] == [Pubrel5]
    again.send(Pubcomp5(message.packet_id))
    assert bridge.status.backlog_messages == 0


def test_qos1_in_flight_is_sent_again_with_dup() -> None:
    harness, bridge = setup()
    publisher = harness.connected("publisher")
    remote = Remote(harness, bridge)
    remote.accept()
    publisher.publish("sensors/x", b"a", qos=1)
    [first] = publishes(remote.received())
    remote.link.connection_lost(harness.now, "")
    again = Remote(harness, bridge)
    [resent] = publishes(again.accept(session_present=True))
    assert (resent.packet_id, resent.dup, resent.payload) == (first.packet_id, True, b"a")


def test_incoming_messages_are_published_here_and_acknowledged() -> None:
    harness, bridge = setup()
    subscriber = harness.connected("local")
    assert subscriber.subscribe(("#", 2)) == [2]
    remote = Remote(harness, bridge)
    remote.accept()
    remote.send(Publish5("cmd/a", b"1", qos=1, packet_id=7))
    remote.send(Publish5("cmd/b", b"2", qos=2, packet_id=8))
    remote.send(Publish5("cmd/b", b"2", qos=2, dup=True, packet_id=8))  # retransmission
    remote.send(Publish5("both/c", b"3", qos=1, packet_id=9))
    got = subscriber.publishes()
    assert [(p.topic, p.payload) for p in got] == [("remote/cmd/a", b"1"),
                                                   ("remote/cmd/b", b"2"), ("both/c", b"3")]
    acks = remote.received()
    # PUBACK 7, PUBREC 8 twice; nothing of both/c went back out (the bridge's No Local).
    assert [(type(p), getattr(p, "packet_id", 0)) for p in acks] == [
        (Puback5, 7), (Pubrec5, 8), (Pubrec5, 8), (Puback5, 9)]
    remote.send(Pubrel5(8))
    assert [(type(p), getattr(p, "packet_id", 0)) for p in remote.received()] == [
        (Pubcomp5, 8)]
    assert bridge.status.received == 3


def test_the_acl_of_the_local_identity_applies(caplog: pytest.LogCaptureFixture) -> None:
    harness, bridge = setup(local_username="bridge-user")
    rules = AclRules.parse("topic read #\nuser bridge-user\ntopic write remote/cmd/allowed\n"
                           "topic read sensors/#\n")
    harness.broker.set_acl(rules)
    install_bridges(harness.broker, (bridge.settings,), lambda client_id: True)
    assert "bridge cloud: the ACL does not let $bridge/cloud (user bridge-user) read all of " \
           "'both/#'" in caplog.text
    assert "'sensors/#'" not in caplog.text
    subscriber = harness.connected("local")
    subscriber.subscribe(("#", 1))
    remote = Remote(harness, bridge)
    remote.accept()
    remote.send(Publish5("cmd/allowed", b"y", qos=1, packet_id=1))
    remote.send(Publish5("cmd/denied", b"n", qos=1, packet_id=2))
    assert [p.topic for p in subscriber.publishes()] == ["remote/cmd/allowed"]
    acks = remote.received()
    assert [(a.packet_id, a.reason_code) for a in acks if isinstance(a, Puback5)] == [
        (1, 0), (2, 0x87)]


def test_v311_remote_gets_the_bridge_bit_and_plain_publishes() -> None:
    harness, bridge = setup(protocol_version="3.1.1")
    publisher = harness.connected("publisher")
    publisher.publish("sensors/r", b"kept", qos=1, retain=True)
    remote = Remote(harness, bridge, v5=False)
    connect = remote.received()[0]
    assert isinstance(connect, Connect) and connect.bridge and not connect.clean_session
    remote.send(Connack(False, 0))
    sent = remote.received()
    assert isinstance(sent[0], Subscribe)
    assert sent[0].topics == [("cmd/#", 2), ("both/#", 1)]
    assert [(p.topic, p.payload, p.retain) for p in publishes(sent)] == [
        ("site/sensors/r", b"kept", True)]
    remote.send(Puback(publishes(sent)[0].packet_id))
    assert bridge.status.sent == 1


def test_a_refused_bridge_bit_is_dropped_for_the_next_attempt() -> None:
    harness, bridge = setup(protocol_version="3.1.1")
    remote = Remote(harness, bridge, v5=False)
    remote.received()
    remote.send(Connack(False, 1))
    [(error, lasted)] = remote.ended
    assert error.startswith("refused: CONNACK 0x01 (unacceptable protocol version); the remote "
                            "does not take the bridge bit")
    assert lasted is None and not bridge.try_private
    again = Remote(harness, bridge, v5=False)
    connect = again.received()[0]
    assert isinstance(connect, Connect) and not connect.bridge


@pytest.mark.parametrize(("packet", "error"), [
    (Connack5(False, 0x86), "refused: CONNACK 0x86 (Bad User Name or Password)"),
    (Disconnect5(0x8E, Properties(reason_string="another edge")),
     "the remote disconnected: 0x8e (Session taken over): another edge"),
])
def test_refusals_and_disconnects_say_why(packet: Packet5, error: str) -> None:
    harness, bridge = setup()
    remote = Remote(harness, bridge)
    if isinstance(packet, Disconnect5):
        remote.accept()
    else:
        remote.received()
    remote.send(packet)
    assert remote.ended[0][0] == error
    assert remote.sink.closed and not bridge.status.connected
    assert bridge.status.last_error == error


def test_a_server_that_sends_what_a_server_may_not_is_left() -> None:
    harness, bridge = setup()
    remote = Remote(harness, bridge)
    remote.received()
    remote.link.data_received(b"\xc0\x00", harness.now)  # PINGREQ before CONNACK
    harness.broker.flush()
    assert remote.ended[0][0].startswith("protocol violation by the remote: packet type 12 "
                                         "before CONNACK")


def test_no_connack_in_time() -> None:
    harness, bridge = setup(connect_timeout=5)
    remote = Remote(harness, bridge)
    harness.tick(1004.9)
    assert not remote.ended
    harness.tick(1005.0)
    assert remote.ended == [("no CONNACK within 5 s", None)]


def test_keep_alive_pings_and_gives_up_on_silence() -> None:
    harness, bridge = setup(keepalive=10)
    remote = Remote(harness, bridge)
    remote.accept()
    harness.tick(1010.0)
    assert [type(p) for p in remote.received()] == [Pingreq]
    harness.tick(1014.9)
    assert not remote.ended
    harness.tick(1015.0)
    assert remote.ended[0][0] == "nothing from the remote for 15 s (keep-alive 10 s)"


def test_remote_limits_retain_packet_size_and_qos() -> None:
    harness, bridge = setup()
    publisher = harness.connected("publisher")
    remote = Remote(harness, bridge)
    remote.accept(retain_available=0, maximum_packet_size=60)
    publisher.publish("sensors/r", b"r", qos=1, retain=True)
    publisher.publish("sensors/big", bytes(100), qos=1)
    publisher.publish("sensors/small", b"s", qos=1)
    sent = publishes(remote.received())
    assert [(p.topic, p.retain) for p in sent] == [("site/sensors/r", False),
                                                   ("site/sensors/small", False)]
    assert harness.broker.stats.dropped["too_large"] == 1
    harness2, bridge2 = setup()
    remote2 = Remote(harness2, bridge2)
    remote2.accept(maximum_qos=1)
    assert remote2.ended[0][0].startswith("the remote's Maximum QoS is 1, below the QoS 2")


def test_a_full_buffer_refuses_and_mqtt5_publishers_hear_it() -> None:
    harness, _ = setup(max_buffered_messages=2)
    publisher = harness.client()
    publisher.connect5("publisher")
    for index in range(3):
        publisher.send(encode_packet_v5(Publish5("sensors/x", b"m", qos=1,
                                                 packet_id=index + 1)))
    acks = [p for p in publisher.received_packets5() if isinstance(p, Puback5)]
    assert [a.reason_code for a in acks] == [0, 0, 0x97]
    assert len(session_of(harness).queue) == 2


def test_configuration_changes_and_removed_bridges() -> None:
    harness, _ = setup()
    session = session_of(harness)
    assert set(session.subscriptions) == {"sensors/#", "both/#"}
    config = parse_bridge({"name": "cloud", "address": "remote", "topics": [
        {"pattern": "other/#", "qos": 0}]}, "test")
    install_bridges(harness.broker, (config,), lambda client_id: True)
    assert session_of(harness) is session
    assert set(session.subscriptions) == {"other/#"}
    install_bridges(harness.broker, (), lambda client_id: True)
    assert harness.broker.sessions.get(bridge_client_id("cloud")) is None


def test_shutdown_says_disconnect() -> None:
    harness, bridge = setup()
    remote = Remote(harness, bridge)
    remote.accept()
    harness.broker.close_all()
    assert [type(p) for p in remote.received()] == [Disconnect5]
    assert remote.sink.closed and remote.ended == [("", 0.0)]



def test_a_refused_message_is_done_with_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    harness, bridge = setup()
    publisher = harness.connected("publisher")
    remote = Remote(harness, bridge)
    remote.accept()
    for index in range(2):
        publisher.publish("sensors/x", str(index).encode(), qos=1)
    publisher.publish("sensors/q2", b"2", qos=2)
    first, second, third = publishes(remote.received())
    remote.send(Puback5(first.packet_id, 0x87))
    remote.send(Puback5(second.packet_id, 0x97))
    remote.send(Pubrec5(third.packet_id, 0x87))  # a refused PUBREC ends the QoS 2 flow
    assert remote.received() == []  # no PUBREL
    assert (bridge.status.refused, bridge.status.sent, bridge.status.backlog_messages) == (3, 0, 0)
    assert caplog.text.count("refused a message") == 1
