"""$SYS topics: names (Mosquitto's), retained, periodic, decimal payloads that track activity."""

from __future__ import annotations

import queue
import re
import time
from collections.abc import Callable

import pytest

from tests.integration.clients import Clients, Message, PahoClient

NUMERIC_TOPICS = [
    "$SYS/broker/clients/connected",
    "$SYS/broker/clients/disconnected",
    "$SYS/broker/clients/total",
    "$SYS/broker/clients/maximum",
    "$SYS/broker/messages/received",
    "$SYS/broker/messages/sent",
    "$SYS/broker/bytes/received",
    "$SYS/broker/bytes/sent",
    "$SYS/broker/publish/messages/received",
    "$SYS/broker/publish/messages/sent",
    "$SYS/broker/publish/messages/dropped",
    "$SYS/broker/subscriptions/count",
    "$SYS/broker/retained messages/count",
]
ALL_TOPICS = ["$SYS/broker/version", "$SYS/broker/uptime", *NUMERIC_TOPICS]



class SysWatcher:
    """A client subscribed to $SYS/# that remembers the latest payload of every topic."""

    def __init__(self, client: PahoClient) -> None:
        self.client = client
        self.latest: dict[str, str] = {}
        self.history: list[Message] = []
        assert client.subscribe("$SYS/#", 0) == [0]

    def _take(self, timeout: float) -> Message | None:
        try:
            message = self.client.messages.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        self.latest[message.topic] = message.payload.decode()
        self.history.append(message)
        return message

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 3.5) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline:
                pytest.fail(f"$SYS never showed {what}; latest: {self.latest}")
            self._take(deadline - time.monotonic())

    def number(self, topic: str) -> int:
        self.wait(lambda: topic in self.latest, topic)
        return int(self.latest[topic])

    def wait_number(self, topic: str, ok: Callable[[int], bool], what: str) -> int:
        self.wait(lambda: topic in self.latest and ok(int(self.latest[topic])), f"{topic} {what}")
        return int(self.latest[topic])

    def settle(self) -> None:
        """Wait for a periodic (non-retained) uptime update and the rest of that round, so the
        latest values reflect the present, not retained copies from before we connected.

        Not the broker's first round ("0 seconds"): the $SYS topics it retains are not yet
        counted in it. A client may see that round live when it connects at once (with
        workers, through a worker that listens before the one publishing $SYS)."""
        start = len(self.history)

        def fresh() -> bool:
            return any(
                m.topic == "$SYS/broker/uptime" and not m.retain
                and m.payload != b"0 seconds" for m in self.history[start:]
            )

        self.wait(fresh, "a periodic uptime update")
        while self._take(0.3) is not None:
            pass


@pytest.fixture
def sys_watcher(clients: Clients) -> SysWatcher:
    return SysWatcher(clients.paho("sys-watcher"))


def test_all_topics_published_retained_with_expected_formats(
    clients: Clients, sys_watcher: SysWatcher
) -> None:
    sys_watcher.wait(lambda: all(t in sys_watcher.latest for t in ALL_TOPICS), "all topics")
    # A subscriber arriving now gets every one of them at once, retained.
    late = clients.paho()
    assert late.subscribe("$SYS/#", 0) == [0]
    retained: dict[str, str] = {}
    deadline = time.monotonic() + 3
    while not all(t in retained for t in ALL_TOPICS) and time.monotonic() < deadline:
        message = late.get()
        if message.retain:
            retained[message.topic] = message.payload.decode()
    missing = [t for t in ALL_TOPICS if t not in retained]
    assert missing == [], f"not retained: {missing}"
    assert retained["$SYS/broker/version"].strip() != ""
    assert re.fullmatch(r"\d+ seconds", retained["$SYS/broker/uptime"])
    for topic in NUMERIC_TOPICS:
        assert re.fullmatch(r"\d+", retained[topic]), f"{topic} = {retained[topic]!r}"


