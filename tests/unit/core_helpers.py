"""Drive the sans-I/O broker core with fake sinks and a fake clock: no sockets, no sleeping.

`Harness` owns a `Broker` and the clock; `FakeClient` is one MQTT client talking to it through a
`Connection`. Every client call feeds encoded bytes at the harness's current time, and
`received_packets()` flushes the broker and decodes whatever new bytes reached that client's sink.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from culex.core.broker import Broker, WorkerSetup
from culex.core.connection import Connection
from culex.core.limits import Limits
from culex.core.options import Mqtt5Options
from culex.core.ports import Host
from culex.protocol.codec import (
    DISCONNECT,
    PINGREQ,
    decode_packet,
    encode_ack,
    encode_connect,
    encode_publish,
    encode_subscribe,
    encode_unsubscribe,
)
from culex.protocol.packets import (
    Connack,
    Connect,
    Packet,
    PacketType,
    Publish,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
)
from culex.protocol.packets5 import Connack5, Connect5, Packet5
from culex.protocol.reader import FrameReader
from culex.protocol.v5 import decode_packet_v5, encode_connect5


class FakeSink:
    """Records everything written; refuses writes after close (a transport would lose them)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.writes: list[list[bytes]] = []
        self.closed = False
        self.close_calls = 0
        self.reading_paused = False

    def writelines(self, list_of_data: list[bytes]) -> None:
        if self.closed:
            raise AssertionError(f"write after close: {list_of_data!r}")
        chunks = list(list_of_data)
        self.writes.append(chunks)
        for chunk in chunks:
            self.data += chunk

    def close(self) -> None:
        self.closed = True
        self.close_calls += 1

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False


class Harness:
    """A broker plus the fake clock every client of it shares."""

    def __init__(self, limits: Limits | None = None, *, sys_interval: float = 0.0,
                 now: float = 0.0, mqtt5: Mqtt5Options | None = None,
                 workers: WorkerSetup | None = None, host: Host | None = None) -> None:
        self.now = now
        self.broker = Broker(limits, sys_interval=sys_interval, now=now, mqtt5=mqtt5,
                             workers=workers, host=host)
        self._peers = 0

    def client(self, peer: str | None = None) -> FakeClient:
        """A new socket: the connection exists, nothing has been sent on it yet."""
        self._peers += 1
        return FakeClient(self, peer or f"127.0.0.1:{50000 + self._peers}")

    def tick(self, now: float) -> None:
        """Move the clock to `now` (never backwards), run the broker's timers, then flush."""
        assert now >= self.now, "the fake clock only moves forward"
        self.now = now
        self.broker.tick(now)
        self.broker.flush()

    def connected(self, client_id: str, *, clean_session: bool = True, keepalive: int = 0,
                  will: Will | None = None) -> FakeClient:
        """A client whose CONNECT was accepted (asserts CONNACK 0)."""
        client = self.client()
        connack = client.connect(client_id, clean_session=clean_session, keepalive=keepalive,
                                 will=will)
        assert connack.return_code == 0, connack
        return client


