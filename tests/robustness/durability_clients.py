"""Clients for the durability tests (restart, crash, storage faults).

* `RawClient`: a plain TCP socket speaking hand-written MQTT 3.1.1 bytes, for checks where the
  exact bytes matter (DUP flag, packet ids, a subscriber that never acknowledges, a PUBREL sent
  to a broker that restarted in between).
* `PahoClient`: paho-mqtt 2.x with clean session 0 by default, its network loop in a thread
  that calls `Client.loop()` and stops at the first disconnection. paho's own `loop_start()`
  would reconnect by itself after a kill and take the session over behind the test's back.
* `commit_barrier()`: returns once everything the broker changed so far is committed, using
  the durability promise itself: with `durability = "sync"` a PUBACK leaves only when nothing
  is waiting to be written, so a QoS 1 round trip after a SUBSCRIBE (whose SUBACK is not an
  acknowledgement the promise covers) proves the subscription is on disk.

Nothing here reads Culex's internals: a client only knows what the wire tells it.
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import BrokerProcess
from tests.integration.clients import mqtt_str, packet, varint

TIMEOUT = 5.0
# How long silence is observed before "nothing more arrives" is believed (127.0.0.1 deliveries
# take milliseconds).
QUIET = 0.4

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
         7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
         12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT"}

BARRIER_TOPIC = "durability-barrier"


class Endpoint(Protocol):
    """What the clients need from tests.conftest.BrokerProcess."""

    host: str
    port: int


# --- encoding -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


def connect_packet(client_id: str, *, clean: bool, keepalive: int = 60,
                   will: Will | None = None) -> bytes:
    flags = 0x02 if clean else 0
    payload = mqtt_str(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += mqtt_str(will.topic) + mqtt_str(will.payload)
    return packet(0x10, mqtt_str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
                  + payload)


def publish_packet(topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 0,
                   retain: bool = False, dup: bool = False) -> bytes:
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = mqtt_str(topic) + (struct.pack("!H", packet_id) if qos else b"")
    return packet(first, body + payload)


def subscribe_packet(packet_id: int, filters: Sequence[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", packet_id)
    for topic_filter, qos in filters:
        body += mqtt_str(topic_filter) + bytes([qos])
    return packet(0x82, body)


def ack_packet(packet_type: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL (flags 0b0010) or PUBCOMP."""
    flags = 0x02 if packet_type == PUBREL else 0
    return packet((packet_type << 4) | flags, struct.pack("!H", packet_id))


DISCONNECT_BYTES = b"\xe0\x00"
PINGREQ_BYTES = b"\xc0\x00"


# --- decoding -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Packet:
    first_byte: int
    body: bytes

    @property
    def type(self) -> int:
        return self.first_byte >> 4

    @property
    def name(self) -> str:
        return NAMES.get(self.type, f"type {self.type}")

    @property
    def raw(self) -> bytes:
        return bytes([self.first_byte]) + varint(len(self.body)) + self.body

    @property
    def packet_id(self) -> int:
        """The id of an ack, SUBACK or UNSUBACK (first two body bytes)."""
        return int(struct.unpack("!H", self.body[:2])[0])

    def publish(self) -> Message:
        assert self.type == PUBLISH, f"expected PUBLISH, got {self}"
        qos = (self.first_byte >> 1) & 0x03
        (length,) = struct.unpack("!H", self.body[:2])
        topic = self.body[2:2 + length].decode()
        rest = self.body[2 + length:]
        packet_id = 0
        if qos:
            (packet_id,) = struct.unpack("!H", rest[:2])
            rest = rest[2:]
        return Message(topic, rest, qos, bool(self.first_byte & 0x01),
                       bool(self.first_byte & 0x08), packet_id)

    def __str__(self) -> str:
        return f"{self.name}(first=0x{self.first_byte:02x}, body={self.body!r})"


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    dup: bool = False
    packet_id: int = 0


class Closed(Exception):
    """The broker closed the connection."""


def parse_packet(buffer: bytearray) -> Packet | None:
    """Take one whole packet off the front of `buffer`, or None if it is not all there yet."""
    if len(buffer) < 2:
        return None
    length, multiplier, index = 0, 1, 1
    while True:
        if index >= len(buffer):
            return None
        byte = buffer[index]
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        index += 1
        if not byte & 0x80:
            break
        if index > 4:
            raise AssertionError(f"malformed remaining length from the broker: {bytes(buffer)!r}")
    if len(buffer) < index + length:
        return None
    parsed = Packet(buffer[0], bytes(buffer[index:index + length]))
    del buffer[:index + length]
    return parsed