def test_published_periodically(sys_watcher: SysWatcher) -> None:
    """With sys_interval 1 the uptime is re-published: a live update (retain 0, as for any
    message forwarded to an existing subscriber) with a larger value soon follows."""
    first = sys_watcher.history[0] if sys_watcher.history else None
    sys_watcher.wait(lambda: "$SYS/broker/uptime" in sys_watcher.latest, "uptime")
    before = int(sys_watcher.latest["$SYS/broker/uptime"].split()[0])
    sys_watcher.wait(
        lambda: int(sys_watcher.latest["$SYS/broker/uptime"].split()[0]) > before,
        "a later uptime",
    )
    updates = [m for m in sys_watcher.history if m.topic == "$SYS/broker/uptime"]
    assert updates[-1].retain is False, (first, updates)


def test_clients_connected_total_maximum_disconnected(
    clients: Clients, sys_watcher: SysWatcher
) -> None:
    connected = "$SYS/broker/clients/connected"
    sys_watcher.wait_number(connected, lambda n: n == 1, "== 1 (the watcher)")
    extra = [clients.paho(f"extra{i}") for i in range(3)]
    persistent = clients.paho("sys-persistent", clean_session=False)
    sys_watcher.wait_number(connected, lambda n: n == 5, "== 5")
    sys_watcher.wait_number("$SYS/broker/clients/maximum", lambda n: n >= 5, ">= 5")
    for client in extra:
        client.disconnect()
    persistent.disconnect()  # its session stays: a disconnected client
    sys_watcher.wait_number(connected, lambda n: n == 1, "== 1 again")
    sys_watcher.wait_number("$SYS/broker/clients/disconnected", lambda n: n == 1, "== 1")
    sys_watcher.wait_number("$SYS/broker/clients/total", lambda n: n == 2, "== 2")
    assert sys_watcher.number("$SYS/broker/clients/maximum") >= 5


def test_message_and_byte_counters(clients: Clients, sys_watcher: SysWatcher) -> None:
    subscriber = clients.subscriber("count/t", 1)
    publisher = clients.raw("counter-pub")
    payload = b"x" * 1000
    for i in range(5):
        publisher.publish("count/t", payload, qos=1, packet_id=i + 1)
    assert len(subscriber.get_many(5)) == 5
    # Nobody else publishes in this fresh broker.
    sys_watcher.wait_number("$SYS/broker/publish/messages/received", lambda n: n == 5, "== 5")
    sys_watcher.wait_number("$SYS/broker/publish/messages/sent", lambda n: n >= 5, ">= 5")
    # All packets: + at least the publisher's CONNECT and the subscriber's CONNECT/SUBSCRIBE.
    sys_watcher.wait_number("$SYS/broker/messages/received", lambda n: n >= 8, ">= 8")
    sys_watcher.wait_number("$SYS/broker/messages/sent", lambda n: n >= 5, ">= 5")
    sys_watcher.wait_number("$SYS/broker/bytes/received", lambda n: n >= 5000, ">= 5000")
    sys_watcher.wait_number("$SYS/broker/bytes/sent", lambda n: n >= 5000, ">= 5000")


def test_subscriptions_count(clients: Clients, sys_watcher: SysWatcher) -> None:
    topic = "$SYS/broker/subscriptions/count"
    # Only the watcher's own "$SYS/#" in this fresh broker.
    sys_watcher.wait_number(topic, lambda n: n == 1, "== 1")
    client = clients.paho("sub-counter")
    assert client.subscribe([("c/1", 0), ("c/2", 1), ("c/+/#", 2)]) == [0, 1, 2]
    sys_watcher.wait_number(topic, lambda n: n == 4, "== 4")
    client.unsubscribe("c/1")
    sys_watcher.wait_number(topic, lambda n: n == 3, "== 3")
    client.disconnect()  # clean session: its subscriptions go with it
    sys_watcher.wait_number(topic, lambda n: n == 1, "== 1 again")


def test_retained_messages_count(clients: Clients, sys_watcher: SysWatcher) -> None:
    topic = "$SYS/broker/retained messages/count"
    sys_watcher.settle()
    base = sys_watcher.number(topic)  # may include retained $SYS topics (Mosquitto counts them)
    publisher = clients.paho()
    for i in range(5):
        publisher.publish(f"rc/{i}", b"kept", qos=1, retain=True)
    sys_watcher.wait_number(topic, lambda n: n == base + 5, f"== {base + 5}")
    for i in range(3):
        publisher.publish(f"rc/{i}", b"", qos=1, retain=True)
    sys_watcher.wait_number(topic, lambda n: n == base + 2, f"== {base + 2}")
