"""The load generator's MQTT clients: raw `asyncio.Protocol`s with frame-only parsing.

Why not paho or the broker's own codec: both decode every packet into objects, which costs
more CPU per message than the broker under test spends routing it, so the tool would measure
itself. Here a subscriber splits the byte stream by Remaining Length, reads the topic length,
the packet id and the 16-byte stamp at the start of the payload, and nothing else; acks come
from precomputed tables and leave in one write per read. A publisher patches a pre-built batch
of frames (see `wire.PublishTemplate`) and sends it in one write.

Flow control, so a fast broker is measured and a slow one is not buried:

* QoS 0: a publisher writes while its transport is not paused; `pause_writing` (more than
  `WRITE_HIGH` bytes queued in user space, the kernel already holding `NOT_SENT_LOW_WATER`
  unsent bytes) stops it until `resume_writing`. The broker's read rate therefore sets the
  publish rate, and the bytes queued ahead of a message stay bounded.
* QoS 1/2: at most `--inflight` unacknowledged PUBLISHes per publisher; each PUBACK (PUBCOMP)
  opens the window for the next message.
* `--rate`: each publisher sends what its share of the rate makes due, from a timer.

Shared counters and the per-second latency histograms live in one `WorkerState` per process so
the hot loops update a handful of locals and write back once per read.

MQTT 5 (`mqtt5=True`) leaves the hot loops as they are. A subscriber finds the stamp at
`end - payload` rather than after the topic and packet id, which is the same place in 3.1.1 and
past any property block in 5; MQTT 5 acks with a reason code or properties (Remaining Length
above 2) fail the loops' `length == 2` test and go to the slow path (`control`), like CONNACK,
SUBACK and DISCONNECT, which the MQTT 5 codec decodes there.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import TypeVar, cast

from ..protocol.errors import MQTTError
from ..protocol.packets import PacketType
from ..protocol.packets5 import (
    Ack5,
    Connack5,
    Disconnect5,
    Puback5,
    Pubcomp5,
    Pubrec5,
    Pubrel5,
    Suback5,
)
from ..protocol.properties import Properties
from ..protocol.reasons import is_error, reason_name
from ..protocol.v5 import decode_packet_v5
from .histogram import BUCKET_COUNT, bucket_index
from .plan import SubscriberSpec
from .wire import (
    CONNACK,
    CONNACK_REASONS,
    DISCONNECT,
    DISCONNECT_FRAME,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    STAMP,
    SUBACK,
    ack_table,
)

NS = 1_000_000_000
P = TypeVar("P")
MAX_MISSING_TRACKED = 1_000_000  # per subscriber: sequence gaps remembered to tell late from dup
_NEVER = 1 << 62
# MQTT 5 acks that carry a reason code or properties, decoded on the slow path.
ACK_CLASSES: dict[int, type[Ack5]] = {PUBACK: Puback5, PUBREC: Pubrec5, PUBREL: Pubrel5,
                                       PUBCOMP: Pubcomp5}


class BenchError(Exception):
    """A fatal, expected failure (broker unreachable, CONNACK refused): one line, exit 1."""


class WorkerState:
    """Timing of the run and every counter one load-generator process adds to.

    Latency histograms are kept per second of receive time (`bins`), so one set of counts gives
    both the run's percentiles (merge the bins) and the latency-over-time plot. Only messages
    stamped inside the measurement window count; warm-up traffic only warms.
    """

    __slots__ = ("bins", "broadcast_last_ns", "broadcast_received", "connection_errors",
                 "cpu_at_end", "cpu_at_start", "delivered",
                 "duplicates", "error_messages", "expected", "max_latency", "measure_end",
                 "measure_start", "open_clients", "out_of_order", "protocol_errors",
                 "received", "scratch", "sent", "sent_bins", "wait_at_end", "wait_at_start",
                 "warmup_sent", "window_received")

    def __init__(self) -> None:
        self.measure_start = _NEVER
        self.measure_end = _NEVER
        self.bins: list[list[int]] = []
        self.scratch = [0] * BUCKET_COUNT  # where warm-up reads point their (unused) counts
        self.max_latency = 0
        self.sent = 0
        self.warmup_sent = 0
        self.sent_bins: list[int] = []
        self.expected = 0
        self.delivered = 0
        self.received = 0
        self.window_received = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.connection_errors = 0
        self.protocol_errors = 0
        self.error_messages: list[str] = []
        self.open_clients = 0
        self.cpu_at_start = 0.0
        self.cpu_at_end = 0.0
        self.wait_at_start = 0.0
        self.wait_at_end = 0.0
        self.broadcast_received = 0  # `conns --broadcast`: idle clients that got it
        self.broadcast_last_ns = 0  # when the last of them got it (monotonic, every process)

    def bin_counts(self, now: int) -> list[int]:
        """Histogram counts for messages read at `now` (ns)."""
        if now < self.measure_start:
            return self.scratch
        second = (now - self.measure_start) // NS
        bins = self.bins
        while len(bins) <= second:
            bins.append([0] * BUCKET_COUNT)
        return bins[second]

    def count_sent(self, now: int, count: int, fanout: int) -> None:
        if now < self.measure_start:
            self.warmup_sent += count
            return
        self.sent += count
        self.expected += count * fanout
        second = (now - self.measure_start) // NS
        sent_bins = self.sent_bins
        while len(sent_bins) <= second:
            sent_bins.append(0)
        sent_bins[second] += count

    def error(self, kind: str, message: str) -> None:
        """Count an error; keep the first few messages for the report."""
        if kind == "connection":
            self.connection_errors += 1
        else:
            self.protocol_errors += 1
        if len(self.error_messages) < 5 and message not in self.error_messages:
            self.error_messages.append(message)


def long_header(data: bytes, pos: int, size: int) -> tuple[int, int] | None:
    """(body offset, remaining length) when the length needs 2-4 bytes; None if incomplete."""
    multiplier = 1
    length = 0
    index = pos + 1
    for _ in range(4):
        if index >= size:
            return None
        byte = data[index]
        length += (byte & 0x7F) * multiplier
        index += 1
        if not byte & 0x80:
            return index, length
        multiplier <<= 7
    raise BenchError("malformed Remaining Length from the broker")


def reason_text(code: int, packet_type: PacketType) -> str:
    return f"reason code {code:#04x} ({reason_name(code, packet_type)})"


class ClientProtocol(asyncio.Protocol):
    """CONNECT/CONNACK, SUBSCRIBE/SUBACK and connection loss; subclasses add the hot loop.

    `connack` resolves to None when the broker accepted the connection, else to why not.
    """

    def __init__(self, state: WorkerState, client_id: str, *, mqtt5: bool = False) -> None:
        self.state = state
        self.client_id = client_id
        self.mqtt5 = mqtt5
        self.transport: asyncio.Transport | None = None
        self.pending = b""
        self.closing = False
        self.closed = False
        self.connack: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.subscribed: asyncio.Future[None] | None = None
        self.subacks_due = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Each write is already a whole batch; Nagle would only add latency to measure.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.state.open_clients += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.open_clients -= 1
        reason = f"connection to broker lost: {exc}" if exc else "broker closed the connection"
        for future in (self.connack, self.subscribed):
            if future is not None and not future.done():
                future.set_exception(BenchError(reason))
        if not self.closing:
            self.state.error("connection", f"{self.client_id}: {reason}")

    def close(self) -> None:
        """Leave politely (DISCONNECT, so the broker drops no will and logs no error)."""
        self.closing = True
        transport = self.transport
        if transport is not None and not self.closed and not transport.is_closing():
            transport.write(DISCONNECT_FRAME)
            transport.close()

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed and not self.transport.is_closing():
            self.transport.write(data)

    def expect_subacks(self, count: int) -> asyncio.Future[None]:
        self.subacks_due = count
        self.subscribed = asyncio.get_running_loop().create_future()
        return self.subscribed

    def data_received(self, data: bytes) -> None:
        """Generic framing: only idle clients and the setup phase go through here."""
        if self.pending:
            data = self.pending + data
        size = len(data)
        pos = 0
        while size - pos >= 2:
            length = data[pos + 1]
            if length < 128:
                body = pos + 2
            else:
                header = long_header(data, pos, size)
                if header is None:
                    break
                body, length = header
            end = body + length
            if end > size:
                break
            self.control(data[pos], data, body, end)
            pos = end
        self.pending = data[pos:] if pos < size else b""

    def control(self, first: int, data: bytes, body: int, end: int) -> None:
        """Packets off the hot path: CONNACK, SUBACK, PINGRESP, an MQTT 5 DISCONNECT; anything
        else is an error."""
        kind = first & 0xF0
        if kind == CONNACK and not self.connack.done():
            self.connack_received(first, data, body, end)
        elif kind == SUBACK:
            self.suback_received(first, data, body, end)
        elif kind == DISCONNECT and self.mqtt5:
            packet = self.decode5(first, data, body, end, Disconnect5)
            if packet is not None:
                self.disconnected(packet)
        elif kind != PINGRESP:
            self.state.error("protocol", f"{self.client_id}: unexpected packet type {first >> 4}")

    def decode5(self, first: int, data: bytes, body: int, end: int,
                kind: type[P]) -> P | None:
        """One MQTT 5 packet from the broker through the codec (slow path only); a malformed
        one is a protocol error and None."""
        packet: object
        try:
            packet = decode_packet_v5(first, data[body:end], 0, from_client=False)
        except MQTTError as exc:
            packet = exc
        if isinstance(packet, kind):
            return packet
        self.state.error("protocol", f"{self.client_id}: bad {PacketType(first >> 4).name} "
                         f"from the broker: {packet}")
        return None

    def connack_received(self, first: int, data: bytes, body: int, end: int) -> None:
        if end - body == 2:  # MQTT 3.1.1, or a 3.1.1 broker refusing an MQTT 5 CONNECT
            code = data[body + 1]
            refusal = None
            if code:
                refusal = (f"CONNACK return code {code} "
                           f"({CONNACK_REASONS.get(code, 'unknown return code')})")
                if self.mqtt5 and code == 1:
                    refusal += ": the broker does not speak MQTT 5 (drop --mqtt5)"
            self.connack.set_result(refusal)
            return
        packet = self.decode5(first, data, body, end, Connack5) if self.mqtt5 else None
        if packet is None:
            self.connack.set_result("malformed CONNACK")
        elif is_error(packet.reason_code):
            reason = reason_text(packet.reason_code, PacketType.CONNACK)
            self.connack.set_result(f"CONNACK {reason}")
        else:
            self.connack.set_result(self.accept(packet.properties))

    def accept(self, properties: Properties) -> str | None:
        """What an MQTT 5 CONNACK's properties mean for this client: None if it can run."""
        return None

    def suback_received(self, first: int, data: bytes, body: int, end: int) -> None:
        future = self.subscribed
        if future is None or future.done():
            self.state.error("protocol", f"{self.client_id}: unexpected SUBACK")
            return
        if self.mqtt5:
            packet = self.decode5(first, data, body, end, Suback5)
            if packet is None:
                future.set_exception(BenchError("malformed SUBACK from the broker"))
                return
            refused = [code for code in packet.reason_codes if is_error(code)]
            if refused:
                reason = reason_text(refused[0], PacketType.SUBACK)
                future.set_exception(BenchError(f"broker refused a subscription (SUBACK {reason})"))
                return
        elif 0x80 in data[body + 2:end]:
            future.set_exception(BenchError("broker refused a subscription (SUBACK 0x80)"))
            return
        self.subacks_due -= 1
        if self.subacks_due <= 0:
            future.set_result(None)

    def disconnected(self, packet: Disconnect5) -> None:
        """The broker ended the connection with an MQTT 5 DISCONNECT: one connection error that
        names the reason, and the socket closed without a DISCONNECT of ours [MQTT-3.14.4-1]."""
        reason = f"broker sent DISCONNECT, {reason_text(packet.reason_code, PacketType.DISCONNECT)}"
        if packet.properties.reason_string:
            reason += f": {packet.properties.reason_string}"
        for future in (self.connack, self.subscribed):
            if future is not None and not future.done():
                future.set_exception(BenchError(reason))
        if not self.closing:
            self.state.error("connection", f"{self.client_id}: {reason}")
        self.closing = True  # connection_lost must not count it again
        if self.transport is not None:
            self.transport.close()