class FakeClient:
    """One MQTT client over a FakeSink; sends at the harness's current time."""

    def __init__(self, harness: Harness, peer: str) -> None:
        self.harness = harness
        self.broker = harness.broker
        self.sink = FakeSink()
        self.connection: Connection = self.broker.open_connection(self.sink, peer, harness.now)
        self._reader = FrameReader(10**9, connect_only=False)
        self._consumed = 0
        self._backlog: list[Packet] = []
        self._backlog5: list[Packet5] = []
        self._next_packet_id = 0

    # -- raw I/O ---------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.connection.data_received(data, self.harness.now)

    def lose(self) -> None:
        """The TCP connection drops without a DISCONNECT."""
        self.connection.connection_lost(self.harness.now)
        self.broker.flush()

    @property
    def closed(self) -> bool:
        """The broker closed our sink (after flushing what it had queued)."""
        self.broker.flush()
        return self.sink.closed

    def _new_frames(self) -> list[tuple[int, bytes, int]]:
        """Flush the broker and frame every byte that reached this sink since the last call."""
        self.broker.flush()
        new = bytes(self.sink.data[self._consumed:])
        self._consumed = len(self.sink.data)
        frames = self._reader.feed(new)
        assert self._reader.error is None, self._reader.error
        return frames

    def received_frames(self) -> list[bytes]:
        """The raw frames that reached this sink since the last call (exact bytes)."""
        return [frame for _, frame, _ in self._new_frames()]

    def received_packets(self) -> list[Packet]:
        """Flush the broker and decode every packet that reached this sink since the last call."""
        packets = self._backlog
        self._backlog = []
        packets += [decode_packet(*frame) for frame in self._new_frames()]
        return packets

    def received_packets5(self) -> list[Packet5]:
        """`received_packets` for an MQTT 5 client: decoded as the server's MQTT 5 packets."""
        packets = self._backlog5
        self._backlog5 = []
        packets += [decode_packet_v5(*frame, from_client=False) for frame in self._new_frames()]
        return packets

    def first5(self, kind: type[Packet5]) -> Packet5:
        """The first new MQTT 5 packet, which must be a `kind`; later ones stay queued."""
        packets = self.received_packets5()
        assert packets and isinstance(packets[0], kind), packets
        self._backlog5 = packets[1:]
        return packets[0]

    def connect5(self, client_id: str, **fields: Any) -> Connack5:
        """Send an MQTT 5 CONNECT (Connect5 fields as keywords) and return the CONNACK."""
        self.send(encode_connect5(Connect5(client_id, **fields)))
        connack = self.first5(Connack5)
        assert isinstance(connack, Connack5)
        return connack

    def publishes(self) -> list[Publish]:
        """New packets, all of which must be PUBLISH."""
        packets = self.received_packets()
        assert all(isinstance(p, Publish) for p in packets), packets
        return [p for p in packets if isinstance(p, Publish)]

    def _take(self, kind: type[Packet]) -> Packet:
        """The first new packet of `kind`; other new packets stay queued for the next read."""
        packets = self.received_packets()
        for index, packet in enumerate(packets):
            if isinstance(packet, kind):
                self._backlog = packets[:index] + packets[index + 1:]
                return packet
        raise AssertionError(f"no {kind.__name__} among {packets!r}")

    # -- packets ---------------------------------------------------------------------------

    def next_packet_id(self) -> int:
        self._next_packet_id = self._next_packet_id % 65535 + 1
        return self._next_packet_id

    def connect(self, client_id: str, clean_session: bool = True, keepalive: int = 0,
                will: Will | None = None, *, protocol_name: str = "MQTT",
                protocol_level: int = 4) -> Connack:
        """Send CONNECT and return the CONNACK; packets after it stay queued."""
        self.send(encode_connect(Connect(client_id, protocol_name, protocol_level,
                                         clean_session, keepalive, will)))
        packets = self.received_packets()
        assert packets and isinstance(packets[0], Connack), packets
        self._backlog = packets[1:]
        return packets[0]

    def publish(self, topic: str, payload: bytes = b"", qos: int = 0, retain: bool = False, *,
                packet_id: int | None = None, dup: bool = False) -> int:
        """Send PUBLISH; returns its packet id (0 for QoS 0)."""
        if packet_id is None:
            packet_id = self.next_packet_id() if qos else 0
        self.send(encode_publish(Publish(topic, payload, qos, retain, dup, packet_id)))
        return packet_id

    def subscribe(self, *topics: tuple[str, int]) -> list[int]:
        """Send SUBSCRIBE and return the SUBACK codes; retained PUBLISHes stay queued."""
        packet_id = self.next_packet_id()
        self.send(encode_subscribe(Subscribe(packet_id, list(topics))))
        suback = self._take(Suback)
        assert isinstance(suback, Suback) and suback.packet_id == packet_id, suback
        return suback.return_codes

    def unsubscribe(self, *filters: str) -> None:
        packet_id = self.next_packet_id()
        self.send(encode_unsubscribe(Unsubscribe(packet_id, list(filters))))
        unsuback = self._take(Unsuback)
        assert isinstance(unsuback, Unsuback) and unsuback.packet_id == packet_id

    def puback(self, packet_id: int) -> None:
        self.send(encode_ack(PacketType.PUBACK, packet_id))

    def pubrec(self, packet_id: int) -> None:
        self.send(encode_ack(PacketType.PUBREC, packet_id))

    def pubrel(self, packet_id: int) -> None:
        self.send(encode_ack(PacketType.PUBREL, packet_id))

    def pubcomp(self, packet_id: int) -> None:
        self.send(encode_ack(PacketType.PUBCOMP, packet_id))

    def pingreq(self) -> None:
        self.send(PINGREQ)

    def disconnect(self) -> None:
        self.send(DISCONNECT)
        self.broker.flush()

    def ack_all(self, packets: Iterable[Packet]) -> None:
        """Complete every flow these packets open: PUBACK QoS 1, PUBREC QoS 2, PUBCOMP PUBREL."""
        for packet in packets:
            if isinstance(packet, Publish) and packet.qos == 1:
                self.puback(packet.packet_id)
            elif isinstance(packet, Publish) and packet.qos == 2:
                self.pubrec(packet.packet_id)
            elif isinstance(packet, Pubrel):
                self.pubcomp(packet.packet_id)


def payloads(packets: Iterable[Packet]) -> list[bytes]:
    """Payloads of the PUBLISH packets among `packets`, in order."""
    return [p.payload for p in packets if isinstance(p, Publish)]


def only_publishes(packets: Iterable[Packet]) -> list[Publish]:
    return [p for p in packets if isinstance(p, Publish)]
