"""Worker processes, end to end: what crosses between workers, and what must not be lost.

Every broker here runs with `workers = 2` whatever CULEX_TEST_WORKERS says. Client ids are
chosen by the worker that owns them (`owner_of`), so each test knows which paths it takes: a
CONNECT moved to the other worker, a message routed across, a TLS connection relayed.
"""

from __future__ import annotations

import os
import re
import signal
import ssl
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from culex.core.worker_links import owner_of
from tests.conftest import AGAINST, BrokerFactory, BrokerProcess
from tests.integration.clients import CONNACK, Clients, Will, connect_packet
from tests.integration.test_bench import run_scenario
from tests.integration.test_tls import tls_listener

pytestmark = pytest.mark.skipif(AGAINST != "culex", reason="Culex's worker processes")

V5 = mqtt.MQTTv5


def ids_of(worker: int, count: int, prefix: str = "c") -> list[str]:
    """`count` client ids owned by `worker` of 2."""
    found = [f"{prefix}{n}" for n in range(1000) if owner_of(f"{prefix}{n}", 2) == worker]
    return found[:count]


def two_workers(broker_factory: BrokerFactory, **settings: object) -> BrokerProcess:
    return broker_factory(workers=2, **settings)


def test_each_client_is_served_by_the_worker_that_owns_its_id(
        broker_factory: BrokerFactory) -> None:
    broker = two_workers(broker_factory)
    with Clients(broker) as clients:
        names = ids_of(0, 4) + ids_of(1, 4)
        for name in names:
            clients.paho(name)
        text = broker.wait_for_log(f"client {names[-1]} connected")
    for name in names:
        served = re.findall(rf"\[worker (\d)\] client {name} connected", text)
        assert served == [str(owner_of(name, 2))], (name, served)


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_messages_cross_between_workers_both_ways(broker_factory: BrokerFactory,
                                                   qos: int) -> None:
    broker = two_workers(broker_factory)
    with Clients(broker) as clients:
        (on_zero,), (on_one,) = ids_of(0, 1, "sub"), ids_of(1, 1, "sub")
        subscribers = [clients.subscriber("x/+", qos, client_id=on_zero),
                       clients.subscriber("x/#", qos, client_id=on_one, protocol=V5)]
        for worker in (0, 1):
            (name,) = ids_of(worker, 1, "pub")
            publisher = clients.paho(name)
            for number in range(3):
                publisher.publish(f"x/{worker}", f"{worker}-{number}".encode(), qos)
        for subscriber in subscribers:
            got = [(m.payload, m.qos) for m in subscriber.get_many(6)]
            for worker in (0, 1):  # each publisher's messages in its order [MQTT-4.6.0-5]
                assert [item for item in got if item[0].startswith(b"%d-" % worker)] == [
                    (f"{worker}-{n}".encode(), qos) for n in range(3)]
            subscriber.assert_no_message()


