"""What survives a kill -9 and a restart, one promise per test.

Every test runs a real `culex serve`, builds up state over real sockets, kills the broker with
SIGKILL (no shutdown code runs, nothing is flushed on the way out) and starts it again on the
same port with the same data directory, then checks from the outside that the state is back:

* persistent sessions (session present 1) and their subscriptions (and unsubscriptions);
* QoS 1 and QoS 2 messages queued for offline sessions, with exact content and per-publisher
  order, delivered once, and gone for good once delivered;
* outbound messages in flight: re-sent with DUP=1 under the same packet id, the rest of the
  queue after them without DUP; after a PUBREC, the PUBREL is re-sent instead of the PUBLISH;
* inbound QoS 2 awaiting PUBREL: the PUBREL after the restart gets PUBCOMP, a retransmitted
  PUBLISH gets PUBREC, and the message is routed exactly once;
* retained messages (set, replaced, cleared);
* wills of clients connected when the broker died, published once at restart, and only those;
* clean-session state, and everything with durability "none", is not kept;
* a corrupt or foreign database file stops the broker with one error line naming the file.

With `durability = "sync"` a PUBACK/PUBREC/PUBCOMP means the state it covers is on disk, so
most tests kill the broker right after the last acknowledgement, with no grace period. Where the
state is not covered by an acknowledgement the client sees (SUBACK, CONNECT with a will, the
subscriber's own acks), `commit_barrier()` waits for it with one more QoS 1 round trip.
"""

from __future__ import annotations

import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import AGAINST, BrokerFactory, BrokerProcess, free_port, render_config
from tests.integration.clients import (
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    PahoClient,
    RawClient,
    Will,
    pubcomp,
    publish_packet,
    pubrec,
    pubrel,
    wait_until,
)
from tests.robustness.durability_clients import commit_barrier, restart

pytestmark = pytest.mark.skipif(AGAINST != "culex",
                                reason="Culex's own storage (mosquitto runs without persistence)")

# How long silence is observed before "nothing more arrives" is believed, where a test does not
# say (127.0.0.1 deliveries take milliseconds).
QUIET = 0.4


def payload_for(publisher: int, index: int) -> bytes:
    """Distinct, binary (NUL and high bytes), varying length; one large one per publisher."""
    tail = bytes((index * 7 + k) % 256 for k in range(index % 50))
    if index == 5:
        tail = bytes(range(256)) * 400  # 100 KiB
    return struct.pack("!HI", publisher, index) + b"\x00\xff" + tail


def db_path(broker: BrokerProcess) -> Path:
    return broker.tmp / "data" / "culex.db"


# --- sessions and subscriptions -----------------------------------------------------------------


