"""The broker core with MQTT 5 Subscription Identifiers and shared subscriptions, on a fake
clock and fake sinks: which PUBLISH reaches whom, carrying which identifiers, on every routing
path (the raw QoS 0 forward, Messages at QoS 0/1/2, retained at subscribe time, queued and
re-sent entries), and how shared groups pick, fall back and hand over."""

from __future__ import annotations

from collections import Counter

import pytest

from culex.auth.acl import AclRules
from culex.core.limits import Limits
from culex.core.subscription_value import V5_SUBSCRIBER, identifiers_of, merge, with_identifier
from culex.protocol.codec import encode_publish
from culex.protocol.packets import PacketType
from culex.protocol.packets import Publish as Publish311
from culex.protocol.packets5 import (
    Disconnect5,
    Puback5,
    Publish5,
    Subscribe5,
    Subscription,
    Unsuback5,
    Unsubscribe5,
)
from culex.protocol.properties import Properties
from culex.protocol.v5 import encode_ack5, encode_publish5, encode_subscribe5, encode_unsubscribe5
from tests.unit.core_helpers import FakeClient, Harness
from tests.unit.test_core_v5 import client5, expiring, publishes5, subscribe5


def subscribe_id(client: FakeClient, identifier: int | None,
                 *subscriptions: Subscription) -> list[int]:
    return subscribe5(client, *subscriptions, identifier=identifier)


def ids(packets: list[Publish5]) -> list[tuple[bytes, list[int]]]:
    return [(p.payload, sorted(p.properties.subscription_identifiers)) for p in packets]


def puback_all(client: FakeClient, packets: list[Publish5]) -> None:
    for packet in packets:
        if packet.qos == 1:
            client.send(encode_ack5(PacketType.PUBACK, packet.packet_id))


# -- the value layout ------------------------------------------------------------------------------

def test_values_pack_identifiers_and_merge_keeps_every_one_once() -> None:
    value = with_identifier(V5_SUBSCRIBER | 1, 268_435_455)
    assert value & 0x1FF == V5_SUBSCRIBER | 1
    assert identifiers_of(value >> 9) == [268_435_455]
    assert with_identifier(value, None) == V5_SUBSCRIBER | 1  # a renewal without one drops it
    merged = merge(value, with_identifier(V5_SUBSCRIBER | 2 | 0x04, 7))
    assert merged & 0x1FF == V5_SUBSCRIBER | 2 | 0x04  # the higher QoS's options
    assert sorted(identifiers_of(merged >> 9)) == [7, 268_435_455]
    assert merge(merged, with_identifier(V5_SUBSCRIBER, 7)) == merged
    assert merge(1, 2) == 2 and merge(2, 0) == 2  # 3.1.1 values: the highest QoS, as before


# -- Subscription Identifiers ---------------------------------------------------------------------

def test_identifier_on_every_delivery_path() -> None:
    harness = Harness()
    sub = client5(harness, "sub")
    assert subscribe_id(sub, 42, Subscription("i/#", 1)) == [1]
    pub = client5(harness, "pub")
    pub.send(encode_publish5(Publish5("i/raw", b"forwarded")))  # QoS 0 raw-frame path
    pub.send(encode_publish5(Publish5("i/q1", b"qos1", 1, packet_id=1)))
    pub.send(encode_publish5(Publish5("i/p", b"props", properties=Properties(
        content_type="text/plain"))))
    v311 = harness.connected("v311")
    v311.publish("i/311", b"from-311")
    got = publishes5(sub)
    assert ids(got) == [(b"forwarded", [42]), (b"qos1", [42]), (b"props", [42]),
                        (b"from-311", [42])]
    assert got[2].properties.content_type == "text/plain"


