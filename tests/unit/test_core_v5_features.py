"""The broker core's MQTT 5 extras with a fake clock: Topic Aliases both ways, the Will Delay
Interval, Response Information, Request Problem Information and server redirection."""

from __future__ import annotations

import pytest

from culex.core.aliasing import AliasingConnection
from culex.core.connection import Connection
from culex.core.limits import Limits
from culex.core.options import Mqtt5Options
from culex.protocol.codec import encode_publish
from culex.protocol.packets import PacketType
from culex.protocol.packets import Publish as Publish311
from culex.protocol.packets5 import Connack5, Disconnect5, Puback5, Publish5, Subscription, Will5
from culex.protocol.properties import Properties
from culex.protocol.v5 import encode_ack5, encode_disconnect5, encode_publish5
from tests.unit.core_helpers import FakeClient, Harness
from tests.unit.test_core_v5 import client5, expiring, publishes5, subscribe5


def aliased(topic: str, alias: int, payload: bytes = b"", qos: int = 0,
            packet_id: int = 0) -> bytes:
    return encode_publish5(Publish5(topic, payload, qos, packet_id=packet_id,
                                    properties=Properties(topic_alias=alias)))


def seen(client: FakeClient) -> list[tuple[str, int | None, bytes]]:
    """(topic as sent, Topic Alias, payload) of each new PUBLISH."""
    return [(p.topic, p.properties.topic_alias, p.payload) for p in publishes5(client)]


# -- Topic Alias, inbound -------------------------------------------------------------------------

def test_inbound_alias_is_set_used_and_replaced_and_never_forwarded() -> None:
    harness = Harness()
    sub5 = client5(harness, "sub5")
    assert subscribe5(sub5, Subscription("#", 1)) == [1]
    sub311 = harness.connected("sub311")
    assert sub311.subscribe(("#", 0)) == [0]
    pub = client5(harness, "pub")
    pub.send(aliased("a/b", 1, b"1"))
    pub.send(aliased("", 1, b"2"))
    pub.send(aliased("", 1, b"3", qos=1, packet_id=7))
    pub.send(aliased("c/d", 1, b"4"))
    pub.send(aliased("", 1, b"5", qos=2, packet_id=8))
    assert seen(sub5) == [("a/b", None, b"1"), ("a/b", None, b"2"), ("a/b", None, b"3"),
                          ("c/d", None, b"4"), ("c/d", None, b"5")]
    assert [(p.topic, p.payload) for p in sub311.publishes()] == [
        ("a/b", b"1"), ("a/b", b"2"), ("a/b", b"3"), ("c/d", b"4"), ("c/d", b"5")]
    assert not pub.closed


def test_inbound_alias_keeps_the_other_properties() -> None:
    harness = Harness()
    sub = client5(harness, "sub")
    assert subscribe5(sub, Subscription("p/t", 0)) == [0]
    pub = client5(harness, "pub")
    props = Properties(topic_alias=3, content_type="text/plain",
                       user_properties=[("k", "v")])
    pub.send(encode_publish5(Publish5("p/t", b"x", properties=props)))
    [message] = publishes5(sub)
    assert message.properties == Properties(content_type="text/plain",
                                            user_properties=[("k", "v")])


@pytest.mark.parametrize(("maximum", "alias"), [(10, 0), (10, 11), (0, 1)])
def test_alias_zero_or_above_the_maximum_is_0x94(maximum: int, alias: int) -> None:
    harness = Harness(Limits(max_topic_alias=maximum))
    client = harness.client()
    assert client.connect5("pub").properties.topic_alias_maximum == maximum
    client.send(aliased("t", alias))
    assert client.received_packets5() == [Disconnect5(0x94)]
    assert client.closed


@pytest.mark.parametrize("publish", [aliased("", 2), encode_publish5(Publish5("", b""))],
                         ids=["unknown-alias", "no-alias"])
def test_empty_topic_without_a_known_alias_is_a_protocol_error(publish: bytes) -> None:
    harness = Harness()
    client = client5(harness, "pub")
    client.send(aliased("t", 1))
    client.send(publish)
    assert client.received_packets5() == [Disconnect5(0x82)]
    assert client.closed


def test_inbound_aliases_do_not_survive_a_reconnect() -> None:
    harness = Harness()
    first = client5(harness, "pub", clean_start=False, properties=expiring(60))
    first.send(aliased("t", 1))
    first.send(encode_disconnect5())
    again = client5(harness, "pub", clean_start=False, properties=expiring(60))
    again.send(aliased("", 1))
    assert again.received_packets5() == [Disconnect5(0x82)]


