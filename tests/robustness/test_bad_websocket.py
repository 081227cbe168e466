"""Hostile input on a WebSocket listener, over real sockets with hand-made requests and frames:
a bad handshake gets an HTTP status (405, 426, 400, 404, 408), a bad frame a close code
(1002 unmasked or fragmented control frame, 1003 text frame, 1009 too big), each with a log line
naming the peer and the cause and never a traceback; a client that never reads loses its
QoS 0 messages like a TCP one. After each, a healthy client is still served."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from websockets.frames import Frame, Opcode

from tests.conftest import BrokerProcess, Endpoint
from tests.integration.clients import connect_packet, publish_packet, subscribe_packet
from tests.robustness.conftest import module_broker

MAX_PACKET = 4096
PINGS = b"\xc0\x00" * (MAX_PACKET // 4 + 1)
HANDSHAKE = (
    "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Protocol: mqtt\r\n\r\n"
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess,
                                                                        Endpoint]]:
    for broker in module_broker(tmp_path_factory, "bad-websocket-broker", {
            "limits": {"connect_timeout": 1, "max_packet_size": MAX_PACKET,
                       "stalled_reader_timeout": 1, "max_write_buffer": 16384},
            "storage": {"durability": "none"},
            "listeners": [{}, {"host": "127.0.0.1", "port": 0, "protocol": "websocket"}]}):
        yield broker, Endpoint(*broker.listening_on("WebSocket"))


class RawWebSocket:
    """A TCP socket that speaks WebSocket by hand, so that it can get it wrong."""

    def __init__(self, endpoint: Endpoint, receive_buffer: int = 0) -> None:
        self.sock = socket.socket()
        if receive_buffer:  # before connecting: it sets the window the peer may fill
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(5)
        self.sock.connect((endpoint.host, endpoint.port))
        host, port = self.sock.getsockname()[:2]
        self.peer = f"{host}:{port}"
        self.buffer = b""

    def handshake(self, request: str = HANDSHAKE) -> bytes:
        """Send `request`; the HTTP response head (status line and headers)."""
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head

    def open(self) -> None:
        assert self.handshake().startswith(b"HTTP/1.1 101 ")

    def send_frame(self, opcode: Opcode, data: bytes, *, fin: bool = True,
                   mask: bool = True) -> None:
        self.sock.sendall(Frame(opcode, data, fin).serialize(mask=mask, extensions=[]))

    def send_mqtt(self, data: bytes) -> None:
        self.send_frame(Opcode.BINARY, data)

    def read_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame from the server (never masked)."""
        self._fill(2)
        first, second = self.buffer[0], self.buffer[1]
        length, offset = second & 0x7F, 2
        if length == 126:
            self._fill(4)
            length, offset = struct.unpack(">H", self.buffer[2:4])[0], 4
        elif length == 127:
            self._fill(10)
            length, offset = struct.unpack(">Q", self.buffer[2:10])[0], 10
        self._fill(offset + length)
        payload = self.buffer[offset:offset + length]
        self.buffer = self.buffer[offset + length:]
        return first & 0x0F, payload

    def close_code(self) -> int:
        """Read until the server's close frame; its code."""
        while True:
            opcode, payload = self.read_frame()
            if opcode == Opcode.CLOSE:
                return int(struct.unpack(">H", payload[:2])[0])

    def closed(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
        return True

    def _fill(self, size: int) -> None:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"closed with {self.buffer!r} read")
            self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def clients(served: tuple[BrokerProcess, Endpoint]) -> Iterator[list[RawWebSocket]]:
    opened: list[RawWebSocket] = []
    yield opened
    for client in opened:
        client.close()
    still_serves(served[1])


def still_serves(endpoint: Endpoint) -> None:
    client = RawWebSocket(endpoint)
    try:
        client.open()
        client.send_mqtt(connect_packet("healthy"))
        assert client.read_frame() == (Opcode.BINARY, b"\x20\x02\x00\x00")
    finally:
        client.close()