def test_subscribers_without_identifiers_keep_the_forwarded_frame() -> None:
    harness = Harness()
    plain = client5(harness, "plain")
    assert subscribe5(plain, Subscription("f/t", 0)) == [0]
    tagged = client5(harness, "tagged")
    assert subscribe_id(tagged, 9, Subscription("f/t", 0)) == [0]
    frame = encode_publish5(Publish5("f/t", b"x"))
    client5(harness, "pub").send(frame)
    assert ids(publishes5(plain)) == [(b"x", [])]
    assert plain.sink.writes[-1] == [frame]  # the very frame, not a copy
    assert ids(publishes5(tagged)) == [(b"x", [9])]


def test_overlapping_subscriptions_deliver_once_with_all_identifiers() -> None:
    harness = Harness()
    sub = client5(harness, "sub")
    assert subscribe_id(sub, 1, Subscription("o/#", 0)) == [0]
    assert subscribe_id(sub, 2, Subscription("o/+", 2)) == [2]
    assert subscribe_id(sub, None, Subscription("o/t", 1)) == [1]
    assert subscribe_id(sub, 1, Subscription("+/t", 0)) == [0]  # same id twice: listed once
    pub = client5(harness, "pub")
    pub.send(encode_publish5(Publish5("o/t", b"all", 2, packet_id=1)))
    pub.send(encode_publish5(Publish5("o/t", b"qos0")))
    got = publishes5(sub)
    assert [(p.payload, p.qos) for p in got] == [(b"all", 2), (b"qos0", 0)]
    assert ids(got) == [(b"all", [1, 2]), (b"qos0", [1, 2])]


def test_resubscribe_without_identifier_removes_it() -> None:
    harness = Harness()
    sub = client5(harness, "sub")
    assert subscribe_id(sub, 5, Subscription("r/t", 1), Subscription("r/u", 1)) == [1, 1]
    assert subscribe_id(sub, None, Subscription("r/t", 1)) == [1]
    assert subscribe_id(sub, 6, Subscription("r/u", 1)) == [1]
    pub = client5(harness, "pub")
    pub.send(encode_publish5(Publish5("r/t", b"t", 1, packet_id=1)))
    pub.send(encode_publish5(Publish5("r/u", b"u", 1, packet_id=2)))
    assert ids(publishes5(sub)) == [(b"t", []), (b"u", [6])]


def test_retained_messages_at_subscribe_carry_that_subscriptions_identifier() -> None:
    harness = Harness()
    pub = client5(harness, "pub")
    pub.send(encode_publish5(Publish5("ret/a", b"a0", 0, retain=True)))
    pub.send(encode_publish5(Publish5("ret/b", b"b1", 1, retain=True, packet_id=1)))
    sub = client5(harness, "sub")
    assert subscribe_id(sub, 77, Subscription("ret/#", 1)) == [1]
    got = publishes5(sub)
    assert sorted(ids(got)) == [(b"a0", [77]), (b"b1", [77])]
    assert all(p.retain for p in got)


def test_queued_and_resent_messages_keep_their_identifiers() -> None:
    harness = Harness(Limits(max_inflight_messages=1))
    sub = client5(harness, "sub", clean_start=False, properties=expiring(60))
    assert subscribe_id(sub, 3, Subscription("q/t", 1)) == [1]
    pub = client5(harness, "pub")
    pub.send(encode_publish5(Publish5("q/t", b"inflight", 1, packet_id=1)))
    pub.send(encode_publish5(Publish5("q/t", b"queued", 1, packet_id=2)))
    assert ids(publishes5(sub)) == [(b"inflight", [3])]
    sub.lose()
    pub.send(encode_publish5(Publish5("q/t", b"offline", 1, packet_id=3)))
    again = harness.client()
    assert again.connect5("sub", clean_start=False).session_present
    got = publishes5(again)
    assert [(p.payload, p.dup) for p in got] == [(b"inflight", True)]
    assert ids(got) == [(b"inflight", [3])]
    puback_all(again, got)
    got = publishes5(again)
    puback_all(again, got)
    got += publishes5(again)
    assert ids(got) == [(b"queued", [3]), (b"offline", [3])]


