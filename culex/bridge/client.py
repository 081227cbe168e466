"""An MQTT client as a sans-I/O state machine: what a bridge speaks to the remote broker.

    CONNECTING ──CONNACK 0──▶ CONNECTED ──(DISCONNECT, error, close)──▶ CLOSED
        └──CONNACK refusal, anything else──▶ CLOSED

Bytes in (`receive`), packets out (the encoders below), no socket and no clock: the bridge's
link (link.py) decides what to do with each packet and when, and the server (server/bridges.py)
moves the bytes. It is built on the broker's own codec, in the client's direction: a
3.1.1 or MQTT 5 CONNECT (with Mosquitto's bridge bit for 3.1.1 if asked), and the packets a
server sends decoded and checked as such (`from_client=False`). Anything a server may not send
here, or bytes that are not MQTT, raise the codec's `MQTTError`; the connection is then
finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from ..protocol.codec import PINGREQ, decode_packet, encode_ack, encode_connect, encode_subscribe
from ..protocol.errors import ProtocolError
from ..protocol.packets import (
    Connack,
    ConnackCode,
    Connect,
    Packet,
    PacketType,
    Publish,
    Subscribe,
)
from ..protocol.packets5 import Connack5, Connect5, Packet5, Publish5, Subscribe5, Subscription
from ..protocol.properties import Properties
from ..protocol.reader import FrameReader
from ..protocol.reasons import ReasonCode, reason_name
from ..protocol.topics import check_topic_name
from ..protocol.v5 import (
    decode_packet_v5,
    encode_ack5,
    encode_connect5,
    encode_disconnect5,
    encode_subscribe5,
)

NEVER_EXPIRES = 0xFFFFFFFF
DISCONNECT_V3 = b"\xe0\x00"

# What a server may send once it has accepted the connection (§2.1.2, "Direction of flow").
_FROM_SERVER: Final = frozenset({
    PacketType.PUBLISH, PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL,
    PacketType.PUBCOMP, PacketType.SUBACK, PacketType.UNSUBACK, PacketType.PINGRESP})
# ...and in MQTT 5 also DISCONNECT (AUTH only after an Authentication Method, never sent here).
_FROM_SERVER_V5: Final = _FROM_SERVER | {PacketType.DISCONNECT}


class ClientState(Enum):
    CONNECTING = "awaiting CONNACK"
    CONNECTED = "connected"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ClientOptions:
    client_id: str
    v5: bool
    keepalive: int
    username: str | None = None
    password: bytes | None = None
    # 3.1.1: protocol level | 0x80, "this client is a bridge" (Mosquitto's try_private).
    bridge_bit: bool = False
    # What we accept from the server: QoS 2 messages awaiting PUBREL (MQTT 5 Receive
    # Maximum), and the largest packet.
    receive_maximum: int = 1024
    max_packet_size: int = 16 * 1024 * 1024


@dataclass(slots=True)
class ServerLimits:
    """What the server's CONNACK said about itself (MQTT 5; 3.1.1 servers say nothing)."""

    session_present: bool = False
    receive_maximum: int = 65535
    maximum_qos: int = 2
    retain_available: bool = True
    maximum_packet_size: int = 0  # 0: none
    # Replaces our keep-alive when set [MQTT-3.2.2-21].
    server_keep_alive: int | None = None


