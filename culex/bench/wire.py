"""The few MQTT bytes the load generator sends, built once, patched in place.

The generator must outrun the broker it measures, so nothing on the hot path encodes a packet:
a publisher holds a ready-made batch of PUBLISH frames and only overwrites the stamp (and the
packet identifier at QoS 1/2) of each frame; acknowledgements come from tables indexed by packet
identifier. Only CONNECT and SUBSCRIBE, sent once per client, go through the codec.

Every payload starts with a 16-byte stamp, big-endian: send time (`time.monotonic_ns()`, one
clock for every process on the host, so a subscriber in another `--procs` process can subtract
it), the global index of the publisher and its sequence number. The rest of the payload is
filler. Subscribers read the stamp and nothing else.

MQTT 5 (`--mqtt5`) changes only the once-per-client packets and one byte per PUBLISH: an empty
property block (0x00) between the topic (packet id) and the payload. The 4-byte acks are valid
MQTT 5 as they are: Remaining Length 2 means reason code 0x00 (Success) and no properties
(§3.4.2.1), so the ack tables serve both protocols.
"""

from __future__ import annotations

import struct

from ..protocol.codec import encode_connect, encode_subscribe, publish_head
from ..protocol.packets import Connect, Subscribe
from ..protocol.packets5 import Connect5, Subscribe5, Subscription
from ..protocol.properties import Properties
from ..protocol.v5 import encode_connect5, encode_subscribe5, publish_head_v5

STAMP = struct.Struct(">QII")  # send time ns, publisher index, sequence number
STAMP_SIZE = STAMP.size
PACKET_ID = struct.Struct(">H")

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
PUBREC = 0x50
PUBREL = 0x62  # PUBREL carries the mandatory flags 0010
PUBCOMP = 0x70
SUBACK = 0x90
PINGRESP = 0xD0

DISCONNECT = 0xE0

PINGREQ_FRAME = b"\xc0\x00"
DISCONNECT_FRAME = b"\xe0\x00"  # MQTT 5 too: no reason code means Normal disconnection
EMPTY_PROPERTIES = b"\x00"
# A persistent MQTT 5 session must outlive the connection: the 3.1.1 clean session 0 has no
# expiry, and 0xFFFFFFFF is MQTT 5's "never expires" (§3.1.2.11.2).
SESSION_NEVER_EXPIRES = 0xFFFFFFFF

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}

_ack_tables: dict[int, list[bytes]] = {}


def ack_table(first_byte: int) -> list[bytes]:
    """All 65536 four-byte acks of one type, indexed by packet id; built on first use.

    A table lookup is cheaper than building `bytes((first, 2, hi, lo))` per message, and a
    process needs at most three tables (about 2.5 MB each).
    """
    table = _ack_tables.get(first_byte)
    if table is None:
        table = [bytes((first_byte, 2, pid >> 8, pid & 0xFF)) for pid in range(65536)]
        _ack_tables[first_byte] = table
    return table


def connect_frame(client_id: str, keepalive: int, username: str | None,
                  password: str | None, clean_session: bool = True, *,
                  mqtt5: bool = False) -> bytes:
    """CONNECT; clean session unless persistent subscribers were asked for.

    MQTT 5: Clean Start as the 3.1.1 clean session, and for a persistent session a Session
    Expiry Interval that keeps it after the connection ends.
    """
    password_bytes = password.encode() if password is not None else None
    if not mqtt5:
        return encode_connect(Connect(client_id, clean_session=clean_session,
                                      keepalive=keepalive, username=username,
                                      password=password_bytes))
    expiry = None if clean_session else SESSION_NEVER_EXPIRES
    return encode_connect5(Connect5(client_id, clean_start=clean_session, keepalive=keepalive,
                                    username=username, password=password_bytes,
                                    properties=Properties(session_expiry_interval=expiry)))


def subscribe_frames(filters: list[str], qos: int, chunk: int = 100, *,
                     mqtt5: bool = False) -> list[bytes]:
    """SUBSCRIBEs for `filters`, at most `chunk` filters each (fanin subscribes to N topics).

    Packet ids count from 1 in the order of the returned frames.
    """
    parts = [(number + 1, filters[i:i + chunk])
             for number, i in enumerate(range(0, len(filters), chunk))]
    if mqtt5:
        return [encode_subscribe5(Subscribe5(pid, [Subscription(f, qos) for f in part]))
                for pid, part in parts]
    return [encode_subscribe(Subscribe(pid, [(f, qos) for f in part])) for pid, part in parts]


class PublishTemplate:
    """`count` identical PUBLISH frames back to back in one bytearray, patched per send.

    `stamp_offsets[i]` is where frame i's stamp starts, `id_offsets[i]` its packet id (QoS 1/2):
    the two bytes just before the stamp in MQTT 3.1.1, before the empty property block in MQTT 5.
    Writing `bytes(view[:n * frame_size])` sends n messages in one syscall.
    """

    __slots__ = ("buffer", "count", "frame_size", "id_offsets", "stamp_offsets", "view")

    def __init__(self, topic: str, payload_size: int, qos: int, count: int, *,
                 mqtt5: bool = False) -> None:
        if payload_size < STAMP_SIZE:
            raise ValueError(f"payload must be at least {STAMP_SIZE} bytes")
        first = PUBLISH | (qos << 1)
        if mqtt5:
            properties = EMPTY_PROPERTIES
            head = publish_head_v5(topic.encode(), payload_size, first, properties)
        else:
            properties = b""
            head = publish_head(topic.encode(), payload_size, first)
        id_bytes = b"\x00\x01" if qos else b""
        # Filler is printable so a stray human subscriber (mosquitto_sub) sees something sane.
        frame = (head + id_bytes + properties + bytes(STAMP_SIZE)
                 + b"x" * (payload_size - STAMP_SIZE))
        self.frame_size = len(frame)
        self.count = count
        self.buffer = bytearray(frame * count)
        self.view = memoryview(self.buffer)
        stamp_at = len(head) + len(id_bytes) + len(properties)
        self.stamp_offsets = [i * self.frame_size + stamp_at for i in range(count)]
        self.id_offsets = [i * self.frame_size + len(head) for i in range(count)]
