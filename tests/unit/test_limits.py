"""Resource limits enforced by the core, each at its bound and one past it (fake clock)."""

from __future__ import annotations

from culex.core.limits import Limits
from culex.protocol.packets import Publish
from tests.unit.core_helpers import Harness


def payloads(packets: list[object]) -> list[bytes]:
    return [p.payload for p in packets if isinstance(p, Publish)]


def test_max_subscriptions_refuses_new_filters_but_allows_renewal() -> None:
    harness = Harness(Limits(max_subscriptions=2))
    client = harness.connected("c")
    assert client.subscribe(("a", 0), ("b", 1), ("c", 0)) == [0, 1, 0x80]
    assert client.subscribe(("a", 1)) == [1]  # replacing an existing one is not a new one
    assert harness.broker.subscriptions.count == 2


def test_max_client_id_length() -> None:
    harness = Harness(Limits(max_client_id_length=8))
    assert harness.client().connect("x" * 8).return_code == 0
    refused = harness.client()
    assert refused.connect("x" * 9).return_code == 0x02
    assert refused.closed


def test_max_queued_bytes_bounds_an_offline_queue() -> None:
    harness = Harness(Limits(max_queued_bytes=1000, max_queued_messages=1000))
    subscriber = harness.connected("sub", clean_session=False)
    assert subscriber.subscribe(("t", 1)) == [1]
    subscriber.lose()
    publisher = harness.connected("pub")
    for index in range(5):
        publisher.publish("t", bytes([index]) * 300, qos=1)
    assert harness.broker.stats.publishes_dropped == 2  # 3 x 300 fit in 1000 bytes
    back = harness.client()
    assert back.connect("sub", clean_session=False).session_present
    assert [p[:1] for p in payloads(back.received_packets())] == [b"\x00", b"\x01", b"\x02"]


def test_max_retained_messages_keeps_replacing_and_clearing_possible() -> None:
    harness = Harness(Limits(max_retained_messages=2))
    publisher = harness.connected("pub")
    publisher.publish("r/1", b"one", retain=True)
    publisher.publish("r/2", b"two", retain=True)
    publisher.publish("r/3", b"three", retain=True)  # a new topic past the bound: not stored
    publisher.publish("r/1", b"uno", retain=True)  # replacing works
    assert harness.broker.retained.count == 2
    assert harness.broker.stats.retained_dropped == 1
    watcher = harness.connected("watcher")
    watcher.subscribe(("r/#", 0))
    assert sorted(payloads(watcher.received_packets())) == [b"two", b"uno"]
    publisher.publish("r/2", b"", retain=True)  # clearing works and makes room
    publisher.publish("r/3", b"three", retain=True)
    assert harness.broker.retained.get("r/3") is not None


def test_max_publish_rate_pauses_reading_then_resumes() -> None:
    harness = Harness(Limits(max_publish_rate=10))
    subscriber = harness.connected("sub")
    subscriber.subscribe(("t", 0))
    publisher = harness.connected("pub", keepalive=2)
    for index in range(10):
        publisher.publish("t", b"%d" % index)  # the one-second burst
    assert not publisher.sink.reading_paused
    publisher.publish("t", b"over")
    assert publisher.sink.reading_paused
    assert len(payloads(subscriber.received_packets())) == 11  # nothing read is dropped
    harness.tick(harness.now + 0.05)
    assert publisher.sink.reading_paused  # 1 token short: 0.1 s at 10/s
    harness.tick(harness.now + 0.1)
    assert not publisher.sink.reading_paused
    # Not reading was our doing: the keep-alive clock restarted when reading resumed.
    harness.tick(harness.now + 2.9)
    assert not publisher.closed
    harness.tick(harness.now + 0.2)
    assert publisher.closed  # then 1.5 x keep-alive of real silence closes it


def test_no_publish_rate_limit_by_default() -> None:
    harness = Harness()
    publisher = harness.connected("pub")
    for _ in range(5000):
        publisher.publish("t", b"x")
    assert not publisher.sink.reading_paused


def test_max_publish_bytes_rate_pauses_reading_then_resumes() -> None:
    """1,000 bytes/s: ten 100-byte PUBLISHes are the burst; the eleventh is read (nothing read
    is dropped) and reading waits until the bucket is back above zero."""
    harness = Harness(Limits(max_publish_bytes_rate=1000))
    subscriber = harness.connected("sub")
    subscriber.subscribe(("t", 0))
    publisher = harness.connected("pub")
    payload = b"x" * 95  # + 2 fixed header + 3 topic = a 100-byte packet
    for _ in range(10):
        publisher.publish("t", payload)
    assert not publisher.sink.reading_paused
    publisher.publish("t", payload)
    assert publisher.sink.reading_paused
    assert len(payloads(subscriber.received_packets())) == 11
    harness.tick(harness.now + 0.05)
    assert publisher.sink.reading_paused  # 100 bytes short: 0.1 s at 1,000 bytes/s
    harness.tick(harness.now + 0.1)
    assert not publisher.sink.reading_paused


def test_publish_rates_combine_the_longer_wait_wins() -> None:
    """Both limits at once: a burst within the message rate but over the byte rate waits for
    the byte bucket."""
    harness = Harness(Limits(max_publish_rate=100, max_publish_bytes_rate=1000))
    publisher = harness.connected("pub")
    publisher.publish("t", b"y" * 1995)  # one 2,000-byte packet: 1 s of debt at 1,000 B/s
    assert publisher.sink.reading_paused
    harness.tick(harness.now + 0.9)
    assert publisher.sink.reading_paused
    harness.tick(harness.now + 0.2)
    assert not publisher.sink.reading_paused


def test_a_filling_qos1_queue_pauses_its_publisher_instead_of_dropping() -> None:
    """A connected subscriber that acknowledges slower than its publisher sends: at half its
    queue the publisher is no longer read (nothing acknowledged is dropped); at a quarter it
    is read again."""
    harness = Harness(Limits(max_inflight_messages=2, max_queued_messages=8))
    subscriber = harness.connected("sub")
    assert subscriber.subscribe(("t", 1)) == [1]
    publisher = harness.connected("pub")
    for index in range(6):  # 2 in flight, then the queue: 4 = half of 8
        publisher.publish("t", bytes([index]), qos=1)
    assert publisher.connection.reading is False
    assert harness.broker.stats.publishes_dropped == 0
    delivered = payloads(subscriber.received_packets())
    assert delivered == [b"\x00", b"\x01"]
    subscriber.puback(1)
    subscriber.puback(2)  # two more go out: the queue is at 2 = a quarter
    assert publisher.connection.reading is True
    assert payloads(subscriber.received_packets()) == [b"\x02", b"\x03"]


def test_a_subscriber_that_stops_acknowledging_is_given_up_on() -> None:
    """The hold lasts stalled_reader_timeout; then the publisher goes on, the queue overflows
    as before, and nothing holds the publisher again until that queue drains."""
    harness = Harness(Limits(max_inflight_messages=1, max_queued_messages=4,
                             stalled_reader_timeout=2.0))
    subscriber = harness.connected("sub")
    assert subscriber.subscribe(("t", 1)) == [1]
    publisher = harness.connected("pub")
    for index in range(3):
        publisher.publish("t", bytes([index]), qos=1)
    assert publisher.connection.reading is False
    harness.tick(2.5)
    assert publisher.connection.reading is True
    for index in range(3, 8):
        publisher.publish("t", bytes([index]), qos=1)
    assert publisher.connection.reading is True
    assert harness.broker.stats.publishes_dropped == 3  # 1 in flight + 4 queued, 3 over
