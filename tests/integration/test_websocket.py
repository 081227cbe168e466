"""MQTT over WebSocket (`protocol = "websocket"`), with real clients: paho-mqtt (transport
"websockets", 3.1.1 and 5.0), MQTT.js from Node over ws:// and wss:// (the scenarios and
assertions of test_mqttjs.py), the `websockets` client for what must be seen frame by frame
(packets split across frames and several in one frame, one frame per flush, ping/pong, close
codes), next to TCP clients on the same broker, with 1 and 2 workers (a WebSocket client whose
id another worker owns is relayed there)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as websocket_connect

from tests.conftest import BrokerFactory, BrokerProcess
from tests.integration import test_mqttjs
from tests.integration.clients import (
    PahoClient,
    Will,
    connect_packet,
    publish_packet,
    subscribe_packet,
)
from tests.integration.test_tls import tls_listener

PROTOCOLS = [pytest.param(mqtt.MQTTv311, id="v311"), pytest.param(mqtt.MQTTv5, id="v5")]
WS_LISTENER = {"host": "127.0.0.1", "port": 0, "protocol": "websocket"}
# With 2 workers these land on both: some connections are relayed to the other worker.
CLIENT_IDS = [f"ws-client-{number}" for number in range(4)]


@dataclass(frozen=True)
class WebSocketBroker:
    """A broker's WebSocket listener, as the client helpers and test_mqttjs.run see it."""

    broker: BrokerProcess
    host: str
    port: int
    scheme: str = "ws"
    ca: str | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/mqtt"

    def mqttjs_args(self) -> list[str]:
        return ["--url", self.url, *(["--ca", self.ca] if self.ca else [])]

    def log_text(self) -> str:
        return self.broker.log_text()


def ws_broker(broker_factory: BrokerFactory, **listener: object) -> WebSocketBroker:
    broker = broker_factory(listeners=[{}, {**WS_LISTENER, **listener}])
    return WebSocketBroker(broker, *broker.listening_on("WebSocket"))


@pytest.fixture
def ws(broker_factory: BrokerFactory) -> WebSocketBroker:
    return ws_broker(broker_factory)


@pytest.fixture
def wss(broker_factory: BrokerFactory, pki: Path) -> WebSocketBroker:
    extra = {k: v for k, v in tls_listener(pki).items() if k not in ("host", "port")}
    broker = ws_broker(broker_factory, **extra)
    return WebSocketBroker(broker.broker, broker.host, broker.port, "wss", str(pki / "ca.crt"))


@pytest.fixture
def opened() -> Iterator[list[PahoClient]]:
    clients: list[PahoClient] = []
    yield clients
    for client in clients:
        client.close()


def paho_ws(endpoint: WebSocketBroker | BrokerProcess, opened: list[PahoClient],
            client_id: str, protocol: int = mqtt.MQTTv311, **options: object) -> PahoClient:
    over_websocket = isinstance(endpoint, WebSocketBroker)
    client = PahoClient(endpoint, client_id, protocol=protocol,
                        transport="websockets" if over_websocket else "tcp", **options)
    opened.append(client)
    if isinstance(endpoint, WebSocketBroker):
        client.client.ws_set_options(path="/mqtt")
        if endpoint.ca is not None:
            client.client.tls_set(ca_certs=endpoint.ca)
    client.connect()
    return client


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_paho_websocket_and_tcp_clients_exchange_messages(
        ws: WebSocketBroker, opened: list[PahoClient], protocol: int) -> None:
    tcp = paho_ws(ws.broker, opened, "tcp-peer", protocol)
    assert tcp.subscribe("from-ws/#", 2) == [2]
    clients = [paho_ws(ws, opened, client_id, protocol,
                       will=Will(f"from-ws/will/{client_id}", b"gone", 1))
               for client_id in CLIENT_IDS]
    for client in clients:
        assert client.subscribe("from-tcp/#", 2) == [2]
    for qos in (0, 1, 2):
        for client in clients:
            client.publish(f"from-ws/{qos}", client.client._client_id, qos)
        tcp.publish(f"from-tcp/{qos}", f"tcp {qos}".encode(), qos)
    got = sorted((m.topic, m.payload, m.qos) for m in tcp.get_many(3 * len(clients)))
    assert got == sorted((f"from-ws/{qos}", client_id.encode(), qos)
                         for qos in (0, 1, 2) for client_id in CLIENT_IDS)
    for client in clients:
        got = sorted((m.topic, m.payload, m.qos) for m in client.get_many(3))
        assert got == [(f"from-tcp/{q}", f"tcp {q}".encode(), q) for q in (0, 1, 2)]
    # Retained, over WebSocket both ways.
    clients[0].publish("from-ws/retained", b"kept", 1, retain=True)
    assert tcp.get().payload == b"kept"
    late = paho_ws(ws, opened, "late-ws", protocol)
    assert late.subscribe("from-ws/retained", 1) == [1]
    message = late.get()
    assert (message.payload, message.retain) == (b"kept", True)
    # A dropped WebSocket client's will; a clean DISCONNECT sends none.
    clients[1].drop()
    will = tcp.get()
    assert (will.topic, will.payload) == (f"from-ws/will/{CLIENT_IDS[1]}", b"gone")
    clients[2].disconnect()
    tcp.assert_no_message()
    for client_id in CLIENT_IDS:
        ws.broker.wait_for_log(f"client {client_id} connected from 127.0.0.1:")


