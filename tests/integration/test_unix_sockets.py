"""Unix socket listeners (`unix`, `mode`): paho-mqtt (transport "unix") and mosquitto_pub/sub
--unix for MQTT 3.1.1 and 5.0, next to a TCP listener on the same broker; the socket file's
mode; a stale file from a dead broker is replaced, a live one or a file that is not a socket
stops the start; the file is removed at exit."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import BrokerFactory, BrokerProcess, Endpoint
from tests.integration.clients import Clients, MosquittoSub, Will

PROTOCOLS = [pytest.param(mqtt.MQTTv311, id="v311"), pytest.param(mqtt.MQTTv5, id="v5")]


def unix_broker(broker_factory: BrokerFactory, path: Path, **listener: Any) -> BrokerProcess:
    return broker_factory(listeners=[{}, {"unix": str(path), **listener}])


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "culex.sock"


@pytest.fixture(autouse=True)
def run_dir(sock_path: Path) -> None:
    sock_path.parent.mkdir()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_paho_over_unix_and_tcp_exchange_messages(broker_factory: BrokerFactory,
                                                  sock_path: Path, protocol: int) -> None:
    broker = unix_broker(broker_factory, sock_path)
    assert f"listening on unix:{sock_path}" in broker.wait_for_log(f"unix:{sock_path}")
    with Clients(Endpoint(str(sock_path))) as local, Clients(broker) as remote:
        watcher = remote.paho("tcp-watcher", protocol=protocol)
        assert watcher.subscribe("unix/#", 2) == [2]
        client = local.paho("unix-client", protocol=protocol, transport="unix", connect=False,
                            will=Will("unix/will", b"gone", 1))
        client.connect()
        assert client.subscribe("tcp/#", 2) == [2]
        for qos in (0, 1, 2):
            client.publish(f"unix/{qos}", f"from unix {qos}".encode(), qos)
            watcher.publish(f"tcp/{qos}", f"from tcp {qos}".encode(), qos)
        got = sorted((m.topic, m.payload, m.qos) for m in watcher.get_many(3))
        assert got == [(f"unix/{q}", f"from unix {q}".encode(), q) for q in (0, 1, 2)]
        got = sorted((m.topic, m.payload, m.qos) for m in client.get_many(3))
        assert got == [(f"tcp/{q}", f"from tcp {q}".encode(), q) for q in (0, 1, 2)]
        client.publish("unix/retained", b"kept", 1, retain=True)
        assert watcher.get().payload == b"kept"
        client.drop()  # no DISCONNECT: the will goes out
        will = watcher.get()
        assert (will.topic, will.payload) == ("unix/will", b"gone")
    # A Unix client has no address of its own: the log names the socket it came through.
    broker.wait_for_log(f"client unix-client connected from unix:{sock_path}")


def test_mosquitto_clients_with_unix(broker_factory: BrokerFactory, sock_path: Path) -> None:
    broker = unix_broker(broker_factory, sock_path)
    endpoint = Endpoint(str(sock_path))
    for version in ("mqttv311", "mqttv5"):
        sub = MosquittoSub(endpoint, "--unix", str(sock_path), "-t", "m/#", "-q", "1",
                           version=version)
        try:
            sub.wait_subscribed()
            done = subprocess.run(["mosquitto_pub", "--unix", str(sock_path), "-V", version,
                                   "-t", "m/t", "-m", f"hello {version}", "-q", "1"],
                                  capture_output=True, text=True, timeout=10, check=False)
            assert done.returncode == 0, done.stderr
            message = sub.next_message()
            assert (message.topic, message.payload) == ("m/t", f"hello {version}".encode())
        finally:
            sub.close()
    assert broker.log_text().count(f"connected from unix:{sock_path}") >= 4


def test_socket_file_mode(broker_factory: BrokerFactory, sock_path: Path) -> None:
    unix_broker(broker_factory, sock_path, mode="0600")
    status = os.stat(sock_path)
    assert stat.S_ISSOCK(status.st_mode)
    assert stat.S_IMODE(status.st_mode) == 0o600


def test_default_mode_is_0660_and_file_removed_at_exit(broker_factory: BrokerFactory,
                                                       sock_path: Path) -> None:
    broker = unix_broker(broker_factory, sock_path)
    assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o660
    assert broker.stop() == 0
    assert not sock_path.exists(), "the socket file outlived the broker"


def test_stale_socket_file_is_replaced(broker_factory: BrokerFactory, sock_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock_path))  # what a broker killed with -9 leaves: a file nobody serves
    stale.close()
    broker = unix_broker(broker_factory, sock_path)
    broker.wait_for_log("removed a stale socket file")
    with Clients(Endpoint(str(sock_path))) as local:
        client = local.paho("after-stale", transport="unix")
        assert client.subscribe("t", 1) == [1]


def test_live_socket_is_address_in_use_and_left_alone(tmp_path: Path, sock_path: Path,
                                                      broker_workers: int) -> None:
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(sock_path))
        live.listen()
        broker = BrokerProcess(tmp_path, {"listeners": [{}, {"unix": str(sock_path)}]},
                               broker_workers)
        with pytest.raises(RuntimeError, match="address already in use") as failure:
            broker.start()
        assert "Traceback" not in str(failure.value)
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(str(sock_path))  # still ours, still served


def test_a_file_that_is_not_a_socket_stops_the_start(tmp_path: Path, sock_path: Path,
                                                      broker_workers: int) -> None:
    sock_path.write_text("precious")
    broker = BrokerProcess(tmp_path, {"listeners": [{}, {"unix": str(sock_path)}]},
                           broker_workers)
    with pytest.raises(RuntimeError, match="exists and is not a socket"):
        broker.start()
    assert sock_path.read_text() == "precious"