# -- Topic Alias, outbound ------------------------------------------------------------------------

def test_outbound_aliases_first_come_up_to_the_client_maximum() -> None:
    harness = Harness()
    sub = client5(harness, "sub", properties=Properties(topic_alias_maximum=2))
    assert type(sub.connection) is AliasingConnection
    assert subscribe5(sub, Subscription("#", 1)) == [1]
    pub5 = client5(harness, "pub5")
    pub311 = harness.connected("pub311")
    pub5.send(encode_publish5(Publish5("t/1", b"a")))               # forwarded frame
    pub5.send(encode_publish5(Publish5("t/1", b"b", 1, packet_id=1)))  # head, id, props, payload
    pub311.send(encode_publish(Publish311("t/2", b"c", 0)))        # from a 3.1.1 Message
    pub5.send(encode_publish5(Publish5("t/3", b"d")))              # table full: no alias
    pub311.send(encode_publish(Publish311("t/2", b"e", 1, packet_id=2)))
    pub5.send(encode_publish5(Publish5("t/3", b"f", properties=Properties(
        content_type="x"))))
    packets = publishes5(sub)
    assert [(p.topic, p.properties.topic_alias, p.payload) for p in packets] == [
        ("t/1", 1, b"a"), ("", 1, b"b"), ("t/2", 2, b"c"), ("t/3", None, b"d"),
        ("", 2, b"e"), ("t/3", None, b"f")]
    assert packets[-1].properties.content_type == "x"
    assert [p.qos for p in packets] == [0, 1, 0, 0, 1, 0]


def test_outbound_aliases_keep_other_properties_and_retained_messages() -> None:
    harness = Harness()
    pub = client5(harness, "pub")
    props = Properties(response_topic="r/t", correlation_data=b"id", user_properties=[("a", "b")])
    pub.send(encode_publish5(Publish5("k/t", b"kept", retain=True, properties=props)))
    sub = client5(harness, "sub", properties=Properties(topic_alias_maximum=5))
    assert subscribe5(sub, Subscription("k/t", 0)) == [0]
    pub.send(encode_publish5(Publish5("k/t", b"live", properties=props)))
    packets = publishes5(sub)
    assert [(p.topic, p.retain, p.payload) for p in packets] == [
        ("k/t", True, b"kept"), ("", False, b"live")]
    for packet in packets:
        assert packet.properties == Properties(topic_alias=1, response_topic="r/t",
                                               correlation_data=b"id",
                                               user_properties=[("a", "b")])


def test_subscribers_without_aliases_get_the_shared_frames() -> None:
    harness = Harness()
    plain = client5(harness, "plain")
    aliasing = client5(harness, "aliasing", properties=Properties(topic_alias_maximum=1))
    for client in (plain, aliasing):
        assert subscribe5(client, Subscription("s/t", 0)) == [0]
    assert type(plain.connection) is Connection
    frame = encode_publish5(Publish5("s/t", b"same"))
    harness.client()  # unrelated socket
    pub = client5(harness, "pub")
    pub.send(frame)
    pub.send(frame)
    harness.broker.flush()
    assert plain.sink.writes[-1] == [frame, frame]  # the publisher's very frame, twice
    assert seen(aliasing) == [("s/t", 1, b"same"), ("", 1, b"same")]


@pytest.mark.parametrize("options", [Mqtt5Options(topic_alias_out="none"), None])
def test_no_outbound_aliases_by_policy_or_without_a_client_maximum(
        options: Mqtt5Options | None) -> None:
    harness = Harness(mqtt5=options)
    props = Properties(topic_alias_maximum=4) if options is not None else Properties()
    sub = client5(harness, "sub", properties=props)
    assert type(sub.connection) is Connection
    assert subscribe5(sub, Subscription("n/t", 0)) == [0]
    pub = client5(harness, "pub")
    pub.send(encode_publish5(Publish5("n/t", b"1")))
    pub.send(encode_publish5(Publish5("n/t", b"2")))
    assert seen(sub) == [("n/t", None, b"1"), ("n/t", None, b"2")]


def test_resent_messages_after_reconnect_define_their_alias_again() -> None:
    harness = Harness()
    session = Properties(session_expiry_interval=60, topic_alias_maximum=3)
    sub = client5(harness, "sub", clean_start=False, properties=session)
    assert subscribe5(sub, Subscription("r/t", 1)) == [1]
    pub = client5(harness, "pub")
    pub.send(encode_publish5(Publish5("r/t", b"1", 1, packet_id=1)))
    pub.send(encode_publish5(Publish5("r/t", b"2", 1, packet_id=2)))
    assert seen(sub) == [("r/t", 1, b"1"), ("", 1, b"2")]
    sub.lose()  # neither acknowledged
    again = harness.client()
    assert again.connect5("sub", clean_start=False, properties=session).session_present
    packets = publishes5(again)
    assert [(p.topic, p.properties.topic_alias, p.dup) for p in packets] == [
        ("r/t", 1, True), ("", 1, True)]