def test_a_tls_connection_is_relayed_to_the_worker_that_owns_it(
        broker_factory: BrokerFactory, pki: Path) -> None:
    broker = two_workers(broker_factory, listeners=[tls_listener(pki)])
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    clients = []
    try:
        for worker in (0, 1):
            for name in ids_of(worker, 2, "tls"):
                client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
                client.tls_set_context(context)
                received: list[bytes] = []
                client.on_message = lambda _c, _u, m, received=received: received.append(
                    m.payload)
                client.connect(broker.host, broker.port)
                client.loop_start()
                client.subscribe("tls/t", 1)
                clients.append((client, received))
        time.sleep(0.5)
        clients[0][0].publish("tls/t", b"everyone", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(got for _, got in clients):
            time.sleep(0.05)
        assert [got for _, got in clients] == [[b"everyone"]] * 4
    finally:
        for client, _ in clients:
            client.loop_stop()
            client.disconnect()
    text = broker.log_text()
    for worker in (0, 1):
        for name in ids_of(worker, 2, "tls"):
            assert f"[worker {worker}] client {name} connected" in text


def test_a_connect_too_large_to_hand_over_is_relayed(broker_factory: BrokerFactory) -> None:
    """A 180 kB CONNECT (will, user name and password of 60 kB each) does not fit one
    hand-over message: the accepting worker relays the connection instead, and the owner
    still publishes the will when the client dies."""
    broker = two_workers(broker_factory)
    with Clients(broker) as clients:
        watchers = [clients.subscriber("big/will", 1, client_id=name)
                    for name in ids_of(0, 1, "w") + ids_of(1, 1, "w")]
        payload = bytes(range(250)) * 240
        for worker in (0, 1):
            (name,) = ids_of(worker, 1, "big")
            dying = clients.raw()
            dying.send(connect_packet(name, will=Will("big/will", payload, 1),
                                      username="u" * 60_000, password=b"p" * 60_000))
            assert dying.expect(CONNACK).raw == b"\x20\x02\x00\x00"
            dying.drop()
            for watcher in watchers:
                assert watcher.get().payload == payload


def test_acknowledged_messages_for_both_workers_survive_kill_9(
        broker_factory: BrokerFactory) -> None:
    broker = two_workers(broker_factory)
    parked = ids_of(0, 2, "keep") + ids_of(1, 2, "keep")
    with Clients(broker) as clients:
        for name in parked:
            client = clients.paho(name, clean_session=False)
            assert client.subscribe("keep/t", 1) == [1]
            client.disconnect()
        for worker in (0, 1):
            (name,) = ids_of(worker, 1, "kpub")
            publisher = clients.paho(name)
            for number in range(10):
                publisher.publish("keep/t", f"{worker}-{number}".encode(), 1)
    broker.kill()
    broker.start()
    expected = sorted(f"{w}-{n}".encode() for w in (0, 1) for n in range(10))
    with Clients(broker) as clients:
        for name in parked:
            client = clients.paho(name, clean_session=False)
            assert client.connect_result is not None and client.connect_result.session_present
            assert sorted(m.payload for m in client.get_many(20)) == expected


@pytest.mark.parametrize("workers_after", [1, 3])
def test_retained_messages_survive_a_restart_with_another_worker_count(
        broker_factory: BrokerFactory, workers_after: int) -> None:
    broker = two_workers(broker_factory)
    topics = [f"ret/{n}" for n in range(8)]
    with Clients(broker) as clients:
        for worker in (0, 1):
            (name,) = ids_of(worker, 1, "rpub")
            publisher = clients.paho(name)
            for topic in topics:
                publisher.publish(topic, f"{topic} from {worker}".encode(), 1, retain=True)
        (name,) = ids_of(0, 1, "rclear")
        clients.paho(name).publish(topics[0], b"", 1, retain=True)
    broker.stop()
    broker.settings["workers"] = workers_after
    broker.start()
    with Clients(broker) as clients:
        subscriber = clients.subscriber("ret/#", 1)
        got = {m.topic: m.payload for m in subscriber.get_many(len(topics) - 1)}
        subscriber.assert_no_message()
    assert got == {topic: f"{topic} from 1".encode() for topic in topics[1:]}


def test_a_qos1_flood_across_workers_loses_nothing(broker_factory: BrokerFactory,
                                                  tmp_path: Path) -> None:
    """Ten publishers flat out at QoS 1, acknowledged at once (durability "none"), to
    subscribers half of which live in the other worker, whose queues hold 50 messages: a read
    of the link carries far more than that, and none of it may be dropped."""
    broker = two_workers(broker_factory, storage={"durability": "none"},
                         limits={"max_queued_messages": 50})
    document = run_scenario(broker, tmp_path, "pairs", "--qos", "1", "--publishers", "10",
                            "--inflight", "100", "--duration", "1.5", "--warmup", "0.5")
    [row] = document["results"]
    assert row["delivered"] > 0 and row["loss"] == 0, row


def test_a_slow_subscriber_in_another_worker_loses_no_qos0_message(
        broker_factory: BrokerFactory, tmp_path: Path) -> None:
    """Fan-in flat out: one subscriber reads slower than fifty publishers in two workers
    write, so the link to its worker stays full for longer than stalled_reader_timeout. The
    subscriber itself keeps reading; nothing is dropped for the link."""
    # 1 s: shorter than the 2 s flood, longer than the subscriber process may be starved of
    # the CPU while other suites run (it would be given up on as a stalled reader itself).
    broker = two_workers(broker_factory, storage={"durability": "none"},
                         limits={"stalled_reader_timeout": 1.0})
    document = run_scenario(broker, tmp_path, "fanin", "--publishers", "50",
                            "--duration", "1.5", "--warmup", "0.5")
    [row] = document["results"]
    assert row["delivered"] > 0 and row["loss"] == 0, row


def test_sys_counts_the_clients_of_every_worker(broker_factory: BrokerFactory) -> None:
    broker = two_workers(broker_factory, sys_interval=1)
    with Clients(broker) as clients:
        for name in ids_of(0, 2, "s") + ids_of(1, 3, "s"):
            clients.paho(name)
        watcher = clients.subscriber("$SYS/broker/clients/connected", 0)
        deadline = time.monotonic() + 10
        seen = b""
        while time.monotonic() < deadline and seen != b"6":
            seen = watcher.get(timeout=3).payload
        assert seen == b"6"  # five clients and the watcher, on two workers


def test_a_worker_that_dies_stops_the_broker(broker_factory: BrokerFactory) -> None:
    broker = two_workers(broker_factory)
    broker.wait_for_log("[worker 0] listening")
    text = broker.wait_for_log("[worker 1] listening")  # both serving: no start-up race
    started = re.search(r"pids ([\d, ]+)\)", text)
    assert started is not None
    pids = [int(pid) for pid in started.group(1).split(", ")]
    os.kill(pids[1], signal.SIGKILL)
    assert broker.proc is not None
    assert broker.proc.wait(10) == 1
    broker.killed = True  # nothing left to stop
    assert f"worker 1 (pid {pids[1]}) exited with -9: stopping the others" in broker.log_text()
