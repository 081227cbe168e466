"""The broker core with MQTT 5 clients, a fake clock and fake sinks: CONNACK properties and
refusal codes, message and session expiry timed by the clock, flow control by the client's
Receive Maximum, subscription options on both routing paths, mixed protocol families."""

from __future__ import annotations

import pytest

from culex.core.access import AuthDone, AuthRequest
from culex.core.limits import Limits
from culex.protocol.codec import encode_publish
from culex.protocol.packets import PacketType
from culex.protocol.packets import Publish as Publish311
from culex.protocol.packets5 import (
    Disconnect5,
    Puback5,
    Publish5,
    Suback5,
    Subscribe5,
    Subscription,
    Will5,
)
from culex.protocol.properties import Properties
from culex.protocol.v5 import encode_ack5, encode_disconnect5, encode_publish5, encode_subscribe5
from tests.unit.core_helpers import FakeClient, Harness


class Answer:
    """An authenticator that answers at once with a fixed CONNACK 3.1.1 code."""

    def __init__(self, code: int) -> None:
        self.code = code

    def authenticate(self, request: AuthRequest, done: AuthDone) -> None:
        done(self.code)


def client5(harness: Harness, client_id: str, **fields: object) -> FakeClient:
    client = harness.client()
    connack = client.connect5(client_id, **fields)
    assert connack.reason_code == 0, connack
    return client


def subscribe5(client: FakeClient, *subscriptions: Subscription,
               identifier: int | None = None) -> list[int]:
    """SUBSCRIBE (with a Subscription Identifier unless `identifier` is None); the SUBACK's
    reason codes."""
    props = Properties(subscription_identifiers=[] if identifier is None else [identifier])
    client.send(encode_subscribe5(Subscribe5(1, list(subscriptions), props)))
    suback = client.first5(Suback5)
    assert isinstance(suback, Suback5)
    return suback.reason_codes


def publishes5(client: FakeClient) -> list[Publish5]:
    packets = client.received_packets5()
    assert all(isinstance(p, Publish5) for p in packets), packets
    return [p for p in packets if isinstance(p, Publish5)]


def expiring(expiry: int) -> Properties:
    return Properties(session_expiry_interval=expiry)


# -- CONNECT ------------------------------------------------------------------------------------

def test_connack_assigns_an_id_and_clamps_keep_alive() -> None:
    harness = Harness(Limits(max_keepalive=30, receive_maximum=5))
    client = harness.client()
    connack = client.connect5("", keepalive=0)
    props = connack.properties
    assert props.assigned_client_identifier == client.connection.client_id
    assert props.assigned_client_identifier.startswith("culex-")
    assert props.server_keep_alive == 30
    assert client.connection.keepalive == 30
    assert props.receive_maximum == 5
    assert (props.topic_alias_maximum, props.retain_available,
            props.subscription_identifier_available,
            props.shared_subscription_available) == (10, 1, 1, 1)


def test_v5_empty_id_allowed_without_clean_start() -> None:
    client = Harness().client()
    assert client.connect5("", clean_start=False).reason_code == 0


@pytest.mark.parametrize(("code", "reason"), [(0x04, 0x86), (0x05, 0x87)])
def test_authenticator_refusals_map_to_v5_codes(code: int, reason: int) -> None:
    harness = Harness()
    harness.broker.access.authenticator = Answer(code)
    client = harness.client()
    connack = client.connect5("c", username="u", password=b"p")
    assert connack.reason_code == reason
    assert connack.properties.reason_string
    assert client.closed


def test_max_connections_is_server_busy() -> None:
    harness = Harness(Limits(max_connections=1))
    client5(harness, "one")
    client = harness.client()
    assert client.connect5("two").reason_code == 0x89
    assert client.closed


# -- message expiry -----------------------------------------------------------------------------