# --- raw socket client --------------------------------------------------------------------------


class RawClient:
    """Exact bytes out, whole packets in. Never acknowledges anything by itself."""

    def __init__(self, broker: Endpoint, timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection((broker.host, broker.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray()
        self._aside: list[Packet] = []
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def _fill(self, deadline: float) -> None:
        if self.eof:
            raise Closed("connection already closed by the broker")
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
            raise Closed("connection closed by the broker")
        self._buffer += data

    def read_packet(self, timeout: float = TIMEOUT) -> Packet:
        """The next packet (set-aside PUBLISHes first); TimeoutError or Closed otherwise."""
        if self._aside:
            return self._aside.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            parsed = parse_packet(self._buffer)
            if parsed is not None:
                return parsed
            self._fill(deadline)

    def expect(self, packet_type: int, timeout: float = TIMEOUT) -> Packet:
        """The next packet of `packet_type`; PUBLISHes met on the way are kept for later reads,
        anything else is a failure."""
        deadline = time.monotonic() + timeout
        if packet_type == PUBLISH and self._aside:
            return self._aside.pop(0)
        while True:
            try:
                while True:
                    got = parse_packet(self._buffer)
                    if got is not None:
                        break
                    self._fill(deadline)
            except TimeoutError:
                pytest.fail(f"no {NAMES[packet_type]} within {timeout} s")
            except Closed:
                pytest.fail(f"connection closed while waiting for {NAMES[packet_type]}")
            if got.type == packet_type:
                return got
            if got.type == PUBLISH:
                self._aside.append(got)
                continue
            pytest.fail(f"expected {NAMES[packet_type]}, got {got}")

    def expect_publish(self, timeout: float = TIMEOUT) -> Message:
        return self.expect(PUBLISH, timeout).publish()

    def packets_until_quiet(self, quiet: float = QUIET) -> list[Packet]:
        """Everything that arrives until nothing has for `quiet` seconds."""
        got: list[Packet] = []
        while True:
            try:
                got.append(self.read_packet(quiet))
            except TimeoutError:
                return got

    def assert_silent(self, quiet: float = QUIET) -> None:
        got = self.packets_until_quiet(quiet)
        assert not got, f"expected nothing, got {[str(p) for p in got]}"

    def connect(self, client_id: str, *, clean: bool = False, will: Will | None = None,
                keepalive: int = 60) -> bool:
        """CONNECT, assert CONNACK accepted, return the session-present flag."""
        self.send(connect_packet(client_id, clean=clean, keepalive=keepalive, will=will))
        reply = self.expect(CONNACK)
        assert len(reply.body) == 2 and reply.body[1] == 0, f"CONNACK refused: {reply}"
        return bool(reply.body[0] & 0x01)

    def subscribe(self, filters: Sequence[tuple[str, int]], packet_id: int = 1) -> list[int]:
        self.send(subscribe_packet(packet_id, filters))
        reply = self.expect(SUBACK)
        assert reply.packet_id == packet_id, str(reply)
        return list(reply.body[2:])

    def publish(self, topic: str, payload: bytes, *, qos: int, packet_id: int = 1,
                retain: bool = False) -> None:
        """Publish and complete the QoS 1/2 exchange as the sender."""
        self.send(publish_packet(topic, payload, qos=qos, packet_id=packet_id, retain=retain))
        if qos == 1:
            assert self.expect(PUBACK).raw == ack_packet(PUBACK, packet_id)
        elif qos == 2:
            assert self.expect(PUBREC).raw == ack_packet(PUBREC, packet_id)
            self.send(ack_packet(PUBREL, packet_id))
            assert self.expect(PUBCOMP).raw == ack_packet(PUBCOMP, packet_id)

    def receive(self, timeout: float = TIMEOUT) -> Message:
        """One PUBLISH, with the QoS 1/2 exchange completed as the receiver."""
        message = self.expect_publish(timeout)
        self.complete(message)
        return message

    def complete(self, message: Message) -> None:
        if message.qos == 1:
            self.send(ack_packet(PUBACK, message.packet_id))
        elif message.qos == 2:
            self.send(ack_packet(PUBREC, message.packet_id))
            assert self.expect(PUBREL).raw == ack_packet(PUBREL, message.packet_id)
            self.send(ack_packet(PUBCOMP, message.packet_id))

    def disconnect(self) -> None:
        with contextlib.suppress(OSError):
            self.send(DISCONNECT_BYTES)
        self.close()


# --- paho-mqtt ----------------------------------------------------------------------------------


class PahoClient:
    """paho-mqtt 2.x, MQTT 3.1.1, clean session 0 unless told otherwise. Received messages go
    to a queue; QoS 1/2 acknowledgements are paho's own."""

    def __init__(self, broker: Endpoint, client_id: str, *, clean_session: bool = False,
                 will: Will | None = None) -> None:
        self.broker = broker
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311, clean_session=clean_session)
        if will is not None:
            self.client.will_set(will.topic, will.payload, will.qos, will.retain)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connack: queue.Queue[tuple[bool, int]] = queue.Queue()
        self._acks: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_ack
        self.client.on_unsubscribe = self._on_ack

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        self._connack.put((bool(flags.session_present), int(reason_code.value)))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(msg)

    def _on_ack(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any,
                properties: Any) -> None:
        """SUBACK or UNSUBACK for `mid`."""
        with self._lock:
            event = self._acks.setdefault(mid, threading.Event())
        event.set()

    def _wait_ack(self, mid: int, what: str, timeout: float) -> None:
        with self._lock:
            event = self._acks.setdefault(mid, threading.Event())
        assert event.wait(timeout), f"no {what} within {timeout} s"

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.client.loop(0.05) != mqtt.MQTT_ERR_SUCCESS:
                return  # disconnected: no silent reconnect

    def connect(self, timeout: float = TIMEOUT) -> bool:
        """Connect, assert CONNACK 0, return the session-present flag."""
        self.client.connect(self.broker.host, self.broker.port, keepalive=60)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        try:
            session_present, code = self._connack.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"paho client got no CONNACK within {timeout} s")
        assert code == 0, f"CONNACK return code {code}"
        return session_present

    def subscribe(self, topic: str, qos: int, timeout: float = TIMEOUT) -> None:
        result, mid = self.client.subscribe(topic, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS and mid is not None
        self._wait_ack(mid, f"SUBACK for {topic!r}", timeout)

    def unsubscribe(self, topic: str, timeout: float = TIMEOUT) -> None:
        result, mid = self.client.unsubscribe(topic)
        assert result == mqtt.MQTT_ERR_SUCCESS and mid is not None
        self._wait_ack(mid, f"UNSUBACK for {topic!r}", timeout)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False,
                timeout: float = TIMEOUT) -> None:
        """Publish and wait until the exchange completes (PUBACK, or PUBCOMP for QoS 2)."""
        info = self.client.publish(topic, payload, qos, retain)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"publish to {topic!r} not acknowledged within {timeout} s"

    def get(self, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no message within {timeout} s")

    def drain(self, expected: int, timeout: float = TIMEOUT * 2,
              quiet: float = QUIET) -> list[mqtt.MQTTMessage]:
        """At least `expected` messages, then whatever else arrives until `quiet` s of silence
        (so extra deliveries, duplicates included, are seen and can be asserted on)."""
        got: list[mqtt.MQTTMessage] = []
        deadline = time.monotonic() + timeout
        while len(got) < expected:
            remaining = deadline - time.monotonic()
            try:
                got.append(self.messages.get(timeout=max(0.01, remaining)))
            except queue.Empty:
                pytest.fail(f"{len(got)} of {expected} messages within {timeout} s: "
                            f"{[(m.topic, m.payload) for m in got]}")
        while True:
            try:
                got.append(self.messages.get(timeout=quiet))
            except queue.Empty:
                return got

    def disconnect(self) -> None:
        """A clean DISCONNECT, then stop the loop thread."""
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self._join()

    def drop(self) -> None:
        """Stop without DISCONNECT (use after the broker was killed)."""
        self._stop.set()
        self._join()
        with contextlib.suppress(Exception):
            sock = self.client.socket()
            if sock is not None:
                sock.close()

    def _join(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2)


# --- helpers ------------------------------------------------------------------------------------


def commit_barrier(broker: Endpoint) -> None:
    """Return once the broker has committed everything it changed before this call.

    A QoS 1 PUBLISH from a clean-session client to a topic nobody subscribes to changes no
    durable state; with `durability = "sync"` its PUBACK still waits for whatever is pending or
    being committed, and an earlier held ack, so the PUBACK means "all earlier state is on disk".
    """
    client = RawClient(broker)
    try:
        client.connect("durability-barrier", clean=True)
        client.publish(BARRIER_TOPIC, b"", qos=1, packet_id=1)
        client.disconnect()
    finally:
        client.close()


def restart(broker: BrokerProcess) -> None:
    """kill -9 the broker and start it again on the same port, data directory and log."""
    broker.kill()
    broker.start()


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT,
               message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{message} not reached within {timeout} s")
        time.sleep(0.02)
