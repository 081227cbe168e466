"""Hostile input over real sockets: every row of tests/packets_table.py, and the flow-level attacks.

Each table row is fed three ways (whole, one byte per send, and followed by trailing bytes) on a
fresh connection to a broker shared by the module, and must get exactly the reaction in the
table. Meanwhile an already connected paho subscriber must keep receiving, in order and without a
gap, the QoS 1 messages a third client publishes every 10 ms: one hostile client must not disturb
the others. Where the broker closes a connection for a protocol violation (or a timeout), its log
must name it on one line with the peer address; those log checks only apply to Culex (Mosquitto
words its log differently), everything else must also pass with CULEX_TEST_AGAINST=mosquitto.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import AGAINST, BrokerFactory, BrokerProcess
from tests.packets_table import (
    CASES,
    CONNACK_ACCEPTED,
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    TRAILING_AFTER_CLOSE,
    TRAILING_OPEN,
    TRAILING_OPEN_REST,
    Case,
    ack,
    connect,
    fixed_header,
    packet,
    publish,
    subscribe,
)
from tests.packets_table_v5 import PACKET_TOO_LARGE, connect5, publish5, reply, summarize

CHECK_LOG = AGAINST == "culex"  # Mosquitto's log lines are worded differently
CLOSE_WITHIN = 2.0  # seconds a closing reaction may take
MODES = ["whole", "bytewise", "trailing"]


# --- a raw MQTT socket ---


class RawClient:
    """A TCP connection that sends exact bytes and reads exact bytes back."""

    def __init__(self, broker: BrokerProcess) -> None:
        self.sock = socket.create_connection((broker.host, broker.port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.closed = False  # the broker closed (FIN or RST)
        # How the broker names this connection in its log: 127.0.0.1:<our local port>.
        self.peer = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> bool:
        """Send everything; False if the broker had already closed the connection."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def send_bytewise(self, data: bytes, pause: float = 0.001) -> bool:
        """One send() per byte. With TCP_NODELAY and a short pause each byte is its own segment,
        so the broker's parser sees every possible split; long inputs skip the pause (their split
        points are still arbitrary, and 65 kB at 1 ms each would take a minute)."""
        if len(data) > 512:
            pause = 0.0
        for i in range(len(data)):
            if not self.send(data[i : i + 1]):
                return False
            if pause:
                time.sleep(pause)
        return True

    def poll(self, seconds: float) -> bool:
        """Wait up to `seconds` for bytes or a close; True while the connection is open."""
        self._fill(time.monotonic() + seconds)
        return not self.closed

    def _fill(self, deadline: float) -> bool:
        """Read what is available until `deadline`; False once nothing more can come."""
        if self.closed:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        except OSError:  # ECONNRESET: the broker closed with our bytes unread
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        return True

    def read_exactly(self, count: int, timeout: float = 2.0) -> bytes:
        """Up to `count` bytes (fewer only if the connection closed or the time ran out)."""
        deadline = time.monotonic() + timeout
        while len(self.buffer) < count and self._fill(deadline):
            pass
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def read_until_closed(self, timeout: float = CLOSE_WITHIN) -> bytes:
        """Everything the broker sends until it closes; fails if it does not close in time."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        assert self.closed, f"connection still open after {timeout} s (received {data.hex(' ')})"
        return data

    def read_packet(self, timeout: float = 2.0) -> bytes:
        """One whole MQTT packet."""
        deadline = time.monotonic() + timeout
        while True:
            size = _framed_size(self.buffer)
            if size is not None and len(self.buffer) >= size:
                data = bytes(self.buffer[:size])
                del self.buffer[:size]
                return data
            if not self._fill(deadline):
                raise AssertionError(
                    f"no whole packet within {timeout} s (closed={self.closed}, "
                    f"have {bytes(self.buffer).hex(' ')})"
                )

    def assert_silent(self, seconds: float = 0.3) -> None:
        """Nothing arrives and the connection stays open for `seconds`."""
        deadline = time.monotonic() + seconds
        while self._fill(deadline):
            pass
        assert not self.buffer, f"unexpected bytes {bytes(self.buffer).hex(' ')}"
        assert not self.closed, "the broker closed the connection"

    def handshake(self, connect_packet: bytes) -> bytes:
        """Send a CONNECT that must be accepted; return the CONNACK. 3.1 / 3.1.1 get exactly
        CONNACK_ACCEPTED; an MQTT 5 CONNACK carries properties (Receive Maximum, Maximum Packet
        Size...), so there only the flags, the reason code and the framing are fixed."""
        assert self.send(connect_packet)
        if b"MQTT\x05" not in connect_packet[:10]:
            got = self.read_exactly(4)
            assert got == CONNACK_ACCEPTED, f"CONNACK {got.hex(' ')}, closed={self.closed}"
            return got
        got = self.read_packet()
        assert got[0] == 0x20 and got[2:4] == b"\x00\x00", f"CONNACK {got.hex(' ')}"
        return got

    def ping(self, first_part: bytes = PINGREQ) -> None:
        """PINGREQ (or its missing rest) must get exactly PINGRESP back."""
        assert self.send(first_part), "broker closed the connection"
        got = self.read_exactly(2)
        assert got == PINGRESP, f"expected PINGRESP, got {got.hex(' ')}, closed={self.closed}"


def _framed_size(buffer: bytes | bytearray) -> int | None:
    """Total size of the first packet in `buffer`, or None while its header is incomplete."""
    header = fixed_header(buffer)
    return None if header is None else header[0] + header[1]


def parse_publish(frame: bytes) -> tuple[str, bytes]:
    """(topic, payload) of a whole PUBLISH frame."""
    assert frame[0] >> 4 == 3, f"not a PUBLISH: {frame[:16].hex(' ')}"
    header = fixed_header(frame)
    assert header is not None
    start = header[0]
    topic_end = start + 2 + int.from_bytes(frame[start : start + 2], "big")
    payload_start = topic_end + (2 if frame[0] & 0x06 else 0)
    return frame[start + 2 : topic_end].decode(), frame[payload_start:]


# --- an already connected subscriber and a steady publisher ---


class Watcher:
    """A paho subscriber on `<base>/#` (QoS 2) and a paho publisher that, while active, publishes
    numbered QoS 1 ticks on `<base>/tick` every 10 ms. Leaving the `with` block publishes one more
    tick and asserts the subscriber got every tick once, in order, and neither client was dropped.
    """

    def __init__(self, broker: BrokerProcess) -> None:
        self.broker = broker
        self.base = f"culex-watch/{uuid.uuid4().hex[:12]}"
        self.messages: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()
        self.dropped: list[str] = []
        self.sent: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self.clients: list[mqtt.Client] = []
        try:
            self.sub = self._client("sub")
            self.pub = self._client("pub")
        except BaseException:
            self._close_clients()
            raise

    def _client(self, role: str) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"watch-{role}-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        connected = threading.Event()
        client.on_connect = lambda c, u, f, rc, p: connected.set()
        client.on_disconnect = lambda c, u, f, rc, p: self.dropped.append(f"{role}: {rc}")
        client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.clients.append(client)
        client.loop_start()
        assert connected.wait(5), f"watcher {role} did not connect"
        return client

    def _close_clients(self) -> None:
        for client in self.clients:
            client.on_disconnect = None
            client.disconnect()
            client.loop_stop()

    def __enter__(self) -> Watcher:
        try:
            subscribed = threading.Event()
            self.sub.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
            self.sub.on_message = self._on_message
            self.sub.subscribe(f"{self.base}/#", qos=2)
            assert subscribed.wait(5), "watcher subscription not acknowledged"
            self._publish_tick()
            self.wait_for(lambda: len(self.ticks()) == 1, "the first tick")
        except BaseException:
            self._close_clients()
            raise
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        try:
            if kind is None:
                self._publish_tick()  # after the bad input
                self.wait_for(lambda: len(self.ticks()) >= len(self.sent), "every tick")
                assert self.ticks() == self.sent, "ticks lost, duplicated or reordered"
                assert not self.dropped, f"watcher connection dropped: {self.dropped}"
        finally:
            self._close_clients()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def _publish_tick(self) -> None:
        number = len(self.sent)
        self.sent.append(number)
        self.pub.publish(f"{self.base}/tick", str(number), qos=1)

    def _tick(self) -> None:
        while not self._stop.wait(0.01):
            self._publish_tick()

    def ticks(self) -> list[int]:
        with self.cond:
            return [int(p) for t, p in self.messages if t == f"{self.base}/tick"]

    def received(self, topic: str) -> list[bytes]:
        with self.cond:
            return [p for t, p in self.messages if t == topic]

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
        with self.cond:
            ok = self.cond.wait_for(predicate, timeout)
        assert ok, f"watcher: {what} did not arrive within {timeout} s"


# --- the broker log ---


def log_offset(broker: BrokerProcess) -> int:
    return broker.log_path.stat().st_size if broker.log_path.exists() else 0


def log_since(broker: BrokerProcess, offset: int) -> str:
    return broker.log_path.read_bytes()[offset:].decode(errors="replace")


def lines_about(text: str, peer: str, word: str) -> list[str]:
    """Log lines naming `peer` (exactly: port 4123 is not 41234) and containing `word`."""
    pattern = re.compile(re.escape(peer) + r"(?!\d)")
    return [
        line
        for line in text.splitlines()
        if pattern.search(line) and word.lower() in line.lower()
    ]


def assert_logged(
    broker: BrokerProcess, offset: int, peer: str, word: str, client_id: str | None = None
) -> None:
    """The broker logged exactly one line with `word`, the peer and (if given) the client id."""
    if not CHECK_LOG:
        return
    deadline = time.monotonic() + 3.0
    found: list[str] = []
    while time.monotonic() < deadline:
        found = lines_about(log_since(broker, offset), peer, word)
        if found:
            break
        time.sleep(0.02)
    text = log_since(broker, offset)
    assert len(found) == 1, f"want one {word!r} line for {peer}, got {found}; log:\n{text}"
    if client_id == "-":
        assert re.search(r"(?<![\w-])-(?![\w-])", found[0]), f"no '-' client id: {found[0]}"
    elif client_id is not None:
        assert client_id in found[0], f"client id {client_id!r} missing: {found[0]}"


def assert_not_logged(broker: BrokerProcess, offset: int, peer: str, word: str) -> None:
    if CHECK_LOG:
        found = lines_about(log_since(broker, offset), peer, word)
        assert not found, f"unexpected {word!r} lines: {found}"


def assert_healthy(broker: BrokerProcess, offset: int) -> None:
    assert broker.proc is not None and broker.proc.poll() is None, (
        f"broker died:\n{log_since(broker, offset)}"
    )
    assert "Traceback" not in log_since(broker, offset), log_since(broker, offset)


# --- fixtures ---




# --- the table ---


def feed(raw: RawClient, case: Case, mode: str) -> None:
    if mode == "whole":
        raw.send(case.data)
    elif mode == "bytewise":
        raw.send_bytewise(case.data)
    else:
        trailing = TRAILING_AFTER_CLOSE if case.expect.closes else TRAILING_OPEN
        raw.send(case.data + trailing)


def table_params(cases: list[Case]) -> list[Any]:
    """Every case in every feeding mode, with its Mosquitto skip marks."""
    params = []
    for case in cases:
        for mode in MODES:
            marks = []
            if case.mosquitto and mode in (case.mosquitto_modes or MODES):
                marks.append(pytest.mark.skipif(AGAINST == "mosquitto", reason=case.mosquitto))
            params.append(pytest.param(case, mode, marks=marks, id=f"{case.name}-{mode}"))
    return params


@pytest.mark.parametrize(("case", "mode"), table_params(CASES))
def test_bad_input(shared_broker: BrokerProcess, case: Case, mode: str) -> None:
    run_case(shared_broker, case, mode)


def run_case(broker: BrokerProcess, case: Case, mode: str) -> None:
    """Feed one table row and assert its exact reaction, the watcher's ticks and the log (shared
    by the 3.1.1 and the MQTT 5 tables)."""
    offset = log_offset(broker)
    expect = case.expect
    with Watcher(broker), RawClient(broker) as raw:
        if case.connect is not None:
            raw.handshake(case.connect)
        feed(raw, case, mode)
        if expect.closes:
            got = raw.read_until_closed()
            assert expect.matches(got), (
                f"{case.name}: want {expect.describe()}, got {got.hex(' ') or 'nothing'}"
            )
        else:
            frames = []
            for _ in range(expect.packet_count):
                try:
                    frames.append(raw.read_packet())
                except AssertionError:
                    break
            got = b"".join(frames)
            assert expect.matches(got) and not raw.closed, (
                f"{case.name}: want {expect.describe()}, got {got.hex(' ') or 'nothing'}"
                f"{' and a close' if raw.closed else ''}"
            )
            # The connection still works and nothing else was sent; a trailing half PINGREQ was
            # kept, so only its second byte is missing.
            raw.ping(TRAILING_OPEN_REST if mode == "trailing" else PINGREQ)
            raw.send(DISCONNECT)
            assert raw.read_until_closed() == b""
        peer = raw.peer
    if expect.violation:
        assert_logged(broker, offset, peer, "protocol violation", case.log_client_id)
    elif not expect.closes:
        assert_not_logged(broker, offset, peer, "protocol violation")
    assert_healthy(broker, offset)


# --- connection state (items 12, 13) and wills ---


@pytest.mark.parametrize(
    "violation",
    [
        pytest.param(
            "second-connect",
            marks=pytest.mark.skipif(
                AGAINST == "mosquitto",
                reason="Mosquitto 2.0.11 drops the will when it closes a connection for a second "
                "CONNECT, against [MQTT-3.1.2-8] (it does publish it for other protocol errors)",
            ),
        ),
        "wildcard-topic",
    ],
)
def test_protocol_violation_publishes_will(shared_broker: BrokerProcess, violation: str) -> None:
    """A protocol violation (a second CONNECT [MQTT-3.1.0-2], a wildcard in a PUBLISH topic) is
    an abnormal close: no reply, and the will is published [MQTT-3.1.2-8]."""
    broker = shared_broker
    offset = log_offset(broker)
    client_id = f"culex-will-{violation}"
    with Watcher(broker) as watcher, RawClient(broker) as raw:
        will_topic = f"{watcher.base}/will"
        raw.handshake(connect(client_id, will=(will_topic.encode(), b"gone"), will_qos=1))
        raw.send(connect(client_id) if violation == "second-connect" else publish("a/+", b"x"))
        assert raw.read_until_closed() == b""
        watcher.wait_for(lambda: watcher.received(will_topic) == [b"gone"], "the will")
        peer = raw.peer
    assert_logged(broker, offset, peer, "protocol violation", client_id)


# --- F9: the client vanishes mid-packet ---


@pytest.mark.parametrize("how", ["fin", "rst", "disconnect"])
def test_client_vanishes_mid_publish(shared_broker: BrokerProcess, how: str) -> None:
    """Half a PUBLISH then FIN or RST: the half is discarded and the will is published; after a
    proper DISCONNECT (the PUBLISH completed) there is no will. The session is reusable."""
    broker = shared_broker
    offset = log_offset(broker)
    client_id = f"culex-f9-{how}"
    with Watcher(broker) as watcher:
        will_topic, data_topic = f"{watcher.base}/will", f"{watcher.base}/data"
        message = publish(data_topic, b"half-sent", qos=1, mid=1)
        raw = RawClient(broker)
        raw.handshake(connect(client_id, clean=False, will=(will_topic.encode(), b"gone")))
        raw.send(message[: len(message) // 2])
        time.sleep(0.05)  # let the broker read the half packet before the connection ends
        if how == "fin":
            raw.sock.close()
        elif how == "rst":
            raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.sock.close()
        else:
            raw.send(message[len(message) // 2 :])
            assert raw.read_packet() == ack(0x40, 1)
            raw.send(DISCONNECT)
            assert raw.read_until_closed() == b""
            raw.sock.close()
        if how == "disconnect":
            watcher.wait_for(lambda: watcher.received(data_topic) == [b"half-sent"], "the data")
            time.sleep(0.5)
            assert watcher.received(will_topic) == []
        else:
            watcher.wait_for(lambda: watcher.received(will_topic) == [b"gone"], "the will")
            assert watcher.received(data_topic) == []
        # The persistent session is consistent: it resumes and works.
        with RawClient(broker) as again:
            assert again.send(connect(client_id, clean=False))
            assert again.read_exactly(4) == b"\x20\x02\x01\x00"  # session present
            again.send(publish(data_topic, b"whole", qos=1, mid=2))
            assert again.read_packet() == ack(0x40, 2)
            watcher.wait_for(lambda: b"whole" in watcher.received(data_topic), "the new PUBLISH")
            again.send(DISCONNECT)
        # Remove the persistent session so nothing outlives the test.
        with RawClient(broker) as cleanup:
            cleanup.handshake(connect(client_id, clean=True))
            cleanup.send(DISCONNECT)
    assert_healthy(broker, offset)


# --- item 30: "$" topics and wildcards ---


def test_dollar_topics_not_matched_by_wildcards(shared_broker: BrokerProcess) -> None:
    """A client publishing to "$foo/bar" is harmless (CVE-2018-12543), and neither "#" nor
    "+/bar" delivers it [MQTT-4.7.2-1]; "$foo/#" does."""
    broker = shared_broker
    offset = log_offset(broker)
    with Watcher(broker) as watcher, RawClient(broker) as sub, RawClient(broker) as pub:
        marker = f"{watcher.base}/marker"
        sub.handshake(connect("culex-dollar-sub"))
        sub.send(subscribe(1, [("#", 0), ("+/bar", 0), ("$foo/#", 0)]))
        assert sub.read_packet() == packet(0x90, b"\x00\x01\x00\x00\x00")
        pub.handshake(connect("culex-dollar-pub"))
        pub.send(publish("$foo/bar", b"dollar", qos=1, mid=1) + publish(marker, b"m", qos=1, mid=2))
        assert pub.read_packet() == ack(0x40, 1)
        assert pub.read_packet() == ack(0x40, 2)
        # Exactly one copy of the "$foo/bar" message (via "$foo/#"), then the marker; the
        # watcher's own ticks match "#" too and are skipped.
        seen: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + 3
        while not any(t == marker for t, _ in seen):
            assert time.monotonic() < deadline, f"marker not received; got {seen}"
            topic, payload = parse_publish(sub.read_packet())
            if topic != f"{watcher.base}/tick":
                seen.append((topic, payload))
        assert seen == [("$foo/bar", b"dollar"), (marker, b"m")]
    assert_healthy(broker, offset)


# --- items 33, 34: QoS 2 packet-id reuse ---


@pytest.mark.parametrize("same_content", [True, False], ids=["same", "different"])
def test_qos2_repeated_packet_id_delivers_once(
    shared_broker: BrokerProcess, same_content: bool
) -> None:
    """A QoS 2 PUBLISH re-sent (DUP=1) before PUBREL (CVE-2023-28366) is delivered once; an id
    reused with different content before PUBREL delivers exactly one of the two [MQTT-4.3.3]."""
    broker = shared_broker
    offset = log_offset(broker)
    with Watcher(broker) as watcher, RawClient(broker) as raw:
        topic = f"{watcher.base}/q2"
        payloads = [b"one", b"one" if same_content else b"two"]
        raw.handshake(connect("culex-q2-repeat"))
        raw.send(publish(topic, payloads[0], qos=2, mid=5))
        raw.send(publish(topic, payloads[1], qos=2, mid=5, dup=same_content))
        for _ in payloads:
            assert raw.read_packet() == ack(0x50, 5)
        raw.send(ack(0x62, 5))
        assert raw.read_packet() == ack(0x70, 5)
        watcher.wait_for(lambda: len(watcher.received(topic)) >= 1, "the QoS 2 message")
        time.sleep(0.5)
        got = watcher.received(topic)
        assert len(got) == 1 and got[0] in payloads, f"delivered {got}"
    assert_healthy(broker, offset)


# --- items 46 and 2: slowloris ---


def test_slowloris_before_connect(broker_factory: BrokerFactory) -> None:
    """A partial fixed header, an idle socket and a CONNECT dripped one byte every 0.3 s are all
    closed by `connect_timeout` (the deadline is not pushed back by each byte), without a reply;
    a normal client connects meanwhile."""
    broker = broker_factory(limits={"connect_timeout": 1})
    offset = log_offset(broker)
    dripped = connect("culex-drip")
    with Watcher(broker), RawClient(broker) as partial, RawClient(broker) as idle:
        drip = RawClient(broker)
        started = time.monotonic()
        partial.send(b"\x10")
        for i in range(len(dripped)):
            if not drip.send(dripped[i : i + 1]) or not drip.poll(0.3):
                break
            if 0.5 < time.monotonic() - started < 0.8:  # not closed early either
                assert partial.poll(0.01) and idle.poll(0.01), "closed before connect_timeout"
        elapsed = time.monotonic() - started
        assert 0.5 < elapsed < 3.0, f"dripping CONNECT closed after {elapsed:.1f} s"
        for raw in (partial, idle, drip):
            assert raw.read_until_closed(timeout=max(0.1, started + 3.0 - time.monotonic())) == b""
            raw.sock.close()
        peers = [raw.peer for raw in (partial, idle, drip)]
    for peer in peers:
        assert_logged(broker, offset, peer, "timeout", None)
    assert_healthy(broker, offset)


@pytest.mark.skipif(
    AGAINST == "mosquitto",
    reason="Mosquitto 2.0.11 waits about 6 s, not 1.5 x keep-alive, to close a connection that "
    "stopped inside a packet [MQTT-3.1.2-24]",
)
@pytest.mark.parametrize("pending", ["partial-header", "large-claim"])
def test_slowloris_after_connect(shared_broker: BrokerProcess, pending: str) -> None:
    """After CONNECT (keep-alive 1 s), a partial header, or a header claiming 1.5 MB followed by a
    few bytes, then silence: closed by the keep-alive deadline (1.5 s, +1 s slack)."""
    broker = shared_broker
    offset = log_offset(broker)
    data = b"\x30" if pending == "partial-header" else b"\x30\x80\xc0\x5b\x00\x03a/b"
    with Watcher(broker), RawClient(broker) as raw:
        raw.handshake(connect("culex-slow-" + pending, keepalive=1))
        started = time.monotonic()
        raw.send(data)
        assert raw.read_until_closed(timeout=3.0) == b""
        assert 1.0 <= time.monotonic() - started <= 2.6
        peer = raw.peer
    assert_logged(broker, offset, peer, "timeout", "culex-slow-" + pending)
    assert_healthy(broker, offset)


# --- items 47, 48: large and pipelined input ---


def test_1mb_publish_in_4kb_chunks(shared_broker: BrokerProcess) -> None:
    broker = shared_broker
    offset = log_offset(broker)
    payload = os.urandom(1024 * 1024)
    with Watcher(broker) as watcher, RawClient(broker) as raw:
        topic = f"{watcher.base}/big"
        raw.handshake(connect("culex-1mb"))
        data = publish(topic, payload, qos=1, mid=77)
        started = time.monotonic()
        for start in range(0, len(data), 4096):
            assert raw.send(data[start : start + 4096])
        assert raw.read_packet(timeout=5) == ack(0x40, 77)
        watcher.wait_for(lambda: len(watcher.received(topic)) == 1, "the 1 MB message")
        assert time.monotonic() - started < 5
        got = watcher.received(topic)[0]
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        raw.ping()
    assert_healthy(broker, offset)


def test_1000_pipelined_packets_and_a_half(shared_broker: BrokerProcess) -> None:
    """1000 packets in one send (750 QoS 1 PUBLISHes, 250 PINGREQs) plus half of one more
    PUBLISH: all processed in order, and the half is kept until its rest arrives."""
    broker = shared_broker
    offset = log_offset(broker)
    with Watcher(broker) as watcher, RawClient(broker) as raw:
        topic = f"{watcher.base}/pipe"
        raw.handshake(connect("culex-pipeline"))
        packets: list[bytes] = []
        mids: list[int] = []
        for i in range(1000):
            if i % 4 == 3:
                packets.append(PINGREQ)
            else:
                mids.append(len(mids) + 1)
                packets.append(publish(topic, str(mids[-1]).encode(), qos=1, mid=mids[-1]))
        last = publish(topic, b"751", qos=1, mid=751)
        assert raw.send(b"".join(packets) + last[:5])
        replies = [raw.read_packet(timeout=5) for _ in range(1000)]
        assert replies.count(PINGRESP) == 250
        assert [r for r in replies if r != PINGRESP] == [ack(0x40, m) for m in mids]
        raw.assert_silent(0.2)
        raw.send(last[5:])
        assert raw.read_packet() == ack(0x40, 751)
        watcher.wait_for(lambda: len(watcher.received(topic)) == 751, "751 messages")
        assert watcher.received(topic) == [str(m).encode() for m in [*mids, 751]]
    assert_healthy(broker, offset)


# --- item 29: a topic with 65,000 levels ---


def test_topic_with_65000_levels(shared_broker: BrokerProcess) -> None:
    """SUBSCRIBE and PUBLISH with 65,000 levels (CVE-2019-11779): each is either served or its
    connection closed (as a logged protocol violation), the broker keeps serving, and nothing
    recurses per level."""
    broker = shared_broker
    offset = log_offset(broker)
    with Watcher(broker) as watcher, RawClient(broker) as sub, RawClient(broker) as pub:
        topic = watcher.base + "/" * 64999  # 65,000 levels (empty ones after the base)
        assert topic.count("/") + 1 == 65001  # the base itself has one "/"
        sub.handshake(connect("culex-levels-sub"))
        sub.send(subscribe(1, [(topic, 0)]))
        subscribed = False
        try:
            granted = sub.read_packet()
        except AssertionError:
            assert sub.closed, "SUBSCRIBE of 65,000 levels neither answered nor closed"
            assert_logged(broker, offset, sub.peer, "protocol violation", "culex-levels-sub")
        else:
            assert granted in (packet(0x90, b"\x00\x01\x00"), packet(0x90, b"\x00\x01\x80"))
            subscribed = granted[-1] == 0
        pub.handshake(connect("culex-levels-pub"))
        pub.send(publish(topic, b"deep", qos=1, mid=1))
        try:
            acked = pub.read_packet()
        except AssertionError:
            assert pub.closed, "PUBLISH of 65,000 levels neither acked nor closed"
            assert_logged(broker, offset, pub.peer, "protocol violation", "culex-levels-pub")
        else:
            assert acked == ack(0x40, 1)
            watcher.wait_for(lambda: watcher.received(topic) == [b"deep"], "the deep message")
            if subscribed:
                frame = sub.read_packet()
                assert frame == publish(topic, b"deep")
    assert_healthy(broker, offset)


# --- item 11: max_packet_size ---


@pytest.mark.parametrize(
    "version",
    [
        "3.1.1",
        pytest.param("5", marks=pytest.mark.skipif(
            AGAINST == "mosquitto", reason="the MQTT 5 reason codes are checked on Culex only")),
    ],
)
def test_packet_over_max_packet_size(broker_factory: BrokerFactory, version: str) -> None:
    """With max_packet_size 1024: a 700-byte PUBLISH passes; a header claiming 2000 bytes is
    refused at once (checked before buffering, no body sent), and so is a whole 2000-byte
    PUBLISH. 3.1.1 closes with nothing sent; MQTT 5 announces Maximum Packet Size 1024 in the
    CONNACK and sends DISCONNECT 0x95 "Packet too large" (§3.2.2.3.6)."""
    v5 = version == "5"
    make_connect = connect5 if v5 else connect
    make_publish = publish5 if v5 else publish
    broker = broker_factory(limits={"max_packet_size": 1024})
    offset = log_offset(broker)
    with Watcher(broker) as watcher:
        topic = f"{watcher.base}/sized"
        with RawClient(broker) as ok:
            connack = ok.handshake(make_connect("culex-size-ok"))
            assert not v5 or b"\x27\x00\x00\x04\x00" in connack, f"CONNACK {connack.hex()}"
            ok.send(make_publish(topic, b"s" * 700, qos=1))
            acked = ok.read_packet()
            assert summarize(acked) == reply(0x40, 1, 0) if v5 else acked == ack(0x40, 1)
            watcher.wait_for(lambda: watcher.received(topic) == [b"s" * 700], "the small one")
        big = make_publish(topic, b"b" * 2000, qos=1)
        peers = []
        for name, data in (("header", big[:3]), ("whole", big)):
            with RawClient(broker) as raw:
                raw.handshake(make_connect(f"culex-size-{name}"))
                raw.send(data)
                got = raw.read_until_closed()
                if v5:
                    assert summarize(got) == reply(0xE0, None, PACKET_TOO_LARGE), got.hex(" ")
                else:
                    assert got == b""
                peers.append((raw.peer, f"culex-size-{name}"))
        time.sleep(0.2)
        assert watcher.received(topic) == [b"s" * 700]
    for peer, client_id in peers:
        assert_logged(broker, offset, peer, "protocol violation", client_id)
    assert_healthy(broker, offset)


# --- items 2, 12: 256 MB claims with the default limits ---


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_256mb_claims_close_at_once_with_default_limits(broker_factory: BrokerFactory) -> None:
    """Remaining Length 268,435,455 (CVE-2017-7651, CVE-2023-0809) before and after CONNECT is
    refused from the header with the default configuration, and 14 such connections leave the
    broker's memory flat (under 20 MB growth, mosquitto's 01-bad-initial-packets bound)."""
    broker = broker_factory()
    assert broker.proc is not None
    offset = log_offset(broker)
    with Watcher(broker):
        before = _rss_kb(broker.proc.pid)
        peers = []
        for i in range(14):
            with RawClient(broker) as raw:
                first = [b"\x10", b"\x30", b"\x82", b"\x00"][i % 4]
                raw.send(first + b"\xff\xff\xff\x7f" + b"\x00\x04MQTT")
                assert raw.read_until_closed() == b""
                peers.append((raw.peer, "-" if first != b"\x10" else None))
        with RawClient(broker) as raw:
            raw.handshake(connect("culex-256mb"))
            raw.send(b"\x30\xff\xff\xff\x7f\x00\x03a/b")
            assert raw.read_until_closed() == b""
            peers.append((raw.peer, "culex-256mb"))
        grown = _rss_kb(broker.proc.pid) - before
        assert grown < 20 * 1024, f"RSS grew by {grown} kB"
    for peer, client_id in peers:
        assert_logged(broker, offset, peer, "protocol violation", client_id)
    assert_healthy(broker, offset)