def test_paho_over_wss_with_a_private_ca(wss: WebSocketBroker, opened: list[PahoClient]) -> None:
    assert "(WebSocket /mqtt, TLS)" in wss.broker.wait_for_log("WebSocket /mqtt, TLS")
    tcp = paho_ws(wss.broker, opened, "tcp-peer")
    assert tcp.subscribe("secure/#", 1) == [1]
    for client_id in CLIENT_IDS:
        client = paho_ws(wss, opened, client_id, mqtt.MQTTv5)
        client.publish(f"secure/{client_id}", b"over wss", 1)
    got = sorted(m.topic for m in tcp.get_many(len(CLIENT_IDS)))
    assert got == sorted(f"secure/{client_id}" for client_id in CLIENT_IDS)


@pytest.fixture(scope="module")
def node() -> str:
    return test_mqttjs.node.__wrapped__()  # type: ignore[attr-defined]


@pytest.mark.parametrize("protocol", test_mqttjs.BOTH)
def test_mqttjs_over_ws(node: str, ws: WebSocketBroker, protocol: int) -> None:
    """MQTT.js's own WebSocket transport (the `ws` package), the same scenarios and checks
    as over TCP."""
    test_mqttjs.test_each_qos_exact_payloads(node, ws, protocol)  # type: ignore[arg-type]
    test_mqttjs.test_retained_delivered_then_cleared(node, ws, protocol)  # type: ignore[arg-type]
    test_mqttjs.test_will_on_destroyed_socket_not_on_end(node, ws, protocol)  # type: ignore[arg-type]
    test_mqttjs.test_session_present(node, ws)  # type: ignore[arg-type]


def test_mqttjs_over_wss(node: str, wss: WebSocketBroker) -> None:
    for protocol in (4, 5):
        test_mqttjs.test_each_qos_exact_payloads(node, wss, protocol)  # type: ignore[arg-type]
    test_mqttjs.test_topic_aliases_both_ways(node, wss, 5)  # type: ignore[arg-type]


# -- frame by frame ---------------------------------------------------------------------------


def open_ws(endpoint: WebSocketBroker, subprotocol: str = "mqtt") -> ClientConnection:
    return websocket_connect(endpoint.url, subprotocols=[subprotocol], open_timeout=5,  # type: ignore[list-item]
                             max_size=None)


def recv_packets(connection: ClientConnection, count: int) -> tuple[bytes, int]:
    """At least `count` MQTT packets' worth of bytes, and how many WebSocket messages
    carried them."""
    data = b""
    messages = 0
    while packets_in(data) < count:
        chunk = connection.recv(timeout=5)
        assert isinstance(chunk, bytes), "MQTT must arrive in binary frames"
        data += chunk
        messages += 1
    return data, messages


def packets_in(data: bytes) -> int:
    count = position = 0
    while position < len(data):
        length, shift, index = 0, 0, position + 1
        while True:
            byte = data[index]
            length |= (byte & 0x7F) << shift
            shift += 7
            index += 1
            if not byte & 0x80:
                break
        position = index + length
        count += 1
    return count