def test_an_alias_that_would_exceed_the_maximum_packet_size_is_not_used() -> None:
    harness = Harness()
    # "m/t" with 6 bytes of payload: 14 bytes plain, 17 with a new alias; with 4 bytes: 12
    # and 15. An alias is defined only by a PUBLISH that really carries it.
    sub = client5(harness, "sub", properties=Properties(topic_alias_maximum=2,
                                                        maximum_packet_size=15))
    assert subscribe5(sub, Subscription("m/t", 0)) == [0]
    pub = client5(harness, "pub")
    pub.send(encode_publish5(Publish5("m/t", b"654321")))
    pub.send(encode_publish5(Publish5("m/t", b"4321")))
    pub.send(encode_publish5(Publish5("m/t", b"654321")))
    assert seen(sub) == [("m/t", None, b"654321"), ("m/t", 1, b"4321"), ("", 1, b"654321")]


# -- Will Delay Interval --------------------------------------------------------------------------

def will_client(harness: Harness, *, delay: int, expiry: int, client_id: str = "mortal",
                **will_props: object) -> FakeClient:
    will = Will5("w/t", b"bye", 1, properties=Properties(will_delay_interval=delay,
                                                        **will_props))  # type: ignore[arg-type]
    return client5(harness, client_id, clean_start=False, will=will,
                   properties=expiring(expiry))


def watcher(harness: Harness) -> FakeClient:
    client = client5(harness, "watcher")
    assert subscribe5(client, Subscription("w/t", 1)) == [1]
    return client


def test_will_waits_for_its_delay() -> None:
    harness = Harness()
    watch = watcher(harness)
    will_client(harness, delay=10, expiry=100).lose()
    harness.tick(9.9)
    assert publishes5(watch) == []
    harness.tick(10.0)
    [will] = publishes5(watch)
    assert (will.topic, will.payload, will.properties.will_delay_interval) == (
        "w/t", b"bye", None)
    harness.tick(30.0)
    assert publishes5(watch) == []


def test_will_delay_counts_from_the_connection_loss_not_the_last_tick() -> None:
    # Found by the Paho interoperability suite (test_will_delay): the will came 0.1 s early.
    harness = Harness()
    watch = watcher(harness)
    client = will_client(harness, delay=10, expiry=100)
    harness.now = 5.0  # the connection drops between two timer ticks
    client.lose()
    harness.tick(14.9)
    assert publishes5(watch) == []
    harness.tick(15.0)
    assert [p.payload for p in publishes5(watch)] == [b"bye"]


def test_session_expiry_counts_from_the_connection_loss_not_the_last_tick() -> None:
    harness = Harness()
    client = client5(harness, "away", clean_start=False, properties=expiring(10))
    harness.now = 5.0
    client.lose()
    harness.tick(14.9)
    back = harness.client()
    assert back.connect5("away", clean_start=False, properties=expiring(10)).session_present


def test_reconnect_within_the_delay_cancels_the_will() -> None:
    harness = Harness()
    watch = watcher(harness)
    will_client(harness, delay=10, expiry=100).lose()
    harness.tick(5.0)
    client5(harness, "mortal", clean_start=False, properties=expiring(100))
    harness.tick(20.0)
    assert publishes5(watch) == []


def test_session_ending_first_publishes_the_will_early() -> None:
    harness = Harness()
    watch = watcher(harness)
    will_client(harness, delay=10, expiry=4).lose()
    harness.tick(3.9)
    assert publishes5(watch) == []
    harness.tick(4.0)
    assert [p.payload for p in publishes5(watch)] == [b"bye"]
    harness.tick(11.0)
    assert publishes5(watch) == []


def test_session_without_expiry_publishes_the_will_on_close() -> None:
    harness = Harness()
    watch = watcher(harness)
    will_client(harness, delay=10, expiry=0).lose()
    assert [p.payload for p in publishes5(watch)] == [b"bye"]