def test_queued_message_expiry_counts_down_and_expired_ones_are_dropped() -> None:
    harness = Harness()
    sub = client5(harness, "sub", clean_start=False, properties=expiring(100))
    assert subscribe5(sub, Subscription("e/t", 1)) == [1]
    sub.send(encode_disconnect5())
    pub = client5(harness, "pub")
    for payload, expiry in ((b"long", 10), (b"short", 3)):
        pub.send(encode_publish5(Publish5("e/t", payload, 1, packet_id=1,
                                          properties=Properties(message_expiry_interval=expiry))))
    harness.tick(4.0)
    again = harness.client()
    assert again.connect5("sub", clean_start=False, properties=expiring(100)).session_present
    delivered = publishes5(again)
    assert [(p.payload, p.properties.message_expiry_interval) for p in delivered] == [
        (b"long", 6)]


def test_expired_retained_message_is_not_sent() -> None:
    harness = Harness()
    pub = client5(harness, "pub")
    pub.send(encode_publish5(Publish5("r/t", b"old", retain=True,
                                      properties=Properties(message_expiry_interval=2))))
    harness.tick(1.0)
    early = client5(harness, "early")
    assert subscribe5(early, Subscription("r/t")) == [0]
    [retained] = publishes5(early)
    assert (retained.retain, retained.properties.message_expiry_interval) == (True, 1)
    harness.tick(2.5)
    late = client5(harness, "late")
    assert subscribe5(late, Subscription("r/t")) == [0]
    assert publishes5(late) == []


# -- session expiry -----------------------------------------------------------------------------

def test_session_discarded_by_tick_when_its_expiry_passes() -> None:
    harness = Harness()
    client = client5(harness, "s", clean_start=False, properties=expiring(5))
    assert subscribe5(client, Subscription("s/t", 1)) == [1]
    client.lose()
    harness.tick(4.9)
    assert harness.broker.sessions.get("s") is not None
    harness.tick(5.0)
    assert harness.broker.sessions.get("s") is None
    assert harness.broker.subscriptions.count == 0


def test_resumed_session_is_not_expired_by_its_old_deadline() -> None:
    harness = Harness()
    client5(harness, "s", clean_start=False, properties=expiring(5)).lose()
    harness.tick(3.0)
    client5(harness, "s", clean_start=False, properties=expiring(5))
    harness.tick(6.0)
    assert harness.broker.sessions.get("s") is not None


def test_never_expiring_session_and_disconnect_shortening_it() -> None:
    harness = Harness()
    client5(harness, "forever", clean_start=False, properties=expiring(0xFFFFFFFF)).lose()
    harness.tick(10.0**9)
    assert harness.broker.sessions.get("forever") is not None
    client = client5(harness, "forever", clean_start=False, properties=expiring(0xFFFFFFFF))
    client.send(encode_disconnect5(0, Properties(session_expiry_interval=0)))
    assert client.closed
    assert harness.broker.sessions.get("forever") is None


def test_disconnect_raising_expiry_from_zero_is_a_protocol_error() -> None:
    harness = Harness()
    watcher = client5(harness, "w")
    assert subscribe5(watcher, Subscription("gone", 0)) == [0]
    client = harness.client()
    assert client.connect5("z", will=Will5("gone", b"will")).reason_code == 0
    client.send(encode_disconnect5(0, Properties(session_expiry_interval=10)))
    packets = client.received_packets5()
    assert isinstance(packets[-1], Disconnect5) and packets[-1].reason_code == 0x82
    assert [p.payload for p in publishes5(watcher)] == [b"will"]


# -- flow control and acks ----------------------------------------------------------------------

def test_client_receive_maximum_bounds_messages_in_flight() -> None:
    harness = Harness()
    sub = client5(harness, "sub", properties=Properties(receive_maximum=1))
    assert subscribe5(sub, Subscription("f/t", 1)) == [1]
    pub = client5(harness, "pub")
    for packet_id in (1, 2):
        pub.send(encode_publish5(Publish5("f/t", b"%d" % packet_id, 1, packet_id=packet_id)))
    [first] = publishes5(sub)
    sub.send(encode_ack5(PacketType.PUBACK, first.packet_id))
    assert [p.payload for p in publishes5(sub)] == [b"2"]


