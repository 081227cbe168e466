"""Client helpers for the end-to-end tests.

Three kinds of real MQTT peers talk to the broker started by the fixtures in tests/conftest.py:

* `PahoClient`: a small synchronous wrapper around paho-mqtt 2.x. Its network loop runs in a
  thread that calls `Client.loop()` and stops at the first disconnection (not `loop_start()`,
  which would silently reconnect after a takeover, a keep-alive close or a broker killed by a
  durability test, and take a persistent session over behind the test's back). Received
  messages are collected into a queue.
* `RawClient`: a plain TCP socket with hand-written MQTT bytes, for checks where exact bytes
  matter (DUP flag, packet ids, CONNACK flags, in-flight window, protocol violations).
* `MosquittoSub` / `mosquitto_pub()`: Debian's mosquitto-clients as subprocesses.

`Clients` owns every client a test opens and closes them all at the end of the test, before the
broker fixture stops the broker.
"""

from __future__ import annotations

import contextlib
import queue
import re
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

DEFAULT_TIMEOUT = 5.0
# How long "nothing arrives" is observed before it is believed (deliveries on 127.0.0.1 take
# milliseconds).
QUIET = 0.3

# (protocol name, protocol level) of the two supported protocol versions.
V311 = ("MQTT", 4)
V31 = ("MQIsdp", 3)
RAW_PROTOCOLS = {"3.1.1": V311, "3.1": V31}
PAHO_PROTOCOLS = {"3.1.1": mqtt.MQTTv311, "3.1": mqtt.MQTTv31}
CLI_PROTOCOLS = {"3.1.1": "mqttv311", "3.1": "mqttv31"}

# Fixed-header packet types (high nibble of the first byte).
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

PACKET_NAMES = {
    1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
    7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
    12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT",
}


class Broker(Protocol):
    """What the helpers need from tests.conftest.BrokerProcess."""

    host: str
    port: int


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False


@dataclass(frozen=True)
class Message:
    """An application message as a subscriber saw it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool = False
    packet_id: int = 0
    # MQTT 5 properties as paho decoded them (paho.mqtt.properties.Properties), else None.
    properties: Any = field(default=None, compare=False)


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    """MQTT "remaining length" encoding."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_str(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def packet(first_byte: int, body: bytes = b"") -> bytes:
    return bytes([first_byte]) + varint(len(body)) + body