@pytest.mark.parametrize(("delay", "clean_start", "published"), [
    (10, False, False),  # the session goes on under the new connection [MQTT-3.1.3-9]
    (10, True, True),    # the old session ends with the takeover
    (0, False, True),    # no delay: published as the old connection closes
])
def test_takeover_and_the_old_connections_will(delay: int, clean_start: bool,
                                               published: bool) -> None:
    harness = Harness()
    watch = watcher(harness)
    old = will_client(harness, delay=delay, expiry=100)
    client5(harness, "mortal", clean_start=clean_start, properties=expiring(100))
    assert old.received_packets5()[-1] == Disconnect5(0x8E)
    harness.tick(50.0)
    assert [p.payload for p in publishes5(watch)] == ([b"bye"] if published else [])


def test_will_properties_are_forwarded_and_its_expiry_counts_from_publication() -> None:
    harness = Harness(now=1000.0)
    watch = watcher(harness)
    will_client(harness, delay=10, expiry=100, message_expiry_interval=30,
                content_type="text/x", response_topic="re/t", correlation_data=b"c",
                payload_format_indicator=1, user_properties=[("u", "1")]).lose()
    harness.tick(1010.0)
    [will] = publishes5(watch)
    assert will.properties == Properties(
        payload_format_indicator=1, message_expiry_interval=30, content_type="text/x",
        response_topic="re/t", correlation_data=b"c", user_properties=[("u", "1")])


def test_normal_disconnect_discards_a_delayed_will() -> None:
    harness = Harness()
    watch = watcher(harness)
    will_client(harness, delay=10, expiry=100).send(encode_disconnect5())
    harness.tick(20.0)
    assert publishes5(watch) == []


# -- Request/Response, Request Problem Information ------------------------------------------------

@pytest.mark.parametrize(("prefix", "requested", "expected"), [
    ("reply/", 1, "reply/asker"), ("reply/", 0, None), ("reply/", None, None), ("", 1, None)])
def test_response_information_only_when_requested(prefix: str, requested: int | None,
                                                  expected: str | None) -> None:
    harness = Harness(mqtt5=Mqtt5Options(response_information=prefix))
    connack = harness.client().connect5(
        "asker", properties=Properties(request_response_information=requested))
    assert connack.properties.response_information == expected


def test_response_topic_and_correlation_data_reach_the_responder() -> None:
    harness = Harness()
    responder = client5(harness, "responder")
    assert subscribe5(responder, Subscription("req/t", 1)) == [1]
    requester = client5(harness, "requester")
    assert subscribe5(requester, Subscription("re/requester", 1)) == [1]
    request = Properties(response_topic="re/requester", correlation_data=b"\x00\x01")
    requester.send(encode_publish5(Publish5("req/t", b"q", 1, packet_id=1, properties=request)))
    [received] = publishes5(responder)
    assert received.properties == request
    reply = Properties(correlation_data=received.properties.correlation_data)
    responder.send(encode_publish5(Publish5(received.properties.response_topic or "", b"a", 1,
                                            packet_id=1, properties=reply)))
    answers = [p for p in requester.received_packets5() if isinstance(p, Publish5)]
    assert [(p.payload, p.properties.correlation_data) for p in answers] == [(b"a", b"\x00\x01")]


@pytest.mark.parametrize(("requested", "reason_string"), [
    (None, "not authorized to publish to this topic"), (1, "not authorized to publish to this "
                                                           "topic"), (0, None)])
def test_request_problem_information_0_keeps_reason_strings_off_acks(
        requested: int | None, reason_string: str | None) -> None:
    harness = Harness()
    client = client5(harness, "c", properties=Properties(request_problem_information=requested))
    client.send(encode_publish5(Publish5("$SYS/x", b"", 1, packet_id=4)))
    assert client.received_packets5() == [
        Puback5(4, 0x87, Properties(reason_string=reason_string))]
    client.send(encode_ack5(PacketType.PUBREL, 9))  # unknown id: PUBCOMP 0x92, no string
    [pubcomp] = client.received_packets5()
    assert pubcomp.properties.reason_string is None


# -- server redirection ---------------------------------------------------------------------------

@pytest.mark.parametrize(("moved", "code"), [(False, 0x9C), (True, 0x9D)])
def test_server_reference_refuses_every_connect(moved: bool, code: int) -> None:
    harness = Harness(mqtt5=Mqtt5Options(server_reference="other:1883", server_moved=moved))
    client = harness.client()
    connack = client.connect5("c")
    assert isinstance(connack, Connack5)
    assert (connack.reason_code, connack.properties.server_reference) == (code, "other:1883")
    assert client.closed
    old = harness.client()
    assert old.connect("c311").return_code == 3
    assert old.closed
    assert harness.broker.sessions.get("c") is None