def test_sys_publish_is_not_authorized() -> None:
    harness = Harness()
    pub = client5(harness, "pub")
    pub.send(encode_publish5(Publish5("$SYS/x", b"", 1, packet_id=4)))
    assert pub.received_packets5() == [
        Puback5(4, 0x87, Properties(reason_string="not authorized to publish to this topic"))]


# -- subscription options -------------------------------------------------------------------------

def test_no_local_on_the_raw_frame_fast_path() -> None:
    harness = Harness()
    client = client5(harness, "me")
    assert subscribe5(client, Subscription("n/t", 0, no_local=True)) == [0]
    other = client5(harness, "other")
    assert subscribe5(other, Subscription("n/t", 0)) == [0]
    frame = encode_publish5(Publish5("n/t", b"plain"))
    client.send(frame)
    assert publishes5(client) == []
    assert other.sink.data.endswith(frame)  # the very frame, forwarded as is


def test_overlapping_v5_subscriptions_deliver_once_at_the_highest_qos() -> None:
    harness = Harness()
    sub = client5(harness, "sub")
    assert subscribe5(sub, Subscription("o/#", 0, no_local=True),
                      Subscription("o/t", 2)) == [0, 2]
    pub = client5(harness, "pub")
    pub.send(encode_publish5(Publish5("o/t", b"x", 2, packet_id=1)))
    assert [(p.payload, p.qos) for p in publishes5(sub)] == [(b"x", 2)]


def test_session_resumed_by_the_other_family_gets_its_encoding() -> None:
    harness = Harness()
    client = client5(harness, "both", clean_start=False, properties=expiring(60))
    assert subscribe5(client, Subscription("b/t", 1, retain_as_published=True)) == [1]
    client.lose()
    old = harness.client()
    assert old.connect("both", clean_session=False).session_present
    pub = harness.connected("pub")
    pub.send(encode_publish(Publish311("b/t", b"to-311", 0)))
    assert [p.payload for p in old.publishes()] == [b"to-311"]
    assert old.sink.data.endswith(b"\x30\x0b\x00\x03b/tto-311")


def test_nothing_over_the_client_maximum_packet_size_is_sent() -> None:
    harness = Harness()
    sub = client5(harness, "small", properties=Properties(maximum_packet_size=64))
    assert subscribe5(sub, Subscription("big/#", 1)) == [1]
    pub = client5(harness, "pub")
    for packet_id, (topic, size, qos) in enumerate(
            [("big/0", 100, 0), ("big/1", 100, 1), ("big/2", 10, 1), ("big/3", 10, 0)], 1):
        pub.send(encode_publish5(Publish5(topic, b"x" * size, qos, packet_id=packet_id)))
    # The QoS 1 one that was too large counts as delivered: it holds no in-flight slot.
    assert [(p.topic, p.qos) for p in publishes5(sub)] == [("big/2", 1), ("big/3", 0)]
    assert sub.connection.session is not None
    assert list(sub.connection.session.inflight) == [2]
    assert harness.broker.stats.publishes_dropped == 2


@pytest.mark.parametrize("check", [True, False])
def test_payload_format_indicator_1_requires_utf8(check: bool) -> None:
    harness = Harness(Limits(check_payload_format=check))
    sub = client5(harness, "sub")
    assert subscribe5(sub, Subscription("pf/#", 1)) == [1]
    pub = client5(harness, "pub")
    utf8 = Properties(payload_format_indicator=1)
    pub.send(encode_publish5(Publish5("pf/ok", "é".encode(), 1, packet_id=1, properties=utf8)))
    pub.send(encode_publish5(Publish5("pf/bad", b"\xff", 1, packet_id=2, properties=utf8)))
    pub.send(encode_publish5(Publish5("pf/bin", b"\xff", 1, packet_id=3)))
    refused = Properties(reason_string="payload is not UTF-8, as its Payload Format "
                                       "Indicator says")
    assert pub.received_packets5() == [Puback5(1), Puback5(2, 0x99, refused) if check
                                       else Puback5(2), Puback5(3)]
    expected = ["pf/ok", "pf/bin"] if check else ["pf/ok", "pf/bad", "pf/bin"]
    assert [p.topic for p in publishes5(sub)] == expected
    pub.send(encode_publish5(Publish5("pf/bad", b"\xff", properties=utf8)))  # QoS 0
    packets = pub.received_packets5()
    if check:
        assert packets == [Disconnect5(0x99)]
        assert pub.closed
    else:
        assert packets == [] and not pub.closed