@pytest.mark.parametrize("subprotocol", ["mqtt", "mqttv3.1"])
def test_packets_split_across_frames_and_batched_in_one(ws: WebSocketBroker,
                                                        subprotocol: str) -> None:
    with open_ws(ws, subprotocol) as connection:
        assert connection.subprotocol == subprotocol
        # CONNECT and SUBSCRIBE in one frame.
        connection.send(connect_packet("frames") + subscribe_packet(1, [("f/#", 0)]))
        data, _ = recv_packets(connection, 2)
        assert data == b"\x20\x02\x00\x00\x90\x03\x00\x01\x00"
        publish = publish_packet("f/split", b"p" * 300)
        # One packet in three frames of one fragmented message ...
        connection.send([publish[:1], publish[1:100], publish[100:]])
        # ... and one packet in three separate messages.
        for start, end in ((0, 2), (2, 50), (50, len(publish))):
            connection.send(publish[start:end])
        data, _ = recv_packets(connection, 2)
        assert data == publish + publish
        # Ping/pong is the library's, as the close handshake is.
        assert connection.ping(b"are you there").wait(5)
    ws.broker.wait_for_log("client frames connected from")


def test_one_frame_per_flush(ws: WebSocketBroker) -> None:
    """Fifty PUBLISHes routed in one loop tick reach a WebSocket subscriber in one frame (or
    a few, if the publisher's bytes took more than one read), not fifty."""
    with open_ws(ws) as subscriber, open_ws(ws) as publisher:
        subscriber.send(connect_packet("batched-sub") + subscribe_packet(1, [("b/t", 0)]))
        recv_packets(subscriber, 2)
        publisher.send(connect_packet("batched-pub"))
        recv_packets(publisher, 1)
        burst = b"".join(publish_packet("b/t", b"%03d" % number) for number in range(50))
        publisher.send(burst)
        data, messages = recv_packets(subscriber, 50)
        assert data == burst
        assert messages <= 3, f"{messages} WebSocket messages for one burst"


def test_mqtt_disconnect_ends_with_a_normal_close(ws: WebSocketBroker) -> None:
    with open_ws(ws) as connection:
        connection.send(connect_packet("closing"))
        recv_packets(connection, 1)
        connection.send(b"\xe0\x00")
        with pytest.raises(ConnectionClosed) as closed:
            connection.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


def test_wrong_path_is_404(ws: WebSocketBroker) -> None:
    with pytest.raises(InvalidStatus) as refused:
        websocket_connect(f"ws://{ws.host}:{ws.port}/other", subprotocols=["mqtt"],  # type: ignore[list-item]
                          open_timeout=5)
    assert refused.value.response.status_code == 404
    ws.broker.wait_for_log("handshake refused with HTTP 404 Not Found: path '/other'")
    with websocket_connect(f"ws://{ws.host}:{ws.port}/mqtt?token=x", subprotocols=["mqtt"],  # type: ignore[list-item]
                           open_timeout=5) as connection:
        connection.send(connect_packet("with-query"))
        assert recv_packets(connection, 1)[0] == b"\x20\x02\x00\x00"


def test_allowed_origins(broker_factory: BrokerFactory) -> None:
    endpoint = ws_broker(broker_factory, allowed_origins=["https://app.example"])
    for origin, status in (("https://app.example", 101), ("https://evil.example", 403),
                           (None, 101)):
        try:
            with websocket_connect(endpoint.url, subprotocols=["mqtt"], open_timeout=5,  # type: ignore[list-item]
                                   origin=origin) as connection:  # type: ignore[arg-type]
                connection.send(connect_packet("origin"))
                assert recv_packets(connection, 1)[0] == b"\x20\x02\x00\x00"
                got = 101
        except InvalidStatus as exc:
            got = exc.response.status_code
        assert got == status, origin
    endpoint.broker.wait_for_log("HTTP 403 Forbidden: invalid Origin header: "
                                 "https://evil.example")


def test_wss_refuses_plain_websocket(wss: WebSocketBroker) -> None:
    with pytest.raises((InvalidHandshake, OSError, ConnectionClosed)):
        websocket_connect(f"ws://{wss.host}:{wss.port}/mqtt", subprotocols=["mqtt"],  # type: ignore[list-item]
                          open_timeout=5).close()
