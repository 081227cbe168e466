"""Retained messages: the RetainedStore on its own, then through the broker (delivered on
subscribe with RETAIN set, forwarded live without it, replaced, cleared, the `$` rule)."""

from __future__ import annotations

import pytest

from culex.core.message import Message
from culex.core.retained_store import RetainedStore
from culex.protocol.topics import topic_matches
from tests.unit.core_helpers import Harness, payloads


def retained(topic: str, payload: bytes = b"x", qos: int = 0) -> Message:
    return Message(topic, payload, qos, True)


def topics(store: RetainedStore, topic_filter: str) -> set[str]:
    found = [m.topic for m in store.match(topic_filter)]
    assert len(found) == len(set(found)), f"duplicates for {topic_filter!r}: {found}"
    return set(found)


class TestStore:
    def test_set_get_replace_clear(self) -> None:
        store = RetainedStore()
        store.set(retained("a/b", b"one"))
        assert store.count == 1
        stored = store.get("a/b")
        assert stored is not None and stored.payload == b"one"

        store.set(retained("a/b", b"two"))
        assert store.count == 1, "replacing is not a new retained message"
        stored = store.get("a/b")
        assert stored is not None and stored.payload == b"two"

        store.set(retained("a/b", b""))
        assert store.count == 0
        assert store.get("a/b") is None

    def test_clear_of_unknown_topic_is_harmless(self) -> None:
        store = RetainedStore()
        store.set(retained("a/b"))
        store.set(retained("a", b""))
        store.set(retained("a/b/c", b""))
        store.set(retained("zz", b""))
        assert store.count == 1
        assert store.get("a/b") is not None

    def test_get_of_prefix_or_missing(self) -> None:
        store = RetainedStore()
        store.set(retained("a/b/c"))
        assert store.get("a/b") is None
        assert store.get("a/b/c/d") is None
        assert store.get("x") is None

    def test_clear_prunes_but_keeps_parents_and_children(self) -> None:
        store = RetainedStore()
        store.set(retained("a"))
        store.set(retained("a/b/c"))
        store.set(retained("a/b/c", b""))
        assert list(store._root.children["a"].children) == []
        assert store.get("a") is not None
        store.set(retained("a/b/c"))
        store.set(retained("a", b""))
        assert store.get("a/b/c") is not None
        store.set(retained("a/b/c", b""))
        assert store._root.children == {}
        assert store.count == 0

    @pytest.mark.parametrize(("topic_filter", "expected"), [
        ("a/b", {"a/b"}),
        ("a", {"a"}),
        ("a/+", {"a/b", "a/c", "a/"}),
        ("+/b", {"a/b", "x/b"}),
        ("+", {"a"}),
        ("a/#", {"a", "a/b", "a/c", "a/b/c", "a/"}),
        ("a/b/#", {"a/b", "a/b/c"}),
        ("#", {"a", "a/b", "a/c", "a/b/c", "x/b", "a/", "/lead"}),
        ("+/#", {"a", "a/b", "a/c", "a/b/c", "x/b", "a/", "/lead"}),
        ("+/+", {"a/b", "a/c", "x/b", "a/", "/lead"}),
        ("/+", {"/lead"}),
        ("a/+/#", {"a/b", "a/c", "a/b/c", "a/"}),
        ("$SYS/#", {"$SYS/broker/uptime", "$SYS/x"}),
        ("$SYS/+", {"$SYS/x"}),
        ("$SYS/broker/+", {"$SYS/broker/uptime"}),
        ("+/broker/uptime", set()),
        ("+/x", set()),
        ("$app/#", set()),
        ("nothing/#", set()),
        ("a/b/c/d", set()),
    ])
    def test_match(self, topic_filter: str, expected: set[str]) -> None:
        store = RetainedStore()
        every = ["a", "a/b", "a/c", "a/b/c", "x/b", "a/", "/lead", "$SYS/broker/uptime",
                 "$SYS/x"]
        for topic in every:
            store.set(retained(topic))
        assert store.count == len(every)
        assert topics(store, topic_filter) == expected
        assert expected == {t for t in every if topic_matches(topic_filter, t)}, \
            "store and topic_matches agree"

    def test_cleared_message_not_matched(self) -> None:
        store = RetainedStore()
        store.set(retained("a/b"))
        store.set(retained("a/c"))
        store.set(retained("a/b", b""))
        assert topics(store, "#") == {"a/c"}
        assert topics(store, "a/+") == {"a/c"}

    def test_deep_topic(self) -> None:
        store = RetainedStore()
        topic = "/".join(["a"] * 65_000)
        store.set(retained(topic, b"deep"))
        assert store.get(topic) is not None
        assert topics(store, "#") == {topic}
        assert topics(store, "/".join(["+"] * 65_000)) == {topic}
        store.set(retained(topic, b""))
        assert store.count == 0 and store._root.children == {}