def raw(endpoint: Endpoint, opened: list[RawWebSocket],
        receive_buffer: int = 0) -> RawWebSocket:
    client = RawWebSocket(endpoint, receive_buffer)
    opened.append(client)
    return client


def log_line(broker: BrokerProcess, peer: str, needle: str) -> str:
    text = broker.wait_for_log(f"websocket client {peer}")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in text.splitlines():
            if f"websocket client {peer}" in line and needle in line:
                return line
        time.sleep(0.05)
        text = broker.log_text()
    pytest.fail(f"no log line for {peer} with {needle!r}:\n{text}")


BAD_HANDSHAKES = [
    ("plain HTTP GET", "GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n", 426,
     "missing Connection header"),
    ("no Upgrade header", HANDSHAKE.replace("Upgrade: websocket\r\n", ""), 426,
     "missing Upgrade header"),
    ("wrong Upgrade", HANDSHAKE.replace("Upgrade: websocket", "Upgrade: h2c"), 426,
     "invalid Upgrade header: h2c"),
    ("POST", HANDSHAKE.replace("GET", "POST"), 405, "unsupported HTTP method: POST"),
    ("wrong subprotocol only", HANDSHAKE.replace("Protocol: mqtt", "Protocol: chat"), 400,
     "invalid subprotocol; expected one of mqtt, mqttv3.1"),
    ("no subprotocol", HANDSHAKE.replace("Sec-WebSocket-Protocol: mqtt\r\n", ""), 400,
     "missing subprotocol"),
    ("bad key", HANDSHAKE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), 400,
     "invalid Sec-WebSocket-Key header"),
    ("wrong version", HANDSHAKE.replace("Version: 13", "Version: 8"), 400,
     "invalid Sec-WebSocket-Version header"),
    ("wrong path", HANDSHAKE.replace("/mqtt", "/ws"), 404, "path '/ws' is not '/mqtt'"),
]


@pytest.mark.parametrize(("request_text", "status", "reason"),
                         [case[1:] for case in BAD_HANDSHAKES],
                         ids=[case[0] for case in BAD_HANDSHAKES])
def test_bad_handshake_gets_an_http_status(served: tuple[BrokerProcess, Endpoint],
                                           clients: list[RawWebSocket], request_text: str,
                                           status: int, reason: str) -> None:
    broker, endpoint = served
    client = raw(endpoint, clients)
    head = client.handshake(request_text)
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    assert client.closed()
    line = log_line(broker, client.peer, "handshake refused")
    assert f"HTTP {status}" in line and reason in line, line


def test_slow_handshake_gets_408_at_connect_timeout(served: tuple[BrokerProcess, Endpoint],
                                                    clients: list[RawWebSocket]) -> None:
    broker, endpoint = served
    client = raw(endpoint, clients)
    client.sock.sendall(HANDSHAKE[:40].encode())  # slowloris: a request that never ends
    started = time.monotonic()
    head = client.handshake("")
    assert head.startswith(b"HTTP/1.1 408 "), head
    assert 0.5 < time.monotonic() - started < 4
    assert client.closed()
    log_line(broker, client.peer, "no complete handshake within 1 s")


def test_silence_after_the_handshake_is_the_connect_timeout(
        served: tuple[BrokerProcess, Endpoint], clients: list[RawWebSocket]) -> None:
    broker, endpoint = served
    client = raw(endpoint, clients)
    client.open()  # and then no CONNECT
    assert client.close_code() == 1000
    broker.wait_for_log(f"({client.peer})")