def test_identifier_with_counting_down_message_expiry() -> None:
    harness = Harness()
    sub = client5(harness, "sub", clean_start=False, properties=expiring(60))
    assert subscribe_id(sub, 8, Subscription("e/t", 1)) == [1]
    sub.lose()
    client5(harness, "pub").send(encode_publish5(Publish5(
        "e/t", b"x", 1, packet_id=1, properties=Properties(message_expiry_interval=100))))
    harness.tick(30.0)
    again = harness.client()
    again.connect5("sub", clean_start=False)
    (got,) = publishes5(again)
    assert got.properties.subscription_identifiers == [8]
    assert got.properties.message_expiry_interval == 70


def test_identifiers_dropped_for_a_311_resumption() -> None:
    harness = Harness()
    sub = client5(harness, "both", clean_start=False, properties=expiring(60))
    assert subscribe_id(sub, 4, Subscription("b/t", 0)) == [0]
    sub.lose()
    old = harness.client()
    assert old.connect("both", clean_session=False).session_present
    frame = encode_publish(Publish311("b/t", b"plain", 0))
    harness.connected("pub").send(frame)
    assert [p.payload for p in old.publishes()] == [b"plain"]
    assert old.sink.writes[-1] == [frame]


# -- shared subscriptions: choosing ---------------------------------------------------------------

def group_of(harness: Harness, count: int, qos: int = 1, topic_filter: str = "$share/g/s/#",
             **connect: object) -> list[FakeClient]:
    members = []
    for index in range(count):
        member = client5(harness, f"m{index}", **connect)
        assert subscribe5(member, Subscription(topic_filter, qos)) == [qos]
        members.append(member)
    return members


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_round_robin_delivers_each_message_to_exactly_one_member(qos: int) -> None:
    harness = Harness()
    members = group_of(harness, 3, qos)
    pub = client5(harness, "pub")
    for number in range(30):
        pub.send(encode_publish5(Publish5("s/t", str(number).encode(), qos,
                                          packet_id=number + 1 if qos else 0)))
        if qos == 2:
            pub.send(encode_ack5(PacketType.PUBREL, number + 1))
    received = [[int(p.payload) for p in publishes5(member)] for member in members]
    assert received == [list(range(start, 30, 3)) for start in range(3)]


def test_raw_qos0_frames_and_311_members_in_one_group() -> None:
    harness = Harness()
    v5 = client5(harness, "v5")
    assert subscribe5(v5, Subscription("$share/g/x", 0)) == [0]
    v311 = harness.connected("v311")
    assert v311.subscribe(("$share/g/x", 0)) == [0]
    frame = encode_publish5(Publish5("x", b"m"))
    pub = client5(harness, "pub")
    for _ in range(4):
        pub.send(frame)
    assert len(publishes5(v5)) == 2
    assert v5.sink.writes[-1] == [frame, frame]  # forwarded as is, as for a normal subscriber
    assert [p.payload for p in v311.publishes()] == [b"m", b"m"]


@pytest.mark.parametrize("strategy", ["random", "sticky", "hash"])
def test_other_strategies_deliver_exactly_once(strategy: str) -> None:
    harness = Harness(Limits(shared_subscription_strategy=strategy, max_inflight_messages=50))
    members = group_of(harness, 3)
    publishers = [client5(harness, f"pub{n}") for n in range(3)]
    for number in range(30):
        publishers[number % 3].send(encode_publish5(Publish5(
            "s/t", f"{number % 3}:{number}".encode(), 1, packet_id=number + 1)))
    received = [[p.payload.decode() for p in publishes5(member)] for member in members]
    assert sorted(int(m.split(":")[1]) for got in received for m in got) == list(range(30))
    if strategy == "sticky":
        assert sorted(len(got) for got in received) == [0, 0, 30]
    if strategy == "hash":  # every publisher's messages on one member, in order
        by_publisher: dict[str, set[int]] = {}
        for index, got in enumerate(received):
            for message in got:
                by_publisher.setdefault(message.split(":")[0], set()).add(index)
            numbers = [int(m.split(":")[1]) for m in got]
            assert numbers == sorted(numbers)
        assert all(len(owners) == 1 for owners in by_publisher.values())