class TestThroughBroker:
    def test_delivered_on_subscribe_with_retain_flag(self) -> None:
        harness = Harness()
        publisher = harness.connected("pub")
        publisher.publish("r/1", b"kept", qos=1, retain=True)
        assert harness.broker.retained.count == 1
        sub = harness.connected("sub")
        assert sub.subscribe(("r/#", 1)) == [1]
        [message] = sub.publishes()
        assert (message.topic, message.payload, message.retain, message.qos) == (
            "r/1", b"kept", True, 1)

    def test_retained_qos_is_min_of_stored_and_granted(self) -> None:
        harness = Harness()
        harness.connected("pub").publish("r", b"q2", qos=2, retain=True)
        for granted, expected in ((0, 0), (1, 1), (2, 2)):
            sub = harness.connected(f"sub{granted}")
            sub.subscribe(("r", granted))
            [message] = sub.publishes()
            assert (message.qos, message.retain) == (expected, True)

    def test_qos0_retained_keeps_qos0(self) -> None:
        harness = Harness()
        harness.connected("pub").publish("r", b"q0", qos=0, retain=True)
        sub = harness.connected("sub")
        sub.subscribe(("r", 2))
        [message] = sub.publishes()
        assert (message.qos, message.retain, message.payload) == (0, True, b"q0")

    def test_live_forwarding_clears_the_retain_flag(self) -> None:
        harness = Harness()
        sub = harness.connected("sub")
        sub.subscribe(("r", 1))
        harness.connected("pub").publish("r", b"live", qos=1, retain=True)
        [message] = sub.publishes()
        assert (message.payload, message.retain) == (b"live", False)
        stored = harness.broker.retained.get("r")
        assert stored is not None and stored.payload == b"live"

    def test_replace(self) -> None:
        harness = Harness()
        publisher = harness.connected("pub")
        publisher.publish("r", b"old", retain=True)
        publisher.publish("r", b"new", retain=True)
        sub = harness.connected("sub")
        sub.subscribe(("r", 0))
        assert payloads(sub.received_packets()) == [b"new"]
        assert harness.broker.retained.count == 1

    def test_clear_with_empty_payload(self) -> None:
        harness = Harness()
        watcher = harness.connected("watch")
        watcher.subscribe(("r", 0))
        publisher = harness.connected("pub")
        publisher.publish("r", b"old", retain=True)
        publisher.publish("r", b"", retain=True)
        live = watcher.publishes()
        assert [(p.payload, p.retain) for p in live] == [(b"old", False), (b"", False)], \
            "the clearing message is still forwarded to current subscribers"
        assert harness.broker.retained.count == 0
        sub = harness.connected("sub")
        sub.subscribe(("r", 0))
        assert sub.received_packets() == []

    def test_non_retained_publish_does_not_touch_the_store(self) -> None:
        harness = Harness()
        publisher = harness.connected("pub")
        publisher.publish("r", b"kept", retain=True)
        publisher.publish("r", b"passing")
        publisher.publish("r", b"")
        stored = harness.broker.retained.get("r")
        assert stored is not None and stored.payload == b"kept"

    def test_resubscribe_resends_retained(self) -> None:
        harness = Harness()
        harness.connected("pub").publish("r", b"kept", retain=True)
        sub = harness.connected("sub")
        sub.subscribe(("r", 0))
        assert payloads(sub.received_packets()) == [b"kept"]
        sub.subscribe(("r", 0))
        [again] = sub.publishes()
        assert (again.payload, again.retain) == (b"kept", True)

    def test_wildcards_do_not_match_dollar_topics(self) -> None:
        harness = Harness()
        publisher = harness.connected("pub")
        publisher.publish("$app/x", b"dollar", retain=True)
        publisher.publish("app/x", b"plain", retain=True)
        sub = harness.connected("sub")
        sub.subscribe(("#", 0))
        assert payloads(sub.received_packets()) == [b"plain"]
        sub.subscribe(("+/x", 0))
        assert payloads(sub.received_packets()) == [b"plain"]
        sub.subscribe(("$app/#", 0))
        assert payloads(sub.received_packets()) == [b"dollar"]

    def test_one_subscribe_many_filters_sends_each_filters_retained(self) -> None:
        harness = Harness()
        publisher = harness.connected("pub")
        publisher.publish("a", b"A", retain=True)
        publisher.publish("b", b"B", retain=True)
        sub = harness.connected("sub")
        assert sub.subscribe(("a", 0), ("b", 0), ("bad/#/x", 0)) == [0, 0, 0x80]
        assert sorted(payloads(sub.received_packets())) == [b"A", b"B"]

    def test_retained_qos1_delivery_completes_with_puback(self) -> None:
        harness = Harness()
        harness.connected("pub").publish("r", b"kept", qos=1, retain=True)
        sub = harness.connected("sub")
        sub.subscribe(("r", 1))
        [message] = sub.publishes()
        sub.puback(message.packet_id)
        session = sub.connection.session
        assert session is not None and session.inflight == {}
