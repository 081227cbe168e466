"""Bridges against real brokers: Culex bridging to Debian's Mosquitto (out, in and both, with
prefixes, QoS 0/1/2, retained messages, MQTT 3.1.1 and 5), Mosquitto bridging into Culex (its
default bridge sets the 0x80 bit of the protocol level), and two Culex brokers bridged both
ways without a message going round. Each runs with one and two worker processes (the bridge
then lives in the worker that owns `$bridge/<name>`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.conftest import BrokerFactory, BrokerProcess
from tests.integration.bridge_helpers import (
    Mosquittos,
    bridge_table,
    wait_connected,
    wait_for,
)
from tests.integration.clients import Clients, PahoClient

VERSIONS = ["3.1.1", "5"]
PAHO = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}

TOPICS = [
    {"pattern": "sensors/#", "direction": "out", "qos": 2, "remote_prefix": "site17/"},
    {"pattern": "commands/#", "direction": "in", "qos": 2, "local_prefix": "remote/"},
    {"pattern": "shared/#", "direction": "both", "qos": 2},
]


def flowing(publisher: PahoClient, subscriber: PahoClient, topic: str) -> None:
    """Publish probes on `topic` until `subscriber` gets one (the bridge's subscription on the
    remote may not be in place the moment it says it is connected); then drain the probes."""
    for _ in range(50):
        publisher.publish(topic, b"probe", qos=1)
        try:
            message = subscriber.messages.get(timeout=0.2)
        except Exception:
            continue
        assert message.payload == b"probe"
        while not subscriber.messages.empty():
            subscriber.messages.get()
        return
    pytest.fail(f"nothing published on {topic!r} crossed the bridge")


def received(client: PahoClient, count: int) -> list[tuple[str, bytes, int, bool]]:
    return [(m.topic, m.payload, m.qos, m.retain) for m in client.drain(count)]


@pytest.mark.parametrize("version", VERSIONS)
def test_bridge_to_mosquitto(broker_factory: BrokerFactory, mosquittos: Mosquittos,
                             version: str) -> None:
    remote = mosquittos.start()
    local = broker_factory(bridges=[bridge_table("cloud", remote, TOPICS, version=version)])
    wait_connected(local, "cloud")
    with Clients(local) as here, Clients(remote) as there:
        protocol = PAHO[version]
        local_sub = here.paho(protocol=protocol)
        assert local_sub.subscribe("#", 2) == [2]
        local_pub = here.paho(protocol=protocol)
        remote_pub = there.paho(protocol=protocol)
        flowing(remote_pub, local_sub, "commands/probe")
        remote_sub = there.paho(protocol=protocol)
        assert remote_sub.subscribe("#", 2) == [2]

        # out: the remote prefix added, each QoS kept (the topic's qos is 2)
        for qos in (0, 1, 2):
            local_pub.publish(f"sensors/t{qos}", f"out{qos}".encode(), qos=qos)
        assert sorted(received(remote_sub, 3)) == [
            (f"site17/sensors/t{qos}", f"out{qos}".encode(), qos, False) for qos in (0, 1, 2)]
        assert sorted(received(local_sub, 3)) == [
            (f"sensors/t{qos}", f"out{qos}".encode(), qos, False) for qos in (0, 1, 2)]

        # in: the local prefix added
        for qos in (0, 1, 2):
            remote_pub.publish(f"commands/c{qos}", f"in{qos}".encode(), qos=qos)
        assert sorted(received(local_sub, 3)) == [
            (f"remote/commands/c{qos}", f"in{qos}".encode(), qos, False) for qos in (0, 1, 2)]
        assert len(received(remote_sub, 3)) == 3  # the remote's own subscriber, nothing more

        # both: each way once, never back (No Local / the bridge bit, and the bridge's own
        # No Local subscriptions here)
        local_pub.publish("shared/from-local", b"L", qos=1)
        remote_pub.publish("shared/from-remote", b"R", qos=2)
        assert sorted(received(local_sub, 2)) == [("shared/from-local", b"L", 1, False),
                                                  ("shared/from-remote", b"R", 2, False)]
        assert sorted(received(remote_sub, 2)) == [("shared/from-local", b"L", 1, False),
                                                   ("shared/from-remote", b"R", 2, False)]

        # nothing crosses that no topic names
        local_pub.publish("elsewhere/x", b"no", qos=1)
        remote_pub.publish("elsewhere/y", b"no", qos=1)
        assert [m.topic for m in local_sub.drain(1)] == ["elsewhere/x"]
        assert [m.topic for m in remote_sub.drain(1)] == ["elsewhere/y"]

        # retained: kept retained on the other side
        local_pub.publish("sensors/state", b"on", qos=1, retain=True)
        remote_sub.drain(1)
        late = there.paho(protocol=protocol)
        assert late.subscribe("site17/sensors/state", 1) == [1]
        assert received(late, 1) == [("site17/sensors/state", b"on", 1, True)]

        if version == "5":  # MQTT 5 properties cross as they are
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = [("k", "v")]
            properties.ContentType = "text/plain"
            local_pub.publish("sensors/props", b"p", qos=1, properties=properties)
            message = next(m for m in remote_sub.drain(1) if m.topic == "site17/sensors/props")
            assert message.properties.UserProperty == [("k", "v")]
            assert message.properties.ContentType == "text/plain"
    log = local.log_text()
    assert "Traceback" not in log


@pytest.mark.parametrize("mosquitto_version", ["mqttv311", "mqttv50"])
def test_mosquitto_bridging_into_culex(broker: BrokerProcess, mosquittos: Mosquittos,
                                       mosquitto_version: str) -> None:
    """A Mosquitto `connection` section pointing at Culex just works: 3.1.1 with Mosquitto's
    default try_private (protocol level 0x84), and MQTT 5; both ways, no echo."""
    edge = mosquittos.start(
        "connection to-culex\n"
        f"address {broker.host}:{broker.port}\n"
        f"bridge_protocol_version {mosquitto_version}\n"
        "cleansession false\n"
        "restart_timeout 1\n"
        "topic bridged/# both 1\n")
    broker.wait_for_log("bridge" if mosquitto_version == "mqttv311" else "(protocol level 5")
    if mosquitto_version == "mqttv311":
        assert "(protocol level 4, bridge," in broker.log_text()
    with Clients(broker) as here, Clients(edge) as there:
        culex_sub = here.paho()
        assert culex_sub.subscribe("bridged/#", 1) == [1]
        culex_pub = here.paho()
        mosquitto_pub = there.paho()
        flowing(mosquitto_pub, culex_sub, "bridged/probe")
        mosquitto_sub = there.paho()
        assert mosquitto_sub.subscribe("bridged/#", 1) == [1]

        mosquitto_pub.publish("bridged/from-mosquitto", b"M", qos=1)
        culex_pub.publish("bridged/from-culex", b"C", qos=1)
        assert sorted(received(culex_sub, 2)) == [("bridged/from-culex", b"C", 1, False),
                                                  ("bridged/from-mosquitto", b"M", 1, False)]
        assert sorted(received(mosquitto_sub, 2)) == [
            ("bridged/from-culex", b"C", 1, False), ("bridged/from-mosquitto", b"M", 1, False)]
        # Mosquitto's bridge notification, retained, as Mosquitto itself would keep it.
        watcher = here.paho()
        watcher.subscribe("$SYS/broker/connection/+/state", 1)
        [state] = received(watcher, 1)
        assert (state[0].endswith(".to-culex/state"), state[1], state[3]) == (True, b"1", True)


@pytest.mark.parametrize("version", VERSIONS)
def test_culex_to_culex_both_ways_without_loops(broker_factory: BrokerFactory,
                                                version: str) -> None:
    remote = broker_factory()
    topics = [{"pattern": "loop/#", "direction": "both", "qos": 1}]
    local = broker_factory(bridges=[bridge_table("peer", remote, topics, version=version)])
    wait_connected(local, "peer")
    with Clients(local) as here, Clients(remote) as there:
        protocol = PAHO[version]
        local_sub = here.paho(protocol=protocol)
        assert local_sub.subscribe("loop/#", 1) == [1]
        local_pub = here.paho(protocol=protocol)
        remote_pub = there.paho(protocol=protocol)
        flowing(remote_pub, local_sub, "loop/probe")
        remote_sub = there.paho(protocol=protocol)
        assert remote_sub.subscribe("loop/#", 1) == [1]
        for qos in (0, 1, 2):
            local_pub.publish(f"loop/a{qos}", b"A", qos=qos)
            remote_pub.publish(f"loop/b{qos}", b"B", qos=qos)
        expected = sorted([(f"loop/a{qos}", b"A", min(qos, 1), False) for qos in (0, 1, 2)]
                          + [(f"loop/b{qos}", b"B", min(qos, 1), False) for qos in (0, 1, 2)])
        # Exactly once each, and then silence: no message goes round.
        assert sorted(received(local_sub, 6)) == expected
        assert sorted(received(remote_sub, 6)) == expected
        local_sub.assert_no_message(0.5)
        remote_sub.assert_no_message(0.5)
    if version == "3.1.1":
        assert "(protocol level 4, bridge," in remote.log_text()


def sys_values(broker: BrokerProcess, name: str) -> dict[str, str]:
    with Clients(broker) as clients:
        watcher = clients.paho()
        watcher.subscribe(f"$SYS/broker/bridges/{name}/#", 0)
        return {m.topic.rsplit(f"{name}/", 1)[1]: m.payload.decode()
                for m in watcher.drain(8)}


def test_bridge_state_in_sys(broker_factory: BrokerFactory, mosquittos: Mosquittos) -> None:
    remote = mosquittos.start()
    topics: list[dict[str, Any]] = [{"pattern": "s/#", "qos": 1}]
    local = broker_factory(bridges=[bridge_table("cloud", remote, topics)])
    wait_connected(local, "cloud")
    wait_for(lambda: sys_values(local, "cloud").get("connected") == "1", "connected 1 in $SYS")
    values = sys_values(local, "cloud")
    assert values["remote"] == f"{remote.host}:{remote.port}"
    assert values["backlog/messages"] == "0"
    remote.stop()
    with Clients(local) as clients:
        publisher = clients.paho()
        for _ in range(3):
            publisher.publish("s/x", b"12345", qos=1)
    wait_for(lambda: sys_values(local, "cloud").get("backlog/messages") == "3",
             "3 messages buffered in $SYS")
    values = sys_values(local, "cloud")
    assert values["connected"] == "0"
    assert values["backlog/bytes"] == "15"
    assert values.get("last_error")


def test_load_through_a_bridge(broker_factory: BrokerFactory, mosquittos: Mosquittos,
                               tmp_path: Path) -> None:
    """`culex bench --subscriber-port` (what benchmarks/bridge_bench.py measures with): QoS 1
    messages published here for a second reach subscribers on the remote, none lost."""
    remote = mosquittos.start()
    local = broker_factory(bridges=[bridge_table(
        "load", remote, [{"pattern": "culex-bench/#", "qos": 1}])])
    wait_connected(local, "load")
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "culex", "bench", "pubsub", "--qos", "1", "--rate", "2000",
         "--duration", "1", "--warmup", "0.5", "--port", str(local.port), "--subscriber-port",
         str(remote.port), "--json", str(out)], capture_output=True, text=True, timeout=60,
        check=False)
    assert done.returncode == 0, done.stderr
    [row] = json.loads(out.read_text())["results"]
    assert row["sent"] > 1000 and row["delivered"] == row["expected"] == row["sent"]