class Subscriber(ClientProtocol):
    """Reads stamps, records latency, tracks per-publisher sequence, acks QoS 1/2."""

    def __init__(self, state: WorkerState, client_id: str, spec: SubscriberSpec,
                 publishers: int, qos: int, *, payload: int, mqtt5: bool = False) -> None:
        super().__init__(state, client_id, mqtt5=mqtt5)
        self.spec = spec
        self.qos = qos
        self.publishers = publishers
        # Every payload of the run has this size and starts with the stamp, so the stamp sits
        # `payload` bytes before the end of a PUBLISH: after the topic and packet id in MQTT
        # 3.1.1, after the property block too in MQTT 5, without reading the property length.
        self.payload = payload
        # Next expected sequence number per publisher index. A dict, not a list: in `pairs`
        # with 10,000 clients a list per subscriber would be 10^8 entries for one key each.
        self.next_seq: dict[int, int] = {}
        self.missing: dict[int, set[int]] = {}
        self.missing_count = 0
        self.foreign = 0
        # QoS 1 PUBLISH -> PUBACK; QoS 2 PUBLISH -> PUBREC and PUBREL -> PUBCOMP.
        self.publish_acks = ack_table(PUBACK if qos == 1 else PUBREC) if qos else []
        self.pubcomps = ack_table(PUBCOMP) if qos == 2 else []

    def data_received(self, data: bytes) -> None:
        if self.subscribed is None or not self.subscribed.done():
            super().data_received(data)  # still in setup: CONNACK / SUBACK
            return
        if self.pending:
            data = self.pending + data
        size = len(data)
        pos = 0
        now = time.monotonic_ns()
        state = self.state
        start = state.measure_start
        counts = state.bin_counts(now)
        unpack = STAMP.unpack_from
        next_seq = self.next_seq
        publishers = self.publishers
        publish_acks = self.publish_acks
        payload = self.payload
        acks: list[bytes] = []
        received = delivered = 0
        top = 0
        # A publisher stamps a whole batch with one send time, so consecutive messages mostly
        # share a stamp and hence a latency: count the run, record it once when it ends.
        run_stamp = -1
        run_count = 0
        while size - pos >= 2:
            first = data[pos]
            length = data[pos + 1]
            if length < 128:
                body = pos + 2
            elif size - pos > 2 and data[pos + 2] < 128:  # 128 B - 16 KB: inline, no call
                length = (length & 0x7F) | (data[pos + 2] << 7)
                body = pos + 3
            else:
                header = long_header(data, pos, size)
                if header is None:
                    break
                body, length = header
            end = body + length
            if end > size:
                break
            if first & 0xF0 == 0x30:
                head = body + 2 + ((data[body] << 8) | data[body + 1])
                if first & 0x06:
                    acks.append(publish_acks[(data[head] << 8) | data[head + 1]])
                    head += 2
                if (at := end - payload) >= head:  # not shorter than ours (see __init__)
                    stamp, publisher, seq = unpack(data, at)
                    if publisher < publishers:
                        received += 1
                        expected_seq = next_seq.get(publisher, 0)
                        if seq == expected_seq:
                            next_seq[publisher] = seq + 1
                            fresh = True
                        else:
                            fresh = self.out_of_sequence(publisher, seq, expected_seq)
                        if fresh:
                            if stamp == run_stamp:
                                run_count += 1
                            else:
                                if run_count and run_stamp >= start:
                                    micros = (now - run_stamp) // 1000
                                    counts[bucket_index(micros)] += run_count
                                    delivered += run_count
                                    top = max(top, micros)
                                run_stamp = stamp
                                run_count = 1
                    else:
                        self.foreign += 1
                else:
                    self.foreign += 1
            elif first == PUBREL and length == 2:
                acks.append(self.pubcomps[(data[body] << 8) | data[body + 1]])
            else:
                self.control(first, data, body, end)
            pos = end
        if run_count and run_stamp >= start:
            micros = (now - run_stamp) // 1000
            counts[bucket_index(micros)] += run_count
            delivered += run_count
            top = max(top, micros)
        self.pending = data[pos:] if pos < size else b""
        if acks:
            self.send(b"".join(acks))
        state.received += received
        state.delivered += delivered
        state.max_latency = max(state.max_latency, top)
        if start <= now < state.measure_end:
            state.window_received += received

    def control(self, first: int, data: bytes, body: int, end: int) -> None:
        """Adds an MQTT 5 PUBREL with a reason code or properties (the loop takes the 4-byte
        form): answered with PUBCOMP all the same, an error reason counted."""
        if first == PUBREL and self.mqtt5 and self.pubcomps:
            packet = self.decode5(first, data, body, end, Pubrel5)
            if packet is not None:
                self.send(self.pubcomps[packet.packet_id])
                if is_error(packet.reason_code):
                    self.state.error("protocol", f"{self.client_id}: PUBREL "
                                     f"{reason_text(packet.reason_code, PacketType.PUBREL)}")
            return
        super().control(first, data, body, end)

    def out_of_sequence(self, publisher: int, seq: int, expected_seq: int) -> bool:
        """Slow path for a stamp that is not the next one from its publisher.

        Returns whether the message is new (counted as delivered). Ahead of the expected
        sequence: the skipped numbers are remembered (QoS 1/2) so a later arrival counts as
        out-of-order, not as a duplicate. Behind it: a remembered gap is out-of-order, anything
        else a duplicate. At QoS 0 gaps are loss and are not remembered; a late message there
        counts as out-of-order.
        """
        state = self.state
        if seq > expected_seq:
            self.next_seq[publisher] = seq + 1
            gap = seq - expected_seq
            if self.qos and self.missing_count + gap <= MAX_MISSING_TRACKED:
                self.missing.setdefault(publisher, set()).update(range(expected_seq, seq))
                self.missing_count += gap
            return True
        gaps = self.missing.get(publisher)
        if gaps is not None and seq in gaps:
            gaps.discard(seq)
            self.missing_count -= 1
            state.out_of_order += 1
            return True
        if self.qos:
            state.duplicates += 1
            return False
        state.out_of_order += 1
        return True