BAD_FRAMES = [
    ("text frame", lambda c: c.send_frame(Opcode.TEXT, b"\x10\x00"), 1003,
     "text frame: MQTT is carried in binary frames"),
    ("unmasked frame", lambda c: c.send_frame(Opcode.BINARY, b"\xc0\x00", mask=False), 1002,
     "incorrect masking"),
    ("fragmented ping", lambda c: c.sock.sendall(b"\x09\x81" + os.urandom(4) + b"x"), 1002,
     "fragmented control frame"),
    ("oversized frame", lambda c: c.send_frame(Opcode.BINARY, bytes(MAX_PACKET + 1)), 1009,
     f"frame with {MAX_PACKET + 1} bytes exceeds limit of {MAX_PACKET} bytes"),
    # Valid MQTT (PINGREQs) in each fragment, too much of it in one message.
    ("oversized fragmented message",
     lambda c: (c.send_frame(Opcode.BINARY, PINGS, fin=False),
                c.send_frame(Opcode.CONT, PINGS)), 1009,
     f"after reading {len(PINGS)} bytes exceeds limit of {MAX_PACKET} bytes"),
    ("reserved opcode", lambda c: c.sock.sendall(b"\x83\x80" + os.urandom(4)), 1002,
     "invalid opcode"),
    ("continuation without a start", lambda c: c.send_frame(Opcode.CONT, b"\xc0\x00"), 1002,
     "unexpected continuation frame"),
    ("reserved bit set", lambda c: c.sock.sendall(b"\xc2\x82" + bytes(4) + b"\xc0\x00"), 1002,
     "reserved bits must be 0"),
]


@pytest.mark.parametrize(("send", "code", "reason"), [case[1:] for case in BAD_FRAMES],
                         ids=[case[0] for case in BAD_FRAMES])
def test_bad_frame_gets_a_close_code(served: tuple[BrokerProcess, Endpoint],
                                     clients: list[RawWebSocket], send: object, code: int,
                                     reason: str) -> None:
    broker, endpoint = served
    client = raw(endpoint, clients)
    client.open()
    client.send_mqtt(connect_packet(f"bad-frame-{code}"))
    assert client.read_frame() == (Opcode.BINARY, b"\x20\x02\x00\x00")
    send(client)  # type: ignore[operator]
    assert client.close_code() == code
    assert client.closed()
    line = log_line(broker, client.peer, f"closing with {code}")
    assert f"(bad-frame-{code})" in line and reason in line, line


def test_a_client_that_never_reads(served: tuple[BrokerProcess, Endpoint],
                                   clients: list[RawWebSocket]) -> None:
    """Its socket fills, its QoS 0 messages are dropped after stalled_reader_timeout (as for
    TCP), and the publisher and another subscriber go on."""
    broker, endpoint = served
    stalled = raw(endpoint, clients, receive_buffer=4096)
    stalled.open()
    stalled.send_mqtt(connect_packet("never-reads") + subscribe_packet(1, [("flood", 0)]))
    healthy = raw(endpoint, clients)
    healthy.open()
    healthy.send_mqtt(connect_packet("keeps-reading") + subscribe_packet(1, [("flood", 0)]))
    assert healthy.read_frame() == (Opcode.BINARY, b"\x20\x02\x00\x00\x90\x03\x00\x01\x00")
    last = publish_packet("flood", b"last")
    seen = threading.Event()

    def read_healthy() -> None:
        healthy.sock.settimeout(30)
        while not seen.is_set():
            if last in healthy.read_frame()[1]:
                seen.set()

    reader = threading.Thread(target=read_healthy, daemon=True)
    reader.start()
    publisher = raw(endpoint, clients)
    publisher.open()
    publisher.send_mqtt(connect_packet("flooder"))
    three = publish_packet("flood", bytes(1000)) * 3  # under max_packet_size per message
    for _ in range(1500):  # 4.5 MB, more than the stalled client's buffers hold
        publisher.send_mqtt(three)
    broker.wait_for_log("client never-reads (", timeout=10)
    broker.wait_for_log("has not read for 1 s: dropping its QoS 0 messages")
    publisher.send_mqtt(last)
    assert seen.wait(10), "the healthy subscriber stopped receiving"