def test_max_qos_is_announced_granted_and_enforced() -> None:
    harness = Harness(Limits(max_qos=1))
    client = harness.client()
    assert client.connect5("v5").properties.maximum_qos == 1
    assert subscribe5(client, Subscription("m/t", 2, no_local=True)) == [1]
    assert harness.broker.sessions.get("v5").subscriptions == {"m/t": 0x100 | 0x04 | 1}
    assert harness.connected("v311").subscribe(("m/t", 2)) == [1]
    client.send(encode_publish5(Publish5("m/t", b"", 2, packet_id=1)))
    assert client.received_packets5() == [Disconnect5(0x9B)]
    assert client.closed


# -- the QoS 0 fast path ----------------------------------------------------------------------

def test_plain_qos0_publishes_are_forwarded_as_they_are_once_the_topic_is_known() -> None:
    """The first PUBLISH to a topic takes the full decode (which validates and caches the
    name); the next ones skip decoding and reach the subscriber byte for byte. A `$SYS` topic
    is refused on both paths, and a frame with properties never takes the shortcut."""
    harness = Harness()
    pub, sub = client5(harness, "pub"), client5(harness, "sub")
    assert subscribe5(sub, Subscription("#", 0), Subscription("$SYS/#", 0)) == [0, 0]
    sub.received_packets5()
    plain = [encode_publish5(Publish5("a/b", b"%d" % index)) for index in range(3)]
    for frame in plain:
        pub.send(frame)
    assert sub.received_frames() == plain
    for _ in range(2):
        pub.send(encode_publish5(Publish5("$SYS/fake", b"x")))
    with_properties = encode_publish5(Publish5("a/b", b"p", properties=Properties(
        content_type="text/plain")))
    pub.send(with_properties)
    assert sub.received_frames() == [with_properties]
    assert not pub.closed


def test_fast_path_leaves_a_truncated_publish_to_the_full_decode() -> None:
    """A known topic whose property block is cut off is still malformed (DISCONNECT 0x81)."""
    harness = Harness()
    pub = client5(harness, "pub")
    pub.send(encode_publish5(Publish5("a/b", b"x")))
    pub.send(b"\x30\x05\x00\x03a/b")  # the topic, then no property length at all
    assert pub.closed
    assert pub.received_packets5()[-1] == Disconnect5(0x81)


def test_will_qos_above_maximum_qos_is_refused_with_0x9b() -> None:
    """[MQTT-3.2.2-12]: the server refuses a will it could not publish at its QoS."""
    harness = Harness(Limits(max_qos=1))
    client = harness.client()
    connack = client.connect5("w", will=Will5("w/t", b"x", 2))
    assert connack.reason_code == 0x9B
    assert client.closed


def test_default_receive_maximum_takes_a_burst_of_unreleased_qos2() -> None:
    """Clients that ignore our Receive Maximum (MQTT.js 5 publishes bursts as they come) are
    not cut off for a few hundred QoS 2 messages in flight: 1024 by default, then 0x93."""
    harness = Harness()
    pub = client5(harness, "pub")
    for packet_id in range(1, 1025):
        pub.send(encode_publish5(Publish5("b/t", b"x", 2, packet_id=packet_id)))
    assert len(pub.received_packets5()) == 1024 and not pub.closed
    pub.send(encode_publish5(Publish5("b/t", b"x", 2, packet_id=1025)))
    assert pub.received_packets5() == [Disconnect5(0x93)]
    assert pub.closed
