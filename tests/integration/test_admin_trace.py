"""The packet trace against a real broker (one and two worker processes): a client traced
before it connects shows its packets in order, from CONNECT to its close, whichever worker
owns it; a topic-filter trace shows each message as published; `culex trace` prints the same
in a terminal."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from culex.core.worker_links import owner_of
from tests.conftest import BrokerFactory, BrokerProcess
from tests.integration.admin_client import AdminClient, admin_url
from tests.integration.clients import Clients

ADMIN = {"host": "127.0.0.1", "port": 0}
EXPECTED = [("event", "trace started"), ("in", "CONNECT"), ("out", "CONNACK"),
            ("in", "PUBLISH"), ("out", "PUBACK"), ("in", "SUBSCRIBE"), ("out", "SUBACK"),
            ("in", "DISCONNECT"), ("event", "closed")]


def client_ids(broker: BrokerProcess) -> list[str]:
    """One client id owned by each worker: the trace runs where the client lives."""
    found: dict[int, str] = {}
    number = 0
    while len(found) < broker.workers:
        candidate = f"traced-{number}"
        found.setdefault(owner_of(candidate, broker.workers), candidate)
        number += 1
    return [found[index] for index in sorted(found)]


class Reader:
    """A trace stream read in a thread, its events in a queue."""

    def __init__(self, events: Iterator[dict[str, Any]]) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._source = events
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for event in self._source:
            self.events.put(event)
            if event["type"] == "closed":
                return  # leaving the stream ends the trace

    def until(self, kind: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        got = []
        while True:
            event = self.events.get(timeout=timeout)
            got.append(event)
            if event["type"] == kind:
                return got


def act(clients: Clients, client_id: str) -> None:
    """What the traced client does: connect, publish at QoS 1, subscribe, disconnect."""
    client = clients.paho(client_id, protocol=mqtt.MQTTv5, connect=False)
    client.connect()
    properties = PahoProperties(PacketTypes.PUBLISH)
    properties.UserProperty = ("why", "traced")
    client.publish("trace/out", "hello", 1, properties=properties)
    assert client.subscribe("trace/in", 1) == [1]
    client.disconnect()


def test_a_trace_shows_a_clients_packets_in_order(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(admin=ADMIN)
    admin = AdminClient(admin_url(broker))
    with Clients(broker) as clients:
        for client_id in client_ids(broker):
            reader = Reader(admin.trace(20, client_id=client_id))
            started = reader.until("trace started")
            assert started[0]["state"] == "not connected: waiting for it to connect"
            act(clients, client_id)
            events = started + reader.until("closed")
            assert [(event["direction"], event["type"]) for event in events] == EXPECTED
            connect, publish, suback = events[1], events[3], events[6]
            assert (connect["client_id"], connect["protocol"]) == (client_id, "5.0")
            assert (publish["topic"], publish["qos"], publish["payload"]) == \
                ("trace/out", 1, "hello")
            assert publish["properties"] == {"user_properties": [["why", "traced"]]}
            assert events[4]["packet_id"] == publish["packet_id"]
            assert suback["reason_codes"] == [1]
            times = [event["elapsed"] for event in events]
            assert times == sorted(times)


def test_a_topic_trace_shows_each_message_as_published(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(admin=ADMIN)
    admin = AdminClient(admin_url(broker))
    with Clients(broker) as clients:
        reader = Reader(admin.trace(20, topic="watched/#", full="true"))
        # Said once every worker routes the filter here: nothing published after is missed.
        assert reader.until("trace started")[0]["direction"] == "event"
        publishers = [clients.paho(client_id) for client_id in client_ids(broker)]
        for number, publisher in enumerate(publishers):
            publisher.publish("elsewhere", "not traced", 1)
            publisher.publish(f"watched/{number}", "x" * 300, 2, retain=True)
            publisher.publish(f"watched/{number}/q0", "plain", 0)
        seen = [reader.events.get(timeout=10) for _ in range(2 * len(publishers))]
        assert sorted((event["topic"], event["qos"], event["retain"]) for event in seen) == \
            sorted([(f"watched/{number}", 2, True) for number in range(len(publishers))]
                   + [(f"watched/{number}/q0", 0, False) for number in range(len(publishers))])
        big = next(event for event in seen if event["qos"] == 2)
        assert (big["payload"], big["truncated"], big["direction"]) == ("x" * 300, False,
                                                                       "routed")


def trace_command(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "culex", "trace", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def lines_until(process: subprocess.Popen[str], needle: str) -> list[str]:
    assert process.stdout is not None
    got = []
    for line in process.stdout:
        got.append(line.rstrip("\n"))
        if needle in line:
            return got
    raise AssertionError(f"{needle!r} never printed: {got}\n{process.stderr}")


def test_culex_trace_prints_the_packets(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    token = "secret-token-for-trace-cli"
    token_file = tmp_path / "token"
    token_file.write_text(token)
    broker = broker_factory(admin={**ADMIN, "token_file": str(token_file)})
    url = admin_url(broker)
    client_id = client_ids(broker)[-1]
    with Clients(broker) as clients:
        process = trace_command("--client", client_id, "--url", url, "--token-file",
                                str(token_file), "--seconds", "30")
        try:
            lines = lines_until(process, "trace started")
            act(clients, client_id)
            lines += lines_until(process, " closed")
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(10) == 0
    kinds = [line.split()[2:4] for line in lines]
    assert kinds == [[direction, kind.split()[0]] for direction, kind in EXPECTED], lines
    publish = lines[3]
    assert 'topic="trace/out"' in publish and "qos=1" in publish and 'payload="hello"' in publish
    assert f'client_id="{client_id}"' in lines[1] and 'protocol="5.0"' in lines[1]

    wrong = subprocess.run([sys.executable, "-m", "culex", "trace", "--client", client_id,
                            "--url", url, "--seconds", "1"], capture_output=True, text=True,
                           timeout=20, env={"CULEX_ADMIN_TOKEN": "not-the-token"}, check=False)
    assert (wrong.returncode, wrong.stdout) == (1, "")
    assert wrong.stderr == "culex trace: 401 wrong token\n"
    nowhere = subprocess.run([sys.executable, "-m", "culex", "trace", "--topic", "#",
                              "--url", "http://127.0.0.1:9", "--seconds", "1"],
                             capture_output=True, text=True, timeout=20, check=False)
    assert nowhere.returncode == 1
    assert nowhere.stderr.startswith("culex trace: cannot reach the admin API at "
                                     "http://127.0.0.1:9: ")