def test_session_and_subscriptions_survive_kill(broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    sub = PahoClient(broker, "restart-sub", clean_session=False)
    assert sub.connect().session_present is False
    sub.subscribe("sess/a/#", 1)
    sub.subscribe("sess/b/+", 2)
    sub.subscribe("sess/c", 0)
    sub.subscribe("sess/gone", 2)
    sub.unsubscribe("sess/gone")
    sub.disconnect()
    commit_barrier(broker)  # SUBACK/UNSUBACK are not covered by the promise; this PUBACK is

    restart(broker)

    sub = PahoClient(broker, "restart-sub", clean_session=False)
    assert sub.connect().session_present is True, "session present must be 1 after a restart"
    pub = PahoClient(broker, "restart-pub", clean_session=True)
    pub.connect()
    # No SUBSCRIBE after the restart: the restored subscriptions route these, each at
    # min(message QoS, granted QoS).
    pub.publish("sess/a/x/y", b"a", 2)
    pub.publish("sess/b/z", b"b", 2)
    pub.publish("sess/c", b"c", 2)
    pub.publish("sess/b/z/deeper", b"no match", 2)
    pub.publish("sess/gone", b"unsubscribed before the kill", 2)
    got = sub.drain(3, quiet=QUIET)
    assert sorted((m.topic, m.payload, m.qos) for m in got) == [
        ("sess/a/x/y", b"a", 1), ("sess/b/z", b"b", 2), ("sess/c", b"c", 0)]
    pub.disconnect()
    sub.disconnect()

    # And a second restart without any change in between keeps them as well.
    commit_barrier(broker)
    restart(broker)
    sub = PahoClient(broker, "restart-sub", clean_session=False)
    assert sub.connect().session_present is True
    pub = PahoClient(broker, "restart-pub", clean_session=True)
    pub.connect()
    pub.publish("sess/b/q", b"again", 2)
    assert [(m.topic, m.payload, m.qos) for m in sub.drain(1, quiet=QUIET)] == [
        ("sess/b/q", b"again", 2)]
    pub.disconnect()
    sub.disconnect()


def test_clean_session_state_is_not_kept(broker_factory: BrokerFactory) -> None:
    """A persistent session ended by a clean-session CONNECT stays ended after a restart, and a
    clean session never comes back as a persistent one."""
    broker = broker_factory()
    sub = PahoClient(broker, "clean-later", clean_session=False)
    sub.connect()
    sub.subscribe("clean/#", 1)
    sub.disconnect()
    pub = PahoClient(broker, "clean-pub", clean_session=True)
    pub.connect()
    pub.publish("clean/1", b"queued for the persistent session", 1)
    pub.disconnect()
    # The same client id now asks for a clean session: subscriptions and queue are dropped.
    clean = PahoClient(broker, "clean-later", clean_session=True)
    assert clean.connect().session_present is False
    clean.subscribe("clean/#", 1)
    commit_barrier(broker)

    restart(broker)

    again = PahoClient(broker, "clean-later", clean_session=False)
    assert again.connect().session_present is False, \
        "a clean session's state must not survive a restart"
    pub = PahoClient(broker, "clean-pub", clean_session=True)
    pub.connect()
    pub.publish("clean/2", b"nobody subscribed", 1)
    got = again.drain(0, quiet=QUIET)
    assert not got, f"an old subscription or queue came back: {[m.payload for m in got]}"
    pub.disconnect()
    again.disconnect()


# --- queued messages ----------------------------------------------------------------------------


def test_offline_queued_qos1_qos2_delivered_in_order_after_kill(
        broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    sub = PahoClient(broker, "queue-sub", clean_session=False)
    sub.connect()
    sub.subscribe("queue/#", 2)
    sub.disconnect()

    one = PahoClient(broker, "queue-pub-1", clean_session=True)
    two = PahoClient(broker, "queue-pub-2", clean_session=False)
    one.connect()
    two.connect()
    count = 40
    for index in range(count):  # interleaved, each acknowledged before the next
        one.publish("queue/one", payload_for(1, index), 1)
        two.publish("queue/two", payload_for(2, index), 2)

    restart(broker)  # right after the last PUBCOMP: no grace period
    one.drop()
    two.drop()

    sub = PahoClient(broker, "queue-sub", clean_session=False)
    assert sub.connect().session_present is True
    got = sub.drain(2 * count, quiet=QUIET)
    by_topic: dict[str, list[tuple[bytes, int]]] = {"queue/one": [], "queue/two": []}
    for message in got:
        by_topic[message.topic].append((bytes(message.payload), message.qos))
    assert by_topic["queue/one"] == [(payload_for(1, i), 1) for i in range(count)], \
        "QoS 1 messages lost, reordered, altered or duplicated"
    assert by_topic["queue/two"] == [(payload_for(2, i), 2) for i in range(count)], \
        "QoS 2 messages lost, reordered, altered or duplicated"
    sub.disconnect()

    # Delivered and acknowledged: after one more restart nothing comes again.
    commit_barrier(broker)
    restart(broker)
    sub = PahoClient(broker, "queue-sub", clean_session=False)
    assert sub.connect().session_present is True
    leftovers = sub.drain(0, quiet=0.6)
    assert not leftovers, f"{len(leftovers)} completed messages delivered again"
    sub.disconnect()


# --- in-flight outbound messages ----------------------------------------------------------------


@pytest.mark.parametrize("qos", [1, 2])
def test_inflight_outbound_resent_with_dup_and_same_packet_id(
        broker_factory: BrokerFactory, qos: int) -> None:
    """A subscriber that reads and never acknowledges: after the restart the in-flight window
    comes again with DUP=1 under the same packet ids, the queued rest after it without DUP."""
    broker = broker_factory(limits={"max_inflight_messages": 2})
    sub = RawClient(broker)
    sub.connect("inflight-sub", clean=False)
    assert sub.subscribe([("inflight/#", 2)]) == [2]
    pub = PahoClient(broker, "inflight-pub", clean_session=True)
    pub.connect()
    payloads = [f"in flight {qos}/{i}".encode() for i in range(4)]
    for payload in payloads:
        pub.publish("inflight/t", payload, qos)
    first = [sub.expect_publish() for _ in range(2)]  # the window: 2 in flight, 2 queued
    assert [(m.payload, m.qos, m.dup) for m in first] == [(p, qos, False) for p in payloads[:2]]
    sub.assert_silent(0.2)

    restart(broker)
    pub.drop()
    sub.close()

    sub = RawClient(broker)
    assert sub.connect("inflight-sub", clean=False).session_present is True
    again = [sub.expect_publish() for _ in range(2)]
    assert [(m.packet_id, m.payload, m.qos, m.dup, m.topic) for m in again] == [
        (m.packet_id, m.payload, qos, True, "inflight/t") for m in first], \
        "in-flight messages must be re-sent in order with DUP=1 and their packet ids"
    sub.assert_silent(0.2)  # the window is still full
    for message in again:
        sub.complete(message)
    rest = [sub.receive() for _ in range(2)]
    assert [(m.payload, m.qos, m.dup) for m in rest] == [(p, qos, False) for p in payloads[2:]]
    sub.assert_silent(QUIET)
    sub.disconnect()


def test_pubrel_resent_after_restart_for_pubrecd_qos2(broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    sub = RawClient(broker)
    sub.connect("pubrel-sub", clean=False)
    sub.subscribe([("pubrel/#", 2)])
    pub = PahoClient(broker, "pubrel-pub", clean_session=True)
    pub.connect()
    pub.publish("pubrel/t", b"first", 2)
    pub.publish("pubrel/t", b"second", 2)
    first = sub.expect_publish()
    second = sub.expect_publish()
    assert (first.payload, second.payload) == (b"first", b"second")
    sub.send(pubrec(first.packet_id))
    assert sub.expect(PUBREL).raw == pubrel(first.packet_id)
    # No PUBCOMP: the broker must remember that `first` is released.
    commit_barrier(broker)

    restart(broker)
    pub.drop()
    sub.close()

    sub = RawClient(broker)
    assert sub.connect("pubrel-sub", clean=False).session_present is True
    resent = [sub.read_packet(), sub.read_packet()]
    assert resent[0].raw == pubrel(first.packet_id), \
        f"expected the PUBREL for {first.packet_id} again, got {resent[0]}"
    assert resent[1].type == PUBLISH
    again = resent[1].publish()
    assert (again.packet_id, again.payload, again.dup, again.qos) == (
        second.packet_id, b"second", True, 2)
    sub.send(pubcomp(first.packet_id))
    sub.complete(again)
    sub.assert_silent(QUIET)
    sub.disconnect()

    # Both flows completed: nothing is re-sent after another restart.
    commit_barrier(broker)
    restart(broker)
    sub = RawClient(broker)
    assert sub.connect("pubrel-sub", clean=False).session_present is True
    sub.assert_silent(0.6)
    sub.disconnect()


def test_pubrel_not_sent_before_the_release_is_durable(broker_factory: BrokerFactory) -> None:
    """kill -9 right after the subscriber received PUBREL.

    On PUBREL a QoS 2 receiver hands the message over (if it has not yet), discards the packet
    id and answers PUBCOMP [MQTT-4.3.3-2]; from then on a PUBLISH under that id is a new
    message. So once a PUBREL has left, a restarted broker may re-send the PUBREL but never the
    PUBLISH again, or the subscriber gets the message twice. A few rounds, because the window is
    the time one commit takes."""
    broker = broker_factory()
    sub = RawClient(broker)
    sub.connect("pubrel-race-sub", clean=False)
    sub.subscribe([("pubrel-race", 2)])
    sub.disconnect()
    resent: list[str] = []
    for attempt in range(5):
        sub = RawClient(broker)
        sub.connect("pubrel-race-sub", clean=False)
        pub = RawClient(broker)
        pub.connect("pubrel-race-pub", clean=True)
        payload = f"attempt {attempt}".encode()
        pub.publish("pubrel-race", payload, qos=2, packet_id=1)
        message = sub.expect_publish()
        assert message.payload == payload
        sub.send(pubrec(message.packet_id))
        assert sub.expect(PUBREL).raw == pubrel(message.packet_id)
        restart(broker)  # at once: the subscriber has "delivered" the message and forgotten it
        sub.close()
        pub.close()

        sub = RawClient(broker)
        assert sub.connect("pubrel-race-sub", clean=False).session_present is True
        for got in sub.packets_until_quiet(0.3):
            if got.type == PUBREL:
                sub.send(pubcomp(got.packet_id))
            elif got.type == PUBLISH:
                again = got.publish()
                if again.payload == payload:
                    resent.append(f"attempt {attempt}: PUBLISH id {again.packet_id} "
                                  f"dup={again.dup} re-sent after its PUBREL")
                sub.complete(again)
        sub.disconnect()
        commit_barrier(broker)
    assert not resent, "QoS 2 delivered twice across a restart:\n" + "\n".join(resent)


# --- inbound QoS 2 ------------------------------------------------------------------------------


@pytest.mark.parametrize("retransmit", [False, True], ids=["pubrel", "dup-publish-then-pubrel"])
def test_inbound_qos2_awaiting_pubrel_survives_kill(
        broker_factory: BrokerFactory, retransmit: bool) -> None:
    broker = broker_factory()
    sub = PahoClient(broker, "inbound-sub", clean_session=False)
    sub.connect()
    sub.subscribe("inbound/#", 2)
    sub.disconnect()

    pub = RawClient(broker)
    pub.connect("inbound-pub", clean=False)
    pub.send(publish_packet("inbound/x", b"exactly once", qos=2, packet_id=7))
    assert pub.expect(PUBREC).raw == pubrec(7)

    restart(broker)  # the PUBREC promised: routed and the id remembered, on disk
    pub.close()

    pub = RawClient(broker)
    assert pub.connect("inbound-pub", clean=False).session_present is True
    if retransmit:
        pub.send(publish_packet("inbound/x", b"exactly once", qos=2, packet_id=7, dup=True))
        assert pub.expect(PUBREC).raw == pubrec(7)
    pub.send(pubrel(7))
    assert pub.expect(PUBCOMP).raw == pubcomp(7)
    # Packet id 7 is free again: a new message under it is a new message.
    pub.publish("inbound/x", b"new message, same id", qos=2, packet_id=7)
    pub.disconnect()

    sub = PahoClient(broker, "inbound-sub", clean_session=False)
    assert sub.connect().session_present is True
    got = sub.drain(2, quiet=QUIET)
    assert [(m.payload, m.qos) for m in got] == [
        (b"exactly once", 2), (b"new message, same id", 2)]
    sub.disconnect()


def test_inbound_qos2_released_before_kill_not_routed_again(
        broker_factory: BrokerFactory) -> None:
    """PUBCOMP received, then the broker dies: the publisher's duplicate PUBREL after the
    restart is answered, and a retransmitted PUBLISH (the publisher has lost track) would be a
    new message; what matters is that the broker itself routes the first one only once."""
    broker = broker_factory()
    sub = PahoClient(broker, "released-sub", clean_session=False)
    sub.connect()
    sub.subscribe("released/#", 2)
    sub.disconnect()
    pub = RawClient(broker)
    pub.connect("released-pub", clean=False)
    pub.publish("released/x", b"once", qos=2, packet_id=9)

    restart(broker)
    pub.close()

    pub = RawClient(broker)
    assert pub.connect("released-pub", clean=False).session_present is True
    pub.send(pubrel(9))  # as if our PUBCOMP had been lost
    assert pub.expect(PUBCOMP).raw == pubcomp(9)
    pub.disconnect()
    sub = PahoClient(broker, "released-sub", clean_session=False)
    assert sub.connect().session_present is True
    assert [m.payload for m in sub.drain(1, quiet=QUIET)] == [b"once"]
    sub.disconnect()


# --- retained -----------------------------------------------------------------------------------


def test_retained_messages_survive_kill(broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    pub = PahoClient(broker, "retain-pub", clean_session=True)
    pub.connect()
    pub.publish("retain/a", b"a old", 1, retain=True)
    pub.publish("retain/a", b"a new", 2, retain=True)  # replaced
    pub.publish("retain/b", b"b" * 70_000, 1, retain=True)
    pub.publish("retain/c", b"c", 1, retain=True)
    pub.publish("retain/c", b"", 1, retain=True)  # cleared
    pub.publish("retain/d", b"\x00binary\xff", 0, retain=True)
    pub.disconnect()
    commit_barrier(broker)  # the QoS 0 one has no ack of its own

    expected = [("retain/a", b"a new", 2), ("retain/b", b"b" * 70_000, 1),
                ("retain/d", b"\x00binary\xff", 0)]
    for _round in range(2):  # and once more: a restored retained message stays restored
        restart(broker)
        reader = PahoClient(broker, "retain-reader", clean_session=True)
        reader.connect()
        reader.subscribe("retain/#", 2)
        got = reader.drain(3, quiet=QUIET)
        assert sorted((m.topic, m.payload, m.qos) for m in got) == expected
        assert all(m.retain for m in got)
        reader.disconnect()
        commit_barrier(broker)


# --- wills --------------------------------------------------------------------------------------


def test_will_of_client_connected_at_kill_is_published_once(
        broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    watcher = PahoClient(broker, "will-watcher", clean_session=False)
    watcher.connect()
    watcher.subscribe("will/#", 2)
    watcher.disconnect()
    clean = RawClient(broker)
    clean.connect("will-clean-client", clean=True,
                  will=Will("will/clean-client", b"clean session client died", 1, True))
    persistent = RawClient(broker)
    persistent.connect("will-persistent-client", clean=False,
                       will=Will("will/persistent-client", b"persistent client died", 2))
    commit_barrier(broker)  # CONNECT has no ack the promise covers

    restart(broker)
    clean.close()
    persistent.close()
    broker.wait_for_log("connected when the broker stopped")

    watcher = PahoClient(broker, "will-watcher", clean_session=False)
    assert watcher.connect().session_present is True
    got = watcher.drain(2, quiet=QUIET)
    assert sorted((m.topic, m.payload, m.qos) for m in got) == [
        ("will/clean-client", b"clean session client died", 1),
        ("will/persistent-client", b"persistent client died", 2)]
    watcher.disconnect()
    reader = PahoClient(broker, "will-reader", clean_session=True)
    reader.connect()
    reader.subscribe("will/#", 1)
    retained = reader.drain(1, quiet=QUIET)
    assert [(m.topic, m.payload, m.retain) for m in retained] == [
        ("will/clean-client", b"clean session client died", True)]
    reader.disconnect()

    # Published at the first restart only; not again at the next one.
    commit_barrier(broker)
    restart(broker)
    watcher = PahoClient(broker, "will-watcher", clean_session=False)
    assert watcher.connect().session_present is True
    again = watcher.drain(0, quiet=0.6)
    assert not again, f"wills published again: {[(m.topic, m.payload) for m in again]}"
    watcher.disconnect()


@pytest.mark.parametrize("how", ["kill", "sigterm"])
def test_will_of_client_that_disconnected_is_not_published_after_restart(
        broker_factory: BrokerFactory, how: str) -> None:
    """A clean DISCONNECT discards the will [MQTT-3.14.4-3], also the copy on disk."""
    broker = broker_factory()
    watcher = PahoClient(broker, "will-watcher", clean_session=False)
    watcher.connect()
    watcher.subscribe("will/#", 2)
    watcher.disconnect()
    client = RawClient(broker)
    client.connect("will-leaver", clean=True, will=Will("will/leaver", b"must not appear", 1))
    commit_barrier(broker)
    client.disconnect()
    assert wait_until(lambda: any("will-leaver" in line and line.endswith(" disconnected")
                                  for line in broker.log_text().splitlines())), \
        "the DISCONNECT not in the log within 5 s"
    commit_barrier(broker)

    if how == "kill":
        restart(broker)
    else:
        assert broker.stop() == 0
        broker.start()

    watcher = PahoClient(broker, "will-watcher", clean_session=False)
    assert watcher.connect().session_present is True
    got = watcher.drain(0, quiet=0.6)
    assert not got, (f"will of a client that disconnected cleanly was published after the "
                     f"restart: {[(m.topic, m.payload) for m in got]}")
    watcher.disconnect()


# --- durability modes ---------------------------------------------------------------------------


def test_durability_none_keeps_nothing(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(storage={"durability": "none"})
    sub = PahoClient(broker, "none-sub", clean_session=False)
    sub.connect()
    sub.subscribe("none/#", 1)
    sub.disconnect()
    pub = PahoClient(broker, "none-pub", clean_session=True)
    pub.connect()
    pub.publish("none/q", b"queued", 1)
    pub.publish("none/r", b"retained", 1, retain=True)
    pub.disconnect()
    # In memory the state is there before the kill ...
    sub = PahoClient(broker, "none-sub", clean_session=False)
    assert sub.connect().session_present is True
    assert sorted(m.payload for m in sub.drain(2, quiet=QUIET)) == [b"queued", b"retained"]
    sub.disconnect()
    pub = PahoClient(broker, "none-pub", clean_session=True)
    pub.connect()
    pub.publish("none/q", b"queued again", 1)
    pub.disconnect()

    restart(broker)

    # ... and gone after it, without a database file ever being written.
    assert not db_path(broker).exists()
    sub = PahoClient(broker, "none-sub", clean_session=False)
    assert sub.connect().session_present is False, "durability none must not keep sessions"
    sub.subscribe("none/#", 1)
    got = sub.drain(0, quiet=QUIET)
    assert not got, f"queued or retained messages survived: {[m.payload for m in got]}"
    sub.disconnect()


def test_durability_batch_keeps_what_is_older_than_the_interval(
        broker_factory: BrokerFactory) -> None:
    broker = broker_factory(storage={"durability": "batch", "batch_interval": 0.05})
    sub = PahoClient(broker, "batch-sub", clean_session=False)
    sub.connect()
    sub.subscribe("batch/#", 2)
    sub.disconnect()
    pub = PahoClient(broker, "batch-pub", clean_session=True)
    pub.connect()
    for index in range(20):
        pub.publish("batch/t", payload_for(3, index), 1 + index % 2)
    pub.publish("batch/r", b"retained", 1, retain=True)
    pub.disconnect()
    commit_barrier(broker)  # in batch mode the barrier's PUBACK proves nothing: wait instead
    time.sleep(0.5)  # ten batch intervals

    restart(broker)

    sub = PahoClient(broker, "batch-sub", clean_session=False)
    assert sub.connect().session_present is True
    got = sub.drain(21, quiet=QUIET)
    for qos in (1, 2):  # paho hands QoS 2 over at PUBREL, so compare per QoS
        assert [m.payload for m in got if m.topic == "batch/t" and m.qos == qos] == [
            payload_for(3, i) for i in range(20) if 1 + i % 2 == qos]
    assert [(m.payload, m.retain) for m in got if m.topic == "batch/r"] == [(b"retained", False)]
    sub.disconnect()


# --- unusable database files --------------------------------------------------------------------


def make_culex_db(tmp: Path) -> Path:
    """A real Culex database with a session, a queue and a retained message in it."""
    work = tmp / "seed"
    work.mkdir()
    seed = BrokerProcess(work, {"sys_interval": 1}).start()
    try:
        sub = RawClient(seed)
        sub.connect("seed-sub", clean=False)
        sub.subscribe([("seed/#", 1)])
        sub.disconnect()
        pub = RawClient(seed)
        pub.connect("seed-pub", clean=True)
        for index in range(50):
            pub.publish("seed/t", bytes(2000) + bytes([index]), qos=1, retain=index == 0)
        pub.disconnect()
    finally:
        assert seed.stop() == 0
    return work / "data" / "culex.db"


def corrupt(kind: str, target: Path, tmp: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "random-bytes":
        target.write_bytes(bytes((i * 131 + 7) % 256 for i in range(16384)))
    elif kind == "text":
        target.write_text("this is not a database\n" * 100)
    elif kind == "foreign-sqlite":
        db = sqlite3.connect(target)
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO customers VALUES (1, 'do not overwrite me')")
        db.commit()
        db.close()
    elif kind == "wrong-schema-version":
        target.write_bytes(make_culex_db(tmp).read_bytes())
        db = sqlite3.connect(target)
        db.execute("UPDATE schema_version SET version = 99")
        db.commit()
        db.close()
    elif kind == "missing-table":
        target.write_bytes(make_culex_db(tmp).read_bytes())
        db = sqlite3.connect(target)
        db.execute("DROP TABLE entries")
        db.commit()
        db.close()
    elif kind == "damaged-pages":
        data = bytearray(make_culex_db(tmp).read_bytes())
        page_size = int.from_bytes(data[16:18], "big")
        assert len(data) > 4 * page_size, "seed database too small to damage"
        for start in range(page_size, len(data), page_size):  # every page but the first
            data[start:start + page_size] = bytes((start + i) % 253 for i in range(page_size))
        target.write_bytes(bytes(data))
    else:
        raise AssertionError(kind)


UNUSABLE = ["random-bytes", "text", "foreign-sqlite", "wrong-schema-version", "missing-table",
            "damaged-pages"]


def serve_once(work: Path) -> tuple[int, str]:
    """`culex serve` in `work` (storage path data/culex.db); its exit code and output."""
    config = work / "culex.toml"
    config.write_text(render_config({"storage": {"path": "data/culex.db"}}))
    result = subprocess.run(
        [sys.executable, "-m", "culex", "serve", "--config", str(config),
         "--host", "127.0.0.1", "--port", str(free_port())],
        check=False, cwd=work, capture_output=True, text=True, timeout=20)
    return result.returncode, (result.stdout + result.stderr).strip()


@pytest.mark.parametrize("kind", UNUSABLE)
def test_unusable_database_file_stops_the_broker(tmp_path: Path, kind: str) -> None:
    work = tmp_path / "broker"
    work.mkdir()
    target = work / "data" / "culex.db"
    corrupt(kind, target, tmp_path)
    code, output = serve_once(work)
    assert code == 1, f"exit code {code} (a silent fresh start?), output:\n{output}"
    assert "Traceback" not in output, output
    lines = output.splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{output}"
    assert "ERROR" in lines[0] and "data/culex.db" in lines[0], lines[0]


@pytest.mark.parametrize("kind", UNUSABLE)
def test_unusable_database_file_is_left_untouched(tmp_path: Path, kind: str) -> None:
    """Refusing to start must not change the file it refuses (it may be someone's data)."""
    work = tmp_path / "broker"
    work.mkdir()
    target = work / "data" / "culex.db"
    corrupt(kind, target, tmp_path)
    before = target.read_bytes()
    code, output = serve_once(work)
    assert code == 1, output
    after = target.read_bytes()
    changed = [i for i in range(min(len(before), len(after))) if before[i] != after[i]]
    assert after == before, (f"{target} was modified by the refused start: {len(before)} -> "
                             f"{len(after)} bytes, first changed offsets {changed[:8]}")
    leftovers = sorted(p.name for p in target.parent.iterdir() if p != target)
    assert not leftovers, f"files created next to the refused database: {leftovers}"