def test_sticky_moves_on_when_its_member_leaves() -> None:
    harness = Harness(Limits(shared_subscription_strategy="sticky"))
    members = group_of(harness, 2)
    pub = client5(harness, "pub")
    pub.send(encode_publish5(Publish5("s/t", b"1", 1, packet_id=1)))
    first = next(m for m in members if publishes5(m))
    first.send(encode_unsubscribe5(Unsubscribe5(2, ["$share/g/s/#"])))
    assert first.first5(Unsuback5) == Unsuback5(2, [0])
    pub.send(encode_publish5(Publish5("s/t", b"2", 1, packet_id=2)))
    other = next(m for m in members if m is not first)
    assert [p.payload for p in publishes5(other)] == [b"2"]
    assert publishes5(first) == []


def test_members_have_their_own_qos_and_identifier_and_get_no_retained() -> None:
    harness = Harness()
    pub = client5(harness, "pub")
    pub.send(encode_publish5(Publish5("s/r", b"retained", 1, retain=True, packet_id=1)))
    low = client5(harness, "low")
    assert subscribe_id(low, 11, Subscription("$share/g/s/#", 0)) == [0]
    high = client5(harness, "high")
    assert subscribe_id(high, 12, Subscription("$share/g/s/#", 2)) == [2]
    for packet_id in (2, 3):
        pub.send(encode_publish5(Publish5("s/t", b"q2", 2, packet_id=packet_id)))
    (to_low,) = publishes5(low)
    (to_high,) = publishes5(high)
    assert (to_low.qos, to_low.properties.subscription_identifiers) == (0, [11])
    assert (to_high.qos, to_high.properties.subscription_identifiers) == (2, [12])


def test_shared_and_normal_subscriptions_of_one_client_are_independent() -> None:
    harness = Harness()
    sub = client5(harness, "sub")
    assert subscribe5(sub, Subscription("$share/g/d/t", 1), Subscription("d/t", 1),
                      Subscription("$share/h/d/#", 0)) == [1, 1, 0]
    pub = client5(harness, "pub")
    pub.send(encode_publish5(Publish5("d/t", b"x", 1, packet_id=1)))
    assert sorted(p.qos for p in publishes5(sub)) == [0, 1, 1]
    assert harness.broker.sys.values(0)["$SYS/broker/subscriptions/count"] == "3"
    sub.send(encode_unsubscribe5(Unsubscribe5(2, ["$share/g/d/t", "$share/g/d/t"])))
    assert sub.first5(Unsuback5) == Unsuback5(2, [0, 0x11])
    pub.send(encode_publish5(Publish5("d/t", b"y", 1, packet_id=2)))
    assert sorted(p.qos for p in publishes5(sub)) == [0, 1]
    assert harness.broker.sys.values(0)["$SYS/broker/subscriptions/count"] == "2"


def test_no_local_on_a_shared_subscription_is_a_protocol_error() -> None:
    harness = Harness()
    client = client5(harness, "nl")
    client.send(encode_subscribe5(Subscribe5(1, [Subscription("$share/g/t", 1,
                                                              no_local=True)])))
    assert client.received_packets5() == [Disconnect5(0x82)]
    assert client.closed


@pytest.mark.parametrize("topic_filter", ["$share//t", "$share/a+/t", "$share/#/t", "$share/g",
                                          "$share/g/", "$share/g/a/#/b"])