class IdleClient(ClientProtocol):
    """Connects and stays: the `conns` scenario measures what a connection costs.

    With `broadcast` (the topic of `conns --broadcast`, which it subscribes to at QoS 0) it
    also takes the run's one broadcast message and notes when it arrived; anything else
    published to it, or the broadcast twice, is a protocol error.
    """

    def __init__(self, state: WorkerState, client_id: str, *, broadcast: bytes | None = None,
                 mqtt5: bool = False) -> None:
        super().__init__(state, client_id, mqtt5=mqtt5)
        self.broadcast = broadcast
        self.got_broadcast = False

    def control(self, first: int, data: bytes, body: int, end: int) -> None:
        topic = self.broadcast
        if first & 0xF0 != PUBLISH or topic is None:
            super().control(first, data, body, end)
            return
        length = int.from_bytes(data[body:body + 2])
        if first & 0x06 or data[body + 2:body + 2 + length] != topic:
            self.state.error("protocol", f"{self.client_id}: unexpected PUBLISH "
                             f"(QoS {(first >> 1) & 3}) to "
                             f"{data[body + 2:body + 2 + length].decode(errors='replace')!r}")
        elif self.got_broadcast:
            self.state.error("protocol", f"{self.client_id}: the broadcast arrived twice")
        else:
            self.got_broadcast = True
            state = self.state
            state.broadcast_received += 1
            state.broadcast_last_ns = max(state.broadcast_last_ns, time.monotonic_ns())
