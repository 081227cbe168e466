"""The load generator's publishing client (see clients.py for why the clients are raw
`asyncio.Protocol`s, and for the flow control they share)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import cast

from ..protocol.packets import PacketType
from ..protocol.properties import Properties
from ..protocol.reasons import is_error
from .clients import ACK_CLASSES, NS, ClientProtocol, WorkerState, long_header, reason_text
from .plan import PublisherSpec
from .wire import PACKET_ID, PUBACK, PUBCOMP, PUBREC, PUBREL, STAMP, PublishTemplate, ack_table

WRITE_HIGH = 64 * 1024  # publisher user-space write buffer before pause_writing
WRITE_LOW = 16 * 1024
# Unsent bytes a publisher's kernel socket may hold (TCP_NOTSENT_LOWAT: a non-blocking send
# fails with EAGAIN past it, so uvloop buffers and pauses us). Left alone, the send buffer
# autotunes to megabytes (tcp_wmem) and a QoS 0 publisher faster than the broker measures its
# own queue: 3 MB of backlog was 250 ms of "latency" at 100k msgs/s against Mosquitto, 15 ms
# with this. A small SO_SNDBUF would bound it too but stalls on delayed ACKs (40 ms).
NOT_SENT_LOW_WATER = 64 * 1024
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", None)  # Linux, macOS


class Publisher(ClientProtocol):
    """Sends stamped PUBLISHes as fast as flow control (or `--rate`) allows until the end."""

    def __init__(self, state: WorkerState, client_id: str, spec: PublisherSpec, *,
                 template: PublishTemplate, qos: int, inflight: int, rate: float,
                 mqtt5: bool = False) -> None:
        super().__init__(state, client_id, mqtt5=mqtt5)
        self.spec = spec
        self.template = template
        self.qos = qos
        self.window = inflight
        self.rate = rate  # messages per second for this publisher; 0 = unlimited
        self.inflight: set[int] = set()
        self.next_pid = 1
        self.seq = 0
        self.paused = False
        self.stopped = True
        self.start_ns = 0
        self.end_ns = 0
        self.handle: asyncio.Handle | None = None
        self.pubrels = ack_table(PUBREL) if qos == 2 else []
        # The acks this QoS expects; any other is handed to `control` and counted as an error.
        self.acks = {1: (PUBACK,), 2: (PUBREC, PUBCOMP)}.get(qos, ())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        cast(asyncio.Transport, transport).set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        sock = transport.get_extra_info("socket")
        if sock is not None and TCP_NOTSENT_LOWAT is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, NOT_SENT_LOW_WATER)

    def accept(self, properties: Properties) -> str | None:
        """An MQTT 5 broker's limits: its Receive Maximum caps the QoS 1/2 window (sending
        more is a protocol error, 0x93); a Maximum QoS below --qos cannot be benchmarked."""
        if properties.receive_maximum is not None:
            self.window = min(self.window, properties.receive_maximum)
        if properties.maximum_qos is not None and properties.maximum_qos < self.qos:
            return f"its Maximum QoS is {properties.maximum_qos}, below --qos {self.qos}"
        return None

    def begin(self, start_ns: int, end_ns: int) -> None:
        """Publish from `start_ns` (monotonic) until `end_ns`."""
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.stopped = False
        delay = max(0.0, (start_ns - time.monotonic_ns()) / NS)
        self.handle = asyncio.get_running_loop().call_later(delay, self.pump)

    def stop(self) -> None:
        self.stopped = True
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def close(self) -> None:
        self.stop()
        super().close()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.kick()

    def kick(self) -> None:
        """Send now if anything is due (window opened, writing resumed)."""
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.pump()

    def pump(self) -> None:
        self.handle = None
        if self.stopped or self.paused or self.closed:
            return
        now = time.monotonic_ns()
        if now >= self.end_ns:
            self.stopped = True
            return
        loop = asyncio.get_running_loop()
        budget = self.template.count
        if self.rate:
            due = int((now - self.start_ns) * self.rate / NS) + 1 - self.seq
            if due <= 0:
                wait = (self.start_ns + self.seq * NS / self.rate - now) / NS
                self.handle = loop.call_later(max(wait, 0.0005), self.pump)
                return
            budget = min(budget, due)
        if self.qos:
            budget = min(budget, self.window - len(self.inflight))
            if budget <= 0:
                return  # the next PUBACK / PUBCOMP kicks us
        self.publish(budget, now)
        if not self.paused:
            self.handle = loop.call_soon(self.pump)

    def publish(self, count: int, now: int) -> None:
        """Stamp `count` frames of the template and write them in one go."""
        template = self.template
        buffer = template.buffer
        pack = STAMP.pack_into
        offsets = template.stamp_offsets
        index = self.spec.index
        seq = self.seq
        if self.qos:
            pack_id = PACKET_ID.pack_into
            id_offsets = template.id_offsets
            inflight = self.inflight
            pid = self.next_pid
            for i in range(count):
                while pid in inflight:
                    pid = pid % 65535 + 1
                inflight.add(pid)
                pack_id(buffer, id_offsets[i], pid)
                pack(buffer, offsets[i], now, index, seq + i)
                pid = pid % 65535 + 1
            self.next_pid = pid
        else:
            for i in range(count):
                pack(buffer, offsets[i], now, index, seq + i)
        self.seq = seq + count
        self.send(bytes(template.view[:count * template.frame_size]))
        self.state.count_sent(now, count, self.spec.fanout)

    def data_received(self, data: bytes) -> None:
        if not self.connack.done():
            super().data_received(data)
            return
        if self.pending:
            data = self.pending + data
        size = len(data)
        pos = 0
        inflight = self.inflight
        acks = self.acks
        releases: list[bytes] = []
        freed = False
        while size - pos >= 2:
            first = data[pos]
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
            if first in acks and length == 2:
                pid = (data[body] << 8) | data[body + 1]
                if pid not in inflight:
                    self.state.error("protocol", f"{self.client_id}: ack for unknown id {pid}")
                elif first == PUBREC:
                    releases.append(self.pubrels[pid])
                else:
                    inflight.discard(pid)
                    freed = True
            else:
                self.control(first, data, body, end)
            pos = end
        self.pending = data[pos:] if pos < size else b""
        if releases:
            self.send(b"".join(releases))
        if freed and not self.stopped:
            self.kick()

    def control(self, first: int, data: bytes, body: int, end: int) -> None:
        """Adds MQTT 5 acks with a reason code or properties (the loop takes the 4-byte form).

        A success code (below 0x80, e.g. 0x10 No matching subscribers) acks as usual; an error
        code ends the message's flow (no PUBREL after a failed PUBREC) and is counted.
        """
        if first not in self.acks or not self.mqtt5:
            super().control(first, data, body, end)
            return
        packet = self.decode5(first, data, body, end, ACK_CLASSES[first])
        if packet is None:
            return
        pid = packet.packet_id
        if pid not in self.inflight:
            self.state.error("protocol", f"{self.client_id}: ack for unknown id {pid}")
            return
        if is_error(packet.reason_code):
            self.state.error("protocol", f"{self.client_id}: {PacketType(first >> 4).name} "
                             f"{reason_text(packet.reason_code, PacketType(first >> 4))}")
        elif first == PUBREC:
            self.send(self.pubrels[pid])
            return
        self.inflight.discard(pid)
        if not self.stopped:
            self.kick()