def test_invalid_shared_filters_get_0x8f(topic_filter: str) -> None:
    harness = Harness()
    assert subscribe5(client5(harness, "bad"), Subscription(topic_filter, 1)) == [0x8F]
    assert harness.broker.router.shared.count == 0


def test_wildcards_and_dollar_rules_apply_to_the_inner_filter() -> None:
    harness = Harness(sys_interval=0)
    wild = group_of(harness, 1, 0, "$share/g/#")[0]
    dollar = client5(harness, "dollar")
    assert subscribe5(dollar, Subscription("$share/g/$app/+", 0)) == [0]
    pub = client5(harness, "pub")
    pub.send(encode_publish5(Publish5("$app/x", b"d")))
    pub.send(encode_publish5(Publish5("a/b", b"w")))
    assert [p.payload for p in publishes5(wild)] == [b"w"]
    assert [p.payload for p in publishes5(dollar)] == [b"d"]


def test_group_membership_changes_leave_the_match_cache_alone() -> None:
    harness = Harness()
    trie = harness.broker.router.shared.trie
    members = group_of(harness, 1, 0, "$share/g/c/t")
    pub = client5(harness, "pub")
    pub.send(encode_publish5(Publish5("c/t", b"1")))
    before = trie.cache_invalidations
    assert subscribe5(client5(harness, "more"), Subscription("$share/g/c/t", 0)) == [0]
    extra = client5(harness, "extra")
    assert subscribe5(extra, Subscription("$share/g/c/t", 0)) == [0]
    assert trie.cache_invalidations == before
    assert trie.count == 1
    pub.send(encode_publish5(Publish5("c/t", b"2")))
    assert len(publishes5(members[0])) + len(publishes5(extra)) == 1
    assert subscribe5(extra, Subscription("$share/other/c/t", 0)) == [0]
    assert trie.cache_invalidations == before + 1 and trie.count == 2


def test_acl_judges_the_inner_filter_and_skips_members_that_may_not_read() -> None:
    harness = Harness()
    harness.broker.set_acl(AclRules.parse("topic readwrite a/#\n"))
    sub = client5(harness, "anon")
    assert subscribe5(sub, Subscription("$share/g/a/#", 1),
                      Subscription("$share/g/b/#", 1)) == [1, 0x87]
    narrow = client5(harness, "narrow")
    assert subscribe5(narrow, Subscription("$share/h/a/+/x", 1)) == [1]
    wide = client5(harness, "wide")
    assert subscribe5(wide, Subscription("$share/h/a/+/x", 1)) == [1]
    # An ACL reload took "narrow"'s right to read: the group skips it.
    session = narrow.connection.session
    assert session is not None
    session.acl = AclRules.parse("topic read b/#").for_client("narrow", None)
    pub = client5(harness, "pub")
    for packet_id in (1, 2, 3):
        pub.send(encode_publish5(Publish5("a/wide/x", b"w", 1, packet_id=packet_id)))
    assert len(publishes5(wide)) == 3 and publishes5(narrow) == []


# -- shared subscriptions: offline members and hand-over -------------------------------------------

def test_connected_members_first_then_offline_queues_qos0_dropped() -> None:
    harness = Harness()
    persistent = client5(harness, "keep", clean_start=False, properties=expiring(600))
    assert subscribe5(persistent, Subscription("$share/g/o/t", 1)) == [1]
    online = client5(harness, "online")
    assert subscribe5(online, Subscription("$share/g/o/t", 1)) == [1]
    persistent.lose()
    pub = client5(harness, "pub")
    for packet_id in range(1, 5):
        pub.send(encode_publish5(Publish5("o/t", b"while-online", 1, packet_id=packet_id)))
    got = publishes5(online)
    assert len(got) == 4
    puback_all(online, got)  # unacknowledged, they would go to the offline member now
    online.disconnect()
    pub.send(encode_publish5(Publish5("o/t", b"qos0")))
    pub.send(encode_publish5(Publish5("o/t", b"queued", 1, packet_id=9)))
    assert pub.received_packets5()[-1] == Puback5(9)
    again = harness.client()
    assert again.connect5("keep", clean_start=False).session_present
    assert [p.payload for p in publishes5(again)] == [b"queued"]