class MqttClient:
    """One connection's protocol state. `receive` returns the packets in order; the CONNACK
    among them moves the state on (`refusal` says why it was refused)."""

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self.v5 = options.v5
        self.state = ClientState.CONNECTING
        self.limits = ServerLimits()
        self.keepalive = options.keepalive
        # A server's CONNACK is small; past it, the largest packet we take.
        self._reader = FrameReader(options.max_packet_size, connect_only=False)

    # -- out -----------------------------------------------------------------------------------

    def connect(self) -> bytes:
        """CONNECT for a persistent session (clean session 0; MQTT 5: Clean Start 0 and a
        session that never expires), so the server keeps what it has for us while we are
        away and resumes the packet ids in flight."""
        options = self.options
        if options.v5:
            return encode_connect5(Connect5(
                options.client_id, clean_start=False, keepalive=options.keepalive,
                username=options.username, password=options.password,
                properties=Properties(session_expiry_interval=NEVER_EXPIRES,
                                      receive_maximum=options.receive_maximum,
                                      maximum_packet_size=options.max_packet_size)))
        return encode_connect(Connect(
            options.client_id, clean_session=False, keepalive=options.keepalive,
            username=options.username, password=options.password, bridge=options.bridge_bit))

    def subscribe(self, packet_id: int, topics: list[tuple[str, int]]) -> bytes:
        """SUBSCRIBE to (filter, QoS) pairs. MQTT 5: with No Local (the server must not send
        back what we published: it came from here) and Retain As Published (a retained
        message stays retained here) [MQTT-3.8.3-3, §3.8.3.1]."""
        if self.v5:
            return encode_subscribe5(Subscribe5(packet_id, [
                Subscription(topic_filter, qos, no_local=True, retain_as_published=True)
                for topic_filter, qos in topics]))
        return encode_subscribe(Subscribe(packet_id, topics))

    def ack(self, packet_type: PacketType, packet_id: int,
            reason: int = ReasonCode.SUCCESS) -> bytes:
        """PUBACK, PUBREC, PUBREL or PUBCOMP; a reason code only in MQTT 5."""
        if self.v5:
            return encode_ack5(packet_type, packet_id, reason)
        return encode_ack(packet_type, packet_id)

    @staticmethod
    def pingreq() -> bytes:
        return PINGREQ

    def disconnect(self) -> bytes:
        """A normal DISCONNECT: the session stays on the server (its expiry never ends)."""
        return encode_disconnect5() if self.v5 else DISCONNECT_V3

    # -- in ------------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Packet | Packet5]:
        """The packets `data` completes, decoded and checked in the server's direction.
        Raises MQTTError (the connection must close) at the first one a server may not send
        now, or at bytes that are not MQTT; the packets before it are lost with it."""
        packets: list[Packet | Packet5] = []
        frames = self._reader.feed(data)
        for first, frame, offset in frames:
            packets.append(self._decode(first, frame, offset))
        if self._reader.error is not None:
            raise self._reader.error
        return packets

    def _decode(self, first: int, frame: bytes, offset: int) -> Packet | Packet5:
        kind = first >> 4
        if self.state is ClientState.CONNECTING:
            if kind != PacketType.CONNACK:
                raise ProtocolError(f"packet type {kind} before CONNACK", "MQTT-3.2.0-1")
        elif kind not in (_FROM_SERVER_V5 if self.v5 else _FROM_SERVER):
            raise ProtocolError(f"packet type {kind} may not come from a server")
        packet = decode_packet_v5(first, frame, offset, from_client=False) if self.v5 \
            else decode_packet(first, frame, offset)
        if isinstance(packet, Connack | Connack5):
            self._connack(packet)
        elif isinstance(packet, Publish | Publish5):
            if isinstance(packet, Publish5) and packet.properties.topic_alias is not None:
                # We announce no Topic Alias Maximum, so none may be used [MQTT-3.3.2-9].
                raise ProtocolError("Topic Alias from a server we allowed none", "MQTT-3.3.2-9")
            check_topic_name(packet.topic)
        return packet

    def _connack(self, packet: Connack | Connack5) -> None:
        if packet.return_code if isinstance(packet, Connack) else packet.reason_code:
            self.state = ClientState.CLOSED
            return
        self.state = ClientState.CONNECTED
        limits = self.limits
        limits.session_present = packet.session_present
        if isinstance(packet, Connack5):
            props = packet.properties
            if props.receive_maximum is not None:
                limits.receive_maximum = props.receive_maximum
            if props.maximum_qos is not None:
                limits.maximum_qos = props.maximum_qos
            if props.retain_available is not None:
                limits.retain_available = bool(props.retain_available)
            limits.maximum_packet_size = props.maximum_packet_size or 0
            if props.server_keep_alive is not None:
                limits.server_keep_alive = self.keepalive = props.server_keep_alive

    @staticmethod
    def refusal(packet: Connack | Connack5) -> str:
        """Why a CONNACK refused the connection, for the log."""
        if isinstance(packet, Connack):
            try:
                name = ConnackCode(packet.return_code).name.lower().replace("_", " ")
            except ValueError:
                name = "unknown return code"
            return f"CONNACK {packet.return_code:#04x} ({name})"
        text = f"CONNACK {packet.reason_code:#04x} " \
               f"({reason_name(packet.reason_code, PacketType.CONNACK)})"
        props = packet.properties
        if props.reason_string:
            text += f": {props.reason_string}"
        if props.server_reference:
            text += f"; server reference {props.server_reference}"
        return text

