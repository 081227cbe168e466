"""TLS listeners with real certificates (made by the openssl CLI), paho and mosquitto clients."""

from __future__ import annotations

import queue
import socket
import ssl
import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import BrokerFactory, BrokerProcess


def tls_listener(pki: Path, **extra: object) -> dict[str, object]:
    return {"host": "127.0.0.1", "port": 1883, "certfile": str(pki / "server.crt"),
            "keyfile": str(pki / "server.key"), **extra}


def paho_roundtrip(broker: BrokerProcess, pki: Path, client_cert: bool) -> bytes:
    received: queue.Queue[bytes] = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tls-paho",
                         protocol=mqtt.MQTTv311)
    client.tls_set(ca_certs=str(pki / "ca.crt"),
                   certfile=str(pki / "client.crt") if client_cert else None,
                   keyfile=str(pki / "client.key") if client_cert else None)
    client.on_message = lambda _c, _u, message: received.put(message.payload)
    subscribed: queue.Queue[bool] = queue.Queue()
    client.on_subscribe = lambda *_args: subscribed.put(True)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.subscribe("secure/t", 1)
        subscribed.get(timeout=5)
        client.publish("secure/t", b"over tls", qos=1)
        return received.get(timeout=5)
    finally:
        client.loop_stop()
        client.disconnect()


def test_tls_listener_with_paho_and_mosquitto(broker_factory: BrokerFactory, pki: Path) -> None:
    broker = broker_factory(listeners=[tls_listener(pki)])
    assert "(TLS)" in broker.wait_for_log("listening on")
    assert paho_roundtrip(broker, pki, client_cert=False) == b"over tls"
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port),
                            "--cafile", str(pki / "ca.crt"), "-t", "m/t", "-C", "1"],
                           stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(50):
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port),
                            "--cafile", str(pki / "ca.crt"), "-t", "m/t", "-m", "hello"],
                           check=True, timeout=5)
            try:
                out, _ = sub.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            pytest.fail("mosquitto_sub over TLS received nothing")
    finally:
        sub.kill()
    assert out.strip() == "hello"


def test_plain_mqtt_on_a_tls_port_gets_no_connack(broker_factory: BrokerFactory,
                                                   pki: Path) -> None:
    broker = broker_factory(listeners=[tls_listener(pki)])
    with socket.create_connection((broker.host, broker.port), timeout=5) as plain:
        plain.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
        data = plain.recv(100)
    assert not data.startswith(b"\x20")  # a TLS alert or EOF, never an MQTT CONNACK


def test_mutual_tls_requires_a_client_certificate(broker_factory: BrokerFactory,
                                                  pki: Path) -> None:
    broker = broker_factory(listeners=[tls_listener(
        pki, cafile=str(pki / "ca.crt"), require_certificate=True)])
    assert paho_roundtrip(broker, pki, client_cert=True) == b"over tls"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    with socket.create_connection((broker.host, broker.port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                # TLS 1.3 reports the missing certificate on the first read, not in the
                # handshake itself.
                tls.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
                answer = tls.recv(100)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            answer = b""
    assert not answer.startswith(b"\x20")  # no CONNACK without a client certificate


def test_minimum_tls_version_is_enforced(broker_factory: BrokerFactory, pki: Path) -> None:
    broker = broker_factory(listeners=[tls_listener(pki, min_tls_version="1.3")])
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((broker.host, broker.port), timeout=5) as raw, \
            pytest.raises(ssl.SSLError):
        context.wrap_socket(raw, server_hostname="localhost")


def test_bad_certificate_path_is_a_config_error(tmp_path: Path, pki: Path,
                                               broker_workers: int) -> None:
    broker = BrokerProcess(tmp_path, {"listeners": [tls_listener(pki, certfile="/nope.crt")]},
                           broker_workers)
    with pytest.raises(RuntimeError, match=r"certfile: /nope\.crt: no such file"):
        broker.start()
