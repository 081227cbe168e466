"""PROXY protocol listeners (`proxy_protocol = true`): the address in the header is the
client's, from the spec's example headers (v1, v2, with TLVs, LOCAL, UNKNOWN) and from a real
HAProxy in front of Culex (`send-proxy` and `send-proxy-v2`), on plain, TLS and WebSocket
listeners, with 1 and 2 workers (a client whose id another worker owns is handed over with its
PROXY address)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.sync.client import connect as websocket_connect

from tests.conftest import BrokerFactory, BrokerProcess, Endpoint, free_port
from tests.integration.clients import CONNACK, RawClient, connect_packet
from tests.integration.test_tls import tls_listener
from tests.proxy_table import GOOD, Good

PROXY_LISTENER = {"host": "127.0.0.1", "port": 0, "proxy_protocol": True}
# Client ids that hash to different workers, so that with 2 workers some are handed over.
CLIENT_IDS = [f"proxied-{number}" for number in range(4)]


def proxy_broker(broker_factory: BrokerFactory, **listener: object) -> tuple[BrokerProcess,
                                                                            Endpoint]:
    broker = broker_factory(listeners=[{}, {**PROXY_LISTENER, **listener}])
    return broker, Endpoint(*broker.listening_on("PROXY protocol"))


def expected_peer(case: Good, client: socket.socket) -> str:
    if case.source is None:  # the connection's own address
        host, port = client.getsockname()[:2]
        return f"{host}:{port}"
    return f"{case.source[0]}:{case.source[1]}"


@pytest.mark.parametrize("case", GOOD, ids=lambda case: case.name)
def test_spec_headers_name_the_client(broker_factory: BrokerFactory, case: Good) -> None:
    broker, endpoint = proxy_broker(broker_factory)
    for client_id in CLIENT_IDS:
        client = RawClient(endpoint)
        try:
            client.send(case.data)
            client.connect(client_id)
            broker.wait_for_log(f"client {client_id} connected from "
                                f"{expected_peer(case, client.sock)} ")
            client.disconnect()
        finally:
            client.close()


def test_header_split_across_reads_and_mqtt_in_the_same_segment(
        broker_factory: BrokerFactory) -> None:
    broker, endpoint = proxy_broker(broker_factory)
    header = GOOD[0].data
    client = RawClient(endpoint)
    try:
        client.send(header[:7])
        time.sleep(0.05)
        client.send(header[7:] + connect_packet("in-one-segment"))
        assert client.expect(CONNACK).body == b"\x00\x00"
        broker.wait_for_log("client in-one-segment connected from 192.168.0.1:56324")
    finally:
        client.close()


def test_proxy_then_tls(broker_factory: BrokerFactory, pki: Path) -> None:
    """The header comes before the TLS handshake, which then starts on the same socket."""
    broker, endpoint = proxy_broker(broker_factory, **{
        key: value for key, value in tls_listener(pki).items() if key not in ("host", "port")})
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    for client_id in CLIENT_IDS:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=5) as raw:
            raw.sendall(GOOD[6].data)  # v2 TCP4, 203.0.113.7:40001
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(connect_packet(client_id))
                assert tls.recv(4) == b"\x20\x02\x00\x00"
        broker.wait_for_log(f"client {client_id} connected from 203.0.113.7:40001")


def test_proxy_then_websocket(broker_factory: BrokerFactory) -> None:
    broker, endpoint = proxy_broker(broker_factory, protocol="websocket")
    for client_id in CLIENT_IDS:
        raw = socket.create_connection((endpoint.host, endpoint.port), timeout=5)
        raw.sendall(GOOD[7].data)  # v2 TCP6, [2001:db8::7]:40002
        with websocket_connect(f"ws://{endpoint.host}:{endpoint.port}/mqtt", sock=raw,
                               subprotocols=["mqtt"]) as websocket:
            websocket.send(connect_packet(client_id))
            assert websocket.recv(timeout=5) == b"\x20\x02\x00\x00"
        broker.wait_for_log(f"client {client_id} connected from 2001:db8::7:40002")


def test_tls_handshake_failure_after_the_header_is_logged(broker_factory: BrokerFactory,
                                                          pki: Path) -> None:
    broker, endpoint = proxy_broker(broker_factory, **{
        key: value for key, value in tls_listener(pki).items() if key not in ("host", "port")})
    client = RawClient(endpoint)
    try:
        client.send(GOOD[0].data + connect_packet("plain-after-header"))  # no TLS
        client.wait_closed()
    finally:
        client.close()
    broker.wait_for_log("client 192.168.0.1:56324: TLS handshake failed")


# -- HAProxy ----------------------------------------------------------------------------------

HAPROXY_CONFIG = """\
global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend mqtt
    bind 127.0.0.1:{front}
    default_backend culex
backend culex
    server culex {host}:{port} {option}
"""


@dataclass
class HAProxy:
    port: int
    proc: subprocess.Popen[bytes]


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[object]:
    """Start a real HAProxy (Debian's `haproxy`, installed by `make system-deps`) in front of
    a Culex listener: `start(endpoint, "send-proxy")` returns its front port."""
    binary = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                         if Path("/usr/sbin/haproxy").exists() else None)
    if binary is None:
        pytest.fail("haproxy is not installed: run `make system-deps` (apt-get install haproxy)")
    started: list[HAProxy] = []

    def start(endpoint: Endpoint, option: str) -> int:
        front = free_port()
        config = tmp_path / f"haproxy-{len(started)}.cfg"
        config.write_text(HAPROXY_CONFIG.format(front=front, host=endpoint.host,
                                                port=endpoint.port, option=option))
        proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        started.append(HAProxy(front, proc))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                output = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"haproxy exited {proc.returncode}: {output}")
            try:
                socket.create_connection(("127.0.0.1", front), timeout=0.2).close()
                return front
            except OSError:
                time.sleep(0.05)
        pytest.fail("haproxy did not listen within 10 s")

    yield start
    for proxy in started:
        proxy.proc.terminate()
        proxy.proc.wait(10)


@pytest.mark.parametrize("option", ["send-proxy", "send-proxy-v2"])
def test_haproxy_in_front(broker_factory: BrokerFactory, haproxy: object,
                          option: str) -> None:
    broker, endpoint = proxy_broker(broker_factory)
    front = haproxy(endpoint, option)  # type: ignore[operator]
    for client_id in CLIENT_IDS:
        client = RawClient(Endpoint("127.0.0.1", front))
        try:
            client.connect(client_id)
            # HAProxy's own connection to Culex has another port: the logged one is the
            # client's, as HAProxy saw it.
            broker.wait_for_log(f"client {client_id} connected from {client.peer} ")
            client.publish(f"via/{option}", b"through haproxy")
            client.disconnect()
        finally:
            client.close()