def connect_packet(
    client_id: str | bytes = "",
    *,
    clean: bool = True,
    keepalive: int = 60,
    protocol: tuple[str, int] = V311,
    will: Will | None = None,
    username: str | None = None,
    password: bytes | None = None,
    extra_flags: int = 0,
) -> bytes:
    name, level = protocol
    flags = extra_flags
    if clean:
        flags |= 0x02
    payload = mqtt_str(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += mqtt_str(will.topic) + mqtt_str(will.payload)
    if username is not None:
        flags |= 0x80
        payload += mqtt_str(username)
    if password is not None:
        flags |= 0x40
        payload += mqtt_str(password)
    header = mqtt_str(name) + bytes([level, flags]) + struct.pack("!H", keepalive)
    return packet(0x10, header + payload)


def publish_packet(
    topic: str | bytes,
    payload: bytes = b"",
    *,
    qos: int = 0,
    retain: bool = False,
    dup: bool = False,
    packet_id: int | None = None,
) -> bytes:
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = mqtt_str(topic)
    if qos > 0:
        assert packet_id is not None, "QoS > 0 needs a packet id"
        body += struct.pack("!H", packet_id)
    return packet(first, body + payload)


def subscribe_packet(
    packet_id: int, filters: Sequence[tuple[str | bytes, int]], *, flags: int = 0x02
) -> bytes:
    body = struct.pack("!H", packet_id)
    for topic_filter, qos in filters:
        body += mqtt_str(topic_filter) + bytes([qos])
    return packet(0x80 | flags, body)


def unsubscribe_packet(
    packet_id: int, filters: Sequence[str | bytes], *, flags: int = 0x02
) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(mqtt_str(f) for f in filters)
    return packet(0xA0 | flags, body)


def puback(packet_id: int) -> bytes:
    return packet(0x40, struct.pack("!H", packet_id))


def pubrec(packet_id: int) -> bytes:
    return packet(0x50, struct.pack("!H", packet_id))


def pubrel(packet_id: int) -> bytes:
    return packet(0x62, struct.pack("!H", packet_id))


def pubcomp(packet_id: int) -> bytes:
    return packet(0x70, struct.pack("!H", packet_id))


PINGREQ_BYTES = b"\xc0\x00"
PINGRESP_BYTES = b"\xd0\x00"
DISCONNECT_BYTES = b"\xe0\x00"


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Packet:
    first_byte: int
    body: bytes

    @property
    def type(self) -> int:
        return self.first_byte >> 4

    @property
    def flags(self) -> int:
        return self.first_byte & 0x0F

    @property
    def name(self) -> str:
        return PACKET_NAMES.get(self.type, f"type {self.type}")

    @property
    def raw(self) -> bytes:
        return bytes([self.first_byte]) + varint(len(self.body)) + self.body

    @property
    def packet_id(self) -> int:
        """Packet id of an ack, SUBACK or UNSUBACK (the first two body bytes)."""
        return int(struct.unpack("!H", self.body[:2])[0])

    def publish(self) -> Message:
        assert self.type == PUBLISH, f"expected PUBLISH, got {self}"
        qos = (self.flags >> 1) & 0x03
        (length,) = struct.unpack("!H", self.body[:2])
        topic = self.body[2 : 2 + length].decode()
        rest = self.body[2 + length :]
        packet_id = 0
        if qos:
            (packet_id,) = struct.unpack("!H", rest[:2])
            rest = rest[2:]
        return Message(
            topic=topic,
            payload=rest,
            qos=qos,
            retain=bool(self.flags & 0x01),
            dup=bool(self.flags & 0x08),
            packet_id=packet_id,
        )

    def __str__(self) -> str:
        return f"{self.name}(flags=0x{self.flags:x}, body={self.body!r})"


@dataclass(frozen=True)
class Connack:
    session_present: bool
    return_code: int
    raw: bytes


class ConnectionClosedError(Exception):
    """The broker closed the connection while a packet was expected."""


# --------------------------------------------------------------------------------------------
# Raw socket client
# --------------------------------------------------------------------------------------------


class RawClient:
    """A TCP connection that sends hand-written bytes and reads whole MQTT packets."""

    def __init__(self, broker: Broker, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.sock = socket.create_connection((broker.host, broker.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray()
        self._set_aside: list[Packet] = []
        self.eof = False

    @property
    def local_port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def peer(self) -> str:
        """This connection as the broker sees it: "127.0.0.1:<our port>"."""
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    # -- reading -----------------------------------------------------------------------------

    def _fill(self, deadline: float) -> None:
        """Read more bytes into the buffer or raise TimeoutError / ConnectionClosedError."""
        if self.eof:
            raise ConnectionClosedError("connection already closed by the broker")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        ready, _, _ = select.select([self.sock], [], [], remaining)
        if not ready:
            raise TimeoutError
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            raise ConnectionClosedError("connection closed by the broker")
        self._buffer += data

    def _try_parse(self) -> Packet | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        length, multiplier, index = 0, 1, 1
        while True:
            if index >= len(buf):
                return None
            byte = buf[index]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            index += 1
            if not byte & 0x80:
                break
            if index > 4:
                raise AssertionError(f"broker sent a malformed remaining length: {bytes(buf)!r}")
        if len(buf) < index + length:
            return None
        result = Packet(buf[0], bytes(buf[index : index + length]))
        del buf[: index + length]
        return result

    def read_packet(self, timeout: float = DEFAULT_TIMEOUT, *, backlog: bool = False) -> Packet:
        """The next whole packet. Raises TimeoutError or ConnectionClosedError.

        Packets put aside by `expect()` come first, unless `backlog` is set (internal use).
        """
        if self._set_aside and not backlog:
            return self._set_aside.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            parsed = self._try_parse()
            if parsed is not None:
                return parsed
            self._fill(deadline)

    def expect(self, packet_type: int, timeout: float = DEFAULT_TIMEOUT) -> Packet:
        """The next packet, which must be of `packet_type`.

        While waiting for an acknowledgement, PUBLISH packets (messages that may legitimately
        overtake it, e.g. the client's own message coming back) are put aside in order and
        returned by later reads; any other packet type is a failure.
        """
        if packet_type == PUBLISH and self._set_aside:
            return self._set_aside.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = self.read_packet(max(0.0, deadline - time.monotonic()), backlog=True)
            except TimeoutError:
                pytest.fail(f"no {PACKET_NAMES[packet_type]} within {timeout} s")
            except ConnectionClosedError:
                pytest.fail(f"connection closed while waiting for {PACKET_NAMES[packet_type]}")
            if got.type == packet_type:
                return got
            if got.type == PUBLISH and packet_type != PUBLISH:
                self._set_aside.append(got)
                continue
            pytest.fail(f"expected {PACKET_NAMES[packet_type]}, got {got}")

    def expect_publish(self, timeout: float = DEFAULT_TIMEOUT) -> Message:
        return self.expect(PUBLISH, timeout).publish()

    def packets_until_quiet(self, quiet: float = QUIET) -> list[Packet]:
        """Every packet that arrives until none has for `quiet` seconds (put-aside ones first)."""
        got: list[Packet] = []
        while True:
            try:
                got.append(self.read_packet(quiet))
            except TimeoutError:
                return got

    def assert_silent(self, timeout: float = QUIET) -> None:
        """Nothing arrives (and the connection stays open) for `timeout` seconds."""
        try:
            got = self.read_packet(timeout)
        except TimeoutError:
            return
        except ConnectionClosedError:
            pytest.fail("connection closed, expected it to stay open and silent")
        pytest.fail(f"expected nothing, got {got}")

    def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> list[Packet]:
        """Wait until the broker closes the connection; return the packets it sent before."""
        deadline = time.monotonic() + timeout
        received: list[Packet] = []
        while True:
            try:
                received.append(self.read_packet(max(0.0, deadline - time.monotonic())))
            except ConnectionClosedError:
                return received
            except TimeoutError:
                pytest.fail(
                    f"connection still open after {timeout} s; received "
                    f"{[str(p) for p in received]}"
                )

    def is_open(self) -> bool:
        """True if the broker has not closed the connection (a PINGREQ is answered)."""
        try:
            self.send(PINGREQ_BYTES)
            return self.read_packet(2.0).raw == PINGRESP_BYTES
        except (OSError, TimeoutError, ConnectionClosedError):
            return False

    # -- conversations -----------------------------------------------------------------------

    def connect(
        self,
        client_id: str | bytes = "",
        *,
        clean: bool = True,
        keepalive: int = 60,
        protocol: tuple[str, int] = V311,
        will: Will | None = None,
        expect_rc: int | None = 0,
    ) -> Connack:
        """Send CONNECT and read the CONNACK (asserting its return code unless None)."""
        self.send(
            connect_packet(
                client_id, clean=clean, keepalive=keepalive, protocol=protocol, will=will
            )
        )
        reply = self.expect(CONNACK)
        assert len(reply.body) == 2, f"CONNACK must have 2 body bytes: {reply}"
        assert reply.flags == 0, f"CONNACK fixed-header flags must be 0: {reply}"
        ack = Connack(bool(reply.body[0] & 0x01), reply.body[1], reply.raw)
        if expect_rc is not None:
            assert ack.return_code == expect_rc, f"CONNACK {reply.raw!r}"
        return ack

    def subscribe(
        self, filters: Sequence[tuple[str | bytes, int]], packet_id: int = 1
    ) -> list[int]:
        """SUBSCRIBE and return the SUBACK return codes (one per filter)."""
        self.send(subscribe_packet(packet_id, filters))
        reply = self.expect(SUBACK)
        assert reply.flags == 0
        assert reply.packet_id == packet_id, f"SUBACK for the wrong packet id: {reply}"
        return list(reply.body[2:])

    def unsubscribe(self, filters: Sequence[str | bytes], packet_id: int = 1) -> None:
        self.send(unsubscribe_packet(packet_id, filters))
        reply = self.expect(UNSUBACK)
        assert reply.raw == b"\xb0\x02" + struct.pack("!H", packet_id), str(reply)

    def publish(
        self,
        topic: str,
        payload: bytes = b"",
        *,
        qos: int = 0,
        retain: bool = False,
        packet_id: int = 1,
    ) -> None:
        """Publish and complete the QoS 1/2 handshake as the sender."""
        pid = packet_id if qos else None
        self.send(publish_packet(topic, payload, qos=qos, retain=retain, packet_id=pid))
        if qos == 1:
            assert self.expect(PUBACK).raw == puback(packet_id)
        elif qos == 2:
            assert self.expect(PUBREC).raw == pubrec(packet_id)
            self.send(pubrel(packet_id))
            assert self.expect(PUBCOMP).raw == pubcomp(packet_id)

    def receive(self, timeout: float = DEFAULT_TIMEOUT) -> Message:
        """Receive one PUBLISH and complete the QoS 1/2 handshake as the receiver."""
        message = self.expect_publish(timeout)
        self.complete(message)
        return message

    def complete(self, message: Message) -> None:
        """Complete the QoS 1/2 handshake of a PUBLISH already read, as the receiver."""
        if message.qos == 1:
            self.send(puback(message.packet_id))
        elif message.qos == 2:
            self.send(pubrec(message.packet_id))
            assert self.expect(PUBREL).raw == pubrel(message.packet_id)
            self.send(pubcomp(message.packet_id))

    def disconnect(self) -> None:
        """Send DISCONNECT and wait until the broker has closed its side: by then it has
        processed the DISCONNECT, so what the test does next cannot race with it."""
        self.send(DISCONNECT_BYTES)
        self._half_close_and_wait()

    def drop(self) -> None:
        """Close without DISCONNECT (an abnormal close) and wait until the broker has closed
        its side, i.e. has noticed."""
        self._half_close_and_wait()

    def _half_close_and_wait(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)
        try:
            self.wait_closed()
        finally:
            self.close()


# --------------------------------------------------------------------------------------------
# paho-mqtt wrapper
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectResult:
    return_code: int
    session_present: bool


# paho 2.x reports MQTT 3 CONNACK codes converted to MQTT 5 reason codes; map them back.
_V5_TO_V3_CONNACK = {0: 0, 132: 1, 133: 2, 136: 3, 134: 4, 135: 5}


class PahoClient:
    """A synchronous paho-mqtt client that collects received messages into a queue."""

    def __init__(
        self,
        broker: Broker,
        client_id: str = "",
        *,
        protocol: MQTTProtocolVersion = mqtt.MQTTv311,
        clean_session: bool = True,
        keepalive: int = 60,
        will: Will | None = None,
        will_properties: Any = None,
        transport: str = "tcp",
    ) -> None:
        self.broker = broker
        self.keepalive = keepalive
        self.v5 = protocol == mqtt.MQTTv5
        # MQTT 5 has Clean Start (a CONNECT argument) instead of clean session.
        self.clean_start = clean_session
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            transport=transport,  # "tcp", "websockets" or "unix" (host is then the path)
            **({} if self.v5 else {"clean_session": clean_session}),
        )
        if transport == "websockets":
            # paho's WebSocket wrapper keeps the frame being sent as shared state: two threads
            # writing at once (a publish() here while the loop thread acks a message) send one
            # frame twice and lose the other. So writes are only queued here, and the loop
            # thread, woken through paho's socket pair, writes them.
            self.client.on_socket_register_write = lambda *_args: None
        if will is not None:
            self.client.will_set(will.topic, will.payload, will.qos, will.retain,
                                 properties=will_properties)
        # MQTT 5 answers: CONNACK properties, the reason of a server DISCONNECT, and the
        # reason codes of PUBACK/PUBREC (by mid) and UNSUBACK.
        self.connack_properties: Any = None
        self.disconnect_reason: int | None = None
        self.publish_reasons: dict[int, int] = {}
        self.messages: queue.Queue[Message] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connect_result: ConnectResult | None = None
        self._subacks: dict[int, list[int]] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        self.client.on_publish = self._on_publish

    # -- callbacks (loop thread) ------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        code = int(reason.value)
        if not self.v5:
            code = _V5_TO_V3_CONNACK.get(code, code)
        self.connect_result = ConnectResult(code, bool(flags.session_present))
        self.connack_properties = props
        self.connected.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.disconnect_reason = int(reason.value)
        self.disconnected.set()
        self.connected.set()  # wake up a connect() that is still waiting

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(
            Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), bool(msg.dup),
                    properties=getattr(msg, "properties", None) if self.v5 else None)
        )

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        with self._cond:
            self.publish_reasons[mid] = int(reason.value)
            self._cond.notify_all()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: list[Any], props: Any
    ) -> None:
        with self._cond:
            self._subacks[mid] = [int(code.value) for code in codes]
            self._cond.notify_all()

    def _on_unsubscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any
    ) -> None:
        with self._cond:
            self._subacks[mid] = [int(code.value) for code in codes] if self.v5 else []
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                    break
        finally:
            self.disconnected.set()
            self.connected.set()

    # -- API ---------------------------------------------------------------------------------

    def connect(self, timeout: float = DEFAULT_TIMEOUT, expect_rc: int | None = 0,
                properties: Any = None) -> ConnectResult:
        """Connect; `properties` are MQTT 5 CONNECT properties (paho Properties)."""
        if self.v5:
            self.client.connect(self.broker.host, self.broker.port, keepalive=self.keepalive,
                                clean_start=self.clean_start, properties=properties)
        else:
            self.client.connect(self.broker.host, self.broker.port, keepalive=self.keepalive)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.connected.wait(timeout), "no CONNACK"
        assert self.connect_result is not None, "connection closed before CONNACK"
        if expect_rc is not None:
            assert self.connect_result.return_code == expect_rc, self.connect_result
        return self.connect_result

    def _wait_ack(self, mid: int, timeout: float) -> list[int]:
        with self._cond:
            ok = self._cond.wait_for(lambda: mid in self._subacks, timeout)
            assert ok, f"no SUBACK/UNSUBACK for mid {mid}"
            return self._subacks.pop(mid)

    def subscribe(
        self, topic: str | Iterable[tuple[str, Any]], qos: int = 0,
        timeout: float = DEFAULT_TIMEOUT, *, options: Any = None, properties: Any = None,
    ) -> list[int]:
        """Subscribe and wait for the SUBACK; return its return (MQTT 5: reason) codes.
        `options` is a paho SubscribeOptions (MQTT 5), replacing `qos`."""
        if isinstance(topic, str):
            rc, mid = self.client.subscribe(topic, qos, options=options, properties=properties)
        else:
            rc, mid = self.client.subscribe(list(topic))
        assert rc == mqtt.MQTT_ERR_SUCCESS, rc
        assert mid is not None
        return self._wait_ack(mid, timeout)

    def unsubscribe(self, topic: str | list[str], timeout: float = DEFAULT_TIMEOUT) -> list[int]:
        """Unsubscribe and wait for UNSUBACK; its MQTT 5 reason codes ([] for 3.1.1)."""
        rc, mid = self.client.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS, rc
        assert mid is not None
        return self._wait_ack(mid, timeout)

    def publish(
        self, topic: str, payload: bytes | str = b"", qos: int = 0, retain: bool = False,
        timeout: float = DEFAULT_TIMEOUT, properties: Any = None,
    ) -> int:
        """Publish and wait until sent (QoS 0), PUBACKed (1) or PUBCOMPed (2). Returns the
        MQTT 5 reason code of the PUBACK/PUBREC (0 for QoS 0 and 3.1.1)."""
        info = self.client.publish(topic, payload, qos, retain, properties=properties)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"publish to {topic!r} not completed"
        if not (self.v5 and qos):
            return 0
        with self._cond:  # on_publish may run just after wait_for_publish returns
            assert self._cond.wait_for(lambda: info.mid in self.publish_reasons, timeout)
            return self.publish_reasons.pop(info.mid)

    def get(self, timeout: float = DEFAULT_TIMEOUT) -> Message:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no message within {timeout} s")

    def get_many(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> list[Message]:
        deadline = time.monotonic() + timeout
        got: list[Message] = []
        while len(got) < count:
            try:
                got.append(self.messages.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"{len(got)} of {count} messages within {timeout} s: "
                            f"{[(m.topic, m.payload) for m in got]}")
        return got

    def drain(
        self, expected: int, timeout: float = 2 * DEFAULT_TIMEOUT, quiet: float = QUIET
    ) -> list[Message]:
        """At least `expected` messages, then whatever else arrives until `quiet` s of silence
        (so extra deliveries, duplicates included, are seen and can be asserted on)."""
        got = self.get_many(expected, timeout)
        while True:
            try:
                got.append(self.messages.get(timeout=quiet))
            except queue.Empty:
                return got

    def assert_no_message(self, timeout: float = QUIET) -> None:
        try:
            message = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        pytest.fail(f"expected no message, got {message}")

    def disconnect(self) -> None:
        """A clean DISCONNECT."""
        self.client.disconnect()
        assert self.disconnected.wait(DEFAULT_TIMEOUT)
        self._join()

    def drop(self) -> None:
        """Close the socket without DISCONNECT (an abnormal close from the broker's view)."""
        self._stop.set()
        self._join()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def _join(self) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(DEFAULT_TIMEOUT)

    def close(self) -> None:
        self._stop.set()
        self._join()
        sock = self.client.socket()
        if sock is not None:
            sock.close()


# --------------------------------------------------------------------------------------------
# mosquitto-clients
# --------------------------------------------------------------------------------------------


def mosquitto_pub(
    broker: Broker, *args: str, version: str = "mqttv311", input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run mosquitto_pub against the broker; it must exit 0 within the timeout."""
    command = ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-V", version, *args]
    result = subprocess.run(
        command, input=input_text, capture_output=True, text=True, timeout=DEFAULT_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{command} failed: {result.stdout}{result.stderr}"
    return result


_MSG_LINE = re.compile(r"^MSG (\d) (\d) (\S+) (.*)$")


class MosquittoSub:
    """A mosquitto_sub subprocess whose output lines (debug log and messages) are queued.

    Messages are printed as "MSG <qos> <retain> <topic> <payload>" lines (-F), debug lines (-d)
    tell when the SUBACK arrived.
    """

    def __init__(self, broker: Broker, *args: str, version: str = "mqttv311") -> None:
        command = [
            "stdbuf", "-oL", "mosquitto_sub", "-h", broker.host, "-p", str(broker.port),
            "-V", version, "-d", "-F", "MSG %q %r %t %p", *args,
        ]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _next_line(self, deadline: float) -> str | None:
        try:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError from None
        if line is not None:
            self.log.append(line)
        return line

    def wait_subscribed(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._next_line(deadline)
            except TimeoutError:
                pytest.fail(f"mosquitto_sub got no SUBACK: {self.log}")
            if line is None:
                pytest.fail(f"mosquitto_sub exited before SUBACK: {self.log}")
            if "received SUBACK" in line:
                return

    def next_message(self, timeout: float = DEFAULT_TIMEOUT) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._next_line(deadline)
            except TimeoutError:
                pytest.fail(f"mosquitto_sub printed no message within {timeout} s: {self.log}")
            if line is None:
                pytest.fail(f"mosquitto_sub exited: {self.log}")
            match = _MSG_LINE.match(line)
            if match:
                qos, retain, topic, payload = match.groups()
                return Message(topic, payload.encode(), int(qos), retain == "1")

    def assert_no_message(self, timeout: float = QUIET) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._next_line(deadline)
            except TimeoutError:
                return
            if line is None:
                return
            assert not _MSG_LINE.match(line), f"unexpected message: {line}"

    def wait_exit(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        # The reader sees EOF now; closing the pipe under it would make it raise instead.
        self._reader.join(DEFAULT_TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# --------------------------------------------------------------------------------------------
# Ownership
# --------------------------------------------------------------------------------------------


class Clients:
    """Opens clients against one broker and closes all of them at the end of the test.

    Typical use in a test module::

        @pytest.fixture
        def clients(broker: BrokerProcess) -> Iterator[Clients]:
            with Clients(broker) as opened:
                yield opened
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._owned: list[PahoClient | RawClient | MosquittoSub] = []

    def paho(
        self,
        client_id: str = "",
        *,
        protocol: MQTTProtocolVersion = mqtt.MQTTv311,
        clean_session: bool = True,
        keepalive: int = 60,
        will: Will | None = None,
        will_properties: Any = None,
        connect: bool = True,
        transport: str = "tcp",
    ) -> PahoClient:
        client = PahoClient(
            self.broker, client_id, protocol=protocol, clean_session=clean_session,
            keepalive=keepalive, will=will, will_properties=will_properties,
            transport=transport,
        )
        self._owned.append(client)
        if connect:
            client.connect()
        return client

    def subscriber(
        self, topic: str, qos: int = 2, *,
        protocol: MQTTProtocolVersion = mqtt.MQTTv311, client_id: str = "",
    ) -> PahoClient:
        """A connected paho client already subscribed to `topic`."""
        client = self.paho(client_id, protocol=protocol)
        assert client.subscribe(topic, qos) == [qos]
        return client

    def raw(
        self,
        client_id: str | None = None,
        *,
        clean: bool = True,
        keepalive: int = 60,
        protocol: tuple[str, int] = V311,
        will: Will | None = None,
    ) -> RawClient:
        """A raw connection; connected (CONNACK 0 asserted) if client_id is given."""
        client = RawClient(self.broker)
        self._owned.append(client)
        if client_id is not None:
            client.connect(
                client_id, clean=clean, keepalive=keepalive, protocol=protocol, will=will
            )
        return client

    def mosquitto_sub(self, *args: str, version: str = "mqttv311") -> MosquittoSub:
        sub = MosquittoSub(self.broker, *args, version=version)
        self._owned.append(sub)
        return sub

    def close(self) -> None:
        for client in reversed(self._owned):
            with contextlib.suppress(Exception):  # best effort: the broker may be gone
                client.close()
        self._owned.clear()

    def __enter__(self) -> Clients:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def wait_until(
    condition: Callable[[], object], timeout: float = DEFAULT_TIMEOUT, interval: float = 0.02
) -> bool:
    """Poll `condition()` until truthy or the timeout passes; return the last result's truth."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def unclosed_violations(
    clients: Clients,
    cases: dict[str, bytes],
    *,
    client_id: str | None = None,
    allow_refusal: bool = False,
) -> list[str]:
    """Send each case's bytes on its own connection (CONNECTed first as `client_id`-<n> unless
    client_id is None), all at once; return a description of every case where the broker did not
    close the connection without answering (a CONNACK with a non-zero return code is allowed
    before the close if `allow_refusal`). An empty list means every case was handled."""
    opened: dict[str, RawClient] = {}
    for index, (name, data) in enumerate(cases.items()):
        client = clients.raw(None if client_id is None else f"{client_id}-{index}")
        client.send(data)
        opened[name] = client
    problems: list[str] = []
    for name, client in opened.items():
        try:
            received = client.wait_closed()
        except pytest.fail.Exception as exc:
            problems.append(f"{name}: {exc}")
            continue
        unexpected = [
            str(p) for p in received
            if not (allow_refusal and p.type == CONNACK and p.body[1:] != b"\x00")
        ]
        if unexpected:
            problems.append(f"{name}: answered {unexpected} before closing")
    return problems