def test_a_clean_member_leaving_hands_unacked_messages_to_another() -> None:
    harness = Harness(Limits(max_inflight_messages=2))
    leaving, staying = group_of(harness, 2)
    pub = client5(harness, "pub")
    for number in range(8):
        pub.send(encode_publish5(Publish5("s/t", str(number).encode(), 1,
                                          packet_id=number + 1)))
    first = publishes5(leaving)
    assert [p.payload for p in first] == [b"0", b"2"]  # 4 and 6 wait in its queue
    leaving.send(encode_ack5(PacketType.PUBACK, first[0].packet_id))  # "0" is done
    harness.broker.flush()
    leaving.lose()
    got: list[bytes] = []
    for _ in range(10):
        packets = publishes5(staying)
        if not packets:
            break
        got += [p.payload for p in packets]
        puback_all(staying, packets)
    assert sorted(got) == [b"1", b"2", b"3", b"4", b"5", b"6", b"7"]
    assert Counter(got) == Counter(set(got))  # none twice


def test_a_persistent_member_leaving_keeps_in_flight_and_hands_over_its_queue() -> None:
    harness = Harness(Limits(max_inflight_messages=1))
    keep = client5(harness, "keep", clean_start=False, properties=expiring(600))
    assert subscribe5(keep, Subscription("$share/g/p/t", 1)) == [1]
    other = client5(harness, "other")
    assert subscribe5(other, Subscription("$share/g/p/t", 1)) == [1]
    pub = client5(harness, "pub")
    for number in range(4):
        pub.send(encode_publish5(Publish5("p/t", str(number).encode(), 1,
                                          packet_id=number + 1)))
    assert [p.payload for p in publishes5(keep)] == [b"0"]  # "2" queued behind it
    got = publishes5(other)
    assert [p.payload for p in got] == [b"1"]  # "3" queued behind it
    keep.lose()
    for _ in range(3):
        puback_all(other, got[-1:])
        got += publishes5(other)
    assert [p.payload for p in got] == [b"1", b"3", b"2"]
    again = harness.client()
    again.connect5("keep", clean_start=False)
    assert [(p.payload, p.dup) for p in publishes5(again)] == [(b"0", True)]


def test_an_expired_member_session_hands_over_even_in_flight() -> None:
    harness = Harness()
    keep = client5(harness, "keep", clean_start=False, properties=expiring(10))
    assert subscribe5(keep, Subscription("$share/g/x/t", 1)) == [1]
    pub = client5(harness, "pub")
    pub.send(encode_publish5(Publish5("x/t", b"stuck", 1, packet_id=1)))
    assert [p.payload for p in publishes5(keep)] == [b"stuck"]
    keep.lose()
    late = client5(harness, "late")
    assert subscribe5(late, Subscription("$share/g/x/t", 1)) == [1]
    assert publishes5(late) == []
    harness.tick(11.0)
    assert [(p.payload, p.dup) for p in publishes5(late)] == [(b"stuck", False)]


def test_shared_subscriptions_for_311_clients() -> None:
    harness = Harness()
    first = harness.connected("a")
    second = harness.connected("b")
    assert first.subscribe(("$share/g/t", 1)) == [1]
    assert second.subscribe(("$share/g/t", 2)) == [2]
    assert first.subscribe(("$share/+/t", 1)) == [0x80]
    pub = harness.connected("pub")
    for _ in range(4):
        pub.publish("t", b"m", 1)
    assert len(first.publishes()) == 2 and len(second.publishes()) == 2
    first.unsubscribe("$share/g/t")
    pub.publish("t", b"n", 1)
    assert first.publishes() == [] and len(second.publishes()) == 1
